"""The autoscaling policies compared by `wva-adapter simulate`, each with its own cycle.

- `ours`: this adapter. The real decision path (`Engine.run_cycle`: assemble ->
  optimize -> snapshot) every 15 s on the Deployment's counters rated over the last
  cycle by the pod scraper's own code (`ClusterMetrics`), arrival rate included:
  completions plus the growth of running + waiting. The snapshot is served by the real
  `ScalerService` (`desired`, staleness included) to KEDA + HPA set up as
  `keda/scaledobject.yaml` (AverageValue target 1, tolerance 0, no scale-up window,
  180 s scale-down window, +100 % / +4 pods per 15 s, fallback). The HPA syncs half a
  period after the adapter's cycle by default: in a cluster the two clocks have an
  arbitrary phase, half a period is its mean (`hpa_phase_s` sets it).
- `wva-tutorial`: the tutorial-era WVA controller: the same optimizer (golden-tested
  against the tutorial's logs) every 60 s on 1-minute rate windows, writing
  spec.replicas directly (no HPA, no smoothing). Its arrival rate is the completion
  rate, `rate(vllm:request_success_total[1m])` as that WVA queried it: it lags a step by
  a request's duration and overshoots while a backlog drains, and that is kept on
  purpose, since it is part of what is compared.
- `keda-queue`: vLLM production-stack's KEDA recipe: a Prometheus trigger on
  `sum(vllm:num_requests_waiting)` with AverageValue 5, and KEDA/HPA defaults: polling
  30 s, HPA sync 15 s, no `behavior` (the legacy HPA path: 10 % tolerance, 300 s
  scale-down stabilization, scale-up capped at max(2 x current, 4)). The queue is read
  at the instant of each HPA sync (an ideal, fresh Prometheus sample).

All share min/max replicas and the VariantAutoscaling + ConfigMaps of the samples. Each
loop's first decision is at t = 0 by default, on the traces' whole minutes; `phase` in
`build_policy` moves it within the policy's cycle (reaction depends on where a step falls
in the cycle).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, Protocol

from adapter.assemble import AssemblySettings, build_system
from adapter.collect.gateway import GatewayQueue, GatewayReport
from adapter.collect.metrics import LoadKey, LoadReport, MetricsWarmingUp, ModelLoad
from adapter.collect.scrape import Scrape, ScrapeTotals
from adapter.defaults import DEFAULT_RETENTION_S, SIM_POLICIES
from adapter.emulator.batching import ServingProfile
from adapter.engine import CycleError, Engine, metric_keys
from adapter.learning import ProfileLearning
from adapter.lookahead import LookAhead
from adapter.model.kube import (
    ACCELERATOR_COSTS_CONFIGMAP,
    ClusterSnapshot,
    parse_accelerator_costs,
)
from adapter.optimizer import DEFAULT_ATTAINMENT
from adapter.scaler.service import ScalerService, ScalerSettings
from adapter.sim.clairvoyant import CapacityTable, ClairvoyantPolicy, SteadyState, schedule
from adapter.sim.cluster import SimCluster
from adapter.sim.hpa import (
    DEFAULT_SYNC_PERIOD_SECONDS,
    Fallback,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    KedaDriven,
    KedaLoop,
    ScaledObjectSpec,
)
from adapter.sim.peer_policies import (
    PEER_CYCLE_S,
    LlmdSaturationPolicy,
    LlmdSloPolicy,
    WvaSaturationPolicy,
)
from adapter.sim.peers import (
    LLMD_RUNNING_TARGET,
    LLMD_SATURATION_TARGET,
    SLO_THETA_UP,
    WVA_SCALE_UP_THRESHOLD,
)
from adapter.sim.traces import RequestShape, Trace
from adapter.vllm_metrics import (
    INTER_TOKEN_LATENCY,
    KV_CACHE_USAGE,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_GENERATION_TOKENS,
    REQUEST_PROMPT_TOKENS,
    REQUEST_QUEUE_TIME,
    REQUEST_SUCCESS,
    TIME_TO_FIRST_TOKEN,
)
from adapter.waker import DEFAULT_POLL_S, Waker, parked
from adapter.zero import ScaleToZero

POLICIES = SIM_POLICIES  # the CLI lists them
DESCRIPTIONS = {
    "ours": "adapter every 15 s, arrivals = completions + growth of running + waiting over"
    " the 15 s window (as the pod scraper) -> KEDA/HPA as keda/scaledobject.yaml",
    "wva-tutorial": "optimizer every 60 s, arrivals = completion rate over 1 m windows,"
    " spec.replicas set directly",
    "keda-queue": f"KEDA sum({NUM_REQUESTS_WAITING.name}) AverageValue 5, KEDA/HPA defaults",
    "clairvoyant": "the floor: knows the trace, the true profile and the start-up; the fewest"
    " replicas that hold the share at each moment's rate, each ready when needed",
    "causal-floor": "the clairvoyant for a policy that sees only the past, perfectly: a"
    " replica starts a start-up before it is needed but not before its climb began",
    "llmd-saturation": "llm-d keda-epp saturation overlay (llm-d/llm-d guides/workload-"
    "autoscaling/keda-epp): max(EPP pool saturation) AverageValue 0.7 raced with sum(EPP"
    " running) AverageValue 16, 300 s windows; Prometheus scrape 15 s",
    "llmd-slo": "llm-d SLO-aware KEDA recipe (llm-d/llm-d guides/workload-autoscaling/"
    "slo-aware): P90 of the EPP's TTFT and TPOT over 1 m / the SLOs, avg 45 s, scale up"
    " above 0.55, down below 0.40; Prometheus scrape and rules 15 s",
    "wva-saturation": "WVA v0.9.0 V2 saturation analyzer (llm-d/llm-d-workload-variant-"
    "autoscaler): KV-token demand / capacity over 1 m maxima, up above 0.85, down below"
    " 0.70, every 15 s -> wva_desired_replicas -> KEDA (llm-d guide's ScaledObject)",
}
OURS_INTERVAL_S = 15.0
TUTORIAL_INTERVAL_S = 60.0
QUEUE_TARGET = 5.0
QUEUE_POLLING_S = 30.0  # KEDA's default pollingInterval


class SetupError(ValueError):
    """The samples do not describe one variant the simulator can run."""


@dataclass(frozen=True, slots=True)
class SimSetup:
    """The variant under test, as the adapter reads it from the samples."""

    snapshot: ClusterSnapshot
    variant: tuple[str, str]  # (namespace, name) of the VA and its Deployment
    model: str
    accelerator: str
    profile: ServingProfile
    slo_itl_ms: float
    slo_ttft_ms: float
    unit_cost: float  # per accelerator unit, per hour
    gpus_per_replica: int

    @property
    def load_key(self) -> LoadKey:
        return (self.variant[0], self.model)

    def with_replicas(self, replicas: int, ready: int) -> ClusterSnapshot:
        """The snapshot with the Deployment as the simulation has it now."""
        base = self.snapshot
        deployment = dict(base.deployments[self.variant])
        deployment["spec"] = {**deployment.get("spec", {}), "replicas": replicas}
        deployment["status"] = {"replicas": replicas, "readyReplicas": ready}
        deployments = dict(base.deployments)
        deployments[self.variant] = deployment
        return ClusterSnapshot(
            variant_autoscalings=base.variant_autoscalings,
            config_maps=base.config_maps,
            nodes=base.nodes,
            deployments=MappingProxyType(deployments),
            config_namespace=base.config_namespace,
        )


def setup_from_snapshot(
    snapshot: ClusterSnapshot, variant: tuple[str, str] | None = None
) -> SimSetup:
    """Pick the variant (the only one, or `variant`) and read its profile, SLO and cost
    the way the adapter does (`build_system`), so the simulator tests what it would run."""
    # idle but present loads: the samples' Deployments have replicas, and a model with no
    # series at all while it has replicas is not assembled (metrics missing)
    idle = {key: ModelLoad(*key, running=0.0, waiting=0.0) for key in metric_keys(snapshot)}
    assembly = build_system(snapshot, LoadReport(idle))
    by_key = {(va.namespace, va.name): (server, va) for server, va in assembly.servers.items()}
    if variant is None:
        if len(by_key) != 1:
            problems = "; ".join(str(p) for p in assembly.problems)
            found = ", ".join(f"{ns}/{name}" for ns, name in sorted(by_key)) or "none"
            raise SetupError(
                f"need exactly one usable VariantAutoscaling, found {found}"
                + (f" ({problems})" if problems else "")
            )
        variant = next(iter(by_key))
    if variant not in by_key:
        reasons = [p.reason for p in assembly.problems if (p.namespace, p.name) == variant]
        detail = reasons[0] if reasons else "not in the samples"
        raise SetupError(f"VariantAutoscaling {variant[0]}/{variant[1]}: {detail}")
    server, va = by_key[variant]
    accelerator = va.accelerator_name
    assert accelerator is not None  # build_system kept it
    entry = va.profile_for(accelerator)
    assert entry is not None
    costs, _ = parse_accelerator_costs(snapshot.config_data(ACCELERATOR_COSTS_CONFIGMAP))
    slo = assembly.slo[server]
    return SimSetup(
        snapshot=snapshot,
        variant=variant,
        model=va.spec.model_id,
        accelerator=accelerator,
        profile=ServingProfile(
            alpha_ms=entry.alpha, beta_ms=entry.beta, max_batch_size=entry.max_batch_size
        ),
        slo_itl_ms=slo.slo_itl,
        slo_ttft_ms=slo.slo_ttw,
        unit_cost=costs[accelerator].cost,
        gpus_per_replica=entry.acc_count,
    )


@dataclass(frozen=True, slots=True)
class Limits:
    min_replicas: int = 1  # 0: ours scales to zero and is woken by the gateway's queue
    max_replicas: int = 8

    def __post_init__(self) -> None:
        if not (0 <= self.min_replicas <= self.max_replicas and self.max_replicas >= 1):
            raise ValueError("need 0 <= min_replicas <= max_replicas, max_replicas >= 1")

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


class SimClock:
    """The adapter's `Clock` on virtual time (it never sleeps in the simulation)."""

    EPOCH = 1_700_000_000.0

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.EPOCH + self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        raise RuntimeError("the simulation drives the engine's cycles itself")


ArrivalEstimate = Literal["in-system", "completions"]

# The vLLM series the pod scraper reads, from the Deployment's counters, as the newest
# release names them. Histograms are given by their _sum and _count only: the scraper
# needs nothing else.
_SUCCESS = REQUEST_SUCCESS.total
_HISTOGRAMS = (
    (REQUEST_PROMPT_TOKENS, "prompt_tokens", "success"),
    (REQUEST_GENERATION_TOKENS, "output_tokens", "success"),
    (REQUEST_QUEUE_TIME, "queue_sum_s", "success"),
    (TIME_TO_FIRST_TOKEN, "ttft_sum_s", "success"),
    (INTER_TOKEN_LATENCY, "itl_sum_s", "itl_count"),
)
_RUNNING = NUM_REQUESTS_RUNNING.value
_WAITING = NUM_REQUESTS_WAITING.value
_KV = KV_CACHE_USAGE.value


class ClusterMetrics:
    """A `MetricsSource` over the simulated Deployment that *is* the pod scraper's rating.

    Each collect turns the Deployment's counters and gauges into the vLLM series a scrape
    of one pod would give (`Counters` are the `sum(...)` over the pods) and hands the
    previous and the current one to the scraper's own code (`ScrapeTotals` in
    `adapter.collect.scrape`): the window is the time since the previous collect (the
    cycle), gauges are read at the instant of the collect, and the arrival rate is
    defined exactly as the adapter defines it.

    `arrivals` picks that definition:

    - "in-system" (the adapter's): completions plus the growth of running + waiting over
      the window, clamped at 0. It sees a step within the cycle it happens in, and does
      not overshoot while a backlog drains.
    - "completions": the completion rate alone, i.e. `rate(vllm:request_success_total)`
      over the window, which is what the tutorial-era WVA read (1 m windows). It is the
      scraper's own fallback when the pods export no running/waiting gauges, and it is
      obtained that way: the previous scrape is handed over without them.

    tests/test_sim_policies.py checks it against a real `ScrapeSource` scraping the same
    counters over HTTP.
    """

    def __init__(
        self, cluster: SimCluster, key: LoadKey, *, arrivals: ArrivalEstimate = "in-system"
    ) -> None:
        if arrivals not in ("in-system", "completions"):
            raise ValueError(f"unknown arrival estimate {arrivals!r}")
        self._cluster = cluster
        self._key = key
        self._arrivals = arrivals
        self._previous = self._scrape()

    @property
    def arrivals(self) -> ArrivalEstimate:
        return self._arrivals

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        before, after = self._previous, self._scrape()
        self._previous = after
        if self._key not in keys or not self._cluster.pod_gauges():
            return LoadReport()  # no pod serves: no series (the counters carry on)
        if after.at <= before.at:
            # no window to rate over yet (a cycle at the first scrape): a baseline, as
            # the pod scraper's first scrape
            raise MetricsWarmingUp("the first scrape is a baseline: no rate yet")
        if self._arrivals == "completions":
            gauges = (_RUNNING, _WAITING)
            before = Scrape(
                at=before.at,
                values={k: v for k, v in before.values.items() if k[0] not in gauges},
                series={k: v for k, v in before.series.items() if k[0] not in gauges},
            )
        namespace = self._key[0]
        totals = ScrapeTotals()
        totals.add_rates(namespace, before, after)
        totals.add_gauges(namespace, after)
        return LoadReport(loads={self._key: totals.loads()[self._key]}, queries=1)

    def _scrape(self) -> Scrape:
        """The Deployment's series now, as one scrape of one pod serving `model`."""
        cluster, model = self._cluster, self._key[1]
        counters = cluster.counters
        running, waiting, kv = cluster.gauges()
        values: dict[tuple[str, str], float] = {
            (_SUCCESS, model): float(counters.success),
            (_RUNNING, model): float(running),
            (_WAITING, model): float(waiting),
        }
        for family, total, count in _HISTOGRAMS:
            values[family.sum, model] = float(getattr(counters, total))
            values[family.count, model] = float(getattr(counters, count))
        if kv is not None:
            values[_KV, model] = kv
        return Scrape(at=cluster.now, values=values, series=dict.fromkeys(values, 1))


class ClusterGateway:
    """A `GatewaySource` over the simulated gateway: the requests it holds for the model,
    as the EPP's flow-control queue gauge gives them."""

    def __init__(self, cluster: SimCluster, key: LoadKey) -> None:
        self._cluster = cluster
        self._key = key

    def collect(self, keys: Collection[LoadKey]) -> GatewayReport:
        held = float(self._cluster.gateway_gauges().queued)
        queues = {self._key: GatewayQueue(*self._key, waiting=held)} if self._key in keys else {}
        return GatewayReport(queues=queues, exported=True)


class Policy(Protocol):
    name: str
    cycle_s: float  # its decision period (reaction times are also counted in these)
    first_cycle_s: float  # its first decision; the next ones every cycle_s from there

    def next_time(self) -> float:
        """When the policy next acts (virtual seconds)."""
        ...

    def act(self, now: float) -> None:
        """Act at `now` (== next_time()); the cluster stands at `now`."""
        ...


class _AdapterCycle:
    """The adapter's `Engine` reading the simulated cluster through its real interfaces."""

    def __init__(
        self,
        setup: SimSetup,
        cluster: SimCluster,
        interval_s: float,
        limits: Limits,
        arrivals: ArrivalEstimate,
        attainment: float | None,
        headroom: float = 0.0,
        learn: bool = False,
        look_ahead: bool = False,
        scale_to_zero_after_s: float = DEFAULT_RETENTION_S,
    ):
        """`attainment`: the share of requests sized for (None: the reference's mean
        rule, as the tutorial-era WVA); `headroom`: sized for the rate x (1 + it);
        `learn`: learn the profile from the pods (`adapter.learning`), as `run` does;
        `look_ahead`: size for the load a start-up ahead (`adapter.lookahead`). With
        `limits.min_replicas` 0 it reads the gateway's queue and scales to zero after
        `scale_to_zero_after_s` without traffic (`adapter.zero`), as `run` does with
        `--min-replicas 0 --gateway`."""
        self.clock = SimClock()
        self.metrics = ClusterMetrics(cluster, setup.load_key, arrivals=arrivals)
        from_zero = limits.min_replicas == 0
        self.gateway = ClusterGateway(cluster, setup.load_key) if from_zero else None
        self.zero = ScaleToZero(scale_to_zero_after_s) if from_zero else None
        self.engine = Engine(
            cluster=lambda: setup.with_replicas(cluster.replicas, cluster.ready_replicas),
            metrics=self.metrics,
            clock=self.clock,
            settings=AssemblySettings(
                min_num_replicas=limits.min_replicas, attainment=attainment, headroom=headroom
            ),
            interval_s=interval_s,
            learning=ProfileLearning(cycle_s=interval_s) if learn else None,
            look_ahead=LookAhead(cycle_s=interval_s) if look_ahead else None,
            gateway=self.gateway,
            zero=self.zero,
        )
        self._variant = setup.variant

    def cycle(self, now: float) -> int | None:
        """One cycle at `now`: the desired replicas, or None if the VA was not solved."""
        self.clock.t = now
        try:
            snapshot = self.engine.run_cycle()
        except CycleError:
            return None
        decision = snapshot.decisions.get(self._variant)
        return decision.desired_replicas if decision is not None else None


# keda/scaledobject-from-zero.yaml's cooldownPeriod: KEDA deactivates 1 -> 0 this long
# after IsActive turned false; the adapter has held the idle variant at one replica for
# its own retention before that
FROM_ZERO_COOLDOWN_S = 60.0


def ours_scaled_object(
    min_replicas: int,
    max_replicas: int,
    *,
    polling_s: float = 15.0,
    scale_down_window_s: int = 180,
    cooldown_s: float = 300.0,
    initial_cooldown_s: float = 0.0,
    configurable_tolerance: bool = True,
) -> ScaledObjectSpec:
    """keda/scaledobject.yaml (tests/test_sim_policies.py checks they agree); the
    real-time loop of `demo` compresses its timings through the keyword arguments.

    AverageValue target 1 (the metric is the desired replica count), tolerance 0 both
    ways, no scale-up window, fallback that never scales down on missing data; the
    policies' period follows the polling interval.

    `configurable_tolerance=False`: the cluster lacks Kubernetes' HPAConfigurableTolerance
    feature (alpha in 1.33, beta and on by default later, KEP-4951): the API server drops
    the per-direction `tolerance` fields, and the HPA applies its cluster-wide default
    (10 %) to ours too.
    """
    period = max(1, round(polling_s))
    tolerance = 0.0 if configurable_tolerance else None
    return ScaledObjectSpec(
        pollingInterval=polling_s,
        cooldownPeriod=cooldown_s,
        initialCooldownPeriod=initial_cooldown_s,
        minReplicaCount=min_replicas,
        maxReplicaCount=max_replicas,
        fallback=Fallback(failureThreshold=3, replicas=1, behavior="currentReplicasIfHigher"),
        behavior=HorizontalPodAutoscalerBehavior(
            scaleUp=HPAScalingRules(
                tolerance=tolerance,
                stabilizationWindowSeconds=0,
                selectPolicy="Max",
                policies=(
                    HPAScalingPolicy(type="Percent", value=100, periodSeconds=period),
                    HPAScalingPolicy(type="Pods", value=4, periodSeconds=period),
                ),
            ),
            scaleDown=HPAScalingRules(
                tolerance=tolerance,
                stabilizationWindowSeconds=scale_down_window_s,
                selectPolicy="Max",
                policies=(HPAScalingPolicy(type="Percent", value=100, periodSeconds=period),),
            ),
        ),
        metricType="AverageValue",
        target=1.0,
    )


def queue_scaled_object(limits: Limits, target: float = QUEUE_TARGET) -> ScaledObjectSpec:
    """production-stack's trigger with KEDA's defaults around it (no behavior)."""
    return ScaledObjectSpec(
        pollingInterval=QUEUE_POLLING_S,
        cooldownPeriod=300.0,
        minReplicaCount=limits.min_replicas,
        maxReplicaCount=limits.max_replicas,
        behavior=None,
        metricType="AverageValue",
        target=target,
    )


class OursPolicy:
    """This adapter, served to KEDA/HPA (see the module docstring)."""

    name = "ours"

    def __init__(
        self,
        setup: SimSetup,
        cluster: SimCluster,
        limits: Limits,
        *,
        interval_s: float = OURS_INTERVAL_S,
        hpa_phase_s: float | None = None,
        phase_s: float = 0.0,
        attainment: float | None = DEFAULT_ATTAINMENT,
        headroom: float = 0.0,
        configurable_tolerance: bool = True,
        learn: bool = True,
        look_ahead: bool = False,
        scale_to_zero_after_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        """`phase_s`: the adapter's first cycle (the loop's phase against the trace);
        `hpa_phase_s`: how long after each cycle the HPA syncs (default half a cycle);
        `attainment`: the share of requests it sizes for (None: the mean rule);
        `headroom`: it sizes for the measured rate x (1 + headroom);
        `learn`: it learns the profile from the pods (the adapter's default);
        `look_ahead`: it sizes for the load forecast a start-up ahead;
        `configurable_tolerance`: False when the cluster lacks HPAConfigurableTolerance
        (see `ours_scaled_object`). With `limits.min_replicas` 0: the adapter reads the
        gateway's queue, goes to zero after `scale_to_zero_after_s` without traffic, and
        its waker polls the gateway every 0.25 s while the variant is parked; KEDA's
        external-push trigger activates 0 -> 1 the moment the waker publishes
        (keda/scaledobject-from-zero.yaml)."""
        self.cycle_s = interval_s
        self.first_cycle_s = _check_phase(phase_s)
        self._adapter = _AdapterCycle(
            setup,
            cluster,
            interval_s,
            limits,
            "in-system",
            attainment,
            headroom,
            learn,
            look_ahead,
            scale_to_zero_after_s,
        )
        engine, clock, variant = self._adapter.engine, self._adapter.clock, setup.variant
        scaler = ScalerService(
            lambda: engine.latest, clock, ScalerSettings.for_interval(interval_s)
        )

        def get_metrics() -> float:
            return float(scaler.desired(variant))  # raises Refusal as GetMetrics would

        phase = interval_s / 2.0 if hpa_phase_s is None else _check_phase(hpa_phase_s)
        self._keda = KedaDriven(
            KedaLoop(
                spec=ours_scaled_object(
                    limits.min_replicas,
                    limits.max_replicas,
                    configurable_tolerance=configurable_tolerance,
                    cooldown_s=FROM_ZERO_COOLDOWN_S if limits.min_replicas == 0 else 300.0,
                ),
                get_metrics=get_metrics,
                initial_replicas=cluster.replicas,
                start=self.first_cycle_s + phase,
                hpa_sync_period=DEFAULT_SYNC_PERIOD_SECONDS,
            ),
            cluster,
        )
        self._cycles = 0
        self._next_cycle = self.first_cycle_s
        gateway, zero = self._adapter.gateway, self._adapter.zero
        self._waker = (
            Waker(engine, gateway, zero, clock)
            if gateway is not None and zero is not None
            else None
        )
        self._next_wake = math.inf

    def next_time(self) -> float:
        return min(self._next_cycle, self._keda.next_time(), self._next_wake)

    def act(self, now: float) -> None:
        if self._next_cycle <= now:
            self._adapter.cycle(now)
            self._cycles += 1
            self._next_cycle = self.first_cycle_s + self._cycles * self.cycle_s
        if self._next_wake <= now and self._waker is not None:
            self._adapter.clock.t = now
            if self._waker.poll() is not None:
                self._keda.push_active(now)  # external-push: StreamIsActive said true
        if self._keda.next_time() <= now:
            self._keda.act(now)
        self._next_wake = self._wake_poll_after(now)

    def _wake_poll_after(self, now: float) -> float:
        """The waker's next poll: every 0.25 s while the latest snapshot parks the variant."""
        latest = self._adapter.engine.latest
        if self._waker is None or latest is None or not parked(latest):
            return math.inf
        return now + DEFAULT_POLL_S


class TutorialPolicy:
    """The tutorial-era WVA: optimize every 60 s on 1 m windows, patch spec.replicas."""

    name = "wva-tutorial"

    def __init__(
        self,
        setup: SimSetup,
        cluster: SimCluster,
        limits: Limits,
        *,
        interval_s: float = TUTORIAL_INTERVAL_S,
        phase_s: float = 0.0,
    ) -> None:
        self.cycle_s = interval_s
        self.first_cycle_s = _check_phase(phase_s)
        self._adapter = _AdapterCycle(setup, cluster, interval_s, limits, "completions", None)
        self._cluster = cluster
        self._limits = limits
        self._cycles = 0

    def next_time(self) -> float:
        return self.first_cycle_s + self._cycles * self.cycle_s

    def act(self, now: float) -> None:
        self._cycles += 1
        desired = self._adapter.cycle(now)
        if desired is not None:
            self._cluster.scale(self._limits.clamp(desired))


class QueuePolicy:
    """production-stack's KEDA queue-length trigger (see the module docstring)."""

    name = "keda-queue"
    cycle_s = DEFAULT_SYNC_PERIOD_SECONDS  # it decides at every HPA sync

    def __init__(
        self,
        cluster: SimCluster,
        limits: Limits,
        *,
        target: float = QUEUE_TARGET,
        phase_s: float = 0.0,
    ):
        def waiting() -> float:
            return float(cluster.gauges()[1])

        self.first_cycle_s = _check_phase(phase_s)
        self._keda = KedaDriven(
            KedaLoop(
                spec=queue_scaled_object(limits, target),
                get_metrics=waiting,
                initial_replicas=cluster.replicas,
                start=self.first_cycle_s,
            ),
            cluster,
        )

    def next_time(self) -> float:
        return self._keda.next_time()

    def act(self, now: float) -> None:
        self._keda.act(now)


# each policy's main knob, what a label's `@value` sets (None: it has none)
KNOBS: dict[str, str | None] = {
    "ours": "the share of requests sized for, in (0, 1) (default 0.99); a `+H%` suffix"
    " sizes for the measured rate x (1 + H/100), `+ahead` for the rate forecast a"
    " start-up ahead",
    "wva-tutorial": None,
    "keda-queue": f"waiting requests per replica (default {QUEUE_TARGET:g})",
    "clairvoyant": f"the share of requests held, in (0, 1) (default {DEFAULT_ATTAINMENT})",
    "causal-floor": f"the share of requests held, in (0, 1) (default {DEFAULT_ATTAINMENT});"
    " a `+H%` suffix sizes for the rate x (1 + H/100)",
    "llmd-saturation": "the running requests per replica target; the pool-saturation one"
    f" stays {LLMD_SATURATION_TARGET:g} (default {LLMD_RUNNING_TARGET:g})",
    "llmd-slo": f"the scale-up threshold; scale-down at 0.40/0.55 of it (default {SLO_THETA_UP:g})",
    "wva-saturation": "scaleUpThreshold, in (0, 1]; scaleDownBoundary at 0.70/0.85 of it"
    f" (default {WVA_SCALE_UP_THRESHOLD:g})",
}


class PolicyLabel(NamedTuple):
    """A parsed policy label: `name`, `name@knob`, for ours `+H%` and `+ahead`, for the
    causal floor `+H%`."""

    name: str
    knob: float | None = None
    headroom: float = 0.0  # ours, causal-floor: size for the arrival rate x (1 + headroom)
    ahead: bool = False  # ours only: size for the load forecast a start-up ahead


def parse_label(label: str) -> PolicyLabel:
    """`name` or `name@knob` (e.g. `ours@0.995`), and for ours the options `+H%` (e.g.
    `ours+50%`, `ours@0.99+50%`: sized for 1.5 x the measured rate) and `+ahead` (its
    `--look-ahead`), for causal-floor `+H%`: checked."""
    head, *options = label.strip().split("+")
    name, at, raw = head.partition("@")
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    if options and name not in ("ours", "causal-floor"):
        raise ValueError(f"{label!r}: only ours (+H%, +ahead) and causal-floor (+H%) take options")
    ahead = "ahead" in options
    if ahead and name != "ours":
        raise ValueError(f"{label!r}: only ours looks ahead (+ahead)")
    rest = [o for o in options if o != "ahead"]
    if len(rest) > 1 or options.count("ahead") > 1:
        raise ValueError(f"{label!r}: each option once (+H%, +ahead)")
    headroom = _headroom(label, rest[0]) if rest else 0.0
    if not at:
        return PolicyLabel(name, None, headroom, ahead)
    if KNOBS.get(name) is None:
        raise ValueError(f"policy {name!r} has no knob to set ({label!r})")
    try:
        knob = float(raw)
    except ValueError:
        raise ValueError(f"{label!r}: the knob must be a number ({KNOBS[name]})") from None
    shares = name in ("ours", "clairvoyant", "causal-floor")
    if not math.isfinite(knob) or knob <= 0 or (shares and knob >= 1):
        raise ValueError(f"{label!r}: out of range ({KNOBS[name]})")
    if name == "wva-saturation" and knob > 1:
        raise ValueError(f"{label!r}: out of range ({KNOBS[name]})")
    return PolicyLabel(name, knob, headroom, ahead)


def _headroom(label: str, text: str) -> float:
    """The `H%` after a label's `+`, as a fraction."""
    number = text[:-1] if text.endswith("%") else None
    try:
        value = float(number) if number is not None else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{label!r}: the headroom must be a percentage >= 0, e.g. +50%")
    return value / 100.0


def build_policy(
    label: str,
    setup: SimSetup,
    cluster: SimCluster,
    limits: Limits,
    *,
    hpa_phase_s: float | None = None,
    phase: float = 0.0,
    hpa_configurable_tolerance: bool = True,
    trace: Trace | None = None,
    shape: RequestShape | None = None,
    profile_learning: bool = True,
    scale_to_zero_after_s: float = DEFAULT_RETENTION_S,
) -> Policy:
    """A fresh policy for `label` (`name` or `name@knob`) bound to `cluster`.

    `phase` in [0, 1) places the policy's loop against the trace: its first decision
    comes `phase` of its own cycle after t = 0 (0: on the trace's whole minutes, where
    the bench's steps are). In a cluster that phase is arbitrary.
    `hpa_configurable_tolerance=False`: ours' HPA applies the default 10 % tolerance
    (the cluster lacks HPAConfigurableTolerance; see `ours_scaled_object`).
    `trace` and `shape`: what `clairvoyant` and `causal-floor` know in advance (both).
    `profile_learning=False`: ours sizes with the VA's declared profile only.
    `scale_to_zero_after_s`: with `limits.min_replicas` 0, ours' retention at one replica.
    """
    if not 0.0 <= phase < 1.0:
        raise ValueError(f"phase must be in [0, 1), got {phase}")
    name, knob, headroom, ahead = parse_label(label)
    if limits.min_replicas == 0 and name != "ours":
        raise ValueError(
            f"{label} does not scale from zero (its recipe needs min replicas >= 1); only"
            " ours, woken by the gateway's queue, runs with min replicas 0"
        )
    policy: Policy
    if name == "ours":
        policy = OursPolicy(
            setup,
            cluster,
            limits,
            hpa_phase_s=hpa_phase_s,
            phase_s=phase * OURS_INTERVAL_S,
            attainment=DEFAULT_ATTAINMENT if knob is None else knob,
            headroom=headroom,
            look_ahead=ahead,
            learn=profile_learning,
            configurable_tolerance=hpa_configurable_tolerance,
            scale_to_zero_after_s=scale_to_zero_after_s,
        )
    elif name == "wva-tutorial":
        policy = TutorialPolicy(setup, cluster, limits, phase_s=phase * TUTORIAL_INTERVAL_S)
    elif name == "keda-queue":
        policy = QueuePolicy(
            cluster,
            limits,
            target=QUEUE_TARGET if knob is None else knob,
            phase_s=phase * QueuePolicy.cycle_s,
        )
    elif name == "llmd-saturation":
        policy = LlmdSaturationPolicy(
            cluster,
            min_replicas=limits.min_replicas,
            max_replicas=limits.max_replicas,
            running_target=LLMD_RUNNING_TARGET if knob is None else knob,
            phase_s=phase * PEER_CYCLE_S,
        )
    elif name == "llmd-slo":
        policy = LlmdSloPolicy(
            cluster,
            min_replicas=limits.min_replicas,
            max_replicas=limits.max_replicas,
            ttft_slo_s=setup.slo_ttft_ms / 1000.0,
            tpot_slo_s=setup.slo_itl_ms / 1000.0,
            theta_up=SLO_THETA_UP if knob is None else knob,
            phase_s=phase * PEER_CYCLE_S,
        )
    elif name == "wva-saturation":
        policy = WvaSaturationPolicy(
            cluster,
            min_replicas=limits.min_replicas,
            max_replicas=limits.max_replicas,
            scale_up_threshold=WVA_SCALE_UP_THRESHOLD if knob is None else knob,
            phase_s=phase * PEER_CYCLE_S,
        )
    else:  # clairvoyant, causal-floor
        if trace is None or shape is None:
            raise ValueError(f"{name} needs the trace and the request shape")
        state = SteadyState(
            cluster.settings.profile,  # the GPUs' true profile, not the VA's
            shape,
            setup.slo_itl_ms,
            setup.slo_ttft_ms,
            target=DEFAULT_ATTAINMENT if knob is None else knob,
        )
        table = CapacityTable(state, limits.max_replicas)
        plan = schedule(
            trace,
            table,
            cluster.settings.startup_delay_s,
            limits.min_replicas,
            causal=name == "causal-floor",
            headroom=headroom,
        )
        policy = ClairvoyantPolicy(cluster, plan)
    policy.name = label.strip()
    return policy


def _check_phase(phase_s: float) -> float:
    if not (math.isfinite(phase_s) and phase_s >= 0):
        raise ValueError(f"a loop's first decision must be at >= 0 s, got {phase_s}")
    return float(phase_s)
