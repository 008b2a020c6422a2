"""The Grafana dashboard: its structure, and every PromQL in it against a real Prometheus.

There is no Grafana here (reference/infra.md section 6), so the queries are checked where
they run: the session's real Prometheus scrapes a running exporter that serves a
snapshot, and each expression, with the template variables substituted the way Grafana
would (a concrete value and the "All" value), must return finite samples.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pytest
import yaml

from adapter.clock import WallClock
from adapter.engine import EngineStats, Snapshot
from adapter.exporter import Exporter
from tests.prometheus_server import PrometheusServer, poll
from tests.script_modules import load_script
from tests.test_exporter import decisions_learning

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def load_generator() -> ModuleType:
    return load_script(DEPLOY / "dashboard.py", "wva_dashboard")


def committed() -> tuple[dict[str, Any], dict[str, Any]]:
    text = (DEPLOY / "grafana-dashboard.yaml").read_text()
    configmap = yaml.safe_load(text)
    (document,) = configmap["data"].values()
    return configmap, json.loads(document)


def all_panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from all_panels(item.get("panels") or [])


def expressions(board: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for item in all_panels(board["panels"])
        for target in item.get("targets") or []
    ]


LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*(?P<label>\w+)\)$")


def variable_queries(board: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """name -> (PromQL, label) for each `label_values(expr, label)` query variable."""
    out = {}
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = LABEL_VALUES.match(var["query"]["query"])
        assert match, var
        out[var["name"]] = (f"count by ({match['label']}) ({match['expr']})", match["label"])
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    expr = expr.replace("$__rate_interval", "30s").replace("$__interval", "5s")
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, expr
    return expr


# ---------------------------------------------------------------- structure (no Prometheus)


def test_committed_yaml_is_generated_and_well_formed() -> None:
    generator = load_generator()
    assert (DEPLOY / "grafana-dashboard.yaml").read_text() == generator.render(), (
        "deploy/grafana-dashboard.yaml is out of date: run python deploy/dashboard.py"
    )
    configmap, board = committed()
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["uid"] == "wva-adapter"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "variant"} <= variables.keys()

    items = list(all_panels(board["panels"]))
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))
    for item in items:
        grid = item["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h"))
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if item["type"] != "row":
            assert item["datasource"]["uid"] == "${datasource}"
            assert item["targets"], item["title"]
            for target in item["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
    titles = " | ".join(item["title"] for item in items)
    for needed in ("Desired vs current", "ITL", "Arrival rate", "cost", "Snapshot age"):
        assert needed in titles
    assert "Cycle duration" in titles and "errors" in titles


# ---------------------------------------------------------------- against Prometheus


class Publisher:
    """An engine stand-in: every read publishes a new cycle, so counters and the histogram move."""

    def __init__(self, clock: WallClock) -> None:
        self.clock = clock
        self.cycle = 0
        self.stats = EngineStats()

    def __call__(self) -> Snapshot:
        self.cycle += 1
        self.stats.cycles_total = self.cycle
        self.stats.cycle_errors_total = self.cycle // 5
        self.stats.metrics_errors_total = self.cycle // 5
        return Snapshot(
            cycle=self.cycle,
            timestamp=self.clock.now(),
            monotonic=self.clock.monotonic(),
            duration_s=0.002 + 0.001 * (self.cycle % 7),
            decisions=MappingProxyType(decisions_learning()),
            phases_s={"collect": 0.001, "assemble": 0.0005, "optimize": 0.0005},
        )


@pytest.mark.integration
def test_every_dashboard_query_returns_data(prometheus_server: PrometheusServer) -> None:
    _configmap, board = committed()
    clock = WallClock()
    publisher = Publisher(clock)
    exporter = Exporter(
        publisher,
        lambda: publisher.stats,
        clock,
        kubernetes_errors=lambda: {"status_write": publisher.cycle // 3, "lease": 0},
    ).start()
    address = f"127.0.0.1:{exporter.port}"
    try:
        # no `namespace` target label: ours must come through unrenamed
        prometheus_server.add_target(address, {"component": "wva-adapter"})
        target = f'instance="{address}"'

        def scraped_twice() -> bool | None:
            found = prometheus_server.query(f"count_over_time(wva_cycles_total{{{target}}}[30s])")
            return True if found and float(found[0]["value"][1]) >= 3 else None

        poll(scraped_twice, timeout_s=30, what=f"Prometheus scraping {address} three times")

        # template variables, resolved as Grafana would from their own queries
        chosen: dict[str, str] = {}
        for name, (query, label) in variable_queries(board).items():
            result = prometheus_server.query(substitute(query, chosen))
            values = sorted(sample["metric"][label] for sample in result)
            assert values, f"variable {name} has no values ({query})"
            if name == "namespace":
                assert values == ["llm", "other"]  # the VA's namespace, not exported_namespace
            chosen[name] = "llm" if name == "namespace" else "granite-h100"
            assert chosen[name] in values

        everything = {name: ".*" for name in chosen}  # the "All" value (allValue)
        queries = [
            substitute(expr, values)
            for expr in expressions(board)
            for values in (chosen, everything)
        ]
        assert len(queries) >= 2 * 20

        def answers() -> dict[str, list[dict[str, Any]]] | None:
            results = {query: prometheus_server.query(query) for query in queries}
            bad = [q for q, r in results.items() if not r or not all(finite(s) for s in r)]
            return None if bad else results

        try:
            results = poll(answers, timeout_s=30, what="every dashboard query to return data")
        except TimeoutError:
            missing = [q for q in queries if not prometheus_server.query(q)]
            pytest.fail(f"queries without (finite) data: {missing}")

        # spot checks that the numbers are the snapshot's, not just "something"
        desired = results[
            substitute(
                "max by (namespace, variant_name, accelerator_type) "
                '(wva_desired_replicas{namespace=~"$namespace", variant_name=~"$variant"})',
                chosen,
            )
        ]
        assert [(s["metric"]["accelerator_type"], s["value"][1]) for s in desired] == [
            ("H100", "3")
        ]
    finally:
        prometheus_server.remove_target(address)
        exporter.stop()


def finite(sample: dict[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))
