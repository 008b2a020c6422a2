"""Mis-profiled VariantAutoscalings over an hour: the pods run 30 % off the declared
profile, and this adapter learns it (issue 15).

Each 1-hour `simulate` run (the tutorial's VA and SLOs, 128 prompt / 512 output tokens,
replicas 1..16, 60 s start-up, seed 1) runs ours three ways on the same requests:
- `declared`: sizing with the VA's declared profile only (`--no-profile-learning`);
- `learning`: the default, learning the profile from the pods;
- `truth`: a VA that declares the pods' true profile: what learning should reach.
Profiles (alpha, beta as multiples of the declared 6.356 ms and 0.044 ms): both 1.3 x,
both 0.7 x, alpha 1.3 x, beta 1.3 x. Loads: the ramp, diurnal and noisy families (slow
load, where a reactive loop with the right profile holds its target).

Usage: python bench/misprofile.py [--smoke] [--jobs N]
Writes bench/results/misprofile.md and misprofile.json (-smoke before the extension).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
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
from adapter.defaults import DEFAULT_SAMPLES  # noqa: E402
from adapter.emulator.batching import ServingProfile  # noqa: E402
from adapter.model.kube import ClusterSnapshot  # noqa: E402
from adapter.sim.policies import Limits, SimSetup, setup_from_snapshot  # noqa: E402
from adapter.sim.simulate import simulate  # noqa: E402
from adapter.sim.traces import (  # noqa: E402
    RequestShape,
    Trace,
    diurnal_trace,
    noisy_trace,
    ramp_trace,
)

SEED = 1
TARGET = 99.0  # % of requests within the ITL SLO
# name -> (alpha factor, beta factor) of the pods against the declaration
PROFILES: dict[str, tuple[float, float]] = {
    "both 1.3x": (1.3, 1.3),
    "both 0.7x": (0.7, 0.7),
    "alpha 1.3x": (1.3, 1.0),
    "beta 1.3x": (1.0, 1.3),
}
TRACES = ("ramp", "diurnal", "noisy")
MODES = ("declared", "learning", "truth")


@dataclass(frozen=True)
class Result:
    profile: str
    trace: str
    mode: str
    itl_pct: float
    both_pct: float
    gpu_hours: float
    max_replicas: int


def make_trace(name: str, duration: float) -> Trace:
    if name == "ramp":
        return ramp_trace(duration)
    if name == "diurnal":
        return diurnal_trace(duration)
    return noisy_trace(duration, SEED)


def declaring(snapshot: ClusterSnapshot, alpha: float, beta: float) -> ClusterSnapshot:
    """The samples' cluster with its VA declaring (alpha, beta)."""
    vas = {key: copy.deepcopy(dict(obj)) for key, obj in snapshot.variant_autoscalings.items()}
    for obj in vas.values():
        for entry in obj["spec"]["modelProfile"]["accelerators"]:
            entry["alpha"], entry["beta"] = f"{alpha:.6g}", f"{beta:.6g}"
    return ClusterSnapshot(
        variant_autoscalings=vas,
        config_maps=snapshot.config_maps,
        nodes=snapshot.nodes,
        deployments=snapshot.deployments,
    )


def true_profile(setup: SimSetup, factors: tuple[float, float]) -> ServingProfile:
    declared = setup.profile
    return replace(
        declared, alpha_ms=declared.alpha_ms * factors[0], beta_ms=declared.beta_ms * factors[1]
    )


def _run(args: tuple[str, str, str, float]) -> Result:
    """One run (a worker process)."""
    profile, trace_name, mode, duration = args
    logging.getLogger("adapter").setLevel(logging.WARNING)
    snapshot = load_snapshot(DEFAULT_SAMPLES)
    truth = true_profile(setup_from_snapshot(snapshot), PROFILES[profile])
    if mode == "truth":
        snapshot = declaring(snapshot, truth.alpha_ms, truth.beta_ms)
    report = simulate(
        setup_from_snapshot(snapshot),
        make_trace(trace_name, duration),
        policies=["ours"],
        seed=SEED,
        limits=Limits(1, 16),
        shape=RequestShape(128, 512),
        true_profile=truth,
        profile_learning=mode != "declared",
    )
    ours = report.policies[0]
    return Result(
        profile,
        trace_name,
        mode,
        ours.itl_attainment_pct,
        ours.slo_attainment_pct,
        ours.gpu_hours,
        ours.max_replicas,
    )


def markdown(results: list[Result], smoke: bool, wall_s: float) -> str:
    lines = [
        "# Mis-profiled VAs (`bench/misprofile.py" + (" --smoke" if smoke else "") + "`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.python_implementation()}"
        f" {platform.python_version()}. {len(results)} simulations, {wall_s:.0f} s wall.",
        "",
        "% of requests within the ITL SLO (9 ms), and GPU hours, of ours sizing with the"
        " declared profile only, learning it (the default), and declaring the truth.",
        "",
        "| pods | load | declared | learning | truth | learning - truth |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    found = {(r.profile, r.trace, r.mode): r for r in results}
    for profile in PROFILES:
        for trace in TRACES:
            row = [found.get((profile, trace, mode)) for mode in MODES]
            if any(r is None for r in row):
                continue
            cells = [f"{r.itl_pct:.2f} % ({r.gpu_hours:.2f} h)" for r in row if r is not None]
            learning, truth = row[1], row[2]
            assert learning is not None and truth is not None
            gap = learning.itl_pct - truth.itl_pct
            lines.append(f"| {profile} | {trace} | {' | '.join(cells)} | {gap:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 minutes, one profile, ramp")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    smoke: bool = args.smoke
    profiles = ["both 1.3x"] if smoke else list(PROFILES)
    traces = ["ramp"] if smoke else list(TRACES)
    duration = 600.0 if smoke else 3600.0
    work = [(p, t, m, duration) for p in profiles for t in traces for m in MODES]
    results, wall = run_parallel(_run, work, args.jobs)
    rows = [asdict(r) for r in results]
    written = write_results("misprofile", smoke, markdown(results, smoke, wall), rows)
    for r in results:
        print(
            f"{r.profile:10} {r.trace:8} {r.mode:8} ITL {r.itl_pct:6.2f} %  {r.gpu_hours:.3f} GPU h"
        )
    print(f"wrote {written} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
