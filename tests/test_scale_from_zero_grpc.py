"""Scale from zero, as deployed: `wva-adapter run` with `--min-replicas 0` and the
emulator's gateway as the llm-d router. A request held at the gateway for the parked
model flips StreamIsActive (pushed) and IsActive to true within 1 s; once the replica
KEDA would start is ready, the held request is served. Real processes and sockets on
127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from adapter._proto import externalscaler_pb2 as pb
from adapter._proto import externalscaler_pb2_grpc as pb_grpc
from adapter.emulator.batching import ServingProfile
from adapter.emulator.server import EmulatedDeployment, EmulatorConfig
from tests.kube_helpers import MODEL, SAMPLES
from tests.prometheus_server import free_port, poll_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

NAMESPACE = "vllm-test"
WAKE_WITHIN_S = 1.0


def parked_cluster(folder: Path) -> Path:
    """The tutorial's objects with the Deployment at 0 replicas, and no pod to scrape."""
    shutil.copytree(SAMPLES, folder)
    path = folder / "deployment.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document and document.get("kind") == "Deployment":
            document["spec"]["replicas"] = 0
            document.pop("status", None)
    path.write_text(yaml.safe_dump_all(documents))
    (folder.parent / "targets.json").write_text("[]")
    return folder


def adapter(folder: Path, gateway_url: str, grpc_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(folder),
            "--scrape-file",
            str(folder.parent / "targets.json"),
            "--gateway",
            f"{NAMESPACE}={gateway_url}/metrics",
            "--min-replicas",
            "0",
            "--interval",
            "15",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(free_port()),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_request_waiting_at_the_gateway_activates_the_parked_variant_within_1s(
    tmp_path: Path,
) -> None:
    folder = parked_cluster(tmp_path / "cluster")
    profile = ServingProfile(alpha_ms=1.0, beta_ms=0.0, max_batch_size=16)
    config = EmulatorConfig(model=MODEL, profile=profile, replicas=0, hold_s=60)
    grpc_port = free_port()
    async with EmulatedDeployment(config) as dep, aiohttp.ClientSession() as session:
        process = adapter(folder, dep.gateway_url, grpc_port)
        try:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
            scaler: Any = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            ref = pb.ScaledObjectRef(name="vllm", namespace=NAMESPACE)

            async def parked() -> bool | None:
                try:
                    return (await scaler.IsActive(ref, timeout=1)).result is False or None
                except grpc.aio.AioRpcError:
                    return None

            await poll_async(parked, timeout_s=60, what="the parked variant to be served")
            stream = scaler.StreamIsActive(ref)
            assert (await asyncio.wait_for(stream.read(), 10)).result is False

            body = {"prompt": "a b c", "max_tokens": 2}
            sent = time.monotonic()
            request = asyncio.create_task(
                session.post(dep.gateway_url + "/v1/completions", json=body)
            )
            pushed = await asyncio.wait_for(stream.read(), 10)
            woken_after = time.monotonic() - sent
            assert pushed.result is True
            assert woken_after < WAKE_WITHIN_S, f"activated {woken_after:.2f} s after the request"
            assert (await scaler.IsActive(ref, timeout=5)).result is True
            metrics = await scaler.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref, metricName="wva-vllm-test-vllm"),
                timeout=5,
            )
            assert metrics.metricValues[0].metricValue == 1

            # KEDA starts the replica: the held request is served, none lost
            await dep.set_replicas(1)
            response = await asyncio.wait_for(request, 10)
            assert response.status == 200
            response.release()
            stream.cancel()
            await channel.close()
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=20)
    assert "Traceback" not in stderr, stderr
    assert "woken from zero" in stderr, stderr
