"""The two metrics paths measured against each other on one emulated load step.

The adapter reads vLLM either by scraping the pods (adapter/collect/scrape.py: the demo,
the closed-loop test, the simulator and every policy figure in the README) or through
Prometheus (adapter/collect/prometheus.py: what deploy/ runs). Both define the arrival
rate as completions plus the growth of running + waiting over the window; this test
measures whether the PromQL twin gives the direct reading's numbers on the same pods
under the same traffic, and whether it leads the completion rate the Prometheus path
used before (`rate(vllm:request_success_total)`) when the load steps up.

- an emulated vLLM Deployment (`python -m adapter.emulator`, 2 replicas) in its own
  process; requests of 150 tokens at about 23 ms a step last about 3.5 s, long enough
  for a completion rate to lag a step visibly;
- an open-loop load generator (requests on a fixed schedule, whatever the answers, as
  guidellm's constant profile): 6 req/s, then 14 req/s;
- a ScrapeSource scraping the replicas, and a PrometheusSource reading the session's
  real Prometheus (1 s scrape interval) that scrapes the same replicas, both over 6 s;
- the truth: the gateway's arrival counter (the emulator's control API) over 6 s.

Measured on this machine (2 cores shared with other work, 4 runs): at steady state the
two within 1.6 % of each other at every reading (median 0.1-0.6 %); after the step both
reached its midpoint within one reading (0.5 s) of each other, 3.2-4.0 s after it (the
true rate over the window: 3.0-3.5 s), the completion rate 3.0-5.0 s later. With the
former query (completions only) the Prometheus path reached it 3 s after the direct
reading, and this test failed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from adapter.collect.metrics import LoadKey, MetricsWarmingUp
from adapter.collect.prometheus import PrometheusSettings, PrometheusSource
from adapter.collect.scrape import ScrapeSettings, ScrapeSource, ScrapeTarget
from adapter.vllm_metrics import REQUEST_SUCCESS, forms
from tests.prometheus_server import PrometheusServer, poll

pytestmark = pytest.mark.integration

NAMESPACE = "wva-agree"
MODEL = "m-agree"
KEY: LoadKey = (NAMESPACE, MODEL)
WINDOW_S = 6
BEFORE, AFTER = 6.0, 14.0  # req/s
OUTPUT_TOKENS = 150
SETTLE_S = 12.0  # a request's life (~3.5 s) + the window + Prometheus' scrape lag, rounded up
STEADY_S = 5.0
EVERY_S = 0.5

# The stated tolerances (the measured figures are in the module's docstring):
# at steady state the sources within 5 % of each other, the direct reading within 5 %
# of the truth; after the step both arrival estimates reach its midpoint at least 2 s
# before the completion rate does, Prometheus' at most 2 s after the direct reading's
AGREE = 0.05
MIDPOINT = (BEFORE + AFTER) / 2
LEAD_S = 2.0
LAG_S = 2.0


class OpenLoop(threading.Thread):
    """Sends completions requests on a fixed schedule at `rate` per second (changeable),
    never waiting for answers; counts the requests that failed."""

    def __init__(self, gateway: str, rate: float) -> None:
        super().__init__(name="open-loop", daemon=True)
        self.gateway = gateway
        self.rate = rate
        self.failed = 0
        self.halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._send())

    async def _send(self) -> None:
        body = {"model": MODEL, "prompt": "one two three four", "max_tokens": OUTPUT_TOKENS}
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as session:

            async def one() -> None:
                try:
                    async with session.post(f"{self.gateway}/v1/completions", json=body) as r:
                        await r.read()
                        self.failed += r.status != 200
                except aiohttp.ClientError:
                    self.failed += 1

            due = time.monotonic()
            while not self.halt.is_set():
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += 1.0 / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # the schedule
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Emulator:
    gateway: str
    control: str
    replicas: list[str]  # host:port


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """Two emulated replicas (in their own process: the test's threads take no CPU from
    the engines' steps)."""
    ready = tmp_path / "emulator.json"
    args = [
        *("--model", MODEL, "--alpha-ms", "20", "--beta-ms", "0.1"),
        *("--max-batch-size", "256", "--replicas", "2", "--ready-file", str(ready)),
    ]
    log = (tmp_path / "emulator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "adapter.emulator", *args], stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def endpoints() -> dict[str, Any] | None:
            if process.poll() is not None:
                raise RuntimeError(f"the emulator exited; see {tmp_path / 'emulator.log'}")
            return json.loads(ready.read_text()) if ready.exists() else None

        found = poll(endpoints, timeout_s=30, what="the emulator's ready file")
        replicas = [str(r["url"]).split("://", 1)[1] for r in found["replicas"]]
        yield Emulator(str(found["gateway"]), str(found["control"]), replicas)
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@dataclass(frozen=True)
class Reading:
    t: float  # seconds since the step (negative before it)
    truth: float  # req/s that reached the gateway over the last window
    scrape: float
    prometheus: float
    completions: float  # the former Prometheus definition: completions only

    def __str__(self) -> str:
        return (
            f"{self.t:6.1f} s truth {self.truth:5.2f} scrape {self.scrape:5.2f}"
            f" prometheus {self.prometheus:5.2f} completions {self.completions:5.2f}"
        )


def _crossing(readings: list[Reading], field: str) -> float:
    """When a series first reaches the step's midpoint after the step."""
    return next(r.t for r in readings if r.t > 0 and getattr(r, field) >= MIDPOINT)


def test_prometheus_and_scrape_arrivals_agree_and_lead_completions(
    emulator: Emulator, prometheus_server: PrometheusServer
) -> None:
    for i, address in enumerate(emulator.replicas):
        prometheus_server.add_target(address, {"namespace": NAMESPACE, "pod": f"agree-{i}"})
    targets = tuple(
        ScrapeTarget(url=f"http://{a}/metrics", namespace=NAMESPACE) for a in emulator.replicas
    )
    completed = " or ".join(
        f'rate({form}{{namespace="{NAMESPACE}"}}[{WINDOW_S}s])'
        for form in forms(REQUEST_SUCCESS.total)
    )
    arrivals: list[tuple[float, float]] = []  # (monotonic, gateway's total)
    session = requests.Session()
    load = OpenLoop(emulator.gateway, BEFORE)
    scrape = ScrapeSource(ScrapeSettings(targets=targets, window_s=WINDOW_S))
    prometheus = PrometheusSource(
        PrometheusSettings(url=prometheus_server.url, window=f"{WINDOW_S}s", namespace=NAMESPACE)
    )
    try:
        load.start()
        started = time.monotonic()
        with pytest.raises(MetricsWarmingUp):
            scrape.collect([KEY])

        def stored_window() -> bool | None:
            counts = prometheus_server.query(
                f'count_over_time(up{{namespace="{NAMESPACE}"}}[{WINDOW_S}s]) >= {WINDOW_S}'
            )
            return True if len(counts) == len(targets) else None

        poll(stored_window, timeout_s=40, what=f"{WINDOW_S} s of samples of both replicas")

        def read(step_at: float) -> Reading:
            now = time.monotonic()
            total = float(session.get(f"{emulator.control}/replicas", timeout=5).json()[
                "arrivals_total"
            ])  # fmt: skip
            arrivals.append((now, total))
            old = next(a for a in arrivals if a[0] >= now - WINDOW_S)
            truth = (total - old[1]) / (now - old[0]) if now > old[0] else 0.0
            done = sum(float(s["value"][1]) for s in prometheus_server.query(completed))
            return Reading(
                t=round(now - step_at, 2),
                truth=truth,
                scrape=scrape.collect([KEY]).get(*KEY).arrival_rate_rpm / 60,
                prometheus=prometheus.collect([KEY]).get(*KEY).arrival_rate_rpm / 60,
                completions=done,
            )

        readings: list[Reading] = []
        pace = threading.Event()  # never set: the readings' period
        step_at = max(time.monotonic(), started + SETTLE_S) + STEADY_S
        while (now := time.monotonic()) < step_at + SETTLE_S + STEADY_S:
            if now >= step_at and load.rate == BEFORE:
                load.rate = AFTER
            reading = read(step_at)
            if reading.t >= -STEADY_S:
                readings.append(reading)
            pace.wait(max(0.0, EVERY_S - (time.monotonic() - now)))
    finally:
        load.halt.set()
        load.join(timeout=30)
        scrape.close()
        prometheus.close()
        session.close()
        for address in emulator.replicas:
            prometheus_server.remove_target(address)

    table = "\n".join(map(str, readings))
    assert load.failed == 0, table
    steady = [
        (r, rate)
        for r in readings
        for rate in (BEFORE, AFTER)
        if (r.t < 0 and rate == BEFORE) or (r.t >= SETTLE_S and rate == AFTER)
    ]
    assert len(steady) >= 2 * STEADY_S / EVERY_S - 2, table
    for r, rate in steady:
        assert r.truth == pytest.approx(rate, rel=AGREE), f"{r}\n{table}"
        assert r.scrape == pytest.approx(rate, rel=AGREE), f"{r}\n{table}"
        assert r.prometheus == pytest.approx(r.scrape, rel=AGREE), f"{r}\n{table}"
    prometheus_at, scrape_at = _crossing(readings, "prometheus"), _crossing(readings, "scrape")
    completions_at = _crossing(readings, "completions")
    differences = [abs(r.prometheus - r.scrape) / rate for r, rate in steady]
    measured = (
        f"steady |prometheus - scrape| / rate: median {statistics.median(differences):.1%},"
        f" max {max(differences):.1%}; midpoint reached after the step at"
        f" {_crossing(readings, 'truth'):g} s (truth), {scrape_at:g} s (scrape),"
        f" {prometheus_at:g} s (prometheus), {completions_at:g} s (completions)"
    )
    print(measured)  # shown with -s: the figures the README quotes
    assert prometheus_at <= scrape_at + LAG_S, f"{measured}\n{table}"
    assert completions_at >= prometheus_at + LEAD_S, f"{measured}\n{table}"
