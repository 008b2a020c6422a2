"""`wva-adapter run` as deployed: decisions reach KEDA over gRPC and Prometheus over
/metrics, and SIGTERM stops it cleanly. A real subprocess, real sockets on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.emulator.metrics import MetricsServer
from tests.kube_helpers import SAMPLES
from tests.prometheus_server import free_port, poll

DEADLINE_S = 60.0


def test_run_serves_keda_and_prometheus_then_stops_on_sigterm(busy_pod: MetricsServer) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(SAMPLES),
            "--scrape",
            busy_pod.url,
            "--interval",
            "1",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(metrics_port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        health = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool | None:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                return None
            return True if answer.status == health_pb2.HealthCheckResponse.SERVING else None

        poll(serving, timeout_s=DEADLINE_S, what="the first decision to be served")
        scaler = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        ref = pb.ScaledObjectRef(name="vllm", namespace="vllm-test")
        spec = scaler.GetMetricSpec(ref, timeout=5)
        (metric,) = spec.metricSpecs
        assert (metric.metricName, metric.targetSize, metric.targetSizeFloat) == (
            "wva-vllm-test-vllm",
            1,
            1.0,
        )
        values = scaler.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref, metricName=metric.metricName), timeout=5
        )
        (value,) = values.metricValues
        assert (value.metricValue, value.metricValueFloat) == (2, 2.0)
        assert scaler.IsActive(ref, timeout=5).result is True
        with pytest.raises(grpc.RpcError) as unknown:
            scaler.GetMetrics(
                pb.GetMetricsRequest(
                    scaledObjectRef=pb.ScaledObjectRef(name="nope", namespace="vllm-test")
                ),
                timeout=5,
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        # the probes: ready (gRPC is served), alive (the loop attempts cycles)
        for path, body in (("/readyz", "ok\n"), ("/healthz", "ok: last cycle attempt")):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=5) as r:
                assert (r.status, r.read().decode().startswith(body)) == (200, True), path

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            exposition = r.read().decode()
        assert (
            'wva_desired_replicas{accelerator_type="H100",namespace="vllm-test",'
            'variant_name="vllm"} 2.0' in exposition
        )
        channel.close()

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in stderr, stderr
    assert "shutting down" in stderr
