"""Helpers for the fault tests: `wva-adapter run` as a subprocess and a gRPC probe of it.

No tests here. Every wait polls an external process with a deadline.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from tests.kube_helpers import SAMPLES
from tests.prometheus_server import free_port, poll

T = TypeVar("T")

REF = pb.ScaledObjectRef(name="vllm", namespace="vllm-test")  # the sample VA


def until(probe: Callable[[], T | None], *, timeout_s: float, what: str) -> T:
    """Poll an external process until `probe` returns something other than None."""
    return poll(probe, timeout_s=timeout_s, what=what, interval_s=0.05)


@dataclass(frozen=True)
class Answer:
    """One GetMetrics answer: a value, or the gRPC status code of a refusal."""

    value: float | None
    code: grpc.StatusCode

    @property
    def unavailable(self) -> bool:
        return bool(self.code == grpc.StatusCode.UNAVAILABLE)


class Adapter:
    """`wva-adapter run --local deploy/samples ...` on loopback ports, with a gRPC probe."""

    def __init__(self, metrics_args: Sequence[str], *extra: str, grpc_port: int = 0) -> None:
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(SAMPLES),
            *metrics_args,
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            *extra,
        ]
        self.process: subprocess.Popen[str] | None = None
        self.stderr = ""
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.scaler = pb_grpc.ExternalScalerStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def start(self) -> Adapter:
        self.process = subprocess.Popen(self.args, stderr=subprocess.PIPE, text=True)
        return self

    def __enter__(self) -> Adapter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.wait_exit(10)

    def kill(self) -> None:
        """SIGKILL: the adapter dies without any shutdown."""
        assert self.process is not None
        self.process.kill()
        self.wait_exit(10)

    def sigterm(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        _, stderr = self.process.communicate(timeout=timeout_s)
        self.stderr += stderr or ""
        return self.process.returncode

    def alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the adapter exited: {self.wait_exit(5)}\n{self.stderr}")

    def health_status(self) -> int | None:
        """SERVING / NOT_SERVING, or None while the port does not answer."""
        try:
            answer = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return None
        return int(answer.status)

    def get_metrics(self) -> Answer | None:
        """GetMetrics for the sample VA; None while the port does not answer at all."""
        try:
            reply = self.scaler.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=REF), timeout=2)
        except grpc.RpcError as error:
            code = error.code()
            details = error.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE and not _from_the_adapter(details):
                return None  # connection refused / not listening yet
            return Answer(None, code)
        (value,) = reply.metricValues
        assert value.metricValue == value.metricValueFloat, value
        assert math.isfinite(value.metricValueFloat), value
        return Answer(value.metricValueFloat, grpc.StatusCode.OK)

    def wait_value(self, expected: float, timeout_s: float = 30.0) -> None:
        def probe() -> bool | None:
            self.alive()
            answer = self.get_metrics()
            return True if answer is not None and answer.value == expected else None

        until(probe, timeout_s=timeout_s, what=f"GetMetrics = {expected:g}")


def _from_the_adapter(details: str) -> bool:
    """UNAVAILABLE raised by the servicer (it names the VA) vs. by the transport."""
    return "VariantAutoscaling" in details


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
