"""The simulate report (adapter.sim.simulate) on the tutorial's step, all three policies."""

from __future__ import annotations

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.sim.cluster import ClusterSettings, ScaleRecord, SimCluster
from adapter.sim.policies import Limits, OursPolicy, SimSetup, setup_from_snapshot
from adapter.sim.simulate import (
    SimReport,
    _reaction,
    format_table,
    reaction_text,
    run_policy,
    simulate,
)
from adapter.sim.traces import PiecewiseTrace, make_workload, saturating_step_trace, step_trace

STEP = step_trace(900.0)  # 8 req/s, 16 req/s from 300 s, 8 req/s from 600 s


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    return setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))


@pytest.fixture(scope="module")
def report(setup: SimSetup) -> SimReport:
    return simulate(setup, STEP, seed=1, policies=["ours", "wva-tutorial", "keda-queue"])


def test_report_describes_the_run(report: SimReport) -> None:
    assert [p.policy for p in report.policies] == ["ours", "wva-tutorial", "keda-queue"]
    assert (report.trace, report.duration_s, report.step_up_at) == ("step", 900.0, 300.0)
    assert (report.slo_itl_ms, report.slo_ttft_ms, report.unit_cost) == (9.0, 1000.0, 100.0)
    assert report.requests == len(make_workload(STEP, seed=1))
    for result in report.policies:
        assert result.completed + result.unfinished + result.rejected == report.requests
        # within both SLOs: at most within either
        assert result.slo_attainment_pct <= min(
            result.itl_attainment_pct, result.ttft_attainment_pct
        )
        assert result.slo_attainment_pct >= (
            result.itl_attainment_pct + result.ttft_attainment_pct - 100.0 - 1e-9
        )
        assert result.rejected == 0
        assert result.cost == pytest.approx(result.gpu_hours * 100.0)
    series = report.series
    assert len(series.t) == len(series.offered_rps) == len(series.replicas["ours"])
    assert sum(series.offered_rps) * series.bin_s == pytest.approx(report.requests)
    assert report.model_validate_json(report.model_dump_json()) == report


def test_queue_threshold_never_scales_on_the_tutorials_step(report: SimReport) -> None:
    # the batch of one replica absorbs 16 req/s (about 80 sequences of 512): no queue, but
    # ITL settles near 9.9 ms, over the 9 ms SLO, for the whole middle third
    queue = report.result("keda-queue")
    assert (queue.scale_ups, queue.max_replicas, queue.reaction_s) == (0, 1, None)
    assert queue.gpu_hours == pytest.approx(900.0 / 3600.0)
    assert queue.itl_attainment_pct < 70.0


def test_ours_scales_once_each_way_and_beats_the_other_policies_on_itl(report: SimReport) -> None:
    ours, tutorial = report.result("ours"), report.result("wva-tutorial")
    assert (ours.scale_ups, ours.scale_downs, ours.max_replicas) == (1, 1, 2)
    assert ours.ttft_attainment_pct == 100.0
    assert ours.itl_attainment_pct > tutorial.itl_attainment_pct
    assert ours.itl_attainment_pct > report.result("keda-queue").itl_attainment_pct
    # the adapter's first cycle after the step (315 s) sees it: its arrival rate counts what
    # entered the pods, not only what finished; the HPA applies it 7.5 s later
    assert (ours.reaction_s, ours.reaction_cycles, ours.replicas_at_step) == (22.5, 1, 1)
    assert ours.ready_s == 22.5 + 60.0
    # the tutorial's completion rate over (300, 360] sees it too, at its first cycle
    assert (tutorial.reaction_s, tutorial.reaction_cycles) == (60.0, 1)
    assert reaction_text(ours) == "22.5 s (cycle 1)"
    assert "ours" in format_table(report)


def test_ours_misses_the_itl_slo_only_until_the_second_replica_is_ready(setup: SimSetup) -> None:
    cluster = SimCluster(ClusterSettings(setup.profile), make_workload(STEP, seed=1))
    run_policy(cluster, OursPolicy(setup, cluster, Limits()), STEP.duration_s)
    ready = next(h.at for h in cluster.history if h.ready == 2)
    late = [r for r in cluster.finished if r.itl_mean * 1000.0 > setup.slo_itl_ms]
    assert late
    # requests already in flight at the step and those that came before the new pod was up
    assert all(300.0 - 5.0 <= r.arrival <= ready for r in late)
    assert ready - 300.0 == 22.5 + 60.0  # reaction + the 60 s startup


def test_the_misses_at_the_step_are_every_itl_miss_of_ours(report: SimReport) -> None:
    ours = report.result("ours")
    assert ours.itl_misses_at_step == ours.itl_misses > 0
    judged = ours.completed + ours.rejected  # in flight at the end: not judged
    assert ours.itl_attainment_pct == pytest.approx(100.0 * (1 - ours.itl_misses / judged))


# The issue's acceptance on the step: ours >= 99 % ITL attainment, GPU hours <= keda-queue,
# reaction within 2 cycles. Here on the 900 s step at the default 60 s startup; bench/policies.py
# checks it on the 1 h step at 0, 30 and 60 s.


def test_issue_acceptance_reaction_within_two_cycles(report: SimReport) -> None:
    ours = report.result("ours")
    assert ours.reaction_cycles is not None and ours.reaction_cycles <= 2


@pytest.mark.xfail(
    strict=True,
    reason="measured 85.94 % here (96.48 % on the bench's 1 h step; 99.03 % there only with"
    " a 0 s startup): all 1351 misses were in flight between the step and the second replica"
    " serving 82.5 s later (22.5 s reaction + 60 s startup), on one replica at ~9.9 ms; even"
    " a scale-up at the step leaves 60 s x 16 req/s = 960 requests (2.5 % of the 1 h run)",
)
def test_issue_acceptance_itl_attainment(report: SimReport) -> None:
    assert report.result("ours").itl_attainment_pct >= 99.0


@pytest.mark.xfail(
    strict=True,
    reason="measured: keda-queue never scales at 16 req/s (one replica's batch takes it, no"
    " queue forms) and holds the minimum, 0.25 GPU h, at 50.5 % ITL attainment; ours uses"
    " 0.347 GPU h for the second replica the SLO needs in the middle third",
)
def test_issue_acceptance_gpu_hours(report: SimReport) -> None:
    assert report.result("ours").gpu_hours <= report.result("keda-queue").gpu_hours


def test_on_the_saturating_step_the_queue_policy_scales_and_ours_uses_fewer_gpu_hours(
    setup: SimSetup,
) -> None:
    trace = saturating_step_trace(900.0)  # 8 req/s, 40 from 300 s, 8 from 600 s
    report = simulate(setup, trace, policies=["ours", "keda-queue"], seed=1)
    ours, queue = report.result("ours"), report.result("keda-queue")
    assert queue.scale_ups > 0 and queue.reaction_cycles == 2  # the queue formed
    assert (ours.reaction_cycles, ours.max_replicas) == (1, 4)
    assert ours.gpu_hours < queue.gpu_hours
    assert ours.itl_attainment_pct > queue.itl_attainment_pct
    assert ours.itl_attainment_pct < 99.0  # the 82.5 s to the new replicas, as on the step


@pytest.mark.parametrize(
    ("phase", "reaction_s", "cycles"),
    [
        # cycles at 14 + 15 k: the one at 314 s has 14 s of the step in its window
        (14 / 15, 21.5, 1),
        # cycles at 1 + 15 k: the one at 301 s has 1 s of it; the one at 316 s reacts
        (1 / 15, 23.5, 2),
    ],
)
def test_reaction_is_counted_in_the_policys_own_cycles(
    setup: SimSetup, phase: float, reaction_s: float, cycles: int
) -> None:
    trace = PiecewiseTrace("step", 420.0, (0.0, 300.0), (8.0, 16.0))
    report = simulate(setup, trace, policies=["ours"], seed=1, phase=phase)
    ours = report.result("ours")
    assert report.phase == phase
    assert (ours.reaction_s, ours.reaction_cycles) == pytest.approx((reaction_s, cycles))


def test_reaction_is_measured_against_what_was_in_place_at_the_step() -> None:
    history = [
        ScaleRecord(0.0, 1, 1),
        ScaleRecord(100.0, 2, 1),  # at the step's instant: decided before seeing it
        ScaleRecord(130.0, 1, 1),  # down, then back up: not above what was in place
        ScaleRecord(150.0, 2, 1),
        ScaleRecord(170.0, 3, 1),
        ScaleRecord(200.0, 3, 2),
    ]
    in_place, scaled, ready = _reaction(history, 100.0)
    assert in_place == ScaleRecord(100.0, 2, 1)
    assert (scaled, ready) == (170.0, 200.0)
    assert _reaction(history, None) == (None, None, None)
    assert _reaction(history[:1], 50.0) == (history[0], None, None)


def test_stepwise_replicas_give_the_same_report(setup: SimSetup) -> None:
    trace = step_trace(240.0, 8.0, 24.0)

    def run(stepwise: bool) -> SimReport:
        policies = ["ours", "keda-queue"]
        return simulate(
            setup, trace, policies=policies, seed=3, startup_delay_s=20.0, stepwise=stepwise
        )

    fast, slow = run(False), run(True)
    assert fast.result("ours").scale_ups > 0
    assert fast == slow
