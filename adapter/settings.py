"""Settings of `wva-adapter run` from the environment, and the checks of their values.

Every `run` flag can also come from an environment variable named after it:
`WVA_` + the long flag in upper snake case (`--grpc-port` -> `WVA_GRPC_PORT`,
`--leader-election` -> `WVA_LEADER_ELECTION=true`). A flag given on the command line
wins over its variable. The variables are read from the flags the parser declares, so
a new flag gets its variable without any change here.

Values are converted like the flag's (numbers, choices); on/off flags take
true/false, 1/0, yes/no, on/off; repeatable or multi-value flags (`--namespace`,
`--scrape`) take a list separated by commas or spaces. An empty variable counts as
unset. A variable that cannot be used is an error naming it, even when the flag is
also given: a broken environment is reported, never silently ignored.

`check_run_values` then checks the numbers, wherever they came from (interval,
staleness, sync timeout > 0; grace period >= 0; ports 0..65535; min replicas >= 0;
cycles and gRPC workers >= 1).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "WVA_"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_LIST_SEPARATORS = re.compile(r"[,\s]+")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag or the variable."""


def env_name(action: argparse.Action) -> str | None:
    """`WVA_<LONG_FLAG>` for an optional argument (None for positionals and --help)."""
    longs = [o for o in action.option_strings if o.startswith("--")]
    if not longs or isinstance(action, argparse._HelpAction):
        return None
    return ENV_PREFIX + longs[0][2:].upper().replace("-", "_")


def _flag(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.dest


def _is_switch(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def _is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")


def env_variables(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """(variable, action) for every flag of `parser` that has a variable, in flag order."""
    found = []
    for action in parser._actions:
        name = env_name(action)
        if name is not None:
            found.append((name, action))
    return found


def _convert(name: str, text: str, action: argparse.Action) -> Any:
    """The value `text` gives the flag, or SettingsError naming the variable."""
    shown = f"{name}={text!r}"
    if _is_switch(action):
        word = text.strip().lower()
        if word in _TRUE:
            return action.const
        if word in _FALSE:
            return action.default
        raise SettingsError(f"{shown}: expected true or false (also 1/0, yes/no, on/off)")
    if _is_list(action):
        items = [item for item in _LIST_SEPARATORS.split(text.strip()) if item]
        return [_scalar(shown, item, action) for item in items]
    return _scalar(shown, text.strip(), action)


def _scalar(shown: str, text: str, action: argparse.Action) -> Any:
    convert: Callable[[str], Any] | None = action.type  # type: ignore[assignment]
    value: Any = text
    if convert is int:
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(f"{shown}: expected a whole number") from None
    elif convert is float:
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{shown}: expected a number") from None
    elif convert is not None:
        try:
            value = convert(text)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{shown}: {error}") from None
    if action.choices is not None and value not in action.choices:
        known = ", ".join(str(c) for c in action.choices)
        raise SettingsError(f"{shown}: expected one of {known}")
    return value


def env_defaults(
    parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> dict[str, tuple[str, Any]]:
    """dest -> (variable, value) for every set `WVA_` variable of `parser`'s flags.

    Raises SettingsError for the first variable (in flag order) that cannot be used,
    including a value that `check_run_values` would refuse.
    """
    found: dict[str, tuple[str, Any]] = {}
    for name, action in env_variables(parser):
        text = environ.get(name)
        if text is None or not text.strip():
            continue
        value = _convert(name, text, action)
        _check_one(action.dest, value, f"{name}={text!r}")
        found[action.dest] = (name, value)
    return found


@dataclass(frozen=True, slots=True)
class Limit:
    """A numeric check: `accepts(value)` or the message `must ...`."""

    accepts: Callable[[float], bool]
    message: str


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _port(value: float) -> bool:
    return 0 <= value <= 65535


# dest of a `run` flag -> its check (None values mean "not given" and are not checked)
RUN_LIMITS: dict[str, Limit] = {
    "interval": Limit(_positive, "must be a finite number of seconds > 0"),
    "staleness": Limit(_positive, "must be a finite number of seconds > 0"),
    "sync_timeout": Limit(_positive, "must be a finite number of seconds > 0"),
    "grace_period": Limit(_non_negative, "must be a finite number of seconds >= 0"),
    "scrape_window": Limit(_non_negative, "must be a finite number of seconds >= 0"),
    "cycles": Limit(lambda v: v >= 1, "must be >= 1"),
    "grpc_workers": Limit(lambda v: v >= 1, "must be >= 1"),
    "min_replicas": Limit(_non_negative, "must be >= 0 (0 allows scale to zero)"),
    "grpc_port": Limit(_port, "must be a port number 0..65535 (0: any free port)"),
    "metrics_port": Limit(_port, "must be a port number 0..65535 (0: any free port)"),
}


def _check_one(dest: str, value: Any, shown: str) -> None:
    limit = RUN_LIMITS.get(dest)
    if limit is None or value is None:
        return
    if not limit.accepts(value):
        raise SettingsError(f"{shown}: {limit.message}")


def check_run_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the numeric `run` settings; the message names the flag.

    Values from the environment were checked by `env_defaults` (naming the variable),
    so a value refused here came from the command line.
    """
    for action in parser._actions:
        if action.dest in RUN_LIMITS:
            value = getattr(args, action.dest, None)
            _check_one(action.dest, value, f"{_flag(action)}={value!r}")


def env_epilog(parser: argparse.ArgumentParser) -> str:
    """The `--help` epilog: every variable and its flag."""
    lines = [
        "environment:",
        "  Every flag can also be set by an environment variable WVA_<FLAG> (the long flag",
        "  in upper snake case); a flag on the command line wins over its variable.",
        "  On/off flags take true/false (1/0, yes/no, on/off); --namespace and --scrape take",
        "  a list separated by commas or spaces; an empty variable counts as unset. An",
        "  invalid variable exits with status 2 and a message naming it.",
        "",
    ]
    variables = env_variables(parser)
    width = max((len(name) for name, _ in variables), default=0)
    lines += [f"  {name:<{width}}  {_flag(action)}" for name, action in variables]
    return "\n".join(lines)
