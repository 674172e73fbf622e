"""The pool service's allocator: keep freed memory for the next multi-MB reply instead of returning it.

A full-size `Get` builds a reply of tens of MB (4 blocks of 9 MB: 36 MB) and gRPC copies it once more.
glibc serves allocations above 32 MB with a fresh `mmap` and unmaps them when freed, so every such
reply costs the kernel a page fault and a zeroed page per 4 KiB: about 1.1 ms of CPU per MB here,
half of what the pool service spent per MB. With `mmap` off and a high trim threshold, freed memory
stays in the heap and the next reply reuses it (service CPU per MB 2.0 -> 1.15 ms measured); the cost
is that the process keeps up to `kept_free_bytes` of freed memory mapped. Linux/glibc only; elsewhere
(musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4


def keep_freed_memory(kept_free_bytes: int) -> bool:
    """Sets glibc's malloc to keep up to `kept_free_bytes` freed (0: leave its defaults); True if set."""
    if kept_free_bytes <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc's: musl's mallopt is a no-op
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, min(kept_free_bytes, 2**31 - 1)) == 1
    if not done:
        log.warning("malloc settings not applied; large replies will page-fault")
    return done
