"""Keep the adapter's resident memory close to what it actually holds (glibc only).

A cycle at 5000 VAs allocates and frees some 60 MB (PromQL answers, the system
document, parsed specs, the sizing's matrices) from a worker thread while the cluster
cache's watch threads allocate too. With glibc's defaults each of those threads may get
a malloc arena of its own, and freed memory goes back to the kernel only from the top
of a heap: resident memory crept up cycle after cycle while live objects stayed flat.

`tune_allocator` (once, before threads start) caps the arenas; `release_free_memory`
(after each cycle) hands every free page back. `wva-adapter run` calls both, through
adapter/runtime.py: they change the whole process, so the Engine never does. The mmap
threshold stays dynamic: pinned low, each of the sizing's large temporary arrays got
fresh pages and a cold cycle took about 0.3 s longer. Elsewhere (musl, macOS) both do
nothing. Python's own small-object allocator is not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

__all__ = ["release_free_memory", "tune_allocator"]

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h

ARENA_MAX = 2  # the event loop's thread and the cycle's


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
    """Cap glibc's malloc arenas; True if applied."""
    libc = _glibc()
    if libc is None:
        log.debug("not glibc: malloc left at its defaults")
        return False
    if libc.mallopt(_M_ARENA_MAX, ARENA_MAX) != 1:
        log.warning("mallopt refused M_ARENA_MAX: malloc arenas left at their default")
        return False
    return True


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True if some were released."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1
