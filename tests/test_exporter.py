"""The snapshot exporter: exact samples, vanishing series, no 0 for unsolved VAs, and the
kubelet's probes (readiness follows gRPC serving, liveness the engine loop's attempts)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from adapter.assemble import SloChoice
from adapter.clock import ManualClock
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadKey, LoadReport, MetricsUnavailable, ModelLoad
from adapter.engine import CycleError, Engine, EngineStats, Snapshot, VariantDecision
from adapter.exporter import (
    Exporter,
    LoopLiveness,
    Probe,
    SnapshotCollector,
    liveness_limit,
    reason_code,
)
from adapter.learn import DeclaredProfile, LearnedProfile
from adapter.learn.startup import StartupEstimate
from adapter.learning import ProfileView
from adapter.lookahead import AheadView
from tests.kube_helpers import SAMPLES

Sample = tuple[str, frozenset[tuple[str, str]]]

SLO = SloChoice(class_name="Premium", key="opt-125m", slo_itl=24.0, slo_ttw=500.0, via="model")
# granite-h100's decode profile: declared 10 + 0.1 x batch ms, learned 13 + 0.13 (in use)
LEARNED = LearnedProfile(
    declared=DeclaredProfile(alpha_ms=10.0, beta_ms=0.1, max_batch=256, slo_itl_ms=24.0),
    alpha_ms=13.0,
    beta_ms=0.13,
    alpha_se_ms=0.1,
    beta_se_ms=0.002,
    accepted=12,
    rejected=1,
    resets=0,
    trusted=True,
    reason="ITL known within 0.5% at batch 40",
)
PROFILE = ProfileView(10.0, 0.1, 13.0, 0.13, "learned", LEARNED)
AHEAD = AheadView(
    measured_rpm=120.0,
    sized_rpm=150.0,
    horizon_s=105.0,
    startup=StartupEstimate(
        seconds=90.0, upper_s=100.0, samples=3, source="learned", resolution_s=15.0
    ),
)


def decisions() -> dict[tuple[str, str], VariantDecision]:
    """Four VAs: solved, solved from 0 replicas, infeasible (with load), invalid (no load)."""
    return {
        ("llm", "granite-h100"): VariantDecision(
            namespace="llm",
            name="granite-h100",
            model="ibm/granite",
            accelerator="H100",
            desired_replicas=3,
            current_replicas=2,
            reason="optimized",
            load=ModelLoad(
                "llm",
                "ibm/granite",
                arrival_rate_rpm=120.0,
                avg_output_tokens=256.0,
                itl_ms=12.5,
                queue_time_ms=40.0,
            ),
            slo=SLO,
            predicted_itl_ms=20.0,
            predicted_wait_ms=100.0,
            max_rpm_per_replica=60.0,
            cost=300.0,
        ),
        ("llm", "cold-start"): VariantDecision(
            namespace="llm",
            name="cold-start",
            model="ibm/cold",
            accelerator="A100",
            desired_replicas=2,
            current_replicas=0,
            reason="optimized",
            load=ModelLoad("llm", "ibm/cold", arrival_rate_rpm=6.0, avg_output_tokens=100.0),
            slo=SLO,
            predicted_itl_ms=15.0,
            predicted_wait_ms=0.0,
            max_rpm_per_replica=None,
            cost=80.0,
        ),
        ("llm", "llama-a100"): VariantDecision(
            namespace="llm",
            name="llama-a100",
            model="meta/llama",
            accelerator="A100",
            desired_replicas=None,
            current_replicas=1,
            reason="A100: ITL target 24 ms below the minimum 30 ms",
            load=ModelLoad("llm", "meta/llama", arrival_rate_rpm=30.0, avg_output_tokens=128.0),
            slo=SLO,
        ),
        ("other", "broken"): VariantDecision(
            namespace="other",
            name="broken",
            model="",
            accelerator="",
            desired_replicas=None,
            current_replicas=None,
            reason="missing label inference.optimization/acceleratorName",
        ),
    }


def decisions_learning() -> dict[tuple[str, str], VariantDecision]:
    """`decisions()`, granite-h100 with a learned profile in use and a look-ahead."""
    out = decisions()
    key = ("llm", "granite-h100")
    out[key] = replace(out[key], profile=PROFILE, ahead=AHEAD)
    return out


def test_the_learned_profile_and_the_look_ahead_are_exported() -> None:
    snapshot = Snapshot(
        cycle=1, timestamp=0.0, monotonic=0.0, duration_s=0.1, decisions=decisions_learning()
    )
    collector = SnapshotCollector(lambda: snapshot, EngineStats(), ManualClock(), max_age_s=None)
    labels = frozenset(
        {("variant_name", "granite-h100"), ("namespace", "llm"), ("accelerator_type", "H100")}
    )
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
        if s.name.startswith(("wva_declared", "wva_learned", "wva_sized", "wva_startup"))
    }
    assert got == {
        ("wva_declared_alpha_seconds", labels): pytest.approx(0.010),
        ("wva_declared_beta_seconds", labels): pytest.approx(0.0001),
        ("wva_learned_alpha_seconds", labels): pytest.approx(0.013),
        ("wva_learned_beta_seconds", labels): pytest.approx(0.00013),
        ("wva_learned_profile_observations", labels): 12,
        ("wva_learned_profile_trusted", labels): 1.0,
        ("wva_learned_profile_in_use", labels): 1.0,
        ("wva_sized_arrival_rate_requests_per_second", labels): pytest.approx(2.5),
        ("wva_startup_seconds", labels): 90.0,
    }


def test_the_slo_batch_and_the_gateway_queue_are_exported() -> None:
    out = decisions()
    key = ("llm", "granite-h100")
    out[key] = replace(out[key], slo_batch=60, gateway_waiting=3.0)
    snapshot = Snapshot(cycle=1, timestamp=0.0, monotonic=0.0, duration_s=0.1, decisions=out)
    collector = SnapshotCollector(lambda: snapshot, EngineStats(), ManualClock(), max_age_s=None)
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
        if s.name in ("wva_slo_batch_requests", "wva_gateway_waiting_requests")
    }
    labels = va("granite-h100", "llm", "H100")
    assert got == {
        ("wva_slo_batch_requests", labels): 60,
        ("wva_gateway_waiting_requests", labels): 3.0,
    }


def make_snapshot(
    clock: ManualClock,
    cycle: int = 7,
    duration_s: float = 0.004,
    drop: tuple[tuple[str, str], ...] = (),
) -> Snapshot:
    found = {k: v for k, v in decisions().items() if k not in drop}
    return Snapshot(
        cycle=cycle,
        timestamp=clock.now(),
        monotonic=clock.monotonic(),
        duration_s=duration_s,
        decisions=MappingProxyType(found),
        config_problems=("ConfigMap x key 'y': bad",),
        phases_s={"collect": 0.001, "assemble": 0.0005, "optimize": 0.0025},
    )


def samples(text: str) -> dict[Sample, float]:
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample.value
    return out


def va(name: str, namespace: str, accelerator: str, **extra: str) -> frozenset[tuple[str, str]]:
    labels = {"variant_name": name, "namespace": namespace, "accelerator_type": accelerator}
    return frozenset({**labels, **extra}.items())


class Box:
    """A mutable provider: what the engine's `latest` would return."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot

    def __call__(self) -> Snapshot | None:
        return self.snapshot


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_700_000_000.0)


def scrape(exporter: Exporter) -> dict[Sample, float]:
    return samples(generate_latest(exporter.registry).decode())


def test_exact_samples_for_a_hand_built_snapshot(clock: ManualClock) -> None:
    box = Box(make_snapshot(clock))
    stats = EngineStats(cycles_total=9, cycle_errors_total=2, metrics_errors_total=1)
    exporter = Exporter(
        box,
        stats,
        clock,
        max_age_s=60.0,
        version="1.2.3",
        kubernetes_errors=lambda: {"status_write": 4, "lease": 0},
    )
    clock.advance(4.0)

    granite = va("granite-h100", "llm", "H100")
    cold = va("cold-start", "llm", "A100")
    llama = va("llama-a100", "llm", "A100")
    broken = va("broken", "other", "unresolved")
    none: frozenset[tuple[str, str]] = frozenset()
    buckets = {
        "0.001": 0.0,
        "0.0025": 0.0,
        "0.005": 1.0,
        "0.01": 1.0,
        "0.025": 1.0,
        "0.05": 1.0,
        "0.1": 1.0,
        "0.25": 1.0,
        "0.5": 1.0,
        "1.0": 1.0,
        "2.5": 1.0,
        "5.0": 1.0,
        "10.0": 1.0,
        "30.0": 1.0,
        "+Inf": 1.0,
    }
    expected: dict[Sample, float] = {
        ("wva_build_info", frozenset({("version", "1.2.3")})): 1.0,
        ("wva_cycles_total", none): 9.0,
        ("wva_cycle_errors_total", none): 2.0,
        ("wva_metrics_errors_total", none): 1.0,
        ("wva_kubernetes_errors_total", frozenset({("operation", "status_write")})): 4.0,
        ("wva_kubernetes_errors_total", frozenset({("operation", "lease")})): 0.0,
        **{
            ("wva_cycle_duration_seconds_bucket", frozenset({("le", le)})): v
            for le, v in buckets.items()
        },
        ("wva_cycle_duration_seconds_count", none): 1.0,
        ("wva_cycle_duration_seconds_sum", none): 0.004,
        ("wva_last_successful_cycle_timestamp_seconds", none): 1_700_000_000.0,
        ("wva_snapshot_age_seconds", none): 4.0,
        ("wva_config_problems", none): 1.0,
        ("wva_cycle_phase_seconds", frozenset({("phase", "collect")})): 0.001,
        ("wva_cycle_phase_seconds", frozenset({("phase", "assemble")})): 0.0005,
        ("wva_cycle_phase_seconds", frozenset({("phase", "optimize")})): 0.0025,
        # solved only
        ("wva_desired_replicas", granite): 3.0,
        ("wva_desired_replicas", cold): 2.0,
        ("wva_current_replicas", granite): 2.0,
        ("wva_current_replicas", cold): 0.0,
        ("wva_desired_ratio", granite): 1.5,
        ("wva_desired_ratio", cold): 2.0,  # current 0: the ratio is the desired count
        ("wva_predicted_itl_seconds", granite): 0.02,
        ("wva_predicted_itl_seconds", cold): 0.015,
        ("wva_predicted_wait_seconds", granite): 0.1,
        ("wva_predicted_wait_seconds", cold): 0.0,
        ("wva_max_request_rate_per_replica", granite): 1.0,
        ("wva_desired_cost", granite): 300.0,
        ("wva_desired_cost", cold): 80.0,
        # observed load, wherever the cycle read it
        ("wva_arrival_rate_requests_per_second", granite): 2.0,
        ("wva_arrival_rate_requests_per_second", cold): 0.1,
        ("wva_arrival_rate_requests_per_second", llama): 0.5,
        ("wva_avg_output_tokens", granite): 256.0,
        ("wva_avg_output_tokens", cold): 100.0,
        ("wva_avg_output_tokens", llama): 128.0,
        ("wva_observed_itl_seconds", granite): 0.0125,
        ("wva_observed_wait_seconds", granite): 0.04,
        ("wva_slo_itl_seconds", granite): 0.024,
        ("wva_slo_itl_seconds", cold): 0.024,
        ("wva_slo_itl_seconds", llama): 0.024,
        ("wva_slo_ttft_seconds", granite): 0.5,
        ("wva_slo_ttft_seconds", cold): 0.5,
        ("wva_slo_ttft_seconds", llama): 0.5,
        ("wva_decision_info", va("granite-h100", "llm", "H100", reason="Optimized")): 1.0,
        ("wva_decision_info", va("cold-start", "llm", "A100", reason="Optimized")): 1.0,
        ("wva_decision_info", va("llama-a100", "llm", "A100", reason="Infeasible")): 1.0,
        (
            "wva_decision_info",
            va("broken", "other", "unresolved", reason="InvalidConfiguration"),
        ): 1.0,
    }
    got = scrape(exporter)
    assert got.keys() == expected.keys(), (
        sorted(got.keys() - expected.keys()),
        sorted(expected.keys() - got.keys()),
    )
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    # never a 0 (or anything) standing in for an unsolved VA's recommendation
    for name in ("wva_desired_replicas", "wva_current_replicas", "wva_desired_ratio"):
        assert (name, llama) not in got and (name, broken) not in got

    text = generate_latest(exporter.registry).decode()
    assert "# TYPE wva_desired_replicas gauge" in text
    assert "# TYPE wva_cycles_total counter" in text
    assert "# TYPE wva_cycle_duration_seconds histogram" in text
    assert (
        'wva_desired_replicas{accelerator_type="H100",namespace="llm",'
        'variant_name="granite-h100"} 3.0' in text.splitlines()
    )


def test_deleted_variant_series_vanish_and_the_reason_follows(clock: ManualClock) -> None:
    box = Box(make_snapshot(clock, cycle=1))
    exporter = Exporter(box, EngineStats(), clock)
    before = scrape(exporter)
    granite = va("granite-h100", "llm", "H100")
    assert ("wva_desired_replicas", granite) in before

    box.snapshot = make_snapshot(clock, cycle=2, drop=(("llm", "granite-h100"),))
    after = scrape(exporter)
    assert not [key for key in after if ("variant_name", "granite-h100") in key[1]]
    assert ("wva_desired_replicas", va("cold-start", "llm", "A100")) in after

    # an unsolved VA that becomes solved: its decision_info reason changes, no leftovers
    solved = {
        **decisions(),
        ("llm", "llama-a100"): VariantDecision(
            namespace="llm",
            name="llama-a100",
            model="meta/llama",
            accelerator="A100",
            desired_replicas=4,
            current_replicas=1,
            reason="optimized",
        ),
    }
    box.snapshot = Snapshot(3, clock.now(), clock.monotonic(), 0.001, MappingProxyType(solved))
    infos = {
        dict(labels)["reason"]
        for name, labels in scrape(exporter)
        if name == "wva_decision_info" and ("variant_name", "llama-a100") in labels
    }
    assert infos == {"Optimized"}


def test_stale_snapshot_withholds_decisions_but_reports_its_age(clock: ManualClock) -> None:
    box = Box(make_snapshot(clock))
    exporter = Exporter(box, EngineStats(), clock, max_age_s=30.0, serving=lambda: True)
    clock.advance(30.0)
    assert exporter.collector.fresh()
    assert any(name == "wva_desired_replicas" for name, _ in scrape(exporter))
    clock.advance(0.5)
    assert not exporter.collector.fresh()
    assert exporter.ready()  # stale is answered per call (UNAVAILABLE), not by leaving
    got = scrape(exporter)
    assert got[("wva_snapshot_age_seconds", frozenset())] == 30.5
    assert ("wva_last_successful_cycle_timestamp_seconds", frozenset()) in got
    assert not [name for name, _ in got if name.startswith(("wva_desired", "wva_decision"))]


def test_no_snapshot_yet(clock: ManualClock) -> None:
    exporter = Exporter(Box(None), EngineStats(cycles_total=1, cycle_errors_total=1), clock)
    got = scrape(exporter)
    assert got[("wva_cycle_errors_total", frozenset())] == 1.0
    assert got[("wva_cycle_duration_seconds_count", frozenset())] == 0.0
    assert not [name for name, _ in got if name.startswith("wva_snapshot_age")]
    assert not [name for name, _ in got if name == "wva_desired_replicas"]
    assert not exporter.collector.fresh()


def test_histogram_counts_each_cycle_once(clock: ManualClock) -> None:
    box = Box(make_snapshot(clock, cycle=1, duration_s=0.003))
    collector = SnapshotCollector(box, EngineStats(), clock)
    collector.observe(make_snapshot(clock, cycle=1, duration_s=0.003))
    collector.observe(make_snapshot(clock, cycle=2, duration_s=0.2))
    collector.observe(make_snapshot(clock, cycle=2, duration_s=0.2))  # the hook and a scrape
    collector.observe(make_snapshot(clock, cycle=3, duration_s=45.0))
    (family,) = [f for f in collector.collect() if f.name == "wva_cycle_duration_seconds"]
    values = {(s.name, s.labels.get("le", "")): s.value for s in family.samples if s.name != "x"}
    assert values[("wva_cycle_duration_seconds_bucket", "0.0025")] == 0
    assert values[("wva_cycle_duration_seconds_bucket", "0.005")] == 1
    assert values[("wva_cycle_duration_seconds_bucket", "0.25")] == 2
    assert values[("wva_cycle_duration_seconds_bucket", "30.0")] == 2
    assert values[("wva_cycle_duration_seconds_bucket", "+Inf")] == 3
    assert values[("wva_cycle_duration_seconds_count", "")] == 3
    assert values[("wva_cycle_duration_seconds_sum", "")] == pytest.approx(45.203)


def test_engine_stats_may_be_read_live(clock: ManualClock) -> None:
    stats = EngineStats()
    exporter = Exporter(Box(None), lambda: stats, clock)
    stats.cycles_total = 3
    assert scrape(exporter)[("wva_cycles_total", frozenset())] == 3.0


def test_reason_codes() -> None:
    by_name = {d.name: reason_code(d) for d in decisions().values()}
    assert by_name == {
        "granite-h100": "Optimized",
        "cold-start": "Optimized",
        "llama-a100": "Infeasible",
        "broken": "InvalidConfiguration",
    }
    load = ModelLoad("n", "m")
    capacity = VariantDecision(
        "n", "v", "m", "H100", None, 1, "accelerator capacity exhausted", load
    )
    invalid = VariantDecision("n", "v", "m", "H100", None, 1, "invalid input: x: y", load)
    assert reason_code(capacity) == "CapacityExhausted"
    assert reason_code(invalid) == "InvalidConfiguration"


# ---------------------------------------------------------------- over HTTP


@pytest.fixture
def served(clock: ManualClock) -> Iterator[tuple[Exporter, Box]]:
    box = Box(None)
    with Exporter(box, EngineStats(), clock, max_age_s=60.0, serving=lambda: True) as exporter:
        yield exporter, box


def test_http_health_readiness_and_formats(
    served: tuple[Exporter, Box], clock: ManualClock
) -> None:
    exporter, box = served
    assert exporter.port > 0 and exporter.url.startswith("http://127.0.0.1:")
    with requests.Session() as http:
        assert http.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
        # serving gRPC with no decision yet: ready, and the body says what is answered
        readyz = http.get(f"{exporter.url}/readyz", timeout=5)
        assert (readyz.status_code, readyz.text) == (
            200,
            "ok; no fresh optimization result: GetMetrics answers UNAVAILABLE\n",
        )
        assert http.get(f"{exporter.url}/nope", timeout=5).status_code == 404

        box.snapshot = make_snapshot(clock)
        readyz = http.get(f"{exporter.url}/readyz", timeout=5)
        assert (readyz.status_code, readyz.text) == (200, "ok\n")

        classic = http.get(f"{exporter.url}/metrics", timeout=5)
        assert classic.status_code == 200
        assert classic.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        got = samples(classic.text)
        assert got[("wva_desired_replicas", va("granite-h100", "llm", "H100"))] == 3.0

        # what Prometheus asks for first
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        om = http.get(f"{exporter.url}/metrics", headers={"Accept": accept}, timeout=5)
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        parsed = openmetrics_families(om.text)  # type: ignore[no-untyped-call]
        names = {s.name for f in parsed for s in f.samples}
        assert {"wva_desired_replicas", "wva_cycles_total", "wva_build_info"} <= names
        assert "wva_decision_info" in names

        clock.advance(61.0)  # stale: still ready (and without a loop to watch, healthy)
        assert http.get(f"{exporter.url}/readyz", timeout=5).status_code == 200
        assert http.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
        assert "wva_desired_replicas" not in http.get(f"{exporter.url}/metrics", timeout=5).text


# ---------------------------------------------------------------- probes


class Serving:
    """What `ScalerPool.serving` says: switched by the test."""

    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


def get(url: str) -> tuple[int, str]:
    answer = requests.get(url, timeout=5)
    return answer.status_code, answer.text


def test_readyz_follows_grpc_serving_not_the_snapshot_age(clock: ManualClock) -> None:
    """A Prometheus outage makes every replica's snapshot stale at once: unready pods would
    empty the Service (KEDA: connection errors) and the PDB would block drains."""
    box, serving = Box(make_snapshot(clock)), Serving()
    with Exporter(box, EngineStats(), clock, max_age_s=45.0, serving=serving) as exporter:
        status, body = get(f"{exporter.url}/readyz")  # the gRPC port is not bound yet
        assert (status, body) == (
            503,
            "the KEDA external scaler is not serving (not bound yet, or stopping)\n",
        )
        serving.value = True
        assert get(f"{exporter.url}/readyz") == (200, "ok\n")
        clock.advance(600.0)  # stale for long: still ready, the calls say UNAVAILABLE
        status, body = get(f"{exporter.url}/readyz")
        assert (status, "GetMetrics answers UNAVAILABLE" in body) == (200, True)
        serving.value = False  # stopping
        assert get(f"{exporter.url}/readyz")[0] == 503
        assert exporter.ready() is False


class Attempts:
    """Stands in for `Engine.last_attempt`."""

    def __init__(self) -> None:
        self.last: float | None = None

    def __call__(self) -> float | None:
        return self.last


def test_liveness_limit_and_grace() -> None:
    assert liveness_limit(15.0) == 75.0  # interval + 60 s margin
    assert liveness_limit(60.0) == 180.0  # 3 intervals
    assert liveness_limit(1.0) == 61.0
    clock = ManualClock()
    probe = LoopLiveness(Attempts(), clock, 15.0)
    assert (probe.limit_s, probe.grace_s) == (75.0, 135.0)


def test_healthz_fails_once_the_loop_attempts_nothing_for_the_limit(clock: ManualClock) -> None:
    attempts = Attempts()
    with Exporter(
        Box(None), EngineStats(), clock, last_attempt=attempts, interval_s=15.0
    ) as exporter:
        status, body = get(f"{exporter.url}/healthz")
        assert (status, body.startswith("ok: starting, no cycle attempted yet")) == (200, True)
        attempts.last = clock.monotonic()
        for _ in range(5):  # an attempt every interval
            clock.advance(15.0)
            attempts.last = clock.monotonic()
            assert get(f"{exporter.url}/healthz") == (200, "ok: last cycle attempt 0.0 s ago\n")
        hung_since = clock.now()
        clock.advance(75.0)  # the limit itself: still alive
        assert get(f"{exporter.url}/healthz")[0] == 200
        clock.advance(0.5)
        status, body = get(f"{exporter.url}/healthz")
        assert status == 503
        assert body == (
            f"the engine loop has attempted no cycle since {iso(hung_since)} "
            "(75.5 s ago; limit 75 s): it is hung\n"
        )
        attempts.last = clock.monotonic()  # it came back by itself
        assert get(f"{exporter.url}/healthz")[0] == 200


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def test_healthz_before_the_first_attempt_allows_a_start_up_grace(clock: ManualClock) -> None:
    started = clock.now()
    exporter = Exporter(Box(None), EngineStats(), clock, last_attempt=Attempts(), interval_s=15.0)
    clock.advance(135.0)
    assert exporter.live().ok
    clock.advance(1.0)
    assert exporter.live() == Probe(
        False,
        f"the engine loop has attempted no cycle since the start, {iso(started)} "
        "(136.0 s ago; start-up grace 135 s)",
    )


class DeadPrometheus:
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        raise MetricsUnavailable("Prometheus at http://prometheus:9090 is unreachable")


def test_healthz_stays_200_while_the_engine_loop_attempts_failing_cycles(
    clock: ManualClock,
) -> None:
    """A dead Prometheus fails every cycle; the loop is alive, and a restart would not help."""
    cluster = load_snapshot(SAMPLES)
    engine = Engine(cluster=lambda: cluster, metrics=DeadPrometheus(), clock=clock, interval_s=15.0)
    exporter = Exporter(
        lambda: engine.latest,
        lambda: engine.stats,
        clock,
        serving=lambda: True,
        last_attempt=lambda: engine.last_attempt,
        interval_s=engine.interval_s,
    )
    with exporter:
        assert engine.last_attempt is None
        for cycle in range(1, 11):  # 150 s of failing cycles, twice the limit
            clock.advance(15.0)
            with pytest.raises(CycleError, match="unreachable"):
                engine.run_cycle()
            assert engine.last_attempt == clock.monotonic()
            assert get(f"{exporter.url}/healthz")[0] == 200, cycle
            assert get(f"{exporter.url}/readyz")[0] == 200, cycle
        assert engine.stats.cycle_errors_total == 10 and engine.latest is None
        clock.advance(75.5)  # then the loop stops attempting: hung
        status, body = get(f"{exporter.url}/healthz")
        assert (status, "attempted no cycle since" in body) == (503, True)


def test_a_probe_that_raises_is_a_failed_probe(clock: ManualClock) -> None:
    def broken() -> bool:
        raise RuntimeError("pool gone")

    with Exporter(Box(None), EngineStats(), clock, serving=broken) as exporter:
        assert get(f"{exporter.url}/readyz") == (
            503,
            "the probe failed: RuntimeError: pool gone\n",
        )
