"""The snapshot exporter: exact samples, vanishing series, no 0 for unsolved VAs, readiness."""

from __future__ import annotations

from collections.abc import Iterator
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
from adapter.collect.metrics import ModelLoad
from adapter.engine import EngineStats, Snapshot, VariantDecision
from adapter.exporter import Exporter, SnapshotCollector, reason_code

Sample = tuple[str, frozenset[tuple[str, str]]]

SLO = SloChoice(class_name="Premium", key="opt-125m", slo_itl=24.0, slo_ttw=500.0, via="model")


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
    exporter = Exporter(box, EngineStats(), clock, max_age_s=30.0)
    clock.advance(30.0)
    assert exporter.ready()
    assert any(name == "wva_desired_replicas" for name, _ in scrape(exporter))
    clock.advance(0.5)
    assert not exporter.ready()
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
    assert not exporter.ready()


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
    with Exporter(box, EngineStats(), clock, max_age_s=60.0) as exporter:
        yield exporter, box


def test_http_health_readiness_and_formats(
    served: tuple[Exporter, Box], clock: ManualClock
) -> None:
    exporter, box = served
    assert exporter.port > 0 and exporter.url.startswith("http://127.0.0.1:")
    with requests.Session() as http:
        assert http.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
        assert http.get(f"{exporter.url}/readyz", timeout=5).status_code == 503
        assert http.get(f"{exporter.url}/nope", timeout=5).status_code == 404

        box.snapshot = make_snapshot(clock)
        assert http.get(f"{exporter.url}/readyz", timeout=5).status_code == 200

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

        clock.advance(61.0)
        assert http.get(f"{exporter.url}/readyz", timeout=5).status_code == 503
        assert http.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
