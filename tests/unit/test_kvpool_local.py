"""The in-process pool's reads: blocks verified on read, their ids decoded only when read."""

from __future__ import annotations

from unittest import mock

from supernode.core import blocks
from supernode.kvpool.local import LocalPool
from supernode.runtime.peers import PoolBlock

PROMPT = [300 + (i * 13) % 997 for i in range(300)]


async def _stored(pool: LocalPool) -> list[str]:
    keys = blocks.block_keys(PROMPT, 128)
    chunks = blocks.split_blocks(PROMPT, 128)
    await pool.put([PoolBlock(k, c) for k, c in zip(keys, chunks, strict=True)])
    return keys


async def test_a_read_counts_tokens_without_decoding_them_and_decodes_on_demand():
    pool = LocalPool()
    keys = await _stored(pool)
    with mock.patch.object(blocks, "decode_tokens", wraps=blocks.decode_tokens) as decode:
        read = await pool.get([*keys, "f" * 32])
        assert [len(b) for b in read.blocks] == [128, 128, 44] and read.missing_keys == ["f" * 32]
        assert decode.call_count == 0  # the headers' counts, no id decoded
        assert [t for b in read.blocks for t in b] == PROMPT and read.blocks[2] == PROMPT[256:]
        assert read.blocks[0][:3] == PROMPT[:3] and decode.call_count == 3  # each block once
    assert blocks.verify_chain(keys, read.blocks, 128)


async def test_a_corrupt_block_is_dropped_and_read_as_missing():
    pool = LocalPool()
    keys = await _stored(pool)
    (value,) = await pool.store.get_many(pool.namespace, keys[1:2])
    assert value is not None
    bad = value[:-1] + bytes([value[-1] ^ 1])
    await pool.store.delete(pool.namespace, keys[1])
    await pool.store.put_many(pool.namespace, [(keys[1], bad)])
    read = await pool.get(keys)
    assert read.missing_keys == [keys[1]] and len(read.blocks) == 2
    assert await pool.lookup(keys) == 1  # dropped from the store
