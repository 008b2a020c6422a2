"""Estimators that learn from what the pods report (pure: no I/O, injected time)."""

from adapter.learn.profile import (
    DeclaredProfile,
    DecodeObservation,
    LearnedProfile,
    LearnSettings,
    ProfileEstimator,
)

__all__ = [
    "DeclaredProfile",
    "DecodeObservation",
    "LearnSettings",
    "LearnedProfile",
    "ProfileEstimator",
]
