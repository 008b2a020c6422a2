"""The closed loop's building blocks that need no processes: the time factor keeps the
optimizer's decisions, the workspace writes what the adapter reads, the summary."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.collect.local import LocalFolder
from adapter.collect.scrape import load_targets_file
from adapter.loop import Sample, scaled_object, summarize, tutorial
from adapter.loop.record import observed_span
from adapter.loop.workspace import Workspace
from adapter.model.system import parse_system
from adapter.optimizer.solution import optimize_parsed

STEPS = [
    "tutorial-1-start.json",
    "tutorial-2-second-stream.json",
    "tutorial-3-scaled.json",
    "tutorial-4-second-stream-stopped.json",
]


def _scaled(document: dict[str, Any], factor: float) -> dict[str, Any]:
    """Every duration times `factor`, every rate divided by it."""
    scaled = copy.deepcopy(document)
    system = scaled["system"]
    for model in system["modelData"]["models"]:
        model["alpha"] *= factor
        model["beta"] *= factor
    for service_class in system["serviceClassData"]["serviceClasses"]:
        for target in service_class["modelTargets"]:
            target["slo-itl"] *= factor
            target["slo-ttw"] *= factor
    for server in system["serverData"]["servers"]:
        server["currentAlloc"]["load"]["arrivalRate"] /= factor
    return scaled


def _replicas(document: dict[str, Any]) -> dict[str, int]:
    solution = optimize_parsed(parse_system(document))
    servers = document["system"]["serverData"]["servers"]
    return {
        s["name"]: (a.num_replicas if (a := solution.decision(s["name"]).allocation) else 0)
        for s in servers
    }


@pytest.mark.parametrize("factor", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("step", STEPS)
def test_time_factor_keeps_the_decisions(step: str, factor: float) -> None:
    document = json.loads((resources.files("adapter") / "samples" / step).read_text())
    assert _replicas(_scaled(document, factor)) == _replicas(document)


def test_workspace_scales_profile_and_slos_and_writes_what_the_adapter_reads(
    tmp_path: Path,
) -> None:
    workspace = Workspace(tmp_path, time_factor=2.0)
    assert (workspace.alpha_ms, workspace.beta_ms) == pytest.approx((12.712, 0.088))
    assert (workspace.slo_itl_ms, workspace.slo_ttft_ms) == (18.0, 2000.0)
    workspace.write_replicas(3, ready=2)  # one replica still starting
    workspace.write_targets(["http://127.0.0.1:9001/metrics", "http://127.0.0.1:9002/metrics"])
    snapshot = LocalFolder(workspace.objects).snapshot()
    key = (workspace.namespace, workspace.va_name)
    assert snapshot.deployments[key]["spec"]["replicas"] == 3
    assert snapshot.deployments[key]["status"]["readyReplicas"] == 2
    profile = snapshot.variant_autoscalings[key]["spec"]["modelProfile"]["accelerators"][0]
    assert float(profile["alpha"]) == pytest.approx(12.712)
    classes = snapshot.config_maps["service-classes-config"]["data"]
    premium = yaml.safe_load(classes["premium.yaml"])
    assert {"model": "unsloth/Meta-Llama-3.1-8B", "slo-tpot": 18.0, "slo-ttft": 2000.0} in (
        premium["data"]
    )
    targets = load_targets_file(workspace.targets_file)
    assert [t.url for t in targets] == [
        "http://127.0.0.1:9001/metrics",
        "http://127.0.0.1:9002/metrics",
    ]
    assert {t.namespace for t in targets} == {workspace.namespace}


def test_scaled_object_mirrors_the_shipped_one() -> None:
    shipped = yaml.safe_load(Path("keda/scaledobject.yaml").read_text())
    scenario = tutorial(short=True)
    spec = scaled_object(scenario)
    behavior = shipped["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert spec.behavior is not None and spec.behavior.scaleUp and spec.behavior.scaleDown
    assert spec.behavior.scaleUp.tolerance == behavior["scaleUp"]["tolerance"] == 0
    assert spec.behavior.scaleDown.tolerance == behavior["scaleDown"]["tolerance"] == 0
    assert spec.behavior.scaleUp.stabilizationWindowSeconds == 0
    assert spec.fallback is not None
    assert spec.fallback.behavior == shipped["spec"]["fallback"]["behavior"]
    assert spec.metricType == shipped["spec"]["triggers"][0]["metricType"]


def _sample(t: float, planned: float, replicas: int, itl: float | None) -> Sample:
    return Sample(
        t=t,
        planned_rps=planned,
        offered_rps=planned,
        completed_rps=planned,
        itl_ms=itl,
        desired=float(replicas),
        replicas=replicas,
        running=0,
        waiting=0,
    )


def test_summary_phases_reaction_and_attainment() -> None:
    samples = [_sample(t, 8, 1, 7.8) for t in range(10)]
    samples += [_sample(t, 16, 1, 9.9) for t in range(10, 14)]
    samples += [_sample(t, 16, 2, 7.8) for t in range(14, 40)]
    samples += [_sample(t, 0, 0, None) for t in range(40, 45)]
    summary = summarize("x", samples, 9.0, 1000.0)
    assert summary.replicas_path == [1, 2, 0]
    first, second, last = summary.phases
    assert (first.planned_rps, second.planned_rps, last.planned_rps) == (8, 16, 0)
    assert second.first_replica_change_s == 4
    assert second.itl_ms_max_settled == 7.8
    assert second.replicas_at_end == 2
    assert summary.itl_attainment_pct == pytest.approx(100 * 36 / 40)
    assert summary.replica_seconds == 10 + 4 + 26 * 2 + 0


def test_the_learned_profile_is_read_from_the_adapters_metrics_and_summarized() -> None:
    from adapter.loop.harness import learned_view

    exposition = (
        "# TYPE wva_learned_alpha_seconds gauge\n"
        'wva_learned_alpha_seconds{namespace="vllm-test",variant_name="vllm"} 0.0076\n'
        "# TYPE wva_learned_beta_seconds gauge\n"
        'wva_learned_beta_seconds{namespace="vllm-test",variant_name="vllm"} 5.3e-05\n'
        "# TYPE wva_learned_profile_in_use gauge\n"
        'wva_learned_profile_in_use{namespace="vllm-test",variant_name="vllm"} 1\n'
    )
    view = learned_view(exposition)
    assert (view.alpha_ms, view.beta_ms, view.in_use) == (7.6, 0.053, True)
    assert learned_view("# nothing learned yet\n").alpha_ms is None
    samples = [_sample(t, 8, 1, 9.7) for t in range(5)]
    samples += [
        _sample(t, 8, 2, 8.5).model_copy(
            update={"learned_alpha_ms": 7.6, "learned_beta_ms": 0.053, "learned_in_use": t >= 7}
        )
        for t in range(5, 10)
    ]
    summary = summarize(
        "x", samples, 9.0, 1000.0, declared_profile_ms=(6.356, 0.044), gpu_profile_ms=(7.6, 0.05)
    )
    assert summary.learned_profile_ms == (7.6, 0.053)
    assert summary.learned_in_use_from_s == 7
    assert summary.declared_profile_ms == (6.356, 0.044)


def test_observed_span_follows_the_load_the_gateway_got() -> None:
    rates = [8.0] * 20 + [16.0] * 30 + [30.0] + [8.0] * 20 + [0.0] * 5
    samples = [_sample(t, 8, 1, 7.8).model_copy(update={"offered_rps": r}) for t, r in
               enumerate(rates)]  # fmt: skip
    assert observed_span(samples, 12.0) == (20, 51)  # centred medians of 9: no spike
    assert observed_span(samples, 40.0) is None
    assert observed_span(samples, 5.0, after=60) == (60, 71)


def test_observed_span_rides_over_a_starved_load_generator() -> None:
    # a CI run's second stream as the gateway saw it: dips, then catch-up bursts
    rates = [8.0] * 38 + [16, 16, 14.9, 16.1, 17, 15, 11, 18.7, 22.4, 12, 17, 15, 11, 10, 27]
    rates += [16.0] * 36 + [8.0] * 30
    samples = [_sample(t, 8, 1, 7.8).model_copy(update={"offered_rps": r}) for t, r in
               enumerate(rates)]  # fmt: skip
    assert observed_span(samples, 12.0) == (38, 89)
