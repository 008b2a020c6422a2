"""The reference's float32 bisection, including its tolerance quirk.

The reference meant to stop when |(y - t) / t| <= 1e-6 but computes |y - t/t|,
i.e. |y - 1|: apart from exact equality it only fires when y is near 1.0, so in
practice it runs until the float32 bracket stops moving. Stopping at that fixed
point gives the identical answer, because every further iteration repeats the
same evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

F32 = np.float32
EPSILON = F32(1e-6)
MAX_ITERATIONS = 100
HALF = F32(0.5)


def within_tolerance(y: np.float32, target: np.float32) -> bool:
    """The reference's (quirky) stopping test, bit for bit."""
    if y == target:
        return True
    if target == 0:
        return False
    return abs(float(y - target / target)) <= float(EPSILON)


def within_tolerance_array(
    y: npt.NDArray[np.float32], target: npt.NDArray[np.float32]
) -> npt.NDArray[np.bool_]:
    with np.errstate(invalid="ignore", divide="ignore"):
        quirk = np.abs((y - target / target).astype(np.float64)) <= float(EPSILON)
    hit: npt.NDArray[np.bool_] = (y == target) | ((target != 0) & quirk)
    return hit


def binary_search(
    x_min: np.float32,
    x_max: np.float32,
    target: np.float32,
    evaluate: Callable[[np.float32], np.float32],
) -> tuple[np.float32, int]:
    """Find x with evaluate(x) == target in [x_min, x_max].

    Returns (x, indicator): indicator -1 if the target lies below the range (x_min
    returned), +1 above it (x_max returned), 0 if found inside.
    """
    y_bounds = []
    for x in (x_min, x_max):
        y = evaluate(x)
        if within_tolerance(y, target):
            return x, 0
        y_bounds.append(y)
    increasing = bool(y_bounds[0] < y_bounds[1])
    if (increasing and target < y_bounds[0]) or (not increasing and target > y_bounds[0]):
        return x_min, -1
    if (increasing and target > y_bounds[1]) or (not increasing and target < y_bounds[1]):
        return x_max, +1
    x_star = x_min
    for _ in range(MAX_ITERATIONS):
        x_star = HALF * (x_min + x_max)
        y_star = evaluate(x_star)
        if within_tolerance(y_star, target):
            break
        if (increasing and target < y_star) or (not increasing and target > y_star):
            if x_max == x_star:
                break  # fixed point: every further iteration is identical
            x_max = x_star
        else:
            if x_min == x_star:
                break
            x_min = x_star
    return x_star, 0
