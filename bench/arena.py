"""The arena: every policy and each one's main knob, on every trace family, against the
clairvoyant GPU-hour floor.

Each run is `wva-adapter simulate`'s: the same seeded requests for every policy, the
same simulated cluster (pods start in 60 s, leave like real pods), the same KEDA/HPA
simulator, the tutorial's VA and ConfigMaps (deploy/samples), 128 prompt / 512 output
tokens, replicas 1..8. A policy label is `name` or `name@knob`:

- `ours@share`: this adapter sizing for that share of requests within both SLOs
  (default 0.99); `ours+H%`: sizing for the measured arrival rate x (1 + H/100), its
  `--headroom` (default 0): capacity bought ahead of a sudden change, for GPU hours;
  `ours+ahead`: sizing for the rate forecast a learned start-up ahead (`--look-ahead`);
- `llmd-saturation@running`: llm-d's KEDA recipe on the EPP's pool saturation and
  running requests (the running requests per replica target, default 16: the trigger
  that sizes on these loads; the saturation target stays 0.7);
- `llmd-slo@up`: llm-d's SLO-aware KEDA recipe (its scale-up threshold on P90
  TTFT/TPOT over their SLOs, default 0.55);
- `wva-saturation@up`: WVA v0.9's default saturation analyzer (its scale-up
  threshold on KV demand over capacity, default 0.85);
- `keda-queue@target`: vLLM production-stack's queue-length trigger (waiting
  requests per replica, default 5);
- `wva-tutorial`: the tutorial-era WVA (the reference optimizer, mean rule, every 60 s);
- `clairvoyant@share`: the floor: the fewest replicas that hold the share at every
  moment's rate, each ready exactly when needed (adapter/sim/clairvoyant.py);
- `causal-floor+H%`: the floor of policies that react to load rather than anticipate
  it: the clairvoyant's schedule, but no replica starts before the climb that needs it
  began (it sees that climb's course perfectly from its first moment). A reference,
  not a peer: it is in no verdict's comparison but its own.

Attainment is the share of requests within both SLOs (ITL 9 ms, TTFT 1 s); requests
refused, killed or retried count as misses. GPU hours count pods from creation.

Verdicts (issue 14):
1. on every trace, no peer configuration dominates ours' default (higher attainment
   and fewer GPU hours at once);
2. of all configurations at >= 99 % attainment, ours' are the closest to the floor
   (on sudden changes only capacity provisioned ahead holds 99 %: ours' headroom
   against the peers' knobs);
3. on slowly varying load (ramp, diurnal, noisy), ours' default keeps >= 99 % within
   the ITL SLO and >= 99 % within the TTFT SLO at <= 1.10 x the floor's GPU hours; the
   same check on the changes a forecast can see coming (flash crowds that climb over
   1-5 minutes, an accelerating ramp: issue 15's target, look-ahead's work);
4. sudden changes (step, step-saturating, bursty) are reported with the numbers: no
   reactive policy can serve a step's first start-up plus one cycle;
5. on sudden and foreseeable changes, what reacting costs: ours' cheapest configuration
   at >= 99 % is within 1.10 x the GPU hours of the causal floor's cheapest (or the
   causal floor holds it in none). The restated target of issue 15 where verdict 3 asks
   what no reactive policy can give: on flash crowds the causal floor itself, reacting
   perfectly at each climb's first moment, misses 99 % without headroom.

Usage: python bench/arena.py [--smoke] [--seed 1] [--traces a,b] [--jobs N]
Writes bench/results/arena.md, arena.json and arena-<trace>.png (-smoke and -seedN
before the extension with --smoke and a seed other than 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # the adapter; bench/machine.py, also when imported
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from machine import cpu_model  # noqa: E402  (bench/machine.py)

from adapter.collect.local import load_snapshot  # noqa: E402
from adapter.defaults import DEFAULT_SAMPLES  # noqa: E402
from adapter.sim.clairvoyant import CapacityTable, SteadyState  # noqa: E402
from adapter.sim.policies import Limits, parse_label, setup_from_snapshot  # noqa: E402
from adapter.sim.simulate import PolicyResult, simulate  # noqa: E402
from adapter.sim.traces import (  # noqa: E402
    RequestShape,
    Trace,
    accelerating_trace,
    bursty_trace,
    diurnal_trace,
    flash_trace,
    noisy_trace,
    ramp_trace,
    saturating_step_trace,
    step_trace,
)

STARTUP_S = 60.0
TARGET = 99.0  # % of requests within both SLOs
FLOOR_RATIO = 1.10
SLOW = ("ramp", "diurnal", "noisy")
# changes over a minute or more, which a forecast can see coming (issue 15's target: the
# slow-load check applies to them too)
FORESEEABLE = ("flash", "accelerating")
# not policies one runs: floors every policy is measured against
REFERENCES = ("clairvoyant", "causal-floor")
SUDDEN = ("step", "step-saturating", "bursty")

# trace -> (factory(duration, seed), full seconds, smoke seconds)
TRACES: dict[str, tuple[Callable[[float, int], Trace], float, float]] = {
    "step": (lambda d, _s: step_trace(d), 3600.0, 1200.0),
    "step-saturating": (lambda d, _s: saturating_step_trace(d), 3600.0, 1200.0),
    "ramp": (lambda d, _s: ramp_trace(d), 3600.0, 1200.0),
    "diurnal": (lambda d, _s: diurnal_trace(d), 7200.0, 1800.0),
    "bursty": (lambda d, s: bursty_trace(d, s), 3600.0, 1200.0),
    "noisy": (lambda d, s: noisy_trace(d, s), 7200.0, 1800.0),
    "flash": (lambda d, s: flash_trace(d, s), 7200.0, 1800.0),
    "accelerating": (lambda d, _s: accelerating_trace(d), 3600.0, 1200.0),
}

# each policy's configurations (labels, `adapter.sim.policies.parse_label`): the first
# is its default. Ours: the share it sizes for, and the headroom it sizes with (the
# arrival rate x (1 + H %)), which buys a start-up's worth of sudden growth in advance
SWEEPS: dict[str, tuple[str, ...]] = {
    "ours": (
        "ours",
        "ours@0.95",
        "ours@0.98",
        "ours@0.995",
        "ours@0.999",
        "ours+10%",
        "ours+20%",
        "ours+50%",
        "ours+100%",
        "ours+200%",
        "ours+300%",
        "ours+ahead",
        "ours+ahead+10%",
        "ours+ahead+20%",
        "ours+ahead+50%",
    ),
    "llmd-saturation": tuple(f"llmd-saturation@{k:g}" for k in (16, 4, 8, 12, 24)),
    "llmd-slo": tuple(f"llmd-slo@{k:g}" for k in (0.55, 0.8, 1.0, 1.1, 1.3)),
    "wva-saturation": tuple(f"wva-saturation@{k:g}" for k in (0.85, 0.5, 0.3, 0.2, 0.1)),
    "keda-queue": tuple(f"keda-queue@{k:g}" for k in (5, 1, 2, 10)),
    "wva-tutorial": ("wva-tutorial",),
    "clairvoyant": ("clairvoyant",),
    "causal-floor": (
        "causal-floor",
        *(f"causal-floor+{h}%" for h in (10, 20, 30, 50, 100, 200, 300)),
    ),
}
SMOKE_SWEEPS: dict[str, tuple[str, ...]] = {
    "ours": ("ours", "ours@0.95", "ours+20%", "ours+ahead"),
    "llmd-saturation": ("llmd-saturation",),
    "llmd-slo": ("llmd-slo",),
    "wva-saturation": ("wva-saturation",),
    "keda-queue": ("keda-queue",),
    "wva-tutorial": ("wva-tutorial",),
    "clairvoyant": ("clairvoyant",),
    "causal-floor": ("causal-floor",),
}
SMOKE_TRACES = ("step", "ramp", "noisy")


@dataclass(frozen=True)
class Run:
    trace: str
    label: str
    policy: str
    knob: float | None
    headroom: float  # ours: sized for the rate x (1 + headroom)
    ahead: bool  # ours: sized for the rate forecast a start-up ahead
    requests: int
    itl_pct: float
    ttft_pct: float
    both_pct: float
    gpu_hours: float
    max_replicas: int
    killed: int
    retried: int
    wall_s: float


def _run_trace(args: tuple[str, float, int, Sequence[str]]) -> list[Run]:
    """Every label on one trace (a worker process: one trace each)."""
    name, duration, seed, labels = args
    logging.getLogger("adapter").setLevel(logging.WARNING)
    factory = TRACES[name][0]
    trace = factory(duration, seed)
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))
    runs: list[Run] = []
    for each in labels:
        started = time.monotonic()
        report = simulate(
            setup,
            trace,
            policies=[each],
            seed=seed,
            startup_delay_s=STARTUP_S,
            limits=Limits(1, 8),
            shape=RequestShape(128, 512),
        )
        result = report.policies[0]
        runs.append(_run(name, each, report.requests, result, time.monotonic() - started))
    return runs


def _run(trace: str, each: str, requests: int, r: PolicyResult, wall: float) -> Run:
    policy, knob, headroom, ahead = parse_label(each)
    return Run(
        trace=trace,
        label=each,
        policy=policy,
        knob=knob,
        headroom=headroom,
        ahead=ahead,
        requests=requests,
        itl_pct=r.itl_attainment_pct,
        ttft_pct=r.ttft_attainment_pct,
        both_pct=r.slo_attainment_pct,
        gpu_hours=r.gpu_hours,
        max_replicas=r.max_replicas,
        killed=r.killed,
        retried=r.retried,
        wall_s=wall,
    )


def _measure_the_floor(names: Sequence[str], smoke: bool, seed: int) -> None:
    """Measure the clairvoyant's capacities here, once, for the busiest trace: the
    worker processes are forked from this one and find them in its cache (each would
    otherwise measure them again)."""
    setup = setup_from_snapshot(load_snapshot(DEFAULT_SAMPLES))
    state = SteadyState(
        setup.profile, RequestShape(128, 512), setup.slo_itl_ms, setup.slo_ttft_ms, 0.99
    )
    table = CapacityTable(state, 8)
    for name in names:
        factory, full, short = TRACES[name]
        trace = factory(short if smoke else full, seed)
        table.replicas_needed(trace.peak, 1)


# ------------------------------------------------------------------------- verdicts


def default_label(policy: str, sweeps: dict[str, tuple[str, ...]]) -> str:
    return sweeps[policy][0]


@dataclass(frozen=True)
class Verdict:
    trace: str
    check: str
    ok: bool
    detail: str


def judge(runs: list[Run], sweeps: dict[str, tuple[str, ...]]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for trace in dict.fromkeys(r.trace for r in runs):
        here = [r for r in runs if r.trace == trace]
        ours = next(r for r in here if r.label == default_label("ours", sweeps))
        floor = next(r for r in here if r.policy == "clairvoyant")
        peers = [r for r in here if r.policy not in ("ours", *REFERENCES)]
        dominating = [
            r for r in peers if r.both_pct > ours.both_pct and r.gpu_hours < ours.gpu_hours
        ]
        verdicts.append(
            Verdict(
                trace,
                "no peer dominates",
                not dominating,
                "none"
                if not dominating
                else ", ".join(
                    f"{r.label} ({r.both_pct:.2f} %, {r.gpu_hours:.3f} GPU h)" for r in dominating
                ),
            )
        )
        holding = [r for r in here if r.policy not in REFERENCES and r.both_pct >= TARGET]
        best = min(holding, key=lambda r: r.gpu_hours, default=None)
        verdicts.append(
            Verdict(
                trace,
                f"closest to the floor at >= {TARGET:g} %",
                best is not None and best.policy == "ours",
                "no configuration holds it"
                if best is None
                else f"{best.label}: {best.gpu_hours:.3f} GPU h,"
                f" {best.gpu_hours / floor.gpu_hours:.3f} x the floor",
            )
        )
        ratio = ours.gpu_hours / floor.gpu_hours
        if trace in SLOW + FORESEEABLE:
            ok = ours.itl_pct >= TARGET and ours.ttft_pct >= TARGET and ratio <= FLOOR_RATIO
            kind = "slow load" if trace in SLOW else "foreseeable change (issue 15)"
            verdicts.append(
                Verdict(
                    trace,
                    f"{kind}: >= {TARGET:g} % ITL and TTFT at <= {FLOOR_RATIO:g} x floor",
                    ok,
                    f"ITL {ours.itl_pct:.2f} %, TTFT {ours.ttft_pct:.2f} %,"
                    f" {ratio:.3f} x the floor ({ours.gpu_hours:.3f} vs {floor.gpu_hours:.3f})",
                )
            )
        if trace not in SLOW:
            verdicts.append(_reacting(trace, here, floor))
        if trace not in SLOW + FORESEEABLE:
            verdicts.append(
                Verdict(
                    trace,
                    "sudden change (reported)",
                    True,
                    f"ours {ours.both_pct:.2f} % at {ratio:.3f} x the floor; the floor's own"
                    f" {floor.both_pct:.2f} %",
                )
            )
    return verdicts


def _reacting(trace: str, here: list[Run], floor: Run) -> Verdict:
    """What reacting costs (verdict 5): ours' cheapest at >= 99 % against the causal
    floor's."""

    def cheapest(policy: str) -> Run | None:
        holding = [r for r in here if r.policy == policy and r.both_pct >= TARGET]
        return min(holding, key=lambda r: r.gpu_hours, default=None)

    causal, ours = cheapest("causal-floor"), cheapest("ours")
    causal_text = (
        "the causal floor holds it in no configuration"
        if causal is None
        else f"the causal floor needs {causal.label}: {causal.gpu_hours / floor.gpu_hours:.3f} x"
        " the floor"
    )
    ours_text = (
        "ours in none"
        if ours is None
        else f"ours {ours.label}: {ours.gpu_hours / floor.gpu_hours:.3f} x the floor"
        + ("" if causal is None else f", {ours.gpu_hours / causal.gpu_hours:.3f} x the causal")
    )
    ok = ours is not None and (causal is None or ours.gpu_hours <= FLOOR_RATIO * causal.gpu_hours)
    return Verdict(
        trace,
        f"reacting: ours' cheapest at >= {TARGET:g} % within {FLOOR_RATIO:g} x the causal floor's",
        ok,
        f"{causal_text}; {ours_text}",
    )


# ------------------------------------------------------------------------- outputs


def markdown(
    runs: list[Run], verdicts: list[Verdict], smoke: bool, seed: int, wall_s: float
) -> str:
    lines = [
        "# The arena (`bench/arena.py" + (" --smoke" if smoke else "") + "`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.python_implementation()}"
        f" {platform.python_version()}. {len(runs)} simulations, {wall_s:.0f} s wall.",
        "",
        f"Seed {seed}; start-up {STARTUP_S:g} s; replicas 1..8; the tutorial's variant"
        " (H100, SLO ITL 9 ms, TTFT 1 s). Attainment: % of requests within both SLOs.",
        "",
        "## Verdicts",
        "",
        "| trace | check | | detail |",
        "| --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(f"| {v.trace} | {v.check} | {'PASS' if v.ok else 'FAIL'} | {v.detail} |")
    for trace in dict.fromkeys(r.trace for r in runs):
        here = sorted((r for r in runs if r.trace == trace), key=lambda r: r.gpu_hours)
        floor = next(r for r in here if r.policy == "clairvoyant")
        lines += [
            "",
            f"## {trace}",
            "",
            f"![{trace}: attainment against GPU hours](arena-{trace}.png)",
            "",
            "| policy | both % | ITL % | TTFT % | GPU h | x floor | max | killed | retried |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in here:
            lines.append(
                f"| {r.label} | {r.both_pct:.2f} | {r.itl_pct:.2f} | {r.ttft_pct:.2f} |"
                f" {r.gpu_hours:.3f} | {r.gpu_hours / floor.gpu_hours:.3f} | {r.max_replicas} |"
                f" {r.killed} | {r.retried} |"
            )
    return "\n".join(lines) + "\n"


COLORS = {
    "ours": "tab:blue",
    "llmd-saturation": "tab:red",
    "llmd-slo": "tab:purple",
    "wva-saturation": "tab:brown",
    "keda-queue": "tab:green",
    "wva-tutorial": "tab:orange",
    "clairvoyant": "black",
    "causal-floor": "0.5",
}


def _series(r: Run) -> str:
    """A line in the plot: a policy's knob sweep; ours' headroom sweeps are lines of their
    own, with and without look-ahead."""
    if r.ahead:
        return f"{r.policy} +ahead"
    return f"{r.policy} +headroom" if r.headroom > 0 else r.policy


def plot(runs: list[Run], trace: str, path: Path) -> None:
    """Attainment against GPU hours: each policy's sweep as a line, the floor a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    here = [r for r in runs if r.trace == trace]
    fig, ax = plt.subplots(figsize=(7, 5))
    try:
        for series in dict.fromkeys(_series(r) for r in here):
            points = sorted((r for r in here if _series(r) == series), key=lambda r: r.gpu_hours)
            policy = points[0].policy
            marker = "*" if policy in REFERENCES else "s" if series != policy else "o"
            ax.plot(
                [r.gpu_hours for r in points],
                [r.both_pct for r in points],
                marker=marker,
                markersize=12 if marker == "*" else 5,
                color=COLORS.get(policy),
                linestyle=":" if series != policy else "-",
                label=series,
            )
        ax.axhline(TARGET, color="0.6", linestyle="--", linewidth=1)
        ax.set_xlabel("GPU hours")
        ax.set_ylabel("% of requests within both SLOs")
        ax.set_ylim(max(0.0, min(r.both_pct for r in here) - 2.0), 100.5)
        ax.set_title(f"arena: {trace}")
        ax.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="short traces, fewer configurations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--traces", help=f"comma-separated (default all; smoke {SMOKE_TRACES})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    smoke: bool = args.smoke
    sweeps = SMOKE_SWEEPS if smoke else SWEEPS
    chosen = args.traces or ",".join(SMOKE_TRACES if smoke else TRACES)
    names = [t.strip() for t in chosen.split(",") if t.strip()]
    unknown = [t for t in names if t not in TRACES]
    if unknown:
        parser.error(f"unknown traces {unknown}; known: {', '.join(TRACES)}")
    labels = [each for configurations in sweeps.values() for each in configurations]
    started = time.monotonic()
    _measure_the_floor(names, smoke, args.seed)
    work = [(n, TRACES[n][2 if smoke else 1], args.seed, labels) for n in names]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = [run for batch in pool.map(_run_trace, work) for run in batch]
    wall = time.monotonic() - started
    verdicts = judge(runs, sweeps)
    # another seed is another set of traces of the same families: kept beside seed 1's
    suffix = ("-smoke" if smoke else "") + (f"-seed{args.seed}" if args.seed != 1 else "")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"arena{suffix}.md").write_text(
        markdown(runs, verdicts, smoke, args.seed, wall), "utf-8"
    )
    (out / f"arena{suffix}.json").write_text(
        json.dumps([asdict(r) for r in runs], indent=2) + "\n", "utf-8"
    )
    for name in names:
        plot(runs, name, out / f"arena-{name}{suffix}.png")
    for v in verdicts:
        print(f"{'PASS' if v.ok else 'FAIL'} {v.trace}: {v.check}: {v.detail}")
    print(f"wrote bench/results/arena{suffix}.md ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
