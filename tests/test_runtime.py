"""Interpreter-wide tuning is the composition root's (`run`, adapter/runtime.py), never
the Engine's: an Engine built and run in a test leaves the interpreter as it found it."""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import threading
from collections.abc import Collection, Iterator
from typing import Any

import pytest

from adapter import runtime
from adapter.cli import main
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport
from adapter.emulator.metrics import MetricsServer
from adapter.engine import Engine, Snapshot
from tests.kube_helpers import SAMPLES, tutorial_load


class SteadyLoad:
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        del keys
        return tutorial_load()


def interpreter_state() -> tuple[float, tuple[int, int, int], int]:
    return sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()


@pytest.fixture(autouse=True)
def untouched_interpreter() -> Iterator[None]:
    """Each test starts and ends with the interpreter as pytest set it up."""
    before = interpreter_state()
    yield
    gc.unfreeze()
    assert interpreter_state() == before


def test_an_engine_changes_nothing_process_wide() -> None:
    before = interpreter_state()
    seen: list[tuple[float, tuple[int, int, int], int]] = []

    def on_snapshot(snapshot: Snapshot) -> None:
        del snapshot
        seen.append(interpreter_state())

    cluster = load_snapshot(SAMPLES)
    engine = Engine(
        cluster=lambda: cluster, metrics=SteadyLoad(), clock=ManualClock(), on_snapshot=on_snapshot
    )
    assert interpreter_state() == before
    engine.run_cycle()
    asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=3), timeout=30))
    assert seen == [before] * 4  # during every cycle, `run`'s included
    assert interpreter_state() == before


def test_the_after_cycle_hook_runs_on_the_cycles_thread_after_every_cycle() -> None:
    calls: list[str] = []
    cycles = 0

    class FailingEverySecond(SteadyLoad):
        def collect(self, keys: Collection[LoadKey]) -> LoadReport:
            nonlocal cycles
            cycles += 1
            if cycles % 2 == 0:
                raise RuntimeError("boom")
            return super().collect(keys)

    cluster = load_snapshot(SAMPLES)
    engine = Engine(
        cluster=lambda: cluster,
        metrics=FailingEverySecond(),
        clock=ManualClock(),
        after_cycle=lambda: calls.append(threading.current_thread().name),
    )
    asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=4), timeout=30))
    assert len(calls) == 4  # failed cycles included
    assert threading.main_thread().name not in calls
    engine.run_cycle()  # a cycle on demand is the caller's: no hook
    assert len(calls) == 4


def test_tune_for_serving_and_restore() -> None:
    switch, thresholds, _ = interpreter_state()
    restore = runtime.tune_for_serving()
    try:
        assert sys.getswitchinterval() == min(switch, runtime.SWITCH_INTERVAL_S)
        assert gc.get_threshold()[:2] == thresholds[:2]
        assert gc.get_threshold()[2] >= 1_000_000_000  # no automatic full collections
        gc.freeze()
    finally:
        restore()
    assert interpreter_state() == (switch, thresholds, 0)


def test_settle_after_cycle_freezes_and_collects_every_nth_cycle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settle = runtime.SettleAfterCycle(full_collection_every=3)
    collections: list[int] = []
    trims: list[int] = []

    def collect(*generation: int) -> int:
        del generation
        collections.append(settle.cycles)
        return 0

    def release() -> bool:
        trims.append(settle.cycles)
        return True

    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(runtime, "release_free_memory", release)
    for _ in range(7):
        settle()
        assert gc.get_freeze_count() > 0
    assert collections == [0, 3, 6] and len(trims) == 7


def test_run_tunes_the_interpreter_while_it_serves_then_restores_it(
    busy_pod: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = interpreter_state()
    during: list[tuple[float, tuple[int, int, int]]] = []
    hooks: list[Any] = []
    run_cycle = Engine.run_cycle

    def observed(engine: Engine) -> Snapshot:
        during.append(interpreter_state()[:2])
        hooks.append(engine._after_cycle)
        return run_cycle(engine)

    monkeypatch.setattr(Engine, "run_cycle", observed)
    err = io.StringIO()
    argv = ["run", "--local", str(SAMPLES), "--scrape", busy_pod.url, "--cycles", "2"]
    serving = ["--interval", "0.2", "--grpc-host", "127.0.0.1", "--grpc-port", "0"]
    metrics = ["--grpc-workers", "1", "--metrics-host", "127.0.0.1", "--metrics-port", "0"]
    status = main([*argv, *serving, *metrics], out=io.StringIO(), err=err, environ={})
    assert status in (0, 1), err.getvalue()
    assert len(during) == 2
    tuned = (min(before[0], runtime.SWITCH_INTERVAL_S), (*before[1][:2], 1_000_000_000))
    assert during == [tuned, tuned]
    assert all(isinstance(hook, runtime.SettleAfterCycle) for hook in hooks)
    assert interpreter_state() == before
