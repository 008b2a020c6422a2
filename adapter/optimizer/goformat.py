"""Go's `%v` for float32, so `--format log` prints the reference's strings exactly.

Go prints the shortest decimal that reads back to the same float32, in %e form when
the decimal exponent is below -4 or at least 6 (two-digit exponent minimum), else
positionally.
"""

from __future__ import annotations

import numpy as np


def go_float32(value: float | np.floating) -> str:
    x = np.float32(value)
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if np.signbit(x) else "0"
    sign = "-" if x < 0 else ""
    mantissa, exponent_text = np.format_float_scientific(abs(x), unique=True, trim="-").split("e")
    digits = mantissa.replace(".", "")
    exponent = int(exponent_text)
    if exponent < -4 or exponent >= 6:
        head, tail = digits[0], digits[1:]
        body = head + ("." + tail if tail else "")
        return f"{sign}{body}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent >= 0:
        whole = digits[: exponent + 1].ljust(exponent + 1, "0")
        fraction = digits[exponent + 1 :]
        return sign + whole + ("." + fraction if fraction else "")
    return sign + "0." + "0" * (-exponent - 1) + digits


def json_float32(value: float | np.floating) -> float:
    """A float32 as the Python float of its shortest decimal, for readable JSON."""
    x = np.float32(value)
    if not np.isfinite(x):
        return float(x)
    return float(np.format_float_positional(x, unique=True, trim="-"))
