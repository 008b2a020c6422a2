"""The engine cycle over real parts: YAML objects, emulated vLLM pods scraped over HTTP.

Time is a ManualClock: rates come from the scrape timestamps the clock hands out,
so the traffic a test records between two cycles fixes the load exactly.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc
import pytest

from adapter.assemble import Assembly, build_system
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, MetricsWarmingUp
from adapter.collect.scrape import ScrapeSettings, ScrapeSource, ScrapeTarget
from adapter.emulator.metrics import MetricsServer, VllmMetrics
from adapter.engine import BaselineCycle, CycleError, Engine, InternalCycleError, Snapshot
from adapter.model.kube import ClusterSnapshot
from adapter.scaler import ScalerSettings
from adapter.scaler.service import Refusal, ScalerService
from tests.kube_helpers import MODEL, SAMPLES, tutorial_load

NAMESPACE = "vllm-test"


def record(metrics: VllmMetrics, count: int, itl_s: float = 0.008) -> None:
    for _ in range(count):
        metrics.record_request(
            prompt_tokens=128,
            output_tokens=512,
            queue_time_s=0.0,
            ttft_s=0.05,
            inter_token_latencies_s=[itl_s] * 511,
        )


@pytest.fixture
def pod() -> Iterator[tuple[VllmMetrics, MetricsServer]]:
    metrics = VllmMetrics(MODEL)
    with MetricsServer(metrics) as server:
        yield metrics, server


def make_engine(
    server: MetricsServer,
    clock: ManualClock,
    cluster: ClusterSnapshot | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> Engine:
    snapshot = cluster if cluster is not None else load_snapshot(SAMPLES)
    source = ScrapeSource(
        ScrapeSettings(targets=(ScrapeTarget(url=server.url, namespace=NAMESPACE),)),
        clock=clock.monotonic,
    )
    return Engine(
        cluster=lambda: snapshot,
        metrics=source,
        clock=clock,
        interval_s=15.0,
        on_snapshot=on_snapshot,
    )


def test_first_cycle_waits_for_a_rate_then_decisions_follow_the_load(
    pod: tuple[VllmMetrics, MetricsServer],
) -> None:
    metrics, server = pod
    clock = ManualClock()
    engine = make_engine(server, clock)

    with pytest.raises(BaselineCycle, match="taken as baseline") as baseline:
        engine.run_cycle()
    assert isinstance(baseline.value, CycleError)  # callers that only know CycleError
    assert engine.latest is None  # never a zero-load decision in place of unknown load
    assert engine.stats.cycles_total == 1
    assert (engine.stats.cycle_errors_total, engine.stats.metrics_errors_total) == (0, 0)

    record(metrics, 120)  # 120 requests in 15 s: 8 req/s, the tutorial's first job
    clock.advance(15)
    started = clock.now()
    first = engine.run_cycle()
    decision = first.decisions[(NAMESPACE, "vllm")]
    assert decision.load is not None
    assert decision.load.arrival_rate_rpm == pytest.approx(480.0)
    assert decision.load.avg_output_tokens == pytest.approx(512.0)
    assert decision.load.itl_ms == pytest.approx(8.0)
    assert (decision.desired_replicas, decision.accelerator) == (1, "H100")
    assert decision.current_replicas == 1
    assert decision.predicted_itl_ms == pytest.approx(7.8070107, rel=1e-7)
    assert decision.max_rpm_per_replica == pytest.approx(769.4129, rel=1e-6)
    assert decision.slo is not None and decision.slo.class_name == "Premium"
    assert first.timestamp == started and first.cycle == 2

    record(metrics, 240)  # 16 req/s: the second job joins
    clock.advance(15)
    second = engine.run_cycle()
    assert second.decisions[(NAMESPACE, "vllm")].desired_replicas == 2
    assert second.decisions[(NAMESPACE, "vllm")].predicted_itl_ms == pytest.approx(
        7.8070107, rel=1e-7
    )


def test_the_slo_choice_is_logged_when_it_changes_not_every_cycle(
    pod: tuple[VllmMetrics, MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    metrics, server = pod
    clock = ManualClock()
    engine = make_engine(server, clock)
    with pytest.raises(CycleError):
        engine.run_cycle()
    with caplog.at_level(logging.INFO, logger="adapter.engine"):
        for _ in range(3):
            record(metrics, 120)
            clock.advance(15)
            engine.run_cycle()
    choices = [r.getMessage() for r in caplog.records if "uses class" in r.getMessage()]
    assert choices == [
        "VariantAutoscaling vllm-test/vllm: model unsloth/Meta-Llama-3.1-8B uses class Premium "
        "(slo-itl 9 ms, slo-ttft 1000 ms) via model"
    ]


def test_unreachable_metrics_keep_the_last_snapshot_and_its_age(
    pod: tuple[VllmMetrics, MetricsServer],
) -> None:
    metrics, server = pod
    clock = ManualClock()
    engine = make_engine(server, clock)
    with pytest.raises(CycleError):
        engine.run_cycle()
    record(metrics, 240)
    clock.advance(15)
    good = engine.run_cycle()
    server.stop()
    clock.advance(15)
    with pytest.raises(CycleError, match="metrics unavailable"):
        engine.run_cycle()
    assert engine.latest is good
    assert good.age(clock) == pytest.approx(15.0)
    # the failure counts; the first scrape (a baseline) did not
    assert (engine.stats.metrics_errors_total, engine.stats.cycle_errors_total) == (1, 1)
    assert good.decisions[(NAMESPACE, "vllm")].desired_replicas == 2


def test_a_normal_start_logs_the_baseline_at_info_and_a_later_failure_still_warns(
    pod: tuple[VllmMetrics, MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    metrics, server = pod
    clock = ManualClock()
    engine = make_engine(server, clock)
    service = ScalerService(lambda: engine.latest, clock, ScalerSettings(staleness_s=45.0))
    key = (NAMESPACE, "vllm")

    def cycles(count: int) -> None:
        asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=count), timeout=30))

    record(metrics, 120)
    with caplog.at_level(logging.INFO, logger="adapter.engine"):
        cycles(1)
    (baseline,) = [r for r in caplog.records if "baseline" in r.getMessage()]
    assert (baseline.levelno, baseline.getMessage()) == (
        logging.INFO,
        "cycle 1: first scrape taken as baseline; rates from the next cycle",
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (engine.stats.cycle_errors_total, engine.stats.metrics_errors_total) == (0, 0)
    # ... and no decision on unknown load: the scaler has nothing to answer yet
    assert engine.latest is None
    with pytest.raises(Refusal) as refused:
        service.desired(key)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE

    record(metrics, 120)
    clock.advance(15)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adapter.engine"):
        cycles(1)  # the second scrape gives a rate: a decision
    assert service.desired(key) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    server.stop()  # a later cycle that genuinely fails warns, and counts
    clock.advance(15)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adapter.engine"):
        cycles(1)
    (failure,) = [
        r for r in caplog.records if r.name == "adapter.engine" and r.levelno >= logging.WARNING
    ]
    assert failure.levelno == logging.WARNING
    assert failure.getMessage().startswith(
        "cycle 3 failed, keeping the previous decisions: metrics unavailable: all 1 vLLM"
    )
    assert (engine.stats.cycle_errors_total, engine.stats.metrics_errors_total) == (1, 1)


class AlwaysWarmingUp:
    """A source whose targets are new at every cycle: it never has a rate."""

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        raise MetricsWarmingUp("vLLM metrics targets scraped once only; rates need a second scrape")


def test_no_rate_after_the_baseline_is_a_failure_again(caplog: pytest.LogCaptureFixture) -> None:
    cluster = load_snapshot(SAMPLES)
    engine = Engine(
        cluster=lambda: cluster, metrics=AlwaysWarmingUp(), clock=ManualClock(), interval_s=15.0
    )
    with caplog.at_level(logging.INFO, logger="adapter.engine"):
        asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=3), timeout=30))
    levels = [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [
        (logging.INFO, "cycle 1"),
        (logging.WARNING, "cycle 2 failed, keeping the previous decisions"),
        (logging.WARNING, "cycle 3 failed, keeping the previous decisions"),
    ]
    assert "still no rate after the baseline cycle" in caplog.records[1].getMessage()
    assert (engine.stats.cycle_errors_total, engine.stats.metrics_errors_total) == (2, 2)
    assert engine.latest is None


def _with_second_va(model_id: Any) -> ClusterSnapshot:
    base = load_snapshot(SAMPLES)
    second = copy.deepcopy(dict(base.variant_autoscalings[(NAMESPACE, "vllm")]))
    second["metadata"] = {**second["metadata"], "name": "broken"}
    second["spec"] = {**second["spec"], "modelID": model_id}
    return ClusterSnapshot(
        variant_autoscalings={**base.variant_autoscalings, (NAMESPACE, "broken"): second},
        config_maps=base.config_maps,
        nodes=base.nodes,
        deployments=base.deployments,
        config_namespace=base.config_namespace,
    )


def test_a_malformed_variant_gets_a_reason_and_the_other_is_solved(
    pod: tuple[VllmMetrics, MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    metrics, server = pod
    clock = ManualClock()
    engine = make_engine(server, clock, cluster=_with_second_va(""))
    with pytest.raises(CycleError):
        engine.run_cycle()
    record(metrics, 120)
    clock.advance(15)
    snapshot = engine.run_cycle()
    broken = snapshot.decisions[(NAMESPACE, "broken")]
    assert not broken.solved and "modelID" in broken.reason
    good = snapshot.decisions[(NAMESPACE, "vllm")]
    assert (good.desired_replicas, good.accelerator) == (1, "H100")
    assert any("vllm-test/broken" in r.getMessage() for r in caplog.records)


def test_run_loop_cycles_on_the_injected_clock(pod: tuple[VllmMetrics, MetricsServer]) -> None:
    metrics, server = pod
    clock = ManualClock()
    seen: list[Snapshot] = []
    stop = asyncio.Event()

    def on_snapshot(snapshot: Snapshot) -> None:
        seen.append(snapshot)
        record(metrics, 120)
        if len(seen) == 3:
            stop.set()

    engine = make_engine(server, clock, on_snapshot=on_snapshot)
    record(metrics, 120)
    asyncio.run(asyncio.wait_for(engine.run(stop), timeout=30))
    # cycle 1 warmed up; cycles 2-4 published, 15 s apart on the clock
    assert [s.cycle for s in seen] == [2, 3, 4]
    assert [s.monotonic for s in seen] == [15.0, 30.0, 45.0]
    assert all(s.decisions[(NAMESPACE, "vllm")].desired_replicas == 1 for s in seen)


# ---------------------------------------------------------------- unexpected failures


class SteadyLoad:
    """Metrics that are always readable: the tutorial's first job (8 req/s)."""

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        del keys
        return tutorial_load()


def steady_engine(
    clock: ManualClock, on_snapshot: Callable[[Snapshot], None] | None = None
) -> Engine:
    cluster = load_snapshot(SAMPLES)
    return Engine(
        cluster=lambda: cluster,
        metrics=SteadyLoad(),
        clock=clock,
        interval_s=15.0,
        on_snapshot=on_snapshot,
    )


def break_build_system(monkeypatch: pytest.MonkeyPatch, failing: Callable[[int], bool]) -> None:
    """Make the assembler raise (a bug, an input nobody anticipated) on the calls chosen."""
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> Assembly:
        nonlocal calls
        calls += 1
        if failing(calls):
            raise ValueError("input nobody anticipated")
        return build_system(*args, **kwargs)

    monkeypatch.setattr("adapter.engine.build_system", flaky)


def test_an_unexpected_exception_fails_one_cycle_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    break_build_system(monkeypatch, lambda call: call == 2)
    seen: list[Snapshot] = []
    engine = steady_engine(ManualClock(), on_snapshot=seen.append)
    with caplog.at_level(logging.WARNING, logger="adapter.engine"):
        asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=3), timeout=30))
    assert [s.cycle for s in seen] == [1, 3]
    assert engine.latest is seen[-1]
    assert (engine.stats.cycles_total, engine.stats.cycle_errors_total) == (3, 1)
    assert engine.stats.last_error == "internal error: ValueError: input nobody anticipated"
    (failure,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failure.levelno == logging.ERROR
    assert failure.getMessage() == (
        "cycle 2 failed with an internal error, keeping the previous decisions"
    )
    assert failure.exc_info is not None and failure.exc_info[0] is ValueError  # traceback


class BuggyLoad(SteadyLoad):
    """A metrics source with a bug on its second call."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("vllm:num_requests_running")
        return super().collect(keys)


def test_a_metrics_source_bug_is_told_apart_from_an_unreadable_cluster(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = load_snapshot(SAMPLES)
    seen: list[Snapshot] = []
    engine = Engine(
        cluster=lambda: cluster,
        metrics=BuggyLoad(),
        clock=ManualClock(),
        interval_s=15.0,
        on_snapshot=seen.append,
    )
    with caplog.at_level(logging.WARNING, logger="adapter.engine"):
        asyncio.run(asyncio.wait_for(engine.run(asyncio.Event(), max_cycles=3), timeout=30))
    assert [s.cycle for s in seen] == [1, 3]
    assert engine.stats.last_error == "metrics source failed: KeyError: 'vllm:num_requests_running'"
    assert (engine.stats.cycle_errors_total, engine.stats.metrics_errors_total) == (1, 1)
    traced = [r for r in caplog.records if r.exc_info is not None]
    assert [r.getMessage() for r in traced] == ["cycle 2: the metrics source failed unexpectedly"]


def test_a_cycle_that_keeps_failing_lets_the_old_snapshot_go_stale_never_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    break_build_system(monkeypatch, lambda call: call >= 2)
    clock = ManualClock()
    engine = steady_engine(clock)
    good = engine.run_cycle()
    service = ScalerService(lambda: engine.latest, clock, ScalerSettings(staleness_s=45.0))
    key = (NAMESPACE, "vllm")
    assert service.desired(key) == 1
    for _ in range(4):
        clock.advance(15)
        with pytest.raises(InternalCycleError, match="internal error: ValueError") as failed:
            engine.run_cycle()
        assert isinstance(failed.value, CycleError)  # callers handle it as any failed cycle
        assert engine.latest is good
    assert engine.stats.cycle_errors_total == 4
    with pytest.raises(Refusal) as refused:  # 60 s old, limit 45 s
        service.desired(key)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_failing_publication_hook_keeps_the_previous_snapshot() -> None:
    published: list[int] = []

    def publish(snapshot: Snapshot) -> None:
        if snapshot.cycle == 2:
            raise OSError("the serving processes are gone")
        published.append(snapshot.cycle)

    clock = ManualClock()
    engine = steady_engine(clock, on_snapshot=publish)
    first = engine.run_cycle()
    clock.advance(15)
    with pytest.raises(InternalCycleError, match="OSError: the serving processes are gone"):
        engine.run_cycle()
    assert engine.latest is first  # readers stay on what the scaler serves
    assert engine.stats.cycle_errors_total == 1
    clock.advance(15)
    assert engine.run_cycle().cycle == 3
    assert published == [1, 3]


def test_cancellation_still_stops_the_loop() -> None:
    async def main() -> Engine:
        loop = asyncio.get_running_loop()
        task: asyncio.Future[None] | None = None

        def cancel(_snapshot: Snapshot) -> None:  # called from the cycle's thread
            assert task is not None
            loop.call_soon_threadsafe(task.cancel)

        engine = steady_engine(ManualClock(), on_snapshot=cancel)
        task = asyncio.ensure_future(engine.run(asyncio.Event()))
        with pytest.raises(asyncio.CancelledError):
            await task
        return engine

    engine = asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert (engine.stats.cycles_total, engine.stats.cycle_errors_total) == (1, 0)


def test_a_va_whose_model_the_pods_do_not_serve_names_what_they_serve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pods serve the model under another name (vLLM's --served-model-name): the VA is
    left unsolved and its reason and log line say which names they serve (llm-d#2310)."""
    metrics = VllmMetrics("llama-8b-served")
    with MetricsServer(metrics) as server:
        clock = ManualClock()
        engine = make_engine(server, clock)
        with pytest.raises(CycleError):
            engine.run_cycle()  # the baseline scrape
        record(metrics, 10)
        clock.advance(15)
        with caplog.at_level(logging.WARNING):
            decision = engine.run_cycle().decisions[(NAMESPACE, "vllm")]
    assert not decision.solved
    assert f"no vLLM series for model {MODEL}" in decision.reason
    assert "serve llama-8b-served: does spec.modelID match" in decision.reason
    assert any("llama-8b-served" in r.getMessage() for r in caplog.records)
