"""Pure simulator of the Kubernetes HPA replica calculation for one External metric, plus
the KEDA layer on top (polling loop, 0 <-> 1 activation, fallback).

Written from the prose in docs reference ``keda-hpa.md`` section 2 (HPA arithmetic) and
section 1.3 / 1.6 (KEDA): no I/O, no globals, time is injected as plain float seconds.

HPA model (one metric, ``type: External``):

* metric and target are compared as integer milli-units (``Quantity.MilliValue()``);
* ``AverageValue`` target ``a``: ratio ``r = U / (a * statusReplicas)``; inside the tolerance
  band the proposal is the *status* replica count (switchable, see
  ``in_tolerance_uses_status``), otherwise ``ceil(U / a)``;
* ``Value`` target ``v``: ``r = U / v``; inside the band the proposal is spec replicas,
  otherwise ``ceil(r * readyPods)``; from spec 0 it is ``ceil(r)`` without tolerance;
* tolerance band (K8s >= 1.33): ``1 - tolDown <= r <= 1 + tolUp`` (``legacy_tolerance``
  selects the older ``|1 - r| <= tol``); per-direction ``behavior.*.tolerance`` overrides the
  global default 0.1;
* pre-checks: spec 0 with minReplicas != 0 disables scaling; spec outside [min, max] is set
  to the bound directly;
* ``behavior`` set: stabilization (up: min over the up window, down: max over the down
  window, both including the current proposal) then rate policies with the scale-event
  history; ``behavior`` None: legacy path (max over the 300 s window, then clamp to
  ``[min, min(max, max(2 * spec, 4))]``);
* a metric error (``None`` or an exception from the source) leaves replicas unchanged and
  records nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
MetricTargetType = Literal["AverageValue", "Value"]
FallbackBehavior = Literal[
    "static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"
]

DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS = 300.0
DEFAULT_SYNC_PERIOD_SECONDS = 15.0
_MAX_INT32 = 2**31 - 1


# --------------------------------------------------------------------------- behavior spec


@dataclass(frozen=True)
class HPAScalingPolicy:
    """autoscaling/v2 ``HPAScalingPolicy``."""

    type: PolicyType
    value: int
    periodSeconds: int

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"policy type must be Pods or Percent, got {self.type!r}")
        if self.value <= 0:
            raise ValueError("policy value must be > 0")
        if not 0 < self.periodSeconds <= 1800:
            raise ValueError("policy periodSeconds must be in (0, 1800]")


@dataclass(frozen=True)
class HPAScalingRules:
    """autoscaling/v2 ``HPAScalingRules``; ``None`` fields take the API-server defaults."""

    stabilizationWindowSeconds: int | None = None
    selectPolicy: SelectPolicy | None = None
    policies: tuple[HPAScalingPolicy, ...] | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        window = self.stabilizationWindowSeconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError("stabilizationWindowSeconds must be in [0, 3600]")
        if self.selectPolicy is not None and self.selectPolicy not in ("Max", "Min", "Disabled"):
            raise ValueError(f"selectPolicy must be Max, Min or Disabled: {self.selectPolicy!r}")
        if self.policies is not None and len(self.policies) == 0:
            raise ValueError("policies, when given, must not be empty")
        if self.tolerance is not None and not (
            math.isfinite(self.tolerance) and self.tolerance >= 0
        ):
            raise ValueError("tolerance must be a finite number >= 0")


@dataclass(frozen=True)
class HorizontalPodAutoscalerBehavior:
    """autoscaling/v2 ``HorizontalPodAutoscalerBehavior``."""

    scaleUp: HPAScalingRules | None = None
    scaleDown: HPAScalingRules | None = None


def default_scale_up_rules() -> HPAScalingRules:
    """Scale-up defaults: no window, ``Max`` of +4 pods and +100 % per 15 s."""
    return HPAScalingRules(
        stabilizationWindowSeconds=0,
        selectPolicy="Max",
        policies=(
            HPAScalingPolicy(type="Pods", value=4, periodSeconds=15),
            HPAScalingPolicy(type="Percent", value=100, periodSeconds=15),
        ),
    )


def default_scale_down_rules() -> HPAScalingRules:
    """Scale-down defaults: window from the controller flag (300 s), 100 % per 15 s."""
    return HPAScalingRules(
        stabilizationWindowSeconds=None,
        selectPolicy="Max",
        policies=(HPAScalingPolicy(type="Percent", value=100, periodSeconds=15),),
    )


@dataclass(frozen=True)
class _Rules:
    """Fully defaulted rules used by the controller arithmetic."""

    window: float
    select: SelectPolicy
    policies: tuple[HPAScalingPolicy, ...]
    tolerance: float | None


def _resolve(
    rules: HPAScalingRules | None, default: HPAScalingRules, default_window: float
) -> _Rules:
    base = rules if rules is not None else default
    window = base.stabilizationWindowSeconds
    return _Rules(
        window=float(window) if window is not None else default_window,
        select=base.selectPolicy or "Max",
        policies=base.policies if base.policies is not None else default.policies or (),
        tolerance=base.tolerance,
    )


# --------------------------------------------------------------------------- HPA


MetricSource: TypeAlias = float | Callable[[], float | None] | None
"""A metric value, ``None`` for a failed fetch, or a thunk returning either (or raising)."""


@dataclass(frozen=True)
class ReconcileResult:
    """What one HPA reconcile did."""

    now: float
    previous: int
    desired: int
    proposal: int | None  # raw per-metric proposal (None: not computed)
    reason: str

    @property
    def rescaled(self) -> bool:
        return self.desired != self.previous


@dataclass
class _Event:
    change: int
    at: float


def to_milli(value: float) -> int:
    """A metric value as integer milli-units (KEDA formats with 3 decimals)."""
    return round(value * 1000)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class HPASimulator:
    """State of one HPA object: spec replicas, recommendation and scale-event history.

    Call ``reconcile(now, metric)`` once per sync period; ``now`` must not go backwards.
    """

    def __init__(
        self,
        *,
        replicas: int,
        max_replicas: int,
        min_replicas: int = 1,
        target: float = 1.0,
        target_type: MetricTargetType = "AverageValue",
        behavior: HorizontalPodAutoscalerBehavior | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        downscale_stabilization_seconds: float = DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
        legacy_tolerance: bool = False,
        in_tolerance_uses_status: bool = True,
    ) -> None:
        if min_replicas < 0 or max_replicas < max(min_replicas, 1):
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if not (math.isfinite(target) and target > 0) or to_milli(target) <= 0:
            raise ValueError("target must be > 0 (at least one milli-unit)")
        if target_type not in ("AverageValue", "Value"):
            raise ValueError(f"target_type must be AverageValue or Value: {target_type!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError("tolerance must be >= 0")
        self.replicas = replicas
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.target = target
        self.target_type: MetricTargetType = target_type
        self.behavior = behavior
        self.tolerance = tolerance
        self.downscale_stabilization_seconds = downscale_stabilization_seconds
        self.legacy_tolerance = legacy_tolerance
        self.in_tolerance_uses_status = in_tolerance_uses_status
        self._up = _resolve(behavior.scaleUp if behavior else None, default_scale_up_rules(), 0.0)
        self._down = _resolve(
            behavior.scaleDown if behavior else None,
            default_scale_down_rules(),
            downscale_stabilization_seconds,
        )
        self._recommendations: list[tuple[int, float]] | None = None
        self._up_events: list[_Event] = []
        self._down_events: list[_Event] = []

    # -- tolerance -----------------------------------------------------------------------

    def _tolerances(self) -> tuple[float, float]:
        up = down = self.tolerance
        if self.behavior is not None:
            if self._up.tolerance is not None:
                up = self._up.tolerance
            if self._down.tolerance is not None:
                down = self._down.tolerance
        return up, down

    def within_tolerance(self, ratio: float) -> bool:
        """Whether a usage ratio is inside the no-action band."""
        if math.isnan(ratio):
            return False
        up, down = self._tolerances()
        if self.legacy_tolerance:
            return abs(1.0 - ratio) <= up
        return (1.0 - down) <= ratio <= (1.0 + up)

    # -- per-metric proposal -------------------------------------------------------------

    def proposal(self, value: float, *, status_replicas: int, ready_replicas: int) -> int | None:
        """Replicas this metric asks for (``None``: metric invalid, e.g. no ready pods)."""
        usage = to_milli(value)
        target = to_milli(self.target)
        if self.target_type == "AverageValue":
            denominator = float(target) * status_replicas
            if denominator == 0:
                ratio = math.inf if usage > 0 else math.nan
            else:
                ratio = usage / denominator
            if self.within_tolerance(ratio):
                return status_replicas if self.in_tolerance_uses_status else self.replicas
            return min(_ceil_div(usage, target), _MAX_INT32)
        ratio = usage / target
        if self.replicas == 0:
            return math.ceil(ratio)
        if self.within_tolerance(ratio):
            return self.replicas
        if ready_replicas <= 0:
            return None
        return min(math.ceil(ratio * ready_replicas), _MAX_INT32)

    # -- reconcile -----------------------------------------------------------------------

    @property
    def scaling_disabled(self) -> bool:
        return self.replicas == 0 and self.min_replicas != 0

    def reconcile(
        self,
        now: float,
        metric: MetricSource,
        *,
        status_replicas: int | None = None,
        ready_replicas: int | None = None,
    ) -> ReconcileResult:
        """One HPA sync. ``status_replicas`` / ``ready_replicas`` default to spec replicas."""
        spec = self.replicas
        if self._recommendations is None:
            self._recommendations = [(spec, now)]
        if self.scaling_disabled:
            return ReconcileResult(now, spec, spec, None, "ScalingDisabled")
        if spec > self.max_replicas:
            return self._apply(now, spec, self.max_replicas, None, "TooManyReplicas")
        if spec < self.min_replicas:
            return self._apply(now, spec, self.min_replicas, None, "TooFewReplicas")

        value: float | None
        if callable(metric):
            try:
                value = metric()
            except Exception:
                value = None
        else:
            value = metric
        if value is None or not math.isfinite(value):
            return ReconcileResult(now, spec, spec, None, "FailedGetExternalMetric")
        status = spec if status_replicas is None else status_replicas
        ready = status if ready_replicas is None else ready_replicas
        proposal = self.proposal(value, status_replicas=status, ready_replicas=ready)
        if proposal is None:
            return ReconcileResult(now, spec, spec, None, "FailedGetExternalMetric")

        if self.behavior is None:
            desired, reason = self._normalize_legacy(now, spec, proposal)
        else:
            desired, reason = self._normalize_with_behavior(now, spec, proposal)
        return self._apply(now, spec, desired, proposal, reason)

    def _apply(
        self, now: float, spec: int, desired: int, proposal: int | None, reason: str
    ) -> ReconcileResult:
        if desired != spec:
            if self.behavior is not None:
                self._store_event(now, desired - spec)
            self.replicas = desired
        return ReconcileResult(now, spec, desired, proposal, reason)

    def _store_event(self, now: float, change: int) -> None:
        longest = max(p.periodSeconds for p in (*self._up.policies, *self._down.policies))
        events = self._up_events if change > 0 else self._down_events
        events[:] = [e for e in events if e.at > now - longest]
        events.append(_Event(abs(change), now))

    def _remember(self, now: float, proposal: int, cutoff: float) -> None:
        recs = self._recommendations
        assert recs is not None
        for i, (_, at) in enumerate(recs):
            if not at > cutoff:
                recs[i] = (proposal, now)
                return
        recs.append((proposal, now))

    def _normalize_legacy(self, now: float, spec: int, proposal: int) -> tuple[int, str]:
        recs = self._recommendations or []
        cutoff = now - self.downscale_stabilization_seconds
        stabilized = max([proposal, *(r for r, at in recs if at > cutoff)])
        self._remember(now, proposal, cutoff)
        reason = "ScaleDownStabilized" if stabilized != proposal else "ReadyForNewScale"
        upper = min(self.max_replicas, max(2 * spec, 4))
        if stabilized > upper:
            return upper, "ScaleUpLimit" if upper < self.max_replicas else "TooManyReplicas"
        if stabilized < self.min_replicas:
            return self.min_replicas, "TooFewReplicas"
        return stabilized, reason

    def _normalize_with_behavior(self, now: float, spec: int, proposal: int) -> tuple[int, str]:
        recs = self._recommendations or []
        up_cutoff = now - self._up.window
        down_cutoff = now - self._down.window
        up_rec = min([proposal, *(r for r, at in recs if at > up_cutoff)])
        down_rec = max([proposal, *(r for r, at in recs if at > down_cutoff)])
        self._remember(now, proposal, min(up_cutoff, down_cutoff))
        rec = spec
        if rec < up_rec:
            rec = up_rec
        if rec > down_rec:
            rec = down_rec
        reason = "ReadyForNewScale"
        if rec != proposal:
            reason = "ScaleUpStabilized" if proposal > spec else "ScaleDownStabilized"

        if rec > spec:
            limit = max(self._up_limit(now, spec), spec)
            allowed = min(self.max_replicas, limit)
            if rec > allowed:
                reason = "ScaleUpLimit" if limit < self.max_replicas else "TooManyReplicas"
            return min(rec, allowed), reason
        if rec < spec:
            limit = min(self._down_limit(now, spec), spec)
            allowed = max(self.min_replicas, limit)
            if rec < allowed:
                reason = "ScaleDownLimit" if limit > self.min_replicas else "TooFewReplicas"
            return max(rec, allowed), reason
        return rec, reason

    def _period_start(self, now: float, spec: int, period: float) -> int:
        added = sum(e.change for e in self._up_events if e.at > now - period)
        removed = sum(e.change for e in self._down_events if e.at > now - period)
        return spec - added + removed

    def _up_limit(self, now: float, spec: int) -> int:
        if self._up.select == "Disabled":
            return spec
        limits: list[int] = []
        for policy in self._up.policies:
            start = self._period_start(now, spec, policy.periodSeconds)
            if policy.type == "Pods":
                limits.append(start + policy.value)
            else:
                limits.append(math.ceil(start * (1 + policy.value / 100)))
        return max(limits) if self._up.select == "Max" else min(limits)

    def _down_limit(self, now: float, spec: int) -> int:
        if self._down.select == "Disabled":
            return spec
        limits: list[int] = []
        for policy in self._down.policies:
            start = self._period_start(now, spec, policy.periodSeconds)
            if policy.type == "Pods":
                limits.append(start - policy.value)
            else:
                limits.append(int(start * (1 - policy.value / 100)))
        # "Max" selects the policy allowing the largest change, i.e. the lowest limit.
        return min(limits) if self._down.select == "Max" else max(limits)


# --------------------------------------------------------------------------- KEDA


@dataclass(frozen=True)
class Fallback:
    """ScaledObject ``spec.fallback``."""

    failureThreshold: int
    replicas: int
    behavior: FallbackBehavior = "static"

    def __post_init__(self) -> None:
        if self.failureThreshold < 0 or self.replicas < 0:
            raise ValueError("failureThreshold and replicas must be >= 0")
        if self.behavior not in (
            "static",
            "currentReplicas",
            "currentReplicasIfHigher",
            "currentReplicasIfLower",
        ):
            raise ValueError(f"unknown fallback behavior {self.behavior!r}")

    def target_replicas(self, current: int) -> int:
        if self.behavior == "currentReplicas":
            return current
        if self.behavior == "currentReplicasIfHigher":
            return max(current, self.replicas)
        if self.behavior == "currentReplicasIfLower":
            return min(current, self.replicas)
        return self.replicas


@dataclass(frozen=True)
class ScaledObjectSpec:
    """The ScaledObject fields the simulation needs (one external trigger)."""

    pollingInterval: float = 30.0
    cooldownPeriod: float = 300.0
    initialCooldownPeriod: float = 0.0
    minReplicaCount: int = 0
    maxReplicaCount: int = 100
    fallback: Fallback | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None
    metricType: MetricTargetType = "AverageValue"
    target: float = 1.0

    def __post_init__(self) -> None:
        if self.pollingInterval <= 0:
            raise ValueError("pollingInterval must be > 0")
        if not 0 <= self.minReplicaCount <= self.maxReplicaCount or self.maxReplicaCount < 1:
            raise ValueError("need 0 <= minReplicaCount <= maxReplicaCount, max >= 1")


@dataclass(frozen=True)
class KedaStep:
    """One event of the KEDA/HPA simulation."""

    now: float
    kind: Literal["poll", "hpa"]
    replicas: int
    detail: str


@dataclass
class KedaLoop:
    """KEDA operator + HPA around a metric source.

    ``get_metrics`` plays the external scaler's ``GetMetrics`` (returns the value or raises);
    ``is_active`` plays ``IsActive`` (default: last value > 0). ``poll`` is the polling
    loop (activation 0 <-> 1, scale to zero after ``cooldownPeriod``); ``hpa_sync`` is one
    HPA reconcile whose metric goes through KEDA (sanitizing, failure counting, fallback).
    Both paths count consecutive failures in one counter; fallback engages once it
    *exceeds* ``failureThreshold``. Without fallback an error freezes replicas and blocks
    the scale to zero; with fallback engaged the trigger counts as active.
    """

    spec: ScaledObjectSpec
    get_metrics: Callable[[], float]
    is_active: Callable[[], bool] | None = None
    initial_replicas: int = 0
    start: float = 0.0
    hpa_sync_period: float = DEFAULT_SYNC_PERIOD_SECONDS
    tolerance: float = DEFAULT_TOLERANCE
    hpa: HPASimulator = field(init=False)
    failures: int = field(init=False, default=0)
    last_active: float | None = field(init=False, default=None)
    now: float = field(init=False)
    _next_poll: float = field(init=False)
    _next_sync: float = field(init=False)

    def __post_init__(self) -> None:
        self.hpa = HPASimulator(
            replicas=self.initial_replicas,
            min_replicas=max(self.spec.minReplicaCount, 1),
            max_replicas=self.spec.maxReplicaCount,
            target=self.spec.target,
            target_type=self.spec.metricType,
            behavior=self.spec.behavior,
            tolerance=self.tolerance,
        )
        self.now = self.start
        self._next_poll = self.start
        self._next_sync = self.start

    @property
    def current_replicas(self) -> int:
        return self.hpa.replicas

    @property
    def fallback_active(self) -> bool:
        fb = self.spec.fallback
        return fb is not None and self.failures > fb.failureThreshold

    def _fetch(self) -> float:
        value = self.get_metrics()
        if not math.isfinite(value) or value < 0:
            value = 0.0  # KEDA turns NaN, +-Inf and negatives into 0
        return value

    def _metric_for_hpa(self, ready_replicas: int) -> float | None:
        try:
            value = self._fetch()
        except Exception:
            self.failures += 1
            fb = self.spec.fallback
            if fb is None or not self.fallback_active:
                return None
            replicas = fb.target_replicas(self.hpa.replicas)
            if self.spec.metricType == "AverageValue":
                return self.spec.target * replicas
            if ready_replicas <= 0:
                return None
            return self.spec.target * replicas / ready_replicas
        self.failures = 0
        return value

    def hpa_sync(
        self, now: float, *, status_replicas: int | None = None, ready_replicas: int | None = None
    ) -> ReconcileResult:
        """One HPA reconcile (the metric is fetched only if the HPA needs it)."""
        ready = ready_replicas if ready_replicas is not None else self.hpa.replicas
        return self.hpa.reconcile(
            now,
            lambda: self._metric_for_hpa(ready),
            status_replicas=status_replicas,
            ready_replicas=ready_replicas,
        )

    def poll(self, now: float) -> str:
        """One polling-loop pass: ``GetMetrics`` then ``IsActive``, then activation."""
        try:
            value = self._fetch()
            active = self.is_active() if self.is_active is not None else value > 0
        except Exception:
            self.failures += 1
            if not self.fallback_active:
                return "error"  # no deactivation on error
            active = True
        else:
            self.failures = 0
        return self.push(now, active)

    def push(self, now: float, active: bool) -> str:
        """KEDA's handling of the trigger's activity: what a poll does with IsActive's
        answer, and what an external-push trigger's StreamIsActive value gets at once
        (KEDA's RequestScale). Activation sets max(minReplicaCount, 1); deactivation to 0
        only after ``cooldownPeriod`` of inactivity (and the initial cooldown)."""
        if active:
            self.last_active = now
            if self.hpa.replicas == 0:
                self.hpa.replicas = max(self.spec.minReplicaCount, 1)
                return "activated"
            return "active"
        if (
            self.hpa.replicas > 0
            and self.spec.minReplicaCount == 0
            and now - self.start >= self.spec.initialCooldownPeriod
            and (self.last_active is None or now - self.last_active >= self.spec.cooldownPeriod)
        ):
            self.hpa.replicas = 0
            return "deactivated"
        return "inactive"

    def advance_to(self, until: float) -> list[KedaStep]:
        """Run every poll and HPA sync due at or before ``until`` (poll first on ties)."""
        steps: list[KedaStep] = []
        while min(self._next_poll, self._next_sync) <= until:
            if self._next_poll <= self._next_sync:
                t = self._next_poll
                detail = self.poll(t)
                steps.append(KedaStep(t, "poll", self.hpa.replicas, detail))
                self._next_poll = t + self.spec.pollingInterval
            else:
                t = self._next_sync
                result = self.hpa_sync(t)
                steps.append(KedaStep(t, "hpa", self.hpa.replicas, result.reason))
                self._next_sync = t + self.hpa_sync_period
            self.now = t
        self.now = max(self.now, until)
        return steps


class Scalable(Protocol):
    """What a KEDA-driven loop sets: a Deployment's spec.replicas."""

    @property
    def replicas(self) -> int: ...

    def scale(self, replicas: int) -> None: ...


class KedaDriven:
    """A KedaLoop whose HPA sets a Deployment's replicas, for a virtual-time driver.

    The loop's poll and sync times are mirrored (same additions from the same start) so
    that `advance_to` runs exactly what is due at each call, with the Deployment standing
    at that instant when the metric is read.
    """

    def __init__(self, keda: KedaLoop, deployment: Scalable) -> None:
        self.keda = keda
        self._deployment = deployment
        self._next_poll = keda.start
        self._next_sync = keda.start

    def next_time(self) -> float:
        return min(self._next_poll, self._next_sync)

    def push_active(self, now: float) -> None:
        """The scaler pushed `active` (StreamIsActive): KEDA activates the target now."""
        self.keda.push(now, True)
        if self.keda.current_replicas != self._deployment.replicas:
            self._deployment.scale(self.keda.current_replicas)

    def act(self, now: float) -> None:
        self.keda.advance_to(now)
        if self._next_poll <= now:
            self._next_poll = self._next_poll + self.keda.spec.pollingInterval
        if self._next_sync <= now:
            self._next_sync = self._next_sync + self.keda.hpa_sync_period
        if self.keda.current_replicas != self._deployment.replicas:
            self._deployment.scale(self.keda.current_replicas)
