"""The closed loop on one machine: guidellm -> emulated vLLM -> adapter -> KEDA/HPA
simulator -> replicas, in real time (`wva-adapter demo`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TextIO

from adapter.loop.harness import LoopError, LoopRun, run_loop, scaled_object
from adapter.loop.record import LiveTable, Sample, Summary, plot, read_requests, summarize
from adapter.loop.scenario import Scenario, Stream, from_zero, misprofiled, tutorial

__all__ = [
    "LoopError",
    "LoopRun",
    "Sample",
    "Scenario",
    "Stream",
    "Summary",
    "from_zero",
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
    requests = read_requests(
        run.guidellm_reports, [s.name for s in scenario.streams], run.slo_itl_ms, run.wall_start
    )
    activation = next((e for e in run.keda_events if e.detail == "activated"), None)
    from_zero = scenario.initial_replicas == 0
    summary = summarize(
        scenario.name,
        run.samples,
        run.slo_itl_ms,
        run.slo_ttft_ms,
        declared_profile_ms=declared,
        gpu_profile_ms=gpus,
        requests=requests,
        from_zero=from_zero,
        activation=(activation.t, activation.source) if activation else None,
        pushed_true_at_s=run.first_pushed_true_s,
        gateway=(run.gateway_arrived, run.gateway_held or 0, run.gateway_answered or 0)
        if run.gateway_arrived is not None
        else None,
    )
    document = {
        "summary": summary.model_dump(),
        "scenario": scenario.model_dump(),
        "samples": [s.model_dump() for s in run.samples],
        "guidellm_reports": {k: str(v) for k, v in run.guidellm_reports.items()},
        "prometheus_queries": run.prometheus_queries,
        "keda_events": [dataclasses.asdict(e) for e in run.keda_events],
        "push_streams": run.push_streams,
        "push_stream_errors": run.push_stream_errors,
        "guidellm_lead_s": round(run.guidellm_lead_s, 3),
    }
    (out_dir / "summary.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    title = f"wva-adapter: {scenario.name}, {metrics}"
    profiles = {"declared (VA)": declared, "emulated GPUs": gpus}
    sent, served = requests.first_sent_s, requests.first_token_s
    wake_up = (sent, served) if from_zero and sent is not None and served is not None else None
    plot(
        run.samples,
        run.slo_itl_ms,
        out_dir / "demo.png",
        title,
        profiles=profiles if scenario.gpu_speed != 1.0 else None,
        wake_up=wake_up,
        note=_saving(summary) if from_zero else "",
    )
    out.write(
        f"\nreplicas: {' -> '.join(map(str, summary.replicas_path))};"
        f" ITL within {summary.slo_itl_ms:g} ms in {summary.itl_attainment_pct:.1f} % of"
        f" samples; {summary.replica_seconds:g} replica-seconds\n"
    )
    if from_zero:
        _write_from_zero(summary, scenario, out)
    if summary.learned_profile_ms is not None:
        (alpha, beta), since = summary.learned_profile_ms, summary.learned_in_use_from_s
        out.write(
            f"learned profile: alpha {alpha:.3f} ms, beta {beta:.4f} ms (declared"
            f" {declared[0]:.3f}, {declared[1]:.4f}; GPUs {gpus[0]:.3f}, {gpus[1]:.4f});"
            + (f" sized with it from {since:.0f} s\n" if since is not None else " not used\n")
        )
    out.write(f"wrote {out_dir / 'summary.json'} and {out_dir / 'demo.png'}\n")
    return summary


def _saving(summary: Summary) -> str:
    if summary.gpu_seconds is None or summary.held_at_one_gpu_seconds is None:
        return ""
    return (
        f"{summary.gpu_seconds:.0f} GPU-seconds, {summary.gpu_seconds_ratio or 0:.2f} x the"
        f" {summary.held_at_one_gpu_seconds:.0f} of 1 replica held throughout"
    )


def _write_from_zero(summary: Summary, scenario: Scenario, out: TextIO) -> None:
    """The scale-from-zero figures: requests, wake-up, attainment, GPU-seconds."""
    requests = summary.requests
    if requests is not None:
        missing = (
            f"; no report from {', '.join(requests.missing_reports)}"
            if requests.missing_reports
            else ""
        )
        unrecorded = (
            f"; guidellm's reports lack the outcome of {requests.unrecorded} (still"
            " processing when written)"
            if requests.unrecorded
            else ""
        )
        out.write(
            f"requests: {requests.sent} sent, {requests.failed} failed ({requests.errored}"
            f" errors, {requests.incomplete} cut in flight){missing}; the gateway received"
            f" {summary.gateway_arrived}, held {summary.gateway_held} for a replica and"
            f" answered {summary.gateway_answered} whole (200, every token){unrecorded}\n"
        )
    if summary.wake_up_s is not None and requests is not None:
        how = (
            f"; KEDA activated at {summary.activated_at_s:.1f} s on"
            + (" a pushed StreamIsActive" if summary.activated_by == "push" else " a poll")
            if summary.activated_at_s is not None
            else ""
        )
        out.write(
            f"wake-up: the first request (sent at {requests.first_sent_s:.1f} s) waited"
            f" {summary.wake_up_s:.2f} s for its first token{how}; a replica starts in"
            f" {scenario.startup_delay_s:g} s\n"
        )
    if summary.itl_attainment_requests_pct is not None and requests is not None:
        out.write(
            f"ITL within {summary.slo_itl_ms:g} ms: {summary.itl_attainment_requests_pct:.2f} %"
            f" of the answered requests ({requests.itl_within_slo} of {requests.completed})\n"
        )
    if summary.gpu_seconds is not None:
        out.write(
            f"GPU-seconds: {summary.gpu_seconds:g} (pods holding a GPU, starting and"
            f" terminating ones included, x time); held at 1 replica throughout:"
            f" {summary.held_at_one_gpu_seconds:g} (1 x the run's"
            f" {summary.held_at_one_gpu_seconds:g} s); ratio {summary.gpu_seconds_ratio:.2f}\n"
        )
