"""The kvpool benchmark's fresh blocks are real blocks: keys as the pool derives them, never repeated."""

from __future__ import annotations

from benchmarks.kvpool_setup import BLOCK_TOKENS, fresh_blocks
from supernode.core import blocks


def test_fresh_blocks_have_their_derived_keys_and_never_repeat() -> None:
    made = fresh_blocks(300)
    for block in made:
        assert len(block.tokens) == BLOCK_TOKENS
        assert block.key == blocks.block_keys(list(block.tokens), BLOCK_TOKENS)[0]
    assert len({b.key for b in made}) == len(made)
    assert len({tuple(b.tokens) for b in made}) == len(made)
