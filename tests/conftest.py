"""Shared pytest fixtures."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings
from kubernetes import client

from adapter.emulator.metrics import MetricsServer, VllmMetrics
from tests.fakes.kube_api import FakeKubeAPI
from tests.kube_helpers import MODEL
from tests.prometheus_server import PrometheusServer

# `make test` starts the real-time closed loops as a background job, which a shell starts
# with SIGINT ignored (POSIX): Python then installs no KeyboardInterrupt handler, and
# Ctrl-C would leave them running, with their emulators and Prometheus. With the handler
# back, Ctrl-C stops them through their fixtures' teardown.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# CI runs the same examples every time (a failure found there reproduces); developers'
# runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One real Prometheus for the whole session (fails, never skips, if not installed)."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    """An HTTP fake Kubernetes API server on 127.0.0.1 (see tests/fakes/kube_api.py)."""
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def api(fake: FakeKubeAPI) -> Iterator[client.ApiClient]:
    """The official client, pointed at the fake API server."""
    config = client.Configuration()
    config.host = fake.url
    with client.ApiClient(config) as api_client:
        yield api_client


@pytest.fixture
def busy_pod() -> Iterator[MetricsServer]:
    """An emulated vLLM pod finishing 20 requests/s (1200/min) of the tutorial's model:
    more than one H100 replica can take within the ITL SLO, so the decision is 2."""
    metrics = VllmMetrics(MODEL)
    stop = threading.Event()

    def serve() -> None:
        while not stop.wait(0.05):
            metrics.record_request(
                prompt_tokens=128,
                output_tokens=512,
                queue_time_s=0.0,
                ttft_s=0.05,
                inter_token_latencies_s=[0.009] * 511,
            )

    worker = threading.Thread(target=serve, daemon=True)
    with MetricsServer(metrics) as server:
        worker.start()
        yield server
        stop.set()
        worker.join(timeout=5)
