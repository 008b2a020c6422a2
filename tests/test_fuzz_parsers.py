"""Fuzzing the parsers of outside input: they raise only their documented errors.

- `parse_variant_autoscaling`: a VariantAutoscaling or ShapeError;
- `parse_accelerator_costs`, `parse_service_classes`: never raise (bad entries become
  EntryProblems);
- `build_system`: never raises, and a good VA next to a fuzzed one is assembled exactly
  as without it;
- `parse_system`: a ParsedSystem or SystemFormatError;
- the ScaledObject metadata (`parse_metadata`, `variant_key`): a result or MetadataError.

Inputs are valid objects with one to three fields replaced by arbitrary JSON values
(the shapes an API server or a hand-written file can deliver), plus wholly arbitrary
values. Examples are bounded so the file runs in a few seconds.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.assemble import Assembly, build_system
from adapter.model.kube import (
    AcceleratorCost,
    EntryProblem,
    ServiceClass,
    ShapeError,
    VariantAutoscaling,
    merge_service_classes,
    parse_accelerator_costs,
    parse_service_classes,
    parse_variant_autoscaling,
)
from adapter.model.system import ParsedSystem, SystemFormatError, parse_system
from adapter.scaler.metadata import MetadataError, TriggerMetadata, parse_metadata, variant_key
from tests.kube_helpers import tutorial_load
from tests.test_assemble import OTHER, VLLM_SERVER, base_objects, servers_by_name, snapshot_of
from tests.test_cli_optimize import base_document

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["", "0", "1.5", "-1", "1e999", "nan", "H100", "true", "{", "- a"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@cache
def _pristine() -> dict[str, Any]:
    return base_objects()


def objects() -> dict[str, Any]:
    """The tutorial's objects plus the other VA (tests/test_assemble.py), a fresh copy."""
    return copy.deepcopy(_pristine())


def _set_path(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    """Replace `doc[path]`; missing or non-container intermediate steps are created."""
    target = doc
    for part in path[:-1]:
        if isinstance(target, list):
            target = target[part] if isinstance(part, int) and part < len(target) else None
        elif isinstance(target, dict):
            if not isinstance(target.get(part), dict | list):
                target[part] = {}
            target = target[part]
        if target is None:
            return
    last = path[-1]
    in_list = isinstance(target, list) and isinstance(last, int) and last < len(target)
    if isinstance(target, dict) or in_list:
        target[last] = value


# ---------------------------------------------------------------- VariantAutoscaling

VA_PATHS: list[tuple[Any, ...]] = [
    ("metadata",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "labels"),
    ("metadata", "labels", "inference.optimization/acceleratorName"),
    ("metadata", "generation"),
    ("spec",),
    ("spec", "modelID"),
    ("spec", "sloClassRef"),
    ("spec", "sloClassRef", "key"),
    ("spec", "modelProfile"),
    ("spec", "modelProfile", "accelerators"),
    ("spec", "modelProfile", "accelerators", 0),
    ("spec", "modelProfile", "accelerators", 0, "acc"),
    ("spec", "modelProfile", "accelerators", 0, "accCount"),
    ("spec", "modelProfile", "accelerators", 0, "alpha"),
    ("spec", "modelProfile", "accelerators", 0, "beta"),
    ("spec", "modelProfile", "accelerators", 0, "maxBatchSize"),
    ("spec", "modelProfile", "accelerators", 0, "atTokens"),
    # the newer upstream shape's fields
    ("spec", "scaleTargetRef"),
    ("spec", "scaleTargetRef", "kind"),
    ("spec", "scaleTargetRef", "name"),
    ("spec", "minReplicas"),
    ("spec", "maxReplicas"),
    ("spec", "variantCost"),
    ("status",),
    ("status", "currentAlloc"),
    ("status", "currentAlloc", "numReplicas"),
    ("status", "currentAlloc", "variantCost"),
    ("status", "desiredOptimizedAlloc"),
    ("status", "desiredOptimizedAlloc", "lastRunTime"),
    ("status", "conditions"),
    ("kind",),
]

edits = st.lists(st.tuples(st.sampled_from(VA_PATHS), json_values), min_size=1, max_size=3)


def fuzzed_va(changes: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    va: dict[str, Any] = copy.deepcopy(_pristine()["vas"][OTHER])
    for path, value in changes:
        _set_path(va, path, value)
    return va


@FUZZ
@given(edits)
def test_va_parser_raises_only_shape_errors(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    raw = fuzzed_va(changes)
    try:
        va = parse_variant_autoscaling(raw)
    except ShapeError as error:
        assert str(error), "a ShapeError names at least one field"
        return
    assert isinstance(va, VariantAutoscaling)
    profile = va.spec.model_profile
    for entry in profile.accelerators if profile is not None else ():
        assert math.isfinite(entry.alpha) and entry.alpha >= 0
        assert math.isfinite(entry.beta) and entry.beta >= 0
    cost = va.spec.variant_cost
    assert cost is None or (math.isfinite(cost) and cost >= 0)
    floor, ceiling = va.replica_bounds(1)
    assert floor >= 0 and (ceiling is None or floor <= ceiling)
    try:
        assert va.deployment_name()
    except ShapeError as error:  # a scale target of another kind: named
        assert "spec.scaleTargetRef" in str(error)


@FUZZ
@given(json_values)
def test_va_parser_on_arbitrary_values(raw: Any) -> None:
    try:
        va = parse_variant_autoscaling(raw)
    except ShapeError as error:
        assert str(error)
    else:
        assert isinstance(va, VariantAutoscaling)


# ---------------------------------------------------------------- ConfigMaps

config_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            '{"device": "X", "cost": "1"}',
            '{"device": "X", "cost": -1}',
            '{"device": "", "cost": "nan"}',
            "name: A\npriority: 1\ndata:\n  - {model: m, slo-tpot: 1, slo-ttft: 2}\n",
            "name: A\npriority: 1\ndata: [1, 2]\n",
            "name: A\npriority: 2020-01-01\n",
            "!!python/object:os.system ls\n",
            "&a [*a]\n",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "? [a, b]\n: c\n",
            "name: !!binary aGVsbG8=\npriority: 1\n",
        ]
    ),
)
config_data = (
    st.dictionaries(st.text(max_size=10), st.one_of(config_text, json_values), max_size=4)
    | st.none()
)


def _check_problems(problems: list[EntryProblem], data: Mapping[str, Any] | None) -> None:
    for problem in problems:
        assert problem.key in (data or {}) and str(problem)


@FUZZ
@given(config_data)
def test_cost_parser_never_raises(data: dict[str, Any] | None) -> None:
    costs, problems = parse_accelerator_costs(data, "ns")
    assert set(costs) | {p.key for p in problems} == set(data or {})
    for key, cost in costs.items():
        assert isinstance(cost, AcceleratorCost) and cost.name == key
        assert math.isfinite(cost.cost) and cost.cost >= 0
    _check_problems(problems, data)


@FUZZ
@given(config_data)
def test_service_class_parser_never_raises(data: dict[str, Any] | None) -> None:
    classes, problems = parse_service_classes(data, "ns")
    assert set(classes) <= set(data or {})
    merged, conflicts = merge_service_classes(classes, "ns")
    assert set(merged) == {c.name for c in classes.values()}  # one class per name
    _check_problems(conflicts, data)
    for key, service_class in classes.items():
        assert isinstance(service_class, ServiceClass) and service_class.key == key
        assert len({e.model for e in service_class.data}) == len(service_class.data)
    _check_problems(problems, data)


# ---------------------------------------------------------------- build_system


@cache
def _baseline() -> Assembly:
    return build_system(snapshot_of(objects()), tutorial_load())


def _same_good_va(assembly: Assembly) -> None:
    baseline = _baseline()
    assert (
        servers_by_name(assembly.system)[VLLM_SERVER]
        == servers_by_name(baseline.system)[VLLM_SERVER]
    )
    assert assembly.slo[VLLM_SERVER] == baseline.slo[VLLM_SERVER]
    assert not any(p.name == "vllm" for p in assembly.problems)
    parsed = parse_system(assembly.system)
    assert VLLM_SERVER in {s.name for s in parsed.spec.servers}


@FUZZ
@given(edits)
def test_build_system_keeps_the_good_va_next_to_a_fuzzed_one(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    cluster = objects()
    cluster["vas"][OTHER] = fuzzed_va(changes)
    _same_good_va(build_system(snapshot_of(cluster), tutorial_load()))


@FUZZ
@given(
    st.dictionaries(st.text(max_size=8), st.one_of(config_text, json_values), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(config_text, json_values), max_size=3),
    json_values,
    json_values,
)
def test_build_system_never_raises_on_fuzzed_config_nodes_and_deployments(
    extra_costs: dict[str, Any],
    extra_classes: dict[str, Any],
    node: Any,
    deployment: Any,
) -> None:
    """Extra ConfigMap keys (never the good VA's own), a junk Node and a junk Deployment
    for the other VA: the good VA is assembled as before."""
    cluster = objects()
    costs = cluster["cms"]["accelerator-unit-costs"]["data"]
    for key, value in extra_costs.items():
        costs.setdefault(f"x-{key}", value)
    classes = cluster["cms"]["service-classes-config"]["data"]
    for key, value in extra_classes.items():
        classes.setdefault(f"zz-{key}", value)
    cluster["nodes"]["fuzzed"] = node
    cluster["deps"][OTHER] = deployment
    assembly = build_system(snapshot_of(cluster), tutorial_load())
    # an extra class named Premium is merged into it, whatever its key; none of these
    # gives the tutorial's model a target, so its SLO stays
    _same_good_va(assembly)


# ---------------------------------------------------------------- parse_system

SYSTEM_PATHS: list[tuple[Any, ...]] = [
    ("system",),
    ("system", "acceleratorData"),
    ("system", "acceleratorData", "accelerators"),
    ("system", "acceleratorData", "accelerators", 0),
    ("system", "acceleratorData", "accelerators", 0, "cost"),
    ("system", "acceleratorData", "accelerators", 1, "multiplicity"),
    ("system", "modelData", "models"),
    ("system", "modelData", "models", 1, "alpha"),
    ("system", "modelData", "models", 2, "maxBatchSize"),
    ("system", "modelData", "models", 3, "atTokens"),
    ("system", "serviceClassData"),
    ("system", "serviceClassData", "serviceClasses", 0, "priority"),
    ("system", "serviceClassData", "serviceClasses", 0, "modelTargets"),
    ("system", "serviceClassData", "serviceClasses", 1, "modelTargets", 0, "slo-itl"),
    ("system", "serverData", "servers"),
    ("system", "serverData", "servers", 1),
    ("system", "serverData", "servers", 1, "name"),
    ("system", "serverData", "servers", 1, "currentAlloc"),
    ("system", "serverData", "servers", 1, "currentAlloc", "load", "arrivalRate"),
    ("system", "serverData", "servers", 1, "minNumReplicas"),
    ("system", "optimizerData"),
    ("system", "optimizerData", "optimizer"),
    ("system", "optimizerData", "optimizer", "saturationPolicy"),
    ("system", "capacityData", "count"),
    ("system", "capacityData", "count", 0, "count"),
]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SYSTEM_PATHS), json_values), min_size=1, max_size=3))
def test_parse_system_raises_only_format_errors(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    doc = base_document()
    for path, value in changes:
        _set_path(doc, path, value)
    try:
        parsed = parse_system(doc)
    except SystemFormatError as error:
        assert str(error)
        return
    assert isinstance(parsed, ParsedSystem)
    names = [s.name for s in parsed.spec.servers]
    assert len(names) == len(set(names))
    assert not set(names) & set(parsed.rejected_servers)


@FUZZ
@given(json_values)
def test_parse_system_on_arbitrary_documents(document: Any) -> None:
    try:
        parsed = parse_system(document)
    except SystemFormatError as error:
        assert str(error)
    else:
        assert isinstance(parsed, ParsedSystem)


# ---------------------------------------------------------------- ScaledObject metadata

metadata_keys = st.sampled_from(
    [
        "variantAutoscalingName",
        "variantAutoscalingNamespace",
        "scalerAddress",
        "enableTLS",
        "caCert",
        "variantautoscalingname",
        "",
    ]
) | st.text(max_size=10)
metadata_values = st.sampled_from(["chat", "llm-d", "a.b", "A", "-x", "", "a" * 254]) | st.text(
    max_size=20
)


@FUZZ
@given(
    st.dictionaries(metadata_keys, metadata_values, max_size=4), metadata_values, metadata_values
)
def test_metadata_parser_raises_only_metadata_errors(
    metadata: dict[str, str], so_name: str, so_namespace: str
) -> None:
    try:
        parsed = parse_metadata(metadata)
    except MetadataError as error:
        # the key is named first; an empty key ('') shows as '' in the message
        assert str(error).startswith(f"{error.key}: ") and (error.key or "''" in str(error))
    else:
        assert isinstance(parsed, TriggerMetadata)
    try:
        namespace, name = variant_key(so_name, so_namespace, metadata)
    except MetadataError as error:
        assert str(error).startswith(f"{error.key}: ") and (error.key or "''" in str(error))
        return
    assert 0 < len(namespace) <= 63 and 0 < len(name) <= 253
    assert name in (so_name, metadata.get("variantAutoscalingName"))
