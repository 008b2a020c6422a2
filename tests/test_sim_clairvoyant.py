"""The clairvoyant floor: capacities measured on the simulator, and its schedule."""

from __future__ import annotations

import pytest

from adapter.emulator.batching import ServingProfile
from adapter.sim.clairvoyant import (
    CapacityTable,
    ClairvoyantPolicy,
    SteadyState,
    capacity,
    measured_share,
    schedule,
)
from adapter.sim.cluster import ClusterSettings, SimCluster
from adapter.sim.traces import PiecewiseTrace, RampTrace, RequestShape, make_workload

PROFILE = ServingProfile(alpha_ms=6.356, beta_ms=0.044, max_batch_size=512)
STATE = SteadyState(PROFILE, RequestShape(128, 512), 9.0, 1000.0, duration_s=900.0, seeds=(7,))
# capacities per replica count as measured (bench/attainment.py): 10.0, 22.2, 34.1
TABLE = CapacityTable(STATE, 4, known=(10.0, 22.2, 34.1, 46.8))


def test_capacity_is_where_the_share_crosses_the_target() -> None:
    top = capacity(STATE, 1, tolerance=0.03)
    assert 8.5 < top < 11.5  # the model says 10.2; the simulator measures about 10.0
    assert measured_share(STATE, 1, top) >= 0.99
    assert measured_share(STATE, 1, top * 1.06) < 0.99


def test_needs_follow_the_table() -> None:
    assert TABLE.replicas_needed(0.0, 1) == 1
    assert TABLE.replicas_needed(10.0, 1) == 1
    assert TABLE.replicas_needed(10.1, 1) == 2
    assert TABLE.replicas_needed(30.0, 1) == 3
    assert TABLE.replicas_needed(500.0, 1) == 4  # no more than there may be
    assert TABLE.replicas_needed(5.0, 2) == 2  # the minimum holds


def test_a_measured_dip_is_noise() -> None:
    table = CapacityTable(STATE, 3, known=(10.0, 9.5, 30.0))
    assert table.measured == (10.0, 10.0, 30.0)


def test_each_replica_is_ready_when_the_step_comes() -> None:
    trace = PiecewiseTrace("step", 3600.0, (0.0, 1200.0, 2400.0), (8.0, 16.0, 8.0))
    plan = schedule(trace, TABLE, startup_s=60.0, minimum=1)
    assert plan == ((0.0, 1), (1140.0, 2), (2400.0, 1))


def test_short_gaps_are_bridged() -> None:
    # 16 -> 8 for 40 s -> 16: releasing and re-creating the second replica would hold a
    # GPU for 60 s of start-up; keeping it costs the 40 s
    trace = PiecewiseTrace("dip", 3600.0, (0.0, 600.0, 1200.0, 1240.0), (8.0, 16.0, 8.0, 16.0))
    assert schedule(trace, TABLE, startup_s=60.0, minimum=1) == ((0.0, 1), (540.0, 2))
    # a gap longer than the start-up is not
    trace = PiecewiseTrace("gap", 3600.0, (0.0, 600.0, 1200.0, 1300.0), (8.0, 16.0, 8.0, 16.0))
    assert schedule(trace, TABLE, startup_s=60.0, minimum=1) == (
        (0.0, 1),
        (540.0, 2),
        (1200.0, 1),
        (1240.0, 2),
    )


def test_a_ramp_is_followed_slice_by_slice() -> None:
    trace = RampTrace("ramp", 3600.0, 4.0, 32.0)
    plan = schedule(trace, TABLE, startup_s=60.0, minimum=1)
    counts = [count for _, count in plan]
    assert counts == [1, 2, 3]
    # 10 req/s is reached at t = 771.4 s: the slice holding it starts at 770 s
    assert plan[1][0] == pytest.approx(770.0 - 60.0)


def test_the_causal_floor_starts_no_replica_before_its_climb() -> None:
    """A step: the clairvoyant is ready at it, the causal floor starts there. A climb in
    stairs (8 -> 16 req/s over 120 s from 600 s; 10 req/s, where a second replica is
    needed, at 630 s): the causal floor sees the climb from its first stair and starts
    the replica then, 30 s before the need, the clairvoyant a start-up before it."""
    step = PiecewiseTrace("step", 3600.0, (0.0, 1200.0, 2400.0), (8.0, 16.0, 8.0))
    assert schedule(step, TABLE, 60.0, 1, causal=True) == ((0.0, 1), (1200.0, 2), (2400.0, 1))
    stairs = tuple(600.0 + 15.0 * i for i in range(8))
    climb = PiecewiseTrace(
        "climb", 3600.0, (0.0, *stairs), (8.0, *(8.0 + (i + 1) for i in range(8)))
    )
    assert schedule(climb, TABLE, 60.0, 1) == ((0.0, 1), (570.0, 2))
    assert schedule(climb, TABLE, 60.0, 1, causal=True) == ((0.0, 1), (600.0, 2))
    # a smooth ramp rises from its start: the causal floor is the clairvoyant there
    ramp = RampTrace("ramp", 3600.0, 4.0, 32.0)
    assert schedule(ramp, TABLE, 60.0, 1, causal=True) == schedule(ramp, TABLE, 60.0, 1)


def test_headroom_sizes_for_more_than_the_rate() -> None:
    step = PiecewiseTrace("step", 3600.0, (0.0, 1200.0), (8.0, 16.0))
    # 8 x 1.3 = 10.4 req/s: two replicas from the start; 16 x 1.3 = 20.8: still two
    assert schedule(step, TABLE, 60.0, 1, causal=True, headroom=0.3) == ((0.0, 2),)
    with pytest.raises(ValueError, match="headroom"):
        schedule(step, TABLE, 60.0, 1, headroom=-0.1)


def test_the_policy_scales_the_cluster_by_the_plan() -> None:
    trace = PiecewiseTrace("step", 600.0, (0.0, 300.0), (8.0, 16.0))
    workload = make_workload(trace, 1, RequestShape(128, 512))
    cluster = SimCluster(ClusterSettings(PROFILE, startup_delay_s=60.0), workload)
    policy = ClairvoyantPolicy(cluster, schedule(trace, TABLE, 60.0, 1))
    while (at := policy.next_time()) < 600.0:
        cluster.run_until(at)
        policy.act(at)
    cluster.run_until(600.0)
    assert [(r.at, r.replicas, r.ready) for r in cluster.history] == [
        (0.0, 1, 1),
        (240.0, 2, 1),
        (300.0, 2, 2),
    ]


# ---------------------------------------------------------------- policy labels


def test_a_label_sets_the_policys_knob() -> None:
    from adapter.sim.policies import parse_label

    assert parse_label("ours") == ("ours", None, 0.0, False)
    assert parse_label("ours@0.995") == ("ours", 0.995, 0.0, False)
    assert parse_label("keda-queue@2") == ("keda-queue", 2.0, 0.0, False)
    assert parse_label("clairvoyant@0.9") == ("clairvoyant", 0.9, 0.0, False)


def test_ours_label_takes_a_headroom() -> None:
    from adapter.sim.policies import parse_label

    assert parse_label("ours+50%") == ("ours", None, 0.5, False)
    assert parse_label("ours@0.95+200%") == ("ours", 0.95, 2.0, False)
    assert parse_label(" ours+0% ") == ("ours", None, 0.0, False)
    assert parse_label("ours+ahead") == ("ours", None, 0.0, True)
    assert parse_label("ours@0.95+ahead+20%") == ("ours", 0.95, 0.2, True)
    assert parse_label("causal-floor+50%") == ("causal-floor", None, 0.5, False)


@pytest.mark.parametrize(
    ("label", "says"),
    [
        ("hpa", "unknown policy 'hpa'"),
        ("wva-tutorial@2", "has no knob"),
        ("ours@1.5", "out of range"),
        ("ours@0", "out of range"),
        ("keda-queue@-1", "out of range"),
        ("keda-queue@many", "must be a number"),
        ("clairvoyant@nan", "out of range"),
        ("ours+50", "percentage >= 0"),
        ("ours+-5%", "percentage >= 0"),
        ("ours+nan%", "percentage >= 0"),
        ("ours@0.99+", "percentage >= 0"),
        ("keda-queue@2+50%", "only ours"),
        ("clairvoyant+10%", "only ours"),
        ("causal-floor+ahead", "only ours looks ahead"),
        ("ours+ahead+ahead", "each option once"),
        ("ours+10%+20%", "each option once"),
    ],
)
def test_a_bad_label_is_refused_by_name(label: str, says: str) -> None:
    from adapter.sim.policies import parse_label

    with pytest.raises(ValueError, match=says):
        parse_label(label)
