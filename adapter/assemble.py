"""Turn a ClusterSnapshot and a LoadReport into the optimizer's SystemSpec document.

Pure: no I/O. Follows what the reference controller built (its log in the tutorial
prints the result): one server `<va>:<namespace>` per VariantAutoscaling, the class found
for its model, `keepAccelerator: true`, the profile entry of its labelled accelerator,
the current allocation from the Deployment and the measured load.

A VA that cannot be assembled (missing label, no cost, no profile entry, no SLO, no
Deployment, malformed fields...) is left out with a reason and a log line naming it;
all other VAs are assembled exactly as if it were not there. Unknown load is such a
reason too (no series for a model whose Deployment has replicas, a pod that failed to
scrape, arrivals without a request length): it is never sized as zero load. No series
for a model scaled to zero is zero load.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from adapter.collect.metrics import LoadReport, ModelLoad
from adapter.model.kube import (
    ACCELERATOR_COSTS_CONFIGMAP,
    ACCELERATOR_LABEL,
    SERVICE_CLASSES_CONFIGMAP,
    AcceleratorCost,
    ClusterSnapshot,
    EntryProblem,
    ServiceClass,
    ShapeError,
    VariantAutoscaling,
    object_ref,
    parse_accelerator_costs,
    parse_deployment,
    parse_node_gpus,
    parse_service_classes,
    parse_variant_autoscaling,
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
    key: str
    slo_itl: float
    slo_ttw: float
    via: str  # "sloClassRef" or "model"


@dataclass(frozen=True, slots=True)
class Assembly:
    system: dict[str, Any]  # SystemSpec JSON: adapter.model.system.parse_system reads it
    servers: Mapping[str, VariantAutoscaling]  # server name -> the VA it sizes
    slo: Mapping[str, SloChoice]  # server name -> where its SLO came from
    problems: tuple[VAProblem, ...]  # VAs left out
    config_problems: tuple[EntryProblem, ...]  # bad ConfigMap entries and Node labels


def server_name(va: VariantAutoscaling) -> str:
    """The reference's server name: `<va name>:<namespace>`."""
    return f"{va.name}:{va.namespace}"


def _number(value: float) -> float | int:
    """Whole numbers as int, so the document reads like the reference's (cost: 100)."""
    return int(value) if float(value).is_integer() else value


def _measured(value: float | None, digits: int = 2) -> float:
    """A metric as the reference stored it: NaN/inf/negative/None -> 0, two decimals."""
    if value is None or not math.isfinite(value) or value < 0:
        return 0.0
    return round(value, digits)


def _find_slo(
    va: VariantAutoscaling, classes: Mapping[str, ServiceClass]
) -> tuple[SloChoice | None, str]:
    """Honour sloClassRef when it resolves; else the class listing the model.

    Fallback order is deterministic: lowest priority number, then ConfigMap key.
    Returns the choice and a note on how it was made (for the log).
    """
    model = va.spec.model_id
    ref = va.spec.slo_class_ref
    note = "no sloClassRef"
    if ref is not None:
        if ref.name != SERVICE_CLASSES_CONFIGMAP:
            note = (
                f"sloClassRef {ref.name}/{ref.key}: not the ConfigMap {SERVICE_CLASSES_CONFIGMAP}"
            )
        elif ref.key not in classes:
            note = f"sloClassRef {ref.name}/{ref.key}: no such (valid) key"
        else:
            chosen = classes[ref.key]
            entry = chosen.slo_for(model)
            if entry is not None:
                choice = SloChoice(
                    chosen.name, ref.key, entry.slo_tpot, entry.slo_ttft, "sloClassRef"
                )
                return choice, f"sloClassRef {ref.name}/{ref.key}"
            note = (
                f"sloClassRef {ref.name}/{ref.key}: class {chosen.name} has no entry for the model"
            )
    candidates = sorted(
        (c for c in classes.values() if c.slo_for(model) is not None),
        key=lambda c: (c.priority, c.key),
    )
    if not candidates:
        return None, note
    best = candidates[0]
    entry = best.slo_for(model)
    assert entry is not None
    return SloChoice(best.name, best.key, entry.slo_tpot, entry.slo_ttft, "model"), (
        f"{note}; found by model"
    )


def _output_length(mean: float) -> int | None:
    """The optimizer's request length: the mean output tokens truncated, as the reference
    does, or None below one token (a length of 0 sizes any rate at one replica)."""
    if not math.isfinite(mean) or mean < 1:
        return None
    return int(mean)


def _usable_load(
    loads: LoadReport, namespace: str, model: str, replicas: int
) -> tuple[ModelLoad | None, str]:
    """The load to size a VA on, or None and why it must not be sized this cycle.

    Unknown load is never read as zero load: a model whose pods answered only in part,
    or not at all while its Deployment has replicas, is left unsolved (answered
    UNAVAILABLE, so KEDA's fallback and the HPA hold the current scale).
    """
    partial = loads.incomplete.get((namespace, model))
    if partial is not None:
        return None, f"metrics incomplete: {partial}; not sized on a partial load"
    load = loads.find(namespace, model)
    if load is None:
        if replicas > 0:
            return None, (
                f"metrics missing: no vLLM series for model {model} in namespace {namespace}"
                f" while its Deployment has {replicas} replicas (pods not ready or not"
                " scraped?); not sized at zero load"
            )
        return ModelLoad(namespace=namespace, model=model), ""  # scaled to zero: idle
    in_flight = (load.running or 0.0) + (load.waiting or 0.0)
    arrivals = _measured(load.arrival_rate_rpm)
    if arrivals <= 0 and in_flight > 0:
        # e.g. a restarted Prometheus whose rate window has no samples yet: sizing this
        # at zero load would scale a busy service down
        return None, (
            f"metrics incomplete: {in_flight:g} requests in flight but no completion "
            "rate in the window yet; not sized at zero load"
        )
    if arrivals > 0 and _output_length(load.avg_output_tokens) is None:
        # a request length of 0 makes the optimizer size any rate at one replica
        return None, (
            "metrics incomplete: arrivals but no mean output length"
            " (vllm:request_generation_tokens) in the window; not sized"
        )
    return load, ""


def build_system(
    snapshot: ClusterSnapshot,
    loads: LoadReport,
    settings: AssemblySettings | None = None,
    parsed: ParsedObjects | None = None,
) -> Assembly:
    """The optimizer input for every VA that can be assembled, plus why the others cannot.

    With `parsed`, VAs and Deployments unchanged since an earlier call are not parsed
    again; the result is the same.
    """
    settings = settings or AssemblySettings()
    parse = parsed.parse if parsed is not None else _parse_fresh
    namespace = snapshot.config_namespace
    cost_data = snapshot.config_data(ACCELERATOR_COSTS_CONFIGMAP)
    class_data = snapshot.config_data(SERVICE_CLASSES_CONFIGMAP)
    costs, cost_problems = parse_accelerator_costs(cost_data, namespace)
    classes, class_problems = parse_service_classes(class_data, namespace)
    config_problems: list[EntryProblem] = [*cost_problems, *class_problems]
    bad_cost_keys = {p.key: str(p) for p in cost_problems}

    capacity: dict[str, int] = {}
    for node in snapshot.nodes.values():
        gpus, node_problems = parse_node_gpus(node)
        config_problems.extend(node_problems)
        for gpu in gpus:
            capacity[gpu.product] = capacity.get(gpu.product, 0) + gpu.count
    for problem in config_problems:
        log.warning("%s", problem)

    problems: list[VAProblem] = []
    servers: dict[str, VariantAutoscaling] = {}
    slo: dict[str, SloChoice] = {}
    server_docs: list[dict[str, Any]] = []
    models: dict[tuple[str, str], dict[str, Any]] = {}
    model_owner: dict[tuple[str, str], str] = {}

    def reject(ns: str, name: str, reason: str) -> None:
        problems.append(VAProblem(ns, name, reason))
        log.warning("VariantAutoscaling %s/%s skipped: %s", ns, name, reason)

    for (va_ns, va_name), raw in snapshot.variant_autoscalings.items():
        try:
            va = parse(raw, parse_variant_autoscaling)
        except ShapeError as error:
            reject(va_ns, va_name, f"invalid VariantAutoscaling: {error}")
            continue
        accelerator = va.accelerator_name
        if accelerator is None:
            reject(va_ns, va_name, f"missing label {ACCELERATOR_LABEL}")
            continue
        unit: AcceleratorCost | None = costs.get(accelerator)
        if unit is None:
            if cost_data is None:
                detail = f"ConfigMap {namespace}/{ACCELERATOR_COSTS_CONFIGMAP} not found"
            elif accelerator in bad_cost_keys:
                detail = f"its entry is invalid ({bad_cost_keys[accelerator]})"
            else:
                detail = (
                    f"no key {accelerator!r} in ConfigMap {namespace}/{ACCELERATOR_COSTS_CONFIGMAP}"
                )
            reject(va_ns, va_name, f"accelerator {accelerator!r} has no unit cost: {detail}")
            continue
        profile = va.profile_for(accelerator)
        if profile is None:
            reject(va_ns, va_name, f"no modelProfile entry for accelerator {accelerator!r}")
            continue
        key = (va.spec.model_id, accelerator)
        earlier = models.get(key)
        if earlier is not None and (earlier["alpha"], earlier["beta"], earlier["maxBatchSize"]) != (
            profile.alpha,
            profile.beta,
            profile.max_batch_size,
        ):
            reject(
                va_ns,
                va_name,
                f"modelProfile for model {va.spec.model_id!r} on {accelerator!r} differs from "
                f"the one of VariantAutoscaling {model_owner[key]}",
            )
            continue
        choice, how = _find_slo(va, classes)
        if choice is None:
            where = (
                f"ConfigMap {namespace}/{SERVICE_CLASSES_CONFIGMAP} not found"
                if class_data is None
                else f"any class of ConfigMap {namespace}/{SERVICE_CLASSES_CONFIGMAP}"
            )
            broken = "".join(f"; invalid entry: {p}" for p in class_problems)
            reason = f"model {va.spec.model_id!r} has no SLO in {where} ({how}){broken}"
            reject(va_ns, va_name, reason)
            continue
        raw_deployment = snapshot.deployments.get((va.namespace, va.name))
        if raw_deployment is None:
            reject(va_ns, va_name, f"Deployment {va.namespace}/{va.name} not found")
            continue
        try:
            deployment = parse(raw_deployment, parse_deployment)
        except ShapeError as error:
            reject(va_ns, va_name, f"Deployment {object_ref(raw_deployment)}: {error}")
            continue

        name = server_name(va)
        load, why_not = _usable_load(loads, va.namespace, va.spec.model_id, deployment.replicas)
        if load is None:
            reject(va_ns, va_name, why_not)
            continue
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
        replicas = deployment.replicas
        server_docs.append(
            {
                "name": name,
                "class": choice.class_name,
                "model": va.spec.model_id,
                "keepAccelerator": True,
                "minNumReplicas": settings.min_num_replicas,
                "maxBatchSize": profile.max_batch_size,
                "currentAlloc": {
                    "accelerator": accelerator,
                    "numReplicas": replicas,
                    "maxBatch": settings.current_max_batch,
                    "cost": _number(replicas * unit.cost),
                    "itlAverage": _measured(load.itl_ms),
                    "waitAverage": _measured(load.queue_time_ms),
                    "load": {
                        "arrivalRate": _measured(load.arrival_rate_rpm),
                        "avgLength": _output_length(load.avg_output_tokens) or 0,
                    },
                },
            }
        )
        servers[name] = va
        slo[name] = choice
        # Only the entry of the accelerator it runs on: servers keep their accelerator, so
        # the optimizer never reads the others, and registering them would reject a later
        # VA of the same model that runs on one of them with its own profile.
        if key not in models:
            model_owner[key] = f"{va.namespace}/{va.name}"
            doc: dict[str, Any] = {
                "name": va.spec.model_id,
                "acc": profile.acc,
                "accCount": profile.acc_count,
                "alpha": profile.alpha,
                "beta": profile.beta,
                "maxBatchSize": profile.max_batch_size,
            }
            if profile.at_tokens is not None:
                doc["atTokens"] = profile.at_tokens
            models[key] = doc

    system: dict[str, Any] = {
        "acceleratorData": {
            "accelerators": [
                {"name": c.name, "type": c.device, "multiplicity": 1, "cost": _number(c.cost)}
                for c in costs.values()
            ]
        },
        "modelData": {"models": list(models.values())},
        "serviceClassData": {
            "serviceClasses": [
                {
                    "name": c.name,
                    "priority": c.priority,
                    "modelTargets": [
                        {
                            "model": e.model,
                            "slo-itl": _number(e.slo_tpot),
                            "slo-ttw": _number(e.slo_ttft),
                            "slo-tps": 0,
                        }
                        for e in c.data
                    ],
                }
                for c in classes.values()
            ]
        },
        "serverData": {"servers": server_docs},
        "optimizerData": {
            "optimizer": {
                "unlimited": settings.unlimited,
                "saturationPolicy": settings.saturation_policy,
            }
        },
        "capacityData": {"count": [{"type": t, "count": n} for t, n in sorted(capacity.items())]},
    }
    if parsed is not None:
        parsed.sweep()
    return Assembly(
        system=system,
        servers=servers,
        slo=slo,
        problems=tuple(problems),
        config_problems=tuple(config_problems),
    )
