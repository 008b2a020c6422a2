"""Scale from zero, end to end: `wva-adapter demo --scenario from-zero --short`. The
emulated Deployment starts at 0 replicas behind a gateway that holds requests (an llm-d
router's flow control); guidellm's first request waits there, the adapter reads the
gateway's queue (`--gateway`) and pushes the wake-up over StreamIsActive, the simulated
KEDA activates one replica at once, which serves the held requests once started. A
second stream takes it to 2 replicas and back to 1; after the load the adapter holds the
idle variant for `--scale-to-zero-after`, then KEDA parks it at 0.

Measured (this machine, 2 cores; 2 min 43 s for the whole file): 0 -> 1 -> 2 -> 1 -> 0;
288 requests sent, 288 answered whole by the gateway, 32 of them held through the
wake-up; the first one's first token 5.0-5.25 s after it was sent (start-up 5 s), KEDA
activated on the pushed StreamIsActive 0.0-0.2 s after it; 100 % of requests within the
9 ms ITL; 77-79 GPU-seconds against 158-159 for one replica held: 0.49-0.50 (on a
trace with a 10 s shorter tail and 4 s more load: 0.56, and 0.604 once; the ratio rests
on the idle tail). At the tutorial's 8 + 8 req/s the ITL test fails, 85 % within (see
`from_zero`); run without `--gateway` four of the five end-to-end tests failed (nothing
woke it, nothing was served); the fifth passed on its 0 GPU-seconds, and has since also
asked for GPU-seconds spent serving (at least the first stream's length).

The first tests need no processes: KEDA's push semantics as the harness emulates them,
the request account read from guidellm's reports, the GPU-seconds, the scenario's rules.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.loop import Sample, Scenario, Stream, Summary, from_zero, run_demo, scaled_object
from adapter.loop.push import PushedActivity, apply_push, retry_delays
from adapter.loop.record import read_requests, summarize
from adapter.sim.hpa import KedaLoop
from tests.prometheus_server import free_port

# --- KEDA's external-push trigger, as the harness emulates it ---------------------------


def _keda(replicas: int = 0) -> KedaLoop:
    """The scenario's ScaledObject on an adapter that answers 0 and inactive, polled
    only at the start: what moves is the pushes' doing."""
    spec = dataclasses.replace(scaled_object(from_zero(short=True)), pollingInterval=1e6)
    return KedaLoop(
        spec=spec,
        get_metrics=lambda: 0.0,
        is_active=lambda: False,
        initial_replicas=replicas,
        hpa_sync_period=1e6,
    )


def test_a_pushed_true_activates_a_deployment_at_zero_at_once() -> None:
    keda = _keda()
    keda.advance_to(10.0)
    assert keda.current_replicas == 0
    assert apply_push(keda, 10.3, True) == "activated"
    assert keda.current_replicas == 1  # max(minReplicaCount 0, 1)
    assert keda.last_active == 10.3
    # true again at 1 replica: only the last-active time moves
    assert apply_push(keda, 11.0, True) == "active"
    assert keda.current_replicas == 1 and keda.last_active == 11.0


def test_a_pushed_false_parks_only_after_the_cooldown_and_the_initial_cooldown() -> None:
    keda = _keda(replicas=1)
    spec = keda.spec
    assert spec.minReplicaCount == 0 and spec.initialCooldownPeriod > spec.cooldownPeriod
    # within the initial cooldown, never
    assert apply_push(keda, spec.initialCooldownPeriod - 1, False) == "inactive"
    assert apply_push(keda, spec.initialCooldownPeriod + 1, True) == "active"
    # then only once the cooldown has passed since the trigger was last active
    active = spec.initialCooldownPeriod + 1
    assert apply_push(keda, active + spec.cooldownPeriod - 0.5, False) == "inactive"
    assert keda.current_replicas == 1
    assert apply_push(keda, active + spec.cooldownPeriod, False) == "deactivated"
    assert keda.current_replicas == 0
    assert apply_push(keda, active + spec.cooldownPeriod + 1, False) == "inactive"


def test_the_stream_is_opened_again_with_kedas_backoff() -> None:
    delays = retry_delays()
    assert [next(delays) for _ in range(8)] == [2, 4, 8, 16, 32, 60, 60, 60]


class _Streams(pb_grpc.ExternalScalerServicer):
    """StreamIsActive: false, then true, then the stream ends with UNAVAILABLE (as the
    adapter ends it while a woken variant is unsolved); the next stream answers true."""

    def __init__(self) -> None:
        self.opened = 0
        self.go = threading.Event()

    def StreamIsActive(self, request: pb.ScaledObjectRef, context: Any) -> Iterator[Any]:
        self.opened += 1
        if self.opened == 1:
            yield pb.IsActiveResponse(result=False)
            self.go.wait(5)
            yield pb.IsActiveResponse(result=True)
            context.abort(grpc.StatusCode.UNAVAILABLE, "vllm-test/vllm: not solved")
        yield pb.IsActiveResponse(result=True)
        time.sleep(5)


@pytest.mark.integration
def test_pushed_values_are_queued_in_order_and_the_stream_reopened_after_an_error() -> None:
    servicer = _Streams()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    pushed = PushedActivity(f"127.0.0.1:{port}", "vllm-test", "vllm", retry_first_s=0.2)
    try:
        pushed.start()
        seen: list[bool] = []
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            pushed.wait(0.5)
            seen += [p.active for p in pushed.drain()]
            if seen == [False]:
                servicer.go.set()
        assert seen == [False, True, True]
        assert pushed.opened == 2
        assert [e.code for e in pushed.ends] == ["UNAVAILABLE"]
    finally:
        pushed.close()
        server.stop(0)


# --- the request account, the GPU-seconds, the scenario ---------------------------------


def _request(start: float, ttft_ms: float | None, itl_ms: float | None) -> dict[str, Any]:
    return {
        "request_start_time": start,
        "time_to_first_token_ms": ttft_ms,
        "inter_token_latency_ms": itl_ms,
    }


def _report(
    path: Path,
    successful: list[Any],
    errored: list[Any],
    incomplete: list[Any],
    processing: int = 0,
) -> Path:
    requests = {"successful": successful, "errored": errored, "incomplete": incomplete}
    state = {"processing_requests": processing}
    path.write_text(json.dumps({"benchmarks": [{"requests": requests, "scheduler_state": state}]}))
    return path


def test_requests_are_counted_from_guidellms_reports(tmp_path: Path) -> None:
    wall = 1_000.0
    reports = {
        "job-1": _report(
            tmp_path / "1.json",
            [_request(wall + 20.0, 5400.0, 8.4), _request(wall + 20.2, 5200.0, 9.2)],
            [],
            [_request(wall + 50.0, 10.0, None)],
        ),
        # one sent, and its outcome missing from the report: still "processing" in it
        "job-2": _report(tmp_path / "2.json", [_request(wall + 30.0, 12.0, 8.0)], [{}], [], 1),
    }
    found = read_requests(reports, ["job-1", "job-2", "job-3"], 9.0, wall)
    assert (found.sent, found.completed, found.errored, found.incomplete) == (6, 3, 1, 1)
    assert found.unrecorded == 1
    assert found.failed == 2 and found.missing_reports == ["job-3"]
    assert found.itl_within_slo == 2 and found.itl_attainment_pct == pytest.approx(200 / 3)
    # the first request sent, and its first token: the wake-up
    assert (found.first_sent_s, found.first_token_s) == (20.0, 25.4)

    def sample(t: float, replicas: int, pods: int) -> Sample:
        return Sample(
            t=t,
            planned_rps=0,
            offered_rps=0,
            completed_rps=0,
            itl_ms=None,
            desired=None,
            replicas=replicas,
            running=0,
            waiting=0,
            pods=pods,
        )

    samples = [sample(0, 0, 0), sample(10, 1, 1), sample(20, 2, 2), sample(30, 1, 2)]
    samples += [sample(40, 0, 0), sample(100, 0, 0)]
    summary = summarize("x", samples, 9.0, 1000.0, requests=found, from_zero=True)
    assert summary.replicas_path == [0, 1, 2, 1, 0]
    assert summary.gpu_seconds == 10 + 20 + 20  # pods x time: the terminating pod counts
    assert summary.held_at_one_gpu_seconds == 100
    assert summary.gpu_seconds_ratio == 0.5
    assert summary.wake_up_s == pytest.approx(5.4)
    assert summary.itl_attainment_requests_pct == pytest.approx(66.67)


def test_a_deployment_at_zero_needs_a_gateway_that_holds_and_min_replicas_0() -> None:
    base: dict[str, Any] = {
        "name": "x",
        "streams": (Stream(name="a", start_s=10, duration_s=10, rate_rps=1),),
        "end_s": 60,
        "initial_replicas": 0,
    }
    assert Scenario(**base, gateway_hold_s=60).idle_start
    with pytest.raises(ValueError, match="gateway that holds"):
        Scenario(**base)
    with pytest.raises(ValueError, match="min_replicas 0"):
        Scenario(**base, gateway_hold_s=60, min_replicas=1)
    with pytest.raises(ValueError, match="scrape"):
        Scenario(**base, gateway_hold_s=60, metrics="prometheus")
    with pytest.raises(ValueError, match="scrape only"):
        from_zero(metrics="prometheus")


def test_the_short_run_fits_ci_and_the_full_one_ten_minutes() -> None:
    short, full = from_zero(short=True), from_zero()
    assert short.end_s <= 160 and full.end_s <= 360
    for scenario in (short, full):
        assert scenario.initial_replicas == 0 and scenario.complete_requests
        assert scenario.startup_delay_s > 0 and scenario.scale_to_zero_after_s > 0
        last_load = max(s.end_s for s in scenario.streams)
        parked = last_load + scenario.scale_to_zero_after_s + scenario.cooldown_s
        assert parked + 30 < scenario.end_s  # time left at zero, with margin


# --- end to end -------------------------------------------------------------------------

Recorded = tuple[Scenario, Summary, list[Sample], dict[str, Any], Path]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    scenario = from_zero(short=True)
    out_dir = tmp_path_factory.mktemp("loop-from-zero")
    printed = io.StringIO()
    run_demo(scenario, out_dir, printed)
    document = json.loads((out_dir / "summary.json").read_text())
    assert Scenario.model_validate(document["scenario"]) == scenario
    samples = [Sample.model_validate(s) for s in document["samples"]]
    summary = Summary.model_validate(document["summary"])
    print(printed.getvalue())  # the figures, in the test's output when it fails
    return scenario, summary, samples, document, out_dir


@pytest.mark.integration
@pytest.mark.realtime
@pytest.mark.timeout(420)
def test_replicas_go_from_zero_to_two_and_back_to_zero(recorded: Recorded) -> None:
    scenario, summary, samples, _, _ = recorded
    path = summary.replicas_path
    assert path[0] == 0, path  # parked before the first request
    woken = next((i for i, r in enumerate(path) if r >= 1), None)
    assert woken is not None, path
    assert 2 in path[woken:], path
    assert path[-1] == 0, path
    # parked again only after the retention: no traffic for scale_to_zero_after_s first
    busy = max(s.t for s in samples if s.running or s.waiting or s.held or s.offered_rps)
    parked = next(s.t for s in samples if s.t > busy and s.replicas == 0)
    assert parked >= busy + scenario.scale_to_zero_after_s - scenario.sample_s, (busy, parked)


@pytest.mark.integration
@pytest.mark.realtime
@pytest.mark.timeout(420)
def test_no_request_is_lost(recorded: Recorded) -> None:
    scenario, summary, _, _, _ = recorded
    requests = summary.requests
    assert requests is not None and requests.missing_reports == []
    planned = sum(round(s.rate_rps * s.duration_s) for s in scenario.streams)
    # guidellm sent them all, and saw no error and cut none
    assert requests.sent == planned, (requests, planned)
    assert requests.failed == 0, requests
    # the gateway received every one and answered every one whole: a 200 with every
    # token (guidellm's report may lack the last answer's outcome: `unrecorded`)
    assert summary.gateway_arrived == planned, summary.gateway_arrived
    assert summary.gateway_answered == planned, summary.gateway_answered
    assert requests.completed + requests.unrecorded == planned, requests
    assert requests.unrecorded <= len(scenario.streams), requests
    # and the first ones waited for the wake-up at the gateway
    assert summary.gateway_held is not None and summary.gateway_held >= 1


@pytest.mark.integration
@pytest.mark.realtime
@pytest.mark.timeout(420)
def test_the_first_request_is_served_one_start_up_after_it_arrived(recorded: Recorded) -> None:
    scenario, summary, _, _, _ = recorded
    requests = summary.requests
    assert requests is not None and requests.first_sent_s is not None
    assert summary.wake_up_s is not None
    # it waited for a replica to start, and not much longer
    assert scenario.startup_delay_s <= summary.wake_up_s <= scenario.startup_delay_s + 2.0
    # StreamIsActive pushed true within a second of the request, and KEDA activated then:
    # on the push, or on a poll that fell in the same instant (CI saw one 39 ms after the
    # first request, while the push was on its way: real KEDA has that race too)
    pushed, activated = summary.pushed_true_at_s, summary.activated_at_s
    assert pushed is not None and activated is not None, summary
    assert pushed - requests.first_sent_s <= 1.0, (pushed, requests.first_sent_s)
    assert activated - requests.first_sent_s <= 1.0, (activated, requests.first_sent_s)
    if summary.activated_by != "push":
        assert summary.activated_by == "poll" and abs(pushed - activated) <= 0.25, summary


@pytest.mark.integration
@pytest.mark.realtime
@pytest.mark.timeout(420)
def test_the_itl_slo_holds_for_99_percent_of_requests(recorded: Recorded) -> None:
    _, summary, _, _, _ = recorded
    assert summary.itl_attainment_requests_pct is not None
    assert summary.itl_attainment_requests_pct >= 99.0, summary.requests


@pytest.mark.integration
@pytest.mark.realtime
@pytest.mark.timeout(420)
def test_gpu_seconds_are_at_most_60_percent_of_one_replica_held(recorded: Recorded) -> None:
    scenario, summary, _, _, out_dir = recorded
    assert summary.gpu_seconds is not None and summary.held_at_one_gpu_seconds is not None
    assert summary.gpu_seconds_ratio is not None
    # spent on serving: a replica at least while the first stream ran (a loop that never
    # woke up would save everything)
    assert summary.gpu_seconds >= scenario.streams[0].duration_s, summary.gpu_seconds
    assert summary.gpu_seconds_ratio <= 0.6, (summary.gpu_seconds, summary.held_at_one_gpu_seconds)
    png = (out_dir / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
