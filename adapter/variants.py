"""Several variants of one model: one pool, one load, sized together, cheapest first.

Two VariantAutoscalings in one namespace with one `modelID` (e.g. an H100 and an A100
Deployment behind one InferencePool) share their vLLM series: the pods of both report
the same `model_name`, so the load read is the pool's total. Sized each on its own, each
variant would be sized for the whole load. Instead the total is split before the
optimizer runs (`share_loads`), and each variant is sized for its share:

1. each variant sized for the whole load alone, as the optimizer sizes it (same rule):
   its cost per request is what that costs over the load;
2. the variants in order of that cost, cheapest first, ties by name;
3. each takes the load its replicas can serve: all of what is left if that fits in the
   replicas it may have (its accelerator type's GPUs over its GPUs per replica, without
   limit with `--unlimited`, and at most its VA's `spec.maxReplicas`), else the most that
   does, found by bisection on the same sizing;
   a variant whose SLO is unattainable takes none;
4. load nobody has room for goes to the cheapest, whose allocation then says the
   capacity is exhausted;
5. where two or more variants then serve, the batch cap below, and the split again;
6. that plan, or one variant carrying the whole load alone if it can and costs less
   (the batch cap can make a mix dearer than the faster variant alone).

The GPUs counted are all of the type: other models using them are the optimizer's to
arbitrate afterwards, as for any variant. Pure: no I/O.

The pool's router (llm-d's EPP) sends each request to the least loaded endpoint: it
does not split by cost, and it evens out the requests in flight per pod, so the pods of
every variant run about one batch. Where two or more variants serve, the slowest (the
smallest SLO batch) keeps its SLO batch as its max batch and every other serving variant
is sized with its max batch capped at the slowest one's mean batch as sized for its
share, where the slowest one holds the attainment (5). With the SLO batch as the others'
cap instead, the slow pods held 97.7-98.6 % within the ITL SLO in `bench/variants.py`;
without a cap, 84 %. A mix is then dearer than it looks from the variants' costs alone,
and where the cheap variant's GPUs run short the faster variant alone can be cheaper:
the plans are compared (6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from adapter.collect.metrics import LoadKey
from adapter.model.system import ModelPerfSpec, ParsedSystem, ServerSpec
from adapter.optimizer.allocation import Allocation
from adapter.optimizer.candidates import SizingCache, SizingRule, build_candidates
from adapter.queueing.sizing import slo_batch


@dataclass(frozen=True, slots=True)
class Offer:
    """What one variant brings to its pool."""

    server: str
    cost_per_rpm: float  # its cost for the whole load alone, per request/minute
    room_rpm: float  # the load its GPUs can serve within the SLO (inf: no limit)


def shared_groups(models: Mapping[str, LoadKey]) -> dict[LoadKey, list[str]]:
    """Servers by the (namespace, model) they serve, for the keys two or more share."""
    groups: dict[LoadKey, list[str]] = {}
    for server, key in sorted(models.items()):
        groups.setdefault(key, []).append(server)
    return {key: servers for key, servers in groups.items() if len(servers) > 1}


def split(total_rpm: float, offers: Sequence[Offer], servers: Sequence[str]) -> dict[str, float]:
    """The share of `total_rpm` each of `servers` is sized for (rules 2 and 4 above)."""
    shares = dict.fromkeys(servers, 0.0)
    ranked = sorted(offers, key=lambda o: (o.cost_per_rpm, o.server))
    left = total_rpm
    for offer in ranked:
        if left <= 0:
            break
        shares[offer.server] = min(left, offer.room_rpm)
        left -= shares[offer.server]
    if left > 0 and ranked:
        shares[ranked[0].server] += left
    return shares


def share_loads(
    parsed: ParsedSystem,
    groups: Mapping[LoadKey, Sequence[str]],
    cache: SizingCache | None = None,
    rule: SizingRule | None = None,
) -> tuple[ParsedSystem, dict[str, float]]:
    """`parsed` with each group's servers given their share of the group's load, and the
    shares (requests/minute) by server."""
    spec = parsed.spec
    by_name = {server.name: server for server in spec.servers}
    shares: dict[str, float] = {}
    sizing = _Sizing(parsed, cache, rule)
    for names in groups.values():
        group = [by_name[name] for name in names if name in by_name]
        if group:
            plan = _plan(sizing, group, group[0].load.arrival_rate)
            for server in plan.servers:
                by_name[server.name] = server
            shares |= plan.shares
    servers = tuple(
        _with_rate(by_name[server.name], shares[server.name]) if server.name in shares else server
        for server in spec.servers
    )
    return replace(parsed, spec=replace(spec, servers=servers)), shares


@dataclass(frozen=True, slots=True)
class _Plan:
    servers: tuple[ServerSpec, ...]  # the group's, batch-capped where variants mix
    shares: dict[str, float]
    cost: float


def _plan(sizing: _Sizing, group: Sequence[ServerSpec], total: float) -> _Plan:
    """The cheapest of: the cheapest-first split (with the batch cap where variants mix)
    and each variant that can carry the whole load alone."""
    plans = [_mixed(sizing, group, total)]
    for server in group:
        alone = {s.name: (total if s is server else 0.0) for s in group}
        offer = sizing.offer(server, total)
        if offer is not None and offer.room_rpm >= total:
            plans.append(_Plan(tuple(group), alone, sizing.cost(group, alone)))
    return min(plans, key=lambda p: p.cost)


def _mixed(sizing: _Sizing, group: Sequence[ServerSpec], total: float) -> _Plan:
    shares = _split_group(sizing, group, total)
    serving = [server for server in group if shares[server.name] > 0]
    batches = [b for server in serving if (b := sizing.slo_batch(server)) is not None]
    if len(serving) > 1 and batches:
        # the router evens out the requests in flight per pod: every serving variant
        # runs about one batch, the slowest one's at its share. Each other variant's
        # batch is capped at that variant's mean batch as sized for its share (where it
        # holds the attainment), the slowest one's at its SLO batch
        slowest = min(serving, key=lambda s: sizing.slo_batch(s) or 0)
        cap = min(batches)
        mean = sizing.mean_batch(_with_batch(slowest, cap), shares[slowest.name]) or cap
        group = [
            _with_batch(s, cap if s is slowest else mean) if s in serving else s for s in group
        ]
        shares = _split_group(sizing, group, total)
    return _Plan(tuple(group), shares, sizing.cost(group, shares))


def _split_group(sizing: _Sizing, group: Sequence[ServerSpec], total: float) -> dict[str, float]:
    offers = [offer for server in group if (offer := sizing.offer(server, total))]
    return split(total, offers, [server.name for server in group])


class _Sizing:
    """One server sized alone at a given load, as the optimizer sizes it."""

    def __init__(
        self, parsed: ParsedSystem, cache: SizingCache | None, rule: SizingRule | None
    ) -> None:
        self._spec = parsed.spec
        self._cache = cache
        self._rule = rule

    def allocation(self, server: ServerSpec, rpm: float) -> Allocation | None:
        """Its allocation on its accelerator for `rpm` (the replicas it needs, above its
        cap if it has one), or None if the SLO is unattainable."""
        uncapped = _with_rate(server, rpm).model_copy(update={"max_num_replicas": 0})
        alone = replace(self._spec, servers=(uncapped,))
        (sized,) = build_candidates(alone, self._cache, self._rule)
        return sized.candidates[0] if sized.candidates else None

    def offer(self, server: ServerSpec, total_rpm: float) -> Offer | None:
        whole = self.allocation(server, total_rpm)
        if total_rpm <= 0 or whole is None or whole.num_replicas < 1:
            return None
        available = self._replicas_available(server, whole.accelerator)
        if available is None or whole.num_replicas <= available:
            room = math.inf
        else:
            room = self._room(server, total_rpm, available)
        return Offer(server.name, whole.cost / total_rpm, room)

    def cost(self, group: Sequence[ServerSpec], shares: Mapping[str, float]) -> float:
        """What sizing the group for these shares costs (inf if a share is unattainable)."""
        total = 0.0
        for server in group:
            share = shares.get(server.name, 0.0)
            if share <= 0:
                continue
            sized = self.allocation(server, share)
            if sized is None:
                return math.inf
            total += sized.cost
        return total

    def mean_batch(self, server: ServerSpec, rpm: float) -> int | None:
        """The mean batch its sizing predicts at `rpm` (from the predicted ITL), at least 1."""
        sized = self.allocation(server, rpm)
        perf = self._perf(server, server.current_alloc.accelerator)
        if sized is None or perf is None or perf.beta <= 0:
            return None
        return max(1, math.floor((sized.serv_time - perf.alpha) / perf.beta))

    def slo_batch(self, server: ServerSpec) -> int | None:
        """The largest batch whose decode step is within the server's ITL SLO, at most its
        max batch; None when not even one request is."""
        perf = self._perf(server, server.current_alloc.accelerator)
        served = next(
            (c for c in self._spec.service_classes if c.name == server.service_class), None
        )
        target = served.target_for(server.model) if served is not None else None
        if perf is None or target is None:
            return None
        largest = server.max_batch_size or perf.max_batch_size
        return slo_batch(perf.alpha, perf.beta, target.slo_itl, largest)

    def _perf(self, server: ServerSpec, accelerator: str) -> ModelPerfSpec | None:
        """The server's model profile on `accelerator`."""
        return next(
            (m for m in self._spec.models if (m.name, m.acc) == (server.model, accelerator)), None
        )

    def _replicas_available(self, server: ServerSpec, accelerator_name: str) -> int | None:
        """The replicas its GPUs allow (None: no limit), and at most its own cap (a VA's
        spec.maxReplicas)."""
        gpus = self._replicas_of_gpus(server, accelerator_name)
        cap = server.max_num_replicas or None
        if gpus is None or cap is None:
            return cap if gpus is None else gpus
        return min(gpus, cap)

    def _replicas_of_gpus(self, server: ServerSpec, accelerator_name: str) -> int | None:
        spec = self._spec
        if spec.optimizer.unlimited:
            return None
        accelerator = next(a for a in spec.accelerators if a.name == accelerator_name)
        perf = self._perf(server, accelerator_name)
        units = perf.acc_count if perf is not None else 1
        gpus = sum(c.count for c in spec.capacity if c.type == accelerator.type)
        return gpus // (units * accelerator.multiplicity)

    def _room(self, server: ServerSpec, total_rpm: float, replicas: int) -> float:
        """The largest load (to 0.1 %) that `replicas` serve within the SLO."""
        low, high = 0.0, total_rpm
        while high - low > total_rpm * 1e-3:
            middle = (low + high) / 2
            sized = self.allocation(server, middle)
            if sized is not None and sized.num_replicas <= replicas:
                low = middle
            else:
                high = middle
        return low


def _with_batch(server: ServerSpec, batch: int) -> ServerSpec:
    return server.model_copy(update={"max_batch_size": batch})


def _with_rate(server: ServerSpec, rpm: float) -> ServerSpec:
    current = server.current_alloc
    load = current.load.model_copy(update={"arrival_rate": rpm})
    return server.model_copy(update={"current_alloc": current.model_copy(update={"load": load})})
