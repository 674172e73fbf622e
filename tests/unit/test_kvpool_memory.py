"""The pool service's allocator setting: applied on glibc, a no-op when switched off."""

from __future__ import annotations

import subprocess
import sys

from supernode.kvpool.memory import keep_freed_memory


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False


def test_freed_large_buffers_are_reused_without_page_faults() -> None:
    # In a child process (the setting is process-wide): after the setting, allocating and freeing
    # a 36 MB buffer again costs (almost) no minor page faults, where each fresh mmap faults ~9,000.
    code = """
import resource
from supernode.kvpool.memory import keep_freed_memory
def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():
    before = faults()
    for _ in range(5):
        b"".join([bytes(18_000_000), bytes(18_000_000)])
    return faults() - before
plain = churn()
assert keep_freed_memory(256 * 1024 * 1024)
churn()
print(plain, churn())
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    plain, kept = map(int, out.split())
    assert plain > 20_000, plain
    assert kept < plain / 10, (plain, kept)
