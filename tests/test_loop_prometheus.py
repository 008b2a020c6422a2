"""The closed loop's Prometheus (`wva-adapter demo --metrics prometheus`): the settings it
gets from the scenario, that it finds the pods in the harness' targets file, and that
it is stopped when the loop fails. The whole loop through it is in test_closed_loop.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
from pydantic import ValidationError

from adapter.emulator.metrics import MetricsServer, VllmMetrics
from adapter.loop import tutorial
from adapter.loop.harness import (
    prometheus_config,
    prometheus_scrapes,
    promql_duration,
    start_prometheus,
    started,
)
from adapter.loop.workspace import Workspace
from tests.prometheus_server import poll


@pytest.mark.parametrize(("seconds", "text"), [(6.0, "6s"), (1.0, "1s"), (1.5, "1500ms")])
def test_promql_duration(seconds: float, text: str) -> None:
    assert promql_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.0004])
def test_promql_duration_refuses_what_prometheus_cannot_say(seconds: float) -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        promql_duration(seconds)


def test_prometheus_mode_scrapes_every_second_over_the_scrape_modes_window() -> None:
    scrape, prometheus = tutorial(short=True), tutorial(short=True, metrics="prometheus")
    assert prometheus.rate_window_s == scrape.rate_window_s == 6.0
    assert prometheus.cycle_s == scrape.cycle_s
    config = prometheus_config(prometheus, Path("targets.json"))
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "1s"
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["targets.json"]
    # new pods start before they take traffic, as in a cluster, so Prometheus' discovery
    # (5-10 s) finds them first; the scrape mode's pods start at once
    assert (scrape.startup_delay_s, prometheus.startup_delay_s) == (0.0, 8.0)


def test_a_window_of_fewer_than_two_scrapes_is_refused() -> None:
    scenario = tutorial(short=True, metrics="prometheus")
    with pytest.raises(ValidationError, match="two scrape intervals"):
        scenario.model_validate({**scenario.model_dump(), "rate_window_s": 1.5})


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.integration
def test_prometheus_follows_the_targets_file_and_is_stopped_when_the_loop_fails(
    tmp_path: Path,
) -> None:
    scenario = tutorial(short=True, metrics="prometheus")
    workspace = Workspace(tmp_path)
    session = requests.Session()
    pod = MetricsServer(VllmMetrics(workspace.model)).start()
    try:
        with pytest.raises(RuntimeError, match="a part of the loop died"), started(tmp_path) as ps:
            url, process = start_prometheus(ps, workspace, scenario, session)
            assert not prometheus_scrapes(session, url)  # no target yet
            workspace.write_targets([pod.url])
            poll(
                lambda: prometheus_scrapes(session, url) or None,
                timeout_s=30,
                what="Prometheus to scrape the pod in the targets file",
            )
            raise RuntimeError("a part of the loop died")
    finally:
        pod.stop()
        session.close()
    assert process.poll() is not None
    assert not _listening(url)
