"""What the kvpool benchmarks share: the block shape, fresh blocks made cheaply, pool service processes."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from supernode.processes import free_port, terminate
from supernode.runtime.channels import wait_serving
from supernode.runtime.config import Settings
from supernode.v1 import kvpool_pb2

BLOCK_TOKENS = 128
FULL_BLOCKS_PER_CALL = 4
FULL_CALLS = 40  # rounds of the four full-size reads: with 12, the ratio swung 0.59-0.94 between runs
_tokens = itertools.count(1000)

_TAIL = list(range(400, 400 + BLOCK_TOKENS - 2))
_TAIL_BYTES = struct.pack(f"<{len(_TAIL)}I", *_TAIL)
_TEMPLATE = kvpool_pb2.Block(tokens=[0, 0, *_TAIL])


def fresh_blocks(n: int) -> list[kvpool_pb2.Block]:
    """n blocks no store has seen (distinct first tokens make distinct prefix-chained keys).

    The load generator shares the 2 cores with what it measures, so it makes blocks cheaply: a
    template block with two tokens changed, and the key hashed from the template's packed tail (the
    same key `blocks.block_keys` derives, a test checks; building each from a list took ~21 us)."""
    out = []
    for _ in range(n):
        # Two leading tokens from one counter: ids stay in the vocabulary and never repeat within a
        # run (one token alone wrapped after 120,000 blocks, and a fast pool gets there).
        high, low = divmod(next(_tokens), 120_000)
        first, second = low + 300, high + 300
        block = kvpool_pb2.Block()
        block.CopyFrom(_TEMPLATE)
        block.tokens[0], block.tokens[1] = first, second
        packed = struct.pack("<2I", first, second) + _TAIL_BYTES
        block.key = hashlib.blake2b(packed, digest_size=16).hexdigest()  # block_keys' first key
        out.append(block)
    return out


@contextmanager
def pool_services(
    redis_url: str, num: int, ratio: float, log_dir: Path, profile_to: Path | None = None
) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """`num` pool service processes on `redis_url`; yields their addresses and processes.
    `profile_to`: run them under cProfile, writing the (last one's) profile there at exit."""
    profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to is not None else []
    ports = [free_port() for _ in range(num)]
    procs = []
    for port in ports:
        env = os.environ | {
            "SUPERNODE_KVPOOL__PORT": str(port),
            "SUPERNODE_KVPOOL__METRICS_PORT": "0",
            "SUPERNODE_KVPOOL__REDIS_URL": redis_url,
            "SUPERNODE_KVPOOL__BLOCK_TOKENS": str(BLOCK_TOKENS),
            "SUPERNODE_KVPOOL__PAYLOAD_RATIO": repr(ratio),
            "SUPERNODE_RUNTIME__LOG_LEVEL": "WARNING",
        }
        log = open(log_dir / f"kvpool-{port}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, *profile, "-m", "supernode.kvpool"], env=env, stdout=log, stderr=log
            )
        )
    addresses = [f"127.0.0.1:{p}" for p in ports]
    try:
        for address in addresses:
            asyncio.run(wait_serving(address, Settings(), 60))
        yield addresses, procs
    finally:
        for proc in procs:
            terminate(proc, 10)
