"""The scaling rules of three peer autoscaling recipes, as pure functions.

The simulator compares this adapter with what users of llm-d run instead. Each recipe is
written here as the arithmetic its public manifests and code define, from the readings
that recipe sees at one evaluation to what it hands KEDA/HPA. No I/O, no module state:
whatever a recipe remembers between evaluations (a smoothing window, WVA's capacity
history) is an explicit frozen value passed in and returned. Our own prose and code;
every fact is cited below (repository, path, commit).

``llmd-saturation`` -- the llm-d guide's KEDA + EPP recipe, saturation overlay.
    Two KEDA Prometheus triggers raced by the generated HPA (it takes the larger
    proposal): ``max(llm_d_epp_flow_control_pool_saturation{inference_pool})`` with an
    AverageValue target of 0.7 and ``sum(llm_d_epp_request_running{model_name})`` with
    AverageValue 16. pollingInterval 15 s, cooldownPeriod 300 s, replicas 1..10, both
    stabilization windows 300 s, +-100 % per 15 s. The queue overlay swaps the first
    trigger for ``sum(llm_d_epp_flow_control_queue_size)`` AverageValue 1 (max 8). The
    saturation gauge is the EPP's default utilization detector: the mean over the
    pool's endpoints of max(waiting / 5, KV usage / 0.8). Knob: `saturation_target`.
    Because the gauge is pool-wide and the target is AverageValue, that trigger proposes
    ceil(saturation / 0.7) replicas whatever the pool size: it can only hold one or two
    replicas; the running-request trigger does the sizing above that.
    Sources: llm-d/llm-d
    guides/workload-autoscaling/keda-epp/optimized-baseline/overlays/k8s/saturation/
    scaledobject.yaml @ 321a7e8c2bca4a21d8eed41c26ac1b224a59665f (queue overlay:
    .../overlays/k8s/queue/scaledobject.yaml @ 057abb4a51654802c439e9e77598fc6239f664b7);
    llm-d/llm-d-router pkg/epp/framework/plugins/flowcontrol/saturationdetector/
    utilization/{detector.go,config.go} and pkg/epp/metrics/llm_d_router_metrics.go @
    ebab687927f5331c1b39defcb579a07951bce56c.

``llmd-slo`` -- the llm-d SLO-aware KEDA recipe.
    Recording rules every 15 s: P90 of the EPP's TTFT and streaming-TPOT histograms over
    1 m rates (`histogram_quantile(0.9, sum by (le) (rate(..._bucket[1m])))`, predicted
    histograms preferred when present, NaN or no traffic -> 0); raw saturation
    max(P90 TTFT / 3 s, P90 TPOT / 0.1 s); clamped at 2.0; smoothed by
    avg_over_time[45s]. A KEDA scalingModifiers formula turns the smoothed ``s``, the
    provisioned ``n`` and ready ``r`` replicas into the desired count (target "1",
    AverageValue: the formula output is the replica count): above 0.55 scale up by
    ceil(n (s c / 0.55 - 1)) with the in-flight credit c = r / n while 0 < r < n, below
    0.40 scale down by floor(n (1 - s / 0.40)), in between hold (the dead band).
    pollingInterval 15 s, replicas 3..8, up: window 30 s, max(100 %, 4 pods) per 60 s;
    down: window 180 s, 1 pod per 120 s. Knob: `theta_up` (with `theta_dn`).
    Sources: llm-d/llm-d guides/workload-autoscaling/README.slo-aware.md @
    d38c9f0c81e9cbaf60b06eb2819147f5acdf982a and slo-aware/README.md @
    1860df22b338679b3cb2e8e79adceffc48c6b6ed; the manifests themselves are stored only in
    the fork zetxqx/llm-d: guides/workload-autoscaling/slo-aware/{scaledobject.yaml,
    prometheus-rule.yaml} @ c397e67948e52ecdd48d36a84f7c94c1fe649961 (same values as the
    upstream README); EPP histograms from llm-d/llm-d-router
    pkg/epp/metrics/llm_d_router_metrics.go @ ebab687927f5331c1b39defcb579a07951bce56c.

``wva-saturation`` -- WVA v0.9.0's default V2 saturation analyzer (KV-token capacity,
    PR #1442). Every 15 s, per ready replica: KV capacity in tokens
    C = num_gpu_blocks x block_size (labels of ``vllm:cache_config_info``); resident
    tokens round(kv_usage x C) from max_over_time(vllm:kv_cache_usage_perc[1m]); demand =
    resident + waiting x (avg input + avg output tokens), waiting from
    max_over_time(vllm:num_requests_waiting[1m]); memory-bound capacity k1 = C x 0.8;
    compute-bound k2 from (1) the resident tokens when >= 5 requests wait (also kept in a
    10-sample history per output-length bucket), (2) that history's mean, (3)
    min(B O / (I + O), S) x (I + O / 2) from the engine arguments (B 8192, S 256 by
    default), (4) k1; capacity min(k1, k2). Per model: supply = replicas x median
    capacity, anticipated supply adds the pending replicas, required
    RC = max(0, demand / 0.85 - anticipated), spare SC = max(0, supply - demand / 0.70).
    Analyzers vote: any RC > 0 scales up (by ceil(RC / capacity), the most any analyzer
    asks), otherwise all live analyzers must have SC > 0 to scale down (by the fewest
    floor(SC / capacity) any allows), never below one replica. The count is published as
    ``wva_desired_replicas``, read by a KEDA trigger with AverageValue 1 (the llm-d
    guide's pinned v0.9.0 ScaledObject: polling 5 s, replicas 1..10, up window 0, down
    window 60 s). Knob: `scale_up_threshold` (with `scale_down_boundary`).
    Sources: llm-d/llm-d-workload-variant-autoscaler (read from the fork
    deanlorenz/llm-d-workload-variant-autoscaler, whose main is upstream
    2976e4eeee137e3ac1b708dc7d5d333cdddf0e81) at the v0.9.0 release commit
    d5d586408420fbe0545f827a6ff5dc2f818b16de: internal/engines/analyzers/saturation_v2/
    {analyzer.go,constants.go,history.go,deployment_parser.go},
    internal/collector/registration/saturation.go, internal/collector/replica_metrics.go,
    internal/config/saturation_scaling.go, internal/engines/saturation/engine_v2.go,
    internal/engines/aggregation/aggregation.go,
    internal/engines/pipeline/{analyzer_helpers.go,cost_aware_optimizer.go,enforcer.go};
    ScaledObject: zetxqx/llm-d guides/workload-autoscaling/wva/optimized-baseline/keda/
    base/wva-scaledobject.yaml @ 2b9231f5e6d1f0f8ba70110f160350f94c77a072.

Each recipe's ScaledObject is `PeerScaledObject` (plain data, every trigger kept);
`PeerScaledObject.to_spec()` folds it onto the simulator's one-metric `ScaledObjectSpec`
(see its docstring for the raced-trigger case). The policies of `wva-adapter simulate`
built on these rules, reading the cluster through a Prometheus in virtual time
(`adapter.sim.promsim`, which also holds `histogram_quantile`), are in
`adapter.sim.peer_policies`. vLLM's metric names and bucket bounds are in
`adapter.vllm_metrics`; the EPP's, kube-state-metrics' and WVA's names are below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from adapter.sim.hpa import (
    DEFAULT_TOLERANCE,
    Fallback,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricTargetType,
    ScaledObjectSpec,
    to_milli,
)
from adapter.sim.promsim import histogram_quantile as histogram_quantile  # re-exported

RecipeName = Literal["llmd-saturation", "llmd-slo", "wva-saturation"]
RECIPES: Final[tuple[RecipeName, ...]] = ("llmd-saturation", "llmd-slo", "wva-saturation")

KEDA_DEFAULT_COOLDOWN_S: Final = 300.0  # KEDA's cooldownPeriod when a ScaledObject omits it


# --------------------------------------------------------------------------- metric vocabulary

# The series the recipes read that are not vLLM's (vLLM's names and bucket bounds are in
# adapter/vllm_metrics.py). llm-d/llm-d-router pkg/epp/metrics/llm_d_router_metrics.go @
# ebab687927f5331c1b39defcb579a07951bce56c (the EPP's own metrics):
EPP_POOL_SATURATION: Final = "llm_d_epp_flow_control_pool_saturation"  # gauge, per stage
EPP_REQUEST_RUNNING: Final = "llm_d_epp_request_running"  # gauge
EPP_QUEUE_SIZE: Final = "llm_d_epp_flow_control_queue_size"  # gauge
# request received by the EPP to first response byte, observed when the stream ends
# (pkg/epp/handlers/response.go: both latency histograms are recorded at endOfStream)
EPP_TTFT: Final = "llm_d_epp_request_ttft_seconds"
# per streaming request: (e2e - TTFT) / (output tokens - 1), observed when it ends
EPP_TPOT: Final = "llm_d_epp_request_streaming_tpot_seconds"
# kube-state-metrics, as the SLO recipe's triggers read them
KSM_REPLICAS: Final = "kube_deployment_status_replicas"
KSM_READY_REPLICAS: Final = "kube_deployment_status_replicas_ready"
# WVA's published decision (internal/metrics of llm-d-workload-variant-autoscaler)
WVA_DESIRED_REPLICAS: Final = "wva_desired_replicas"

# Histogram bucket bounds (seconds) of the EPP's histograms. The simulator exports
# per-request latencies into exactly these buckets: histogram_quantile interpolates
# inside a bucket, so other bounds give other P90s. Same source as the names above.
EPP_TTFT_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0,
)  # fmt: skip
EPP_TPOT_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.00205, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3, 0.4,
    0.5, 0.6, 0.8, 1.0, 2.0,
)  # fmt: skip


# --------------------------------------------------------------------------- HPA arithmetic


def average_value_replicas(
    value: float, target: float, status_replicas: int, tolerance: float = DEFAULT_TOLERANCE
) -> int:
    """The HPA's proposal for one External metric with an AverageValue target.

    Inside the tolerance band (``1 - tol <= U / (a x status) <= 1 + tol``) the HPA keeps
    the status replica count, otherwise it asks ``ceil(U / a)``; values compare as
    milli-units as KEDA hands them over, and KEDA >= 2.20.2 turns a negative value into
    0. This is `HPASimulator.proposal` (adapter/sim/hpa.py) without the object: the
    recipes race several of these and the HPA keeps the largest.
    """
    usage = max(0, to_milli(value))
    goal = to_milli(target)
    if goal <= 0:
        raise ValueError("an AverageValue target must be at least one milli-unit")
    if status_replicas > 0:
        ratio = usage / (goal * status_replicas)
        if 1.0 - tolerance <= ratio <= 1.0 + tolerance:
            return status_replicas
    return -(-usage // goal)


# --------------------------------------------------------------------------- ScaledObjects


@dataclass(frozen=True, slots=True)
class Trigger:
    """One KEDA trigger as the recipe ships it (the query is kept as documentation)."""

    name: str
    query: str
    metric_type: MetricTargetType
    target: float
    activation_target: float = 0.0  # none of the recipes sets one: KEDA's default 0


@dataclass(frozen=True, slots=True)
class PeerScaledObject:
    """A recipe's ScaledObject as plain data: every trigger, the HPA behavior, the bounds.

    `composite` is the scalingModifiers metric when the recipe has one (its formula
    output is what the HPA sees); `hpa_tolerance` is the cluster default, which none of
    the recipes overrides in its behavior block.
    """

    recipe: RecipeName
    polling_interval_s: float
    cooldown_s: float
    min_replicas: int
    max_replicas: int
    triggers: tuple[Trigger, ...]
    behavior: HorizontalPodAutoscalerBehavior
    fallback: Fallback | None = None
    composite: Trigger | None = None
    initial_cooldown_s: float = 0.0
    hpa_tolerance: float = DEFAULT_TOLERANCE

    @property
    def raced(self) -> bool:
        """Several triggers, each its own HPA metric (no formula combines them)."""
        return self.composite is None and len(self.triggers) > 1

    def to_spec(self) -> ScaledObjectSpec:
        """The simulator's one-metric `ScaledObjectSpec` for this recipe.

        One trigger or a formula: that metric's type and target, behavior unchanged.
        Raced triggers (llmd-saturation): the HPA computes one tolerance-checked
        proposal per metric and keeps the largest, which one metric cannot express. The
        spec then expects `llmd_saturation_proposal(...).replicas` as its metric, with
        target AverageValue 1 and tolerance 0 both ways, so that value passes through
        unchanged (the per-metric tolerance was already applied inside the proposal);
        stabilization and rate policies then act on it as on the real maximum.
        """
        behavior = self.behavior
        if self.composite is not None:
            metric_type, target = self.composite.metric_type, self.composite.target
        elif len(self.triggers) == 1:
            metric_type, target = self.triggers[0].metric_type, self.triggers[0].target
        else:
            metric_type, target = "AverageValue", 1.0
            behavior = HorizontalPodAutoscalerBehavior(
                scaleUp=replace(behavior.scaleUp or HPAScalingRules(), tolerance=0.0),
                scaleDown=replace(behavior.scaleDown or HPAScalingRules(), tolerance=0.0),
            )
        return ScaledObjectSpec(
            pollingInterval=self.polling_interval_s,
            cooldownPeriod=self.cooldown_s,
            initialCooldownPeriod=self.initial_cooldown_s,
            minReplicaCount=self.min_replicas,
            maxReplicaCount=self.max_replicas,
            fallback=self.fallback,
            behavior=behavior,
            metricType=metric_type,
            target=target,
        )


def _rules(window_s: int, *policies: HPAScalingPolicy) -> HPAScalingRules:
    return HPAScalingRules(
        stabilizationWindowSeconds=window_s, selectPolicy="Max", policies=policies
    )


# --------------------------------------------------------------------------- llmd-saturation

SaturationSignal = Literal["saturation", "queue"]

LLMD_SATURATION_TARGET: Final = 0.7
LLMD_QUEUE_TARGET: Final = 1.0
LLMD_RUNNING_TARGET: Final = 16.0
EPP_QUEUE_DEPTH_THRESHOLD: Final = 5  # utilization-detector queueDepthThreshold default
EPP_KV_CACHE_UTIL_THRESHOLD: Final = 0.8  # utilization-detector kvCacheUtilThreshold default


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """One endpoint of the InferencePool as the EPP's utilization detector reads it."""

    waiting: float  # vllm:num_requests_waiting
    kv_cache_usage: float  # vllm:kv_cache_usage_perc, a fraction 0..1
    stale: bool = False  # metrics missing or older than the staleness threshold


def epp_pool_saturation(
    endpoints: Sequence[EndpointLoad],
    *,
    queue_depth_threshold: float = EPP_QUEUE_DEPTH_THRESHOLD,
    kv_cache_util_threshold: float = EPP_KV_CACHE_UTIL_THRESHOLD,
) -> float:
    """``llm_d_epp_flow_control_pool_saturation`` under the default utilization detector.

    Each endpoint scores its most constrained resource, max(waiting / 5, KV / 0.8); the
    pool is the unweighted mean. An endpoint with stale metrics scores 1.0 (fail-closed)
    and an empty pool reads 1.0. 1.0 is where flow control stops dispatching. In a pool
    without P/D roles the prefill, decode and effective stages are this same value, so
    the recipe's ``max(...)`` over the stage label is it too.
    """
    if not endpoints:
        return 1.0
    total = 0.0
    for endpoint in endpoints:
        if endpoint.stale:
            total += 1.0
            continue
        total += max(
            endpoint.waiting / queue_depth_threshold,
            endpoint.kv_cache_usage / kv_cache_util_threshold,
        )
    return total / len(endpoints)


@dataclass(frozen=True, slots=True)
class PoolReadings:
    """What llmd-saturation's PromQL returns at one HPA sync."""

    pool_saturation: float  # max(llm_d_epp_flow_control_pool_saturation{inference_pool=...})
    running_requests: float  # sum(llm_d_epp_request_running{model_name=...})
    queue_size: float = 0.0  # sum(llm_d_epp_flow_control_queue_size{model_name=...})


@dataclass(frozen=True, slots=True)
class LlmdSaturationProposal:
    """The per-trigger HPA proposals; the HPA acts on the larger one."""

    signal_replicas: int  # the pool-saturation (or queue) trigger's
    running_replicas: int  # the running-requests trigger's

    @property
    def replicas(self) -> int:
        return max(self.signal_replicas, self.running_replicas)


def llmd_saturation_proposal(
    readings: PoolReadings,
    status_replicas: int,
    *,
    signal: SaturationSignal = "saturation",
    saturation_target: float = LLMD_SATURATION_TARGET,
    queue_target: float = LLMD_QUEUE_TARGET,
    running_target: float = LLMD_RUNNING_TARGET,
    tolerance: float = DEFAULT_TOLERANCE,
) -> LlmdSaturationProposal:
    """Both triggers' proposals, each an AverageValue metric checked against tolerance.

    `saturation_target` is the recipe's knob (0.7). Note the literal consequence of an
    AverageValue target on a pool-wide ratio: the proposal is ceil(saturation / 0.7), not
    a per-replica quantity, so at saturation <= 1.4 it asks at most two replicas.
    """
    if signal == "saturation":
        signal_value, signal_target = readings.pool_saturation, saturation_target
    elif signal == "queue":
        signal_value, signal_target = readings.queue_size, queue_target
    else:
        raise ValueError(f"unknown signal {signal!r}")
    return LlmdSaturationProposal(
        signal_replicas=average_value_replicas(
            signal_value, signal_target, status_replicas, tolerance
        ),
        running_replicas=average_value_replicas(
            readings.running_requests, running_target, status_replicas, tolerance
        ),
    )


def llmd_saturation_scaled_object(
    *,
    signal: SaturationSignal = "saturation",
    saturation_target: float = LLMD_SATURATION_TARGET,
    queue_target: float = LLMD_QUEUE_TARGET,
    running_target: float = LLMD_RUNNING_TARGET,
) -> PeerScaledObject:
    """The keda-epp overlay (generic Kubernetes, stabilization-window overshoot solution).

    Saturation overlay: maxReplicaCount 10; queue overlay: 8. Both: pollingInterval 15,
    cooldownPeriod 300 (only matters for scale to zero), minReplicaCount 1, no
    activation threshold, no fallback, scale-up and scale-down windows 300 s with
    Percent 100 per 15 s.
    """
    pool = 'inference_pool="${INFERENCE_POOL}",namespace="${NAMESPACE}"'
    model = 'namespace="${NAMESPACE}",service="${EPP_SERVICE}",model_name="${MODEL}"'
    running = Trigger(
        "epp-running-requests",
        f"sum({EPP_REQUEST_RUNNING}{{{model}}})",
        "AverageValue",
        running_target,
    )
    if signal == "saturation":
        first = Trigger(
            "pool-saturation",
            f"max({EPP_POOL_SATURATION}{{{pool}}})",
            "AverageValue",
            saturation_target,
        )
        max_replicas = 10
    elif signal == "queue":
        first = Trigger(
            "epp-queue-size",
            f"sum({EPP_QUEUE_SIZE}{{{model}}})",
            "AverageValue",
            queue_target,
        )
        max_replicas = 8
    else:
        raise ValueError(f"unknown signal {signal!r}")
    every_15s = HPAScalingPolicy(type="Percent", value=100, periodSeconds=15)
    return PeerScaledObject(
        recipe="llmd-saturation",
        polling_interval_s=15.0,
        cooldown_s=300.0,
        min_replicas=1,
        max_replicas=max_replicas,
        triggers=(first, running),
        behavior=HorizontalPodAutoscalerBehavior(
            scaleUp=_rules(300, every_15s), scaleDown=_rules(300, every_15s)
        ),
    )


# --------------------------------------------------------------------------- llmd-slo

SLO_TTFT_S: Final = 3.0
SLO_TPOT_S: Final = 0.1
SLO_QUANTILE: Final = 0.9
SLO_RATE_WINDOW_S: Final = 60.0  # rate(...[1m]) inside histogram_quantile
SLO_RULE_INTERVAL_S: Final = 15.0  # the recording rules' group interval
SLO_CAP: Final = 2.0  # clamp_max before smoothing
SLO_SMOOTHING_S: Final = 45.0  # avg_over_time(...[45s])
SLO_THETA_UP: Final = 0.55
SLO_THETA_DN: Final = 0.40
# the recording rules' output series (slo-aware/prometheus-rule.yaml)
SLO_TTFT_P90_RULE: Final = "epp:latency_ttft_p90:seconds"
SLO_TPOT_P90_RULE: Final = "epp:latency_tpot_p90:seconds"
SLO_RAW_RULE: Final = "epp:saturation:raw"
SLO_CLAMPED_RULE: Final = "epp:saturation:clamped"
SLO_SMOOTHED_RULE: Final = "epp:saturation:smoothed"


def slo_raw_saturation(
    ttft_p90_s: float,
    tpot_p90_s: float,
    *,
    ttft_slo_s: float = SLO_TTFT_S,
    tpot_slo_s: float = SLO_TPOT_S,
) -> float:
    """``epp:saturation:raw``: the worse of P90 TTFT / SLO and P90 TPOT / SLO.

    Each P90 that is NaN (no traffic in the window) or negative counts as 0, as the
    rules' ``>= 0 ... or vector(0)`` make it; an idle pool therefore reads 0.
    """

    def ratio(p90: float, slo: float) -> float:
        return p90 / slo if p90 >= 0 else 0.0  # NaN >= 0 is False

    return max(ratio(ttft_p90_s, ttft_slo_s), ratio(tpot_p90_s, tpot_slo_s))


@dataclass(frozen=True, slots=True)
class SloSignal:
    """``epp:saturation:smoothed``: the clamped raw samples inside the smoothing window.

    Call `record` at every rule evaluation (every 15 s); the window is left-open, as
    range selectors are since Prometheus 3.0, so a 45 s window at 15 s holds 3 samples.
    """

    samples: tuple[tuple[float, float], ...] = ()  # (evaluation time s, clamped value)

    def record(
        self, now: float, raw: float, *, cap: float = SLO_CAP, window_s: float = SLO_SMOOTHING_S
    ) -> SloSignal:
        kept = tuple((t, v) for t, v in self.samples if t > now - window_s)
        return SloSignal((*kept, (now, min(raw, cap))))

    @property
    def smoothed(self) -> float:
        """The mean of the window; 0 before any sample (KEDA reads an empty result as 0)."""
        if not self.samples:
            return 0.0
        return sum(v for _, v in self.samples) / len(self.samples)


def slo_desired_replicas(
    saturation: float,
    replicas: float,
    ready_replicas: float,
    *,
    theta_up: float = SLO_THETA_UP,
    theta_dn: float = SLO_THETA_DN,
) -> float:
    """The recipe's scalingModifiers formula: the desired replica count it hands the HPA.

    `saturation` is the smoothed signal, `replicas` kube_deployment_status_replicas (pods
    provisioned), `ready_replicas` kube_deployment_status_replicas_ready. Above
    `theta_up` (the knob, 0.55) the demand is credited by ready / provisioned while
    pods are warming (so the ask can even shrink below n); below `theta_dn` (0.40) the
    uncredited signal sheds a fraction of the pool; in between nothing changes.
    """
    n, r, s = float(replicas), float(ready_replicas), saturation
    if s > theta_up:
        credit = r / n if 0 < r < n else 1.0
        return n + math.ceil(n * (s * credit / theta_up - 1))
    if s < theta_dn:
        return n - math.floor(n * (1 - s / theta_dn))
    return n


def llmd_slo_scaled_object(*, min_replicas: int = 3, max_replicas: int = 8) -> PeerScaledObject:
    """slo-aware/scaledobject.yaml: three triggers folded by a formula, target "1".

    No cooldownPeriod (KEDA's 300 s), no fallback, no tolerance override.
    """
    deployment = (
        'namespace="llm-d-optimized-baseline",'
        'deployment="optimized-baseline-nvidia-gpu-vllm-decode"'
    )
    return PeerScaledObject(
        recipe="llmd-slo",
        polling_interval_s=15.0,
        cooldown_s=KEDA_DEFAULT_COOLDOWN_S,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        triggers=(
            Trigger("saturation", SLO_SMOOTHED_RULE, "AverageValue", 1.0),
            Trigger(
                "replicas",
                f"max({KSM_REPLICAS}{{{deployment}}})",
                "AverageValue",
                1.0,
            ),
            Trigger(
                "readyReplicas",
                f"max({KSM_READY_REPLICAS}{{{deployment}}})",
                "AverageValue",
                1.0,
            ),
        ),
        composite=Trigger("composite", "scalingModifiers.formula", "AverageValue", 1.0),
        behavior=HorizontalPodAutoscalerBehavior(
            scaleUp=_rules(
                30,
                HPAScalingPolicy(type="Percent", value=100, periodSeconds=60),
                HPAScalingPolicy(type="Pods", value=4, periodSeconds=60),
            ),
            scaleDown=_rules(180, HPAScalingPolicy(type="Pods", value=1, periodSeconds=120)),
        ),
    )


# --------------------------------------------------------------------------- wva-saturation

WVA_SCALE_UP_THRESHOLD: Final = 0.85
WVA_SCALE_DOWN_BOUNDARY: Final = 0.70
WVA_KV_CACHE_THRESHOLD: Final = 0.80
WVA_QUEUE_LENGTH_THRESHOLD: Final = 5.0
WVA_CYCLE_S: Final = 15.0  # GLOBAL_OPT_INTERVAL default
WVA_HISTORY_SIZE: Final = 10  # RollingAverageWindowSize
WVA_BYTES_PER_TOKEN: Final = 4
VLLM_MAX_NUM_SEQS: Final = 256  # WVA's parser default for --max-num-seqs
VLLM_V1_MAX_BATCHED_TOKENS: Final = 8192  # WVA's default for a V1 engine (chunked prefill)

K2Source = Literal["observed", "historical", "derived", "k1"]


@dataclass(frozen=True, slots=True)
class WvaReplica:
    """One vLLM instance as WVA's collector queries return it (per pod, DP = 1)."""

    kv_cache_usage: float  # max_over_time(vllm:kv_cache_usage_perc[1m]), fraction 0..1
    waiting: float  # max_over_time(vllm:num_requests_waiting[1m])
    num_gpu_blocks: int  # vllm:cache_config_info label
    block_size: int  # vllm:cache_config_info label
    avg_input_tokens: float = 0.0  # rate(prompt_tokens_sum[5m]) / rate(_count[5m]); 0: none
    avg_output_tokens: float = 0.0  # the same over vllm:request_generation_tokens
    prefix_cache_hit_rate: float = 0.0  # rate(prefix_cache_hits) / rate(prefix_cache_queries)


@dataclass(frozen=True, slots=True)
class WvaReadings:
    """What WVA reads for one model (one variant) in one cycle."""

    replicas: tuple[WvaReplica, ...]  # every instance that reports metrics
    current_replicas: int  # scale target status.replicas (spec.replicas when that is 0)
    ready_replicas: int  # status.readyReplicas
    scheduler_queue_size: float = 0.0  # sum(inference_extension_flow_control_queue_size)
    scheduler_queue_bytes: float = 0.0  # sum(inference_extension_flow_control_queue_bytes)


@dataclass(frozen=True, slots=True)
class WvaConfig:
    """The saturation-scaling ConfigMap's defaults and the engine arguments WVA parses."""

    scale_up_threshold: float = WVA_SCALE_UP_THRESHOLD
    scale_down_boundary: float = WVA_SCALE_DOWN_BOUNDARY
    kv_cache_threshold: float = WVA_KV_CACHE_THRESHOLD
    queue_length_threshold: float = WVA_QUEUE_LENGTH_THRESHOLD
    max_num_seqs: int = VLLM_MAX_NUM_SEQS
    max_num_batched_tokens: int = VLLM_V1_MAX_BATCHED_TOKENS
    # the ScaledObject's minReplicaCount / maxReplicaCount, which WVA copies onto the
    # variant it synthesizes from the annotated ScaledObject (wva_scaled_object: 1 / 10)
    min_replicas: int | None = 1
    max_replicas: int | None = 10
    scale_to_zero: bool = False  # default off: at least one replica is kept

    def __post_init__(self) -> None:
        if not 0 < self.scale_down_boundary < self.scale_up_threshold <= 1:
            raise ValueError("need 0 < scale_down_boundary < scale_up_threshold <= 1")
        if not 0 < self.kv_cache_threshold <= 1:
            raise ValueError("kv_cache_threshold must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class WvaState:
    """What WVA carries from one cycle to the next for this model.

    `k2_history`: the last 10 observed compute-bound capacities per output-length bucket
    ("short" < 100 tokens <= "medium" < 500 <= "long"); `stored_capacity`: the last live
    per-replica capacity (used while no replica reports); `last_desired`: the count it
    published last, kept when a cycle decides nothing.
    """

    k2_history: tuple[tuple[str, tuple[float, ...]], ...] = ()
    stored_capacity: int | None = None
    last_desired: int | None = None

    def history(self, bucket: str) -> tuple[float, ...]:
        return dict(self.k2_history).get(bucket, ())


@dataclass(frozen=True, slots=True)
class AnalyzerVote:
    """One analyzer's calibrated result: required and spare capacity, in its own units."""

    name: str
    required: float  # RC: capacity to add (> 0 votes for scale-up)
    spare: float  # SC: capacity that could go (> 0 on every live analyzer allows scale-down)
    per_replica_capacity: float  # its capacity of one replica of the variant
    live: bool = True  # an informative result in the last 3 cycles (vetoes only if live)


@dataclass(frozen=True, slots=True)
class WvaReplicaCapacity:
    """The analyzer's per-replica breakdown (tokens)."""

    total_kv_tokens: int
    tokens_in_use: int
    demand: int
    k1: int
    k2: int
    k2_source: K2Source
    capacity: int  # min(k1, k2)


@dataclass(frozen=True, slots=True)
class WvaAnalysis:
    """The saturation analyzer's model-level result for one cycle (tokens)."""

    replicas: tuple[WvaReplicaCapacity, ...]
    replica_count: int
    pending_replicas: int
    per_replica_capacity: float
    supply: float
    anticipated_supply: float
    demand: float
    vote: AnalyzerVote | None  # None: no live replica and nothing stored (no data)

    @property
    def utilization(self) -> float:
        return self.demand / self.supply if self.supply > 0 else 0.0


def _output_bucket(avg_output_tokens: float) -> str:
    if avg_output_tokens < 100:
        return "short"
    if avg_output_tokens < 500:
        return "medium"
    return "long"


def _round_half_away(x: float) -> int:
    """Go's math.Round for x >= 0 (Python's round() rounds halves to even)."""
    return math.floor(x + 0.5)


def _go_median(values: Sequence[int]) -> int:
    """The analyzer's median: the mean of the two middle values, integer-truncated."""
    ordered = sorted(values)
    n = len(ordered)
    if n % 2 == 0:
        return (ordered[n // 2 - 1] + ordered[n // 2]) // 2
    return ordered[n // 2]


def _waiting_demand(queue_length: int, avg_input: float, avg_output: float) -> int:
    """KV tokens the local queue will need: waiting x (input + output), a peak charge."""
    if queue_length <= 0:
        return 0
    demand = queue_length * (avg_input + avg_output)
    if not demand > 0 or demand >= 2.0**63:
        return 0
    return int(demand)


def _derived_k2(config: WvaConfig, avg_input: float, avg_output: float) -> int:
    """k2 from the engine arguments: steady concurrency min(B O / (I + O), S) x (I + O/2)."""
    if config.max_num_batched_tokens <= 0 or avg_output <= 0:
        return 0
    steady = config.max_num_batched_tokens * avg_output / (avg_input + avg_output)
    steady = min(steady, float(config.max_num_seqs))
    return max(int(steady * (avg_input + avg_output / 2)), 0)


def _scheduler_queue_demand(readings: WvaReadings) -> float:
    """Tokens of requests held in the EPP's flow-control queue (model level, role "both")."""
    size, size_bytes = readings.scheduler_queue_size, readings.scheduler_queue_bytes
    if size == 0 and size_bytes == 0:
        return 0.0
    shaped = [r for r in readings.replicas if r.avg_input_tokens > 0 or r.avg_output_tokens > 0]
    n = len(shaped)
    avg_in = sum(r.avg_input_tokens for r in shaped) / n if n else 0.0
    avg_out = sum(r.avg_output_tokens for r in shaped) / n if n else 0.0
    hit = sum(r.prefix_cache_hit_rate for r in shaped) / n if n else 0.0
    input_tokens = max(size_bytes / WVA_BYTES_PER_TOKEN, size * avg_in) * (1 - hit)
    return input_tokens + size * avg_out


def wva_analyze(
    readings: WvaReadings, config: WvaConfig = WvaConfig(), state: WvaState = WvaState()
) -> tuple[WvaAnalysis, WvaState]:
    """The V2 saturation analyzer plus the engine's threshold post-step, for one cycle.

    Per replica: capacity min(k1, k2) and demand in KV tokens (see the module
    docstring). Per model: supply = replicas x median capacity, anticipated supply adds
    the pending replicas, demand sums the replicas' and the flow-control queue's; then
    RC = max(0, demand / scale_up_threshold - anticipated) and
    SC = max(0, supply - demand / scale_down_boundary). A replica without
    ``vllm:cache_config_info`` is skipped (WVA's own fallback for that case needs a
    store record this simulation does not keep).
    """
    history = {bucket: list(values) for bucket, values in state.k2_history}
    stored = state.stored_capacity
    queue_threshold = int(config.queue_length_threshold)
    breakdown: list[WvaReplicaCapacity] = []
    for replica in readings.replicas:
        total = replica.num_gpu_blocks * replica.block_size
        if total <= 0:
            continue
        in_use = min(max(_round_half_away(replica.kv_cache_usage * total), 0), total)
        queue_length = int(replica.waiting)
        need = in_use + _waiting_demand(
            queue_length, replica.avg_input_tokens, replica.avg_output_tokens
        )
        k1 = int(total * config.kv_cache_threshold)
        bucket = _output_bucket(replica.avg_output_tokens)
        past = history.setdefault(bucket, [])
        k2: int
        source: K2Source
        if queue_length >= queue_threshold and in_use > 0:
            k2, source = in_use, "observed"
            past.append(float(in_use))
            del past[:-WVA_HISTORY_SIZE]
        elif past and sum(past) / len(past) > 0:
            k2, source = int(sum(past) / len(past)), "historical"
        else:
            derived = _derived_k2(config, replica.avg_input_tokens, replica.avg_output_tokens)
            k2, source = (derived, "derived") if derived > 0 else (k1, "k1")
        capacity = min(k1, k2)
        stored = capacity  # the capacity store keeps the last live record
        breakdown.append(WvaReplicaCapacity(total, in_use, need, k1, k2, source, capacity))

    ready = max(readings.ready_replicas, 0)
    pending = max(readings.current_replicas - ready, 0)
    if breakdown:
        per_replica = float(_go_median([b.capacity for b in breakdown]))
        count = len(breakdown)
        if ready > 0 and count // ready > 1:  # data-parallel instances per pod
            pending *= count // ready
        replica_demand = float(sum(b.demand for b in breakdown))
    elif stored is not None and stored > 0:
        per_replica, count, replica_demand = float(stored), ready, 0.0
    else:
        per_replica, count, replica_demand = 0.0, ready, 0.0

    supply = count * per_replica
    anticipated = (count + pending) * per_replica
    demand = replica_demand + _scheduler_queue_demand(readings)
    vote: AnalyzerVote | None = None
    if breakdown or per_replica > 0:
        vote = AnalyzerVote(
            name="saturation",
            required=max(0.0, demand / config.scale_up_threshold - anticipated),
            spare=max(0.0, supply - demand / config.scale_down_boundary),
            per_replica_capacity=per_replica,
        )
    new_state = replace(
        state,
        k2_history=tuple(sorted((b, tuple(v)) for b, v in history.items() if v)),
        stored_capacity=stored,
    )
    analysis = WvaAnalysis(
        replicas=tuple(breakdown),
        replica_count=count,
        pending_replicas=pending,
        per_replica_capacity=per_replica,
        supply=supply,
        anticipated_supply=anticipated,
        demand=demand,
        vote=vote,
    )
    return analysis, new_state


def wva_combine(
    current: int,
    votes: Sequence[AnalyzerVote],
    *,
    anchor_capacity: float,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> int:
    """The cost-aware optimizer for one variant: any analyzer may scale up, all must agree
    to scale down.

    Scale-up (some RC > 0): add the most replicas any analyzer asks, ceil(RC / its
    per-replica capacity), repeating while any remaining RC is left after subtracting
    the anchor's (saturation's) capacity per added replica, never above `max_replicas`.
    Otherwise scale-down, only if every live analyzer has SC > 0 (a non-live one does not
    veto, and with none live nothing goes): remove the fewest any live analyzer allows,
    floor(SC / its capacity), down to `min_replicas` and never below one replica.
    """
    target = current
    if anchor_capacity <= 0:
        return target
    remaining = [v.required for v in votes]
    if any(r > 0 for r in remaining):  # the scale-up path; it excludes scale-down
        return _scale_up(target, votes, remaining, anchor_capacity, max_replicas)
    return _scale_down(current, votes, min_replicas)


def _scale_up(
    target: int,
    votes: Sequence[AnalyzerVote],
    remaining: list[float],
    anchor_capacity: float,
    max_replicas: int | None,
) -> int:
    """The optimizer's allocation loop for one variant (see `wva_combine`)."""
    capped = max_replicas is not None and max_replicas > 0
    while any(r > 0 for r in remaining):
        headroom = max_replicas - target if capped and max_replicas is not None else None
        if headroom is not None and headroom <= 0:
            break
        n = 0
        for vote, left in zip(votes, remaining, strict=True):
            if vote.per_replica_capacity > 0:
                n = max(n, math.ceil(left / vote.per_replica_capacity))
        if headroom is not None:
            n = min(n, headroom)
        demand = max(remaining)
        utilization = n * anchor_capacity / demand
        if utilization <= 0:
            break
        k = max(math.floor(utilization * demand / anchor_capacity), min(1, n))
        if k <= 0:
            break
        target += k
        remaining = [max(0.0, left - k * anchor_capacity) for left in remaining]
    return target


def _scale_down(current: int, votes: Sequence[AnalyzerVote], min_replicas: int | None) -> int:
    """The optimizer's all-live-analyzers-agree removal for one variant (see `wva_combine`)."""
    live = [v for v in votes if v.live]
    if not live or any(v.spare <= 0 for v in live):
        return current
    removable = [
        math.floor(v.spare / v.per_replica_capacity) for v in live if v.per_replica_capacity > 0
    ]
    if not removable:
        return current
    n = min(min(removable), current - (min_replicas or 0))
    if current - n < 1:  # the cheapest (here: the only) variant keeps one replica
        n = current - 1
    return current - n if n > 0 else current


@dataclass(frozen=True, slots=True)
class WvaDecision:
    """What one WVA cycle publishes as ``wva_desired_replicas``, and why."""

    desired_replicas: int
    analysis: WvaAnalysis
    state: WvaState
    reason: Literal["scale-up", "scale-down", "no-change", "no-data"]


def wva_desired_replicas(
    readings: WvaReadings,
    config: WvaConfig = WvaConfig(),
    state: WvaState = WvaState(),
    extra_votes: Sequence[AnalyzerVote] = (),
) -> WvaDecision:
    """One WVA cycle: analyze, combine the votes, enforce the one-replica minimum.

    `extra_votes` are other enabled analyzers (v0.9 ships only saturation enabled; the
    throughput analyzer is in tree but off). Without saturation data the model is not
    sized and the previous published count (else the current one) is repeated.
    """
    analysis, new_state = wva_analyze(readings, config, state)
    current = readings.current_replicas
    if analysis.vote is None:
        held = state.last_desired if state.last_desired else current
        return WvaDecision(held, analysis, replace(new_state, last_desired=held), "no-data")
    target = wva_combine(
        current,
        (analysis.vote, *extra_votes),
        anchor_capacity=analysis.per_replica_capacity,
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
    )
    if not config.scale_to_zero and target < 1:
        target = 1
    reason: Literal["scale-up", "scale-down", "no-change"] = (
        "scale-up" if target > current else "scale-down" if target < current else "no-change"
    )
    return WvaDecision(target, analysis, replace(new_state, last_desired=target), reason)


def wva_scaled_object(*, min_replicas: int = 1, max_replicas: int = 10) -> PeerScaledObject:
    """The llm-d guide's ScaledObject for WVA v0.9.0 (wva/optimized-baseline/keda/base).

    One trigger on ``wva_desired_replicas`` with AverageValue 1 (the guide's fix: WVA's
    own sample used Value, which the HPA multiplies by the replica count), activation 0,
    pollingInterval 5, cooldownPeriod 30, initialCooldownPeriod 30, fallback 2 replicas
    after 3 failures (currentReplicasIfHigher), up window 0 / down window 60 s, each
    max(100 % per 30 s, 5 pods per 15 s).
    """
    policies = (
        HPAScalingPolicy(type="Percent", value=100, periodSeconds=30),
        HPAScalingPolicy(type="Pods", value=5, periodSeconds=15),
    )
    return PeerScaledObject(
        recipe="wva-saturation",
        polling_interval_s=5.0,
        cooldown_s=30.0,
        initial_cooldown_s=30.0,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        triggers=(
            Trigger(
                "wva-desired-replicas",
                WVA_DESIRED_REPLICAS + '{variant_name="<ScaledObject name>",namespace="<ns>"}',
                "AverageValue",
                1.0,
            ),
        ),
        behavior=HorizontalPodAutoscalerBehavior(
            scaleUp=_rules(0, *policies), scaleDown=_rules(60, *policies)
        ),
        fallback=Fallback(failureThreshold=3, replicas=2, behavior="currentReplicasIfHigher"),
    )


def scaled_object(recipe: RecipeName) -> PeerScaledObject:
    """Each recipe's ScaledObject with the recipe's defaults."""
    if recipe == "llmd-saturation":
        return llmd_saturation_scaled_object()
    if recipe == "llmd-slo":
        return llmd_slo_scaled_object()
    if recipe == "wva-saturation":
        return wva_scaled_object()
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
