"""Start-up benchmark: `wva-adapter` commands timed as whole processes.

Times, from process start to exit:
- `wva-adapter --help`: the parser alone (no subcommand's modules should load);
- `wva-adapter optimize --system FILE`: bench/optimizer.py's problem of 1000 servers x 4
  accelerators (the same generator and seed), written to a temporary file; imports,
  parsing, a cold optimization and the JSON output;
- `python -c pass`: the interpreter's own start-up, the floor under both.
Each command runs once untimed first (its output checked, files cached), then `--repeat`
times; the median and the range are reported. Full mode exits non-zero when a median
misses its target (this 2-core VM); `--smoke` (CI) runs twice and only reports.

Usage: python bench/startup.py [--smoke] [--repeat 9] [--servers 1000]
Writes bench/results/startup.json (startup-smoke.json with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model  # bench/machine.py
from optimizer import make_system  # bench/optimizer.py: the same problem

TARGETS_S = {"help": 0.35, "optimize": 1.0}  # medians, whole processes, this 2-core VM


def _wva_adapter() -> list[str]:
    """The installed console script, as a user runs it (else `python -m adapter.cli`)."""
    script = Path(sys.executable).parent / "wva-adapter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "adapter.cli"]


def _check_optimize(stdout: str, servers: int) -> None:
    solved = json.loads(stdout)["servers"]
    allocated = sum(1 for s in solved.values() if s["accelerator"])
    if len(solved) != servers or allocated != servers:
        raise SystemExit(f"optimize: {len(solved)} servers, {allocated} allocated of {servers}")


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(command: list[str], repeat: int) -> dict[str, Any]:
    times = [_timed(command) for _ in range(repeat)]
    return {
        "runs": repeat,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "times_s": [round(t, 3) for t in times],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI mode: 2 runs, report only")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--servers", type=int, default=1000)
    args = parser.parse_args()
    repeat = 2 if args.smoke else args.repeat
    wva = _wva_adapter()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        system = Path(tmp) / "system.json"
        system.write_text(json.dumps(make_system(args.servers, seed=args.servers)))
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [*wva, "--help"],
            "optimize": [*wva, "optimize", "--system", str(system)],
        }
        first = subprocess.run(commands["optimize"], check=True, capture_output=True, text=True)
        _check_optimize(first.stdout, args.servers)
        subprocess.run(commands["help"], check=True, capture_output=True)
        results = {name: measure(command, repeat) for name, command in commands.items()}
    result = {
        "benchmark": "startup",
        "smoke": args.smoke,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": cpu_model(),
            "python": platform.python_version(),
            "load_average_at_start": round(load_at_start, 2),  # others busy on this machine?
        },
        "command": "wva-adapter" if len(wva) == 1 else "python -m adapter.cli",
        "servers": args.servers,
        "candidates": args.servers * 4,
        "statistic": "median and range of whole-process wall times",
        "targets_median_s": TARGETS_S,
        "results": results,
    }
    print(
        f"machine: {result['machine']['cpus']} CPUs, {result['machine']['processor']}, "
        f"Python {result['machine']['python']}, load average at start {load_at_start:.2f}"
    )
    missed = []
    for name, row in results.items():
        target = TARGETS_S.get(name)
        verdict = ""
        if target is not None:
            verdict = f"  target <= {target} s: " + (
                "ok" if row["median_s"] <= target else "MISSED"
            )
            if row["median_s"] > target:
                missed.append(name)
        print(
            f"{name:>9}: median {row['median_s']:.3f} s (range {row['min_s']:.3f}-"
            f"{row['max_s']:.3f}, {row['runs']} runs){verdict}"
        )
    out = (
        Path(__file__).parent / "results" / ("startup-smoke.json" if args.smoke else "startup.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if missed and not args.smoke:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
