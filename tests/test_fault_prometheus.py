"""Fault: the Prometheus the adapter reads is stopped mid-run, then restarted.

A real `wva-adapter run` process reads a real Prometheus (its own instance, not the
session one) scraping an emulated vLLM pod at 20 req/s (2 replicas). While a recorder
polls GetMetrics all along, Prometheus goes away and comes back on the same port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adapter.emulator.metrics import MetricsServer
from tests.prometheus_server import PrometheusServer
from tests.test_fault_support import NOT_SERVING, SERVING, Adapter, Answer, until

STALENESS_S = 3.0


class Recorder:
    """Polls GetMetrics in a thread and keeps every (monotonic time, answer)."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.answers: list[tuple[float, Answer]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def _run(self) -> None:
        while not self._halt.wait(0.05):
            answer = self.adapter.get_metrics()
            if answer is not None:
                self.answers.append((time.monotonic(), answer))

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(timeout=10)

    def since(self, t: float) -> list[Answer]:
        return [a for at, a in list(self.answers) if at >= t]


class RestartedPrometheus(PrometheusServer):
    """A Prometheus restarted from a stopped one: same data dir, port and targets, so its
    configuration names the targets from the start, as a real restarted Prometheus's does."""

    def __init__(self, stopped: PrometheusServer, targets: dict[str, dict[str, str]]) -> None:
        super().__init__(stopped.workdir, scrape_interval=stopped.scrape_interval)
        self._targets = targets
        self._pinned_port = stopped.port

    def start(self, *, ready_timeout_s: float = 30.0) -> PrometheusServer:
        import tests.prometheus_server as module

        original = module.free_port
        module.free_port = lambda: self._pinned_port
        try:
            return super().start(ready_timeout_s=ready_timeout_s)
        finally:
            module.free_port = original


@pytest.fixture
def prometheus(tmp_path: Path, busy_pod: MetricsServer) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path).start()
    server.add_target(f"127.0.0.1:{busy_pod.port}", {"namespace": "vllm-test", "pod": "vllm-0"})
    try:
        yield server
    finally:
        server.stop()


def test_prometheus_stopped_and_restarted_serves_last_then_unavailable_then_recovers(
    tmp_path: Path,
    busy_pod: MetricsServer,
    prometheus: PrometheusServer,
) -> None:
    adapter = Adapter(
        ["--prometheus", prometheus.url, "--window", "3s"],
        "--interval",
        "1",
        "--staleness",
        str(STALENESS_S),
    )
    with adapter, Recorder(adapter) as recorder:
        adapter.wait_value(2, timeout_s=30)
        assert adapter.health_status() == SERVING

        prometheus.stop()
        down = time.monotonic()

        def unavailable() -> float | None:
            adapter.alive()
            answer = adapter.get_metrics()
            return time.monotonic() if answer is not None and answer.unavailable else None

        went_unavailable = until(unavailable, timeout_s=STALENESS_S + 10, what="UNAVAILABLE")
        # the last decision was served after Prometheus died, until the staleness limit
        assert any(a.value == 2 for a in recorder.since(down)), recorder.since(down)
        assert went_unavailable - down >= STALENESS_S - 1.5, "stale before the limit"
        # health is re-checked every second (ServerSettings.health_poll_s)
        until(
            lambda: True if adapter.health_status() == NOT_SERVING else None,
            timeout_s=3,
            what="health NOT_SERVING once stale",
        )
        # ... yet the pod stays ready (gRPC is served: KEDA gets UNAVAILABLE, not a Service
        # without endpoints) and alive (its cycles are attempted, and fail)
        for path in ("/readyz", "/healthz"):
            probe = requests.get(f"http://127.0.0.1:{adapter.metrics_port}{path}", timeout=5)
            assert probe.status_code == 200, (path, probe.text)

        # the same port again (the adapter keeps its --prometheus URL), the same data dir
        target = {f"127.0.0.1:{busy_pod.port}": {"namespace": "vllm-test", "pod": "vllm-0"}}
        restarted = RestartedPrometheus(prometheus, target).start()
        try:
            assert restarted.port == prometheus.port
            back = time.monotonic()
            adapter.wait_value(2, timeout_s=30)
            until(
                lambda: True if adapter.health_status() == SERVING else None,
                timeout_s=10,
                what="SERVING again",
            )
        finally:
            restarted.stop()
        adapter.alive()

    answers = [a for _t, a in recorder.answers]
    values = {a.value for a in answers if a.value is not None}
    codes = {a.code.name for a in answers if a.value is None}
    # never 0 for the loaded variant; a restarted Prometheus's first, partial rate windows
    # may under-estimate the load (1 instead of 2): see the report / docs/reliability.md
    assert 0.0 not in values and 2.0 in values, values
    assert codes == {"UNAVAILABLE"}, codes
    # 2 after the restart is asserted by wait_value above; the 50 ms recorder may miss it
    del back
    assert "Traceback" not in adapter.stderr, adapter.stderr
