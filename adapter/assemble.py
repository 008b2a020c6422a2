"""Turn a ClusterSnapshot and a LoadReport into the optimizer's SystemSpec document.

Pure: no I/O. Follows what the reference controller built (its log in the tutorial
prints the result): one server `<va>:<namespace>` per VariantAutoscaling, the class found
for its model, `keepAccelerator: true`, the profile entry of its labelled accelerator,
the current allocation from the Deployment and the measured load.

A VA that cannot be assembled (missing label, no cost, no profile entry, no SLO, no
Deployment, malformed fields...) is left out with a reason and a log line naming it;
all other VAs are assembled exactly as if it were not there. Unknown load is such a
reason too (no series for a model whose Deployment has replicas, a pod that failed to
scrape, arrivals without a request length, a NaN or negative value, a missing in-flight
gauge): it is never sized as zero load. No series for a model scaled to zero is zero load.

Objects that disagree are never settled by which one sorts or is listed first: two VAs
declaring different profiles for one model and accelerator each keep their own
(`_model_names`), and keys of `service-classes-config` defining one class are merged,
the stricter target winning (`merge_service_classes`).

One cycle runs in stages: read the ConfigMaps and Nodes (`_read_config`), check and
measure each VA on its own (`_assemble_variants`, which resolves its class and its load),
then register the profiles and build the document (`_system_document`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.model.kube import (
    ACCELERATOR_COSTS_CONFIGMAP,
    ACCELERATOR_LABEL,
    SERVICE_CLASSES_CONFIGMAP,
    AcceleratorCost,
    AcceleratorProfile,
    ClusterSnapshot,
    Deployment,
    EntryProblem,
    ServiceClass,
    ShapeError,
    SloClassRef,
    VariantAutoscaling,
    merge_service_classes,
    object_ref,
    parse_accelerator_costs,
    parse_deployment,
    parse_node_gpus,
    parse_service_classes,
    parse_variant_autoscaling,
)
from adapter.vllm_metrics import (
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_GENERATION_TOKENS,
)

log = logging.getLogger(__name__)

_Parsed = TypeVar("_Parsed")


class ParsedObjects:
    """Parsed VAs and Deployments, remembered from one cycle to the next.

    Validating 5000 VAs took half a second of every cycle. A snapshot's objects are
    replaced when they change and never mutated (`ClusterSnapshot`), so the raw
    object's identity says whether its parse still holds; each entry keeps its raw
    object, so that identity cannot be reused. A parse error is remembered too.
    `build_system` sweeps it at the end of each call: objects that call did not look at
    (deleted or replaced) are dropped.
    """

    def __init__(self) -> None:
        self._kept: dict[int, tuple[object, object]] = {}
        self._seen: dict[int, tuple[object, object]] = {}

    def parse(
        self, raw: Mapping[str, Any], parser: Callable[[Mapping[str, Any]], _Parsed]
    ) -> _Parsed:
        """`parser(raw)`, or what it gave for this very object before."""
        entry = self._seen.get(id(raw)) or self._kept.get(id(raw))
        if entry is None or entry[0] is not raw:
            try:
                entry = (raw, parser(raw))
            except ShapeError as error:
                entry = (raw, error)
        self._seen[id(raw)] = entry
        result = entry[1]
        if isinstance(result, ShapeError):
            raise result
        return result  # type: ignore[return-value]  # stored by this very parser

    def sweep(self) -> None:
        self._kept, self._seen = self._seen, {}

    def __len__(self) -> int:
        return len(self._kept)


def _parse_fresh(raw: Mapping[str, Any], parser: Callable[[Mapping[str, Any]], _Parsed]) -> _Parsed:
    return parser(raw)


@dataclass(frozen=True, slots=True)
class AssemblySettings:
    min_num_replicas: int = 1  # 0 allows scale to zero
    unlimited: bool = False  # False: capacity-limited by the nodes' GPUs
    saturation_policy: str = "None"
    current_max_batch: int = 256  # the reference hard-codes the current allocation's maxBatch
    # the share of requests within both SLOs that each variant is sized for, unless its
    # class sets `slo-attainment`; None: the reference's rule (mean ITL within the SLO)
    attainment: float | None = 0.99
    # size for the measured arrival rate x (1 + headroom) (`SizingRule.headroom`)
    headroom: float = 0.0


@dataclass(frozen=True, slots=True)
class VAProblem:
    """A VariantAutoscaling left out of this cycle, and why."""

    namespace: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"VariantAutoscaling {self.namespace}/{self.name}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SloChoice:
    """Which service class a VA got its SLO from, and how it was found."""

    class_name: str
    key: str  # the ConfigMap key(s) its target comes from, ", "-joined
    slo_itl: float
    slo_ttw: float
    via: str  # "sloClassRef" or "model"
    slo_attainment: float | None = None  # the class's share to size for, %


@dataclass(frozen=True, slots=True)
class Served:
    """What an assembled VA declares and what its pods showed this cycle: what its
    profile is learned from (`adapter.learning`)."""

    declared: AcceleratorProfile  # the VA's own profile for its accelerator
    slo_itl_ms: float
    replicas: int  # the Deployment's spec.replicas
    ready_replicas: int  # its status.readyReplicas: the pods serving
    load: ModelLoad


@dataclass(frozen=True, slots=True)
class Assembly:
    system: dict[str, Any]  # SystemSpec JSON: adapter.model.system.parse_system reads it
    servers: Mapping[str, VariantAutoscaling]  # server name -> the VA it sizes
    slo: Mapping[str, SloChoice]  # server name -> where its SLO came from
    problems: tuple[VAProblem, ...]  # VAs left out
    config_problems: tuple[EntryProblem, ...]  # bad ConfigMap entries and Node labels
    served: Mapping[str, Served] = field(default_factory=dict)  # server name -> its pods


def server_name(va: VariantAutoscaling) -> str:
    """The reference's server name: `<va name>:<namespace>`."""
    return f"{va.name}:{va.namespace}"


def _number(value: float) -> float | int:
    """Whole numbers as int, so the document reads like the reference's (cost: 100)."""
    return int(value) if float(value).is_integer() else value


def _measured(value: float | None, digits: int = 2) -> float:
    """A measured value as the reference stored it, two decimals. None (no observation in
    the window, e.g. no completion yet) is 0 as in the reference: these values are only
    shown, never sized on. NaN and negative values never get here (`_usable_load`)."""
    return 0.0 if value is None else round(value, digits)


# ---------------------------------------------------------------- parse objects


@dataclass(frozen=True, slots=True)
class _Config:
    """The cycle's ConfigMaps and Nodes, parsed once for all VAs."""

    namespace: str
    cost_data: Mapping[str, Any] | None
    costs: Mapping[str, AcceleratorCost]
    bad_cost_keys: Mapping[str, str]  # key -> its problem
    class_data: Mapping[str, Any] | None
    classes: Mapping[str, ServiceClass]  # by ConfigMap key, one key each
    merged: Mapping[str, ServiceClass]  # by class name: what the optimizer is given
    class_problems: tuple[EntryProblem, ...]  # invalid entries (merging drops nothing)
    capacity: Mapping[str, int]  # GPU product -> count
    problems: tuple[EntryProblem, ...]  # every ConfigMap and Node problem


def _read_config(snapshot: ClusterSnapshot) -> _Config:
    """ConfigMaps and Nodes entry by entry: a bad entry is a problem, logged, not a failure."""
    namespace = snapshot.config_namespace
    cost_data = snapshot.config_data(ACCELERATOR_COSTS_CONFIGMAP)
    class_data = snapshot.config_data(SERVICE_CLASSES_CONFIGMAP)
    costs, cost_problems = parse_accelerator_costs(cost_data, namespace)
    classes, class_problems = parse_service_classes(class_data, namespace)
    merged, merge_problems = merge_service_classes(classes, namespace)
    capacity, node_problems = _capacity(snapshot)
    problems = (*cost_problems, *class_problems, *merge_problems, *node_problems)
    for problem in problems:
        log.warning("%s", problem)
    return _Config(
        namespace=namespace,
        cost_data=cost_data,
        costs=costs,
        bad_cost_keys={p.key: str(p) for p in cost_problems},
        class_data=class_data,
        classes=classes,
        merged=merged,
        class_problems=tuple(class_problems),
        capacity=capacity,
        problems=problems,
    )


def _capacity(snapshot: ClusterSnapshot) -> tuple[dict[str, int], list[EntryProblem]]:
    capacity: dict[str, int] = {}
    problems: list[EntryProblem] = []
    for node in snapshot.nodes.values():
        gpus, node_problems = parse_node_gpus(node)
        problems.extend(node_problems)
        for gpu in gpus:
            capacity[gpu.product] = capacity.get(gpu.product, 0) + gpu.count
    return capacity, problems


class _Skip(Exception):
    """Why a VA is left out of this cycle: raised by the checks of `_variant`."""


@dataclass(frozen=True, slots=True)
class _Variant:
    """A VA that passed every check: what its server and model entries are built from."""

    va: VariantAutoscaling
    accelerator: str
    unit: AcceleratorCost
    profile: AcceleratorProfile
    slo: SloChoice
    replicas: int
    load: ModelLoad
    ready: int = 0  # the Deployment's ready replicas
    declared: AcceleratorProfile | None = None  # the VA's profile, if a learned one sizes

    @property
    def server(self) -> str:
        return server_name(self.va)

    @property
    def model(self) -> str:
        return self.va.spec.model_id


class _Parse(Protocol):
    """`ParsedObjects.parse`, or a fresh parse: how VAs and Deployments are parsed."""

    def __call__(
        self, raw: Mapping[str, Any], parser: Callable[[Mapping[str, Any]], _Parsed]
    ) -> _Parsed: ...


def _assemble_variants(
    snapshot: ClusterSnapshot, loads: LoadReport, config: _Config, parse: _Parse
) -> tuple[list[_Variant], list[VAProblem]]:
    """Every VA checked on its own: one VA's fault never reaches another."""
    variants: list[_Variant] = []
    problems: list[VAProblem] = []
    for (namespace, name), raw in snapshot.variant_autoscalings.items():
        try:
            variants.append(_variant(raw, snapshot, loads, config, parse))
        except _Skip as skip:
            problems.append(VAProblem(namespace, name, str(skip)))
            log.warning("VariantAutoscaling %s/%s skipped: %s", namespace, name, skip)
    return _one_per_deployment(variants, problems)


def _one_per_deployment(
    variants: list[_Variant], problems: list[VAProblem]
) -> tuple[list[_Variant], list[VAProblem]]:
    """VAs sizing the same Deployment (a scaleTargetRef naming another VA's) would give it
    two answers: all of them are left out, whatever their names or listing order."""
    by_target: dict[tuple[str, str], list[_Variant]] = {}
    for v in variants:
        by_target.setdefault((v.va.namespace, v.va.deployment_name()), []).append(v)
    shared = {id(v): key for key, group in by_target.items() if len(group) > 1 for v in group}
    if not shared:
        return variants, problems
    for v in variants:
        if id(v) in shared:
            namespace, target = shared[id(v)]
            names = ", ".join(sorted(o.va.name for o in by_target[namespace, target]))
            reason = (
                f"Deployment {namespace}/{target} is the target of several VariantAutoscalings"
                f" ({names}); one VariantAutoscaling per Deployment, none of them is sized"
            )
            problems.append(VAProblem(namespace, v.va.name, reason))
            log.warning("VariantAutoscaling %s/%s skipped: %s", namespace, v.va.name, reason)
    return [v for v in variants if id(v) not in shared], problems


def _variant(
    raw: Mapping[str, Any],
    snapshot: ClusterSnapshot,
    loads: LoadReport,
    config: _Config,
    parse: _Parse,
) -> _Variant:
    """One VA's checks in a fixed order; raises _Skip with the first that fails."""
    va = _parse_va(raw, parse)
    accelerator = _accelerator(va)
    unit = _unit_cost(accelerator, config)
    profile = va.profile_for(accelerator)
    if profile is None:
        raise _Skip(va.no_profile_reason(accelerator))
    choice = _slo(va, config)
    deployment = _deployment(va, snapshot, parse)
    replicas = deployment.replicas
    load, why_not = _usable_load(loads, va.namespace, va.spec.model_id, replicas)
    if load is None:
        raise _Skip(why_not)
    return _Variant(
        va, accelerator, unit, profile, choice, replicas, load, deployment.ready_replicas
    )


def _parse_va(raw: Mapping[str, Any], parse: _Parse) -> VariantAutoscaling:
    try:
        return parse(raw, parse_variant_autoscaling)
    except ShapeError as error:
        raise _Skip(f"invalid VariantAutoscaling: {error}") from None


def _accelerator(va: VariantAutoscaling) -> str:
    accelerator = va.accelerator_name
    if accelerator is None:
        raise _Skip(f"missing label {ACCELERATOR_LABEL}")
    return accelerator


def _unit_cost(accelerator: str, config: _Config) -> AcceleratorCost:
    unit = config.costs.get(accelerator)
    if unit is not None:
        return unit
    where = f"ConfigMap {config.namespace}/{ACCELERATOR_COSTS_CONFIGMAP}"
    if config.cost_data is None:
        detail = f"{where} not found"
    elif accelerator in config.bad_cost_keys:
        detail = f"its entry is invalid ({config.bad_cost_keys[accelerator]})"
    else:
        detail = f"no key {accelerator!r} in {where}"
    raise _Skip(f"accelerator {accelerator!r} has no unit cost: {detail}")


def _deployment(va: VariantAutoscaling, snapshot: ClusterSnapshot, parse: _Parse) -> Deployment:
    """The VA's Deployment: its spec.scaleTargetRef's, else the one of its name (same
    namespace either way)."""
    try:
        name = va.deployment_name()
    except ShapeError as error:
        raise _Skip(str(error)) from None
    raw = snapshot.deployments.get((va.namespace, name))
    if raw is None:
        ref = " (spec.scaleTargetRef)" if va.spec.scale_target_ref is not None else ""
        raise _Skip(f"Deployment {va.namespace}/{name}{ref} not found")
    try:
        return parse(raw, parse_deployment)
    except ShapeError as error:
        raise _Skip(f"Deployment {object_ref(raw)}: {error}") from None


# ---------------------------------------------------------------- resolve classes


def _slo(va: VariantAutoscaling, config: _Config) -> SloChoice:
    """The VA's SLO, logged (at debug) with how it was found; _Skip when there is none."""
    choice, how = _find_slo(va, config)
    if choice is None:
        where = f"ConfigMap {config.namespace}/{SERVICE_CLASSES_CONFIGMAP}"
        where = f"{where} not found" if config.class_data is None else f"any class of {where}"
        broken = "".join(f"; invalid entry: {p}" for p in config.class_problems)
        raise _Skip(f"model {va.spec.model_id!r} has no SLO in {where} ({how}){broken}")
    log.debug(
        "VariantAutoscaling %s/%s: model %s uses class %s (slo-itl %s, slo-ttw %s) via %s",
        va.namespace,
        va.name,
        va.spec.model_id,
        choice.class_name,
        _number(choice.slo_itl),
        _number(choice.slo_ttw),
        how,
    )
    return choice


def _find_slo(va: VariantAutoscaling, config: _Config) -> tuple[SloChoice | None, str]:
    """Honour sloClassRef when it resolves; else the class listing the model.

    Without a usable sloClassRef the most important class (lowest priority number)
    listing the model wins, then the stricter target (lower slo-tpot, then slo-ttft),
    then the class name: the choice depends on what the classes say, not on the keys
    they are written under. Returns the choice and a note on how it was made (for the log).
    """
    model = va.spec.model_id
    note = "no sloClassRef"
    if va.spec.slo_class_ref is not None:
        choice, note = _slo_by_ref(va.spec.slo_class_ref, model, config)
        if choice is not None:
            return choice, note
    listing = [c for c in config.merged.values() if c.slo_for(model) is not None]
    if not listing:
        return None, note
    best = min(listing, key=lambda c: (c.priority, *_strictness(c, model), c.name))
    return _choice(best, model, config, "model"), f"{note}; found by model"


def _slo_by_ref(ref: SloClassRef, model: str, config: _Config) -> tuple[SloChoice | None, str]:
    """The class the ref's key defines, with the targets of every key defining it."""
    where = f"sloClassRef {ref.name}/{ref.key}"
    if ref.name != SERVICE_CLASSES_CONFIGMAP:
        return None, f"{where}: not the ConfigMap {SERVICE_CLASSES_CONFIGMAP}"
    named = config.classes.get(ref.key)
    if named is None:
        return None, f"{where}: no such (valid) key"
    chosen = config.merged[named.name]
    if chosen.slo_for(model) is None:
        return None, f"{where}: class {chosen.name} has no entry for the model"
    return _choice(chosen, model, config, "sloClassRef"), where


def _strictness(service_class: ServiceClass, model: str) -> tuple[float, float]:
    entry = service_class.slo_for(model)
    assert entry is not None  # only classes listing the model are ranked
    return entry.slo_tpot, entry.slo_ttft


def _choice(service_class: ServiceClass, model: str, config: _Config, via: str) -> SloChoice:
    """The choice, naming the keys its target comes from: of a class merged from several
    keys, those whose entry for the model gives the ITL or the TTFT target used."""
    slo_itl, slo_ttw = _strictness(service_class, model)
    keys = [
        key
        for key, c in config.classes.items()
        if c.name == service_class.name
        and (entry := c.slo_for(model)) is not None
        and (entry.slo_tpot == slo_itl or entry.slo_ttft == slo_ttw)
    ]
    entry = service_class.slo_for(model)
    share = entry.slo_attainment if entry is not None else None
    return SloChoice(service_class.name, ", ".join(sorted(keys)), slo_itl, slo_ttw, via, share)


# ---------------------------------------------------------------- measure load


def _output_length(mean: float) -> int | None:
    """The optimizer's request length: the mean output tokens truncated, as the reference
    does, or None below one token (a length of 0 sizes any rate at one replica)."""
    if not math.isfinite(mean) or mean < 1:
        return None
    return int(mean)


# what assembly reads of a ModelLoad; any of them NaN, infinite or negative is no value
_READ = ("arrival_rate_rpm", "avg_output_tokens", "itl_ms", "queue_time_ms", "running", "waiting")
_IN_FLIGHT = (("running", NUM_REQUESTS_RUNNING.value), ("waiting", NUM_REQUESTS_WAITING.value))


def _usable_load(
    loads: LoadReport, namespace: str, model: str, replicas: int
) -> tuple[ModelLoad | None, str]:
    """The load to size a VA on, or None and why it must not be sized this cycle.

    Unknown load is never read as zero load: a model whose pods answered only in part,
    or not at all while its Deployment has replicas, a value that is NaN, infinite or
    negative, or a missing in-flight gauge (without it, no rate cannot be told from no
    traffic) leaves the VA unsolved (answered UNAVAILABLE, so KEDA's fallback and the
    HPA hold the current scale). No series for a model scaled to zero is an idle model.
    """
    partial = loads.incomplete.get((namespace, model))
    if partial is not None:
        return None, f"metrics incomplete: {partial}; not sized on a partial load"
    load = loads.find(namespace, model)
    if load is None:
        if replicas > 0:
            why = _why_no_series(loads, namespace)
            return None, (
                f"metrics missing: no vLLM series for model {model} in namespace {namespace}"
                f" while its Deployment has {replicas} replicas ({why}); not sized at zero load"
            )
        idle = ModelLoad(namespace=namespace, model=model, running=0.0, waiting=0.0)
        return idle, ""  # scaled to zero: nothing runs, nothing is in flight
    why_not = _unknown_values(load) or _unsizable(load)
    return (None, why_not) if why_not else (load, "")


def _why_no_series(loads: LoadReport, namespace: str) -> str:
    """The likely cause: the pods there serve other model names (a modelID that is not
    vLLM's --served-model-name leaves a VA inert, llm-d/llm-d#2310), or none answer."""
    others = sorted(loads.served.get(namespace, ()))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return (
            f"the pods in {namespace} serve {shown}: does spec.modelID match vLLM's"
            " --served-model-name?"
        )
    return "pods not ready or not scraped?"


def _unknown_values(load: ModelLoad) -> str:
    """Why the load holds no usable value for something sizing needs, or ""."""
    odd = [
        f"{name}={value!r}"
        for name in _READ
        if (value := getattr(load, name)) is not None and not (math.isfinite(value) and value >= 0)
    ]
    if odd:
        return f"metrics invalid: {', '.join(odd)}; not sized on them"
    missing = [series for name, series in _IN_FLIGHT if getattr(load, name) is None]
    if missing:
        return (
            f"metrics incomplete: no {' or '.join(missing)} series, so the requests in"
            " flight are unknown; not sized as idle"
        )
    return ""


def _unsizable(load: ModelLoad) -> str:
    """Why known values still cannot be sized on, or ""."""
    in_flight = (load.running or 0.0) + (load.waiting or 0.0)
    arrivals = load.arrival_rate_rpm
    if arrivals == 0 and in_flight > 0:
        # e.g. a restarted Prometheus whose rate window has no samples yet: sizing this
        # at zero load would scale a busy service down
        return (
            f"metrics incomplete: {in_flight:g} requests in flight but no completion "
            "rate in the window yet; not sized at zero load"
        )
    if arrivals > 0 and _output_length(load.avg_output_tokens) is None:
        # a request length of 0 makes the optimizer size any rate at one replica
        return (
            "metrics incomplete: arrivals but no mean output length"
            f" ({REQUEST_GENERATION_TOKENS.name}) in the window; not sized"
        )
    return ""


# ---------------------------------------------------------------- register profiles


def _model_names(variants: list[_Variant]) -> dict[str, str]:
    """The model name each server's profile is filed under in the SystemSpec.

    The optimizer knows a profile by (model name, accelerator). Where every VA of a model
    on an accelerator declares the same profile, that is the plain model name, shared
    (the reference's document, the tutorial's log). Where they differ, each VA's profile
    is its own: every one of them gets `<model>@<namespace>/<name>`, so no VA's profile
    is replaced by, or refused for, another's, whatever their names or listing order.
    """
    profiles: dict[tuple[str, str], set[AcceleratorProfile]] = {}
    for v in variants:
        profiles.setdefault((v.model, v.accelerator), set()).add(v.profile)
    return {
        v.server: v.model
        if len(profiles[v.model, v.accelerator]) == 1
        else f"{v.model}@{v.va.namespace}/{v.va.name}"
        for v in variants
    }


def _model_docs(variants: list[_Variant], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One entry per (model name, accelerator); only the accelerator each VA runs on:
    servers keep their accelerator, so the optimizer never reads the others."""
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for v in variants:
        name = names[v.server]
        if (name, v.accelerator) not in docs:
            docs[name, v.accelerator] = _model_doc(name, v.profile)
    return list(docs.values())


def _model_doc(name: str, profile: AcceleratorProfile) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "acc": profile.acc,
        "accCount": profile.acc_count,
        "alpha": profile.alpha,
        "beta": profile.beta,
        "maxBatchSize": profile.max_batch_size,
    }
    if profile.at_tokens is not None:
        doc["atTokens"] = profile.at_tokens
    return doc


def _class_docs(
    config: _Config, variants: list[_Variant], names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The merged classes; a VA filed under its own model name gets its own target, the
    SLO it was given (`SloChoice`), in its class."""
    own: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        if names[v.server] != v.model:
            own.setdefault(v.slo.class_name, []).append(
                _target_doc(names[v.server], v.slo.slo_itl, v.slo.slo_ttw, v.slo.slo_attainment)
            )
    return [
        {
            "name": c.name,
            "priority": c.priority,
            "modelTargets": [
                *(_target_doc(e.model, e.slo_tpot, e.slo_ttft, e.slo_attainment) for e in c.data),
                *own.get(c.name, []),
            ],
        }
        for c in config.merged.values()
    ]


def _target_doc(
    model: str, slo_itl: float, slo_ttw: float, share: float | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": model,
        "slo-itl": _number(slo_itl),
        "slo-ttw": _number(slo_ttw),
        "slo-tps": 0,
    }
    if share is not None:
        doc["slo-attainment"] = _number(share)
    return doc


# ---------------------------------------------------------------- build servers


def _server_doc(v: _Variant, model_name: str, settings: AssemblySettings) -> dict[str, Any]:
    # the newer shape's bounds and cost per replica (absent: the adapter's, the unit cost)
    floor, ceiling = v.va.replica_bounds(settings.min_num_replicas)
    per_replica = v.va.spec.variant_cost
    return {
        "name": v.server,
        "class": v.slo.class_name,
        "model": model_name,
        "keepAccelerator": True,
        "minNumReplicas": floor,
        **({} if ceiling is None else {"maxNumReplicas": ceiling}),
        **({} if per_replica is None else {"replicaCost": _number(per_replica)}),
        "maxBatchSize": v.profile.max_batch_size,
        "currentAlloc": {
            "accelerator": v.accelerator,
            "numReplicas": v.replicas,
            "maxBatch": settings.current_max_batch,
            "cost": _number(v.replicas * (v.unit.cost if per_replica is None else per_replica)),
            "itlAverage": _measured(v.load.itl_ms),
            "waitAverage": _measured(v.load.queue_time_ms),
            "load": {
                "arrivalRate": _measured(v.load.arrival_rate_rpm),
                "avgLength": _output_length(v.load.avg_output_tokens) or 0,
            },
        },
    }


def _system_document(
    config: _Config, variants: list[_Variant], settings: AssemblySettings
) -> dict[str, Any]:
    names = _model_names(variants)
    return {
        "acceleratorData": {
            "accelerators": [
                {"name": c.name, "type": c.device, "multiplicity": 1, "cost": _number(c.cost)}
                for c in config.costs.values()
            ]
        },
        "modelData": {"models": _model_docs(variants, names)},
        "serviceClassData": {"serviceClasses": _class_docs(config, variants, names)},
        "serverData": {"servers": [_server_doc(v, names[v.server], settings) for v in variants]},
        "optimizerData": {
            "optimizer": {
                "unlimited": settings.unlimited,
                "saturationPolicy": settings.saturation_policy,
            }
        },
        "capacityData": {
            "count": [{"type": t, "count": n} for t, n in sorted(config.capacity.items())]
        },
    }


def build_system(
    snapshot: ClusterSnapshot,
    loads: LoadReport,
    settings: AssemblySettings | None = None,
    parsed: ParsedObjects | None = None,
    profiles: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> Assembly:
    """The optimizer input for every VA that can be assembled, plus why the others cannot.

    With `parsed`, VAs and Deployments unchanged since an earlier call are not parsed
    again; the result is the same. `profiles`: (alpha, beta) in ms to size a VA with,
    by (namespace, name), in place of its declared ones (a learned profile).
    """
    settings = settings or AssemblySettings()
    parse: _Parse = parsed.parse if parsed is not None else _parse_fresh
    config = _read_config(snapshot)
    variants, problems = _assemble_variants(snapshot, loads, config, parse)
    if profiles:
        variants = [_with_profile(v, profiles.get((v.va.namespace, v.va.name))) for v in variants]
    system = _system_document(config, variants, settings)
    if parsed is not None:
        parsed.sweep()
    return Assembly(
        system=system,
        servers={v.server: v.va for v in variants},
        slo={v.server: v.slo for v in variants},
        problems=tuple(problems),
        config_problems=config.problems,
        served={
            v.server: Served(v.declared or v.profile, v.slo.slo_itl, v.replicas, v.ready, v.load)
            for v in variants
        },
    )


def _with_profile(v: _Variant, profile: tuple[float, float] | None) -> _Variant:
    """`v` sized with `profile` (alpha, beta) instead of its declared one, if given.
    A VA whose profile differs from another's of the same model then gets its own model
    entry (`_model_names`)."""
    if profile is None or profile == (v.profile.alpha, v.profile.beta):
        return v
    alpha, beta = profile
    learned = v.profile.model_copy(update={"alpha": alpha, "beta": beta})
    return replace(v, profile=learned, declared=v.profile)
