"""Scale to zero and from zero in `simulate` (issue 16): what it saves, what a wake costs.

Each 2-hour `simulate` run (the tutorial's VA and SLOs, 128 prompt / 512 output tokens,
replicas up to 8, seed 1, the default retention, 300 s) runs ours from zero
(`--min-replicas 0`: the gateway is an llm-d router with flow control and the waker
polls it every 0.25 s) and, on the same requests, held at one replica (`--min-replicas
1`). Traces with idle gaps:
- `gaps`: idle 10 min, 8 req/s for 15 min, 16 for 10, 8 for 10, idle 30 min, 8 for 15,
  idle 30 min;
- `office`: idle 20 min, 8 req/s for 15 min, idle 35, 16 for 10, idle 20, 8 for 10,
  idle 10;
- `lulls`: idle 5 min, then six 5-minute bursts at 8 req/s with lulls of 2, 4, 6, 8 and
  12 min between them, idle 53 min.
Start-ups of 10, 30 and 60 s; the pods' vLLM `--max-num-seqs` either the VA's
maxBatchSize (512) or the SLO batch (60: the largest batch whose step, 6.356 + 0.044 x
batch ms, is within the 9 ms ITL SLO). A second table sweeps the retention
(`--scale-to-zero-after`) at a 30 s start-up and the SLO batch: the idle time it keeps a
replica for against the cold starts it saves.

Usage: python bench/from_zero.py [--smoke] [--jobs N]
Writes bench/results/from-zero.md and from-zero.json (-smoke before the extension).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # the adapter; bench/machine.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from machine import cpu_model  # noqa: E402  (bench/machine.py)
from runs import run_parallel, write_results  # noqa: E402  (bench/runs.py)

from adapter.collect.local import load_snapshot  # noqa: E402
from adapter.defaults import DEFAULT_RETENTION_S, DEFAULT_SAMPLES  # noqa: E402
from adapter.sim.policies import Limits, setup_from_snapshot  # noqa: E402
from adapter.sim.simulate import simulate_from_zero  # noqa: E402
from adapter.sim.traces import RequestShape, Trace, csv_trace  # noqa: E402

SEED = 1
TRACES = {
    "gaps": "0,0\n600,8\n1500,16\n2100,8\n2700,0\n4500,8\n5400,0\n7200,0\n",
    "office": "0,0\n1200,8\n2100,0\n4200,16\n4800,0\n6000,8\n6600,0\n7200,0\n",
    "lulls": "0,0\n300,8\n600,0\n720,8\n1020,0\n1260,8\n1560,0\n1920,8\n2220,0\n2700,8"
    "\n3000,0\n3720,8\n4020,0\n7200,0\n",
}
STARTUPS = (10.0, 30.0, 60.0)
BATCHES = {"VA's 512": 512, "SLO batch 60": 60}
RETENTIONS = (60.0, 120.0, 300.0, 600.0, 1200.0)
SWEEP_STARTUP, SWEEP_BATCH = 30.0, "SLO batch 60"


@dataclass(frozen=True)
class Result:
    trace: str
    startup_s: float
    batch: str
    retention_s: float
    itl_pct: float
    ttft_pct: float
    lost: int  # refused, killed, or unfinished at the end
    held: int
    held_itl_pct: float | None
    wake_ups: int
    wake_median_s: float | None
    wake_max_s: float | None
    gpu_hours: float
    gpu_hours_at_1: float  # the same run held at one replica (min replicas 1)
    itl_pct_at_1: float

    @property
    def ratio(self) -> float:
        return self.gpu_hours / self.gpu_hours_at_1


def trace(name: str, smoke: bool) -> Trace:
    made = csv_trace(TRACES[name], name)
    if smoke:
        return csv_trace(TRACES[name], name, duration_s=2700.0)
    return made


def _run(args: tuple[str, float, str, float, bool]) -> Result:
    """One configuration, from zero and held at one replica (a worker process)."""
    name, startup, batch, retention, smoke = args
    logging.getLogger("adapter").setLevel(logging.ERROR)
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))
    pods = replace(setup.profile, max_batch_size=BATCHES[batch])
    report = simulate_from_zero(
        setup,
        trace(name, smoke),
        policies=["ours"],
        seed=SEED,
        startup_delay_s=startup,
        limits=Limits(0, 8),
        shape=RequestShape(128, 512),
        true_profile=pods,
        scale_to_zero_after_s=retention,
    )
    assert report.held_at_one is not None
    (zero,), (one,) = report.policies, report.held_at_one
    wakes = sorted(zero.wake_ups_s)
    return Result(
        trace=name,
        startup_s=startup,
        batch=batch,
        retention_s=retention,
        itl_pct=zero.itl_attainment_pct,
        ttft_pct=zero.ttft_attainment_pct,
        lost=zero.rejected + zero.killed + zero.unfinished,
        held=zero.held,
        held_itl_pct=zero.held_itl_attainment_pct,
        wake_ups=len(wakes),
        wake_median_s=statistics.median(wakes) if wakes else None,
        wake_max_s=wakes[-1] if wakes else None,
        gpu_hours=zero.gpu_hours,
        gpu_hours_at_1=one.gpu_hours,
        itl_pct_at_1=one.itl_attainment_pct,
    )


def _s(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def markdown(results: list[Result], smoke: bool, wall_s: float) -> str:
    default = [r for r in results if r.retention_s == DEFAULT_RETENTION_S]
    sweep = [r for r in results if (r.startup_s, r.batch) == (SWEEP_STARTUP, SWEEP_BATCH)]
    lines = [
        "# From zero (`bench/from_zero.py" + (" --smoke" if smoke else "") + "`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.python_implementation()}"
        f" {platform.python_version()}. {2 * len(results)} simulations, {wall_s:.0f} s wall.",
        "",
        f"Ours from zero (min replicas 0, the default {DEFAULT_RETENTION_S:g} s retention)"
        " against the same run held at one replica: % of requests within the ITL (9 ms)"
        " and TTFT (1 s) SLOs, requests lost, requests the gateway held and the % of those"
        " within the ITL SLO, the wake-ups (first held request to its first token, median /"
        " max s), GPU hours and their ratio.",
        "",
        "| trace | start-up | pods' max batch | ITL % | TTFT % | lost | held (ITL %) |"
        " wake-ups: first token, s | GPU h | at 1: GPU h (ITL %) | ratio |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in default:
        held = f"{r.held} ({_s(r.held_itl_pct)})"
        wakes = f"{r.wake_ups}: {_s(r.wake_median_s)} / {_s(r.wake_max_s)}"
        lines.append(
            f"| {r.trace} | {r.startup_s:g} s | {r.batch} | {r.itl_pct:.2f} | {r.ttft_pct:.2f}"
            f" | {r.lost} | {held} | {wakes} | {r.gpu_hours:.3f} |"
            f" {r.gpu_hours_at_1:.3f} ({r.itl_pct_at_1:.2f}) | {r.ratio:.2f} |"
        )
    lines += [
        "",
        f"The retention (`--scale-to-zero-after`), at a {SWEEP_STARTUP:g} s start-up and"
        f" the {SWEEP_BATCH}: a shorter one parks the variant sooner in every gap and"
        " wakes it more often (each wake-up's first requests wait a start-up).",
        "",
        "| trace | retention | wake-ups | ITL % | TTFT % | lost | GPU h | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(sweep, key=lambda r: (r.trace, r.retention_s)):
        lines.append(
            f"| {r.trace} | {r.retention_s:g} s | {r.wake_ups} | {r.itl_pct:.2f} |"
            f" {r.ttft_pct:.2f} | {r.lost} | {r.gpu_hours:.3f} | {r.ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="45 minutes, one configuration")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    smoke: bool = args.smoke
    if smoke:
        work = [("gaps", SWEEP_STARTUP, SWEEP_BATCH, DEFAULT_RETENTION_S, True)]
    else:
        work = [
            (t, s, b, DEFAULT_RETENTION_S, False) for t in TRACES for s in STARTUPS for b in BATCHES
        ]
        work += [
            (t, SWEEP_STARTUP, SWEEP_BATCH, r, False)
            for t in TRACES
            for r in RETENTIONS
            if r != DEFAULT_RETENTION_S
        ]
    results, wall = run_parallel(_run, work, args.jobs)
    rows = [asdict(r) | {"ratio": r.ratio} for r in results]
    written = write_results("from-zero", smoke, markdown(results, smoke, wall), rows)
    for r in results:
        print(
            f"{r.trace:7} {r.startup_s:4.0f} s {r.batch:13} retention {r.retention_s:5.0f} s"
            f" ITL {r.itl_pct:6.2f} % TTFT {r.ttft_pct:6.2f} % lost {r.lost}"
            f" GPU h {r.gpu_hours:.3f} / {r.gpu_hours_at_1:.3f} = {r.ratio:.2f}"
        )
    print(f"wrote {written} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
