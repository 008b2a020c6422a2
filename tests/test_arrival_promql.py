"""The PromQL arrival rate is the scrape source's definition, sample for sample.

Each case is a few pods' series, one sample a second. The scrape source's arithmetic
(`ScrapeTotals`, fed the samples at both ends of the window as two scrapes) and the
batched query (`build_queries(...)[0]`, evaluated by promtool on the same series) must
give the same rate. The window's ends fall on samples, so Prometheus has nothing to
extrapolate and any difference is one of definition: a step (in-flight growth), a pod
restart (in-flight growth from 0), a pod emptying faster than anything finishes (clamped
at 0), pods stored under either name form, pods without the gauges (completions only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapter.collect.prometheus import PrometheusSettings, build_queries, duration_seconds
from adapter.collect.scrape import Scrape, ScrapeTotals
from adapter.vllm_metrics import (
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_SUCCESS,
    escaped,
)
from tests.prometheus_server import promtool_test_rules

NS, MODEL = "ns", "m"
WINDOW_S = 10
SAMPLES = 61  # t = 0 .. 60 s


def steady(value: float) -> Callable[[int], float]:
    return lambda t: value


def linear(start: float, per_s: float) -> Callable[[int], float]:
    return lambda t: start + per_s * t


def restarted_at(at: int, before: float, after: Callable[[int], float]) -> Callable[[int], float]:
    """`before` until `at`, then a new process: `after` counted from the restart."""
    return lambda t: before if t < at else after(t - at)


@dataclass(frozen=True)
class Pod:
    success: Callable[[int], float]
    running: Callable[[int], float] | None = None
    waiting: Callable[[int], float] | None = None
    escaped: bool = True  # stored as vllm_... (Prometheus scraped it in OpenMetrics)

    def gauges(self) -> list[tuple[str, Callable[[int], float]]]:
        """(colon name, values) of the in-flight gauges the pod exports."""
        found = ((NUM_REQUESTS_RUNNING, self.running), (NUM_REQUESTS_WAITING, self.waiting))
        return [(family.value, values) for family, values in found if values is not None]


@dataclass(frozen=True)
class Case:
    name: str
    pods: Sequence[Pod]
    at: Sequence[int]  # evaluation times, s
    expected: Sequence[float]  # req/s, worked out by hand


CASES = [
    Case("steady", [Pod(linear(0, 2), steady(4), steady(1))], [30], [2.0]),
    Case("step: in flight grows", [Pod(linear(0, 2), linear(0, 1), steady(0))], [30], [3.0]),
    Case(
        # 1000 done and 40 running when the pod restarts at 25 s; then 1/s done and
        # running grows 2/s from 0. At 30 s: 4 done + 8 running since the restart, over
        # 10 s (not 4 + 8 - 40). At 40 s the restart is out of the window.
        "restart",
        [
            Pod(
                restarted_at(26, 1000, linear(0, 1)),
                restarted_at(26, 40, linear(0, 2)),
                steady(0),
            )
        ],
        [30, 40],
        [1.2, 3.0],
    ),
    Case(
        "emptying faster than anything finishes",
        [Pod(steady(7), linear(300, -5), steady(0))],
        [30],
        [0.0],
    ),
    Case(
        "pods under either name form",
        [
            Pod(linear(0, 2), linear(0, 1), steady(2), escaped=False),
            Pod(linear(0, 1), steady(3), linear(0, 0.5)),
        ],
        [30],
        [4.5],
    ),
    Case("no gauges: completions only", [Pod(linear(0, 3))], [30], [3.0]),
    Case("draining backlog", [Pod(linear(0, 12), linear(60, -4), steady(0))], [12], [8.0]),
]


def _series(pods: Sequence[Pod]) -> list[tuple[str, str, Callable[[int], float]]]:
    """(sample name, labels, values) of every pod's series, in the form it is stored."""
    out = []
    for i, pod in enumerate(pods):
        labels = f'namespace="{NS}",model_name="{MODEL}",pod="p{i}"'
        parts = [(REQUEST_SUCCESS.total, f'{labels},finished_reason="length"', pod.success)]
        parts += [(name, labels, values) for name, values in pod.gauges()]
        for name, series_labels, values in parts:
            out.append((escaped(name) if pod.escaped else name, series_labels, values))
    return out


def scrape_definition(pods: Sequence[Pod], at: int) -> float:
    """What the scrape source reports, in req/s, from the samples at `at - W` and `at`."""
    totals = ScrapeTotals()
    for pod in pods:

        def scrape(t: int, pod: Pod = pod) -> Scrape:
            values = {(REQUEST_SUCCESS.total, MODEL): pod.success(t)}
            values |= {(name, MODEL): series(t) for name, series in pod.gauges()}
            return Scrape(at=float(t), values=values, series=dict.fromkeys(values, 1))

        totals.add_rates(NS, scrape(at - WINDOW_S), scrape(at))
    return totals.loads()[NS, MODEL].arrival_rate_rpm / 60


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scrape_arithmetic_gives_the_worked_out_rates(case: Case) -> None:
    assert [scrape_definition(case.pods, t) for t in case.at] == pytest.approx(case.expected)


def _millis(value: float) -> int:
    """`value` in thousandths as PromQL's round() gives them: halves up."""
    return math.floor(value * 1000 + 0.5)


def test_the_query_gives_the_scrape_sources_rate_on_the_same_samples(tmp_path: Path) -> None:
    query = build_queries(f"{WINDOW_S}s")[0]
    assert query.field == "arrival_rate_rpm"
    tests = []
    for case in CASES:
        tests.append(
            {
                "interval": "1s",
                "input_series": [
                    {
                        "series": f"{name}{{{labels}}}",
                        "values": " ".join(f"{values(t):g}" for t in range(SAMPLES)),
                    }
                    for name, labels, values in _series(case.pods)
                ],
                # promtool compares exactly: both sides in whole thousandths
                "promql_expr_test": [
                    {
                        "expr": f"round(1000 * ({query.expr}))",
                        "eval_time": f"{t}s",
                        "exp_samples": [
                            {
                                "labels": f'{{namespace="{NS}",model_name="{MODEL}"}}',
                                "value": _millis(scrape_definition(case.pods, t)),
                            }
                        ],
                    }
                    for t in case.at
                ],
            }
        )
    promtool_test_rules(tmp_path, tests)


@pytest.mark.parametrize(
    ("window", "seconds"), [("1m", 60), ("6s", 6), ("1m30s", 90), ("1500ms", 1.5), ("1h", 3600)]
)
def test_window_in_seconds(window: str, seconds: float) -> None:
    assert duration_seconds(window) == seconds


@pytest.mark.parametrize("window", ["0s", "0m0s"])
def test_an_empty_window_is_refused(window: str) -> None:
    """The in-flight growth is divided by the window: a zero one would give NaN or Inf."""
    with pytest.raises(ValidationError, match="longer than 0"):
        PrometheusSettings(url="http://prometheus:9090", window=window)
