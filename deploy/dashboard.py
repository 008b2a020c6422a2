"""Generate deploy/grafana-dashboard.yaml: a ConfigMap holding the wva-adapter dashboard.

    python deploy/dashboard.py            # rewrite the YAML next to this script
    python deploy/dashboard.py --check    # exit 1 if the YAML is out of date

Plain dicts, no dependency beyond PyYAML. The ConfigMap carries the label
`grafana_dashboard: "1"`, which the Grafana sidecar of kube-prometheus-stack picks up.

The queries assume the adapter is scraped with `honorLabels: true` (see
adapter/exporter.py), so `namespace` is the VariantAutoscaling's namespace. Several
adapter replicas export the same decisions, so per-variant panels aggregate with
`max by (namespace, variant_name, ...)` and adapter-wide panels keep `instance`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

UID = "wva-adapter"
TITLE = "WVA adapter: SLO-aware autoscaling"
OUT = Path(__file__).resolve().parent / "grafana-dashboard.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

SEL = 'namespace=~"$namespace", variant_name=~"$variant"'
BY_VA = "namespace, variant_name"


def target(expr: str, legend: str, ref: str, *, instant: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }
    if instant:
        out.update(instant=True, range=False, format="table")
    return out


def panel(
    kind: str,
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    description: str = "",
    instant: bool = False,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}}
        if kind == "timeseries"
        else {},
        "targets": [
            target(expr, legend, chr(ord("A") + i), instant=instant)
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def panels() -> list[dict[str, Any]]:
    return [
        row("Scaling"),
        panel(
            "timeseries",
            "Desired vs current replicas",
            [
                (
                    f"max by ({BY_VA}, accelerator_type) (wva_desired_replicas{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} desired ({{accelerator_type}})",
                ),
                (
                    f"max by ({BY_VA}, accelerator_type) (wva_current_replicas{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} current",
                ),
            ],
            description="Only solved VariantAutoscalings have a desired count; a gap means "
            "no recommendation (see the decision panel) or a stale snapshot.",
        ),
        panel(
            "timeseries",
            "Desired / current ratio",
            [(f"max by ({BY_VA}) (wva_desired_ratio{{{SEL}}})", "{{namespace}}/{{variant_name}}")],
            description="Equals the desired count when current is 0.",
        ),
        panel(
            "table",
            "Decision per variant",
            [
                (
                    f"max by ({BY_VA}, accelerator_type, reason) (wva_decision_info{{{SEL}}})",
                    "{{reason}}",
                )
            ],
            instant=True,
        ),
        row("Latency"),
        panel(
            "timeseries",
            "ITL: predicted vs observed, and the SLO",
            [
                (
                    f"max by ({BY_VA}) (wva_predicted_itl_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} predicted",
                ),
                (
                    f"max by ({BY_VA}) (wva_observed_itl_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} observed",
                ),
                (
                    f"max by ({BY_VA}) (wva_slo_itl_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} SLO",
                ),
            ],
            unit="s",
        ),
        panel(
            "timeseries",
            "Queue wait: predicted vs observed, and the TTFT SLO",
            [
                (
                    f"max by ({BY_VA}) (wva_predicted_wait_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} predicted",
                ),
                (
                    f"max by ({BY_VA}) (wva_observed_wait_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} observed",
                ),
                (
                    f"max by ({BY_VA}) (wva_slo_ttft_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} SLO",
                ),
            ],
            unit="s",
        ),
        row("Load and cost"),
        panel(
            "timeseries",
            "Arrival rate vs capacity at the desired allocation",
            [
                (
                    f"max by ({BY_VA}) (wva_arrival_rate_requests_per_second{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} arrivals",
                ),
                (
                    f"max by ({BY_VA}) (wva_max_request_rate_per_replica{{{SEL}}}"
                    f" * wva_desired_replicas{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} capacity",
                ),
            ],
            unit="reqps",
        ),
        panel(
            "timeseries",
            "Average output tokens per request",
            [
                (
                    f"max by ({BY_VA}) (wva_avg_output_tokens{{{SEL}}})",
                    "{{namespace}}/{{variant_name}}",
                )
            ],
        ),
        panel(
            "timeseries",
            "Desired cost",
            [
                (
                    f"max by ({BY_VA}) (wva_desired_cost{{{SEL}}})",
                    "{{namespace}}/{{variant_name}}",
                ),
                (
                    "sum by (namespace) (max by (namespace, variant_name)"
                    f" (wva_desired_cost{{{SEL}}}))",
                    "{{namespace}} total",
                ),
            ],
        ),
        row("Learning and look-ahead"),
        panel(
            "timeseries",
            "Decode step at batch 0 (alpha): declared vs learned",
            [
                (
                    f"max by ({BY_VA}) (wva_declared_alpha_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} declared",
                ),
                (
                    f"max by ({BY_VA}) (wva_learned_alpha_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} learned",
                ),
            ],
            unit="s",
            description="Learned from the pods' ITL and batch each cycle; it sizes only "
            "once known well enough and more than 5 % from the declared profile where "
            "the pods run (see the next panels).",
        ),
        panel(
            "timeseries",
            "Decode step per request in the batch (beta): declared vs learned",
            [
                (
                    f"max by ({BY_VA}) (wva_declared_beta_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} declared",
                ),
                (
                    f"max by ({BY_VA}) (wva_learned_beta_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} learned",
                ),
            ],
            unit="s",
        ),
        panel(
            "timeseries",
            "Learned profile: trusted, in use, observations",
            [
                (
                    f"max by ({BY_VA}) (wva_learned_profile_trusted{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} trusted",
                ),
                (
                    f"max by ({BY_VA}) (wva_learned_profile_in_use{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} in use",
                ),
                (
                    f"max by ({BY_VA}) (wva_learned_profile_observations{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} observations",
                ),
            ],
        ),
        panel(
            "timeseries",
            "Arrival rate: measured vs sized for (look-ahead)",
            [
                (
                    f"max by ({BY_VA}) (wva_arrival_rate_requests_per_second{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} measured",
                ),
                (
                    f"max by ({BY_VA}) (wva_sized_arrival_rate_requests_per_second{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} sized for",
                ),
                (
                    f"max by ({BY_VA}) (wva_startup_seconds{{{SEL}}})",
                    "{{namespace}}/{{variant_name}} start-up (s)",
                ),
            ],
            description="With --look-ahead: the forecast a learned start-up ahead it sizes "
            "for, and that start-up.",
        ),
        row("Adapter health"),
        panel(
            "stat",
            "Snapshot age",
            [("max by (instance) (wva_snapshot_age_seconds)", "{{instance}}")],
            unit="s",
            description="Seconds since the cycle behind the served decisions started.",
        ),
        panel(
            "timeseries",
            "Time since the last successful cycle",
            [
                (
                    "time() - max by (instance) (wva_last_successful_cycle_timestamp_seconds)",
                    "{{instance}}",
                )
            ],
            unit="s",
        ),
        panel(
            "timeseries",
            "Cycle duration",
            [
                (
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(wva_cycle_duration_seconds_bucket[$__rate_interval])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(wva_cycle_duration_seconds_bucket[$__rate_interval])))",
                    "p99",
                ),
                (
                    "sum(rate(wva_cycle_duration_seconds_sum[$__rate_interval])) / "
                    "sum(rate(wva_cycle_duration_seconds_count[$__rate_interval]))",
                    "mean",
                ),
            ],
            unit="s",
        ),
        panel(
            "timeseries",
            "Cycle phases",
            [
                (
                    "max by (instance, phase) (wva_cycle_phase_seconds)",
                    "{{phase}} {{instance}}",
                )
            ],
            unit="s",
            description="The latest cycle's time reading the cluster and metrics (collect), "
            "building the optimizer's input (assemble) and solving (optimize).",
        ),
        panel(
            "timeseries",
            "Cycles and errors",
            [
                (
                    "sum by (instance) (rate(wva_cycles_total[$__rate_interval]))",
                    "cycles {{instance}}",
                ),
                (
                    "sum by (instance) (rate(wva_cycle_errors_total[$__rate_interval]))",
                    "failed cycles {{instance}}",
                ),
                (
                    "sum by (instance) (rate(wva_metrics_errors_total[$__rate_interval]))",
                    "metrics errors {{instance}}",
                ),
                (
                    "sum by (instance, operation) "
                    "(rate(wva_kubernetes_errors_total[$__rate_interval]))",
                    "kubernetes {{operation}} errors {{instance}}",
                ),
            ],
            unit="ops",
        ),
        panel(
            "stat",
            "Config problems",
            [("max by (instance) (wva_config_problems)", "{{instance}}")],
            description="Unusable ConfigMap entries and Node labels (details in the logs).",
        ),
        panel(
            "table",
            "Build",
            [("max by (instance, version) (wva_build_info)", "{{version}}")],
            instant=True,
        ),
    ]


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids and grid positions: rows full width; panels two per line (stats and tables 8/12)."""
    y, x, line_h = 0, 0, 0
    out = []
    for pid, item in enumerate(items, start=1):
        item = {"id": pid, **item}
        if item["type"] == "row":
            if x:
                y, x = y + line_h, 0
            item["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            w, h = (8, 5) if item["type"] == "stat" else (12, 8)
            if x + w > 24:
                y, x = y + line_h, 0
            item["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x, line_h = x + w, h if x == 0 else max(line_h, h)
        out.append(item)
    return out


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-query"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Decisions, predictions and health of wva-adapter (metrics wva_*).",
        "tags": ["wva", "vllm", "autoscaling"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                variable("namespace", "Namespace", "label_values(wva_decision_info, namespace)"),
                variable(
                    "variant",
                    "Variant",
                    'label_values(wva_decision_info{namespace=~"$namespace"}, variant_name)',
                ),
            ]
        },
        "panels": layout(panels()),
    }


def configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "wva-adapter-dashboard",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/name": "wva-adapter"},
        },
        "data": {"wva-adapter.json": json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"},
    }


class _Literal(str):
    """A string dumped as a YAML block scalar (`|`), so the JSON stays readable."""


class _Dumper(yaml.SafeDumper):
    pass


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


_Dumper.add_representer(_Literal, _literal)


def render() -> str:
    doc = configmap()
    doc["data"] = {k: _Literal(v) for k, v in doc["data"].items()}
    header = "# Generated by deploy/dashboard.py; edit that script, not this file.\n"
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
