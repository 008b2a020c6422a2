"""go_float32 must print a float32 exactly as Go's fmt `%v` does.

Go's rules (strconv.FormatFloat(x, 'g', -1, 32) as used by fmt for `%v`):
- the digits are the shortest decimal that reads back to the same float32; among
  strings of that length the one closest to the value;
- %e form when the decimal exponent is < -4 or >= 6 (shortest precision uses 6 for
  this decision), with a sign and at least two exponent digits: 1e+06, 1.5e-05;
- otherwise positional, no trailing zeros, no trailing point;
- 0, -0, NaN, +Inf, -Inf.

The table below is derived by hand from those rules; the property test compares
against an independent exact (Fraction-based) implementation of them.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.optimizer.goformat import go_float32, json_float32

F32 = np.float32

TABLE: list[tuple[float | np.float32, str]] = [
    # special values
    (0.0, "0"),
    (-0.0, "-0"),
    (math.nan, "NaN"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    # integers: positional below 1e6, %e from 1e6 on
    (1.0, "1"),
    (-1.0, "-1"),
    (100.0, "100"),
    (200.0, "200"),
    (123456.0, "123456"),
    (999999.0, "999999"),
    (1e6, "1e+06"),
    (1.5e6, "1.5e+06"),
    (1234567.0, "1.234567e+06"),
    (16777216.0, "1.6777216e+07"),
    (1e7, "1e+07"),
    (1e21, "1e+21"),
    (3e38, "3e+38"),
    (float(np.finfo(np.float32).max), "3.4028235e+38"),
    # fractions: positional down to exponent -4, %e below
    (0.5, "0.5"),
    (0.1, "0.1"),
    (-2.5, "-2.5"),
    (1.0 / 3.0, "0.33333334"),
    (2.0 / 3.0, "0.6666667"),
    (0.001, "0.001"),
    (0.0001, "0.0001"),
    (0.00012345, "0.00012345"),
    (0.00001, "1e-05"),
    (1.5e-5, "1.5e-05"),
    (5e-5, "5e-05"),
    (-2.5e-7, "-2.5e-07"),
    (1e-10, "1e-10"),
    (float(np.finfo(np.float32).tiny), "1.1754944e-38"),
    (float(np.nextafter(F32(0), F32(1))), "1e-45"),
    # shortest digits of float32, not of float64
    (123456.7, "123456.7"),
    (999999.94, "999999.94"),
    (961.33, "961.33"),
    (769.4129, "769.4129"),
    (7.8070107, "7.8070107"),
    (7.8093896, "7.8093896"),
    (8.735201, "8.735201"),
    (16777217.0, "1.6777216e+07"),  # not representable: rounds to even
    (33554436.0, "3.3554436e+07"),
    (F32(0.1) * F32(3), "0.3"),  # the float32 product reads back as 0.3
    (1.0000001, "1.0000001"),
    (float(np.nextafter(F32(1), F32(0))), "0.99999994"),
]


@pytest.mark.parametrize(("value", "expected"), TABLE, ids=[e for _, e in TABLE])
def test_table(value: float, expected: str) -> None:
    assert go_float32(value) == expected


@pytest.mark.parametrize(("value", "expected"), TABLE, ids=[e for _, e in TABLE])
def test_accepts_numpy_float32_and_python_float_alike(value: float, expected: str) -> None:
    assert go_float32(F32(value)) == go_float32(float(F32(value))) == expected


# ---- an independent implementation of Go's rules, exact arithmetic only ----


def _neighbours(x: np.float32) -> tuple[Fraction, Fraction]:
    """Exact half-way points to the adjacent float32 values (the round-trip interval)."""
    here = Fraction(float(x))
    below = Fraction(float(np.nextafter(x, F32(-np.inf))))
    if x == np.finfo(np.float32).max:  # the step above max has the same size
        top = here + (here - below)
    else:
        top = Fraction(float(np.nextafter(x, F32(np.inf))))
    return (here + below) / 2, (here + top) / 2


def _shortest(x: np.float32) -> tuple[str, int]:
    """(digits, exponent) of the shortest closest decimal that reads back as x > 0."""
    value = Fraction(float(x))
    low, high = _neighbours(x)
    even = int(np.array(x).view(np.uint32)) % 2 == 0  # ties read back to even mantissas
    for digits in range(1, 10):
        exponent = math.floor(math.log10(float(x)))
        # fix the floor(log10) estimate exactly
        while Fraction(10) ** exponent > value:
            exponent -= 1
        while Fraction(10) ** (exponent + 1) <= value:
            exponent += 1
        unit = Fraction(10) ** (exponent - digits + 1)
        down = (value / unit).__floor__()
        options = []
        for count in (down, down + 1):
            candidate = count * unit
            inside = low < candidate < high or (even and candidate in (low, high))
            if inside:
                options.append((abs(candidate - value), count % 2, count))
        if options:
            options.sort()  # closest first; on an exact tie, the even last digit
            count = options[0][2]
            text = str(count)
            if len(text) > digits:  # 9.99 rounded up to 10.0
                exponent += 1
            return text.rstrip("0") or "0", exponent
    raise AssertionError(f"no round-trip decimal for {x!r}")


def _go_v(x: np.float32) -> str:
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if np.signbit(x) else "0"
    sign = "-" if x < 0 else ""
    digits, exponent = _shortest(abs(x))
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole = digits[: exponent + 1].ljust(exponent + 1, "0")
    fraction = digits[exponent + 1 :]
    return sign + whole + ("." + fraction if fraction else "")


def test_the_oracle_agrees_with_the_table() -> None:
    for value, expected in TABLE:
        assert _go_v(F32(value)) == expected


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_float32_bit_pattern(bits: int) -> None:
    x = np.array([bits], dtype=np.uint32).view(np.float32)[0]
    text = go_float32(x)
    assert text == _go_v(x)
    if np.isfinite(x):
        # Go's output reads back to the same float32
        assert F32(text) == x or (x == 0 and F32(text) == 0)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=2**-20, max_value=2**24, width=32))
def test_ordinary_magnitudes(value: float) -> None:
    x = F32(value)
    assert go_float32(x) == _go_v(x)
    assert go_float32(-x) == "-" + go_float32(x)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7.8070107, 7.8070107), (0.1, 0.1), (961.33, 961.33), (1e-45, 1e-45), (0.0, 0.0)],
)
def test_json_float32_is_the_shortest_decimal(value: float, expected: float) -> None:
    out = json_float32(F32(value))
    assert isinstance(out, float)
    assert out == expected
    assert F32(out) == F32(value)


def test_json_float32_keeps_non_finite_values() -> None:
    assert math.isnan(json_float32(F32(math.nan)))
    assert json_float32(F32(math.inf)) == math.inf
