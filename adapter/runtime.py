"""How `wva-adapter run` tunes the interpreter for serving: process-wide settings that
belong to the composition root (adapter/cli.py), never to the Engine, so that tests and
tools can build and run an Engine without changing their interpreter.

The cycle runs in a worker thread that shares the GIL with the event loop feeding the
gRPC serving processes and answering /metrics:

- `tune_for_serving` (once, before any thread starts; returns a function undoing it):
  the thread switch interval drops from 5 ms to 0.5 ms, so the event loop waits less
  behind a running cycle; the garbage collector makes no automatic full collection
  (`SettleAfterCycle` makes them); glibc's malloc arenas are capped (adapter/memory.py).
- `SettleAfterCycle` (the Engine's `after_cycle` hook, run on the cycle's thread after
  every cycle): full garbage collections walk every tracked object (the cluster cache,
  the caches) with the GIL held: at 500 VAs they delayed GetMetrics by 150 ms, at 5000
  by up to 0.8 s. A cycle makes no reference cycles, so objects that survive a cycle are
  frozen (never walked again; still freed by reference counting), and every
  FULL_COLLECTION_EVERY cycles one full collection reclaims the reference cycles other
  code made meanwhile. Then the cycle's freed heap goes back to the kernel.

The gRPC serving processes tune themselves (adapter/scaler/worker.py).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from adapter.memory import release_free_memory, tune_allocator

__all__ = ["FULL_COLLECTION_EVERY", "SWITCH_INTERVAL_S", "SettleAfterCycle", "tune_for_serving"]

SWITCH_INTERVAL_S = 0.0005  # the GIL is handed over at least this often
FULL_COLLECTION_EVERY = 40  # cycles between full garbage collections
_NO_AUTOMATIC_FULL_COLLECTION = 1_000_000_000  # generation 2's threshold


def tune_for_serving() -> Callable[[], None]:
    """Tune this interpreter for `run`; the function returned restores what it changed
    (the malloc arena cap stays: glibc cannot lift it once threads have arenas)."""
    tune_allocator()
    switch_interval = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    gc.set_threshold(thresholds[0], thresholds[1], _NO_AUTOMATIC_FULL_COLLECTION)

    def restore() -> None:
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()

    return restore


class SettleAfterCycle:
    """The Engine's `after_cycle` hook under `tune_for_serving`: what survived the cycle
    is frozen, a full collection runs on the first cycle and every FULL_COLLECTION_EVERY
    after it, and free heap pages go back to the kernel."""

    def __init__(self, full_collection_every: int = FULL_COLLECTION_EVERY) -> None:
        self.full_collection_every = full_collection_every
        self.cycles = 0

    def __call__(self) -> None:
        if self.cycles % self.full_collection_every == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        release_free_memory()
        self.cycles += 1
