"""adapter.memory: glibc gives freed heap back to the kernel when asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adapter import memory

HOLED_HEAP = """
from adapter.memory import release_free_memory, tune_allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

assert tune_allocator()
big, pins = [], []
for _ in range(2000):  # 100 KB blocks (heap, not mmap) each followed by a small pinned one
    big.append(bytearray(100_000))
    pins.append(bytearray(600))
del big  # ~200 MB free, in holes between the pins: free() alone cannot return it
held = rss_mb()
released = release_free_memory()
print(held, rss_mb(), released)
"""


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only; this machine runs glibc")
def test_freed_holes_in_the_heap_go_back_to_the_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HOLED_HEAP], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    held, after, released = int(out[0]), int(out[1]), out[2]
    assert held > 150, held  # the holes are still resident after free()
    assert released == "True"
    assert after < held - 150, (held, after)


def test_tune_and_release_are_safe_to_call_repeatedly() -> None:
    applied = [memory.tune_allocator() for _ in range(2)]
    assert applied[0] == applied[1] == (memory._glibc() is not None)
    assert isinstance(memory.release_free_memory(), bool)
