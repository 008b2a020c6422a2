"""A real Prometheus for tests: the `prometheus` binary on a free loopback port.

Started once per session (see the `prometheus_server` fixture in conftest.py), with a
1 s scrape interval and lifecycle API so tests can add scrape targets by rewriting the
config and POSTing /-/reload. Polls with deadlines, never sleeps blindly.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapter.loop.harness import free_port as free_port  # re-exported for the tests

INSTALL_HINT = (
    "the `prometheus` binary is not on PATH; install it with "
    "`apt-get update && apt-get install -y --no-install-recommends prometheus` "
    "(as .ci/run does)"
)

T = TypeVar("T")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError(INSTALL_HINT.replace("`prometheus` binary", "`promtool` binary"))
    return found


def promtool_test_rules(
    workdir: Path,
    tests: list[dict[str, Any]],
    *,
    evaluation_interval: str = "1s",
    groups: list[dict[str, Any]] | None = None,
) -> None:
    """Run `promtool test rules` on these unit tests against the rule `groups` (none by
    default: each test then evaluates its `promql_expr_test` expressions on its
    `input_series`); fail with promtool's output."""
    (workdir / "rules.yml").write_text(yaml.safe_dump({"groups": groups or []}))
    suite = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": evaluation_interval,
        "tests": tests,
    }
    (workdir / "test.yml").write_text(yaml.safe_dump(suite))
    run_promtool(workdir, "test", "rules", "test.yml")


def run_promtool(workdir: Path, *args: str) -> str:
    """Run promtool with `args` in `workdir`; fail with its output unless it succeeds, else
    return what it printed."""
    result = subprocess.run(
        [promtool(), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def poll(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Call `probe` until it returns something other than None, or fail after the deadline.

    For state outside the test process (a server, a subprocess): poll with a deadline.
    """
    deadline = time.monotonic() + timeout_s
    wake = threading.Event()  # never set: a timed wait between probes
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        wake.wait(interval_s)


async def poll_async(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.02,
) -> T:
    """`poll` for asyncio tests: the event loop keeps running between probes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(interval_s)


class PrometheusServer:
    """One Prometheus process with a temporary config and data directory."""

    def __init__(self, workdir: Path, *, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.scrape_interval = scrape_interval
        self.port = 0
        self._targets: dict[str, dict[str, str]] = {}  # host:port -> extra labels
        self._process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready_timeout_s: float = 30.0) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self._write_config()
        self.port = free_port()
        self._log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        poll(self._ready, timeout_s=ready_timeout_s, what=f"Prometheus ready on {self.url}")
        return self

    def _ready(self) -> bool | None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"Prometheus exited early; see {self.workdir / 'prometheus.log'}")
        try:
            return self._session.get(f"{self.url}/-/ready", timeout=1).status_code == 200 or None
        except requests.ConnectionError:
            return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._log.close()
        self._session.close()

    def add_target(self, address: str, labels: Mapping[str, str]) -> None:
        """Scrape `host:port` (path /metrics) with these target labels, e.g. namespace, pod."""
        self._targets[address] = dict(labels)
        self._write_config()
        response = self._session.post(f"{self.url}/-/reload", timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"Prometheus reload failed: {response.status_code} {response.text}")

    def remove_target(self, address: str) -> None:
        self._targets.pop(address, None)
        self._write_config()
        self._session.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "vllm",
                    "static_configs": [
                        {"targets": [address], "labels": labels}
                        for address, labels in sorted(self._targets.items())
                    ],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query result (vector samples); raises on an error answer."""
        response = self._session.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def self_metric(self, name: str, labels: Mapping[str, str]) -> float:
        """A sample of Prometheus' own /metrics, read directly so no query is counted."""
        text = self._session.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total
