"""deploy/components/alerts: the PrometheusRule's rules pass `promtool check rules`, and
`promtool test rules` unit tests show each alert firing on its condition, after its
`for`, and not without it. Series as adapter/exporter.py exports them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.manifest_support import COMPONENTS, load_one
from tests.prometheus_server import promtool_test_rules, run_promtool

RULE = load_one(COMPONENTS / "alerts" / "prometheusrule.yaml")
GROUPS: list[dict[str, Any]] = RULE["spec"]["groups"]
VARIANT = 'namespace="vllm-test",variant_name="vllm",accelerator_type="H100"'
LABELS = {"namespace": "vllm-test", "variant_name": "vllm", "accelerator_type": "H100"}


def without_annotations(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules with their annotations left out: the unit tests below check when each
    alert fires and with which labels (promtool compares annotations too)."""
    stripped = copy.deepcopy(groups)
    for group in stripped:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return stripped


def alert(name: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": [{"exp_labels": x} for x in labels]}


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": GROUPS}))
    printed = run_promtool(tmp_path, "check", "rules", "rules.yml")
    assert f"SUCCESS: {len(GROUPS[0]['rules'])} rules found" in printed


def test_every_alert_is_tested() -> None:
    names = {rule["alert"] for group in GROUPS for rule in group["rules"]}
    tested = {case["alertname"] for test in TESTS for case in test["alert_rule_test"]}
    assert names == tested


TESTS: list[dict[str, Any]] = [
    {  # the adapter healthy: nothing fires
        "interval": "1m",
        "input_series": [
            {"series": "wva_cycles_total", "values": "0+4x40"},
            {"series": "wva_cycle_errors_total", "values": "0x40"},
            {"series": "wva_metrics_errors_total", "values": "0x40"},
            {"series": "wva_snapshot_age_seconds", "values": "5x40"},
            {"series": 'wva_kubernetes_sync_age_seconds{resource="deployments"}', "values": "0x40"},
            {"series": f'wva_decision_info{{{VARIANT},reason="Optimized"}}', "values": "1x40"},
            {"series": f"wva_desired_replicas{{{VARIANT}}}", "values": "2x40"},
            {"series": f"wva_current_replicas{{{VARIANT}}}", "values": "2x40"},
            {"series": f"wva_learned_profile_in_use{{{VARIANT}}}", "values": "0x40"},
            {"series": f"wva_learned_alpha_seconds{{{VARIANT}}}", "values": "0.00636x40"},
            {"series": f"wva_declared_alpha_seconds{{{VARIANT}}}", "values": "0.006356x40"},
        ],
        "alert_rule_test": [
            alert(name, "40m")
            for name in (
                "WvaAdapterAbsent",
                "WvaDecisionsStale",
                "WvaCycleErrors",
                "WvaMetricsErrors",
                "WvaKubernetesOutOfSync",
                "WvaVariantUnsolved",
                "WvaDesiredReplicasNotReached",
                "WvaDeclaredProfileRefuted",
            )
        ],
    },
    {  # no series at all for 10 minutes
        "interval": "1m",
        "input_series": [{"series": "up", "values": "1x20"}],
        "alert_rule_test": [
            alert("WvaAdapterAbsent", "5m"),
            alert("WvaAdapterAbsent", "11m", {"severity": "critical"}),
        ],
    },
    {  # cycles stop publishing at 10 m: the snapshot ages
        "interval": "1m",
        "input_series": [{"series": "wva_snapshot_age_seconds", "values": "5x9 60+60x10"}],
        "alert_rule_test": [
            alert("WvaDecisionsStale", "11m"),  # 120 s old: not beyond
            alert("WvaDecisionsStale", "13m"),  # beyond since 12 m, for < 2 m
            alert("WvaDecisionsStale", "14m", {"severity": "critical"}),
        ],
    },
    {  # two failed cycles are noise, three in 15 minutes are not; metrics alike
        "interval": "1m",
        "input_series": [
            {"series": "wva_cycle_errors_total", "values": "0x5 2x10 3x20"},
            {"series": "wva_metrics_errors_total", "values": "0x5 2x30"},
        ],
        "alert_rule_test": [
            alert("WvaCycleErrors", "10m"),
            alert("WvaCycleErrors", "17m", {"severity": "warning"}),
            alert("WvaCycleErrors", "35m"),  # no new error for 15 minutes
            alert("WvaMetricsErrors", "17m"),
        ],
    },
    {  # the deployments cache out of sync from 5 m
        "interval": "1m",
        "input_series": [
            {
                "series": 'wva_kubernetes_sync_age_seconds{resource="deployments"}',
                "values": "0x4 60+60x20",
            },
            {"series": 'wva_kubernetes_sync_age_seconds{resource="nodes"}', "values": "0x25"},
        ],
        "alert_rule_test": [
            alert("WvaKubernetesOutOfSync", "9m"),  # 300 s: not beyond
            alert("WvaKubernetesOutOfSync", "14m"),  # beyond since 10 m, for < 5 m
            alert(
                "WvaKubernetesOutOfSync",
                "15m",
                {"resource": "deployments", "severity": "warning"},
            ),
        ],
    },
    {  # unsolved from 5 m; desired 3 while the Deployment stays at 2 from 5 m
        "interval": "1m",
        "input_series": [
            {"series": f'wva_decision_info{{{VARIANT},reason="Optimized"}}', "values": "1x4"},
            {
                "series": f'wva_decision_info{{{VARIANT},reason="Infeasible"}}',
                "values": "_x5 1x30",
            },
            {"series": f"wva_desired_replicas{{{VARIANT}}}", "values": "2x4 3x30"},
            {"series": f"wva_current_replicas{{{VARIANT}}}", "values": "2x35"},
        ],
        "alert_rule_test": [
            alert("WvaVariantUnsolved", "14m"),
            alert(
                "WvaVariantUnsolved",
                "15m",
                {**LABELS, "reason": "Infeasible", "severity": "warning"},
            ),
            alert("WvaDesiredReplicasNotReached", "19m"),
            alert("WvaDesiredReplicasNotReached", "20m", {**LABELS, "severity": "warning"}),
        ],
    },
    {  # learned alpha 30 % above the declared, in use from 0; another VA 10 % off
        "interval": "1m",
        "input_series": [
            {"series": f"wva_learned_profile_in_use{{{VARIANT}}}", "values": "1x40"},
            {"series": f"wva_learned_alpha_seconds{{{VARIANT}}}", "values": "0.00826x40"},
            {"series": f"wva_declared_alpha_seconds{{{VARIANT}}}", "values": "0.006356x40"},
            {
                "series": 'wva_learned_profile_in_use{namespace="b",variant_name="b"}',
                "values": "1x40",
            },
            {
                "series": 'wva_learned_alpha_seconds{namespace="b",variant_name="b"}',
                "values": "0.0070x40",
            },
            {
                "series": 'wva_declared_alpha_seconds{namespace="b",variant_name="b"}',
                "values": "0.006356x40",
            },
        ],
        "alert_rule_test": [
            alert("WvaDeclaredProfileRefuted", "29m"),
            alert("WvaDeclaredProfileRefuted", "31m", {**LABELS, "severity": "info"}),
        ],
    },
]


def test_each_alert_fires_on_its_condition_and_not_without(tmp_path: Path) -> None:
    promtool_test_rules(
        tmp_path, TESTS, evaluation_interval="1m", groups=without_annotations(GROUPS)
    )


def test_an_alert_names_the_variant_and_the_reason(tmp_path: Path) -> None:
    (rule,) = [r for r in GROUPS[0]["rules"] if r["alert"] == "WvaVariantUnsolved"]
    test = {
        "interval": "1m",
        "input_series": [
            {"series": f'wva_decision_info{{{VARIANT},reason="Infeasible"}}', "values": "1x20"}
        ],
        "alert_rule_test": [
            {
                "eval_time": "15m",
                "alertname": "WvaVariantUnsolved",
                "exp_alerts": [
                    {
                        "exp_labels": {**LABELS, "reason": "Infeasible", "severity": "warning"},
                        "exp_annotations": {
                            "summary": "VariantAutoscaling vllm-test/vllm unsolved: Infeasible",
                            "description": rule["annotations"]["description"],
                        },
                    }
                ],
            }
        ],
    }
    promtool_test_rules(
        tmp_path, [test], evaluation_interval="1m", groups=[{"name": "one", "rules": [rule]}]
    )
