"""Fault: the adapter process is killed and restarted, and stopped with SIGTERM.

A real `wva-adapter run` subprocess scraping an emulated vLLM pod (20 req/s: 2 replicas).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from adapter._proto import externalscaler_pb2 as pb
from adapter.emulator.metrics import MetricsServer
from tests.test_fault_support import NOT_SERVING, REF, SERVING, Adapter, until


class Gate:
    """A pod's /metrics that can be made to fail (the handler errors, the scrape fails)."""

    def __init__(self, inner: MetricsServer) -> None:
        self.inner = inner.source
        self.open = threading.Event()
        self.open.set()

    def exposition(self) -> tuple[bytes, str]:
        if not self.open.is_set():
            raise ConnectionAbortedError("metrics gate closed")
        return self.inner.exposition()


@pytest.fixture
def gated(busy_pod: MetricsServer) -> Iterator[tuple[Gate, MetricsServer]]:
    gate = Gate(busy_pod)
    with MetricsServer(gate) as server:
        yield gate, server


def test_restarted_adapter_waits_for_a_fresh_cycle_never_answers_0(
    gated: tuple[Gate, MetricsServer],
) -> None:
    gate, pod = gated
    args = ["--scrape", pod.url]
    with Adapter(args, "--interval", "1", "--staleness", "3") as first:
        first.wait_value(2)
        first.kill()
        port = first.grpc_port

    gate.open.clear()  # the restarted adapter cannot complete a cycle yet
    with Adapter(args, "--interval", "1", "--staleness", "3", grpc_port=port) as second:
        answer = until(second.get_metrics, timeout_s=30, what="the restarted adapter's port")
        assert answer.unavailable, answer
        assert second.health_status() == NOT_SERVING
        # a few failing cycles later: still no number, never 0
        seen = time.monotonic()
        until(
            lambda: True if time.monotonic() - seen > 2.5 else None,
            timeout_s=5,
            what="three cycles",
        )
        later = second.get_metrics()
        assert later is not None and later.unavailable, later
        assert second.health_status() == NOT_SERVING

        gate.open.set()
        second.wait_value(2)
        assert second.health_status() == SERVING


def test_sigterm_lets_open_streams_finish_and_exits_within_the_grace_period(
    busy_pod: MetricsServer,
) -> None:
    grace = 3.0
    adapter = Adapter(["--scrape", busy_pod.url], "--interval", "1", "--grace-period", str(grace))
    with adapter:
        adapter.wait_value(2)
        stream = adapter.scaler.StreamIsActive(REF, timeout=30)
        assert next(stream).result is True  # an RPC in flight
        spec_stream = adapter.scaler.StreamMetricSpec(REF, timeout=30)
        assert next(spec_stream).metricSpecs[0].metricName == "wva-vllm-test-vllm"

        sent = time.monotonic()
        adapter.sigterm()
        # the in-flight streams end cleanly (status OK), not cut off by the exit, and
        # before the grace period is over; what they still send is the true answer
        # (2 replicas wanted: active), never a False or another spec on the way out
        last_active = [r.result for r in stream]  # read until the server ends the stream
        assert all(result is True for result in last_active), last_active
        assert stream.code() == grpc.StatusCode.OK, stream.details()
        last_specs = list(spec_stream)
        assert last_specs == [], last_specs  # the spec never changes: sent once, at the start
        assert spec_stream.code() == grpc.StatusCode.OK, spec_stream.details()
        assert time.monotonic() - sent < grace, "the streams ended within the grace period"
        assert adapter.wait_exit(grace + 10) == 0
        assert time.monotonic() - sent < grace + 3, "stopped within the grace period"
        with pytest.raises(grpc.RpcError) as refused:
            adapter.scaler.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=REF), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # nobody listens: no 0
    assert "Traceback" not in adapter.stderr, adapter.stderr
    assert "shutting down" in adapter.stderr
