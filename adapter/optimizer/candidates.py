"""Candidate allocations: every (server, accelerator) pair sized for the server's load.

For each server the candidates are the accelerators it may run on (only its current
one with `keepAccelerator`), each with the replica count that carries the load
within the SLOs, its cost, the predicted ITL/wait at that count, and its value: the
transition penalty from the current allocation, which the solvers minimise.

All sizing happens in batches (one numpy pass over all candidates), and the
per-replica capacity is cached by profile, so a cycle whose profiles did not change
only recomputes the load-dependent statistics.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adapter.model.system import (
    AcceleratorSpec,
    ModelPerfSpec,
    ModelTarget,
    ServerSpec,
    ServiceClassSpec,
    SystemSpec,
)
from adapter.optimizer.allocation import Allocation, transition_value
from adapter.queueing.sizing import Capacity, CapacityCache, Profile
from adapter.queueing.statedependent import BatchModel

F32 = np.float32
StatsKey = tuple[np.float32, np.float32, int, int, np.float32]


@dataclass(frozen=True, slots=True)
class ServerCandidates:
    """What the solvers need about one server."""

    server: ServerSpec
    priority: int
    candidates: tuple[Allocation, ...]  # feasible ones, input (accelerator) order
    # why accelerators were left out, e.g. an unattainable SLO
    rejected: tuple[tuple[str, str], ...] = ()
    target: ModelTarget | None = None


@dataclass
class _Pending:
    """A candidate waiting for its batched statistics."""

    server_index: int
    accelerator: AcceleratorSpec
    perf: ModelPerfSpec
    profile: Profile
    capacity: Capacity
    replicas: int
    rate: np.float32  # per-replica arrival rate, req/ms
    cost: np.float32


@dataclass
class SizingCache:
    """Capacities by profile and per-replica statistics by (queue, rate), both LRU."""

    capacity: CapacityCache = field(default_factory=CapacityCache)
    max_stats: int = 200_000
    _stats: OrderedDict[StatsKey, tuple[np.float32, np.float32, np.float32]] = field(
        default_factory=OrderedDict
    )

    def statistics(
        self, keys: Sequence[StatsKey]
    ) -> list[tuple[np.float32, np.float32, np.float32]]:
        """(serv_time S, wait W, rho) per (alpha, beta, N, K, rate) key."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._stats]
        if missing:
            model = BatchModel(
                np.array([k[0] for k in missing], dtype=np.float32),
                np.array([k[1] for k in missing], dtype=np.float32),
                np.array([k[2] for k in missing], dtype=np.int64),
                np.array([k[3] for k in missing], dtype=np.float32),
            )
            rates = np.array([k[4] for k in missing], dtype=np.float32)
            serv, wait, rho = model.solve(np.arange(len(missing)), rates)
            for i, key in enumerate(missing):
                self._stats[key] = (serv[i], wait[i], rho[i])
        out = []
        for key in keys:
            self._stats.move_to_end(key)
            out.append(self._stats[key])
        while len(self._stats) > self.max_stats:
            self._stats.popitem(last=False)
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
    cost = F32(accelerator.cost) * F32(perf.acc_count * replicas)
    allocation = Allocation(
        accelerator=accelerator.name,
        num_replicas=replicas,
        max_batch=batch,
        cost=cost,
        value=cost,
        serv_time=alpha + beta,
        wait_time=F32(0),
        rho=F32(0),
        # the reference's figure: a batch per decode step, not requests/ms
        max_rate_per_replica=F32(batch) / (alpha + beta * F32(batch)),
    )
    return allocation


def _accelerator_choices(
    server: ServerSpec, accelerators: Sequence[AcceleratorSpec], by_name: dict[str, AcceleratorSpec]
) -> list[AcceleratorSpec]:
    current = server.current_alloc.accelerator
    if server.keep_accelerator and current:
        found = by_name.get(current)
        return [found] if found is not None else []
    return list(accelerators)


def build_candidates(spec: SystemSpec, cache: SizingCache | None = None) -> list[ServerCandidates]:
    """Size every server on every accelerator it may use, in one batch."""
    cache = cache if cache is not None else SizingCache()
    by_name = {a.name: a for a in spec.accelerators}
    perf_by_key = {(m.name, m.acc): m for m in spec.models}
    classes: dict[str, ServiceClassSpec] = {c.name: c for c in spec.service_classes}

    immediate: list[list[Allocation]] = [[] for _ in spec.servers]
    rejected: list[list[tuple[str, str]]] = [[] for _ in spec.servers]
    sized: list[tuple[int, AcceleratorSpec, ModelPerfSpec, Profile, np.float32]] = []
    targets: list[ModelTarget | None] = []
    priorities: list[int] = []

    for index, server in enumerate(spec.servers):
        service_class = classes.get(server.service_class)
        target = service_class.target_for(server.model) if service_class else None
        targets.append(target)
        priorities.append(service_class.priority if service_class else 0)
        if target is None:
            continue
        load = server.load
        rpm = F32(load.arrival_rate)
        tokens = load.avg_length
        for accelerator in _accelerator_choices(server, spec.accelerators, by_name):
            perf = perf_by_key.get((server.model, accelerator.name))
            if perf is None:
                continue
            if rpm == 0 or tokens == 0:
                immediate[index].append(_zero_load(server, accelerator, perf))
                continue
            profile = Profile.of(
                perf.alpha,
                perf.beta,
                _batch_size(server, perf, tokens),
                tokens,
                target.slo_itl,
                target.slo_ttw,
                target.slo_tps,
            )
            sized.append((index, accelerator, perf, profile, rpm))

    capacities = cache.capacity.capacities([item[3] for item in sized])
    pending: list[_Pending] = []
    for (index, accelerator, perf, profile, rpm), capacity in zip(sized, capacities, strict=True):
        if not capacity.feasible:
            rejected[index].append((accelerator.name, capacity.reason))
            continue
        server = spec.servers[index]
        if profile.slo_tps > 0:
            demand = profile.slo_tps / (F32(1000) * F32(profile.tokens))
        else:
            demand = rpm / F32(60) / F32(1000)
        replicas = max(math.ceil(float(demand) / float(capacity.rate)), server.min_num_replicas)
        pending.append(
            _Pending(
                server_index=index,
                accelerator=accelerator,
                perf=perf,
                profile=profile,
                capacity=capacity,
                replicas=replicas,
                rate=demand / F32(replicas),
                cost=F32(accelerator.cost) * F32(perf.acc_count * replicas),
            )
        )

    statistics = cache.statistics(
        [
            (p.profile.alpha, p.profile.beta, p.profile.batch, p.profile.tokens, p.rate)
            for p in pending
        ]
    )
    for item, (serv, wait, rho) in zip(pending, statistics, strict=True):
        immediate[item.server_index].append(
            Allocation(
                accelerator=item.accelerator.name,
                num_replicas=item.replicas,
                max_batch=item.profile.batch,
                cost=item.cost,
                value=item.cost,
                serv_time=serv / F32(item.profile.tokens),
                wait_time=wait,
                rho=rho,
                max_rate_per_replica=item.capacity.rate,
            )
        )

    order = {a.name: i for i, a in enumerate(spec.accelerators)}
    out: list[ServerCandidates] = []
    for index, server in enumerate(spec.servers):
        found = sorted(immediate[index], key=lambda a: order[a.accelerator])
        valued = tuple(
            _with_value(allocation, transition_value(server.current_alloc, allocation))
            for allocation in found
        )
        out.append(
            ServerCandidates(
                server=server,
                priority=priorities[index],
                candidates=valued,
                rejected=tuple(rejected[index]),
                target=targets[index],
            )
        )
    return out


def _with_value(allocation: Allocation, value: np.float32) -> Allocation:
    return Allocation(
        accelerator=allocation.accelerator,
        num_replicas=allocation.num_replicas,
        max_batch=allocation.max_batch,
        cost=allocation.cost,
        value=value,
        serv_time=allocation.serv_time,
        wait_time=allocation.wait_time,
        rho=allocation.rho,
        max_rate_per_replica=allocation.max_rate_per_replica,
    )
