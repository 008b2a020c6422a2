"""Properties of the whole optimizer on random small systems (hypothesis).

Systems are built as SystemSpec dicts, validated with `parse_system`, and solved
with `optimize` (limited or unlimited as the document says).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.model.system import parse_system
from adapter.optimizer.candidates import SizingCache, build_candidates
from adapter.optimizer.solution import optimize, to_json

F32 = np.float32
SLO_MARGIN = -math.log(0.05)  # 2.9957323
POLICIES = ["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

positive = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)


@st.composite
def systems(draw: st.DrawFn) -> dict[str, Any]:
    n_acc = draw(st.integers(1, 3))
    types = draw(st.lists(st.sampled_from(["T1", "T2"]), min_size=n_acc, max_size=n_acc))
    accelerators = [
        {
            "name": f"acc{i}",
            "type": types[i],
            "multiplicity": draw(st.sampled_from([1, 1, 2])),
            "cost": draw(st.sampled_from([10.0, 23.0, 40.0, 65.0, 100.0])),
        }
        for i in range(n_acc)
    ]
    models = []
    for acc in accelerators:
        if draw(st.integers(0, 5)) == 0:
            continue  # no perf data on this accelerator
        perf: dict[str, Any] = {
            "name": "llm",
            "acc": acc["name"],
            "accCount": draw(st.sampled_from([1, 1, 2])),
            "alpha": draw(st.floats(0.5, 30.0)),
            "beta": draw(st.floats(0.005, 0.5)),
            "maxBatchSize": draw(st.sampled_from([4, 16, 64, 128])),
        }
        if draw(st.booleans()):
            perf["atTokens"] = draw(st.sampled_from([128, 512]))
        models.append(perf)
    classes = [
        {
            "name": f"class{i}",
            "priority": draw(st.integers(0, 3)),
            "modelTargets": [
                {
                    "model": "llm",
                    "slo-itl": draw(st.sampled_from([0.0, 20.0, 40.0, 80.0, 200.0])),
                    "slo-ttw": draw(st.sampled_from([0.0, 200.0, 1000.0, 5000.0])),
                    "slo-tps": draw(st.sampled_from([0.0] * 9 + [500.0])),
                }
            ],
        }
        for i in range(draw(st.integers(1, 2)))
    ]
    servers = []
    for i in range(draw(st.integers(1, 4))):
        current = draw(st.sampled_from(["", *[a["name"] for a in accelerators]]))
        replicas = draw(st.integers(0, 3)) if current else 0
        servers.append(
            {
                "name": f"server{i}",
                "class": draw(st.sampled_from([c["name"] for c in classes])),
                "model": "llm",
                "keepAccelerator": draw(st.booleans()),
                "minNumReplicas": draw(st.integers(0, 2)),
                "maxBatchSize": draw(st.sampled_from([0, 0, 8, 64])),
                "currentAlloc": {
                    "accelerator": current,
                    "numReplicas": replicas,
                    "cost": float(replicas * 40),
                    "load": {
                        "arrivalRate": draw(
                            st.sampled_from([0.0]) | st.floats(1.0, 3000.0).map(round)
                        ),
                        "avgLength": draw(st.sampled_from([0, 64, 200, 512, 1024])),
                    },
                },
            }
        )
    return {
        "acceleratorData": {"accelerators": accelerators},
        "modelData": {"models": models},
        "serviceClassData": {"serviceClasses": classes},
        "serverData": {"servers": servers},
        "optimizerData": {
            "optimizer": {
                "unlimited": draw(st.booleans()),
                "saturationPolicy": draw(st.sampled_from(POLICIES)),
            }
        },
        "capacityData": {
            "count": [{"type": t, "count": draw(st.integers(0, 12))} for t in ("T1", "T2")]
        },
    }


def _with(doc: dict[str, Any], **optimizer: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["optimizerData"]["optimizer"].update(optimizer)
    return out


def _solve(doc: dict[str, Any], cache: SizingCache | None = None) -> dict[str, Any]:
    parsed = parse_system(doc)
    return to_json(optimize(parsed.spec, cache, parsed.problems))


@SETTINGS
@given(systems(), st.integers(0, 3), st.floats(1.01, 20.0))
def test_more_load_never_needs_fewer_replicas(
    doc: dict[str, Any], which: int, factor: float
) -> None:
    doc = _with(doc, unlimited=True)
    servers = doc["serverData"]["servers"]
    target = servers[which % len(servers)]
    heavier = copy.deepcopy(doc)
    load = heavier["serverData"]["servers"][which % len(servers)]["currentAlloc"]["load"]
    load["arrivalRate"] = load["arrivalRate"] * factor + 1.0
    before = {
        item.server.name: {a.accelerator: a.num_replicas for a in item.candidates}
        for item in build_candidates(parse_system(doc).spec)
    }.get(target["name"], {})
    after = {
        item.server.name: {a.accelerator: a.num_replicas for a in item.candidates}
        for item in build_candidates(parse_system(heavier).spec)
    }.get(target["name"], {})
    # feasibility does not depend on the load (the zero-load path aside)
    if doc["serverData"]["servers"][which % len(servers)]["currentAlloc"]["load"]["arrivalRate"]:
        assert set(after) == set(before)
    for accelerator, replicas in before.items():
        if accelerator in after:
            assert after[accelerator] >= replicas, (accelerator, replicas, after)


@SETTINGS
@given(systems(), st.floats(1.01, 20.0))
def test_more_load_on_one_accelerator_never_shrinks_the_decision(
    doc: dict[str, Any], factor: float
) -> None:
    """With a single accelerator the chosen count itself is monotone in the load."""
    doc = _with(doc, unlimited=True)
    doc["acceleratorData"]["accelerators"] = doc["acceleratorData"]["accelerators"][:1]
    first = doc["acceleratorData"]["accelerators"][0]["name"]
    doc["modelData"]["models"] = [m for m in doc["modelData"]["models"] if m["acc"] == first]
    for server in doc["serverData"]["servers"]:
        server["currentAlloc"]["accelerator"] = ""
    heavier = copy.deepcopy(doc)
    for server in heavier["serverData"]["servers"]:
        server["currentAlloc"]["load"]["arrivalRate"] *= factor
    light, heavy = _solve(doc)["servers"], _solve(heavier)["servers"]
    for name, decision in light.items():
        assert heavy[name]["numReplicas"] >= decision["numReplicas"]


@SETTINGS
@given(systems())
def test_the_chosen_allocation_meets_the_slos(doc: dict[str, Any]) -> None:
    parsed = parse_system(doc)
    solution = optimize(parsed.spec)
    for decision in solution.servers:
        allocation, target = decision.allocation, decision.target
        if allocation is None or target is None or allocation.num_replicas == 0:
            continue
        if decision.arrival_rate == 0 or decision.tokens == 0:
            continue  # zero load: idle figures, no SLO check
        # the bisection can end one float32 step past the limit, as in the reference
        if target.slo_itl > 0:
            assert allocation.serv_time <= target.slo_itl * (1 + 1e-5), decision
        if target.slo_ttw > 0:
            assert allocation.wait_time <= target.slo_ttw / SLO_MARGIN * (1 + 1e-5), decision
        assert 0 <= allocation.rho <= 1


@SETTINGS
@given(systems())
def test_unlimited_picks_a_minimum_value_candidate(doc: dict[str, Any]) -> None:
    doc = _with(doc, unlimited=True)
    spec = parse_system(doc).spec
    by_server = {item.server.name: item.candidates for item in build_candidates(spec)}
    solution = optimize(spec)
    for decision in solution.servers:
        candidates = by_server[decision.name]
        if not candidates:
            assert decision.allocation is None
            continue
        assert decision.allocation is not None
        assert decision.allocation in candidates
        assert all(F32(other.value) >= F32(decision.allocation.value) for other in candidates)


@SETTINGS
@given(systems(), st.sampled_from(POLICIES))
def test_limited_never_uses_more_than_the_capacity(doc: dict[str, Any], policy: str) -> None:
    doc = _with(doc, unlimited=False, saturationPolicy=policy)
    spec = parse_system(doc).spec
    capacity = {c.type: c.count for c in spec.capacity}
    accelerators = {a.name: a for a in spec.accelerators}
    acc_count = {(m.name, m.acc): m.acc_count for m in spec.models}
    model_of = {s.name: s.model for s in spec.servers}
    solution = optimize(spec)
    used: dict[str, int] = {}
    for decision in solution.servers:
        allocation = decision.allocation
        if allocation is None:
            continue
        accelerator = accelerators[allocation.accelerator]
        units = (
            allocation.num_replicas
            * acc_count[(model_of[decision.name], allocation.accelerator)]
            * accelerator.multiplicity
        )
        used[accelerator.type] = used.get(accelerator.type, 0) + units
    for kind, units in used.items():
        assert units <= capacity.get(kind, 0), (kind, units, capacity)
    assert {u.type: u.count for u in solution.usage} == used
    for usage in solution.usage:
        assert usage.limit == capacity.get(usage.type, 0)


@SETTINGS
@given(systems())
def test_limited_with_ample_capacity_equals_unlimited(doc: dict[str, Any]) -> None:
    """Nothing is short: every server gets its first-choice (minimum value) candidate."""
    doc = _with(doc, unlimited=False)
    # truly ample: a slow profile at batch 1 can need more than 10 000 replicas
    doc["capacityData"]["count"] = [{"type": t, "count": 10**12} for t in ("T1", "T2")]
    limited = _solve(doc)["servers"]
    unlimited = _solve(_with(doc, unlimited=True))["servers"]
    for name, decision in limited.items():
        assert decision["value"] == unlimited[name]["value"]
        assert decision["numReplicas"] == unlimited[name]["numReplicas"]


@SETTINGS
@given(systems())
def test_the_same_input_gives_the_same_output(doc: dict[str, Any]) -> None:
    first = json.dumps(_solve(doc), sort_keys=True)
    assert json.dumps(_solve(copy.deepcopy(doc)), sort_keys=True) == first
    # a warm cache (capacities and statistics reused) changes nothing either
    cache = SizingCache()
    assert json.dumps(_solve(doc, cache), sort_keys=True) == first
    assert json.dumps(_solve(doc, cache), sort_keys=True) == first
