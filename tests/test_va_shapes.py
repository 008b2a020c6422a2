"""Both released VariantAutoscaling shapes: the tutorial's and the last upstream one.

The newer shape (scaleTargetRef, modelID, minReplicas, maxReplicas, variantCost) is
exercised with manifests copied from upstream repositories at named commits
(tests/data/upstream/, each file's header names its repository, path and commit):

- both shapes validate against our CRD's openAPIV3Schema, which covers every field of the
  upstream CRD of the newest shape;
- the same model, profile, SLO class and load give the same decision in either shape,
  through the real Engine;
- minReplicas, maxReplicas and variantCost bound and price that VA's decision;
- a bad newer-shape field marks only its VA, with a reason naming the field, whether the
  VA sorts first or last and however the snapshot lists the objects;
- a status an upstream controller wrote validates, parses and keeps its own conditions.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.assemble import AssemblySettings, build_system
from adapter.clock import ManualClock
from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.engine import Engine, VariantDecision
from adapter.model.kube import ShapeError, parse_variant_autoscaling
from adapter.model.system import parse_system
from adapter.status import desired_status
from tests.kube_helpers import MODEL, SAMPLES
from tests.manifest_support import load_one, schema_errors, unknown_fields, va_schema
from tests.test_assemble import OTHER_SERVER, VLLM_SERVER, Objects, base_objects, snapshot_of
from tests.test_assembly_conflicts import NAMES, ORDERS, allocations, listed, twin_loads
from tests.test_bad_input_catalogue import FixedLoads

UPSTREAM = Path(__file__).resolve().parent / "data" / "upstream"
UPSTREAM_CRD = UPSTREAM / "llmd.ai_variantautoscalings.yaml"
NEWEST = UPSTREAM / "newest-deploy-epp-saturation-va.yaml"  # every field of the shape
NS = "vllm-test"  # the tutorial's namespace
TUTORIAL_KEY = (NS, "vllm")
ACCELERATOR_LABEL = "inference.optimization/acceleratorName"

Doc = dict[str, Any]


def upstream_vas() -> list[tuple[str, Doc]]:
    """(file #index, VA) for every VariantAutoscaling in tests/data/upstream/."""
    found = []
    for path in sorted(UPSTREAM.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        found += [
            (f"{path.name}#{i}", d) for i, d in enumerate(docs) if d["kind"] == "VariantAutoscaling"
        ]
    return found


UPSTREAM_VAS = upstream_vas()
UPSTREAM_IDS = [name for name, _ in UPSTREAM_VAS]


def tutorial_va() -> Doc:
    return load_one(SAMPLES / "vllm-va.yaml")


def upstream_schema() -> Doc:
    (version,) = load_one(UPSTREAM_CRD)["spec"]["versions"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


def defaulted(doc: Doc, schema: Doc) -> Doc:
    """`doc` with the schema's spec defaults filled in, as the API server does first."""
    out = copy.deepcopy(doc)
    for key, prop in schema["properties"]["spec"]["properties"].items():
        if "default" in prop:
            out["spec"].setdefault(key, prop["default"])
    return out


# ---------------------------------------------------------------- the CRD


def test_the_upstream_manifests_are_of_the_upstream_shape() -> None:
    """The copied manifests validate against the upstream CRD they were written for (after
    its defaults), and use its newer fields: they are samples of that shape."""
    assert len(UPSTREAM_VAS) == 10
    schema = upstream_schema()
    for name, va in UPSTREAM_VAS:
        assert schema_errors(defaulted(va, schema), schema) == [], name
        assert unknown_fields(va, schema) == [], name
        assert "scaleTargetRef" in va["spec"] and "modelProfile" not in va["spec"], name
    newest = load_one(NEWEST)["spec"]
    assert {"minReplicas", "maxReplicas", "variantCost"} <= set(newest)
    # and the tutorial's VA is not: the upstream CRD has no modelProfile
    assert unknown_fields(tutorial_va(), schema) != []


@pytest.mark.parametrize(("name", "va"), UPSTREAM_VAS, ids=UPSTREAM_IDS)
def test_every_upstream_va_validates_against_our_crd(name: str, va: Doc) -> None:
    schema = va_schema()
    assert schema_errors(va, schema) == []
    assert unknown_fields(va, schema) == []  # nothing pruned, nothing refused by kubectl
    parse_variant_autoscaling(va)  # and the adapter reads it


def test_the_tutorial_va_still_validates_unchanged() -> None:
    schema = va_schema()
    va = tutorial_va()
    assert schema_errors(va, schema) == [] and unknown_fields(va, schema) == []
    assert "scaleTargetRef" not in va["spec"]


def _nodes(schema: Doc, path: str = "") -> dict[str, Doc]:
    out = {path or ".": schema}
    for name, child in schema.get("properties", {}).items():
        out |= _nodes(child, f"{path}.{name}")
    if "items" in schema:
        out |= _nodes(schema["items"], f"{path}[]")
    return out


def test_our_crd_has_every_upstream_field_and_requires_nothing_more() -> None:
    """Every field of the upstream CRD is in ours, with its type and format; no object of
    ours requires a field the upstream one does not (besides its own fields, currentAlloc
    and modelProfile)."""
    ours, theirs = _nodes(va_schema()), _nodes(upstream_schema())
    for path, node in theirs.items():
        assert path in ours, f"{path} is missing from our CRD"
        for key in ("type", "format", "pattern", "minimum", "enum"):
            assert ours[path].get(key) == node.get(key), f"{path}: {key}"
        if path != ".":  # ours requires `spec`: upstream's requires fields inside it anyway
            assert set(ours[path].get("required", [])) <= set(node.get("required", [])), path
    # upstream's defaults are not ours: applying our CRD must add nothing to tutorial VAs
    assert not [p for p, n in ours.items() if "default" in n]


def test_the_bounds_rule_is_the_api_servers_as_upstream() -> None:
    """The CEL rule (which jsonschema cannot run) is upstream's, both bounds optional."""
    spec = va_schema()["properties"]["spec"]
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["rule"] == (
        "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"
    )
    (theirs,) = upstream_schema()["properties"]["spec"]["x-kubernetes-validations"]
    assert rule["message"] == theirs["message"]
    assert spec["required"] == ["modelID"]


BAD_FIELDS = [
    ("minReplicas", -1),
    ("maxReplicas", 0),
    ("variantCost", "ten"),
    ("variantCost", "-10"),
    ("variantCost", 10.0),  # a number, not the string upstream's CRD takes
    ("scaleTargetRef", {"kind": "Deployment"}),  # no name
    ("scaleTargetRef", {"name": "vllm"}),  # no kind
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v}" for f, v in BAD_FIELDS])
def test_bad_newer_fields_are_rejected_by_the_crd(field: str, value: Any) -> None:
    va = load_one(NEWEST)
    va["spec"][field] = value
    assert schema_errors(va, va_schema()) != []


# ---------------------------------------------------------------- the adapter's reading


def test_the_newer_fields_as_the_adapter_reads_them() -> None:
    va = parse_variant_autoscaling(load_one(NEWEST))
    assert va.deployment_name() == "vllm"  # scaleTargetRef.name, not the VA's (vllm-va)
    assert va.replica_bounds(0) == (1, 20)
    assert va.spec.variant_cost == 10.0
    assert va.spec.model_profile is None
    tutorial = parse_variant_autoscaling(tutorial_va())
    assert tutorial.deployment_name() == "vllm"  # its own name
    assert tutorial.replica_bounds(1) == (1, None)
    assert tutorial.spec.variant_cost is None


@pytest.mark.parametrize(
    ("low", "high", "adapter_min", "bounds"),
    [
        (None, None, 0, (0, None)),  # the adapter's --min-replicas
        (3, None, 1, (3, None)),  # a VA may raise the floor
        (0, None, 1, (1, None)),  # never below --min-replicas: nothing would wake it
        (0, 4, 0, (0, 4)),  # scale to zero where the adapter does it
        (None, 2, 3, (2, 2)),  # the VA's maxReplicas caps the adapter's floor too
    ],
)
def test_replica_bounds(low: int | None, high: int | None, adapter_min: int, bounds: Any) -> None:
    doc = load_one(NEWEST)
    for key, value in (("minReplicas", low), ("maxReplicas", high)):
        if value is None:
            del doc["spec"][key]
        else:
            doc["spec"][key] = value
    assert parse_variant_autoscaling(doc).replica_bounds(adapter_min) == bounds


def test_a_target_of_another_kind_is_named() -> None:
    (lws,) = [va for name, va in UPSTREAM_VAS if name.startswith("variantautoscaling-with-lws")]
    va = parse_variant_autoscaling(lws)  # a valid object...
    with pytest.raises(ShapeError, match=r"spec\.scaleTargetRef: .*LeaderWorkerSet 'vllm-lws'"):
        va.deployment_name()  # ...that names no Deployment
    doc = load_one(NEWEST)
    doc["spec"]["scaleTargetRef"]["apiVersion"] = "apps/v1beta1"
    with pytest.raises(ShapeError, match="apps/v1beta1 Deployment 'vllm' is not supported"):
        parse_variant_autoscaling(doc).deployment_name()
    del doc["spec"]["scaleTargetRef"]["apiVersion"]  # optional, as in the migration guide
    assert parse_variant_autoscaling(doc).deployment_name() == "vllm"


# ---------------------------------------------------------------- same input, same decision


def newer_twin(source: Path = NEWEST, **spec: Any) -> Doc:
    """The upstream manifest sizing the tutorial's Deployment, model, profile and label:
    the tutorial's VA in the newer shape (identity fields and the profile carried over)."""
    va = load_one(source)
    tutorial = tutorial_va()
    va["metadata"]["namespace"] = NS
    va["metadata"].setdefault("labels", {})[ACCELERATOR_LABEL] = "H100"
    va["spec"]["scaleTargetRef"]["name"] = "vllm"
    va["spec"]["modelID"] = tutorial["spec"]["modelID"]
    va["spec"]["modelProfile"] = tutorial["spec"]["modelProfile"]
    va["spec"].update(spec)
    return va


def with_va(va: Doc | None, replace_tutorial: bool = True) -> Objects:
    objects = base_objects()
    if replace_tutorial:
        del objects["vas"][TUTORIAL_KEY]
    if va is not None:
        objects["vas"][(va["metadata"]["namespace"], va["metadata"]["name"])] = va
    return objects


def tutorial_at(rpm: float, in_flight: float) -> LoadReport:
    tokens = 512.0 if rpm > 0 else 0.0
    load = ModelLoad(NS, MODEL, rpm, avg_output_tokens=tokens, running=in_flight, waiting=0.0)
    idle = ModelLoad("team-b", "llama0-7b", running=0.0, waiting=0.0)
    return LoadReport({(NS, MODEL): load, ("team-b", "llama0-7b"): idle})


def decide(
    objects: Objects, loads: LoadReport, min_replicas: int = 1
) -> dict[Any, VariantDecision]:
    cluster = snapshot_of(objects)
    engine = Engine(
        cluster=lambda: cluster,
        metrics=FixedLoads(loads),
        clock=ManualClock(),
        settings=AssemblySettings(min_num_replicas=min_replicas),
    )
    return dict(engine.run_cycle().decisions)


def _sized(decision: VariantDecision) -> tuple[Any, ...]:
    return (
        decision.desired_replicas,
        decision.current_replicas,
        decision.accelerator,
        decision.model,
        decision.predicted_itl_ms,
        decision.predicted_wait_ms,
        decision.max_rpm_per_replica,
        decision.slo,
        decision.slo_batch,
    )


LOADS = [(0.0, 0.0), (480.0, 32.0), (2400.0, 160.0), (4800.0, 320.0)]  # req/min, in flight


@pytest.mark.parametrize("source", [NEWEST, UPSTREAM / "newest-migrating-from-va-crd.yaml"])
@pytest.mark.parametrize(("rpm", "in_flight"), LOADS)
def test_the_same_model_profile_and_load_give_the_same_decision(
    source: Path, rpm: float, in_flight: float
) -> None:
    """The tutorial's VA and the upstream manifest carrying the same model, profile and
    accelerator, each alone on the tutorial's Deployment, through the real Engine: the
    same replicas, predictions and SLO; only the cost follows the newer VA's variantCost."""
    loads = tutorial_at(rpm, in_flight)
    twin = newer_twin(source)
    tutorial = decide(with_va(None, replace_tutorial=False), loads)
    newer = decide(with_va(twin), loads)
    old, new = tutorial[TUTORIAL_KEY], newer[NS, twin["metadata"]["name"]]
    assert old.solved and new.solved
    assert _sized(new) == _sized(old)
    assert newer[("team-b", "other")] == tutorial[("team-b", "other")]
    replicas = new.desired_replicas or 0
    assert old.cost == 100.0 * replicas  # H100's unit cost, accCount 1
    per_replica = float(twin["spec"].get("variantCost", 100.0))
    assert new.cost == pytest.approx(per_replica * replicas)


def test_the_loads_compared_ask_for_several_replicas() -> None:
    """The comparison above is not only at one replica."""
    replicas = {
        rpm: decide(with_va(None, False), tutorial_at(rpm, n))[TUTORIAL_KEY].desired_replicas
        for rpm, n in LOADS
    }
    assert replicas[0.0] == 1 and replicas[4800.0] is not None and replicas[4800.0] >= 4


# ---------------------------------------------------------------- bounds and cost


def test_max_replicas_caps_the_decision(caplog: pytest.LogCaptureFixture) -> None:
    loads = tutorial_at(4800.0, 320.0)
    free = decide(with_va(newer_twin()), loads)[NS, "vllm-va"]
    assert free.desired_replicas is not None and free.desired_replicas > 2
    with caplog.at_level(logging.WARNING):
        capped = decide(with_va(newer_twin(maxReplicas=2)), loads)[NS, "vllm-va"]
    assert capped.desired_replicas == 2
    assert capped.cost == pytest.approx(2 * 10.0)
    # predicted at the load each of the two replicas then carries: beyond the SLO, finite
    itl, wait = capped.predicted_itl_ms, capped.predicted_wait_ms
    assert itl is not None and wait is not None and math.isfinite(itl) and math.isfinite(wait)
    assert free.predicted_itl_ms is not None and itl > free.predicted_itl_ms
    assert capped.slo is not None and itl > capped.slo.slo_itl
    # the status says the decision is the VA's cap
    obj = newer_twin(maxReplicas=2)
    status = desired_status(obj, capped, now=0.0, run_time=0.0)
    (ready,) = [c for c in status["conditions"] if c["type"] == "OptimizationReady"]
    assert ready["message"] == "desired 2 replica(s) of H100, its spec.maxReplicas"
    uncapped = desired_status(newer_twin(), free, now=0.0, run_time=0.0)
    (ready,) = [c for c in uncapped["conditions"] if c["type"] == "OptimizationReady"]
    assert "maxReplicas" not in ready["message"]


def test_a_changed_bound_or_cost_is_seen_at_the_next_cycle() -> None:
    """One Engine (its sizing cache kept across cycles), the same load, the VA edited
    between cycles: the cap and the cost of the edit decide the next cycle."""
    loads = tutorial_at(4800.0, 320.0)
    objects = with_va(newer_twin())
    # at 0 replicas the current cost is 0 whatever the variantCost: only the server's own
    # replicaCost tells the cached sizing apart
    objects["deps"][TUTORIAL_KEY].setdefault("spec", {})["replicas"] = 0
    engine = Engine(
        cluster=lambda: snapshot_of(objects), metrics=FixedLoads(loads), clock=ManualClock()
    )
    first = engine.run_cycle().decisions[NS, "vllm-va"]
    assert first.desired_replicas is not None and first.desired_replicas > 2
    objects["vas"][NS, "vllm-va"] = newer_twin(maxReplicas=2)
    assert engine.run_cycle().decisions[NS, "vllm-va"].desired_replicas == 2
    objects["vas"][NS, "vllm-va"] = newer_twin(maxReplicas=2, variantCost="55")
    assert engine.run_cycle().decisions[NS, "vllm-va"].cost == pytest.approx(2 * 55.0)


@pytest.mark.parametrize(
    ("low", "adapter_min", "desired"), [(3, 1, 3), (0, 1, 1), (None, 0, 0), (2, 0, 2)]
)
def test_min_replicas_is_the_floor_of_an_idle_variant(
    low: int | None, adapter_min: int, desired: int
) -> None:
    twin = newer_twin()
    if low is None:
        del twin["spec"]["minReplicas"]
    else:
        twin["spec"]["minReplicas"] = low
    decision = decide(with_va(twin), tutorial_at(0.0, 0.0), adapter_min)[NS, "vllm-va"]
    assert decision.desired_replicas == desired


def test_the_server_document_carries_bounds_and_cost_only_when_given() -> None:
    loads = tutorial_at(480.0, 32.0)
    newer = build_system(snapshot_of(with_va(newer_twin(maxReplicas=6))), loads)
    (server,) = [s for s in newer.system["serverData"]["servers"] if s["name"] == "vllm-va:" + NS]
    assert (server["minNumReplicas"], server["maxNumReplicas"], server["replicaCost"]) == (1, 6, 10)
    assert server["currentAlloc"]["cost"] == 10  # 1 replica at variantCost 10.0
    tutorial = build_system(snapshot_of(base_objects()), loads)
    (server,) = [s for s in tutorial.system["serverData"]["servers"] if s["name"] == VLLM_SERVER]
    assert "maxNumReplicas" not in server and "replicaCost" not in server
    assert server["currentAlloc"]["cost"] == 100


def test_a_system_spec_with_min_above_max_rejects_that_server_only() -> None:
    loads = tutorial_at(480.0, 32.0)
    system = build_system(snapshot_of(base_objects()), loads).system
    (server,) = [s for s in system["serverData"]["servers"] if s["name"] == VLLM_SERVER]
    server.update(minNumReplicas=3, maxNumReplicas=2)
    parsed = parse_system(system)
    assert [(p.name, p.message) for p in parsed.problems if p.kind == "server"] == [
        (VLLM_SERVER, "Value error, minNumReplicas 3 is above maxNumReplicas 2")
    ]
    assert [s.name for s in parsed.spec.servers] == [OTHER_SERVER]


# ---------------------------------------------------------------- a bad VA marks only itself


def newcomer(namespace: str, **spec: Any) -> tuple[Doc, dict[str, Any]]:
    """A newer-shape VA of the tutorial's model in `namespace`, with its own Deployment."""
    va = newer_twin()
    va["metadata"].update(namespace=namespace, name="newcomer")
    va["spec"]["scaleTargetRef"]["name"] = "model-server"
    va["spec"].update(spec)
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "model-server", "namespace": namespace},
        "spec": {"replicas": 1},
    }
    return va, deployment


def drop_profile(va: Doc) -> None:
    del va["spec"]["modelProfile"]


BAD: dict[str, tuple[dict[str, Any] | None, str]] = {
    "target-of-another-kind": (
        {"scaleTargetRef": {"apiVersion": "leaderworkerset.x-k8s.io/v1",
                            "kind": "LeaderWorkerSet", "name": "vllm-lws"}},
        "spec.scaleTargetRef: leaderworkerset.x-k8s.io/v1 LeaderWorkerSet 'vllm-lws' is not"
        " supported; the adapter sizes apps/v1 Deployments only",
    ),
    "min-above-max": (
        {"minReplicas": 5, "maxReplicas": 2},
        "invalid VariantAutoscaling: spec: minReplicas 5 is above maxReplicas 2",
    ),
    "variant-cost-not-a-number": (
        {"variantCost": "ten"},
        "invalid VariantAutoscaling: spec.variantCost: 'ten' is not a decimal like '6.356'",
    ),
    "target-deployment-missing": (
        {"scaleTargetRef": {"kind": "Deployment", "name": "ghost"}},
        "Deployment {namespace}/ghost (spec.scaleTargetRef) not found",
    ),
    "no-model-profile": (
        None,  # drop_profile
        "no spec.modelProfile: sizing needs the decode profile of the model on 'H100'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("namespace", NAMES)
@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_newer_field_marks_only_its_va(case: str, namespace: str, order: str) -> None:
    """The bad VA sorted first (`aa`) and last (`zz`), the objects listed in sorted and in
    reversed order: only it is left out, with the reason, and every other VA's decision is
    the one without it. The same VA without the bad field is sized."""
    edit, reason = BAD[case]
    va, deployment = newcomer(namespace, **(edit or {}))
    if edit is None:
        drop_profile(va)
    objects = base_objects()
    objects["vas"][namespace, "newcomer"] = va
    objects["deps"][namespace, "model-server"] = deployment
    assembly = build_system(listed(objects, order), twin_loads(namespace))
    (problem,) = assembly.problems
    assert (problem.namespace, problem.name) == (namespace, "newcomer")
    assert reason.format(namespace=namespace) in problem.reason
    decided = allocations(assembly)
    alone = allocations(build_system(listed(base_objects(), order), twin_loads(namespace)))
    assert decided == alone and decided[VLLM_SERVER] is not None

    good, deployment = newcomer(namespace)  # the same VA, well formed: sized
    objects["vas"][namespace, "newcomer"] = good
    fixed = build_system(listed(objects, order), twin_loads(namespace))
    assert fixed.problems == () and allocations(fixed)[f"newcomer:{namespace}"] is not None


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", NAMES)
def test_two_vas_on_one_deployment_are_both_left_out(name: str, order: str) -> None:
    """A newer-shape VA whose scaleTargetRef names the tutorial VA's Deployment: either
    would size it, neither wins by its name or its place in the listing."""
    twin = newer_twin()
    twin["metadata"]["name"] = name
    objects = base_objects()
    objects["vas"][NS, name] = twin
    assembly = build_system(listed(objects, order), tutorial_at(480.0, 32.0))
    reasons = {p.name: p.reason for p in assembly.problems}
    assert set(reasons) == {name, "vllm"}
    expected = f"Deployment {NS}/vllm is the target of several VariantAutoscalings"
    assert all(
        expected in r and f"({', '.join(sorted([name, 'vllm']))})" in r for r in reasons.values()
    )
    assert list(assembly.servers) == [OTHER_SERVER]


# ---------------------------------------------------------------- status


def upstream_status() -> Doc:
    """A status as the newest upstream controller writes it (the fields of its types at
    red-hat-data-services/workload-variant-autoscaler@cbe609ff): no accelerator in
    desiredOptimizedAlloc, actuation applied, its three condition types."""

    def cond(type_: str, reason: str, message: str) -> Doc:
        return {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": "2026-03-20T10:00:00Z",
            "observedGeneration": 1,
        }

    return {
        "desiredOptimizedAlloc": {"lastRunTime": "2026-03-20T10:00:00Z", "numReplicas": 2},
        "actuation": {"applied": True},
        "conditions": [
            cond("TargetResolved", "TargetFound", "Scale target Deployment vllm found"),
            cond("MetricsAvailable", "MetricsFound", "Saturation metrics data is available"),
            cond("OptimizationReady", "OptimizationSucceeded", "optimized"),
        ],
    }


def test_an_upstream_status_validates_and_parses() -> None:
    va = load_one(NEWEST) | {"status": upstream_status()}
    assert schema_errors(va, va_schema()) == [] and unknown_fields(va, va_schema()) == []
    parsed = parse_variant_autoscaling(va)  # a status without accelerator is no shape error
    status = parsed.status
    assert status is not None and status.desired_optimized_alloc is not None
    assert status.desired_optimized_alloc.accelerator is None


def test_our_write_over_an_upstream_status_keeps_its_conditions_and_validates() -> None:
    obj = newer_twin() | {"status": upstream_status()}
    obj["metadata"]["generation"] = 2
    loads = tutorial_at(480.0, 32.0)
    decision = decide(with_va(newer_twin()), loads)[NS, "vllm-va"]
    new = desired_status(obj, decision, now=1_800_000_000.0, run_time=1_800_000_000.0)
    assert new["actuation"] == {"applied": False}  # the adapter never actuates
    target = new["conditions"][0]
    assert target == upstream_status()["conditions"][0]  # kept as upstream wrote it
    types = [c["type"] for c in new["conditions"]]
    assert types == ["TargetResolved", "MetricsAvailable", "OptimizationReady"]
    assert all(c["observedGeneration"] == 2 for c in new["conditions"][1:])
    assert set(new["desiredOptimizedAlloc"]) == {"lastRunTime", "accelerator", "numReplicas"}
    written = obj | {"status": new}
    assert schema_errors(written, va_schema()) == [] and unknown_fields(written, va_schema()) == []
    # an unsolved VA keeps upstream's recommendation, which still validates
    unsolved = desired_status(obj, None, now=1_800_000_000.0, run_time=0.0)
    assert unsolved["desiredOptimizedAlloc"] == upstream_status()["desiredOptimizedAlloc"]
    assert schema_errors(obj | {"status": unsolved}, va_schema()) == []
