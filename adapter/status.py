"""Writes each VariantAutoscaling's `.status` from the latest snapshot, leader only.

What is written (through the `/status` subresource, so `spec` is never touched):

- `currentAlloc`: the variant as the cycle read it (accelerator from the VA's
  `inference.optimization/acceleratorName` label, Deployment replicas, `maxBatch`, cost,
  measured ITL / wait in ms, load in req/min and output tokens), as the CRD's decimal
  strings with two decimals. Left as it is for a VA the assembler rejected (nothing was
  read for it). `variantCost` is omitted when the unit cost is not known this cycle
  (an unsolved VA, or zero desired replicas): the snapshot carries only the desired cost.
- `desiredOptimizedAlloc` {lastRunTime, accelerator, numReplicas} for a solved VA; an
  unsolved VA keeps its previous recommendation (with its lastRunTime) and says why in
  `OptimizationReady`.
- `actuation.applied: false`, always: the adapter never writes `spec.replicas` (KEDA or
  the HPA actuate), so it never claims it applied anything. Any `true` left by another
  controller is corrected.
- conditions `MetricsAvailable` (MetricsFound / MetricsMissing) and `OptimizationReady`
  (OptimizationSucceeded, its message saying when the decision is the VA's
  `spec.maxReplicas` / OptimizationFailed / InvalidConfiguration / KubernetesStale:
  the VA's objects were last known in sync with the API server longer ago than the
  staleness limit, so its decision is withheld; written when the API server takes
  writes, e.g. while only the watches fail), with
  `observedGeneration` = the object's `metadata.generation`. Other condition types are
  kept as they are (an upstream WVA's `TargetResolved`, say). A snapshot older than
  `max_age_s` (cycles failing) turns both False and leaves the allocations alone; so
  does having no snapshot at all `max_age_s` after the writer started (no cycle has
  succeeded since this process started).
- with profile learning on, condition `ProfileLearned`: True (LearnedProfileInUse) when
  the profile learned from the pods sizes the VA, with it and the declared one in the
  message; False (DeclaredProfileInUse) otherwise, saying whether the fit is not known
  well enough yet or agrees with the declaration.

Every field written is in both shapes the CRD serves (deploy/crd-variantautoscalings.yaml):
a VA an upstream WVA controller wrote (desiredOptimizedAlloc without accelerator,
`actuation.applied: true`, its own conditions) validates before and after our write.

Writes happen only when the status changes. `lastTransitionTime` is kept while a
condition's status stays the same, and `lastRunTime` is the start of the cycle that
produced the current recommendation (kept while accelerator and replicas stay the same;
the snapshot's age is on /metrics as `wva_snapshot_age_seconds`), so a steady VA costs
no API call per cycle. Measured load does change `currentAlloc` (two decimals), so a VA
with fluctuating traffic is written on most cycles. The
comparison is against the object as the caller's cache last saw it, or against our own
last write when the cache still shows the object as it was before that write. Each write
is a JSON merge patch carrying the `resourceVersion` it was computed from, so a
concurrent change gives 409 and the next pass recomputes from fresh data.

Only the leader writes (`is_leader`, see adapter/leader.py), checked before every write:
a pass that loses the Lease stops. `run` ends with one last pass after `stop`, so the
final snapshot is written before the caller releases the Lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from adapter.clock import Clock, sleep_unless
from adapter.engine import Snapshot, VariantDecision, VariantKey
from adapter.exporter import reason_code
from adapter.learning import ProfileView
from adapter.model.kube import ACCELERATOR_LABEL, GROUP, PLURAL, VERSION

__all__ = [
    "METRICS_AVAILABLE",
    "OPTIMIZATION_READY",
    "StatusSettings",
    "StatusWriter",
    "SyncReport",
    "desired_status",
    "merge_patch",
]
OPTIMIZATION_READY = "OptimizationReady"
PROFILE_LEARNED = "ProfileLearned"
log = logging.getLogger(__name__)

METRICS_AVAILABLE = "MetricsAvailable"
OPTIMIZATION_READY = "OptimizationReady"
MAX_MESSAGE = 32768  # metav1.Condition.message maxLength

ObjectsProvider = Callable[[], Mapping[VariantKey, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class StatusSettings:
    current_max_batch: int = 256  # the reference's hard-coded current maxBatch
    max_age_s: float | None = 60.0  # older snapshots: conditions False, allocations kept
    interval_s: float = 5.0  # `run` loop period
    # Leadership is checked before each write, so a write must end before a successor can
    # take the Lease: within lease_duration_s - renew_deadline_s (5 s with the defaults).
    request_timeout_s: float = 4.0


@dataclass
class SyncReport:
    written: list[VariantKey] = field(default_factory=list)
    unchanged: int = 0
    conflicts: int = 0
    errors: int = 0
    skipped: str = ""  # why nothing was attempted ("not the leader")
    stopped: str = ""  # why the pass ended early ("lost the leadership")


# ---------------------------------------------------------------- pure part


def _decimal(value: float | None) -> str:
    """A CRD decimal string, two decimals; None, NaN, inf and negatives become "0"."""
    if value is None or not math.isfinite(value) or value < 0:
        return "0"
    return f"{value:.2f}"


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: Any,
    old: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    since = now
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": since,
    }
    if isinstance(generation, int) and generation >= 0:
        condition["observedGeneration"] = generation
    return condition


def _conditions(
    decision: VariantDecision | None, stale_after: float | None, cap: int | None = None
) -> list[tuple[str, bool, str, str]]:
    if decision is None:  # stale snapshot
        age = f" in the last {stale_after:g}s" if stale_after is not None else ""
        return [
            (
                METRICS_AVAILABLE,
                False,
                "MetricsMissing",
                f"no successful cycle{age}: the metrics backend or the cluster could not be "
                "read (see the adapter's logs and wva_cycle_errors_total)",
            ),
            (
                OPTIMIZATION_READY,
                False,
                "OptimizationFailed",
                f"no successful optimization cycle{age}; the last recommendation is kept",
            ),
        ]
    out: list[tuple[str, bool, str, str]] = []
    if decision.load is not None:
        out.append(
            (
                METRICS_AVAILABLE,
                True,
                "MetricsFound",
                f"vLLM metrics for model {decision.model} in namespace {decision.namespace} "
                "were read",
            )
        )
    else:
        out.append(
            (
                METRICS_AVAILABLE,
                False,
                "MetricsMissing",
                f"metrics were not used for this VariantAutoscaling: {decision.reason}",
            )
        )
    code = reason_code(decision)
    if code == "Optimized":
        out.append(
            (
                OPTIMIZATION_READY,
                True,
                "OptimizationSucceeded",
                f"desired {decision.desired_replicas} replica(s) of {decision.accelerator}"
                + (", its spec.maxReplicas" if decision.desired_replicas == cap else ""),
            )
        )
    elif code in ("InvalidConfiguration", "KubernetesStale"):
        out.append((OPTIMIZATION_READY, False, code, decision.reason))
    else:
        out.append((OPTIMIZATION_READY, False, "OptimizationFailed", f"{code}: {decision.reason}"))
    if decision.profile is not None:
        out.append(_profile_condition(decision.profile))
    return out


def _profile_condition(view: ProfileView) -> tuple[str, bool, str, str]:
    """Which decode profile sized the VA. Values to 3 digits: a message that changes
    every cycle would write the status every cycle."""
    declared = (
        f"declared alpha {view.declared_alpha_ms:.3g} ms, beta {view.declared_beta_ms:.3g} ms"
    )
    fit = view.learned
    if view.source == "learned" and fit is not None:
        return (
            PROFILE_LEARNED,
            True,
            "LearnedProfileInUse",
            f"sized with alpha {fit.alpha_ms:.3g} ms, beta {fit.beta_ms:.3g} ms learned from"
            f" the pods ({declared})",
        )
    if view.source == "held":
        return (
            PROFILE_LEARNED,
            True,
            "LearnedProfileHeld",
            f"sized with alpha {view.alpha_ms:.3g} ms, beta {view.beta_ms:.3g} ms, the last"
            f" learned profile that refuted the {declared}, until the fit is trusted again",
        )
    if fit is None or fit.accepted == 0:
        why = "no observation of the pods under load yet"
    elif not fit.trusted:
        why = "the fit is not known well enough yet"
    else:
        why = (
            f"the pods agree with it (learned alpha {fit.alpha_ms:.3g} ms, beta"
            f" {fit.beta_ms:.3g} ms)"
        )
    return (PROFILE_LEARNED, False, "DeclaredProfileInUse", f"sized with the {declared}: {why}")


def desired_status(
    obj: Mapping[str, Any],
    decision: VariantDecision | None,
    *,
    now: float,
    run_time: float,
    current_max_batch: int = 256,
    stale_after: float | None = None,
) -> dict[str, Any]:
    """The complete status `obj` should have: its current status with our parts replaced.

    `decision` None means the snapshot is stale. `now` stamps changed conditions,
    `run_time` (the snapshot's cycle time) stamps `desiredOptimizedAlloc.lastRunTime`
    when the recommendation itself changes; otherwise the stored times are kept.
    """
    old_status = obj.get("status")
    old: dict[str, Any] = dict(old_status) if isinstance(old_status, Mapping) else {}
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    new = dict(old)
    stamp = _rfc3339(now)

    if decision is not None and decision.load is not None and decision.current_replicas is not None:
        accelerator = str(labels.get(ACCELERATOR_LABEL) or decision.accelerator)
        load = decision.load
        current_alloc: dict[str, Any] = {
            "accelerator": accelerator,
            "numReplicas": decision.current_replicas,
            "maxBatch": current_max_batch,
            "itlAverage": _decimal(load.itl_ms),
            "waitAverage": _decimal(load.queue_time_ms),
            "load": {
                "arrivalRate": _decimal(load.arrival_rate_rpm),
                "avgLength": str(int(load.avg_output_tokens))
                if math.isfinite(load.avg_output_tokens) and load.avg_output_tokens > 0
                else "0",
            },
        }
        if (
            decision.cost is not None
            and decision.desired_replicas
            and accelerator == decision.accelerator
        ):
            unit = decision.cost / decision.desired_replicas
            current_alloc["variantCost"] = _decimal(unit * decision.current_replicas)
        if accelerator:
            new["currentAlloc"] = current_alloc

    if decision is not None and decision.solved and len(decision.accelerator) >= 2:
        alloc: dict[str, Any] = {
            "accelerator": decision.accelerator,
            "numReplicas": decision.desired_replicas,
        }
        previous = old.get("desiredOptimizedAlloc")
        previous = previous if isinstance(previous, Mapping) else {}
        same = {k: previous.get(k) for k in alloc} == alloc
        if same and previous.get("lastRunTime"):
            alloc["lastRunTime"] = previous["lastRunTime"]
        else:
            alloc["lastRunTime"] = _rfc3339(run_time)
        new["desiredOptimizedAlloc"] = {
            "lastRunTime": alloc["lastRunTime"],
            "accelerator": alloc["accelerator"],
            "numReplicas": alloc["numReplicas"],
        }

    new["actuation"] = {"applied": False}

    old_conditions = [c for c in old.get("conditions") or [] if isinstance(c, Mapping)]
    by_type = {c.get("type"): c for c in old_conditions}
    ours = {
        type_: _condition(
            type_, ok, reason, message, meta.get("generation"), by_type.get(type_), stamp
        )
        for type_, ok, reason, message in _conditions(decision, stale_after, _max_replicas(obj))
    }
    conditions = [ours.pop(str(c.get("type")), dict(c)) for c in old_conditions]  # keep order
    ordered = (METRICS_AVAILABLE, OPTIMIZATION_READY, PROFILE_LEARNED)
    conditions.extend(ours[t] for t in ordered if t in ours)
    new["conditions"] = conditions
    return new


def _max_replicas(obj: Mapping[str, Any]) -> int | None:
    """The VA's spec.maxReplicas (newer upstream shape), if it has a usable one."""
    spec = obj.get("spec")
    cap = spec.get("maxReplicas") if isinstance(spec, Mapping) else None
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else None


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch turning `old` into `new` (None: no change needed)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        else:
            sub = merge_patch(old[key], value)
            if sub is not None:
                patch[key] = sub
    for key in old:
        if key not in new:
            patch[key] = None
    return patch or None


# ---------------------------------------------------------------- the writer


@dataclass(frozen=True, slots=True)
class _Written:
    based_on: str  # resourceVersion the write was computed from
    result: str  # resourceVersion the write produced
    status: dict[str, Any]


class StatusWriter:
    """Writes VA statuses from snapshots. `sync(snapshot)` once, or `run(...)` periodically.

    `objects` returns the current VA objects by (namespace, name), e.g.
    `lambda: cache.snapshot().variant_autoscalings` (a KubeCache keeps them whole).
    """

    def __init__(
        self,
        api: client.CustomObjectsApi,
        objects: ObjectsProvider,
        clock: Clock,
        *,
        is_leader: Callable[[], bool] = lambda: True,
        settings: StatusSettings | None = None,
    ) -> None:
        self._api = api
        self._objects = objects
        self._clock = clock
        self._is_leader = is_leader
        self.settings = settings or StatusSettings()
        self._written: dict[VariantKey, _Written] = {}
        self.errors_total = 0  # failed API calls (409 conflicts and 404 excluded)
        self.writes_total = 0

    def stale(self, snapshot: Snapshot) -> bool:
        limit = self.settings.max_age_s
        return limit is not None and snapshot.age(self._clock) > limit

    def sync(self, snapshot: Snapshot | None) -> SyncReport:
        """One pass over the VAs; `snapshot` None means no cycle has succeeded: all stale.

        Leadership is checked before every write, not only once: a pass over many VAs can
        outlast the renew deadline, and a writer that lost the Lease must stop writing.
        """
        report = SyncReport()
        if not self._is_leader():
            report.skipped = "not the leader"
            self._written.clear()  # another leader may write meanwhile
            return report
        stale = snapshot is None or self.stale(snapshot)
        objects = self._objects()
        if snapshot is None or stale:
            keys = sorted(objects)
        else:
            keys = sorted(k for k in snapshot.decisions if k in objects)
        run_time = snapshot.timestamp if snapshot is not None else self._clock.now()
        for key in keys:
            decision = None if snapshot is None or stale else snapshot.decisions[key]
            if not self._sync_one(key, objects[key], decision, run_time, report):
                report.stopped = "lost the leadership"
                self._written.clear()
                log.info(
                    "status pass stopped after %d write(s): no longer the leader",
                    len(report.written),
                )
                return report
        for gone in [k for k in self._written if k not in objects]:
            del self._written[gone]
        return report

    def _sync_one(
        self,
        key: VariantKey,
        obj: Mapping[str, Any],
        decision: VariantDecision | None,
        run_time: float,
        report: SyncReport,
    ) -> bool:
        """Write one VA's status if it changed; False (nothing written) once not the leader."""
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        mine = self._written.get(key)
        if mine is not None and rv == mine.based_on:
            obj = {**obj, "status": mine.status}  # our write is not in the cache yet
        new = desired_status(
            obj,
            decision,
            now=self._clock.now(),
            run_time=run_time,
            current_max_batch=self.settings.current_max_batch,
            stale_after=self.settings.max_age_s,
        )
        patch = merge_patch(obj.get("status") or {}, new)
        if patch is None:
            report.unchanged += 1
            return True
        if not self._is_leader():
            return False
        namespace, name = key
        body: dict[str, Any] = {"status": patch}
        if rv:
            body["metadata"] = {"resourceVersion": rv}
        try:
            result = self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _request_timeout=self.settings.request_timeout_s,
            )
        except client.ApiException as error:
            if error.status == 409:
                report.conflicts += 1
                log.debug("VariantAutoscaling %s/%s changed meanwhile; next pass", *key)
            elif error.status == 404:
                log.debug("VariantAutoscaling %s/%s is gone", *key)
            else:
                report.errors += 1
                self.errors_total += 1
                log.warning(
                    "VariantAutoscaling %s/%s: status write failed: %s %s",
                    namespace,
                    name,
                    error.status,
                    error.reason,
                )
            return True
        except Exception as error:
            report.errors += 1
            self.errors_total += 1
            log.warning("VariantAutoscaling %s/%s: status write failed: %s", namespace, name, error)
            return True
        stored = result if isinstance(result, Mapping) else {}
        result_rv = str((stored.get("metadata") or {}).get("resourceVersion") or "")
        self._written[key] = _Written(rv, result_rv, dict(stored.get("status") or new))
        self.writes_total += 1
        report.written.append(key)
        log.debug("VariantAutoscaling %s/%s: status written", namespace, name)
        return True

    async def run(self, snapshot: Callable[[], Snapshot | None], stop: asyncio.Event) -> None:
        """`sync` the provider's snapshot every `interval_s` until `stop` is set, then once more.

        Comparisons are in memory, so a pass over unchanged VAs makes no API call; running
        every few seconds also repairs a status someone else overwrote and marks the
        conditions False once the snapshot goes stale, or once no cycle has succeeded for
        `max_age_s` since the start (a previous leader's True conditions must not stay).
        The last pass after `stop` writes the final snapshot (`run --cycles N`, shutdown):
        release the Lease only after this returns.
        """
        started = self._clock.monotonic()
        while not stop.is_set():
            await self._pass(snapshot(), started)
            await sleep_unless(self._clock, self.settings.interval_s, stop)
        await self._pass(snapshot(), started)

    async def _pass(self, current: Snapshot | None, started: float) -> None:
        limit = self.settings.max_age_s
        if current is None and (limit is None or self._clock.monotonic() - started <= limit):
            return  # no cycle yet, and too early to call that stale
        try:
            await asyncio.to_thread(self.sync, current)
        except Exception:
            self.errors_total += 1
            log.exception("status sync failed")
