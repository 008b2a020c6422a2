"""Candidate allocations: every (server, accelerator) pair sized for the server's load.

For each server the candidates are the accelerators it may run on (only its current
one with `keepAccelerator`), each with the replica count that carries the load
within the SLOs, its cost, the predicted ITL/wait at that count, and its value: the
transition penalty from the current allocation, which the solvers minimise.

All sizing happens in batches (one numpy pass over all candidates). Three caches make
later cycles cheap: per-replica capacity by profile (it does not depend on the load),
statistics by (queue, per-replica rate), and whole candidate lists by the values that
decide them, so an unchanged server costs one dictionary lookup.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from adapter.model.system import (
    AcceleratorSpec,
    ModelPerfSpec,
    ModelTarget,
    ServerSpec,
    SystemSpec,
)
from adapter.optimizer.allocation import ACCELERATOR_CHANGE_PENALTY, Allocation, transition_value
from adapter.queueing.attainment import ReplicaModel, attainment
from adapter.queueing.sizing import CHUNK_ROWS, CapacityCache, Profile
from adapter.queueing.statedependent import BatchModel

F32 = np.float32


@dataclass(frozen=True, slots=True)
class ServerCandidates:
    """What the solvers need about one server."""

    server: ServerSpec
    priority: int
    candidates: tuple[Allocation, ...]  # feasible ones, input (accelerator) order
    # why accelerators were left out, e.g. an unattainable SLO
    rejected: tuple[tuple[str, str], ...] = ()
    target: ModelTarget | None = None


@dataclass(frozen=True, slots=True)
class _Sized:
    """A server's candidates as the memo keeps them: without the ServerSpec, so that a
    remembered entry does not hold a previous cycle's parsed input alive."""

    priority: int
    candidates: tuple[Allocation, ...]
    rejected: tuple[tuple[str, str], ...]
    target: ModelTarget | None

    def attach(self, server: ServerSpec) -> ServerCandidates:
        return ServerCandidates(server, self.priority, self.candidates, self.rejected, self.target)


StatsKey = tuple[float, float, int, int, float]

DEFAULT_ATTAINMENT = 0.99


@dataclass(frozen=True, slots=True)
class SizingRule:
    """How the adapter departs from the reference's sizing.

    `target`: size each candidate for a share of its requests within the ITL and TTFT
    SLOs (`adapter.queueing.attainment`) rather than the reference's mean ITL; None
    keeps the mean rule. A class's `slo-attainment` (percent) overrides `target` for its
    models. The replica count never goes below the mean rule's for a target of 50 % or
    more (the model's mean batch is then within the SLO), so the rule only adds
    replicas there.

    `headroom`: size for the measured arrival rate times (1 + headroom). A reactive
    loop asks for a replica only after the load arrived, and the replica serves a
    start-up later; headroom buys that start-up's worth of growth in advance, for
    GPU-hours (bench/arena.py measures the trade). The allocation's predicted ITL and
    wait are at the rate sized for.

    `ahead`: by server name, an arrival rate (req/min) to size for when it exceeds the
    measured one: the load forecast a start-up ahead (`adapter.lookahead`).

    Without a rule the optimizer is the reference's, exactly (`wva-adapter optimize`).
    """

    target: float | None = DEFAULT_ATTAINMENT
    headroom: float = 0.0
    ahead: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.target is not None and not 0.0 < self.target < 1.0:
            raise ValueError(f"attainment target must be in (0, 1), got {self.target}")
        if not (math.isfinite(self.headroom) and self.headroom >= 0.0):
            raise ValueError(f"headroom must be a finite fraction >= 0, got {self.headroom}")

    def target_for(self, model_target: ModelTarget) -> float | None:
        """The share this model is sized for, or None for the mean rule."""
        if self.target is None:
            return None
        own = model_target.slo_attainment
        return self.target if own is None else own / 100.0


@dataclass
class SizingCache:
    """Capacities by profile and per-replica statistics by (queue, rate), both LRU."""

    capacity: CapacityCache = field(default_factory=CapacityCache)
    max_stats: int = 200_000
    # whole candidate lists by the values that decide them: an unchanged server costs
    # one dictionary lookup
    max_servers: int = 50_000
    servers: OrderedDict[Hashable, _Sized] = field(default_factory=OrderedDict)
    _stats: OrderedDict[StatsKey, tuple[float, float, float]] = field(default_factory=OrderedDict)

    def statistics(self, keys: Sequence[StatsKey]) -> list[tuple[float, float, float]]:
        """(serv_time S, wait W, rho) per (alpha, beta, N, K, rate) key."""
        stats = self._stats
        missing = sorted((k for k in dict.fromkeys(keys) if k not in stats), key=itemgetter(2))
        # in chunks of similar max batch: small, tight matrices
        for start in range(0, len(missing), CHUNK_ROWS):
            chunk = missing[start : start + CHUNK_ROWS]
            columns = list(zip(*chunk, strict=True))
            model = BatchModel(
                np.array(columns[0], dtype=np.float32),
                np.array(columns[1], dtype=np.float32),
                np.array(columns[2], dtype=np.int64),
                np.array(columns[3], dtype=np.float32),
            )
            serv, wait, rho = model.solve(
                np.arange(len(chunk)), np.array(columns[4], dtype=np.float32)
            )
            for key, values in zip(
                chunk, zip(serv.tolist(), wait.tolist(), rho.tolist(), strict=True), strict=True
            ):
                stats[key] = values
        out = list(map(stats.__getitem__, keys))
        if len(stats) > self.max_stats:
            for key in keys:
                stats.move_to_end(key)
            while len(stats) > self.max_stats:
                stats.popitem(last=False)
        return out


def _batch_size(server: ServerSpec, perf: ModelPerfSpec, tokens: int) -> int:
    """N: the server's override, else the profile's max batch rescaled to this request length.

    A fixed KV budget is assumed: N * K stays what it was at `atTokens`. Without
    `atTokens` the profile's max batch is taken as is.
    """
    if server.max_batch_size > 0:
        return server.max_batch_size
    if perf.at_tokens is None:
        return perf.max_batch_size
    return max(perf.max_batch_size * perf.at_tokens // tokens, 1)


def _zero_load(server: ServerSpec, accelerator: AcceleratorSpec, perf: ModelPerfSpec) -> Allocation:
    """No traffic: the minimum replicas, idle statistics (the reference's figures)."""
    replicas = server.min_num_replicas
    batch = server.max_batch_size if server.max_batch_size > 0 else perf.max_batch_size
    alpha, beta = F32(perf.alpha), F32(perf.beta)
    if server.replica_cost is not None:
        cost = float(F32(server.replica_cost) * F32(replicas))
    else:
        cost = float(F32(accelerator.cost) * F32(perf.acc_count * replicas))
    return Allocation(
        accelerator=accelerator.name,
        num_replicas=replicas,
        max_batch=batch,
        cost=cost,
        value=transition_value(server.current_alloc, accelerator.name, replicas, cost),
        serv_time=float(alpha + beta),
        wait_time=0.0,
        rho=0.0,
        # the reference's figure: a batch per decode step, not requests/ms
        max_rate_per_replica=float(F32(batch) / (alpha + beta * F32(batch))),
    )


def _accelerator_choices(
    server: ServerSpec, accelerators: Sequence[AcceleratorSpec], by_name: dict[str, AcceleratorSpec]
) -> Sequence[AcceleratorSpec]:
    current = server.current_alloc.accelerator
    if server.keep_accelerator and current:
        found = by_name.get(current)
        return [found] if found is not None else []
    return accelerators


def build_candidates(
    spec: SystemSpec, cache: SizingCache | None = None, rule: SizingRule | None = None
) -> list[ServerCandidates]:
    """Size every server on every accelerator it may use, in one batch (by the mean ITL,
    as the reference, or for a share of requests within the SLOs with a `rule`)."""
    cache = cache if cache is not None else SizingCache()
    by_name = {a.name: a for a in spec.accelerators}
    perf_by_key = {(m.name, m.acc): m for m in spec.models}
    targets_by_key: dict[tuple[str, str], tuple[ModelTarget, int]] = {}
    for service_class in spec.service_classes:
        for target in service_class.model_targets:
            targets_by_key.setdefault(
                (service_class.name, target.model), (target, service_class.priority)
            )

    # inputs that decide a server's candidates, by value, for the per-server memo
    perf_values = {
        key: (m.alpha, m.beta, m.max_batch_size, m.at_tokens, m.acc_count)
        for key, m in perf_by_key.items()
    }
    acc_values = {a.name: (a.type, a.multiplicity, a.cost) for a in spec.accelerators}
    memo = cache.servers

    count = len(spec.servers)
    results: list[ServerCandidates | None] = [None] * count
    memo_keys: list[Hashable] = [None] * count
    found: list[list[Allocation]] = [[] for _ in range(count)]
    rejected: list[list[tuple[str, str]]] = [[] for _ in range(count)]
    targets: list[ModelTarget | None] = [None] * count
    priorities: list[int] = [0] * count
    # candidates to size, as parallel columns
    owner: list[int] = []
    chosen_acc: list[AcceleratorSpec] = []
    chosen_perf: list[ModelPerfSpec] = []
    profiles: list[Profile] = []
    rpm: list[float] = []
    goals: list[float | None] = []  # the attainment target of each candidate, if any

    for index, server in enumerate(spec.servers):
        entry = targets_by_key.get((server.service_class, server.model))
        if entry is None:
            results[index] = ServerCandidates(server=server, priority=0, candidates=())
            continue
        target, priority = entry
        targets[index] = target
        priorities[index] = priority
        goal = None if rule is None or target.slo_tps > 0 else rule.target_for(target)
        choices = _accelerator_choices(server, spec.accelerators, by_name)
        load = server.load
        current = server.current_alloc
        # the rate sized for (the allocation's predicted ITL and wait are at it too)
        sized_rpm = load.arrival_rate
        if rule is not None:
            ahead = rule.ahead.get(server.name, 0.0)
            sized_rpm = max(sized_rpm, ahead) * (1.0 + rule.headroom)
        memo_key = (
            server.name,
            server.model,
            server.keep_accelerator,
            server.min_num_replicas,
            server.max_num_replicas,
            server.replica_cost,
            server.max_batch_size,
            current.accelerator,
            current.num_replicas,
            current.cost,
            sized_rpm,
            load.avg_length,
            target.slo_itl,
            target.slo_ttw,
            target.slo_tps,
            priority,
            goal,
            tuple(
                (a.name, acc_values[a.name], perf_values.get((server.model, a.name)))
                for a in choices
            ),
        )
        remembered = memo.get(memo_key)
        if remembered is not None:
            results[index] = remembered.attach(server)
            continue
        memo_keys[index] = memo_key
        tokens = load.avg_length
        # the reference tests the float32 rate; a rate too small for a float32 request
        # rate per millisecond is no traffic either (not a 0/0 later)
        zero = tokens == 0 or F32(F32(load.arrival_rate) / F32(60)) / F32(1000) == 0
        for accelerator in choices:
            perf = perf_by_key.get((server.model, accelerator.name))
            if perf is None:
                continue
            if zero:
                found[index].append(_zero_load(server, accelerator, perf))
                continue
            owner.append(index)
            chosen_acc.append(accelerator)
            chosen_perf.append(perf)
            rpm.append(sized_rpm)
            goals.append(goal)
            profiles.append(
                Profile(
                    perf.alpha,
                    perf.beta,
                    _batch_size(server, perf, tokens),
                    tokens,
                    target.slo_itl,
                    target.slo_ttw,
                    target.slo_tps,
                )
            )

    if profiles:
        _size(spec, cache, owner, chosen_acc, chosen_perf, profiles, rpm, goals, found, rejected)

    # each server's candidates were appended in accelerator (input) order
    out: list[ServerCandidates] = []
    for index, server in enumerate(spec.servers):
        result = results[index]
        if result is None:
            sized = _Sized(
                priorities[index], tuple(found[index]), tuple(rejected[index]), targets[index]
            )
            memo[memo_keys[index]] = sized
            result = sized.attach(server)
        out.append(result)
    while len(memo) > cache.max_servers:
        memo.popitem(last=False)
    return out


def _size(
    spec: SystemSpec,
    cache: SizingCache,
    owner: list[int],
    accelerators: list[AcceleratorSpec],
    perfs: list[ModelPerfSpec],
    profiles: list[Profile],
    rpm: list[float],
    goals: list[float | None],
    found: list[list[Allocation]],
    rejected: list[list[tuple[str, str]]],
) -> None:
    """Capacities (cached), replica counts and statistics for all loaded candidates at once."""
    capacities = cache.capacity.capacities(profiles)
    feasible = np.array([c.feasible for c in capacities], dtype=bool)
    for i in np.nonzero(~feasible)[0].tolist():
        rejected[owner[i]].append((accelerators[i].name, capacities[i].reason))
    keep = np.nonzero(feasible)[0]
    if not len(keep):
        return
    pick = keep.tolist()
    rate_star = np.array([capacities[i].rate for i in pick], dtype=np.float32)
    tokens = np.array([profiles[i].tokens for i in pick], dtype=np.float32)
    tps = np.array([profiles[i].slo_tps for i in pick], dtype=np.float32)
    load = np.array([rpm[i] for i in pick], dtype=np.float32)
    # total demand in requests/ms (float32 steps as the reference); a TPS target overrides it
    demand = np.where(tps > 0, tps / (F32(1000) * tokens), load / F32(60) / F32(1000))
    minimum = np.array([spec.servers[owner[i]].min_num_replicas for i in pick], dtype=np.int64)
    replicas = np.maximum(
        np.ceil(demand.astype(np.float64) / rate_star.astype(np.float64)).astype(np.int64), minimum
    )
    for j, i in enumerate(pick):
        goal = goals[i]
        if goal is not None:
            rps = float(demand[j]) * 1000.0
            replicas[j] = _replicas_for_share(profiles[i], rps, goal, int(replicas[j]), minimum[j])
    # a server's maxNumReplicas is a hard cap, as an HPA's maxReplicas: the allocation at
    # the cap carries more load per replica, and its predicted ITL and wait say so
    maximum = np.array([spec.servers[owner[i]].max_num_replicas for i in pick], dtype=np.int64)
    replicas = np.where(maximum > 0, np.minimum(replicas, maximum), replicas)
    per_replica = demand / replicas.astype(np.float32)
    unit_cost = np.array([accelerators[i].cost for i in pick], dtype=np.float32)
    acc_count = np.array([perfs[i].acc_count for i in pick], dtype=np.int64)
    cost = unit_cost * (acc_count * replicas).astype(np.float32)
    # a server's replicaCost (a VA's spec.variantCost) replaces unit cost x accCount
    own = [spec.servers[owner[i]].replica_cost for i in pick]
    if any(c is not None for c in own):
        per_replica_cost = np.array([c or 0.0 for c in own], dtype=np.float32)
        has_own = np.array([c is not None for c in own], dtype=bool)
        cost = np.where(has_own, per_replica_cost * replicas.astype(np.float32), cost)

    # the solver's value: the transition penalty from the current allocation
    current = [spec.servers[owner[i]].current_alloc for i in pick]
    same_acc = np.array(
        [c.accelerator == accelerators[i].name for c, i in zip(current, pick, strict=True)],
        dtype=bool,
    )
    current_replicas = np.array([c.num_replicas for c in current], dtype=np.int64)
    current_cost = np.array([c.cost for c in current], dtype=np.float32)
    change = cost - current_cost
    value = np.where(
        same_acc,
        np.where(current_replicas == replicas, F32(0), change),
        ACCELERATOR_CHANGE_PENALTY * (current_cost + cost) + change,
    )

    rate_list = per_replica.tolist()
    stats = cache.statistics(
        [(*profiles[i][:4], rate) for i, rate in zip(pick, rate_list, strict=True)]
    )
    serv_time = np.array([s[0] for s in stats], dtype=np.float32) / tokens  # ms per token
    for i, n, c, v, itl, (_, wait, rho), top in zip(
        pick,
        replicas.tolist(),
        cost.tolist(),
        value.tolist(),
        serv_time.tolist(),
        stats,
        rate_star.tolist(),
        strict=True,
    ):
        found[owner[i]].append(
            Allocation(accelerators[i].name, n, profiles[i].batch, c, v, itl, wait, rho, top)
        )


def _replicas_for_share(
    profile: Profile, rate_rps: float, goal: float, mean_rule: int, minimum: int
) -> int:
    """The fewest replicas (at least `minimum`, and one for any load) whose predicted
    share of requests within both SLOs reaches `goal`.

    The share grows with the replica count (less load each, and the gateway pools the
    batch's swings), so a search from the mean rule's count finds it in a few
    evaluations. If no count up to 16 times the mean rule's reaches it (an SLO barely
    above one request's step), that bound is returned: the most the rule will ask for.
    """
    model = ReplicaModel(profile.alpha, profile.beta, profile.batch, profile.tokens)

    def holds(replicas: int) -> bool:
        share = attainment(model, rate_rps / replicas, replicas, profile.slo_itl, profile.slo_ttw)
        return share.both >= goal

    low = max(1, int(minimum))
    high = max(low, mean_rule)
    if holds(high):
        if goal >= 0.5 or high == low:
            return high
        while high > low and holds(high - 1):  # a loose goal may need fewer
            high -= 1
        return high
    cap = 16 * high + 16
    below = high
    while not holds(high):  # doubling up; `below` fails
        if high >= cap:
            return cap
        below, high = high, min(cap, 2 * high)
    while high - below > 1:  # bisection: `below` fails, `high` holds
        middle = (below + high) // 2
        if holds(middle):
            high = middle
        else:
            below = middle
    return high
