"""adapter.memory: glibc keeps few malloc arenas, and gives freed heap back to the kernel
when asked; elsewhere malloc is left alone."""

from __future__ import annotations

import os
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


MANY_THREADS = """
import sys, threading
from adapter.memory import _glibc, tune_allocator

if sys.argv[1] == "tune":
    print(tune_allocator(), tune_allocator())  # mallopt said yes, and again
threads = 8
barrier = threading.Barrier(threads + 1, timeout=30)
held = []

def allocate():
    held.append([bytearray(4000) for _ in range(50)])  # malloc, from this thread's arena
    barrier.wait()  # all alive at once: an exited thread's arena would be handed on
    barrier.wait()

started = [threading.Thread(target=allocate) for _ in range(threads)]
for thread in started:
    thread.start()
barrier.wait()
_glibc().malloc_stats()  # to stderr: one "Arena N:" paragraph per arena
barrier.wait()
for thread in started:
    thread.join()
"""


_ARENA_SETTINGS = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")  # glibc's defaults, not these


def _arenas(*args: str) -> tuple[int, str]:
    """Malloc arenas in use once 8 threads have allocated, and what the program printed."""
    untuned = {k: v for k, v in os.environ.items() if k not in _ARENA_SETTINGS}
    done = subprocess.run(
        [sys.executable, "-c", MANY_THREADS, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=untuned,
    )
    arenas = [line for line in done.stderr.splitlines() if line.startswith("Arena ")]
    return len(arenas), done.stdout.strip()


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only; this machine runs glibc")
def test_the_arena_cap_holds_however_many_threads_allocate() -> None:
    default, _ = _arenas("default")
    capped, said = _arenas("tune")
    assert said == "True True"  # M_ARENA_MAX accepted by mallopt, every time it is asked
    assert default > memory.ARENA_MAX, default  # untuned, the threads get arenas of their own
    assert capped <= memory.ARENA_MAX, capped


def test_without_glibc_malloc_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)  # musl, macOS
    assert memory.tune_allocator() is False
    assert memory.release_free_memory() is False
