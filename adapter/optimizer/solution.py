"""One optimization: candidates, the solver the spec asks for, and the resulting decisions.

A `Solution` covers every server of the input, in input order: a server that was
rejected by validation, had no feasible candidate, or did not fit the capacity is
present with no allocation and the reason why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adapter.model.system import ModelTarget, ParsedSystem, Problem, SystemSpec
from adapter.optimizer.allocation import Allocation
from adapter.optimizer.candidates import (
    ServerCandidates,
    SizingCache,
    SizingRule,
    build_candidates,
)
from adapter.optimizer.goformat import go_float32, json_float32
from adapter.optimizer.greedy import Capacity, solve_limited, solve_unlimited

F32 = np.float32


@dataclass(frozen=True, slots=True)
class ServerDecision:
    name: str
    service_class: str
    model: str
    arrival_rate: np.float32  # requests/minute
    tokens: int
    feasible: int  # number of feasible candidates
    allocation: Allocation | None
    target: ModelTarget | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TypeUsage:
    type: str
    count: int
    limit: int
    cost: np.float32


@dataclass(frozen=True, slots=True)
class Solution:
    servers: tuple[ServerDecision, ...]
    usage: tuple[TypeUsage, ...]
    total_cost: np.float32
    problems: tuple[Problem, ...] = ()

    def decision(self, name: str) -> ServerDecision:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


def _reason(item: ServerCandidates, limited: bool) -> str:
    if item.candidates:
        return "accelerator capacity exhausted" if limited else ""
    if item.rejected:
        return "; ".join(f"{acc}: {why}" for acc, why in item.rejected)
    return "no accelerator with performance data for this model"


def optimize(
    spec: SystemSpec,
    cache: SizingCache | None = None,
    problems: Sequence[Problem] = (),
    rule: SizingRule | None = None,
) -> Solution:
    """Size every server and pick allocations (limited or unlimited, as the spec says);
    by the reference's mean ITL, or for a share of requests with a `rule`."""
    candidates = build_candidates(spec, cache, rule)
    limited = not spec.optimizer.unlimited
    capacity = Capacity({c.type: c.count for c in spec.capacity}, spec.accelerators, spec.models)
    if limited:
        chosen = solve_limited(candidates, capacity, spec.optimizer.saturation_policy)
    else:
        chosen = solve_unlimited(candidates)

    decisions = []
    for item in candidates:
        allocation = chosen.get(item.server.name)
        decisions.append(
            ServerDecision(
                name=item.server.name,
                service_class=item.server.service_class,
                model=item.server.model,
                arrival_rate=F32(item.server.load.arrival_rate),
                tokens=item.server.load.avg_length,
                feasible=len(item.candidates),
                allocation=allocation,
                target=item.target,
                reason="" if allocation is not None else _reason(item, limited),
            )
        )
    return Solution(
        servers=tuple(decisions),
        usage=_usage(spec, decisions, capacity),
        total_cost=_total(decisions),
        problems=tuple(problems),
    )


def optimize_parsed(
    parsed: ParsedSystem, cache: SizingCache | None = None, rule: SizingRule | None = None
) -> Solution:
    """Optimize the valid part of a parsed document; rejected servers appear unsolved."""
    solution = optimize(parsed.spec, cache, parsed.problems, rule)
    if not parsed.rejected_servers:
        return solution
    reasons: dict[str, list[str]] = {}
    for problem in parsed.problems:
        if problem.kind == "server":
            reasons.setdefault(problem.name, []).append(f"{problem.field}: {problem.message}")
    rejected = tuple(
        ServerDecision(
            name=name,
            service_class="",
            model="",
            arrival_rate=F32(0),
            tokens=0,
            feasible=0,
            allocation=None,
            target=None,
            reason="invalid input: " + "; ".join(reasons.get(name, [])),
        )
        for name in parsed.rejected_servers
    )
    return Solution(
        servers=solution.servers + rejected,
        usage=solution.usage,
        total_cost=solution.total_cost,
        problems=solution.problems,
    )


def _usage(
    spec: SystemSpec, decisions: Sequence[ServerDecision], capacity: Capacity
) -> tuple[TypeUsage, ...]:
    limits = {c.type: c.count for c in spec.capacity}
    counts: dict[str, int] = {}
    costs: dict[str, np.float32] = {}  # float32 sums, as the reference
    model_of = {s.name: s.model for s in spec.servers}
    for decision in decisions:
        allocation = decision.allocation
        if allocation is None or not allocation.accelerator:
            continue
        kind = capacity.type_of(allocation.accelerator)
        units = allocation.num_replicas * capacity.units_per_replica(
            model_of[decision.name], allocation.accelerator
        )
        counts[kind] = counts.get(kind, 0) + units
        costs[kind] = costs.get(kind, F32(0)) + F32(allocation.cost)
    return tuple(TypeUsage(kind, counts[kind], limits.get(kind, 0), costs[kind]) for kind in counts)


def _total(decisions: Sequence[ServerDecision]) -> np.float32:
    total = F32(0)
    for decision in decisions:
        if decision.allocation is not None:
            total = total + F32(decision.allocation.cost)
    return total


def alloc_string(allocation: Allocation) -> str:
    """The reference's allocation string, e.g. `{acc=H100; num=2; maxBatch=512; ...}`."""
    return (
        f"{{acc={allocation.accelerator}; num={allocation.num_replicas}; "
        f"maxBatch={allocation.max_batch}; cost={go_float32(allocation.cost)}, "
        f"val={go_float32(allocation.value)}, servTime={go_float32(allocation.serv_time)}, "
        f"waitTime={go_float32(allocation.wait_time)}, rho={go_float32(allocation.rho)}}}"
    )


def format_log(solution: Solution) -> str:
    """The reference's solution text, one line per server then the usage by type."""
    lines = ["Solution: "]
    for server in solution.servers:
        if server.target is None:
            lines.append(f"s={server.name}; unsolved: {server.reason} ")
            continue
        alloc = alloc_string(server.allocation) if server.allocation else f"none ({server.reason})"
        lines.append(
            f"c={server.service_class}; m={server.model}; rate={go_float32(server.arrival_rate)}; "
            f"tk={server.tokens}; sol={server.feasible}, alloc={alloc}; "
            f"slo-itl={go_float32(server.target.slo_itl)}, "
            f"slo-ttw={go_float32(server.target.slo_ttw)}, "
            f"slo-tps={go_float32(server.target.slo_tps)} "
        )
    lines.append("AllocationByType: ")
    for usage in solution.usage:
        lines.append(
            f"name={usage.type}, count={usage.count}, limit={usage.limit}, "
            f"cost={go_float32(usage.cost)} "
        )
    lines.append(f"totalCost={go_float32(solution.total_cost)} ")
    return "\n".join(lines) + "\n"


def to_json(solution: Solution) -> dict[str, Any]:
    """The CLI's JSON: every server by name; unsolved ones with an empty accelerator."""
    servers: dict[str, Any] = {}
    for server in solution.servers:
        allocation = server.allocation
        if allocation is None:
            entry: dict[str, Any] = {
                "accelerator": "",
                "numReplicas": 0,
                "maxBatch": 0,
                "cost": 0.0,
                "value": 0.0,
                "servTime": 0.0,
                "waitTime": 0.0,
                "rho": 0.0,
                "maxArrvRatePerReplica": 0.0,
                "reason": server.reason,
            }
        else:
            entry = {
                "accelerator": allocation.accelerator,
                "numReplicas": allocation.num_replicas,
                "maxBatch": allocation.max_batch,
                "cost": json_float32(allocation.cost),
                "value": json_float32(allocation.value),
                "servTime": json_float32(allocation.serv_time),
                "waitTime": json_float32(allocation.wait_time),
                "rho": json_float32(allocation.rho),
                "maxArrvRatePerReplica": json_float32(allocation.max_rate_per_replica),
            }
        servers[server.name] = entry
    out: dict[str, Any] = {"servers": servers}
    if solution.problems:
        out["problems"] = [p.as_dict() for p in solution.problems]
    return out
