"""`wva-adapter simulate`: one trace, several policies, the same requests, a report.

Each policy runs its own control loop against its own simulated Deployment
(`SimCluster`) fed with exactly the same arrivals. Per policy the report gives, over the
requests that arrived in the run:

- ITL attainment: % of requests whose mean inter-token latency is within the variant's
  `slo-tpot` (9 ms in the tutorial); TTFT attainment: % within `slo-ttft` (1000 ms);
  SLO attainment: % within both.
  Requests still in flight at the end are left out; requests refused for want of a
  ready replica count as misses (none with min replicas >= 1), and so do, for both
  SLOs, the requests a scale-down killed (running when their pod's grace period ended)
  or made retry (queued on a pod when it was removed: whatever their retry did, their
  client saw an error first; the TTFT of a retried request counts from its first
  arrival). `killed`, `retried`, `preemptions` count them per policy;
- GPU hours (pods hold their GPU from creation, startup included, until their last
  request ends) and their cost at the accelerator's unit cost per hour;
- scale events (changes of spec.replicas, up and down);
- reaction to the trace's first step up (`step_up_at`), against the replicas in place
  at the step: `reaction_s`, from the step to the first time spec.replicas exceeds
  them (the scale-up is decided); `reaction_cycles`, how many of the policy's own
  decision instants fell in (step, that time], i.e. at which of its cycles after the
  step it acted (1: the first cycle that could see the step; a quotient like
  22.5 / 15 would mix in the phase of the loops); `ready_s`, from the step to the
  first time ready replicas exceed those at the step (the capacity serves). Requests
  in flight between the step and that time are the ones a reactive policy cannot save:
  `itl_misses_at_step` counts the ITL misses among them.

The pods run `true_profile` (default: the VA's); the adapter and every policy read
only the VA's declared profile (ours and wva-tutorial from the samples'
VariantAutoscaling, as in a cluster; keda-queue reads none), so a mismatch shows what a
wrong profile costs.

Pure: no clock, no files. `adapter.sim.command` is the edge (CLI, JSON, plot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from adapter.defaults import DEFAULT_RETENTION_S
from adapter.emulator.batching import Request, ServingProfile
from adapter.sim.cluster import (
    DEFAULT_TERMINATION_GRACE_S,
    ClusterSettings,
    ScaleRecord,
    SimCluster,
)
from adapter.sim.policies import (
    DESCRIPTIONS,
    POLICIES,
    Limits,
    Policy,
    SimSetup,
    build_policy,
    parse_label,
)
from adapter.sim.traces import RequestShape, Trace, Workload, make_workload

# How long the simulated gateway holds a request while no replica is ready (with min
# replicas 0): longer than a start-up, as an llm-d router's flow-control queue is set up
# for scale from zero.
GATEWAY_HOLD_S = 300.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyResult(_Frozen):
    policy: str
    description: str
    cycle_s: float
    completed: int
    unfinished: int  # in flight when the run ended
    rejected: int
    itl_attainment_pct: float
    ttft_attainment_pct: float
    slo_attainment_pct: float  # % within both SLOs
    itl_mean_ms: float | None
    itl_p95_ms: float | None
    ttft_p95_ms: float | None
    gpu_hours: float
    cost: float
    scale_ups: int
    scale_downs: int
    max_replicas: int
    itl_misses: int  # requests over the ITL SLO (refused, killed and retried ones included)
    reaction_s: float | None  # None: no step in the trace, or never scaled up after it
    reaction_cycles: int | None
    ready_s: float | None  # step -> more ready replicas than at the step
    replicas_at_step: int | None  # spec.replicas in place at the step
    itl_misses_at_step: int | None  # ITL misses in flight between the step and ready_s
    killed: int = 0  # failed for good when their pod went away
    retried: int = 0  # queued on a removed pod: failed at once, sent again by their client
    preemptions: int = 0  # vllm:num_preemptions over the Deployment (KV cache full)
    # with min replicas 0: requests the gateway held for want of a ready replica, and
    # per wake-up (the gateway's first held request after it held none) the seconds from
    # that request's arrival to its first token
    held: int = 0
    held_itl_attainment_pct: float | None = None  # of the held requests that finished
    wake_ups_s: list[float] = []


class Series(_Frozen):
    """Time series for the plot: one value per bin of `bin_s` seconds starting at `t`."""

    bin_s: float
    t: list[float]
    trace_rps: list[float]  # the trace's rate at the middle of the bin
    offered_rps: list[float]  # arrivals in the bin / bin_s
    replicas: dict[str, list[int]]  # spec.replicas at the end of the bin, per policy
    ready: dict[str, list[int]]
    itl_ms: dict[str, list[float | None]]  # mean ITL of requests finishing in the bin


class ProfileFigures(_Frozen):
    """A serving profile as the report shows it."""

    alpha_ms: float
    beta_ms: float
    prefill_ms_per_token: float
    max_batch_size: int

    @classmethod
    def of(cls, profile: ServingProfile) -> ProfileFigures:
        return cls(
            alpha_ms=profile.alpha_ms,
            beta_ms=profile.beta_ms,
            prefill_ms_per_token=profile.prefill_ms_per_token,
            max_batch_size=profile.max_batch_size,
        )


class SimReport(_Frozen):
    trace: str
    duration_s: float
    seed: int
    requests: int
    step_up_at: float | None
    startup_delay_s: float
    phase: float  # the policies' loops against the trace, a fraction of each one's cycle
    hpa_phase_s: float | None  # ours: HPA sync after the adapter's cycle (None: half)
    variant: str
    model: str
    accelerator: str
    slo_itl_ms: float
    slo_ttft_ms: float
    unit_cost: float
    min_replicas: int
    max_replicas: int
    policies: list[PolicyResult]
    series: Series
    va_profile: ProfileFigures  # what the VA declares: what the adapter and policies read
    true_profile: ProfileFigures  # what the simulated GPUs do
    kv_cache_tokens: int  # the pods' KV cache: num_gpu_blocks x kv_block_size
    num_gpu_blocks: int
    kv_block_size: int
    termination_grace_s: float
    hpa_configurable_tolerance: bool  # False: ours' HPA has the default 10 % tolerance
    # from zero: the same policies on the same requests, held at one replica at least
    held_at_one: list[PolicyResult] | None = None

    def result(self, policy: str) -> PolicyResult:
        for result in self.policies:
            if result.policy == policy:
                return result
        raise KeyError(policy)


class Acting(Protocol):
    """What `run_policy` drives: a policy's next action time and the action."""

    def next_time(self) -> float: ...

    def act(self, now: float) -> None: ...


def run_policy(cluster: SimCluster, policy: Acting, end: float) -> None:
    """Interleave the policy's actions with the cluster's events up to `end`."""
    while (at := policy.next_time()) < end:
        cluster.run_until(at)
        policy.act(at)
    cluster.run_until(end)


def simulate_from_zero(
    setup: SimSetup, trace: Trace, *, limits: Limits, **options: Any
) -> SimReport:
    """`simulate` from zero (`limits.min_replicas` 0, `options` as `simulate` takes them),
    and the same policies on the same requests held at one replica at least, in
    `held_at_one`: what scaling to zero saves."""
    if limits.min_replicas != 0:
        raise ValueError(f"from zero needs min replicas 0, got {limits.min_replicas}")
    report = simulate(setup, trace, limits=limits, **options)
    held = simulate(setup, trace, limits=Limits(1, limits.max_replicas), **options)
    return report.model_copy(update={"held_at_one": held.policies})


def simulate(
    setup: SimSetup,
    trace: Trace,
    *,
    policies: Sequence[str] = POLICIES,
    seed: int = 1,
    startup_delay_s: float = 60.0,
    limits: Limits | None = None,
    shape: RequestShape | None = None,
    hpa_phase_s: float | None = None,
    phase: float = 0.0,
    bin_s: float | None = None,
    stepwise: bool = False,
    true_profile: ServingProfile | None = None,
    termination_grace_s: float = DEFAULT_TERMINATION_GRACE_S,
    hpa_configurable_tolerance: bool = True,
    profile_learning: bool = True,
    scale_to_zero_after_s: float = DEFAULT_RETENTION_S,
    gateway_hold_s: float = GATEWAY_HOLD_S,
) -> SimReport:
    """Run `trace` under each policy and measure them on the same seeded requests.

    `phase` in [0, 1): each policy's first decision comes that fraction of its cycle
    after t = 0 (see `build_policy`); `hpa_phase_s`: ours' HPA sync after each cycle;
    `true_profile`: what the pods' GPUs do (default the VA's, `setup.profile`, which the
    policies read either way); `termination_grace_s`: a removed pod's grace period;
    `hpa_configurable_tolerance=False`: the cluster lacks HPAConfigurableTolerance;
    `profile_learning=False`: ours keeps the VA's declared profile (`--no-profile-learning`).
    With `limits.min_replicas` 0 (ours only): the Deployment starts at 0, the gateway holds
    requests up to `gateway_hold_s` while no replica is ready, and ours goes to zero after
    `scale_to_zero_after_s` without traffic."""
    limits = limits or Limits()
    served = true_profile if true_profile is not None else setup.profile
    if not policies:
        raise ValueError(f"no policies; known: {', '.join(POLICIES)}")
    for label in policies:
        parse_label(label)  # raises, naming it
    if len(set(policies)) != len(policies):
        raise ValueError(f"a policy is listed twice: {', '.join(policies)}")
    shape = shape or RequestShape()
    workload = make_workload(trace, seed, shape)
    end = trace.duration_s
    bin_s = bin_s or _bin(end)
    results: list[PolicyResult] = []
    replicas: dict[str, list[int]] = {}
    ready: dict[str, list[int]] = {}
    itl: dict[str, list[float | None]] = {}
    for name in policies:
        cluster = SimCluster(
            ClusterSettings(
                served,
                startup_delay_s=startup_delay_s,
                initial_replicas=limits.min_replicas,
                stepwise=stepwise,
                termination_grace_s=termination_grace_s,
                hold_s=gateway_hold_s if limits.min_replicas == 0 else 0.0,
            ),
            workload,
        )
        policy = build_policy(
            name,
            setup,
            cluster,
            limits,
            hpa_phase_s=hpa_phase_s,
            phase=phase,
            hpa_configurable_tolerance=hpa_configurable_tolerance,
            trace=trace,
            shape=shape,
            profile_learning=profile_learning,
            scale_to_zero_after_s=scale_to_zero_after_s,
        )
        run_policy(cluster, policy, end)
        results.append(_result(setup, trace, cluster, policy))
        replicas[name], ready[name] = _replica_series(cluster.history, end, bin_s)
        itl[name] = _itl_series(cluster.finished, end, bin_s)
    bins = math.ceil(end / bin_s)
    return SimReport(
        trace=trace.name,
        duration_s=end,
        seed=seed,
        requests=len(workload),
        step_up_at=trace.step_up_at,
        startup_delay_s=startup_delay_s,
        phase=phase,
        hpa_phase_s=hpa_phase_s,
        variant=f"{setup.variant[0]}/{setup.variant[1]}",
        model=setup.model,
        accelerator=setup.accelerator,
        slo_itl_ms=setup.slo_itl_ms,
        slo_ttft_ms=setup.slo_ttft_ms,
        unit_cost=setup.unit_cost,
        min_replicas=limits.min_replicas,
        max_replicas=limits.max_replicas,
        policies=results,
        series=Series(
            bin_s=bin_s,
            t=[i * bin_s for i in range(bins)],
            trace_rps=[trace.rate(min((i + 0.5) * bin_s, end)) for i in range(bins)],
            offered_rps=_offered(workload, end, bin_s),
            replicas=replicas,
            ready=ready,
            itl_ms=itl,
        ),
        va_profile=ProfileFigures.of(setup.profile),
        true_profile=ProfileFigures.of(served),
        kv_cache_tokens=served.kv_cache_tokens,
        num_gpu_blocks=served.gpu_blocks,
        kv_block_size=served.block_size,
        termination_grace_s=termination_grace_s,
        hpa_configurable_tolerance=hpa_configurable_tolerance,
    )


def _bin(duration_s: float) -> float:
    """About 240 bins, a whole multiple of 5 s."""
    return max(5.0, 5.0 * math.ceil(duration_s / 240.0 / 5.0))


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _result(setup: SimSetup, trace: Trace, cluster: SimCluster, policy: Policy) -> PolicyResult:
    done = cluster.finished
    retried = cluster.retried  # a retry -> its client's first arrival
    killed = cluster.killed
    itl_ms = [r.itl_mean * 1000.0 for r in done]
    # from the client's first arrival: a retried request's wait for its error counts
    ttft_ms = [(r.ttft if r not in retried else _ttft_since(r, retried[r])) * 1000.0 for r in done]
    # a retried request saw an error first: a miss of both SLOs whatever its retry did
    itl_ok_of = [
        v <= setup.slo_itl_ms and r not in retried for r, v in zip(done, itl_ms, strict=True)
    ]
    judged = len(done) + len(cluster.rejected) + len(killed)
    itl_ok = sum(itl_ok_of)
    itl_misses = judged - itl_ok
    ttft_ok_of = [
        v <= setup.slo_ttft_ms and r not in retried for r, v in zip(done, ttft_ms, strict=True)
    ]
    ttft_ok = sum(ttft_ok_of)
    both_ok = sum(a and b for a, b in zip(itl_ok_of, ttft_ok_of, strict=True))
    ups = downs = 0
    for before, after in pairwise(cluster.history):
        ups += after.replicas > before.replicas
        downs += after.replicas < before.replicas
    gpu_hours = cluster.replica_seconds() / 3600.0 * setup.gpus_per_replica
    step = trace.step_up_at
    in_place, scaled, ready = _reaction(cluster.history, step)
    reaction = scaled - step if scaled is not None and step is not None else None
    misses_at_step = None
    if ready is not None and step is not None:
        # in flight at some instant of [step, ready]: arrived by `ready`, ended after `step`
        misses_at_step = (
            sum(
                1
                for r, ok in zip(done, itl_ok_of, strict=True)
                if not ok
                and retried.get(r, r.arrival) <= ready
                and r.finished is not None
                and r.finished >= step
            )
            + sum(1 for t in cluster.rejected if step <= t <= ready)
            + sum(1 for k in killed if k.arrival <= ready and k.at >= step)
        )
    return PolicyResult(
        policy=policy.name,
        description=DESCRIPTIONS[parse_label(policy.name)[0]],
        cycle_s=policy.cycle_s,
        completed=len(done),
        unfinished=cluster.counters.arrivals - len(done) - len(cluster.rejected) - len(killed),
        rejected=len(cluster.rejected),
        itl_attainment_pct=100.0 * itl_ok / judged if judged else 100.0,
        ttft_attainment_pct=100.0 * ttft_ok / judged if judged else 100.0,
        slo_attainment_pct=100.0 * both_ok / judged if judged else 100.0,
        itl_mean_ms=sum(itl_ms) / len(itl_ms) if itl_ms else None,
        itl_p95_ms=_percentile(itl_ms, 0.95),
        ttft_p95_ms=_percentile(ttft_ms, 0.95),
        gpu_hours=gpu_hours,
        cost=gpu_hours * setup.unit_cost,
        scale_ups=ups,
        scale_downs=downs,
        max_replicas=max(r.replicas for r in cluster.history),
        itl_misses=itl_misses,
        reaction_s=reaction,
        reaction_cycles=(
            _cycles_between(policy, step, scaled)
            if scaled is not None and step is not None
            else None
        ),
        ready_s=ready - step if ready is not None and step is not None else None,
        replicas_at_step=in_place.replicas if in_place is not None else None,
        itl_misses_at_step=misses_at_step,
        killed=len(killed),
        retried=len(retried),
        preemptions=cluster.preemptions,
        held=len(cluster.held_ever),
        held_itl_attainment_pct=_share(
            [ok for r, ok in zip(done, itl_ok_of, strict=True) if r in cluster.held_ever]
        ),
        wake_ups_s=[
            r.first_token - r.arrival for r in cluster.wake_requests if r.first_token is not None
        ],
    )


def _share(flags: Sequence[bool]) -> float | None:
    """% of the flags set (None for none)."""
    return 100.0 * sum(flags) / len(flags) if flags else None


def _ttft_since(request: Request, first_arrival: float) -> float:
    """Seconds from the client's first arrival to the request's first token."""
    assert request.first_token is not None
    return request.first_token - first_arrival


def _reaction(
    history: Sequence[ScaleRecord], step_at: float | None
) -> tuple[ScaleRecord | None, float | None, float | None]:
    """What was in place at the step (the last record at or before it: a change at the
    step's very instant was decided without seeing it), and when, after the step,
    spec.replicas and then ready replicas first exceed it."""
    if step_at is None or not history:
        return None, None, None
    at_step = history[0]
    for record in history:
        if record.at > step_at:
            break
        at_step = record
    scaled = next((r.at for r in history if r.at > step_at and r.replicas > at_step.replicas), None)
    ready = next((r.at for r in history if r.at > step_at and r.ready > at_step.ready), None)
    return at_step, scaled, ready


def _cycles_between(policy: Policy, start: float, end: float) -> int:
    """How many of the policy's decision instants (first_cycle_s + k * cycle_s) fall in
    (start, end]: 1 if it acted at its first decision after `start`."""

    def index(t: float) -> int:
        # decisions at or before t; a hair of tolerance for float sums like 7.5 + k * 15
        return math.floor((t - policy.first_cycle_s) / policy.cycle_s + 1e-9)

    return index(end) - index(start)


def _replica_series(
    history: Sequence[ScaleRecord], end: float, bin_s: float
) -> tuple[list[int], list[int]]:
    replicas: list[int] = []
    ready: list[int] = []
    i = 0
    for b in range(math.ceil(end / bin_s)):
        edge = min((b + 1) * bin_s, end)
        while i + 1 < len(history) and history[i + 1].at <= edge:
            i += 1
        replicas.append(history[i].replicas)
        ready.append(history[i].ready)
    return replicas, ready


def _itl_series(done: Sequence[Request], end: float, bin_s: float) -> list[float | None]:
    bins = math.ceil(end / bin_s)
    sums = [0.0] * bins
    counts = [0] * bins
    for request in done:
        assert request.finished is not None
        b = min(int(request.finished // bin_s), bins - 1)
        sums[b] += request.itl_mean * 1000.0
        counts[b] += 1
    return [s / n if n else None for s, n in zip(sums, counts, strict=True)]


def _offered(workload: Workload, end: float, bin_s: float) -> list[float]:
    bins = math.ceil(end / bin_s)
    counts = [0] * bins
    for at in workload.arrivals:
        counts[min(int(at // bin_s), bins - 1)] += 1
    return [n / bin_s for n in counts]


def format_table(report: SimReport) -> str:
    """The per-policy figures as a fixed-width table."""
    header = (
        f"{'policy':<13} {'ITL ok %':>8} {'TTFT ok %':>9} {'ITL p95':>8} {'GPU h':>7} "
        f"{'cost':>8} {'ups':>4} {'downs':>5} {'max':>4} {'killed':>6} {'retried':>7} "
        f"{'reaction':>18}"
    )
    lines = [header]
    for r in report.policies:
        lines.append(
            f"{r.policy:<13} {r.itl_attainment_pct:8.2f} {r.ttft_attainment_pct:9.2f} "
            f"{_ms(r.itl_p95_ms):>8} {r.gpu_hours:7.3f} {r.cost:8.2f} {r.scale_ups:4d} "
            f"{r.scale_downs:5d} {r.max_replicas:4d} {r.killed:6d} {r.retried:7d} "
            f"{reaction_text(r):>18}"
        )
    for r in report.policies:
        if r.held or r.wake_ups_s:
            lines.append(wake_text(r))
    held = report.held_at_one
    for zero, one in zip(report.policies, held, strict=True) if held is not None else ():
        ratio = f"{zero.gpu_hours / one.gpu_hours:.2f}" if one.gpu_hours > 0 else "-"
        lines.append(
            f"{zero.policy}: held at 1 replica on the same requests: {one.gpu_hours:.3f} GPU h"
            f" (ITL ok {one.itl_attainment_pct:.2f} %, TTFT ok {one.ttft_attainment_pct:.2f} %);"
            f" from zero takes {ratio} x its GPU-hours"
        )
    return "\n".join(lines)


def wake_text(result: PolicyResult) -> str:
    """From zero: requests held at the gateway, refused, and the wake-ups' times from the
    first held request to its first token."""
    times = sorted(result.wake_ups_s)
    spread = (
        f"first token {times[len(times) // 2]:.1f} s (median) / {times[-1]:.1f} s (max) after"
        " the first held request"
        if times
        else "no wake-up served"
    )
    held_itl = result.held_itl_attainment_pct
    within = f" ({held_itl:.1f} % of them within the ITL SLO)" if held_itl is not None else ""
    return (
        f"{result.policy}: from zero: {len(times)} wake-up{'' if len(times) == 1 else 's'},"
        f" {result.held} requests held at"
        f" the gateway{within}, {result.rejected} refused, {result.unfinished} in flight when"
        " the run ended;"
        f" {spread}"
    )


def reaction_text(result: PolicyResult) -> str:
    """`22.5 s (cycle 1)`: seconds to the scale-up, and at which of its cycles it came."""
    if result.reaction_s is None:
        return "-"
    assert result.reaction_cycles is not None
    return f"{result.reaction_s:.1f} s (cycle {result.reaction_cycles})"


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"
