"""`simulate --no-hpa-configurable-tolerance`: without Kubernetes' HPAConfigurableTolerance
the HPA in front of ours applies its default 10 % tolerance (adapter.sim.policies)."""

from __future__ import annotations

import pytest

from adapter.collect.local import DEFAULT_SAMPLES, load_snapshot
from adapter.emulator.batching import ServingProfile
from adapter.sim.cluster import ClusterSettings, SimCluster
from adapter.sim.hpa import KedaLoop
from adapter.sim.policies import (
    Limits,
    OursPolicy,
    build_policy,
    ours_scaled_object,
    setup_from_snapshot,
)
from adapter.sim.traces import Workload


def replicas_after(desired: float, current: int, *, configurable_tolerance: bool) -> int:
    """Ours' KEDA + HPA fed a constant desired count for 5 minutes."""
    loop = KedaLoop(
        spec=ours_scaled_object(1, 20, configurable_tolerance=configurable_tolerance),
        get_metrics=lambda: desired,
        initial_replicas=current,
    )
    loop.advance_to(300.0)
    return loop.current_replicas


@pytest.mark.parametrize(("desired", "current"), [(10.0, 11), (12.0, 11)])
def test_without_the_feature_the_default_band_holds_a_decision(
    desired: float, current: int
) -> None:
    # 10 / 11 = 0.91 and 12 / 11 = 1.09: inside 1 +- 0.1, so the HPA keeps 11
    assert replicas_after(desired, current, configurable_tolerance=False) == current
    # with the feature, tolerance 0 both ways: it follows (after the 60 s down window)
    assert replicas_after(desired, current, configurable_tolerance=True) == desired


def test_a_change_outside_the_band_still_applies_without_the_feature() -> None:
    assert replicas_after(9.0, 11, configurable_tolerance=False) == 9  # 0.82 < 0.9


def test_the_switch_reaches_ours_hpa() -> None:
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))
    profile = ServingProfile(alpha_ms=6.356, beta_ms=0.044, max_batch_size=512)
    cluster = SimCluster(ClusterSettings(profile), Workload((), (), ()))
    for switch, tolerance in ((True, 0.0), (False, None)):
        policy = build_policy("ours", setup, cluster, Limits(), hpa_configurable_tolerance=switch)
        assert isinstance(policy, OursPolicy)
        behavior = policy._keda.keda.spec.behavior  # the ScaledObject its HPA runs
        assert behavior is not None and behavior.scaleUp is not None
        assert behavior.scaleDown is not None
        assert (behavior.scaleUp.tolerance, behavior.scaleDown.tolerance) == (tolerance,) * 2
