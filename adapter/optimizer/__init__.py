"""The pure optimizer: candidate allocations, then the limited or unlimited solver."""

from adapter.optimizer.candidates import SizingCache
from adapter.optimizer.solution import Solution, optimize, optimize_parsed

__all__ = ["SizingCache", "Solution", "optimize", "optimize_parsed"]
