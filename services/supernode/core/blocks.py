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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash

# 2: XXH3-128 digest and a repeated filler pattern; 3: token ids as varints (older blocks read as corrupt)
MAGIC = b"SNKV3"
DIGEST_BYTES = 16
_HEADER = struct.Struct("<5sHI")  # magic, number of tokens, bytes of the varint-encoded token ids
_MAX_VARINT_BYTES = 5  # a uint32
_FILLER_PATTERN_BYTES = 64
_BLOCK_KEY = re.compile("[0-9a-f]{32}")


def is_block_key(key: str) -> bool:
    """True for a well-formed block key: 32 lowercase hex characters (a 16-byte BLAKE2b digest)."""
    return _BLOCK_KEY.fullmatch(key) is not None


def block_keys(token_ids: Sequence[int], block_tokens: int) -> list[str]:
    """Keys of every block of `token_ids` in order (the last may cover a partial block)."""
    return _chain_keys(
        token_ids[start : start + block_tokens] for start in range(0, len(token_ids), block_tokens)
    )


def _chain_keys(chunks: Iterable[Sequence[int]]) -> list[str]:
    """Prefix-chained keys of consecutive blocks given as their token chunks."""
    keys: list[str] = []
    previous = b""
    for chunk in chunks:
        h = hashlib.blake2b(previous, digest_size=16)
        h.update(struct.pack(f"<{len(chunk)}I", *chunk))
        previous = h.digest()
        keys.append(previous.hex())
    return keys


def split_blocks(token_ids: Sequence[int], block_tokens: int) -> list[list[int]]:
    """The token ids of each block, in order."""
    return [list(token_ids[i : i + block_tokens]) for i in range(0, len(token_ids), block_tokens)]


def payload_size(num_tokens: int, nominal_bytes_per_token: int, ratio: float) -> int:
    """Stored payload bytes for a block: nominal size x ratio, never smaller than the tokens it carries."""
    minimum = _HEADER.size + _MAX_VARINT_BYTES * num_tokens
    return max(minimum, int(num_tokens * nominal_bytes_per_token * ratio))


def encode_tokens(tokens: Sequence[int]) -> bytes:
    """Token ids (each 0 <= id < 2**32) as protobuf packed varints."""
    out = bytearray()
    for token in tokens:
        if not 0 <= token < 1 << 32:
            raise ValueError(f"token id {token} is not a uint32")
        while token > 0x7F:
            out.append((token & 0x7F) | 0x80)
            token >>= 7
        out.append(token)
    return bytes(out)


def decode_tokens(encoded: bytes | memoryview) -> list[int]:
    """The token ids of protobuf packed varints; raises ValueError when they do not parse."""
    tokens: list[int] = []
    value = shift = 0
    for byte in bytes(encoded):
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 28:
                raise ValueError("token varint longer than a uint32")
            continue
        tokens.append(value)
        value = shift = 0
    if shift:
        raise ValueError("truncated token varint")
    return tokens


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
    """True when the blocks' tokens re-derive exactly these keys (the reader's end-to-end check)."""
    *full, last = token_blocks or [[]]
    if last and len(last) <= block_tokens and all(len(block) == block_tokens for block in full):
        # Already split as block_keys would split them: hash them as they are, without joining.
        return len(token_blocks) == len(keys) and _chain_keys(token_blocks) == list(keys)
    flat = [t for block in token_blocks for t in block]
    return block_keys(flat, block_tokens) == list(keys)
