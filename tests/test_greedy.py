"""The v0.3.0 limited solver and the per-candidate semantics (optimizer-math.md §3-§4).

Solver cases are hand-built candidate lists fed to `solve_limited`; candidate
semantics (keepAccelerator, minNumReplicas, zero load, atTokens, transition values)
go through `parse_system` and `build_candidates` / `optimize`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from adapter.model.system import AcceleratorSpec, ModelPerfSpec, ServerSpec, parse_system
from adapter.optimizer.allocation import Allocation
from adapter.optimizer.candidates import ServerCandidates, build_candidates
from adapter.optimizer.greedy import Capacity, solve_limited, solve_unlimited
from adapter.optimizer.solution import optimize
from adapter.queueing.sizing import Profile, size_exact
from adapter.queueing.statedependent import service_rates, solve_sequential

F32 = np.float32
MODEL = "m"

# accelerators X and Y share type T (Y is a double card), Z is type U
ACCELERATORS = [
    AcceleratorSpec.model_validate({"name": "X", "type": "T", "cost": 10}),
    AcceleratorSpec.model_validate({"name": "Y", "type": "T", "multiplicity": 2, "cost": 25}),
    AcceleratorSpec.model_validate({"name": "Z", "type": "U", "cost": 7}),
]
MODELS = [
    ModelPerfSpec.model_validate(
        {"name": MODEL, "acc": a.name, "alpha": 5, "beta": 0.1, "maxBatchSize": 8}
    )
    for a in ACCELERATORS
]


def alloc(acc: str, replicas: int, value: float, serv_time: float = 3.5) -> Allocation:
    return Allocation(
        accelerator=acc,
        num_replicas=replicas,
        max_batch=8,
        cost=float(F32(10 * replicas)),
        value=float(F32(value)),
        serv_time=float(F32(serv_time)),
        wait_time=float(F32(1.25)),
        rho=float(F32(0.5)),
        max_rate_per_replica=float(F32(0.01)),
    )


def server(name: str, priority: int, *candidates: Allocation) -> ServerCandidates:
    spec = ServerSpec.model_validate({"name": name, "class": "c", "model": MODEL})
    return ServerCandidates(server=spec, priority=priority, candidates=tuple(candidates))


def solve(
    servers: Sequence[ServerCandidates], available: dict[str, int], policy: str = "None"
) -> tuple[dict[str, Allocation], dict[str, int]]:
    capacity = Capacity(available, ACCELERATORS, MODELS)
    chosen = solve_limited(servers, capacity, policy)
    return chosen, capacity.available


def placement(chosen: dict[str, Allocation]) -> dict[str, tuple[str, int]]:
    return {name: (a.accelerator, a.num_replicas) for name, a in chosen.items()}


# ---- the main greedy loop ----


def test_priority_is_strict_not_weighted() -> None:
    """A more important server goes first even with a small regret (8fc0463 weighed it)."""
    important = server("important", 0, alloc("X", 2, 10), alloc("Z", 2, 11))  # regret 1
    other = server("other", 1, alloc("X", 2, 10))  # one candidate: regret MaxFloat32
    chosen, left = solve([other, important], {"T": 2, "U": 2})
    assert placement(chosen) == {"important": ("X", 2)}
    assert left == {"T": 0, "U": 2}


def test_larger_regret_goes_first_within_a_priority() -> None:
    flexible = server("flexible", 3, alloc("X", 2, 10), alloc("Z", 2, 11))  # regret 1
    stuck = server("stuck", 3, alloc("X", 2, 10), alloc("Z", 2, 50))  # regret 40
    chosen, _ = solve([flexible, stuck], {"T": 2, "U": 5})
    assert placement(chosen) == {"stuck": ("X", 2), "flexible": ("Z", 2)}


def test_equal_regret_higher_value_goes_first() -> None:
    cheap = server("cheap", 0, alloc("X", 1, 5))
    dear = server("dear", 0, alloc("X", 1, 7))
    chosen, _ = solve([cheap, dear], {"T": 1})
    assert placement(chosen) == {"dear": ("X", 1)}


def test_ties_keep_input_order() -> None:
    first = server("first", 0, alloc("X", 1, 5))
    second = server("second", 0, alloc("X", 1, 5))
    chosen, _ = solve([first, second], {"T": 1})
    assert placement(chosen) == {"first": ("X", 1)}
    chosen, _ = solve([second, first], {"T": 1})
    assert placement(chosen) == {"second": ("X", 1)}


def test_candidates_are_tried_in_value_order_and_fall_back_when_short() -> None:
    # listed out of value order; the best (Z, value 1) does not fit
    only = server("only", 0, alloc("X", 3, 9), alloc("Z", 3, 1), alloc("Y", 1, 4))
    chosen, left = solve([only], {"T": 2, "U": 2})
    # Y: 1 replica * multiplicity 2 = 2 units of T
    assert placement(chosen) == {"only": ("Y", 1)}
    assert left == {"T": 0, "U": 2}


def test_units_are_replicas_times_acc_count_times_multiplicity() -> None:
    models = [
        ModelPerfSpec.model_validate(
            {"name": MODEL, "acc": "Y", "accCount": 3, "alpha": 5, "beta": 0.1, "maxBatchSize": 8}
        )
    ]
    big = server("big", 0, alloc("Y", 2, 1))
    capacity = Capacity({"T": 11}, ACCELERATORS, models)
    assert solve_limited([big], capacity, "None") == {}  # needs 2 * 3 * 2 = 12
    capacity = Capacity({"T": 12}, ACCELERATORS, models)
    assert placement(solve_limited([big], capacity, "None")) == {"big": ("Y", 2)}
    assert capacity.available == {"T": 0}


def test_reinsertion_is_leftmost_among_equal_keys() -> None:
    """After a fallback an entry goes before entries with the same (priority, regret, value)."""
    # mover starts with regret 9; once X (type T, exhausted) fails it sits on Z with
    # regret 1 at value 10: exactly waiter's key, so it is re-inserted before waiter
    mover = server("mover", 0, alloc("X", 1, 1), alloc("Z", 1, 10), alloc("Y", 1, 11))
    waiter = server("waiter", 0, alloc("Z", 1, 10), alloc("Y", 1, 11))
    chosen, left = solve([waiter, mover], {"T": 0, "U": 1})
    assert placement(chosen) == {"mover": ("Z", 1)}
    assert left == {"T": 0, "U": 0}


def test_regret_is_recomputed_after_a_fallback() -> None:
    # a goes first (regret 9 > 5); X fails, and on Z its regret drops to 1 (Z -> Y), so
    # b (regret 5) now goes first and takes the single Z unit
    a = server("a", 0, alloc("X", 1, 1), alloc("Z", 1, 10), alloc("Y", 1, 11))
    b = server("b", 0, alloc("Z", 1, 3), alloc("Y", 1, 8))
    chosen, _ = solve([a, b], {"T": 0, "U": 1})
    assert placement(chosen) == {"b": ("Z", 1)}


def test_a_server_without_candidates_is_skipped() -> None:
    empty = server("empty", 0)
    chosen, left = solve([empty, server("one", 0, alloc("Z", 1, 1))], {"U": 1})
    assert placement(chosen) == {"one": ("Z", 1)}
    assert left == {"U": 0}


def test_zero_replica_candidates_always_fit() -> None:
    idle = server("idle", 0, alloc("X", 0, 0))
    chosen, left = solve([idle], {})
    assert placement(chosen) == {"idle": ("X", 0)}
    assert left.get("T", 0) == 0


# ---- the unallocated list and the saturation policies ----

# T has 8 units. "first" (priority 0) takes 4; then "b" (6 replicas), "c" (5) and
# "d" (5, less important) do not fit in the 4 left and are unallocated in that order.
SATURATED = [
    server("d", 2, alloc("X", 5, 20)),
    server("c", 1, alloc("X", 5, 20, serv_time=7.0)),
    server("b", 1, alloc("X", 6, 30, serv_time=6.0)),
    server("first", 0, alloc("X", 4, 40)),
]


def _saturated(policy: str) -> tuple[dict[str, Allocation], dict[str, int]]:
    return solve(copy.deepcopy(SATURATED), {"T": 8}, policy)


def test_policy_none_leaves_unallocated_servers_empty() -> None:
    chosen, left = _saturated("None")
    assert placement(chosen) == {"first": ("X", 4)}
    assert left == {"T": 4}


def test_unknown_policy_behaves_like_none() -> None:
    assert placement(_saturated("Greedy")[0]) == placement(_saturated("None")[0])


def test_priority_exhaustive_fills_servers_in_list_order() -> None:
    chosen, left = _saturated("PriorityExhaustive")
    assert placement(chosen) == {"first": ("X", 4), "b": ("X", 4)}
    assert left == {"T": 0}


def test_priority_exhaustive_takes_the_first_candidate_with_a_free_replica() -> None:
    # the best candidate's type is exhausted, the second one has room for 1 of 3
    hungry = server("hungry", 0, alloc("Z", 9, 1), alloc("X", 3, 2))
    chosen, left = solve([hungry], {"T": 1, "U": 0}, "PriorityExhaustive")
    assert placement(chosen) == {"hungry": ("X", 1)}
    assert left == {"T": 0, "U": 0}


def test_round_robin_serves_one_replica_at_a_time_over_all() -> None:
    chosen, left = _saturated("RoundRobin")  # 4 left: b, c, d, b
    assert placement(chosen) == {"first": ("X", 4), "b": ("X", 2), "c": ("X", 1), "d": ("X", 1)}
    assert left == {"T": 0}


def test_priority_round_robin_serves_priority_groups_in_turn() -> None:
    chosen, left = _saturated("PriorityRoundRobin")  # b, c, b, c; d gets nothing
    assert placement(chosen) == {"first": ("X", 4), "b": ("X", 2), "c": ("X", 2)}
    assert left == {"T": 0}


def test_priority_round_robin_reaches_the_next_group_when_the_first_is_served() -> None:
    # 4 left after "first": b (5) does not fit, then gets all 4; c gets U's 2 of its 3
    chosen, left = solve(
        [
            server("first", 0, alloc("X", 4, 40)),
            server("b", 1, alloc("X", 5, 30)),
            server("c", 2, alloc("Z", 3, 20)),
        ],
        {"T": 8, "U": 2},
        "PriorityRoundRobin",
    )
    assert placement(chosen) == {"first": ("X", 4), "b": ("X", 4), "c": ("Z", 2)}
    assert left == {"T": 0, "U": 0}


@pytest.mark.parametrize("policy", ["PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"])
def test_partial_allocations_scale_cost_and_value_not_statistics(policy: str) -> None:
    chosen, _ = _saturated(policy)  # b gets 4 or 2 of its 6
    partial = chosen["b"]
    full = SATURATED[2].candidates[0]
    factor = F32(partial.num_replicas) / F32(full.num_replicas)
    assert 0 < partial.num_replicas < full.num_replicas
    assert F32(partial.cost) == F32(full.cost) * factor
    assert F32(partial.value) == F32(full.value) * factor
    assert partial.serv_time == full.serv_time == float(F32(6.0))
    assert partial.wait_time == full.wait_time
    assert partial.rho == full.rho
    assert partial.max_rate_per_replica == full.max_rate_per_replica


def test_solver_does_not_mutate_its_candidates() -> None:
    servers = copy.deepcopy(SATURATED)
    before = [s.candidates for s in servers]
    solve(servers, {"T": 8}, "PriorityExhaustive")
    assert [s.candidates for s in servers] == before


def test_unlimited_takes_the_lowest_value_first_on_ties() -> None:
    chosen = solve_unlimited(
        [
            server("a", 0, alloc("X", 1, 5), alloc("Z", 9, 2), alloc("Y", 1, 2)),
            server("b", 0),
        ]
    )
    assert placement(chosen) == {"a": ("Z", 9)}


# ---- candidate semantics, through SystemSpec documents ----


def document(
    servers: list[dict[str, Any]],
    *,
    unlimited: bool = True,
    policy: str = "None",
    itl: float = 60,
) -> dict[str, Any]:
    return {
        "acceleratorData": {
            "accelerators": [
                {"name": "A100", "type": "NVIDIA-A100", "cost": 40},
                {"name": "H100", "type": "NVIDIA-H100", "cost": 100},
            ]
        },
        "modelData": {
            "models": [
                {
                    "name": "llama",
                    "acc": "A100",
                    "alpha": 20.58,
                    "beta": 0.41,
                    "maxBatchSize": 64,
                    "atTokens": 512,
                },
                {
                    "name": "llama",
                    "acc": "H100",
                    "accCount": 2,
                    "alpha": 6.356,
                    "beta": 0.044,
                    "maxBatchSize": 256,
                },
            ]
        },
        "serviceClassData": {
            "serviceClasses": [
                {
                    "name": "Premium",
                    "priority": 1,
                    "modelTargets": [{"model": "llama", "slo-itl": itl, "slo-ttw": 5000}],
                }
            ]
        },
        "serverData": {"servers": servers},
        "optimizerData": {"optimizer": {"unlimited": unlimited, "saturationPolicy": policy}},
        "capacityData": {
            "count": [{"type": "NVIDIA-A100", "count": 100}, {"type": "NVIDIA-H100", "count": 100}]
        },
    }


def a_server(
    name: str = "s",
    rate: float = 600,
    tokens: int = 512,
    current: str = "",
    replicas: int = 0,
    cost: float = 0,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "class": "Premium",
        "model": "llama",
        "currentAlloc": {
            "accelerator": current,
            "numReplicas": replicas,
            "cost": cost,
            "load": {"arrivalRate": rate, "avgLength": tokens},
        },
        **extra,
    }


def candidates_of(server_doc: dict[str, Any], itl: float = 60) -> dict[str, Allocation]:
    parsed = parse_system(document([server_doc], itl=itl))
    assert parsed.problems == ()
    (item,) = build_candidates(parsed.spec)
    return {a.accelerator: a for a in item.candidates}


def test_all_accelerators_are_candidates_without_keep_accelerator() -> None:
    assert set(candidates_of(a_server(current="H100", replicas=1, cost=200))) == {"A100", "H100"}


def test_keep_accelerator_restricts_to_the_current_one() -> None:
    found = candidates_of(a_server(current="H100", replicas=1, cost=200, keepAccelerator=True))
    assert set(found) == {"H100"}


def test_keep_accelerator_without_a_current_one_tries_all() -> None:
    assert set(candidates_of(a_server(keepAccelerator=True))) == {"A100", "H100"}


def test_min_num_replicas_raises_the_count_and_the_statistics_follow() -> None:
    light = candidates_of(a_server(rate=60))["H100"]
    floored = candidates_of(a_server(rate=60, minNumReplicas=3))["H100"]
    assert light.num_replicas == 1
    assert floored.num_replicas == 3
    assert F32(floored.cost) == F32(100) * F32(2 * 3)  # accCount 2
    # statistics at rate / 3 per replica
    rates = service_rates(6.356, 0.044, 256, 512)
    per_replica = F32(60) / F32(60) / F32(1000) / F32(3)
    expected = solve_sequential(rates, float(per_replica))
    assert F32(floored.serv_time) == expected.serv_time / F32(512)
    assert F32(floored.rho) == expected.rho
    assert floored.serv_time < light.serv_time


@pytest.mark.parametrize(("rate", "tokens"), [(0, 512), (600, 0), (0, 0)])
def test_zero_load_gives_min_replicas_and_idle_figures(rate: float, tokens: int) -> None:
    found = candidates_of(a_server(rate=rate, tokens=tokens, minNumReplicas=2))
    h100 = found["H100"]
    assert h100.num_replicas == 2
    assert F32(h100.cost) == F32(100) * F32(2 * 2)
    assert F32(h100.serv_time) == F32(6.356) + F32(0.044)
    assert h100.wait_time == 0
    assert h100.rho == 0
    assert h100.max_batch == 256
    # the reference's figure in the wrong units: batch per decode step
    assert F32(h100.max_rate_per_replica) == F32(256) / (F32(6.356) + F32(0.044) * F32(256))
    a100 = found["A100"]
    assert a100.max_batch == 64  # zero load: no atTokens rescale
    assert F32(a100.serv_time) == F32(20.58) + F32(0.41)


def test_zero_load_with_no_minimum_costs_nothing() -> None:
    found = candidates_of(a_server(rate=0, current="A100", replicas=1, cost=40))
    assert {a.num_replicas for a in found.values()} == {0}
    assert found["A100"].cost == 0
    assert found["A100"].value == float(F32(0) - F32(40))  # same accelerator, new count


@pytest.mark.parametrize(
    ("tokens", "server_batch", "expected"),
    [
        (512, 0, 64),  # at the profiled length: as profiled
        (100, 0, 64 * 512 // 100),  # shorter requests: more of them fit
        (1000, 0, 64 * 512 // 1000),
        (40000, 0, 1),  # 64 * 512 // 40000 == 0: at least 1
        (100, 16, 16),  # the server's own maxBatchSize wins
    ],
)
def test_at_tokens_rescales_the_batch_only_without_a_server_batch(
    tokens: int, server_batch: int, expected: int
) -> None:
    # no ITL target: a flat S(lambda) at N = 1 would make any ITL "unattainable"
    found = candidates_of(a_server(rate=30, tokens=tokens, maxBatchSize=server_batch), itl=0)
    assert found["A100"].max_batch == expected
    # H100 has no atTokens: its profile batch as is, unless the server overrides it
    assert found["H100"].max_batch == (server_batch or 256)


def test_batch_of_one_makes_any_itl_target_unattainable_as_in_the_reference() -> None:
    """N = 1: S(lambda) is flat, the bisection reads "decreasing" and returns -1."""
    parsed = parse_system(document([a_server(rate=30, tokens=40000)], itl=60))
    (item,) = build_candidates(parsed.spec)
    assert [a.accelerator for a in item.candidates] == ["H100"]
    assert [acc for acc, _ in item.rejected] == ["A100"]
    assert "ITL" in item.rejected[0][1]


def test_rescaled_batch_is_what_the_queue_is_sized_with() -> None:
    found = candidates_of(a_server(rate=300, tokens=100))
    batch = 64 * 512 // 100
    capacity = size_exact(Profile.of(20.58, 0.41, batch, 100, slo_itl=60, slo_ttw=5000))
    assert capacity.feasible
    assert F32(found["A100"].max_rate_per_replica) == capacity.rate


def _cost(acc: str, replicas: int) -> np.float32:
    unit, count = {"A100": (40, 1), "H100": (100, 2)}[acc]
    return F32(unit) * F32(count * replicas)


def test_transition_value_same_accelerator_same_count_is_zero() -> None:
    found = candidates_of(a_server(rate=60, current="H100", replicas=1, cost=200))
    assert found["H100"].num_replicas == 1
    assert found["H100"].value == 0


def test_transition_value_same_accelerator_other_count_is_the_cost_difference() -> None:
    # the reported current cost (150) is used, not replicas * unit cost
    found = candidates_of(a_server(rate=60, current="H100", replicas=2, cost=150))
    h100 = found["H100"]
    assert h100.num_replicas == 1
    assert F32(h100.value) == _cost("H100", 1) - F32(150)


def test_transition_value_other_accelerator_pays_a_tenth_of_both() -> None:
    found = candidates_of(a_server(rate=60, current="H100", replicas=1, cost=200))
    a100 = found["A100"]
    new = _cost("A100", a100.num_replicas)
    assert F32(a100.value) == F32(0.1) * (F32(200) + new) + (new - F32(200))


def test_transition_value_from_nothing_is_1_1_times_the_cost() -> None:
    found = candidates_of(a_server(rate=60))
    for acc, allocation in found.items():
        new = _cost(acc, allocation.num_replicas)
        assert F32(allocation.value) == F32(0.1) * (F32(0) + new) + (new - F32(0))
        assert float(allocation.value) == pytest.approx(1.1 * float(new), rel=1e-6)


def test_optimize_limited_reports_capacity_exhaustion() -> None:
    doc = document(
        [a_server("big", rate=6000, keepAccelerator=True, current="H100", replicas=1, cost=200)],
        unlimited=False,
    )
    doc["capacityData"]["count"] = [{"type": "NVIDIA-H100", "count": 1}]
    solution = optimize(parse_system(doc).spec)
    decision = solution.decision("big")
    assert decision.allocation is None
    assert decision.feasible == 1
    assert decision.reason == "accelerator capacity exhausted"
