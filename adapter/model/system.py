"""The optimizer-light SystemSpec: the optimizer's whole input as one JSON document.

Field names and units are the reference's (optimizer-light v0.3.0), so that
`wva-adapter optimize` reads the reference's problem files unchanged:
arrivalRate is requests/minute, avgLength output tokens per request, alpha/beta
milliseconds, slo-itl and slo-ttw milliseconds, slo-tps tokens/second.

Parsing is per entry: one malformed accelerator, model, class or server is reported
as a `Problem` naming it and the field, and every other entry is still usable.

Service classes come in two shapes, both read into the same `ServiceClassSpec`, so a
problem gives identical results in either (see `_parse_service_classes`):
- flat, one entry per (class, model): `{name, model, priority, slo-itl, slo-ttw,
  slo-tps}`. This is what optimizer-light v0.3.0 reads and what the tutorial's
  controller logged, so its logged SystemSpecs can be replayed as they are;
- nested, one entry per class: `{name, priority, modelTargets: [{model, slo-itl,
  slo-ttw, slo-tps}]}`, the newest shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# in adapter.defaults: `wva-adapter --help` lists them without importing this module
from adapter.defaults import SATURATION_POLICIES as SATURATION_POLICIES

SaturationPolicy = Literal["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"]


class _Shape(BaseModel):
    """External shapes: immutable; unknown fields tolerated (reference files carry extras)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


FLOAT32_MAX = 3.4028234663852886e38


def _finite(value: float) -> float:
    """The optimizer computes in float32, as the reference: larger numbers cannot be used."""
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{value:g} is out of range (at most {FLOAT32_MAX:.7g})")
    return value


def _optional_finite(value: float | None) -> float | None:
    return None if value is None else _finite(value)


class PowerSpec(_Shape):
    idle: float = 0
    full: float = 0
    mid_power: float = Field(0, alias="midPower")
    mid_util: float = Field(0, alias="midUtil")


class AcceleratorSpec(_Shape):
    """One accelerator offering: `multiplicity` cards of `type` sold at `cost` per unit."""

    name: str = Field(min_length=1)
    type: str = Field(min_length=1, description="accelerator type, the unit of capacity")
    multiplicity: int = Field(1, ge=1, description="cards of `type` per accelerator unit")
    mem_size: float = Field(0, ge=0, alias="memSize")
    mem_bw: float = Field(0, ge=0, alias="memBW")
    power: PowerSpec = PowerSpec()
    cost: float = Field(ge=0, description="cost per accelerator unit")

    _check_cost = field_validator("cost")(_finite)


class ModelPerfSpec(_Shape):
    """Decode performance of one model on one accelerator: ITL(batch) = alpha + beta * batch."""

    name: str = Field(min_length=1, description="model name")
    acc: str = Field(min_length=1, description="accelerator name")
    acc_count: int = Field(1, ge=1, alias="accCount", description="accelerator units per replica")
    alpha: float = Field(ge=0, description="ms per decode step at batch 0")
    beta: float = Field(ge=0, description="ms per decode step per request in the batch")
    max_batch_size: int = Field(ge=1, alias="maxBatchSize")
    at_tokens: int | None = Field(
        None, ge=1, alias="atTokens", description="tokens/request at which maxBatchSize holds"
    )

    _check_alpha = field_validator("alpha", "beta")(_finite)

    @model_validator(mode="after")
    def _positive_step(self) -> ModelPerfSpec:
        if self.alpha + self.beta <= 0:
            raise ValueError("alpha and beta are both 0: a decode step would take no time")
        return self


class ModelTarget(_Shape):
    model: str = Field(min_length=1)
    slo_itl: float = Field(0, ge=0, alias="slo-itl", description="mean inter-token latency, ms")
    slo_ttw: float = Field(0, ge=0, alias="slo-ttw", description="P95 queueing wait, ms")
    slo_tps: float = Field(0, ge=0, alias="slo-tps", description="throughput target, tokens/s")
    slo_attainment: float | None = Field(
        None,
        gt=0,
        lt=100,
        alias="slo-attainment",
        description="% of requests within both SLOs to size for (not the reference's)",
    )

    _check = field_validator("slo_itl", "slo_ttw", "slo_tps")(_finite)


class ServiceClassSpec(_Shape):
    """A service class: its priority and the SLO targets of each model served in it.

    The nested (newest) shape of an entry, and the one form the optimizer uses: flat
    entries are grouped into it by `_parse_service_classes`.
    """

    name: str = Field(min_length=1)
    priority: int = Field(0, description="lower is more important; negative counts as 0")
    model_targets: tuple[ModelTarget, ...] = Field((), alias="modelTargets")

    @field_validator("priority")
    @classmethod
    def _clamp_priority(cls, value: int) -> int:
        return max(value, 0)

    def target_for(self, model: str) -> ModelTarget | None:
        for target in self.model_targets:
            if target.model == model:
                return target
        return None


class FlatServiceClassEntry(_Shape):
    """One (class, model) pair in the flat shape of optimizer-light v0.3.0.

    The tutorial's controller logged its SystemSpec in this shape, one entry per
    (class, model) with the class's priority repeated in each. It is read only to be
    grouped into a `ServiceClassSpec`; the SLO fields are validated as `ModelTarget`'s.
    """

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    priority: int = Field(0, description="lower is more important; negative counts as 0")
    slo_itl: float = Field(0, ge=0, alias="slo-itl", description="mean inter-token latency, ms")
    slo_ttw: float = Field(0, ge=0, alias="slo-ttw", description="P95 queueing wait, ms")
    slo_tps: float = Field(0, ge=0, alias="slo-tps", description="throughput target, tokens/s")
    slo_attainment: float | None = Field(
        None,
        gt=0,
        lt=100,
        alias="slo-attainment",
        description="% of requests within both SLOs to size for (not the reference's)",
    )

    _check = field_validator("slo_itl", "slo_ttw", "slo_tps")(_finite)

    @field_validator("priority")
    @classmethod
    def _clamp_priority(cls, value: int) -> int:
        return max(value, 0)

    def target(self) -> ModelTarget:
        return ModelTarget(
            model=self.model, slo_itl=self.slo_itl, slo_ttw=self.slo_ttw, slo_tps=self.slo_tps
        )


class LoadSpec(_Shape):
    arrival_rate: float = Field(0, ge=0, alias="arrivalRate", description="requests per minute")
    avg_length: int = Field(0, ge=0, alias="avgLength", description="output tokens per request")
    arrival_cov: float = Field(0, ge=0, alias="arrivalCOV")
    service_cov: float = Field(0, ge=0, alias="serviceCOV")

    _check = field_validator("arrival_rate", "arrival_cov", "service_cov")(_finite)


class AllocationData(_Shape):
    accelerator: str = ""
    num_replicas: int = Field(0, ge=0, alias="numReplicas")
    max_batch: int = Field(0, ge=0, alias="maxBatch")
    cost: float = Field(0, ge=0)
    itl_average: float = Field(0, ge=0, alias="itlAverage")
    wait_average: float = Field(0, ge=0, alias="waitAverage")
    load: LoadSpec = LoadSpec()

    _check = field_validator("cost", "itl_average", "wait_average")(_finite)


class ServerSpec(_Shape):
    """A variant to size: one model of one service class, with its measured load."""

    name: str = Field(min_length=1)
    service_class: str = Field(min_length=1, alias="class")
    model: str = Field(min_length=1)
    keep_accelerator: bool = Field(False, alias="keepAccelerator")
    min_num_replicas: int = Field(0, ge=0, alias="minNumReplicas")
    # not in optimizer-light v0.3.0: a VariantAutoscaling's spec.maxReplicas and
    # spec.variantCost (the newer upstream shape), absent from the reference's documents
    max_num_replicas: int = Field(
        0, ge=0, alias="maxNumReplicas", description="0: no upper bound; else a hard cap"
    )
    replica_cost: float | None = Field(
        None,
        ge=0,
        alias="replicaCost",
        description="cost of one replica; None: the accelerator's cost x the model's accCount",
    )
    max_batch_size: int = Field(0, ge=0, alias="maxBatchSize", description="0: derive from profile")
    current_alloc: AllocationData = Field(AllocationData(), alias="currentAlloc")
    desired_alloc: AllocationData = Field(AllocationData(), alias="desiredAlloc")

    _check_cost = field_validator("replica_cost")(_optional_finite)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ServerSpec:
        if 0 < self.max_num_replicas < self.min_num_replicas:
            raise ValueError(
                f"minNumReplicas {self.min_num_replicas} is above maxNumReplicas"
                f" {self.max_num_replicas}"
            )
        return self

    @property
    def load(self) -> LoadSpec:
        return self.current_alloc.load


class OptimizerSpec(_Shape):
    unlimited: bool = False
    heterogeneous: bool = Field(False, description="accepted for compatibility; no effect")
    saturation_policy: str = Field("None", alias="saturationPolicy")


class AcceleratorCount(_Shape):
    type: str = Field(min_length=1)
    count: int = Field(ge=0)


@dataclass(frozen=True, slots=True)
class Problem:
    """A rejected input entry: which object, which field, and why."""

    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "field": self.field, "message": self.message}


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """A validated system: only entries that passed validation, in input order."""

    accelerators: tuple[AcceleratorSpec, ...]
    models: tuple[ModelPerfSpec, ...]
    service_classes: tuple[ServiceClassSpec, ...]
    servers: tuple[ServerSpec, ...]
    optimizer: OptimizerSpec
    capacity: tuple[AcceleratorCount, ...]


@dataclass(frozen=True, slots=True)
class ParsedSystem:
    spec: SystemSpec
    problems: tuple[Problem, ...]
    # servers rejected by validation, by name (for reporting them as unsolved)
    rejected_servers: tuple[str, ...] = ()


class SystemFormatError(ValueError):
    """The document as a whole cannot be read (not an object, a section of the wrong type)."""


_M = TypeVar("_M", bound=_Shape)


def _describe(error: ValidationError) -> list[tuple[str, str]]:
    out = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(entry)"
        message = item["msg"]
        if item["type"] == "missing":
            message = "required field is missing"
        out.append((loc, message))
    return out


def _entry_name(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping):
        name = raw.get("name")
        if isinstance(name, str) and name:
            acc = raw.get("acc")
            return f"{name}/{acc}" if isinstance(acc, str) else name
    return f"#{index}"


def _section(doc: Mapping[str, Any], outer: str, inner: str) -> list[Any]:
    section = doc.get(outer)
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise SystemFormatError(f"{outer}: expected an object with a {inner!r} list")
    entries = section.get(inner)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SystemFormatError(f"{outer}.{inner}: expected a list")
    return entries


def _parse_entry(
    raw: Any, index: int, shape: type[_M], kind: str, path: str, problems: list[Problem]
) -> _M | None:
    try:
        return shape.model_validate(raw)
    except ValidationError as error:
        name = _entry_name(raw, index)
        for loc, message in _describe(error):
            problems.append(Problem(kind, name, f"{path}[{index}].{loc}", message))
        return None


def _parse_entries(
    entries: Sequence[Any], shape: type[_M], kind: str, path: str, problems: list[Problem]
) -> list[_M]:
    parsed: list[_M] = []
    for index, raw in enumerate(entries):
        entry = _parse_entry(raw, index, shape, kind, path, problems)
        if entry is not None:
            parsed.append(entry)
    return parsed


def _unique(
    items: Iterable[_M], ident: Callable[[_M], str], kind: str, problems: list[Problem]
) -> list[_M]:
    """Drop later entries with an identity already seen, reporting each."""
    seen: set[str] = set()
    kept: list[_M] = []
    for item in items:
        name = ident(item)
        if name in seen:
            problems.append(Problem(kind, name, "name", "duplicate entry; the first one is used"))
            continue
        seen.add(name)
        kept.append(item)
    return kept


_FLAT_KEYS = frozenset(("model", "slo-itl", "slo-ttw", "slo-tps", "slo_itl", "slo_ttw", "slo_tps"))
_NESTED_KEYS = frozenset(("modelTargets", "model_targets"))
_CLASSES = "serviceClassData.serviceClasses"
_DUPLICATE = "duplicate entry; the first one is used"


@dataclass(slots=True)
class _ClassGroup:
    """A service class being assembled from its entries (see `_parse_service_classes`)."""

    spec: ServiceClassSpec  # name and priority; targets are collected in `targets`
    first_index: int
    flat: bool
    targets: list[ModelTarget]
    conflict: bool = False
    models: set[str] = field(default_factory=set)  # of `targets`: a set, for 1000s of models

    def __post_init__(self) -> None:
        self.models.update(target.model for target in self.targets)

    def add_target(self, target: ModelTarget, field: str, problems: list[Problem]) -> None:
        """One target per (class, model): a repeated model is dropped, like any duplicate."""
        if target.model in self.models:
            problems.append(
                Problem("serviceClass", f"{self.spec.name}/{target.model}", field, _DUPLICATE)
            )
        else:
            self.targets.append(target)
            self.models.add(target.model)


def _parse_service_classes(
    entries: Sequence[Any], problems: list[Problem]
) -> tuple[list[ServiceClassSpec], dict[str, str]]:
    """Read `serviceClassData.serviceClasses` in either shape into one class per name.

    Returns the usable classes, in the order their names first appear, and the classes
    refused as a whole, by name, with the reason (for the servers that use them).

    An entry with `model` or a top-level `slo-*` field is flat, one with `modelTargets`
    nested; an entry with both is refused, since which SLOs hold would be a guess. The
    two shapes may be mixed in one document because each class name is defined in one
    shape only, so no mix is ambiguous:
    - flat entries with the same name are grouped into one class, one target per entry,
      and must give the same priority (compared as the solver uses it: absent is 0,
      negative counts as 0). A class whose entries disagree is refused as a whole, and
      named. optimizer-light v0.3.0 silently keeps the first entry's priority; we do not
      guess, because the priority decides who is served when capacity is short;
    - a nested entry is a whole class: a later entry of either shape with its name is a
      duplicate, and so is a nested entry for a name that flat entries already define;
    - a repeated (class, model) pair, within one modelTargets list or across flat
      entries, keeps the first target, like every other duplicate in the document.
    Both shapes thus give equal `ServiceClassSpec`s, hence identical solutions.
    """
    groups: dict[str, _ClassGroup] = {}
    for index, raw in enumerate(entries):
        path = f"{_CLASSES}[{index}]"
        keys = set(raw) if isinstance(raw, Mapping) else set()
        is_flat, is_nested = bool(keys & _FLAT_KEYS), bool(keys & _NESTED_KEYS)
        if is_flat and is_nested:
            message = "give either modelTargets or model and slo-* fields, not both"
            problems.append(
                Problem("serviceClass", _entry_name(raw, index), f"{path}.modelTargets", message)
            )
            continue
        if not is_flat:
            nested = _parse_entry(raw, index, ServiceClassSpec, "serviceClass", _CLASSES, problems)
            if nested is None:
                continue
            if nested.name in groups:
                problems.append(Problem("serviceClass", nested.name, "name", _DUPLICATE))
                continue
            group = _ClassGroup(nested, index, flat=False, targets=[])
            groups[nested.name] = group
            for position, target in enumerate(nested.model_targets):
                group.add_target(target, f"{path}.modelTargets[{position}].model", problems)
            continue
        flat = _parse_entry(raw, index, FlatServiceClassEntry, "serviceClass", _CLASSES, problems)
        if flat is None:
            continue
        existing = groups.get(flat.name)
        if existing is None:
            spec = ServiceClassSpec(name=flat.name, priority=flat.priority)
            groups[flat.name] = _ClassGroup(spec, index, flat=True, targets=[flat.target()])
        elif not existing.flat:
            problems.append(Problem("serviceClass", flat.name, "name", _DUPLICATE))
        elif flat.priority != existing.spec.priority:
            given = "" if "priority" in flat.model_fields_set else " (not given)"
            problems.append(
                Problem(
                    "serviceClass",
                    flat.name,
                    f"{path}.priority",
                    f"priority {flat.priority}{given} differs from priority "
                    f"{existing.spec.priority} in {_CLASSES}[{existing.first_index}]: the "
                    "entries of one class must agree; the class is not used",
                )
            )
            existing.conflict = True
        else:
            existing.add_target(flat.target(), f"{path}.model", problems)

    classes = [
        group.spec.model_copy(update={"model_targets": tuple(group.targets)})
        for group in groups.values()
        if not group.conflict
    ]
    refused = {
        name: "its entries give different priorities"
        for name, group in groups.items()
        if group.conflict
    }
    return classes, refused


def parse_system(document: Any) -> ParsedSystem:
    """Validate a SystemSpec document entry by entry.

    Accepts both the bare spec and the reference's `{"system": {...}}` wrapper.
    Raises SystemFormatError only when the document's structure is unusable.
    """
    if isinstance(document, Mapping) and isinstance(document.get("system"), Mapping):
        document = document["system"]
    if not isinstance(document, Mapping):
        raise SystemFormatError("the system document must be a JSON object")

    problems: list[Problem] = []
    accelerators = _unique(
        _parse_entries(
            _section(document, "acceleratorData", "accelerators"),
            AcceleratorSpec,
            "accelerator",
            "acceleratorData.accelerators",
            problems,
        ),
        lambda a: a.name,
        "accelerator",
        problems,
    )
    models = _parse_entries(
        _section(document, "modelData", "models"),
        ModelPerfSpec,
        "model",
        "modelData.models",
        problems,
    )
    classes, refused_classes = _parse_service_classes(
        _section(document, "serviceClassData", "serviceClasses"), problems
    )
    raw_servers = _section(document, "serverData", "servers")
    servers = _parse_entries(raw_servers, ServerSpec, "server", "serverData.servers", problems)
    capacity = _parse_entries(
        _section(document, "capacityData", "count"),
        AcceleratorCount,
        "capacity",
        "capacityData.count",
        problems,
    )

    optimizer_section = document.get("optimizerData") or {}
    if not isinstance(optimizer_section, Mapping):
        raise SystemFormatError("optimizerData: expected an object with an 'optimizer' object")
    try:
        optimizer = OptimizerSpec.model_validate(optimizer_section.get("optimizer") or {})
    except ValidationError as error:
        for loc, message in _describe(error):
            problems.append(
                Problem("optimizer", "optimizer", f"optimizerData.optimizer.{loc}", message)
            )
        optimizer = OptimizerSpec()
    if optimizer.saturation_policy not in SATURATION_POLICIES:
        problems.append(
            Problem(
                "optimizer",
                "optimizer",
                "optimizerData.optimizer.saturationPolicy",
                f"unknown policy {optimizer.saturation_policy!r}; using 'None' "
                f"(known: {', '.join(SATURATION_POLICIES)})",
            )
        )
        optimizer = optimizer.model_copy(update={"saturation_policy": "None"})

    # model perf entries must name a known accelerator
    known_accelerators = {a.name for a in accelerators}
    valid_models: list[ModelPerfSpec] = []
    for perf in _unique(models, lambda m: f"{m.name}/{m.acc}", "model", problems):
        if perf.acc not in known_accelerators:
            problems.append(
                Problem(
                    "model",
                    f"{perf.name}/{perf.acc}",
                    "acc",
                    f"unknown accelerator {perf.acc!r} (not in acceleratorData)",
                )
            )
            continue
        valid_models.append(perf)

    # servers must reference a class with a target for their model, and a model with data
    by_class = {c.name: c for c in classes}
    targeted = {(c.name, t.model) for c in classes for t in c.model_targets}
    models_with_perf = {m.name for m in valid_models}
    valid_servers: list[ServerSpec] = []
    rejected: list[str] = []
    seen_servers: set[str] = set()
    for server in servers:
        reason: tuple[str, str] | None = None
        service_class = by_class.get(server.service_class)
        if server.name in seen_servers:
            reason = ("name", "duplicate server name; the first one is used")
        elif server.service_class in refused_classes:
            reason = (
                "class",
                f"service class {server.service_class!r} is not used: "
                f"{refused_classes[server.service_class]}",
            )
        elif service_class is None:
            reason = ("class", f"unknown service class {server.service_class!r}")
        elif (server.service_class, server.model) not in targeted:
            reason = (
                "model",
                f"service class {server.service_class!r} has no SLO target for model "
                f"{server.model!r}",
            )
        elif server.model not in models_with_perf:
            reason = ("model", f"no performance data for model {server.model!r} on any accelerator")
        elif (
            server.keep_accelerator
            and server.current_alloc.accelerator
            and server.current_alloc.accelerator not in known_accelerators
        ):
            reason = (
                "currentAlloc.accelerator",
                f"unknown accelerator {server.current_alloc.accelerator!r} with keepAccelerator",
            )
        if reason is None:
            seen_servers.add(server.name)
            valid_servers.append(server)
        else:
            problems.append(Problem("server", server.name, reason[0], reason[1]))
            if server.name not in seen_servers:
                rejected.append(server.name)
    # servers that failed field validation are unsolved too (by name, when they have one)
    solved_names = {s.name for s in valid_servers}
    for problem in problems:
        if (
            problem.kind == "server"
            and not problem.name.startswith("#")
            and problem.name not in solved_names
            and problem.name not in rejected
        ):
            rejected.append(problem.name)

    spec = SystemSpec(
        accelerators=tuple(accelerators),
        models=tuple(valid_models),
        service_classes=tuple(classes),
        servers=tuple(valid_servers),
        optimizer=optimizer,
        capacity=tuple(capacity),
    )
    return ParsedSystem(spec=spec, problems=tuple(problems), rejected_servers=tuple(rejected))
