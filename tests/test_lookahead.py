"""adapter.lookahead: each VA sized for its load forecast a learned start-up ahead."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from adapter.assemble import build_system
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.defaults import DEFAULT_SAMPLES
from adapter.engine import Engine, EngineStats, Snapshot
from adapter.lookahead import LookAhead
from adapter.sim.policies import SimSetup, setup_from_snapshot

CYCLE_S = 15.0


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    return setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))


def report(setup: SimSetup, rps: float) -> LoadReport:
    load = ModelLoad(
        namespace=setup.variant[0],
        model=setup.model,
        arrival_rate_rpm=rps * 60.0,
        avg_prompt_tokens=128.0,
        avg_output_tokens=512.0,
        itl_ms=7.5,
        running=rps * 4.0,
        waiting=0.0,
    )
    return LoadReport({setup.load_key: load}, queries=1)


def ramp(cycles: int, start: float, slope_per_s: float, seed: int = 1) -> list[float]:
    """Measured rates of a Poisson load rising linearly, one 15 s window per cycle."""
    rng = np.random.default_rng(seed)
    rates = start + slope_per_s * CYCLE_S * np.arange(cycles)
    return [float(c) / CYCLE_S for c in rng.poisson(rates * CYCLE_S)]


def cycles(
    setup: SimSetup,
    rates: list[float],
    look_ahead: LookAhead | None,
    clock: ManualClock | None = None,
) -> Iterator[Snapshot]:
    """An engine's snapshots, one cycle per measured rate, 15 s apart."""
    clock = clock or ManualClock()
    feed = iter(rates)

    class Pods:
        def collect(self, keys: object) -> LoadReport:
            return report(setup, next(feed))

    engine = Engine(
        cluster=lambda: setup.with_replicas(2, 2),
        metrics=Pods(),
        clock=clock,
        interval_s=CYCLE_S,
        look_ahead=look_ahead,
    )
    for _ in rates:
        yield engine.run_cycle()
        clock.advance(CYCLE_S)


def test_a_rising_load_is_sized_ahead(setup: SimSetup) -> None:
    ahead = LookAhead(cycle_s=CYCLE_S)
    true_slope = 0.02  # req/s per s: 1.2 req/s more each minute
    views = []
    for i, rps in enumerate(ramp(60, 8.0, true_slope)):
        assembly = build_system(setup.with_replicas(2, 2), report(setup, rps))
        views.append(ahead.observe(assembly, at=i * CYCLE_S)[setup.variant])
    # the default start-up (60 s, nothing learned yet) plus the decision's cycle
    assert views[-1].horizon_s == 75.0 and views[-1].startup.source == "default"
    # from the second minute on: about the true rate 75 s ahead, above the last sample
    later = views[8:]
    ahead_of_now = [
        v.sized_rpm / 60.0 - (8.0 + true_slope * (i + 8) * CYCLE_S) for i, v in enumerate(later)
    ]
    assert np.median(ahead_of_now) == pytest.approx(true_slope * 75.0, rel=0.5)


def test_a_steady_load_is_sized_as_measured_within_its_noise(setup: SimSetup) -> None:
    ahead = LookAhead(cycle_s=CYCLE_S)
    extra = []
    for i, rps in enumerate(ramp(80, 12.0, 0.0, seed=3)):
        assembly = build_system(setup.with_replicas(2, 2), report(setup, rps))
        view = ahead.observe(assembly, at=i * CYCLE_S)[setup.variant]
        extra.append(view.sized_rpm / 60.0 - rps)
    # the smoothed rate: within the Poisson noise of a 15 s window (0.9 req/s) either
    # way, no trend made of noise
    assert max(abs(e) for e in extra[8:]) < 3 * 0.9
    assert abs(float(np.median(extra[8:]))) < 0.3


def test_the_horizon_is_the_learned_start_up(setup: SimSetup) -> None:
    """Three scale-ups whose replicas are ready 90 s after they are asked for."""
    ahead = LookAhead(cycle_s=CYCLE_S)
    t, ready, view = 0.0, 1, None
    for target in (2, 3, 4):
        for spec, ready_now in [(ready, ready)] * 4 + [(target, ready)] * 6 + [(target, target)]:
            assembly = build_system(setup.with_replicas(spec, ready_now), report(setup, 10.0))
            view = ahead.observe(assembly, at=t)[setup.variant]
            t += CYCLE_S
        ready = target
    assert view is not None and view.startup.source == "learned"
    assert view.startup.seconds == pytest.approx(90.0, rel=0.1)
    assert view.horizon_s == pytest.approx(view.startup.seconds + CYCLE_S)


def test_the_engine_sizes_a_ramp_ahead(setup: SimSetup) -> None:
    """On a rising load the engine with look-ahead asks for at least as many replicas as
    without it, and for more before the load gets there, once the trend is learned (its
    time constant is 300 s: the first steps come with the reactive loop's)."""
    rates = ramp(80, 4.0, 0.03, seed=2)

    def run(look_ahead: LookAhead | None) -> list[int]:
        desired = []
        for snapshot in cycles(setup, rates, look_ahead):
            value = snapshot.decisions[setup.variant].desired_replicas
            assert value is not None
            desired.append(value)
        return desired

    reactive = run(None)
    ahead = run(LookAhead(cycle_s=CYCLE_S))
    assert all(a >= r for a, r in zip(ahead[8:], reactive[8:], strict=True))

    # from when on each count is held (the reactive loop flaps on noise near a boundary):
    # never later with look-ahead, and, once the trend is learned, cycles earlier
    def held(desired: list[int], n: int) -> int:
        return next(i for i in range(len(desired)) if min(desired[i:]) >= n)

    counts = [n for n in sorted(set(reactive)) if n > reactive[8]]
    assert counts, reactive
    assert all(held(ahead, n) <= held(reactive, n) for n in counts), (reactive, ahead)
    assert any(held(ahead, n) <= held(reactive, n) - 5 for n in counts), (reactive, ahead)


def test_what_it_sized_for_is_exported(setup: SimSetup) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from adapter.exporter import SnapshotCollector

    rates = ramp(20, 8.0, 0.02)
    clock = ManualClock()
    snapshot = list(cycles(setup, rates, LookAhead(cycle_s=CYCLE_S), clock))[-1]
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot, EngineStats(), clock, max_age_s=None))
    text = generate_latest(registry).decode()
    labels = '{accelerator_type="H100",namespace="vllm-test",variant_name="vllm"}'
    assert f"wva_startup_seconds{labels} 60.0" in text
    sized = next(
        line for line in text.splitlines() if line.startswith("wva_sized_arrival_rate_requests")
    )
    view = snapshot.decisions[setup.variant].ahead
    assert view is not None
    assert float(sized.split()[-1]) == pytest.approx(view.sized_rpm / 60)
    assert view.sized_rpm / 60 > rates[-1] - 1.0  # about the rate now, plus its trend
