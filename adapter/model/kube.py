"""Kubernetes objects the adapter reads: VariantAutoscaling, two ConfigMaps, Nodes, Deployments.

Pure shapes and parsers, no I/O. The VariantAutoscaling model accepts both released
shapes of `llmd.ai/v1alpha1` (deploy/crd-variantautoscalings.yaml serves them as one
schema): the tutorial's YAML unchanged (Aug-2025 CRD plus the optional `atTokens`), and
the last upstream WVA shape before the CRD's removal (`scaleTargetRef`, `minReplicas`,
`maxReplicas`, `variantCost`; `modelProfile` optional). ConfigMaps and Nodes are parsed
entry by entry: a bad entry becomes an `EntryProblem` naming the object, the key and the
field, and every other entry is still used.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# in adapter.defaults: `wva-adapter --help` shows it without importing this module
from adapter.defaults import DEFAULT_CONFIG_NAMESPACE as DEFAULT_CONFIG_NAMESPACE

GROUP = "llmd.ai"
VERSION = "v1alpha1"
PLURAL = "variantautoscalings"
KIND = "VariantAutoscaling"
API_VERSION = f"{GROUP}/{VERSION}"

ACCELERATOR_LABEL = "inference.optimization/acceleratorName"
ACCELERATOR_COSTS_CONFIGMAP = "accelerator-unit-costs"
SERVICE_CLASSES_CONFIGMAP = "service-classes-config"
GPU_VENDORS: tuple[str, ...] = ("nvidia.com", "amd.com", "intel.com")

_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


class _Shape(BaseModel):
    """Base for Kubernetes shapes: immutable; unknown fields ignored (objects carry many)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _decimal(value: Any) -> float:
    """A CRD decimal: a string matching ^\\d+(\\.\\d+)?$ or a non-negative finite number."""
    if isinstance(value, bool):
        raise ValueError("must be a decimal string like '6.356', not a boolean")
    if isinstance(value, str):
        if not _DECIMAL.match(value.strip()):
            raise ValueError(f"{value!r} is not a decimal like '6.356'")
        return float(value)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} must be a non-negative finite number")
        return float(value)
    raise ValueError(f"must be a decimal string like '6.356', got {type(value).__name__}")


def _optional_decimal(value: Any) -> float | None:
    """An optional CRD decimal (absent or null: not set)."""
    return None if value is None else _decimal(value)


def describe_validation(error: ValidationError, prefix: str = "") -> str:
    """Each failed field as a path with indices, e.g. `spec.modelProfile.accelerators[0].alpha`."""
    errors = error.errors()
    parts = []
    for item in errors:
        loc = item["loc"]
        # a list whose items failed is also reported "too short": keep only the item errors
        if item["type"] == "too_short" and any(
            other["loc"][: len(loc)] == loc and len(other["loc"]) > len(loc) for other in errors
        ):
            continue
        path = prefix
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path = f"{path}.{part}" if path else str(part)
        message = "required field is missing" if item["type"] == "missing" else item["msg"]
        message = message.removeprefix("Value error, ")
        parts.append(f"{path or '(object)'}: {message}")
    return "; ".join(parts)


# ---------------------------------------------------------------- VariantAutoscaling


class ObjectMeta(_Shape):
    name: str = Field(min_length=1)
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = Field(None, alias="resourceVersion")
    generation: int | None = None
    uid: str | None = None


class SloClassRef(_Shape):
    """Where the VA's SLO is meant to live: ConfigMap `name`, key `key`."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class AcceleratorProfile(_Shape):
    """Decode performance of the VA's model on one accelerator: ITL = alpha + beta * batch (ms)."""

    acc: str = Field(min_length=1)
    acc_count: int = Field(ge=1, alias="accCount")
    alpha: float
    beta: float
    max_batch_size: int = Field(ge=1, alias="maxBatchSize")
    at_tokens: int | None = Field(None, ge=1, alias="atTokens")

    _check_decimals = field_validator("alpha", "beta", mode="before")(_decimal)


class ModelProfile(_Shape):
    accelerators: tuple[AcceleratorProfile, ...] = Field(min_length=1)


class ScaleTargetRef(_Shape):
    """autoscaling's CrossVersionObjectReference, as the newer upstream shape carries it."""

    api_version: str = Field("", alias="apiVersion")
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)


# the one kind of scale target the adapter reads replicas from
TARGET_KIND = "Deployment"
TARGET_API_VERSIONS = ("", "apps/v1")  # apiVersion is optional in scaleTargetRef


class VariantAutoscalingSpec(_Shape):
    """Both shapes in one: the tutorial's (modelID, sloClassRef, modelProfile) and the
    newer upstream one (scaleTargetRef, modelID, minReplicas, maxReplicas, variantCost).

    Every field but modelID is optional, without defaults: an absent scaleTargetRef is
    the Deployment of the VA's own name, absent bounds are the adapter's (--min-replicas,
    no maximum), an absent variantCost is the accelerator's unit cost. A VA without
    modelProfile parses, and is left unsized with the reason (`no_profile_reason`).
    """

    model_id: str = Field(min_length=1, alias="modelID")
    slo_class_ref: SloClassRef | None = Field(None, alias="sloClassRef")
    model_profile: ModelProfile | None = Field(None, alias="modelProfile")
    scale_target_ref: ScaleTargetRef | None = Field(None, alias="scaleTargetRef")
    min_replicas: int | None = Field(None, ge=0, le=2**31 - 1, alias="minReplicas")
    max_replicas: int | None = Field(None, ge=1, le=2**31 - 1, alias="maxReplicas")
    variant_cost: float | None = Field(
        None, alias="variantCost", description="cost of one replica, a decimal string"
    )

    _check_cost = field_validator("variant_cost", mode="before")(_optional_decimal)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> VariantAutoscalingSpec:
        # the CRD's x-kubernetes-validations rule, which the API server enforces
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            raise ValueError(f"minReplicas {low} is above maxReplicas {high}")
        return self


def _status_decimal(value: Any) -> str:
    text = value if isinstance(value, str) else f"{_decimal(value):.2f}"
    if not _DECIMAL.match(text):
        raise ValueError(f"{text!r} is not a decimal like '8.46'")
    return text


class LoadStatus(_Shape):
    arrival_rate: str = Field("0", alias="arrivalRate", description="requests per minute")
    avg_length: str = Field("0", alias="avgLength", description="output tokens per request")


class CurrentAlloc(_Shape):
    """The variant as collected: strings with two decimals, as the reference CRD stores them."""

    accelerator: str = Field(min_length=1)
    num_replicas: int = Field(0, ge=0, alias="numReplicas")
    max_batch: int = Field(0, ge=0, alias="maxBatch")
    variant_cost: str = Field("0", alias="variantCost")
    itl_average: str = Field("0", alias="itlAverage")
    wait_average: str = Field("0", alias="waitAverage")
    load: LoadStatus = LoadStatus()

    _check = field_validator("variant_cost", "itl_average", "wait_average", mode="before")(
        _status_decimal
    )


class DesiredOptimizedAlloc(_Shape):
    """Both fields optional: the newest upstream controller omits the accelerator and, until
    its first decision, the replicas; the adapter always writes both."""

    last_run_time: datetime | None = Field(None, alias="lastRunTime")
    accelerator: str | None = Field(None, min_length=2)
    num_replicas: int | None = Field(None, ge=0, alias="numReplicas")


class Actuation(_Shape):
    applied: bool


class Condition(_Shape):
    """metav1.Condition."""

    type: str = Field(min_length=1)
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = Field(None, alias="lastTransitionTime")
    observed_generation: int | None = Field(None, ge=0, alias="observedGeneration")


class VariantAutoscalingStatus(_Shape):
    current_alloc: CurrentAlloc | None = Field(None, alias="currentAlloc")
    desired_optimized_alloc: DesiredOptimizedAlloc | None = Field(
        None, alias="desiredOptimizedAlloc"
    )
    actuation: Actuation | None = None
    conditions: tuple[Condition, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The status as the API server stores it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class VariantAutoscaling(_Shape):
    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: VariantAutoscalingSpec
    status: VariantAutoscalingStatus | None = None

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def accelerator_name(self) -> str | None:
        """The `inference.optimization/acceleratorName` label: the variant's accelerator."""
        return self.metadata.labels.get(ACCELERATOR_LABEL) or None

    def profile_for(self, accelerator: str) -> AcceleratorProfile | None:
        profile = self.spec.model_profile
        for entry in profile.accelerators if profile is not None else ():
            if entry.acc == accelerator:
                return entry
        return None

    def no_profile_reason(self, accelerator: str) -> str:
        """Why `profile_for(accelerator)` is None, for the VA's unsolved reason."""
        if self.spec.model_profile is None:
            return (
                "no spec.modelProfile: sizing needs the decode profile of the model on"
                f" {accelerator!r} (modelProfile.accelerators[] with acc, accCount, alpha,"
                " beta, maxBatchSize), which the newer upstream shape does not carry; add"
                " it to this VariantAutoscaling (the adapter learns a profile only for a VA"
                " it already sizes)"
            )
        return f"no modelProfile entry for accelerator {accelerator!r}"

    def deployment_name(self) -> str:
        """The Deployment this VA sizes: `spec.scaleTargetRef.name`, or the VA's own name
        without a scaleTargetRef. Raises ShapeError for a target of another kind."""
        ref = self.spec.scale_target_ref
        if ref is None:
            return self.name
        if ref.kind != TARGET_KIND or ref.api_version not in TARGET_API_VERSIONS:
            kind = f"{ref.api_version} {ref.kind}" if ref.api_version else ref.kind
            raise ShapeError(
                f"spec.scaleTargetRef: {kind} {ref.name!r} is not supported; the adapter"
                " sizes apps/v1 Deployments only (their replicas and pods are what it reads)"
            )
        return ref.name

    def replica_bounds(self, default_min: int) -> tuple[int, int | None]:
        """(floor, ceiling or None) of this VA's replicas.

        The floor is `spec.minReplicas` but never below `default_min` (--min-replicas):
        a VA asking for 0 where the adapter runs without scale from zero would be parked
        with nothing to wake it. `spec.maxReplicas` caps both: it is the VA's own word.
        """
        floor = max(default_min, self.spec.min_replicas or 0)
        ceiling = self.spec.max_replicas
        return (floor if ceiling is None else min(floor, ceiling)), ceiling


class ShapeError(ValueError):
    """An object that does not have the expected shape; the message names the field."""


def _map(obj: Any, key: str) -> Mapping[str, Any]:
    """`obj[key]` when both are mappings, else an empty mapping (raw objects may be junk)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def object_ref(obj: Mapping[str, Any]) -> str:
    """`namespace/name` (or `name`) of a raw object, for messages; tolerant of junk."""
    meta = _map(obj, "metadata")
    name, namespace = str(meta.get("name") or "?"), meta.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def parse_variant_autoscaling(obj: Mapping[str, Any]) -> VariantAutoscaling:
    """Validate one raw VA; raises ShapeError naming every bad field."""
    try:
        return VariantAutoscaling.model_validate(obj)
    except ValidationError as error:
        raise ShapeError(describe_validation(error)) from None


# ---------------------------------------------------------------- ConfigMap entries


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """One unusable entry: which object (`ConfigMap ns/name`, `Node n`), which key, which field."""

    source: str
    key: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source} key {self.key!r}" if self.key else self.source
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class AcceleratorCost(_Shape):
    """An `accelerator-unit-costs` entry: accelerator `name` is the key, `device` the node label."""

    name: str = Field(min_length=1)
    device: str = Field(min_length=1)
    cost: float

    _check_cost = field_validator("cost", mode="before")(_decimal)


class SloEntry(_Shape):
    model: str = Field(min_length=1)
    slo_tpot: float = Field(ge=0, alias="slo-tpot", description="ITL target, ms")
    slo_ttft: float = Field(ge=0, alias="slo-ttft", description="queue-wait target, ms")
    slo_attainment: float | None = Field(
        None,
        gt=0,
        lt=100,
        alias="slo-attainment",
        description="% of requests to size for within both targets (adapter default 99)",
    )

    _check = field_validator("slo_tpot", "slo_ttft", mode="before")(_decimal)
    _check_share = field_validator("slo_attainment", mode="before")(_optional_decimal)


class ServiceClass(_Shape):
    """One `service-classes-config` key: a class name, a priority (1 = highest), model SLOs."""

    key: str  # merged from several keys (`merge_service_classes`): "a.yaml, b.yaml"
    name: str = Field(min_length=1)
    priority: int
    data: tuple[SloEntry, ...] = ()

    def slo_for(self, model: str) -> SloEntry | None:
        for entry in self.data:
            if entry.model == model:
                return entry
        return None


def _configmap_source(name: str, namespace: str) -> str:
    return f"ConfigMap {namespace}/{name}" if namespace else f"ConfigMap {name}"


def parse_accelerator_costs(
    data: Mapping[str, Any] | None, namespace: str = ""
) -> tuple[dict[str, AcceleratorCost], list[EntryProblem]]:
    """Each key is an accelerator name, each value a JSON object {"device", "cost"}."""
    source = _configmap_source(ACCELERATOR_COSTS_CONFIGMAP, namespace)
    costs: dict[str, AcceleratorCost] = {}
    problems: list[EntryProblem] = []
    for key in sorted(data or {}):
        raw = (data or {})[key]
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as error:
            problems.append(EntryProblem(source, key, "", f"invalid JSON: {error}"))
            continue
        if not isinstance(value, Mapping):
            problems.append(EntryProblem(source, key, "", "expected a JSON object"))
            continue
        try:
            costs[key] = AcceleratorCost.model_validate({**value, "name": key})
        except ValidationError as error:
            problems.append(EntryProblem(source, key, "", describe_validation(error)))
    return costs, problems


def parse_service_classes(
    data: Mapping[str, Any] | None, namespace: str = ""
) -> tuple[dict[str, ServiceClass], list[EntryProblem]]:
    """Each key is a YAML document {name, priority, data: [{model, slo-tpot, slo-ttft}]}.

    A key whose YAML, name or priority is bad is skipped; a bad `data` item is dropped
    and the rest of the class kept. Keys are returned one class each, even when two
    define the same class name: `merge_service_classes` joins them whatever the key
    names, where skipping the later key let a key sorting first take a model's class away.
    """
    source = _configmap_source(SERVICE_CLASSES_CONFIGMAP, namespace)
    classes: dict[str, ServiceClass] = {}
    problems: list[EntryProblem] = []
    for key in sorted(data or {}):
        parsed = _service_class(source, key, (data or {})[key], problems)
        if parsed is not None:
            classes[key] = parsed
    return classes, problems


def _service_class(
    source: str, key: str, raw: Any, problems: list[EntryProblem]
) -> ServiceClass | None:
    """One key's class, or None with its problem added; bad `data` items are dropped."""
    try:
        doc = yaml.safe_load(raw) if isinstance(raw, str) else raw
    except yaml.YAMLError as error:
        problems.append(EntryProblem(source, key, "", f"invalid YAML: {error}"))
        return None
    if not isinstance(doc, Mapping):
        problems.append(EntryProblem(source, key, "", "expected a YAML mapping"))
        return None
    items = doc.get("data") or []
    if not isinstance(items, list):
        problems.append(EntryProblem(source, key, "data", "expected a list"))
        return None
    entries = _slo_entries(source, key, items, problems)
    try:
        header = {f: doc[f] for f in ("name", "priority") if doc.get(f) is not None}
        parsed = ServiceClass.model_validate({"key": key, **header})
    except ValidationError as error:
        problems.append(EntryProblem(source, key, "", describe_validation(error)))
        return None
    return parsed.model_copy(update={"data": entries})


def _slo_entries(
    source: str, key: str, items: list[Any], problems: list[EntryProblem]
) -> tuple[SloEntry, ...]:
    """The valid `data` items of one key, a repeated model kept once (its first)."""
    entries: dict[str, SloEntry] = {}
    for index, item in enumerate(items):
        try:
            entry = SloEntry.model_validate(item)
        except ValidationError as error:
            problems.append(
                EntryProblem(source, key, "", describe_validation(error, f"data[{index}]"))
            )
            continue
        if entry.model in entries:
            message = f"duplicate model {entry.model!r}"
            problems.append(EntryProblem(source, key, f"data[{index}].model", message))
            continue
        entries[entry.model] = entry
    return tuple(entries.values())


def merge_service_classes(
    classes: Mapping[str, ServiceClass], namespace: str = ""
) -> tuple[dict[str, ServiceClass], list[EntryProblem]]:
    """The classes by name: keys that define the same name are one class.

    The optimizer knows a class by its name only, so two keys naming one class must give
    one answer, and the same one whatever the keys are called or listed in: the most
    important priority (lowest number) of them, and for a model listed under several
    keys the stricter of each target (lowest slo-tpot, lowest slo-ttft), which keeps
    every key's promise. A disagreement is reported on every key involved. Keys of a
    merged class are its `key`, joined with ", " in sorted order.
    """
    source = _configmap_source(SERVICE_CLASSES_CONFIGMAP, namespace)
    groups: dict[str, list[ServiceClass]] = {}
    for key in sorted(classes):
        groups.setdefault(classes[key].name, []).append(classes[key])
    merged: dict[str, ServiceClass] = {}
    problems: list[EntryProblem] = []
    for name in sorted(groups):
        group = groups[name]
        merged[name] = _merged_class(group)
        problems.extend(_priority_conflicts(source, group))
        problems.extend(_target_conflicts(source, group))
    return merged, problems


def _merged_class(group: list[ServiceClass]) -> ServiceClass:
    if len(group) == 1:
        return group[0]
    targets: dict[str, SloEntry] = {}
    for service_class in group:
        for entry in service_class.data:
            known = targets.get(entry.model)
            targets[entry.model] = entry if known is None else _stricter(known, entry)
    return group[0].model_copy(
        update={
            "key": ", ".join(c.key for c in group),
            "priority": min(c.priority for c in group),
            "data": tuple(targets.values()),
        }
    )


def _stricter(a: SloEntry, b: SloEntry) -> SloEntry:
    shares = [x for x in (a.slo_attainment, b.slo_attainment) if x is not None]
    return a.model_copy(
        update={
            "slo_tpot": min(a.slo_tpot, b.slo_tpot),
            "slo_ttft": min(a.slo_ttft, b.slo_ttft),
            "slo_attainment": max(shares) if shares else None,
        }
    )


def _priority_conflicts(source: str, group: list[ServiceClass]) -> list[EntryProblem]:
    if len({c.priority for c in group}) < 2:
        return []
    best = min(c.priority for c in group)
    return [
        EntryProblem(
            source,
            c.key,
            "priority",
            f"class {c.name!r} has priority {c.priority} here and "
            + ", ".join(f"{o.priority} under key {o.key!r}" for o in group if o is not c)
            + f"; the most important, {best}, is used",
        )
        for c in group
    ]


def _target_conflicts(source: str, group: list[ServiceClass]) -> list[EntryProblem]:
    listing: dict[str, list[tuple[ServiceClass, SloEntry]]] = {}
    for service_class in group:
        for entry in service_class.data:
            listing.setdefault(entry.model, []).append((service_class, entry))
    problems: list[EntryProblem] = []
    for model, found in listing.items():
        if len({(e.slo_tpot, e.slo_ttft, e.slo_attainment) for _, e in found}) < 2:
            continue
        used = functools.reduce(_stricter, (e for _, e in found))
        for service_class, entry in found:
            others = ", ".join(
                f"{_targets(e)} under key {c.key!r}" for c, e in found if c is not service_class
            )
            problems.append(
                EntryProblem(
                    source,
                    service_class.key,
                    "data",
                    f"class {service_class.name!r} gives model {model!r} {_targets(entry)} here"
                    f" and {others}; the stricter of each is used: {_targets(used)}",
                )
            )
    return problems


def _targets(entry: SloEntry) -> str:
    text = f"slo-tpot {entry.slo_tpot:g}, slo-ttft {entry.slo_ttft:g}"
    if entry.slo_attainment is not None:
        text += f", slo-attainment {entry.slo_attainment:g}"
    return text


# ---------------------------------------------------------------- Nodes and Deployments


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """GPUs of one vendor on one node, as GPU feature discovery labels them."""

    node: str
    vendor: str
    product: str
    count: int
    memory_mb: int | None


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("not a count")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{value!r} is not a whole number of GPUs")


def parse_node_gpus(node: Mapping[str, Any]) -> tuple[list[NodeGpus], list[EntryProblem]]:
    """Read `<vendor>/gpu.product`, `<vendor>/gpu.memory` labels and allocatable `<vendor>/gpu`."""
    meta = _map(node, "metadata")
    name = str(meta.get("name") or "?")
    labels = _map(meta, "labels")
    status = _map(node, "status")
    allocatable = _map(status, "allocatable")
    source = f"Node {name}"
    found: list[NodeGpus] = []
    problems: list[EntryProblem] = []
    for vendor in GPU_VENDORS:
        product = labels.get(f"{vendor}/gpu.product")
        raw_count = allocatable.get(f"{vendor}/gpu")
        if not product:
            if raw_count not in (None, "0", 0):
                problems.append(
                    EntryProblem(
                        source,
                        "",
                        f"metadata.labels[{vendor}/gpu.product]",
                        f"missing; its {raw_count} allocatable {vendor}/gpu are not counted",
                    )
                )
            continue
        if raw_count is None:
            problems.append(
                EntryProblem(source, "", f"status.allocatable[{vendor}/gpu]", "missing")
            )
            continue
        try:
            count = _count(raw_count)
        except ValueError as error:
            problems.append(
                EntryProblem(source, "", f"status.allocatable[{vendor}/gpu]", str(error))
            )
            continue
        memory: int | None = None
        raw_memory = labels.get(f"{vendor}/gpu.memory")
        if raw_memory is not None:
            try:
                memory = _count(raw_memory)
            except ValueError:
                problems.append(
                    EntryProblem(
                        source,
                        "",
                        f"metadata.labels[{vendor}/gpu.memory]",
                        f"{raw_memory!r} is not a whole number of MiB (GPUs still counted)",
                    )
                )
        found.append(NodeGpus(name, vendor, str(product), count, memory))
    return found, problems


class Deployment(_Shape):
    """What the adapter needs of a Deployment: desired and ready replicas."""

    namespace: str
    name: str
    replicas: int = Field(1, ge=0, description="spec.replicas (API default 1)")
    ready_replicas: int = Field(0, ge=0, description="status.readyReplicas")


def _replica_field(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ShapeError(f"{field}: must be a non-negative integer, got {value!r}")
    return value


def parse_deployment(obj: Mapping[str, Any]) -> Deployment:
    """Raises ShapeError naming the bad field."""
    meta = _map(obj, "metadata")
    spec = _map(obj, "spec")
    status = _map(obj, "status")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ShapeError("metadata.name: required field is missing")
    return Deployment(
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        replicas=_replica_field(spec.get("replicas"), "spec.replicas", 1),
        ready_replicas=_replica_field(status.get("readyReplicas"), "status.readyReplicas", 0),
    )


# ---------------------------------------------------------------- trimming for caches


def slim_object(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only what the adapter reads, so a cache of Nodes/Deployments stays small.

    VariantAutoscalings and ConfigMaps are kept whole (minus managedFields).
    """
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    if kind == "Node":
        status = obj.get("status") or {}
        return {
            "kind": "Node",
            "metadata": {k: meta[k] for k in ("name", "labels", "resourceVersion") if k in meta},
            "status": {"allocatable": dict(status.get("allocatable") or {})},
        }
    if kind == "Deployment":
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        keep = ("name", "namespace", "labels", "resourceVersion", "generation")
        return {
            "kind": "Deployment",
            "metadata": {k: meta[k] for k in keep if k in meta},
            "spec": {k: spec[k] for k in ("replicas",) if k in spec},
            "status": {k: status[k] for k in ("replicas", "readyReplicas") if k in status},
        }
    return {**obj, "metadata": meta}


# ---------------------------------------------------------------- the cluster as read

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything the adapter reads from Kubernetes at one moment, as raw (slimmed) JSON.

    Objects stay raw so that a malformed VA is reported by the assembler with a reason
    instead of vanishing in the cache. Sources never mutate an object once it is in a
    snapshot (updates replace it), so a snapshot can be shared between threads; callers
    must not mutate it either.
    """

    variant_autoscalings: Mapping[ObjectKey, Mapping[str, Any]]
    config_maps: Mapping[str, Mapping[str, Any]]  # by name, from `config_namespace`
    nodes: Mapping[str, Mapping[str, Any]]
    deployments: Mapping[ObjectKey, Mapping[str, Any]]
    config_namespace: str = DEFAULT_CONFIG_NAMESPACE

    def config_data(self, name: str) -> Mapping[str, Any] | None:
        """A ConfigMap's `data`, or None when the ConfigMap does not exist."""
        found = self.config_maps.get(name)
        if found is None:
            return None
        return _map(found, "data")
