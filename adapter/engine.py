"""The periodic cycle: collect -> SystemSpec -> optimize -> publish an immutable snapshot.

A snapshot holds, per VariantAutoscaling, the desired allocation or the reason there
is none, the predictions behind it and the inputs used. Readers (the gRPC scaler, the
exporter, the status writer) only ever see whole snapshots.

A cycle that cannot read its inputs (metrics backend down, scrape targets warming up,
Kubernetes unreadable) publishes nothing: the previous snapshot stays, and its age
tells readers how stale it is. It never publishes zero load in place of unknown load.
A cycle that fails on anything else (a bug, input nobody anticipated) is handled the same
way, its traceback logged: one bad input must not crash-loop the adapter.

The Kubernetes cache never fails a read: while the API server is away it keeps serving
its last view, ever older. Its snapshot says when each watched resource was last known
in sync (`adapter.collect.sync`); once that is longer ago than `staleness_s` (the
scaler's `--staleness`), the VAs the old part of the view bears on are left unsolved
with a reason starting `KUBERNETES_STALE` (UNAVAILABLE over gRPC, `KubernetesStale` on
/metrics and in the status), the other VAs are still decided, and the next cycle after
the cache syncs again decides them all.

Scraping pods, the first scrape has nothing to rate against. That cycle is a baseline,
not a failure (`BaselineCycle`: logged at INFO, not counted in `cycle_errors_total`),
but it publishes nothing either: unknown load is never sized as zero. The cycles after
it that still have no rate are failures again (targets that change faster than the
interval would otherwise never be rated, and never be warned about).

`last_attempt` is when the loop last started a cycle, whatever its outcome: `/healthz`
tells a hung loop (no attempt for several intervals, the kubelet restarts the pod) from a
failing backend (attempts that fail, which a restart would not cure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from adapter.assemble import Assembly, AssemblySettings, ParsedObjects, SloChoice, build_system
from adapter.clock import Clock, sleep_unless
from adapter.collect.gateway import GatewayReport, GatewaySource
from adapter.collect.metrics import (
    LoadKey,
    LoadReport,
    MetricsSource,
    MetricsUnavailable,
    MetricsWarmingUp,
    ModelLoad,
)
from adapter.collect.sync import PartitionSync, SyncedClusterSnapshot
from adapter.gateway_metrics import QUEUE_SIZE
from adapter.learning import ProfileLearning, ProfileView
from adapter.lookahead import AheadView, LookAhead
from adapter.model.kube import ClusterSnapshot
from adapter.model.system import parse_system
from adapter.optimizer import SizingCache, SizingRule, optimize_parsed
from adapter.optimizer.solution import Solution
from adapter.queueing.sizing import slo_batch
from adapter.variants import share_loads, shared_groups
from adapter.zero import HeldArrivals, ScaleToZero

log = logging.getLogger(__name__)

VariantKey = tuple[str, str]  # (namespace, name)

# How the reason of a decision withheld for an out-of-date view of the cluster starts
# (`adapter.exporter.reason_code` classifies by it).
KUBERNETES_STALE = "Kubernetes view out of date"


@dataclass(frozen=True, slots=True)
class VariantDecision:
    """What the adapter recommends for one VariantAutoscaling, and why."""

    namespace: str
    name: str
    model: str
    accelerator: str
    desired_replicas: int | None  # None: not solved this cycle (see reason)
    current_replicas: int | None
    reason: str
    load: ModelLoad | None = None
    slo: SloChoice | None = None
    predicted_itl_ms: float | None = None
    predicted_wait_ms: float | None = None
    max_rpm_per_replica: float | None = None
    cost: float | None = None
    # requests one replica can decode at once within the ITL SLO (at most its max batch):
    # what a backlog at the gateway is divided by on a wake-up (`adapter.zero`)
    slo_batch: int | None = None
    # requests the inference gateway held for the model when the cycle read it (with a
    # gateway source and --min-replicas 0; None: not read, or not known)
    gateway_waiting: float | None = None
    max_replicas: int | None = None  # the VA's spec.maxReplicas (None: no cap)
    profile: ProfileView | None = None  # the decode profile sized with (learning on)
    ahead: AheadView | None = None  # the rate sized for a start-up ahead (look-ahead on)

    @property
    def solved(self) -> bool:
        return self.desired_replicas is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    cycle: int
    timestamp: float  # wall-clock seconds when the cycle started
    monotonic: float  # the same instant on the monotonic clock (for ages)
    duration_s: float
    decisions: Mapping[VariantKey, VariantDecision]
    config_problems: tuple[str, ...] = ()
    # where the cycle's time went: collect (cluster and metrics), assemble, optimize
    phases_s: Mapping[str, float] = field(default_factory=dict)

    def age(self, clock: Clock) -> float:
        return clock.monotonic() - self.monotonic


class CycleError(RuntimeError):
    """A cycle could not run; the previous snapshot stays in place."""


class InternalCycleError(CycleError):
    """A cycle failed on an unexpected exception; already logged with its traceback."""


class BaselineCycle(CycleError):
    """The metrics source took its first reading: rates need the next cycle's.

    A normal start, not a failure: logged at INFO and not counted as an error. It
    publishes no snapshot all the same (no rate is unknown load, never zero load).
    """


@dataclass
class EngineStats:
    cycles_total: int = 0
    cycle_errors_total: int = 0
    metrics_errors_total: int = 0
    last_error: str = ""
    durations: list[float] = field(default_factory=list)  # recent cycle durations, seconds


def metric_keys(snapshot: ClusterSnapshot) -> set[LoadKey]:
    """(namespace, modelID) of every VA that names a model: what metrics to fetch."""
    keys: set[LoadKey] = set()
    for (namespace, _name), obj in snapshot.variant_autoscalings.items():
        # a VA that is not even a mapping is the assembler's to report, not a failed cycle
        spec = obj.get("spec") if isinstance(obj, Mapping) else None
        model = spec.get("modelID") if isinstance(spec, Mapping) else None
        if isinstance(model, str) and model:
            keys.add((namespace, model))
    return keys


class Engine:
    """Runs cycles on demand (`run_cycle`) or forever (`run`), keeping the latest snapshot."""

    def __init__(
        self,
        *,
        cluster: Callable[[], ClusterSnapshot],
        metrics: MetricsSource,
        clock: Clock,
        settings: AssemblySettings | None = None,
        interval_s: float = 15.0,
        staleness_s: float | None = None,
        cache: SizingCache | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        after_cycle: Callable[[], None] | None = None,
        learning: ProfileLearning | None = None,
        look_ahead: LookAhead | None = None,
        gateway: GatewaySource | None = None,
        zero: ScaleToZero | None = None,
    ) -> None:
        """`after_cycle` runs after every cycle of `run`, on the cycle's thread, whatever
        the cycle's outcome: `wva-adapter run` settles the garbage collector and the heap
        there (adapter/runtime.py). The Engine itself changes nothing process-wide.
        `learning`: learn each VA's decode profile from its pods and size with it once
        the data refute the declared one (`adapter.learning`); None: the declared ones.
        `look_ahead`: size each VA for its load forecast a start-up ahead
        (`adapter.lookahead`); None: for the measured load.
        `zero`: scale idle variants to zero after a retention and wake them on the
        `gateway`'s queue (`adapter.zero`); None: the optimizer's answer as is."""
        self._cluster = cluster
        self._metrics = metrics
        self._clock = clock
        self._settings = settings or AssemblySettings()
        self.interval_s = interval_s
        # --staleness, as the scaler and the status writer use it: a VA whose objects were
        # last known in sync with the API server longer ago gets no decision
        self.staleness_s = staleness_s if staleness_s is not None else 3 * interval_s
        self._cache = cache if cache is not None else SizingCache()
        self._own_cache = cache is None
        self._parsed = ParsedObjects()
        self._on_snapshot = on_snapshot
        self._after_cycle = after_cycle
        self._learning = learning
        self._look_ahead = look_ahead
        self._gateway = gateway
        self._zero = zero
        self._held = HeldArrivals()
        self._gateway_exported: bool | None = None  # last seen (warned about on change)
        # a cycle and the waker both publish: neither may replace a newer snapshot
        self._publishing = threading.Lock()
        self._latest: Snapshot | None = None
        self._cycle = 0
        self._last_attempt: float | None = None
        # A source warming up is taken as a baseline, once: until a collection ends
        # otherwise (rates, or another failure), more warming up is a failure.
        self._may_take_baseline = True
        self.stats = EngineStats()

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    @property
    def last_attempt(self) -> float | None:
        """When the latest cycle attempt started (the clock's monotonic seconds), whatever
        its outcome; None before the first. A loop that stops attempting is hung, one
        whose attempts fail is not: `/healthz` tells them apart with this."""
        return self._last_attempt

    def run_cycle(self) -> Snapshot:
        """One cycle. Raises CycleError, keeping the old snapshot, if it fails.

        BaselineCycle (a CycleError) is the metrics source's first reading: no snapshot
        either, but not a failure (not counted, not warned about by `run`).

        Unreadable inputs are expected failures. Any other exception (a bug, or input
        nobody anticipated) must not take the adapter down either: it is logged with its
        traceback and raised as InternalCycleError, and the old snapshot ages as with any
        failure, so the scaler answers UNAVAILABLE once it is stale, never a made-up value.
        """
        started_wall = self._clock.now()
        started = self._clock.monotonic()
        self._last_attempt = started
        self._cycle += 1
        self.stats.cycles_total += 1
        try:
            cluster = self._cluster()
            keys = metric_keys(cluster)
            loads = self._collect(keys)
            gateway = self._read_gateway(keys)
        except BaselineCycle:
            raise  # not a failure: nothing to count
        except CycleError as error:
            self.stats.cycle_errors_total += 1
            self.stats.last_error = str(error)
            raise
        except Exception as error:  # Kubernetes source failures
            self.stats.cycle_errors_total += 1
            self.stats.last_error = f"cannot read the cluster: {error}"
            raise CycleError(self.stats.last_error) from error

        previous = self._latest
        try:
            snapshot, assembly, shared = self._solve(cluster, loads, gateway, started_wall, started)
            with self._publishing:
                self._latest = snapshot
                # serve it first: the first cycle after a start logs a line or two per VA
                if self._on_snapshot is not None:
                    self._on_snapshot(snapshot)
        except Exception as error:
            self._latest = previous  # not (wholly) published: readers keep the old one
            self._count_internal_error(error)
            log.exception(
                "cycle %d failed with an internal error, keeping the previous decisions",
                self._cycle,
            )
            raise InternalCycleError(self.stats.last_error) from error
        self.stats.durations = [*self.stats.durations[-99:], snapshot.duration_s]
        if self._learning is not None:
            # after the decisions: a cycle sizes with what the cycles before it taught;
            # not from a VA whose replica counts come from an out-of-date view
            skip = {k for k, d in snapshot.decisions.items() if _withheld_as_stale(d)}
            # nor from variants sharing a model's series: their pods' ITL is a mix of theirs
            self._learning.observe(assembly, at=started, skip=skip | shared)
        try:
            self._log_cycle(snapshot, previous)
        except Exception:  # the snapshot is published and served: only log lines are lost
            log.exception("cycle %d: logging its decisions failed", self._cycle)
        return snapshot

    def publish_woken(
        self, base: Snapshot, woken: Mapping[VariantKey, VariantDecision]
    ) -> Snapshot | None:
        """Publish `base` with `woken`'s decisions in place (the waker's wake-ups between
        cycles), unless a newer snapshot replaced `base` meanwhile: None then."""
        with self._publishing:
            if self._latest is not base:
                return None
            snapshot = replace(base, decisions={**base.decisions, **woken})
            self._latest = snapshot
            if self._on_snapshot is not None:
                self._on_snapshot(snapshot)
        for decision in woken.values():
            _log_decision(decision, base.decisions.get((decision.namespace, decision.name)))
        return snapshot

    def _read_gateway(self, keys: Collection[LoadKey]) -> GatewayReport | None:
        """The gateway's queues (None: no gateway); a failure is in the report, never
        raised: it leaves only the variants at zero unsolved."""
        if self._gateway is None:
            return None
        try:
            report = self._gateway.collect(keys)
        except Exception as error:  # a bug or an answer nobody anticipated
            log.exception("cycle %d: the gateway source failed unexpectedly", self._cycle)
            return GatewayReport(error=f"{type(error).__name__}: {error}")
        if report.error is not None:
            log.warning("cycle %d: gateway unreadable: %s", self._cycle, report.error)
        elif report.exported != self._gateway_exported:
            self._gateway_exported = report.exported
            if not report.exported:
                log.warning(
                    "the gateway exports no flow-control queue (%s): it holds no request"
                    " now, and wakes no variant at zero unless its flow control is on (the"
                    " series appears with the first request it holds)",
                    " or ".join(QUEUE_SIZE.names),
                )
        return report

    def _solve(
        self,
        cluster: ClusterSnapshot,
        loads: LoadReport,
        gateway: GatewayReport | None,
        started_wall: float,
        started: float,
    ) -> tuple[Snapshot, Assembly, set[VariantKey]]:
        """Assemble, optimize and package the decisions of one cycle, with the VAs that
        shared their model's load (its only side effect: the look-ahead's forecasters take
        this cycle's rates)."""
        collected = self._clock.monotonic()
        if self._zero is not None:
            loads = self._held.adjust(loads, gateway, started)
        learning = self._learning
        profiles = learning.sizing_profiles() if learning is not None else None
        assembly = build_system(cluster, loads, self._settings, self._parsed, profiles)
        assembled = self._clock.monotonic()
        parsed = parse_system(assembly.system)
        if self._own_cache:
            _fit_cache(self._cache, len(assembly.servers))
        views = self._look_ahead.observe(assembly, started) if self._look_ahead else {}
        ahead = {
            server: views[va.namespace, va.name].sized_rpm
            for server, va in assembly.servers.items()
            if (va.namespace, va.name) in views
        }
        target, headroom = self._settings.attainment, self._settings.headroom
        reference = target is None and headroom == 0 and not ahead
        rule = None if reference else SizingRule(target, headroom, ahead)
        groups = shared_groups(_served_keys(assembly))
        shares: dict[str, float] = {}
        if groups:  # variants of one model share its load: split it, cheapest first
            parsed, shares = share_loads(parsed, groups, self._cache, rule)
        solution = optimize_parsed(parsed, self._cache, rule)
        decisions = _decisions(
            assembly,
            solution,
            loads,
            _out_of_date(cluster, self.staleness_s),
            learning,
            views,
            shares,
        )
        if self._zero is not None:
            decisions = self._zero.apply(decisions, gateway, started)
        finished = self._clock.monotonic()
        snapshot = Snapshot(
            cycle=self._cycle,
            timestamp=started_wall,
            monotonic=started,
            duration_s=finished - started,
            decisions=decisions,
            config_problems=tuple(str(p) for p in assembly.config_problems)
            + tuple(str(p) for p in parsed.problems if p.kind != "server"),
            phases_s={
                "collect": collected - started,
                "assemble": assembled - collected,
                "optimize": finished - assembled,
            },
        )
        shared = {
            (assembly.servers[s].namespace, assembly.servers[s].name)
            for servers in groups.values()
            for s in servers
        }
        return snapshot, assembly, shared

    def _log_cycle(self, snapshot: Snapshot, previous: Snapshot | None) -> None:
        changed = 0
        for key, decision in snapshot.decisions.items():
            before = previous.decisions.get(key) if previous is not None else None
            changed += _log_decision(decision, before)
            _log_profile(decision, before)
            if decision.slo is not None and (before is None or before.slo != decision.slo):
                log.info(
                    "VariantAutoscaling %s/%s: model %s uses class %s (slo-itl %g ms, "
                    "slo-ttft %g ms) via %s",
                    decision.namespace,
                    decision.name,
                    decision.model,
                    decision.slo.class_name,
                    decision.slo.slo_itl,
                    decision.slo.slo_ttw,
                    decision.slo.via,
                )
        solved = sum(d.solved for d in snapshot.decisions.values())
        phases = snapshot.phases_s
        log.info(
            "cycle %d: %d VariantAutoscalings solved, %d not, %d decisions changed; %.3f s "
            "(collect %.3f, assemble %.3f, optimize %.3f)",
            snapshot.cycle,
            solved,
            len(snapshot.decisions) - solved,
            changed,
            snapshot.duration_s,
            phases["collect"],
            phases["assemble"],
            phases["optimize"],
        )

    def _count_internal_error(self, error: Exception) -> None:
        self.stats.cycle_errors_total += 1
        self.stats.last_error = f"internal error: {type(error).__name__}: {error}"

    def _collect(self, keys: Collection[LoadKey]) -> LoadReport:
        """The load, or CycleError; BaselineCycle when the source took its first reading.

        Warming up right after a baseline is a failure: the baseline did not bring a rate
        (e.g. targets replaced at every cycle), and that must be warned about and counted.
        """
        try:
            loads = self._metrics.collect(keys)
        except MetricsWarmingUp as error:
            if self._may_take_baseline:
                self._may_take_baseline = False
                raise BaselineCycle(
                    f"first scrape taken as baseline; rates from the next cycle ({error})"
                ) from error
            self.stats.metrics_errors_total += 1
            raise CycleError(
                f"metrics unavailable: {error} (still no rate after the baseline cycle)"
            ) from error
        except MetricsUnavailable as error:
            self._may_take_baseline = True
            self.stats.metrics_errors_total += 1
            raise CycleError(f"metrics unavailable: {error}") from error
        except Exception as error:  # a bug or an answer nobody anticipated: not the cluster
            self._may_take_baseline = True
            self.stats.metrics_errors_total += 1
            log.exception("cycle %d: the metrics source failed unexpectedly", self._cycle)
            raise CycleError(f"metrics source failed: {type(error).__name__}: {error}") from error
        self._may_take_baseline = True
        return loads

    async def run(self, stop: asyncio.Event, max_cycles: int | None = None) -> None:
        """Cycle every `interval_s` until `stop` is set (or after `max_cycles` cycles).

        A failed cycle, whatever the exception, is logged and retried at the next tick; the
        previous snapshot stays in place meanwhile. Cancellation (a BaseException) still
        stops the loop.
        """
        done = 0
        while not stop.is_set():
            try:
                await asyncio.to_thread(self._cycle_then_hook)
            except BaselineCycle:
                log.info(
                    "cycle %d: first scrape taken as baseline; rates from the next cycle",
                    self._cycle,
                )
            except InternalCycleError:
                pass  # run_cycle logged it with its traceback
            except CycleError as error:
                log.warning(
                    "cycle %d failed, keeping the previous decisions: %s", self._cycle, error
                )
            except Exception as error:  # outside run_cycle's guard (the after_cycle hook)
                self._count_internal_error(error)
                log.exception("cycle %d failed, keeping the previous decisions", self._cycle)
            done += 1
            if max_cycles is not None and done >= max_cycles:
                stop.set()
                break
            await sleep_unless(self._clock, self.interval_s, stop)

    def _cycle_then_hook(self) -> None:
        """A cycle, then the `after_cycle` hook, both on the worker thread."""
        try:
            self.run_cycle()
        finally:
            if self._after_cycle is not None:
                self._after_cycle()


def _out_of_date(cluster: ClusterSnapshot, limit_s: float) -> Callable[[str], str | None]:
    """namespace -> why its VAs get no decision (None: the view is recent enough).

    A VA depends on its own partition (VAs of its namespace or of all), its Deployment's,
    and the cluster-wide ConfigMaps and Nodes: if any of them has not been in sync with
    the API server for longer than `limit_s`, the objects the cycle read may have changed
    since (scaled, edited, deleted), and a decision on them is withheld, as any unsolved
    VA's: UNAVAILABLE over gRPC, never a number from an old view. It comes back by itself
    with the first cycle after the cache syncs again. Sources without an API server (a
    folder of YAML) are never out of date.
    """
    sync = cluster.sync if isinstance(cluster, SyncedClusterSnapshot) else None
    if sync is None:
        return lambda _namespace: None
    behind = sync.behind(limit_s)
    if not behind:
        return lambda _namespace: None
    limit_s = sync.limit(limit_s)  # never below two watch renewals (see SyncState.limit)
    reasons: dict[str, str | None] = {}

    def stale(namespace: str) -> str | None:
        if namespace not in reasons:
            reasons[namespace] = _stale_reason(
                [(p, age) for p, age in behind if p.covers(namespace)], limit_s
            )
        return reasons[namespace]

    return stale


def _stale_reason(behind: list[tuple[PartitionSync, float]], limit_s: float) -> str | None:
    if not behind:
        return None
    parts = ", ".join(
        f"{p.name} {'never' if p.synced_at is None else 'last'} in sync "
        f"({age:.0f} s{'' if p.synced_at is None else ' ago'})"
        for p, age in behind
    )
    return (
        f"{KUBERNETES_STALE}: {parts}, limit {limit_s:g} s; no decision until the "
        "Kubernetes API answers again"
    )


def _served_keys(assembly: Assembly) -> dict[str, LoadKey]:
    """Each server's (namespace, model): the vLLM series it is sized on."""
    return {server: (va.namespace, va.spec.model_id) for server, va in assembly.servers.items()}


def _decisions(
    assembly: Assembly,
    solution: Solution,
    loads: LoadReport,
    stale: Callable[[str], str | None] = lambda _namespace: None,
    learning: ProfileLearning | None = None,
    ahead: Mapping[VariantKey, AheadView] | None = None,
    shares: Mapping[str, float] | None = None,
) -> dict[VariantKey, VariantDecision]:
    """The decisions of the assembled VAs and the VAs left out. `shares`: the arrival
    rate each server sharing its model's load was sized for (`adapter.variants`)."""
    out: dict[VariantKey, VariantDecision] = {}
    for problem in assembly.problems:
        out[(problem.namespace, problem.name)] = VariantDecision(
            namespace=problem.namespace,
            name=problem.name,
            model="",
            accelerator="",
            desired_replicas=None,
            current_replicas=None,
            reason=stale(problem.namespace) or problem.reason,
        )
    by_name = {decision.name: decision for decision in solution.servers}
    docs = _server_docs(assembly.system)
    for server, va in assembly.servers.items():
        server_doc = docs.get(server)
        current = server_doc.get("currentAlloc", {}) if server_doc else {}
        decision = by_name.get(server)
        load = loads.get(va.namespace, va.spec.model_id)
        if shares and server in shares:
            load = replace(load, arrival_rate_rpm=shares[server])
        base: dict[str, Any] = {
            "namespace": va.namespace,
            "name": va.name,
            "model": va.spec.model_id,
            "current_replicas": current.get("numReplicas"),
            "max_replicas": server_doc.get("maxNumReplicas") if server_doc else None,
            "load": load,
            "slo": assembly.slo.get(server),
            "profile": _profile_view(assembly, server, learning),
            "ahead": (ahead or {}).get((va.namespace, va.name)),
        }
        withheld = stale(va.namespace)
        if withheld is not None or decision is None or decision.allocation is None:
            if withheld is not None:
                reason = withheld
            elif decision is not None:
                reason = decision.reason or "no allocation"
            else:
                reason = "not in the optimizer's input"
            out[(va.namespace, va.name)] = VariantDecision(
                accelerator=current.get("accelerator", ""),
                desired_replicas=None,
                reason=reason,
                **base,
            )
            continue
        allocation = decision.allocation
        out[(va.namespace, va.name)] = VariantDecision(
            accelerator=allocation.accelerator,
            desired_replicas=allocation.num_replicas,
            reason="optimized",
            predicted_itl_ms=allocation.serv_time,
            predicted_wait_ms=allocation.wait_time,
            max_rpm_per_replica=allocation.max_rpm if load.arrival_rate_rpm > 0 else None,
            cost=allocation.cost,
            slo_batch=_slo_batch(assembly, server, base["profile"], allocation.max_batch),
            **base,
        )
    return out


def _slo_batch(
    assembly: Assembly, server: str, profile: ProfileView | None, max_batch: int
) -> int | None:
    """The largest batch whose step time (alpha + beta x batch, the profile sized with)
    is within the ITL SLO, at most `max_batch`; None if even one request is not."""
    served = assembly.served.get(server)
    if served is None:
        return None
    if profile is not None:
        alpha, beta = profile.alpha_ms, profile.beta_ms
    else:
        alpha, beta = served.declared.alpha, served.declared.beta
    return slo_batch(alpha, beta, served.slo_itl_ms, max_batch)


def _withheld_as_stale(decision: VariantDecision) -> bool:
    return not decision.solved and decision.reason.startswith(KUBERNETES_STALE)


def _log_profile(decision: VariantDecision, before: VariantDecision | None) -> None:
    """Say when a VA starts or stops being sized with its learned profile."""
    now = decision.profile
    was = before.profile.source if before is not None and before.profile is not None else None
    if now is None or now.source == (was or "declared"):
        return
    fit = now.learned
    if now.source == "learned" and fit is not None:
        log.info(
            "VariantAutoscaling %s/%s: sizing with its learned profile, alpha %.4g ms, beta "
            "%.4g ms (declared %g, %g; %d cycles, %s)",
            decision.namespace,
            decision.name,
            fit.alpha_ms,
            fit.beta_ms,
            now.declared_alpha_ms,
            now.declared_beta_ms,
            fit.accepted,
            fit.reason,
        )
    elif now.source == "held":
        log.info(
            "VariantAutoscaling %s/%s: sizing with its last trusted learned profile, alpha "
            "%.4g ms, beta %.4g ms, until the fit is trusted again (%s); the declared %g, %g "
            "was refuted",
            decision.namespace,
            decision.name,
            now.alpha_ms,
            now.beta_ms,
            fit.reason if fit is not None else "no fit",
            now.declared_alpha_ms,
            now.declared_beta_ms,
        )
    else:
        log.info(
            "VariantAutoscaling %s/%s: sizing with its declared profile again (%s)",
            decision.namespace,
            decision.name,
            fit.reason if fit is not None and not fit.trusted else "the data agree with it",
        )


def _profile_view(
    assembly: Assembly, server: str, learning: ProfileLearning | None
) -> ProfileView | None:
    served = assembly.served.get(server)
    if learning is None or served is None:
        return None
    va = assembly.servers[server]
    return learning.view((va.namespace, va.name), (served.declared.alpha, served.declared.beta))


def _server_docs(system: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The SystemSpec's server documents by name (the first one for a repeated name).

    One pass: looking each server up in the list made a cycle quadratic in the number
    of VAs (seconds at 5000).
    """
    docs: dict[str, Mapping[str, Any]] = {}
    for server in system.get("serverData", {}).get("servers", []):
        docs.setdefault(server.get("name"), server)
    return docs


def _fit_cache(cache: SizingCache, servers: int) -> None:
    """Bound the engine's own sizing cache by the problem size (a memo: no effect on results).

    The default bounds (50 000 candidate lists, 200 000 statistics) cost about 4 KB per
    list: with 5000 VAs whose load changes, the cache grew by ~20 MB a cycle up to
    ~250 MB. Two lists per server keep every unchanged server a hit and leave room for a
    cycle in which every load changes.
    """
    cache.max_servers = max(1_000, 2 * servers)
    cache.max_stats = max(20_000, 4 * servers)


def _log_decision(decision: VariantDecision, before: VariantDecision | None) -> bool:
    """INFO when the answer changed (or is new), DEBUG when it is the last cycle's again;
    True if it changed. Unsolved VAs are warned about at every cycle.

    At 5000 VAs a line per VA per cycle was 1 MB of log a cycle and 0.3 s of its time.
    """
    if decision.solved:
        load = decision.load
        changed = before is None or (
            before.desired_replicas,
            before.current_replicas,
            before.accelerator,
        ) != (decision.desired_replicas, decision.current_replicas, decision.accelerator)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "VariantAutoscaling %s/%s: desired %s x %s (current %s); load %.2f req/min, "
            "%d tokens/request; predicted ITL %.3f ms, wait %.3f ms%s",
            decision.namespace,
            decision.name,
            decision.desired_replicas,
            decision.accelerator,
            decision.current_replicas,
            load.arrival_rate_rpm if load else 0.0,
            int(load.avg_output_tokens) if load else 0,
            decision.predicted_itl_ms or 0.0,
            decision.predicted_wait_ms or 0.0,
            "" if decision.reason == "optimized" else f"; {decision.reason}",
        )
        return changed
    log.warning(
        "VariantAutoscaling %s/%s: no decision: %s",
        decision.namespace,
        decision.name,
        decision.reason,
    )
    return before is None or before.solved or before.reason != decision.reason
