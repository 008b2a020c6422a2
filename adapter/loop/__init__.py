"""The closed loop on one machine: guidellm -> emulated vLLM -> adapter -> KEDA/HPA
simulator -> replicas, in real time (`wva-adapter demo`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from adapter.loop.harness import LoopError, LoopRun, run_loop, scaled_object
from adapter.loop.record import LiveTable, Sample, Summary, plot, summarize
from adapter.loop.scenario import Scenario, Stream, misprofiled, tutorial

__all__ = [
    "LoopError",
    "LoopRun",
    "Sample",
    "Scenario",
    "Stream",
    "Summary",
    "misprofiled",
    "run_demo",
    "run_loop",
    "scaled_object",
    "summarize",
    "tutorial",
]


_METRICS_PATHS = {"scrape": "metrics scraped from the pods", "prometheus": "metrics via Prometheus"}


def run_demo(scenario: Scenario, out_dir: Path, out: TextIO, *, every: int = 5) -> Summary:
    """Run the loop with a live table; write samples + summary JSON and the plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = _METRICS_PATHS[scenario.metrics]
    out.write(
        f"{scenario.name}: {len(scenario.streams)} guidellm streams over {scenario.end_s:g} s;"
        f" adapter cycle {scenario.cycle_s:g} s ({metrics}, {scenario.rate_window_s:g} s"
        f" window), KEDA polling {scenario.polling_s:g} s\n"
    )
    run = run_loop(scenario, out_dir / "run", on_sample=LiveTable(out, every=every))
    declared = run.declared_profile_ms
    gpus = (declared[0] * scenario.gpu_speed, declared[1] * scenario.gpu_speed)
    summary = summarize(
        scenario.name,
        run.samples,
        run.slo_itl_ms,
        run.slo_ttft_ms,
        declared_profile_ms=declared,
        gpu_profile_ms=gpus,
    )
    document = {
        "summary": summary.model_dump(),
        "scenario": scenario.model_dump(),
        "samples": [s.model_dump() for s in run.samples],
        "guidellm_reports": {k: str(v) for k, v in run.guidellm_reports.items()},
        "prometheus_queries": run.prometheus_queries,
    }
    (out_dir / "summary.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    title = f"wva-adapter: {scenario.name}, {metrics}"
    profiles = {"declared (VA)": declared, "emulated GPUs": gpus}
    plot(
        run.samples,
        run.slo_itl_ms,
        out_dir / "demo.png",
        title,
        profiles=profiles if scenario.gpu_speed != 1.0 else None,
    )
    out.write(
        f"\nreplicas: {' -> '.join(map(str, summary.replicas_path))};"
        f" ITL within {summary.slo_itl_ms:g} ms in {summary.itl_attainment_pct:.1f} % of"
        f" samples; {summary.replica_seconds:g} replica-seconds\n"
    )
    if summary.learned_profile_ms is not None:
        (alpha, beta), since = summary.learned_profile_ms, summary.learned_in_use_from_s
        out.write(
            f"learned profile: alpha {alpha:.3f} ms, beta {beta:.4f} ms (declared"
            f" {declared[0]:.3f}, {declared[1]:.4f}; GPUs {gpus[0]:.3f}, {gpus[1]:.4f});"
            + (f" sized with it from {since:.0f} s\n" if since is not None else " not used\n")
        )
    out.write(f"wrote {out_dir / 'summary.json'} and {out_dir / 'demo.png'}\n")
    return summary
