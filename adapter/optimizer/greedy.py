"""The limited solver of optimizer-light v0.3.0: greedy by priority and regret.

Servers are served in order of priority (lower number first), then regret (how much
worse the next-best candidate is; a server with one candidate left has the largest
regret), then the current candidate's value, descending. A server whose candidate
does not fit the remaining capacity of its accelerator type moves to its next
candidate and is re-inserted before entries with an equal key. Servers left without
any candidate are handed to the saturation policy.

Ties keep input order (the reference iterates Go maps, so its ties are random).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from adapter.model.system import AcceleratorSpec, ModelPerfSpec
from adapter.optimizer.allocation import Allocation
from adapter.optimizer.candidates import ServerCandidates

MAX_FLOAT32 = float(np.finfo(np.float32).max)


@dataclass
class _Entry:
    name: str
    priority: int
    allocations: list[Allocation]  # sorted by value
    index: int = 0
    delta: float = 0.0

    def key(self) -> tuple[int, float, float]:
        return (self.priority, -self.delta, -float(self.allocations[self.index].value))

    def set_delta(self) -> None:
        if self.index + 1 < len(self.allocations):
            # float32 difference, as the reference: ties must tie the same way
            self.delta = float(
                np.float32(self.allocations[self.index + 1].value)
                - np.float32(self.allocations[self.index].value)
            )
        else:
            self.delta = MAX_FLOAT32


class Capacity:
    """Free accelerator units per type, and how many units a replica of a candidate takes."""

    def __init__(
        self,
        available: Mapping[str, int],
        accelerators: Sequence[AcceleratorSpec],
        models: Sequence[ModelPerfSpec],
    ) -> None:
        self.available = dict(available)
        self._accelerators = {a.name: a for a in accelerators}
        self._acc_count = {(m.name, m.acc): m.acc_count for m in models}

    def type_of(self, accelerator: str) -> str:
        return self._accelerators[accelerator].type

    def units_per_replica(self, model: str, accelerator: str) -> int:
        return self._acc_count[(model, accelerator)] * self._accelerators[accelerator].multiplicity


def solve_limited(
    servers: Sequence[ServerCandidates], capacity: Capacity, saturation_policy: str
) -> dict[str, Allocation]:
    models = {s.server.name: s.server.model for s in servers}
    entries: list[_Entry] = []
    for item in servers:
        if not item.candidates:
            continue
        ordered = sorted(item.candidates, key=lambda a: float(a.value))  # stable: input order
        entry = _Entry(item.server.name, item.priority, ordered)
        entry.set_delta()
        entries.append(entry)
    entries.sort(key=_Entry.key)

    chosen: dict[str, Allocation] = {}
    unallocated: list[_Entry] = []
    while entries:
        top = entries.pop(0)
        allocation = top.allocations[top.index]
        kind = capacity.type_of(allocation.accelerator)
        needed = allocation.num_replicas * capacity.units_per_replica(
            models[top.name], allocation.accelerator
        )
        if capacity.available.get(kind, 0) >= needed:
            capacity.available[kind] = capacity.available.get(kind, 0) - needed
            chosen[top.name] = allocation
            continue
        top.index += 1
        if top.index == len(top.allocations):
            unallocated.append(top)
            continue
        top.set_delta()
        position = bisect.bisect_left(entries, top.key(), key=_Entry.key)
        entries.insert(position, top)

    if saturation_policy == "PriorityExhaustive":
        _allocate_maximally(unallocated, capacity, models, chosen)
    elif saturation_policy == "PriorityRoundRobin":
        for group in _priority_groups(unallocated):
            _allocate_equally(group, capacity, models, chosen)
    elif saturation_policy == "RoundRobin":
        _allocate_equally(unallocated, capacity, models, chosen)
    return chosen


def _priority_groups(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    groups: list[list[_Entry]] = []
    for entry in entries:
        if groups and groups[-1][0].priority == entry.priority:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def _allocate_maximally(
    entries: Sequence[_Entry],
    capacity: Capacity,
    models: Mapping[str, str],
    chosen: dict[str, Allocation],
) -> None:
    """Each server in turn takes as many replicas as fit of its best candidate that fits one."""
    for entry in entries:
        for allocation in entry.allocations:
            units = capacity.units_per_replica(models[entry.name], allocation.accelerator)
            if units <= 0:
                continue
            kind = capacity.type_of(allocation.accelerator)
            replicas = min(capacity.available.get(kind, 0) // units, allocation.num_replicas)
            if replicas > 0:
                chosen[entry.name] = allocation.scaled_to(replicas)
                capacity.available[kind] -= replicas * units
                break


def _allocate_equally(
    entries: Sequence[_Entry],
    capacity: Capacity,
    models: Mapping[str, str],
    chosen: dict[str, Allocation],
) -> None:
    """Round-robin, one replica at a time, until nothing more fits."""

    @dataclass
    class Ticket:
        allocation: Allocation | None = None
        kind: str = ""
        units: int = 0
        replicas: int = 0

    tickets: dict[str, Ticket] = {entry.name: Ticket() for entry in entries}
    granted: dict[str, Ticket] = {}
    while tickets:
        for entry in entries:
            ticket = tickets.get(entry.name)
            if ticket is None:
                continue
            if ticket.allocation is None:
                for allocation in entry.allocations:
                    units = capacity.units_per_replica(models[entry.name], allocation.accelerator)
                    kind = capacity.type_of(allocation.accelerator)
                    if units > 0 and capacity.available.get(kind, 0) >= units:
                        ticket.allocation, ticket.kind, ticket.units = allocation, kind, units
                        break
                if ticket.allocation is None:
                    del tickets[entry.name]
                    continue
            free_replicas = capacity.available.get(ticket.kind, 0) // ticket.units
            if min(free_replicas, ticket.allocation.num_replicas) > 0:
                ticket.replicas += 1
                capacity.available[ticket.kind] -= ticket.units
                granted[entry.name] = ticket
            else:
                del tickets[entry.name]
    for name, ticket in granted.items():
        assert ticket.allocation is not None
        chosen[name] = ticket.allocation.scaled_to(ticket.replicas)


def solve_unlimited(servers: Sequence[ServerCandidates]) -> dict[str, Allocation]:
    """Each server independently takes its lowest-value candidate (first one on ties)."""
    chosen: dict[str, Allocation] = {}
    for item in servers:
        best: Allocation | None = None
        best_value = np.float32(MAX_FLOAT32)
        for allocation in item.candidates:
            if allocation.value < best_value:
                best, best_value = allocation, np.float32(allocation.value)
        if best is not None:
            chosen[item.server.name] = best
    return chosen
