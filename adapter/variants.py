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
   capacity is exhausted.

The GPUs counted are all of the type: other models using them are the optimizer's to
arbitrate afterwards, as for any variant. Pure: no I/O.

The pool's router (llm-d's EPP) sends each request to the least loaded endpoint: it
does not split by cost, and it evens out the requests in flight per pod, so pods of a
slower variant run about the batch the faster ones do. The split is what the adapter
sizes for, not a routing rule. Where both variants serve, a slower variant's pods may
then run past their own SLO batch while the faster ones run below theirs; the simulator
does not yet run two kinds of pods in one pool to measure it (issue 16's next step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from adapter.collect.metrics import LoadKey
from adapter.model.system import ParsedSystem, ServerSpec
from adapter.optimizer.allocation import Allocation
from adapter.optimizer.candidates import SizingCache, SizingRule, build_candidates


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
    for names in groups.values():
        group = [by_name[name] for name in names if name in by_name]
        if not group:
            continue
        total = group[0].load.arrival_rate
        sizing = _Sizing(parsed, cache, rule)
        offers = [offer for server in group if (offer := sizing.offer(server, total))]
        shares |= split(total, offers, [server.name for server in group])
    servers = tuple(
        _with_rate(server, shares[server.name]) if server.name in shares else server
        for server in spec.servers
    )
    return replace(parsed, spec=replace(spec, servers=servers)), shares


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
        units = next(
            (
                m.acc_count
                for m in spec.models
                if (m.name, m.acc) == (server.model, accelerator_name)
            ),
            1,
        )
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


def _with_rate(server: ServerSpec, rpm: float) -> ServerSpec:
    current = server.current_alloc
    load = current.load.model_copy(update={"arrival_rate": rpm})
    return server.model_copy(update={"current_alloc": current.model_copy(update={"load": load})})
