"""Two variants of one model in one pool (issue 16): the arena's loads on an H100 and an
A100 Deployment of the tutorial's model behind one router.

The samples' H100 variant (6.356 + 0.044 x batch ms, unit cost 100) and an A100 one
(7.0 + 0.06 x batch ms, unit cost 40: slower, but cheaper per request; its SLO batch is
33 against the H100's 60), each a Deployment whose pods serve the same model behind one
gateway that balances them by outstanding requests (adapter/sim/pool.py). 1-hour runs,
seed 1, 60 s start-ups, replicas 0..8 per variant, 128 prompt / 512 output tokens. The
A100 node has 8 GPUs (the A100 can carry every load alone) or 2 (it cannot). Policies:
- `ours`: one adapter splitting the model's load between its variants (adapter/variants.py);
- `alone`: each variant sized on its own for the pool's whole load (two adapters, or two
  per-Deployment recipes, that do not know of each other);
- `only:0` / `only:1`: ours on the H100 / A100 variant alone, the other at 0.

Usage: python bench/variants.py [--smoke] [--jobs N]
Writes bench/results/variants.md and variants.json (-smoke before the extension).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # the adapter; bench/machine.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from machine import cpu_model  # noqa: E402  (bench/machine.py)
from runs import run_parallel, write_results  # noqa: E402  (bench/runs.py)

from adapter.collect.local import load_snapshot  # noqa: E402
from adapter.defaults import DEFAULT_SAMPLES  # noqa: E402
from adapter.sim.policies import Limits  # noqa: E402
from adapter.sim.pool import PoolReport, h100_a100_pool, simulate_pool  # noqa: E402
from adapter.sim.traces import (  # noqa: E402
    RequestShape,
    Trace,
    diurnal_trace,
    noisy_trace,
    ramp_trace,
    step_trace,
)

SEED = 1
TRACES = ("ramp", "diurnal", "noisy", "step")
A100_GPUS = (8, 2)
POLICIES = ("ours", "alone", "only:0", "only:1")


def make_trace(name: str, duration: float) -> Trace:
    if name == "ramp":
        return ramp_trace(duration, 4.0, 32.0)
    if name == "diurnal":
        return diurnal_trace(duration)
    if name == "noisy":
        return noisy_trace(duration, SEED)
    return step_trace(duration)


def _run(args: tuple[str, int, float]) -> tuple[str, int, PoolReport]:
    """One trace and A100 inventory under every policy (a worker process)."""
    trace_name, gpus, duration = args
    logging.getLogger("adapter").setLevel(logging.ERROR)
    report = simulate_pool(
        h100_a100_pool(load_snapshot(DEFAULT_SAMPLES), gpus),
        make_trace(trace_name, duration),
        policies=POLICIES,
        seed=SEED,
        limits=Limits(0, 8),
        shape=RequestShape(128, 512),
    )
    return trace_name, gpus, report


def markdown(runs: list[tuple[str, int, PoolReport]], smoke: bool, wall_s: float) -> str:
    lines = [
        "# Two variants of one model (`bench/variants.py" + (" --smoke" if smoke else "") + "`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.python_implementation()}"
        f" {platform.python_version()}. {len(runs) * len(POLICIES)} simulations,"
        f" {wall_s:.0f} s wall.",
        "",
        "% of requests within the ITL (9 ms) and both SLOs, the cost (GPU-hours x unit"
        " cost, H100 100, A100 40), and per variant its GPU-hours, the % of the"
        " requests its pods served within the ITL SLO, and its scale-ups / scale-downs.",
        "",
        "| load | A100 GPUs | policy | ITL % | both % | cost | H100: GPU h (ITL %) ups/downs |"
        " A100: GPU h (ITL %) ups/downs |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for trace_name, gpus, report in runs:
        for r in report.policies:
            per = [
                f"{v.gpu_hours:.2f}"
                + (f" ({v.itl_attainment_pct:.1f})" if v.itl_attainment_pct is not None else "")
                + f" {v.scale_ups}/{v.scale_downs}"
                for v in r.variants
            ]
            lines.append(
                f"| {trace_name} | {gpus} | {r.policy} | {r.itl_attainment_pct:.2f} |"
                f" {r.slo_attainment_pct:.2f} | {r.cost:.1f} | {per[0]} | {per[1]} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 minutes, the ramp, 2 A100s")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    smoke: bool = args.smoke
    full = [(t, g, 3600.0) for t in TRACES for g in A100_GPUS]
    work = [("ramp", 2, 600.0)] if smoke else full
    runs, wall = run_parallel(_run, work, args.jobs)
    rows = [{"trace": t, "a100_gpus": g, **r.model_dump()} for t, g, r in runs]
    written = write_results("variants", smoke, markdown(runs, smoke, wall), rows)
    for trace_name, gpus, report in runs:
        for r in report.policies:
            print(
                f"{trace_name:8} {gpus} A100s {r.policy:7} ITL {r.itl_attainment_pct:6.2f} %"
                f" cost {r.cost:7.1f}"
            )
    print(f"wrote {written} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
