"""End to end: guidellm drives the emulated vLLM Deployment through the real adapter
(scraping the pods, gRPC) and the KEDA/HPA simulator, on the tutorial's scenario in its
compressed form. Assertions are on the recorded time series."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from adapter.loop import Summary, run_demo, tutorial
from adapter.loop.record import Sample, observed_span

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, list[Sample], Path]:
    out_dir = tmp_path_factory.mktemp("loop")
    run_demo(tutorial(short=True), out_dir, io.StringIO())
    document = json.loads((out_dir / "summary.json").read_text())
    samples = [Sample.model_validate(s) for s in document["samples"]]
    return Summary.model_validate(document["summary"]), samples, out_dir


def _first(samples: list[Sample], after: float, condition: str, value: int) -> float | None:
    for s in samples:
        if s.t >= after and (s.replicas >= value if condition == ">=" else s.replicas <= value):
            return s.t
    return None


@pytest.mark.timeout(420)
def test_replicas_follow_the_second_stream_and_go_to_the_minimum(
    recorded: tuple[Summary, list[Sample], Path],
) -> None:
    summary, samples, _ = recorded
    scenario = tutorial(short=True)
    assert summary.replicas_path == [1, 2, 1, scenario.min_replicas], summary.replicas_path
    both = observed_span(samples, 12.0)  # the second stream, as the gateway saw it
    assert both is not None, [s.offered_rps for s in samples]
    start, end = both
    assert end - start >= 30, both
    up = _first(samples, 0, ">=", 2)
    assert up is not None and start < up <= start + 30, (up, both)
    down = _first(samples, up, "<=", 1)
    assert down is not None and end < down <= end + 35, (down, both)
    last_load = max(s.t for s in samples if s.offered_rps > 0)
    floor = _first(samples, down, "<=", scenario.min_replicas)
    assert floor is not None and last_load < floor, (floor, last_load)
    # the gateway saw the planned load while both streams ran: ~16 req/s
    rates = sorted(s.offered_rps for s in samples if start + 5 <= s.t <= end - 5)
    assert 13 <= rates[len(rates) // 2] <= 19, rates


@pytest.mark.timeout(420)
def test_itl_is_back_under_the_slo_after_scale_up(
    recorded: tuple[Summary, list[Sample], Path],
) -> None:
    summary, samples, _ = recorded
    both = observed_span(samples, 12.0)
    up = _first(samples, 0, ">=", 2)
    assert both is not None and up is not None
    # the observed ITL covers the last 5 s of finished requests, which started before
    # the new replica took load: allow their ~4 s lifetime plus the window to pass
    settled = [s.itl_ms for s in samples if up + 20 <= s.t <= both[1] and s.itl_ms]
    assert len(settled) >= 10
    assert max(settled) <= summary.slo_itl_ms, settled


@pytest.mark.timeout(420)
def test_demo_writes_plot_and_summary(recorded: tuple[Summary, list[Sample], Path]) -> None:
    _, samples, out_dir = recorded
    png = (out_dir / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert samples[-1].t >= tutorial(short=True).end_s - 2
    assert all(s.desired is None or s.desired >= 0 for s in samples)
