"""Pure simulators of the components around the adapter (no I/O, time injected)."""

from adapter.sim.hpa import (
    DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS,
    DEFAULT_SYNC_PERIOD_SECONDS,
    DEFAULT_TOLERANCE,
    Fallback,
    HorizontalPodAutoscalerBehavior,
    HPAScalingPolicy,
    HPAScalingRules,
    HPASimulator,
    KedaLoop,
    KedaStep,
    ReconcileResult,
    ScaledObjectSpec,
    default_scale_down_rules,
    default_scale_up_rules,
)

__all__ = [
    "DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS",
    "DEFAULT_SYNC_PERIOD_SECONDS",
    "DEFAULT_TOLERANCE",
    "Fallback",
    "HPAScalingPolicy",
    "HPAScalingRules",
    "HPASimulator",
    "HorizontalPodAutoscalerBehavior",
    "KedaLoop",
    "KedaStep",
    "ReconcileResult",
    "ScaledObjectSpec",
    "default_scale_down_rules",
    "default_scale_up_rules",
]
