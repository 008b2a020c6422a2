"""`simulate --true-*`: the simulated GPUs run another profile than the VA declares; the
adapter and the policies still read the VA's, from the samples (adapter.sim.simulate)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.sim.policies import SimSetup, setup_from_snapshot
from adapter.sim.simulate import ProfileFigures, SimReport, simulate
from adapter.sim.traces import step_trace

TRACE = step_trace(600.0)  # 8 req/s, 16 from 200 s, 8 from 400 s


@pytest.fixture(scope="module")
def setup() -> SimSetup:
    return setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))


def run(setup: SimSetup, **kwargs: object) -> SimReport:
    return simulate(setup, TRACE, policies=["ours"], seed=1, **kwargs)  # type: ignore[arg-type]


def test_slower_gpus_than_declared_give_longer_itls_while_the_va_profile_stays(
    setup: SimSetup,
) -> None:
    slow = replace(setup.profile, alpha_ms=8.0)  # the VA says 6.356
    # with its declared profile only: learning would find the pods out (the next test)
    base = run(setup, profile_learning=False)
    hidden = run(setup, true_profile=slow, profile_learning=False)

    assert hidden.va_profile == base.va_profile == ProfileFigures.of(setup.profile)
    assert hidden.true_profile == ProfileFigures.of(slow)
    assert base.true_profile == base.va_profile
    ours, mismatched = base.result("ours"), hidden.result("ours")
    assert ours.itl_mean_ms is not None and mismatched.itl_mean_ms is not None
    assert mismatched.itl_mean_ms > ours.itl_mean_ms + 1.0
    # ours sizes on the VA's profile, which promises ~1.6 ms more than the pods give
    assert mismatched.itl_attainment_pct < ours.itl_attainment_pct - 50.0


def test_learning_finds_slower_gpus_out(setup: SimSetup) -> None:
    """The same pods, the adapter learning their profile (its default): it sizes for the
    pods it has, not the ones declared, and keeps most requests within the SLO."""
    slow = replace(setup.profile, alpha_ms=8.0)
    declared = run(setup, true_profile=slow, profile_learning=False).result("ours")
    learned = run(setup, true_profile=slow).result("ours")
    assert learned.gpu_hours > declared.gpu_hours
    assert learned.itl_attainment_pct > declared.itl_attainment_pct + 30.0, (
        learned.itl_attainment_pct,
        declared.itl_attainment_pct,
    )
