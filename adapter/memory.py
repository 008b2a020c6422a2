"""Keep the adapter's resident memory close to what it actually holds (glibc only).

A cycle at 5000 VAs allocates and frees some 60 MB (PromQL answers, the system
document, parsed specs) from a worker thread while the cluster cache's watch threads
allocate too. With glibc's defaults every thread may get a malloc arena of its own,
large freed blocks raise the mmap threshold so that later ones stay in the heap, and
freed memory is returned to the kernel only from the top of the heap: resident memory
crept by about 60 MB over 30 cycles (bench/load.py) while live objects stayed flat.

`tune_allocator` (once, before threads start) caps the arenas and pins the thresholds;
`release_free_memory` (after each cycle) hands free pages back. Elsewhere (musl,
macOS) both do nothing. Python's own small-object allocator is not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

__all__ = ["release_free_memory", "tune_allocator"]

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENA_MAX = 2  # the event loop's thread and the cycle's
THRESHOLD_BYTES = 128 * 1024  # glibc's initial mmap threshold, kept fixed


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has no such symbol)
        libc.mallopt  # noqa: B018
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def tune_allocator() -> bool:
    """Cap glibc's malloc arenas and pin its trim/mmap thresholds; True if applied."""
    libc = _glibc()
    if libc is None:
        log.debug("not glibc: malloc left at its defaults")
        return False
    applied = all(
        libc.mallopt(parameter, value) == 1
        for parameter, value in (
            (_M_ARENA_MAX, ARENA_MAX),
            (_M_MMAP_THRESHOLD, THRESHOLD_BYTES),
            (_M_TRIM_THRESHOLD, THRESHOLD_BYTES),
        )
    )
    if not applied:
        log.warning("mallopt refused a setting: malloc partly at its defaults")
    return applied


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True if some were released."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1
