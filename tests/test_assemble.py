"""build_system: the reference's assembly rules, and per-VA isolation of bad inputs."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from adapter.assemble import AssemblySettings, build_system
from adapter.collect.local import load_snapshot
from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.model.kube import ClusterSnapshot
from adapter.model.system import parse_system
from adapter.optimizer import optimize_parsed
from tests.kube_helpers import MODEL, tutorial_load

Objects = dict[str, dict[Any, dict[str, Any]]]
OTHER = ("team-b", "other")
OTHER_SERVER = "other:team-b"
VLLM_SERVER = "vllm:vllm-test"


def base_objects() -> Objects:
    """The tutorial's objects plus a second VA (llama0-7b on A100, Freemium) in team-b."""
    snap = load_snapshot()
    objects: Objects = {
        "vas": {k: copy.deepcopy(dict(v)) for k, v in snap.variant_autoscalings.items()},
        "cms": {k: copy.deepcopy(dict(v)) for k, v in snap.config_maps.items()},
        "nodes": {k: copy.deepcopy(dict(v)) for k, v in snap.nodes.items()},
        "deps": {k: copy.deepcopy(dict(v)) for k, v in snap.deployments.items()},
    }
    objects["vas"][OTHER] = {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": "other",
            "namespace": "team-b",
            "labels": {"inference.optimization/acceleratorName": "A100"},
        },
        "spec": {
            "modelID": "llama0-7b",
            "modelProfile": {
                "accelerators": [
                    {
                        "acc": "A100",
                        "accCount": 2,
                        "alpha": "20.58",
                        "beta": "0.41",
                        "maxBatchSize": 4,
                    }
                ]
            },
        },
    }
    objects["deps"][OTHER] = {
        "kind": "Deployment",
        "metadata": {"name": "other", "namespace": "team-b"},
        "spec": {"replicas": 3},
    }
    return objects


def served_loads() -> LoadReport:
    """The tutorial's load, and the second VA's pods answering with no traffic."""
    idle = ModelLoad("team-b", "llama0-7b", running=0.0, waiting=0.0)
    return LoadReport({**tutorial_load().loads, ("team-b", "llama0-7b"): idle})


def idle_loads() -> LoadReport:
    """Both models' pods answering, with no traffic (present with zeros)."""
    return LoadReport(
        {
            key: ModelLoad(*key, running=0.0, waiting=0.0)
            for key in (("vllm-test", MODEL), ("team-b", "llama0-7b"))
        }
    )


def snapshot_of(objects: Objects) -> ClusterSnapshot:
    return ClusterSnapshot(
        variant_autoscalings=MappingProxyType(dict(sorted(objects["vas"].items()))),
        config_maps=MappingProxyType(objects["cms"]),
        nodes=MappingProxyType(objects["nodes"]),
        deployments=MappingProxyType(objects["deps"]),
    )


def servers_by_name(system: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in system["serverData"]["servers"]}


def test_two_healthy_variants_are_both_assembled() -> None:
    loads = LoadReport(
        {
            **tutorial_load().loads,
            ("team-b", "llama0-7b"): ModelLoad(
                "team-b",
                "llama0-7b",
                60.0,
                100.0,
                33.9,
                itl_ms=21.456,
                queue_time_ms=3.333,
                running=4.0,
                waiting=0.0,
            ),
        }
    )
    assembly = build_system(snapshot_of(base_objects()), loads)
    assert assembly.problems == ()
    other = servers_by_name(assembly.system)[OTHER_SERVER]
    assert other == {
        "name": OTHER_SERVER,
        "class": "Freemium",
        "model": "llama0-7b",
        "keepAccelerator": True,
        "minNumReplicas": 1,
        "maxBatchSize": 4,
        "currentAlloc": {
            "accelerator": "A100",
            "numReplicas": 3,
            "maxBatch": 256,
            "cost": 120,
            "itlAverage": 21.46,
            "waitAverage": 3.33,
            "load": {"arrivalRate": 60.0, "avgLength": 33},  # 33.9 truncated, as the reference
        },
    }
    assert assembly.servers[OTHER_SERVER].name == "other"
    assert assembly.slo[OTHER_SERVER].via == "model"
    parsed = parse_system(assembly.system)
    assert parsed.problems == () and len(parsed.spec.servers) == 2


def test_idle_pods_mean_zero_load_and_min_replicas_is_a_setting() -> None:
    assembly = build_system(
        snapshot_of(base_objects()), idle_loads(), AssemblySettings(min_num_replicas=0)
    )
    assert assembly.problems == ()
    vllm = servers_by_name(assembly.system)[VLLM_SERVER]
    assert vllm["minNumReplicas"] == 0
    assert vllm["currentAlloc"]["load"] == {"arrivalRate": 0.0, "avgLength": 0}
    assert (vllm["currentAlloc"]["itlAverage"], vllm["currentAlloc"]["waitAverage"]) == (0, 0)


def test_requests_in_flight_without_a_rate_are_not_sized_at_zero_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rate window with no samples yet (e.g. Prometheus just restarted) while the pods
    report work in flight: the VA is left unsolved, not scaled to its minimum."""
    busy = ModelLoad("vllm-test", MODEL, arrival_rate_rpm=0.0, running=12.0, waiting=3.0)
    with caplog.at_level(logging.WARNING):
        assembly = build_system(
            snapshot_of(base_objects()), _with(idle_loads(), ("vllm-test", MODEL), busy)
        )
    (problem,) = assembly.problems
    assert (problem.namespace, problem.name) == ("vllm-test", "vllm")
    assert "metrics incomplete: 15 requests in flight" in problem.reason
    assert VLLM_SERVER not in servers_by_name(assembly.system)
    assert OTHER_SERVER in servers_by_name(assembly.system)  # its model had no such report
    assert any("vllm-test/vllm" in r.getMessage() for r in caplog.records)
    # idle pods (nothing in flight) with no rate are simply zero load
    idle = ModelLoad("vllm-test", MODEL, arrival_rate_rpm=0.0, running=0.0, waiting=0.0)
    quiet = build_system(
        snapshot_of(base_objects()), _with(idle_loads(), ("vllm-test", MODEL), idle)
    )
    assert quiet.problems == () and VLLM_SERVER in servers_by_name(quiet.system)


def _with(report: LoadReport, key: tuple[str, str], load: ModelLoad | None) -> LoadReport:
    """`report` with `key`'s load replaced (None: absent, no series at all)."""
    loads = {k: v for k, v in report.loads.items() if k != key}
    if load is not None:
        loads[key] = load
    return LoadReport(loads, incomplete=report.incomplete)


def test_a_model_id_the_pods_do_not_serve_is_told_what_they_serve() -> None:
    """llm-d/llm-d#2310: a modelID that is not vLLM's --served-model-name leaves the VA
    inert; the reason names the models the pods in its namespace do serve."""
    objects = base_objects()
    loads = _with(served_loads(), ("team-b", "llama0-7b"), None)
    loads = dataclasses.replace(loads, served={"team-b": frozenset({"llama-7b", "base"})})
    assembly = build_system(snapshot_of(objects), loads, AssemblySettings(min_num_replicas=0))
    (problem,) = assembly.problems
    assert "the pods in team-b serve base, llama-7b: does spec.modelID match" in problem.reason


def test_no_series_for_a_model_with_replicas_is_not_sized_at_zero_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pods down or not scraped (Prometheus' staleness markers give empty answers): the
    VA is rejected with a reason, the other served, instead of scaling to its minimum."""
    objects = base_objects()
    loads = _with(served_loads(), ("team-b", "llama0-7b"), None)
    with caplog.at_level(logging.WARNING):
        assembly = build_system(snapshot_of(objects), loads, AssemblySettings(min_num_replicas=0))
    (problem,) = assembly.problems
    assert (problem.namespace, problem.name) == OTHER
    assert problem.reason == (
        "metrics missing: no vLLM series for model llama0-7b in namespace team-b while its"
        " Deployment has 3 replicas (pods not ready or not scraped?); not sized at zero load"
    )
    servers = servers_by_name(assembly.system)
    assert OTHER_SERVER not in servers and VLLM_SERVER in servers
    assert any(
        "team-b/other" in r.getMessage() and "metrics missing" in r.getMessage()
        for r in caplog.records
    )
    # scaled to zero, no series is what an idle model looks like: zero load
    objects["deps"][OTHER]["spec"]["replicas"] = 0
    idle = build_system(snapshot_of(objects), loads, AssemblySettings(min_num_replicas=0))
    assert idle.problems == ()
    other = servers_by_name(idle.system)[OTHER_SERVER]["currentAlloc"]
    assert (other["numReplicas"], other["load"]) == (0, {"arrivalRate": 0.0, "avgLength": 0})


def test_an_incomplete_load_is_not_sized_whatever_it_says(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model some of whose pods failed to scrape: its summed load is a lower bound."""
    detail = "1 of 2 pods of model llama0-7b in namespace team-b failed to scrape (url: down)"
    report = served_loads()
    loads = LoadReport(report.loads, incomplete={("team-b", "llama0-7b"): detail})
    with caplog.at_level(logging.WARNING):
        assembly = build_system(snapshot_of(base_objects()), loads)
    (problem,) = assembly.problems
    assert problem.name == "other"
    assert problem.reason == f"metrics incomplete: {detail}; not sized on a partial load"
    assert VLLM_SERVER in servers_by_name(assembly.system)
    assert any(
        "team-b/other" in r.getMessage() and detail in r.getMessage() for r in caplog.records
    )
    # even for a Deployment scaled to zero
    objects = base_objects()
    objects["deps"][OTHER]["spec"]["replicas"] = 0
    (problem,) = build_system(snapshot_of(objects), loads).problems
    assert problem.reason.startswith("metrics incomplete: 1 of 2 pods")


def busy(**values: Any) -> ModelLoad:
    """The tutorial model's pods serving traffic, every value usable, `values` changed."""
    load = ModelLoad(
        "vllm-test",
        MODEL,
        arrival_rate_rpm=480.0,
        avg_prompt_tokens=128.0,
        avg_output_tokens=512.0,
        itl_ms=7.8,
        queue_time_ms=0.0,
        running=32.0,
        waiting=0.0,
    )
    return dataclasses.replace(load, **values)


@pytest.mark.parametrize("mean", [0.0, 0.6])
def test_arrivals_without_an_output_length_are_not_sized(mean: float) -> None:
    """A request length of 0 (histogram missing, no completion in the window, or a mean
    truncated to 0) makes the optimizer size any rate at one replica."""
    load = busy(arrival_rate_rpm=6000.0, avg_output_tokens=mean)
    assembly = build_system(
        snapshot_of(base_objects()), _with(served_loads(), ("vllm-test", MODEL), load)
    )
    (problem,) = assembly.problems
    assert problem.name == "vllm"
    assert problem.reason == (
        "metrics incomplete: arrivals but no mean output length"
        " (vllm:request_generation_tokens) in the window; not sized"
    )
    assert OTHER_SERVER in servers_by_name(assembly.system)


def test_the_output_length_is_truncated_as_the_reference_does() -> None:
    load = busy(arrival_rate_rpm=6000.0, avg_output_tokens=2.6)
    assembly = build_system(
        snapshot_of(base_objects()), _with(served_loads(), ("vllm-test", MODEL), load)
    )
    assert assembly.problems == ()
    vllm = servers_by_name(assembly.system)[VLLM_SERVER]
    assert vllm["currentAlloc"]["load"] == {"arrivalRate": 6000.0, "avgLength": 2}


def _va_on(name: str, accelerator: str, profiles: list[tuple[str, str]]) -> dict[str, Any]:
    entries = [
        {"acc": acc, "accCount": 1, "alpha": alpha, "beta": "0.05", "maxBatchSize": 256}
        for acc, alpha in profiles
    ]
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": name,
            "namespace": "vllm-test",
            "labels": {"inference.optimization/acceleratorName": accelerator},
        },
        "spec": {"modelID": MODEL, "modelProfile": {"accelerators": entries}},
    }


@pytest.mark.parametrize("name", ["a-on-a100", "z-on-a100"])
def test_a_profile_for_an_accelerator_a_va_does_not_run_on_blocks_nothing(name: str) -> None:
    """A VA on A100 that also lists another H100 profile of the same model: servers keep
    their accelerator, so only its A100 entry is offered, and the H100 VA is served
    whichever name sorts first."""
    objects = base_objects()
    objects["vas"][("vllm-test", name)] = _va_on(name, "A100", [("A100", "20"), ("H100", "9.9")])
    objects["deps"][("vllm-test", name)] = {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "vllm-test"},
        "spec": {"replicas": 1},
    }
    assembly = build_system(snapshot_of(objects), served_loads())
    assert assembly.problems == ()
    assert set(servers_by_name(assembly.system)) == {VLLM_SERVER, OTHER_SERVER, f"{name}:vllm-test"}
    entries = {(m["name"], m["acc"]): m["alpha"] for m in assembly.system["modelData"]["models"]}
    assert entries == {(MODEL, "H100"): 6.356, (MODEL, "A100"): 20.0, ("llama0-7b", "A100"): 20.58}
    # the H100 VA is sized on its own profile, as without the A100 one
    decided = optimize_parsed(parse_system(assembly.system)).decision(VLLM_SERVER)
    alone = optimize_parsed(
        parse_system(build_system(snapshot_of(base_objects()), served_loads()).system)
    )
    assert decided.allocation is not None
    assert decided.allocation == alone.decision(VLLM_SERVER).allocation


# what assembly reads of a load: each one NaN, infinite or negative makes it unknown
READ = ("arrival_rate_rpm", "avg_output_tokens", "itl_ms", "queue_time_ms", "running", "waiting")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0], ids=["nan", "inf", "neg"])
@pytest.mark.parametrize("field", READ)
def test_an_odd_measured_value_leaves_the_va_unsolved_never_zero(field: str, value: float) -> None:
    """A NaN, infinite or negative value is no measurement: read as 0 it sized a busy
    VA as idle. The VA is left unsolved (UNAVAILABLE), the other one served."""
    key = ("vllm-test", MODEL)
    usable = build_system(snapshot_of(base_objects()), _with(served_loads(), key, busy()))
    assert usable.problems == () and VLLM_SERVER in servers_by_name(usable.system)

    odd = _with(served_loads(), key, busy(**{field: value}))
    assembly = build_system(snapshot_of(base_objects()), odd)
    (problem,) = assembly.problems
    assert (problem.namespace, problem.name) == ("vllm-test", "vllm")
    assert problem.reason == f"metrics invalid: {field}={value!r}; not sized on them"
    assert VLLM_SERVER not in servers_by_name(assembly.system)
    assert OTHER_SERVER in servers_by_name(assembly.system)


@pytest.mark.parametrize("arrivals", [0.0, 480.0])
@pytest.mark.parametrize("gauge", ["running", "waiting"])
def test_a_missing_in_flight_gauge_leaves_the_va_unsolved(gauge: str, arrivals: float) -> None:
    """Without both in-flight gauges, no rate cannot be told from a window with no
    samples yet (a busy service), so the VA is not sized, whatever its rate says."""
    loads = _with(
        served_loads(), ("vllm-test", MODEL), busy(arrival_rate_rpm=arrivals, **{gauge: None})
    )
    assembly = build_system(snapshot_of(base_objects()), loads)
    (problem,) = assembly.problems
    assert problem.name == "vllm"
    assert problem.reason == (
        f"metrics incomplete: no vllm:num_requests_{gauge} series, so the requests in"
        " flight are unknown; not sized as idle"
    )
    assert set(servers_by_name(assembly.system)) == {OTHER_SERVER}


def test_no_observation_of_a_shown_latency_is_0_as_the_reference_stores_it() -> None:
    """itlAverage and waitAverage are shown, never sized on: no completion in the window
    gives no mean, stored as 0 like the reference's controller does."""
    loads = _with(served_loads(), ("vllm-test", MODEL), busy(itl_ms=None, queue_time_ms=None))
    assembly = build_system(snapshot_of(base_objects()), loads)
    alloc = servers_by_name(assembly.system)[VLLM_SERVER]["currentAlloc"]
    assert (alloc["itlAverage"], alloc["waitAverage"]) == (0, 0)
    assert alloc["load"] == {"arrivalRate": 480.0, "avgLength": 512}


def test_slo_class_ref_is_honoured_when_it_resolves(caplog: pytest.LogCaptureFixture) -> None:
    objects = base_objects()
    # llama0-7b is also listed, with other SLOs, in Premium (priority 1)
    premium = objects["cms"]["service-classes-config"]["data"]
    premium["premium.yaml"] += "  - model: llama0-7b\n    slo-tpot: 50\n    slo-ttft: 400\n"
    by_model = build_system(snapshot_of(objects), idle_loads())
    assert by_model.slo[OTHER_SERVER].class_name == "Premium"  # fallback: lowest priority
    objects["vas"][OTHER]["spec"]["sloClassRef"] = {
        "name": "service-classes-config",
        "key": "freemium.yaml",
    }
    with caplog.at_level(logging.DEBUG, logger="adapter.assemble"):
        by_ref = build_system(snapshot_of(objects), idle_loads())
    choice = by_ref.slo[OTHER_SERVER]
    assert (choice.class_name, choice.slo_itl, choice.slo_ttw, choice.via) == (
        "Freemium",
        150,
        1500,
        "sloClassRef",
    )
    assert servers_by_name(by_ref.system)[OTHER_SERVER]["class"] == "Freemium"
    assert any(
        "team-b/other" in r.getMessage() and "Freemium" in r.getMessage() for r in caplog.records
    )
    # the tutorial's unresolvable ref falls back to the class listing the model
    assert by_ref.slo[VLLM_SERVER].class_name == "Premium"
    assert by_ref.slo[VLLM_SERVER].via == "model"


def test_output_is_deterministic_and_json_serialisable() -> None:
    first = build_system(snapshot_of(base_objects()), served_loads()).system
    second = build_system(snapshot_of(base_objects()), served_loads()).system
    assert json.dumps(first) == json.dumps(second)


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Objects], None]
    reason: str  # expected substring of the problem
    where: str = "va"  # "va": the other VA is left out; "config": a config/node problem only


def _other(o: Objects) -> dict[str, Any]:
    return o["vas"][OTHER]


def _other_acc(o: Objects) -> dict[str, Any]:
    entry: dict[str, Any] = _other(o)["spec"]["modelProfile"]["accelerators"][0]
    return entry


def _set(
    path: Callable[[Objects], dict[str, Any]], key: str, value: Any
) -> Callable[[Objects], None]:
    def mutate(o: Objects) -> None:
        path(o)[key] = value

    return mutate


def _delete(path: Callable[[Objects], dict[Any, Any]], key: Any) -> Callable[[Objects], None]:
    def mutate(o: Objects) -> None:
        del path(o)[key]

    return mutate


def _costs(o: Objects) -> dict[str, Any]:
    data: dict[str, Any] = o["cms"]["accelerator-unit-costs"]["data"]
    return data


def _classes(o: Objects) -> dict[str, Any]:
    data: dict[str, Any] = o["cms"]["service-classes-config"]["data"]
    return data


CASES = [
    Case(
        "alpha not a decimal",
        _set(_other_acc, "alpha", "fast"),
        "spec.modelProfile.accelerators[0].alpha",
    ),
    Case("alpha negative", _set(_other_acc, "alpha", -1.5), "accelerators[0].alpha"),
    Case("beta with exponent", _set(_other_acc, "beta", "1e-3"), "accelerators[0].beta"),
    Case(
        "modelID missing",
        _delete(lambda o: _other(o)["spec"], "modelID"),
        "spec.modelID: required field is missing",
    ),
    Case("accCount zero", _set(_other_acc, "accCount", 0), "accelerators[0].accCount"),
    Case(
        "maxBatchSize not an int",
        _set(_other_acc, "maxBatchSize", "big"),
        "accelerators[0].maxBatchSize",
    ),
    Case(
        "empty profile",
        _set(lambda o: _other(o)["spec"]["modelProfile"], "accelerators", []),
        "spec.modelProfile.accelerators",
    ),
    Case(
        "sloClassRef without name",
        _set(lambda o: _other(o)["spec"], "sloClassRef", {"key": "k"}),
        "spec.sloClassRef.name",
    ),
    Case(
        "accelerator label missing",
        _delete(
            lambda o: _other(o)["metadata"]["labels"], "inference.optimization/acceleratorName"
        ),
        "missing label inference.optimization/acceleratorName",
    ),
    Case(
        "unknown accelerator",
        _set(
            lambda o: _other(o)["metadata"]["labels"],
            "inference.optimization/acceleratorName",
            "TPU",
        ),
        "accelerator 'TPU' has no unit cost",
    ),
    Case("cost entry invalid JSON", _set(_costs, "A100", "{device: A100"), "'A100': invalid JSON"),
    Case(
        "cost not a number",
        _set(_costs, "A100", '{"device": "X", "cost": "forty"}'),
        "cost: 'forty' is not a decimal",
    ),
    Case(
        "cost entry without device",
        _set(_costs, "A100", '{"cost": "40"}'),
        "device: required field is missing",
    ),
    Case(
        "no profile for the labelled accelerator",
        _set(
            lambda o: _other(o)["metadata"]["labels"],
            "inference.optimization/acceleratorName",
            "G2",
        ),
        "no modelProfile entry for accelerator 'G2'",
    ),
    Case(
        "model in no service class",
        _set(lambda o: _other(o)["spec"], "modelID", "mystery"),
        "model 'mystery' has no SLO",
    ),
    Case(
        "service class key is broken YAML",
        _set(_classes, "freemium.yaml", "name: [Freemium"),
        "'freemium.yaml': invalid YAML",
    ),
    Case(
        "service class SLO not a number",
        _set(
            _classes,
            "freemium.yaml",
            "name: Freemium\npriority: 10\n"
            "data:\n  - {model: llama0-7b, slo-tpot: quick, slo-ttft: 1}\n",
        ),
        "data[0].slo-tpot",
    ),
    Case(
        "service class priority missing",
        _set(
            _classes,
            "freemium.yaml",
            "name: Freemium\ndata:\n  - {model: llama0-7b, slo-tpot: 1, slo-ttft: 1}\n",
        ),
        "priority: required field is missing",
    ),
    Case(
        "Deployment missing",
        _delete(lambda o: o["deps"], OTHER),
        "Deployment team-b/other not found",
    ),
    Case(
        "Deployment replicas negative",
        _set(lambda o: o["deps"][OTHER]["spec"], "replicas", -1),
        "spec.replicas",
    ),
    Case(
        "node GPU count not a number",
        _set(
            lambda o: o["nodes"]["pokprod-b93r38s1"]["status"]["allocatable"],
            "nvidia.com/gpu",
            "seven",
        ),
        "Node pokprod-b93r38s1: status.allocatable[nvidia.com/gpu]",
        where="config",
    ),
    Case(
        "node GPUs without a product label",
        _delete(
            lambda o: o["nodes"]["pokprod-b93r38s1"]["metadata"]["labels"], "nvidia.com/gpu.product"
        ),
        "metadata.labels[nvidia.com/gpu.product]",
        where="config",
    ),
    Case(
        "node GPU memory label malformed",
        _set(
            lambda o: o["nodes"]["pokprod-b93r38s1"]["metadata"]["labels"],
            "nvidia.com/gpu.memory",
            "80G",
        ),
        "nvidia.com/gpu.memory",
        where="config",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_leaves_the_other_variant_unchanged(
    case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    baseline = build_system(snapshot_of(base_objects()), served_loads())
    assert baseline.problems == () and baseline.config_problems == ()
    objects = base_objects()
    case.mutate(objects)
    with caplog.at_level(logging.WARNING):
        assembly = build_system(snapshot_of(objects), served_loads())

    servers = servers_by_name(assembly.system)
    assert servers[VLLM_SERVER] == servers_by_name(baseline.system)[VLLM_SERVER]
    assert assembly.slo[VLLM_SERVER] == baseline.slo[VLLM_SERVER]
    parsed = parse_system(assembly.system)
    assert VLLM_SERVER in {s.name for s in parsed.spec.servers}
    assert VLLM_SERVER not in parsed.rejected_servers
    # and the optimizer's decision for it is the same as without the bad input
    decided = optimize_parsed(parsed).decision(VLLM_SERVER)
    expected = optimize_parsed(parse_system(baseline.system)).decision(VLLM_SERVER)
    assert decided.allocation is not None
    assert decided.allocation == expected.allocation

    if case.where == "va":
        assert OTHER_SERVER not in servers and OTHER_SERVER not in assembly.servers
        (problem,) = assembly.problems
        assert case.reason in problem.reason, problem.reason
        assert any(
            f"{problem.namespace}/{problem.name}" in r.getMessage() and "skipped" in r.getMessage()
            for r in caplog.records
        )
    else:
        assert OTHER_SERVER in servers and assembly.problems == ()
        assert any(case.reason in str(p) for p in assembly.config_problems), (
            assembly.config_problems
        )


def test_a_bad_config_entry_names_configmap_and_key() -> None:
    objects = base_objects()
    _costs(objects)["A100"] = "{device: A100"
    assembly = build_system(snapshot_of(objects), served_loads())
    (problem,) = assembly.config_problems
    assert str(problem).startswith(
        "ConfigMap inferno-autoscaler-system/accelerator-unit-costs key 'A100': invalid JSON"
    )
    # the other entries are still offered to the optimizer
    names = [a["name"] for a in assembly.system["acceleratorData"]["accelerators"]]
    assert names == ["G2", "H100", "MI300X"]


def test_node_problem_lowers_capacity_only_by_that_node() -> None:
    objects = base_objects()
    objects["nodes"]["pokprod-b93r38s1"]["status"]["allocatable"]["nvidia.com/gpu"] = "seven"
    assembly = build_system(snapshot_of(objects), served_loads())
    assert assembly.system["capacityData"]["count"] == [
        {"type": "NVIDIA-H100-80GB-HBM3", "count": 24}
    ]


def test_parsed_objects_give_what_fresh_parsing_gives_as_objects_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapter.assemble import ParsedObjects
    from adapter.model.kube import parse_deployment, parse_variant_autoscaling

    calls: list[str] = []

    def counted(real: Callable[[Any], Any], kind: str) -> Callable[[Any], Any]:
        def parse(raw: Any) -> Any:
            calls.append(f"{kind} {raw['metadata']['name']}")
            return real(raw)

        return parse

    # build_system's own references (it imported them by name)
    monkeypatch.setattr(
        "adapter.assemble.parse_variant_autoscaling", counted(parse_variant_autoscaling, "va")
    )
    monkeypatch.setattr("adapter.assemble.parse_deployment", counted(parse_deployment, "dep"))
    memo = ParsedObjects()
    objects = base_objects()

    def both() -> tuple[Any, Any]:
        remembered = build_system(snapshot_of(objects), served_loads(), parsed=memo)
        fresh = build_system(snapshot_of(objects), served_loads())
        return remembered, fresh

    def same(remembered: Any, fresh: Any) -> None:
        assert remembered.system == fresh.system
        assert remembered.servers == fresh.servers
        assert remembered.problems == fresh.problems

    same(*both())
    assert len(memo) == 4  # two VAs, two Deployments
    calls.clear()
    remembered, fresh = both()
    same(remembered, fresh)
    assert sorted(calls) == ["dep other", "dep vllm", "va other", "va vllm"]  # fresh only
    assert remembered.servers[OTHER_SERVER] is not fresh.servers[OTHER_SERVER]

    # a replaced object is parsed again; an unchanged one is not
    objects["deps"][OTHER] = {**objects["deps"][OTHER], "spec": {"replicas": 5}}
    calls.clear()
    remembered = build_system(snapshot_of(objects), served_loads(), parsed=memo)
    assert calls == ["dep other"]
    assert servers_by_name(remembered.system)[OTHER_SERVER]["currentAlloc"]["numReplicas"] == 5

    # a broken replacement is reported at every call, and parsed once
    objects["vas"][OTHER] = copy.deepcopy(objects["vas"][OTHER])
    objects["vas"][OTHER]["spec"]["modelProfile"]["accelerators"][0]["alpha"] = "fast"
    calls.clear()
    for _ in range(2):
        remembered, fresh = both()
        same(remembered, fresh)
        (problem,) = remembered.problems
        assert problem.name == "other" and "alpha" in problem.reason
    assert calls.count("va other") == 3  # once remembered, twice fresh

    # a deleted VA (and its Deployment) is dropped from the memo
    del objects["vas"][OTHER], objects["deps"][OTHER]
    same(*both())
    assert len(memo) == 2
