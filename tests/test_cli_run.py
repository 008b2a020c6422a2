"""`wva-adapter run --local deploy/samples --scrape URL`: the cycle with no cluster and no
Prometheus, as a user runs it (a real subprocess against an emulated vLLM pod)."""

from __future__ import annotations

import subprocess
import sys

from adapter.emulator.metrics import MetricsServer
from tests.kube_helpers import SAMPLES


def test_run_with_local_objects_and_scraping_logs_decisions(busy_pod: MetricsServer) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapter.cli",
            "run",
            "--local",
            str(SAMPLES),
            "--scrape",
            busy_pod.url,
            "--cycles",
            "3",
            "--interval",
            "1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # the first cycle has a single scrape: no rate yet, so no decision
    assert "rates need a second scrape" in result.stderr
    # a decision is logged at INFO when it is new or changed: cycle 3 repeats cycle 2's
    decisions = [line for line in result.stderr.splitlines() if "desired" in line]
    assert len(decisions) == 1
    assert "vllm-test/vllm: desired 2 x H100 (current 1)" in decisions[0]
    cycles = [line for line in result.stderr.splitlines() if "decisions changed" in line]
    assert [line.split("cycle ")[1].split(":")[0] for line in cycles] == ["2", "3"]
    assert "1 VariantAutoscalings solved, 0 not, 1 decisions changed" in cycles[0]
    assert "1 VariantAutoscalings solved, 0 not, 0 decisions changed" in cycles[1]


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
