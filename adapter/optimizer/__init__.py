"""The pure optimizer: candidate allocations, then the limited or unlimited solver."""

from adapter.optimizer.candidates import DEFAULT_ATTAINMENT, SizingCache, SizingRule
from adapter.optimizer.solution import Solution, optimize, optimize_parsed

__all__ = [
    "DEFAULT_ATTAINMENT",
    "SizingCache",
    "SizingRule",
    "Solution",
    "optimize",
    "optimize_parsed",
]
