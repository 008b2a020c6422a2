"""Behaviour of the HPA / KEDA simulator (adapter.sim.hpa) against keda-hpa.md section 2."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from adapter.sim import (
    Fallback,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    HPASimulator,
    KedaLoop,
    ScaledObjectSpec,
)
from adapter.sim.hpa import FallbackBehavior

Behavior = HorizontalPodAutoscalerBehavior
Rules = HPAScalingRules
Policy = HPAScalingPolicy


def no_windows(tolerance: float | None = None) -> Behavior:
    """Default policies, no stabilization either way, optional tolerance both ways."""
    return Behavior(
        scaleUp=Rules(stabilizationWindowSeconds=0, tolerance=tolerance),
        scaleDown=Rules(stabilizationWindowSeconds=0, tolerance=tolerance),
    )


def run(hpa: HPASimulator, metrics: Sequence[float | None], period: float = 15.0) -> list[int]:
    """Reconcile once per period with the given metric values; replicas after each."""
    return [hpa.reconcile(i * period, m).desired for i, m in enumerate(metrics)]


# --------------------------------------------------------------------------- tolerance


@pytest.mark.parametrize(
    ("current", "desired", "tolerance", "expected"),
    [
        (10, 11, None, 10),  # r = 1.1: inside the default 10 % band (K8s >= 1.33)
        (10, 11, 0.0, 11),  # tolerance 0: pass-through
        (10, 9, None, 10),  # symmetric scale-down swallowed
        (10, 9, 0.0, 9),
        (10, 12, None, 12),  # larger jump leaves the band
        (10, 8, None, 8),
        (9, 10, None, 10),  # below 10 replicas every +-1 acts
        (9, 8, None, 8),
        (11, 12, None, 11),
        (11, 10, None, 11),
        (20, 22, None, 20),
        (20, 18, None, 20),
        (20, 23, None, 23),
        (20, 17, None, 17),
        (100, 110, None, 100),
        (100, 111, None, 111),
        (10, 11, 0.05, 11),
    ],
)
def test_tolerance_band_for_desired_replicas_average_value_target_1(
    current: int, desired: int, tolerance: float | None, expected: int
) -> None:
    hpa = HPASimulator(replicas=current, max_replicas=200, behavior=no_windows(tolerance))
    result = hpa.reconcile(0.0, float(desired))
    assert result.desired == expected
    assert hpa.replicas == expected
    assert result.rescaled == (expected != current)


def test_tolerance_is_per_direction() -> None:
    behavior = Behavior(scaleUp=Rules(tolerance=0.0), scaleDown=Rules(stabilizationWindowSeconds=0))
    up = HPASimulator(replicas=10, max_replicas=50, behavior=behavior)
    assert up.reconcile(0.0, 11.0).desired == 11
    down = HPASimulator(replicas=10, max_replicas=50, behavior=behavior)
    assert down.reconcile(0.0, 9.0).desired == 10


def test_tolerance_field_ignored_without_behavior_uses_global_flag() -> None:
    hpa = HPASimulator(replicas=10, max_replicas=50, behavior=None, tolerance=0.0)
    assert hpa.reconcile(0.0, 11.0).desired == 11


def test_legacy_tolerance_semantics_scale_at_exact_1_1() -> None:
    # |1 - 1.1| = 0.10000000000000009 > 0.1 on <= 1.32
    legacy = HPASimulator(replicas=10, max_replicas=50, legacy_tolerance=True)
    assert legacy.reconcile(0.0, 11.0).desired == 11
    assert not HPASimulator(replicas=10, max_replicas=50).within_tolerance(0.89)


def test_average_value_in_tolerance_returns_status_replicas_quirk() -> None:
    quirky = HPASimulator(replicas=10, max_replicas=50, behavior=no_windows())
    assert quirky.reconcile(0.0, 10.5, status_replicas=11).desired == 11
    fixed = HPASimulator(
        replicas=10, max_replicas=50, behavior=no_windows(), in_tolerance_uses_status=False
    )
    assert fixed.reconcile(0.0, 10.5, status_replicas=11).desired == 10


def test_average_value_divides_by_replicas_and_ceils() -> None:
    # AverageValue target 4: 30 / 4 -> ceil(7.5) = 8, independent of current replicas
    for current in (2, 5, 7):
        hpa = HPASimulator(replicas=current, max_replicas=50, target=4.0, behavior=no_windows(0))
        assert hpa.reconcile(0.0, 30.0).proposal == 8


def test_value_target_multiplies_ratio_by_ready_pods() -> None:
    hpa = HPASimulator(replicas=4, max_replicas=50, target_type="Value", behavior=no_windows())
    # r = 3 / 1, ready 2 -> ceil(6) = 6 (not 3 * spec)
    assert hpa.reconcile(0.0, 3.0, ready_replicas=2).desired == 6
    in_band = HPASimulator(replicas=4, max_replicas=50, target_type="Value")
    assert in_band.reconcile(0.0, 1.05).desired == 4
    no_ready = HPASimulator(replicas=4, max_replicas=50, target_type="Value")
    result = no_ready.reconcile(0.0, 3.0, ready_replicas=0)
    assert (result.desired, result.reason) == (4, "FailedGetExternalMetric")


# --------------------------------------------------------------------------- stabilization


def test_scale_down_held_for_default_300s_window() -> None:
    hpa = HPASimulator(replicas=10, max_replicas=50, behavior=Behavior())
    trace = run(hpa, [10.0] + [5.0] * 21)  # t = 0 .. 315
    assert trace[:20] == [10] * 20  # t <= 285: t = 0's 10 still inside the window
    assert trace[20] == 5  # t = 300: window (0, 300] holds only 5s
    assert trace[21] == 5


def test_scale_down_uses_max_recommendation_over_window() -> None:
    behavior = Behavior(scaleDown=Rules(stabilizationWindowSeconds=60))
    hpa = HPASimulator(replicas=10, max_replicas=50, behavior=behavior)
    trace = run(hpa, [10.0, 7.0, 8.0, 5.0, 5.0, 5.0, 5.0])
    assert trace == [10, 10, 10, 10, 8, 8, 5]


def test_legacy_path_without_behavior_also_holds_scale_down_300s() -> None:
    hpa = HPASimulator(replicas=6, max_replicas=50, behavior=None)
    trace = run(hpa, [3.0] * 21)
    assert trace[:20] == [6] * 20  # first reconcile records the current 6
    assert trace[20] == 3


def test_scale_up_is_immediate_by_default() -> None:
    hpa = HPASimulator(replicas=2, max_replicas=50, behavior=Behavior())
    assert hpa.reconcile(0.0, 6.0).desired == 6


def test_scale_up_window_uses_min_over_window() -> None:
    behavior = Behavior(scaleUp=Rules(stabilizationWindowSeconds=30))
    hpa = HPASimulator(replicas=2, max_replicas=50, behavior=behavior)
    # the initial recommendation 2 (t=0) holds it at 2 while inside (t-30, t]; at t=30 the
    # window holds 4 (t=15) and 6 -> min 4; at t=45 only 6s remain
    assert run(hpa, [6.0, 4.0, 6.0, 6.0, 6.0]) == [2, 2, 4, 6, 6]


# --------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        (Behavior(), [5, 10, 20, 20]),  # max(+4 pods, +100 %) per 15 s
        (None, [4, 8, 16, 20]),  # legacy: max(2 x spec, 4)
        (Behavior(scaleUp=Rules(selectPolicy="Min")), [2, 4, 8, 12]),  # min(+4, x2)
        (Behavior(scaleUp=Rules(selectPolicy="Disabled")), [1, 1, 1, 1]),
        (
            Behavior(scaleUp=Rules(policies=(Policy(type="Percent", value=50, periodSeconds=15),))),
            [2, 3, 5, 8],  # ceil(1.5), ceil(3), ceil(4.5), ceil(7.5)
        ),
        (
            Behavior(scaleUp=Rules(policies=(Policy(type="Pods", value=3, periodSeconds=15),))),
            [4, 7, 10, 13],
        ),
    ],
)
def test_scale_up_policies_from_1_toward_20(behavior: Behavior | None, expected: list[int]) -> None:
    hpa = HPASimulator(replicas=1, max_replicas=20, behavior=behavior)
    assert run(hpa, [20.0] * 4) == expected


def test_policy_period_counts_earlier_scale_events() -> None:
    behavior = Behavior(
        scaleUp=Rules(policies=(Policy(type="Percent", value=50, periodSeconds=60),))
    )
    hpa = HPASimulator(replicas=10, max_replicas=100, behavior=behavior)
    # t=0: 10 -> 15; t=15..45: period start is still 10 -> limit 15; t=60: the event at 0
    # left the period -> start 15 -> ceil(22.5) = 23; t=75: start 23 - 8 = 15 again -> 23
    assert run(hpa, [40.0] * 6) == [15, 15, 15, 15, 23, 23]
    # a tick slightly under the period still counts the previous step (strict comparison)
    jitter = HPASimulator(replicas=10, max_replicas=100, behavior=behavior)
    assert jitter.reconcile(0.0, 40.0).desired == 15
    assert jitter.reconcile(59.9, 40.0).desired == 15
    assert jitter.reconcile(60.0, 40.0).desired == 23


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        (Rules(stabilizationWindowSeconds=0), [2, 2, 2]),  # default 100 % per 15 s
        (
            Rules(
                stabilizationWindowSeconds=0,
                policies=(Policy(type="Pods", value=2, periodSeconds=60),),
            ),
            [8, 8, 8, 8, 6],
        ),
        (
            Rules(
                stabilizationWindowSeconds=0,
                policies=(Policy(type="Percent", value=50, periodSeconds=15),),
            ),
            [5, 2, 2],  # trunc(10 * 0.5), trunc(5 * 0.5)
        ),
        (
            Rules(
                stabilizationWindowSeconds=0,
                selectPolicy="Min",
                policies=(
                    Policy(type="Pods", value=1, periodSeconds=15),
                    Policy(type="Percent", value=50, periodSeconds=15),
                ),
            ),
            [9, 8, 7],  # Min picks the smaller change
        ),
        (
            Rules(
                stabilizationWindowSeconds=0,
                selectPolicy="Max",
                policies=(
                    Policy(type="Pods", value=1, periodSeconds=15),
                    Policy(type="Percent", value=50, periodSeconds=15),
                ),
            ),
            [5, 2, 2],  # Max picks the larger change
        ),
        (Rules(stabilizationWindowSeconds=0, selectPolicy="Disabled"), [10, 10, 10]),
    ],
)
def test_scale_down_policies_from_10_toward_2(down: Rules, expected: list[int]) -> None:
    hpa = HPASimulator(replicas=10, max_replicas=20, behavior=Behavior(scaleDown=down))
    assert run(hpa, [2.0] * len(expected)) == expected


# --------------------------------------------------------------------------- clamps, errors


@pytest.mark.parametrize(
    ("replicas", "metric", "expected", "reason"),
    [
        (10, 500.0, 20, "TooManyReplicas"),  # clamped to maxReplicas
        (10, 0.0, 3, "TooFewReplicas"),  # clamped to minReplicas
        (30, 5.0, 20, "TooManyReplicas"),  # spec above max: set to max directly
        (1, 50.0, 3, "TooFewReplicas"),  # spec below min: set to min directly
        (30, None, 20, "TooManyReplicas"),  # pre-check needs no metric
    ],
)
def test_min_max_clamps(replicas: int, metric: float | None, expected: int, reason: str) -> None:
    hpa = HPASimulator(replicas=replicas, min_replicas=3, max_replicas=20, behavior=no_windows())
    result = hpa.reconcile(0.0, metric)
    assert (result.desired, result.reason) == (expected, reason)


def _raise() -> float:
    raise RuntimeError("GetMetrics failed")


@pytest.mark.parametrize("metric", [None, math.nan, _raise])
def test_metric_error_leaves_replicas_unchanged(
    metric: float | Callable[[], float] | None,
) -> None:
    hpa = HPASimulator(replicas=7, max_replicas=20, behavior=no_windows(0))
    for t in (0.0, 15.0, 30.0):
        result = hpa.reconcile(t, metric)
        assert (result.desired, result.reason, result.proposal) == (
            7,
            "FailedGetExternalMetric",
            None,
        )
    assert hpa.reconcile(45.0, 3.0).desired == 3  # recovers on the next good value


def test_errors_record_no_recommendation() -> None:
    hpa = HPASimulator(replicas=10, max_replicas=20, behavior=Behavior())
    hpa.reconcile(0.0, 10.0)
    for i in range(1, 20):
        hpa.reconcile(i * 15.0, None)
    assert hpa.reconcile(300.0, 4.0).desired == 4  # only the t=0 entry existed, now expired


def test_zero_spec_disables_scaling() -> None:
    hpa = HPASimulator(replicas=0, max_replicas=20)
    calls: list[int] = []

    def source() -> float:
        calls.append(1)
        return 5.0

    result = hpa.reconcile(0.0, source)
    assert (result.desired, result.reason) == (0, "ScalingDisabled")
    assert calls == []


def test_invalid_specs_rejected() -> None:
    with pytest.raises(ValueError):
        Policy(type="Pods", value=0, periodSeconds=15)
    with pytest.raises(ValueError):
        Rules(tolerance=-0.1)
    with pytest.raises(ValueError):
        Rules(policies=())
    with pytest.raises(ValueError):
        HPASimulator(replicas=1, min_replicas=5, max_replicas=3)
    with pytest.raises(ValueError):
        Fallback(failureThreshold=3, replicas=2, behavior="sometimes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- KEDA


class Source:
    """A GetMetrics stand-in: returns ``value`` or raises when ``fail`` is set."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.fail = False

    def __call__(self) -> float:
        if self.fail:
            raise RuntimeError("UNAVAILABLE")
        return self.value


@pytest.mark.parametrize(
    ("behavior", "current", "expected"),
    [
        ("static", 3, 6),
        ("static", 9, 6),
        ("currentReplicasIfHigher", 3, 6),
        ("currentReplicasIfHigher", 9, 9),
        ("currentReplicasIfLower", 3, 3),
        ("currentReplicasIfLower", 9, 6),
        ("currentReplicas", 3, 3),
        ("currentReplicas", 9, 9),
    ],
)
def test_keda_fallback_after_failure_threshold(
    behavior: FallbackBehavior, current: int, expected: int
) -> None:
    source = Source(float(current))
    loop = KedaLoop(
        spec=ScaledObjectSpec(
            minReplicaCount=1,
            maxReplicaCount=20,
            fallback=Fallback(failureThreshold=2, replicas=6, behavior=behavior),
            behavior=no_windows(0),
        ),
        get_metrics=source,
        initial_replicas=current,
    )
    assert loop.hpa_sync(0.0).desired == current
    source.fail = True
    for t in (15.0, 30.0):  # failures 1, 2: not above the threshold -> frozen
        result = loop.hpa_sync(t)
        assert (result.desired, result.reason) == (current, "FailedGetExternalMetric")
        assert not loop.fallback_active
    result = loop.hpa_sync(45.0)  # failure 3 > 2: synthetic value target x fallback replicas
    assert loop.fallback_active
    assert result.desired == expected
    source.fail = False
    source.value = 4.0
    assert loop.hpa_sync(60.0).desired == 4
    assert loop.failures == 0


def test_keda_fallback_value_metric_divides_by_ready_pods() -> None:
    source = Source(1.0)
    source.fail = True
    loop = KedaLoop(
        spec=ScaledObjectSpec(
            minReplicaCount=1,
            maxReplicaCount=20,
            metricType="Value",
            fallback=Fallback(failureThreshold=0, replicas=8),
            behavior=no_windows(0),
        ),
        get_metrics=source,
        initial_replicas=4,
    )
    # value = 1 * 8 / 4 ready, r = 2, proposal = ceil(2 * 4) = 8
    assert loop.hpa_sync(0.0).desired == 8


def test_keda_without_fallback_errors_freeze_and_block_scale_to_zero() -> None:
    source = Source(0.0)
    source.fail = True
    loop = KedaLoop(
        spec=ScaledObjectSpec(pollingInterval=5, cooldownPeriod=10, maxReplicaCount=10),
        get_metrics=source,
        initial_replicas=3,
    )
    steps = loop.advance_to(120.0)
    assert {s.replicas for s in steps} == {3}
    assert {s.detail for s in steps if s.kind == "poll"} == {"error"}
    assert loop.failures == len(steps)


def test_keda_activation_to_zero_and_back() -> None:
    source = Source(0.0)
    loop = KedaLoop(
        spec=ScaledObjectSpec(
            pollingInterval=5, cooldownPeriod=30, maxReplicaCount=10, behavior=no_windows(0)
        ),
        get_metrics=source,
        initial_replicas=0,
    )
    loop.advance_to(60.0)
    assert loop.current_replicas == 0  # inactive, HPA disabled at 0

    source.value = 3.0
    steps = loop.advance_to(65.0)  # poll at 60 already ran; poll at 65 activates
    assert [(s.kind, s.detail, s.replicas) for s in steps] == [("poll", "activated", 1)]
    steps = loop.advance_to(75.0)  # HPA sync at 75 takes it from 1 to 3
    assert steps[-1] == type(steps[-1])(75.0, "hpa", 3, "ReadyForNewScale")

    source.value = 0.0
    steps = loop.advance_to(120.0)
    hpa = [s for s in steps if s.kind == "hpa"]
    assert hpa[0].replicas == 1  # HPA floor is max(minReplicaCount, 1)
    deactivated = [s.now for s in steps if s.detail == "deactivated"]
    assert deactivated == [105.0]  # last active poll at 75, cooldown 30
    assert loop.current_replicas == 0

    source.value = 2.0
    loop.advance_to(150.0)
    assert loop.current_replicas == 2


def test_keda_is_active_callable_decides_activity() -> None:
    source = Source(0.0)
    active = [True]
    loop = KedaLoop(
        spec=ScaledObjectSpec(pollingInterval=5, cooldownPeriod=0, behavior=no_windows(0)),
        get_metrics=source,
        is_active=lambda: active[0],
        initial_replicas=0,
    )
    assert loop.poll(0.0) == "activated"
    assert loop.poll(5.0) == "active"
    active[0] = False
    assert loop.poll(10.0) == "deactivated"
    assert loop.current_replicas == 0


def test_keda_fallback_engaged_counts_as_active_and_scales_from_zero() -> None:
    source = Source(0.0)
    source.fail = True
    loop = KedaLoop(
        spec=ScaledObjectSpec(
            pollingInterval=10,
            fallback=Fallback(failureThreshold=1, replicas=4),
            behavior=no_windows(0),
        ),
        get_metrics=source,
        initial_replicas=0,
    )
    assert loop.poll(0.0) == "error"
    assert loop.poll(10.0) == "activated"
    assert loop.current_replicas == 1
    assert loop.hpa_sync(15.0).desired == 4


def test_keda_sanitizes_nan_and_negative_to_zero() -> None:
    source = Source(-5.0)
    loop = KedaLoop(
        spec=ScaledObjectSpec(minReplicaCount=2, behavior=no_windows(0)),
        get_metrics=source,
        initial_replicas=5,
    )
    assert loop.hpa_sync(0.0).desired == 2
    source.value = math.nan
    assert loop.poll(15.0) == "inactive"
