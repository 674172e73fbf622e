"""KV blocks: prefix-chained block keys and the deterministic payload stored for each block.

A block holds `block_tokens` consecutive prompt tokens (the last one may be partial). Its key is a
hash chained over the whole prefix: key_i = H(key_{i-1} || tokens of block i), so equal keys mean equal
prefixes (the paper's EMS context-cache keys, reference 2.3). The payload that really travels through
Redis is derived from the tokens: a header, the token ids (so a reader can rebuild the context and
re-derive the key), and deterministic filler up to the scaled size; a digest protects all of it.

The token ids are stored as protobuf packed varints, the very bytes of `Block.tokens` on the wire: the
pool service copies them from a `Put` request into the payload and from the payload into a `Get`
reply as they are, where converting 128 ids between protobuf, Python ints and another byte layout cost
more CPU per block than everything else the pool does with it.
"""

from __future__ import annotations

import hashlib
import re
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import xxhash

from supernode.core import tokens, varints

# 2: XXH3-128 digest and a repeated filler pattern; 3: token ids as varints (older blocks read as corrupt)
MAGIC = b"SNKV3"
DIGEST_BYTES = 16
_HEADER = struct.Struct("<5sHI")  # magic, number of tokens, bytes of the varint-encoded token ids
_MAX_VARINT_BYTES = varints.MAX_VARINT_BYTES
_FILLER_PATTERN_BYTES = 64
_KEY_BYTES = 16  # a block key is a 16-byte BLAKE2b digest
_ID_BYTES = 4  # a token id hashes as a little-endian uint32
_BLOCK_KEY = re.compile("[0-9a-f]{32}")
_HEX_RUN = re.compile("[0-9a-f]*")
_NATIVE_IS_LITTLE = array("I", [1]).tobytes() == struct.pack("<I", 1)


def is_block_key(key: str) -> bool:
    """True for a well-formed block key: 32 lowercase hex characters (a 16-byte BLAKE2b digest)."""
    return _BLOCK_KEY.fullmatch(key) is not None


def first_bad_block_key(keys: Sequence[str]) -> int | None:
    """The index of the first key that is not a block key (`is_block_key`), None when all are. Checked
    as one match over the keys joined (each 32 characters long), where a match per key cost a
    regex call per block of every handle; only a list that fails is searched key by key."""
    try:
        all_hex = set(map(len, keys)) <= {2 * _KEY_BYTES} and _HEX_RUN.fullmatch("".join(keys)) is not None
    except TypeError:  # a key that is not a str
        all_hex = False
    if all_hex:
        return None
    return next(i for i, key in enumerate(keys) if not (isinstance(key, str) and is_block_key(key)))


def block_keys(token_ids: Sequence[int], block_tokens: int) -> list[str]:
    """Keys of every block of `token_ids` in order (the last may cover a partial block)."""
    return _chain_keys(_pack(token_ids, len(token_ids)), block_tokens * _ID_BYTES)


def _pack(token_ids: Iterable[int], num_tokens: int) -> bytes:
    """The bytes a block key hashes: each id as a little-endian uint32 (struct.error for one that is not).
    Packed for the whole prompt at once, where one call per block cost more than the hashing; an
    array('I') of ids (every value a uint32 by construction) is its own packing on a little-endian host."""
    if _NATIVE_IS_LITTLE and tokens.is_uint32_array(token_ids):
        return token_ids.tobytes()
    return struct.pack(f"<{num_tokens}I", *token_ids)


def _chain_keys(packed: bytes, block_bytes: int) -> list[str]:
    """Prefix-chained keys of the consecutive `block_bytes` slices of `packed`:
    key_i = BLAKE2b-128(key_{i-1} || block i), as 32 hex characters."""
    view = memoryview(packed)
    digests: list[bytes] = []
    previous = b""
    for start in range(0, len(packed), block_bytes):
        previous = hashlib.blake2b(
            previous + view[start : start + block_bytes], digest_size=_KEY_BYTES
        ).digest()
        digests.append(previous)
    hexed = b"".join(digests).hex()
    step = 2 * _KEY_BYTES
    return [hexed[at : at + step] for at in range(0, len(hexed), step)]


def split_blocks(token_ids: Sequence[int], block_tokens: int) -> list[list[int]]:
    """The token ids of each block, in order."""
    return [list(token_ids[i : i + block_tokens]) for i in range(0, len(token_ids), block_tokens)]


def payload_size(num_tokens: int, nominal_bytes_per_token: int, ratio: float) -> int:
    """Stored payload bytes for a block: nominal size x ratio, never smaller than the tokens it carries."""
    minimum = _HEADER.size + _MAX_VARINT_BYTES * num_tokens
    return max(minimum, int(num_tokens * nominal_bytes_per_token * ratio))


def encode_tokens(tokens: Sequence[int]) -> bytes:
    """Token ids (each 0 <= id < 2**32) as protobuf packed varints (core/varints.py)."""
    return varints.encode(tokens)


def decode_tokens(encoded: bytes | memoryview) -> list[int]:
    """The token ids of protobuf packed varints; raises ValueError when they do not parse."""
    return varints.decode(encoded)


def _payload_parts(key: str, num_tokens: int, encoded_tokens: bytes, size: int) -> list[bytes]:
    """The payload in pieces: header + token ids (varints), then filler (the key's 64-byte BLAKE2b
    digest repeated) up to `size` bytes. Repeating one digest costs a memory copy where hashing every
    64 bytes cost a Python loop (a 9 MB block took ~140,000 hash calls)."""
    head = _HEADER.pack(MAGIC, num_tokens, len(encoded_tokens))
    filler_len = max(0, size - len(head) - len(encoded_tokens))
    pattern = hashlib.blake2b(bytes.fromhex(key), digest_size=_FILLER_PATTERN_BYTES).digest()
    repeats, rest = divmod(filler_len, _FILLER_PATTERN_BYTES)
    return [head, encoded_tokens, pattern * repeats, pattern[:rest]]


def make_payload(key: str, tokens: Sequence[int], size: int) -> bytes:
    """The block's payload: header, token ids, deterministic filler derived from the key, `size` bytes."""
    return b"".join(_payload_parts(key, len(tokens), encode_tokens(tokens), size))


def digest(payload: bytes | memoryview) -> bytes:
    """The 16-byte integrity digest of a payload (XXH3-128: it guards against corruption, not
    tampering, and hashes at memory speed where BLAKE2b took ~15 ms for a 9 MB block)."""
    return xxhash.xxh3_128_digest(payload)


def seal(payload: bytes) -> bytes:
    """Digest + payload: what is stored under the block's key."""
    return digest(payload) + payload


def seal_block(key: str, tokens: Sequence[int], size: int) -> bytes:
    """`seal(make_payload(key, tokens, size))` with the payload built and copied once."""
    return seal_encoded(key, len(tokens), encode_tokens(tokens), size)


def seal_encoded(key: str, num_tokens: int, encoded_tokens: bytes, size: int) -> bytes:
    """`seal_block` from the token ids already encoded as packed varints (`encode_tokens`), as a
    protobuf `Block` carries them; the caller vouches that they are `num_tokens` valid varints."""
    parts = _payload_parts(key, num_tokens, encoded_tokens, size)
    hasher = xxhash.xxh3_128()
    for part in parts:
        hasher.update(part)
    return b"".join([hasher.digest(), *parts])


class CorruptBlockError(ValueError):
    """A stored block whose digest, header or key does not match."""


@dataclass(frozen=True, slots=True)
class OpenedBlock:
    num_tokens: int
    sealed: bytes  # digest + payload as stored
    _tokens_end: int  # offset in `sealed` where the encoded token ids end

    @property
    def encoded_tokens(self) -> memoryview:
        """The token ids as protobuf packed varints (`Block.tokens` on the wire), not copied."""
        return memoryview(self.sealed)[_TOKENS_AT : self._tokens_end]

    @property
    def tokens(self) -> list[int]:
        """The block's token ids (decoded on each call)."""
        return decode_tokens(self.encoded_tokens)

    @property
    def payload(self) -> memoryview:
        """The verified payload, without copying it out of the sealed value."""
        return memoryview(self.sealed)[DIGEST_BYTES:]


_TOKENS_AT = DIGEST_BYTES + _HEADER.size


def open_sealed(sealed: bytes) -> OpenedBlock:
    """Verifies the digest and the header; returns the block (tokens decoded on demand) or raises
    CorruptBlockError. The digest covers the token ids, so they parse when it matches (and a
    writer that stored ids that do not parse fails `tokens`, with ValueError)."""
    if len(sealed) < _TOKENS_AT:
        raise CorruptBlockError("block shorter than its header")
    if digest(memoryview(sealed)[DIGEST_BYTES:]) != sealed[:DIGEST_BYTES]:
        raise CorruptBlockError("digest mismatch")
    magic, num_tokens, token_bytes = _HEADER.unpack_from(sealed, DIGEST_BYTES)
    end = _TOKENS_AT + token_bytes
    if magic != MAGIC or len(sealed) < end or not num_tokens <= token_bytes <= _MAX_VARINT_BYTES * num_tokens:
        raise CorruptBlockError("bad block header")
    return OpenedBlock(num_tokens, sealed, end)


def verify_chain(keys: Sequence[str], token_blocks: Sequence[Sequence[int]], block_tokens: int) -> bool:
    """True when the blocks' tokens re-derive exactly these keys (the reader's end-to-end check),
    however the reader's blocks split them: they are hashed as `block_keys` splits their concatenation."""
    num_tokens = sum(map(len, token_blocks))
    packed = _pack(chain.from_iterable(token_blocks), num_tokens)
    return _chain_keys(packed, block_tokens * _ID_BYTES) == list(keys)
