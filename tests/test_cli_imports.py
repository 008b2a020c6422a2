"""`wva-adapter` subcommands import only what they use.

Building the parser (`--help`, any subcommand's `--help`) needs the standard library
and `adapter.defaults`; `optimize` needs pydantic and numpy but none of the serving,
cluster or simulator stack. Each case runs in a fresh interpreter and reads
`sys.modules` at the end: not timed here (bench/startup.py times whole processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from typing import Any, get_args

import pytest

from adapter import defaults

# runs `main(argv)` as the console script does, then reports what was imported
PROBE = """
import contextlib, io, json, sys
from adapter.cli import main
shown = io.StringIO()
with contextlib.redirect_stdout(shown):
    try:
        status = main(sys.argv[1:], out=shown, err=io.StringIO())
    except SystemExit as exit:
        status = exit.code
print(json.dumps({"status": status, "output": shown.getvalue(), "modules": sorted(sys.modules)}))
"""

# never needed by the answers the user waits for at a terminal
SERVING = (
    "grpc",
    "kubernetes",
    "prometheus_client",
    "prometheus_api_client",
    "aiohttp",
    "requests",
    "yaml",
    "asyncio",
    "matplotlib",
    "adapter.engine",
    "adapter.collect",
    "adapter.scaler",
    "adapter.exporter",
    "adapter.status",
    "adapter.leader",
    "adapter.emulator",
    "adapter.loop",
    "adapter.sim.command",
    "adapter.sim.simulate",
    "adapter.sim.policies",
)
# the parser's defaults and choices come from adapter.defaults, not from these
PARSER_ONLY = (*SERVING, "pydantic", "numpy", "adapter.model", "adapter.optimizer")

TUTORIAL_STEP = resources.files("adapter") / "samples" / "tutorial-1-start.json"


def probe(*argv: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """Those of `names` that were imported (a package, or any module under it)."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["optimize", "--help"],
        ["demo", "--help"],
        ["simulate", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_only_the_parser(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["status"] == 0
    assert "usage: wva-adapter" in result["output"]
    heavy = loaded(result["modules"], PARSER_ONLY)
    assert not heavy, f"wva-adapter {' '.join(argv)} imported {heavy}"


@pytest.mark.parametrize(
    "argv",
    [
        ["optimize", "--system", str(TUTORIAL_STEP)],
        ["optimize", "--system", str(TUTORIAL_STEP), "--format", "log"],
        ["demo", "--optimizer-only"],
    ],
    ids=["optimize", "optimize --format log", "demo --optimizer-only"],
)
def test_optimize_imports_no_serving_stack(argv: list[str]) -> None:
    result = probe(*argv)
    assert result["status"] == 0
    assert "H100" in result["output"]  # the tutorial's accelerator: it ran
    heavy = loaded(result["modules"], SERVING)
    assert not heavy, f"wva-adapter {' '.join(argv)} imported {heavy}"
    # what it does need, so that this test notices when the probe stops working
    assert loaded(result["modules"], ("pydantic", "numpy", "adapter.optimizer")) != []


def test_the_parser_shows_the_values_the_modules_use() -> None:
    """adapter.defaults is the one definition; the modules that own the values use it."""
    from adapter.collect import local
    from adapter.model import kube, system
    from adapter.sim import policies

    assert system.SATURATION_POLICIES == defaults.SATURATION_POLICIES
    assert get_args(system.SaturationPolicy) == defaults.SATURATION_POLICIES
    assert kube.DEFAULT_CONFIG_NAMESPACE == defaults.DEFAULT_CONFIG_NAMESPACE
    assert local.DEFAULT_SAMPLES == defaults.DEFAULT_SAMPLES
    assert policies.POLICIES == defaults.SIM_POLICIES
