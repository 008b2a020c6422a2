"""`wva-adapter run --local deploy/samples --scrape URL`: the cycle with no cluster and no
Prometheus, as a user runs it (a real subprocess against an emulated vLLM pod); and `run`
against the fake Kubernetes API, writing status under leader election."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from adapter.emulator.metrics import MetricsServer
from tests.fakes.kube_api import KIND_TO_RESOURCE, FakeKubeAPI
from tests.kube_helpers import SAMPLES, sample_objects
from tests.prometheus_server import poll

VA_RESOURCE = KIND_TO_RESOURCE["VariantAutoscaling"]
LEASE_RESOURCE = KIND_TO_RESOURCE["Lease"]


def _run_local(pod: MetricsServer, *flags: str) -> subprocess.CompletedProcess[str]:
    """`run --local deploy/samples --scrape POD` for three 1-second cycles."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(SAMPLES),
            "--scrape",
            pod.url,
            "--cycles",
            "3",
            "--interval",
            "1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_with_local_objects_and_scraping_logs_decisions(busy_pod: MetricsServer) -> None:
    result = _run_local(busy_pod)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # the first cycle has a single scrape: no rate yet, so no decision; a normal start,
    # said at INFO, with no warning at all
    assert (
        "INFO adapter.engine: cycle 1: first scrape taken as baseline; rates from the next cycle"
        in result.stderr
    )
    assert " WARNING " not in result.stderr and "failed" not in result.stderr, result.stderr
    # a decision is logged at INFO when it is new or changed: cycle 3 repeats cycle 2's
    decisions = [line for line in result.stderr.splitlines() if "desired" in line]
    assert len(decisions) == 1
    assert "vllm-test/vllm: desired 2 x H100 (current 1)" in decisions[0]
    cycles = [line for line in result.stderr.splitlines() if "decisions changed" in line]
    assert [line.split("cycle ")[1].split(":")[0] for line in cycles] == ["2", "3"]
    assert "1 VariantAutoscalings solved, 0 not, 1 decisions changed" in cycles[0]
    assert "1 VariantAutoscalings solved, 0 not, 0 decisions changed" in cycles[1]


def test_headroom_sizes_for_more_than_the_measured_rate(busy_pod: MetricsServer) -> None:
    """`--headroom 100` sizes for twice the pod's ~20 req/s: 3 or more replicas where the
    measured rate alone asks for 2 (the test above)."""
    result = _run_local(busy_pod, "--headroom", "100")
    assert result.returncode == 0, result.stderr
    decision = next(line for line in result.stderr.splitlines() if "desired" in line)
    desired = int(decision.split("desired ")[1].split(" x ")[0])
    assert desired >= 3, decision


def test_run_rejects_a_missing_folder_and_two_metric_sources() -> None:
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            "/nonexistent",
            "--scrape",
            "http://127.0.0.1:9/metrics",
            "--cycles",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "no such file or directory" in missing.stderr and "Traceback" not in missing.stderr
    both = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(SAMPLES),
            "--scrape",
            "http://127.0.0.1:9/metrics",
            "--prometheus",
            "http://127.0.0.1:9",
            "--cycles",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert both.returncode == 2
    assert "exactly one metrics source" in both.stderr


def test_run_against_a_cluster_writes_the_last_status_then_releases_the_lease(
    busy_pod: MetricsServer, fake: FakeKubeAPI, tmp_path: Path
) -> None:
    """`run --cycles 2`: the status writer's final pass writes cycle 2's decision (the
    periodic pass never saw it), and the Lease is kept, renewed, while that write is in
    flight, and released only after it."""
    for obj in sample_objects():
        fake.apply(obj)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )

    def status_patch(method: str, path: str) -> bool:
        return method == "PATCH" and path.endswith("/status")

    held = fake.hang_next(1, match=status_patch)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--kubeconfig",
            str(kubeconfig),
            "--scrape",
            f"vllm-test={busy_pod.url}",
            "--cycles",
            "2",
            "--interval",
            "1",
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--leader-election",
            "--leader-election-namespace",
            "wva-system",
            "--pod-name",
            "adapter-a",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(
            lambda: any(status_patch(r.method, r.path) for r in fake.requests) or None,
            timeout_s=30,
            what="the status write",
        )
        seen = lease_spec(fake)["renewTime"]

        def renewed() -> bool | None:
            spec = lease_spec(fake)
            return (spec["holderIdentity"] == "adapter-a" and spec["renewTime"] != seen) or None

        # the write is held: the elector keeps renewing instead of releasing under it
        poll(renewed, timeout_s=10, what="a renewal while the final status write is held")
    finally:
        held.set()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    # the cache's watches end within --staleness (3 x --interval 1 s), so a quiet but
    # healthy watch renews its proof of sync in time; lists come in pages
    watches = [r for r in fake.requests if r.query.get("watch") in ("true", "1")]
    assert watches and all(r.query.get("timeoutSeconds") == "1" for r in watches), watches
    assert any(r.query.get("limit") == "500" for r in fake.requests)

    status = fake.store.get(VA_RESOURCE, "vllm-test", "vllm")["status"]
    assert status["desiredOptimizedAlloc"]["numReplicas"] == 2
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    # the pods have given no observation under load (their Deployment has no ready count)
    assert ready == {
        "MetricsAvailable": "True",
        "OptimizationReady": "True",
        "ProfileLearned": "False",
    }
    assert lease_spec(fake)["holderIdentity"] == ""  # released on the way out
    writes = [
        r.method
        for r in fake.requests
        if status_patch(r.method, r.path) or (r.method == "PUT" and "/leases/" in r.path)
    ]
    assert "PATCH" in writes and writes[-1] == "PUT", writes  # the release comes last


def lease_spec(fake: FakeKubeAPI) -> dict[str, Any]:
    return dict(fake.store.get(LEASE_RESOURCE, "wva-system", "wva-adapter-leader")["spec"])
