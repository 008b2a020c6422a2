"""The vLLM metric vocabulary: its names, forms and releases; that nothing else in adapter/
spells a vLLM name; and that the PromQL built from it counts a pod once whatever names
Prometheus stored (run by promtool on fixed series, no scraping)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from adapter import vllm_metrics as vm
from adapter.collect.prometheus import build_queries
from adapter.vllm_metrics import (
    ITL_FAMILIES,
    REQUEST_SUCCESS,
    canonical,
    escaped,
    exported_families,
    forms,
    itl_families,
)
from tests.prometheus_server import promtool_test_rules

ADAPTER = Path(__file__).resolve().parents[1] / "adapter"
VLLM_NAME = re.compile(r"vllm[:_][a-z]\w*")


def test_names_and_sample_names_are_vllms() -> None:
    assert REQUEST_SUCCESS.total == "vllm:request_success_total"
    assert vm.NUM_REQUESTS_WAITING.value == "vllm:num_requests_waiting"
    assert vm.TIME_TO_FIRST_TOKEN.sum == "vllm:time_to_first_token_seconds_sum"
    assert [f.name for f in ITL_FAMILIES] == [
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ]
    with pytest.raises(ValueError, match="is a counter: it has no _sum sample"):
        _ = REQUEST_SUCCESS.sum
    with pytest.raises(ValueError, match="vllm:<name>"):
        vm.Family("vllm_x", "gauge", "")


def test_both_forms_map_back_to_the_colon_form() -> None:
    assert escaped("vllm:request_success_total") == "vllm_request_success_total"
    assert forms(vm.KV_CACHE_USAGE.value) == (
        "vllm:kv_cache_usage_perc",
        "vllm_kv_cache_usage_perc",
    )
    for family in vm.FAMILIES:
        for sample in family.samples:
            assert canonical(sample) == canonical(escaped(sample)) == sample
    assert canonical("vllm_unknown_total") is None and canonical("process_cpu_seconds") is None
    with pytest.raises(ValueError):
        escaped("process_cpu_seconds")


def test_each_release_has_its_itl_names() -> None:
    assert [f.name for f in itl_families("0.10")] == ["vllm:time_per_output_token_seconds"]
    assert itl_families("0.11") == ITL_FAMILIES
    assert [f.name for f in itl_families("0.34")] == ["vllm:inter_token_latency_seconds"]
    for release in vm.RELEASES:
        exported = exported_families(release)
        assert set(vm.FAMILIES) - set(exported) == set(ITL_FAMILIES) - set(itl_families(release))
    assert vm.release("0.11") == "0.11"
    with pytest.raises(ValueError, match=r"unknown vLLM release '0\.12'"):
        vm.release("0.12")


def literals(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_vllm_name_is_spelled_outside_the_vocabulary() -> None:
    """Every reader, the emulator, the simulator and the harness take their names from
    adapter/vllm_metrics.py: a second spelling could drift from it."""
    found = {
        (str(path.relative_to(ADAPTER)), name)
        for path in sorted(ADAPTER.rglob("*.py"))
        if path != ADAPTER / "vllm_metrics.py"
        for literal in literals(path)
        for name in VLLM_NAME.findall(literal)
    }
    assert found == set()


def test_the_check_sees_names_in_literals_and_f_strings_not_in_docstrings(
    tmp_path: Path,
) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""Reads `vllm:num_requests_running`."""\n'
        'A = "vllm:request_success_total"\n'
        'B = f"sum(vllm_num_requests_waiting{{{A}}})"\n'
        "def f() -> None:\n"
        '    """vllm:e2e_request_latency_seconds"""\n'
    )
    names = [n for literal in literals(module) for n in VLLM_NAME.findall(literal)]
    assert names == ["vllm:request_success_total", "vllm_num_requests_waiting"]


# --- the batched queries on stored series, evaluated by promtool ------------------------

SERIES = {
    # pod a: both forms at once (a pod switching form within the window), vLLM 0.11:
    # both ITL names; 1 request/s, ITL 0.1 s, 2 running
    'vllm:request_success_total{pod="a"}': "0+15x40",
    'vllm_request_success_total{pod="a"}': "0+15x40",
    'vllm:inter_token_latency_seconds_sum{pod="a"}': "0+1.5x40",
    'vllm:inter_token_latency_seconds_count{pod="a"}': "0+15x40",
    'vllm_inter_token_latency_seconds_sum{pod="a"}': "0+1.5x40",
    'vllm_inter_token_latency_seconds_count{pod="a"}': "0+15x40",
    'vllm:time_per_output_token_seconds_sum{pod="a"}': "0+1.5x40",
    'vllm:time_per_output_token_seconds_count{pod="a"}': "0+15x40",
    'vllm:num_requests_running{pod="a"}': "2x40",
    'vllm_num_requests_running{pod="a"}': "2x40",
    # pod b: escaped only, vLLM 0.10 (old ITL name): 2 requests/s, ITL 0.4 s, 5 running
    'vllm_request_success_total{pod="b"}': "0+30x40",
    'vllm_time_per_output_token_seconds_sum{pod="b"}': "0+6x40",
    'vllm_time_per_output_token_seconds_count{pod="b"}': "0+15x40",
    'vllm_num_requests_running{pod="b"}': "5x40",
}


def test_queries_count_each_pod_once_under_any_stored_names(tmp_path: Path) -> None:
    """A name regex (`{__name__=~"vllm:x|vllm_x"}`) fails on pod a ("vector cannot
    contain metrics with the same labelset"); summing every alternative would count it
    twice. The `or` chains count it once: 3 requests/s, ITL (0.1 + 0.4) / 2, 7 running."""
    labels = '{namespace="ns",model_name="m",'
    queries = {q.field: q.expr for q in build_queries("1m")}
    # decoding: the ITL sums' rates, 0.1 + 0.4 requests decoding on average
    expected = {"arrival_rate_rpm": 3.0, "itl_ms": 0.25, "running": 7.0, "decoding": 0.5}
    test = {
        "interval": "15s",
        "input_series": [
            {"series": series.replace("{", labels), "values": values}
            for series, values in SERIES.items()
        ],
        "promql_expr_test": [
            {
                "expr": queries[field],
                "eval_time": "5m",
                "exp_samples": [{"labels": '{namespace="ns",model_name="m"}', "value": value}],
            }
            for field, value in expected.items()
        ],
    }
    promtool_test_rules(tmp_path, [test], evaluation_interval="15s")
