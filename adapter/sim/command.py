"""The edge of `wva-adapter simulate`: files in and out, the table, the plot.

The simulation itself (`adapter.sim.simulate`) is pure; everything that reads a file,
writes one or draws lives here, so `bench/policies.py` can reuse it. The arguments are
in `adapter.sim.arguments`, which `wva-adapter --help` imports without this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import TextIO

from adapter.collect.local import LocalSourceError, load_snapshot
from adapter.emulator.batching import ServingProfile
from adapter.queueing.sizing import slo_batch
from adapter.sim.arguments import DEFAULT_DURATION_S
from adapter.sim.arguments import TRACES as TRACES  # re-exported: callers found them here
from adapter.sim.arguments import SimulateInputError as SimulateInputError
from adapter.sim.arguments import parse_duration as parse_duration
from adapter.sim.policies import (
    POLICIES,
    Limits,
    SetupError,
    SimSetup,
    parse_label,
    setup_from_snapshot,
)
from adapter.sim.simulate import SimReport, format_table, simulate, simulate_from_zero
from adapter.sim.traces import (
    RequestShape,
    Trace,
    TraceError,
    accelerating_trace,
    bursty_trace,
    csv_trace,
    diurnal_trace,
    flash_trace,
    noisy_trace,
    ramp_trace,
    saturating_step_trace,
    step_trace,
)


def make_trace(name: str, duration_s: float | None, seed: int) -> Trace:
    """A named trace shape, or a CSV file (read here: this is the edge)."""
    if name in TRACES:
        duration = duration_s if duration_s is not None else DEFAULT_DURATION_S
        if name == "step":
            return step_trace(duration)
        if name == "step-saturating":
            return saturating_step_trace(duration)
        if name == "ramp":
            return ramp_trace(duration)
        if name == "diurnal":
            return diurnal_trace(duration)
        if name == "noisy":
            return noisy_trace(duration, seed)
        if name == "flash":
            return flash_trace(duration, seed)
        if name == "accelerating":
            return accelerating_trace(duration)
        return bursty_trace(duration, seed)
    path = Path(name)
    if path.suffix.lower() != ".csv":
        raise SimulateInputError(
            f"--trace {name!r}: expected one of {', '.join(TRACES)} or a .csv file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SimulateInputError(f"cannot read {path}: {error.strerror or error}") from error
    return csv_trace(text, str(path), duration_s)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """`wva-adapter simulate`: print the table, write the JSON and the plot if asked."""
    # the engine logs every decision at INFO: thousands of lines in a simulated hour
    logger = logging.getLogger("adapter")
    level = logger.level
    if not args.verbose:
        logger.setLevel(logging.WARNING)
    try:
        return _run(args, out)
    finally:
        logger.setLevel(level)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    given = args.policies
    if given is None:  # every policy; from zero, only ours can start at 0
        given = ",".join(POLICIES) if args.min_replicas != 0 else "ours"
    policies = [p.strip() for p in given.split(",") if p.strip()]
    if not policies:
        raise SimulateInputError(f"--policies: none given; known: {', '.join(POLICIES)}")
    for label in policies:
        try:
            parse_label(label)
        except ValueError as error:
            raise SimulateInputError(f"--policies: {error}") from None
    variant = None
    if args.variant is not None:
        namespace, _, name = args.variant.partition("/")
        if not namespace or not name:
            raise SimulateInputError(f"--variant {args.variant!r}: expected NAMESPACE/NAME")
        variant = (namespace, name)
    try:
        limits = Limits(args.min_replicas, args.max_replicas)
        shape = RequestShape(args.prompt_tokens, args.output_tokens, args.token_spread)
        trace = make_trace(args.trace, args.duration, args.seed)
        setup = setup_from_snapshot(load_snapshot(args.samples), variant)
        true_profile = served_profile(setup, args)
        simulate_with = simulate_from_zero if limits.min_replicas == 0 else simulate
        report = simulate_with(
            setup,
            trace,
            limits=limits,
            policies=policies,
            seed=args.seed,
            startup_delay_s=args.startup_delay,
            shape=shape,
            phase=args.phase,
            hpa_phase_s=args.hpa_phase,
            stepwise=args.stepwise,
            true_profile=true_profile,
            termination_grace_s=args.termination_grace,
            hpa_configurable_tolerance=args.hpa_configurable_tolerance,
            profile_learning=args.profile_learning,
            scale_to_zero_after_s=args.scale_to_zero_after,
        )
    except SimulateInputError:
        raise
    except (TraceError, SetupError, LocalSourceError) as error:
        raise SimulateInputError(str(error)) from error
    except ValueError as error:
        raise SimulateInputError(f"simulate: {error}") from error
    out.write(describe(report) + "\n\n" + format_table(report) + "\n")
    if args.json:
        write_json(report, Path(args.json))
        out.write(f"wrote {args.json}\n")
    if args.plot:
        try:
            write_plot(report, Path(args.plot))
        except ImportError as error:
            raise SimulateInputError(
                f"--plot needs matplotlib ({error}): pip install 'wva-adapter[sim]'"
            ) from error
        out.write(f"wrote {args.plot}\n")
    return 0


def served_profile(setup: SimSetup, args: argparse.Namespace) -> ServingProfile:
    """What the simulated GPUs run: the VA's profile with the --true-* (alpha, beta,
    prefill, max batch) and --kv-cache-tokens values given (ValueError on values a profile
    refuses)."""
    va = setup.profile
    max_batch = args.true_max_batch
    if max_batch is None and args.min_replicas == 0:
        # from zero the router hands the first ready pod the whole cold-start backlog:
        # docs/deploy.md sets vLLM's --max-num-seqs to the SLO batch for that
        max_batch = slo_batch(va.alpha_ms, va.beta_ms, setup.slo_itl_ms, va.max_batch_size)
    blocks = va.num_gpu_blocks
    if args.kv_cache_tokens is not None:
        if args.kv_cache_tokens < 2 * va.block_size:
            raise SimulateInputError(
                f"--kv-cache-tokens {args.kv_cache_tokens}: need at least two blocks of"
                f" {va.block_size} tokens"
            )
        blocks = args.kv_cache_tokens // va.block_size  # whole blocks
    alpha, beta, prefill = args.true_alpha_ms, args.true_beta_ms, args.true_prefill_ms_per_token
    return dataclasses.replace(
        va,
        alpha_ms=va.alpha_ms if alpha is None else alpha,
        beta_ms=va.beta_ms if beta is None else beta,
        prefill_ms_per_token=va.prefill_ms_per_token if prefill is None else prefill,
        max_batch_size=va.max_batch_size if max_batch is None else max_batch,
        num_gpu_blocks=blocks,
    )


def describe(report: SimReport) -> str:
    step = f", step up at {report.step_up_at:g} s" if report.step_up_at is not None else ""
    true, va = report.true_profile, report.va_profile
    pods = (
        f"pods: step {true.alpha_ms:g} + {true.beta_ms:g} x batch ms, prefill"
        f" {true.prefill_ms_per_token:g} ms/token, batch <= {true.max_batch_size}, KV cache"
        f" {report.kv_cache_tokens} tokens ({report.num_gpu_blocks} blocks of"
        f" {report.kv_block_size}), termination grace {report.termination_grace_s:g} s"
    )
    if true != va:
        pods += (
            f" (not the VA's profile: {va.alpha_ms:g} + {va.beta_ms:g} x batch ms, prefill"
            f" {va.prefill_ms_per_token:g} ms/token, batch <= {va.max_batch_size}, which the"
            " policies read)"
        )
    at_slo = slo_batch(va.alpha_ms, va.beta_ms, report.slo_itl_ms, va.max_batch_size)
    if report.min_replicas == 0 and true.max_batch_size == at_slo != va.max_batch_size:
        pods += (
            f"; from zero, vLLM's --max-num-seqs is the SLO batch {at_slo}, as docs/deploy.md"
            " sets it (--true-max-batch to change)"
        )
    if not report.hpa_configurable_tolerance:
        pods += "; no HPAConfigurableTolerance: ours' HPA tolerance is the default 10 %"
    return (
        f"trace {report.trace}: {report.duration_s:g} s virtual, {report.requests} requests"
        f" (seed {report.seed}){step}\n"
        f"variant {report.variant} ({report.model} on {report.accelerator}): SLO ITL"
        f" {report.slo_itl_ms:g} ms, TTFT {report.slo_ttft_ms:g} ms; unit cost"
        f" {report.unit_cost:g}/h; replicas {report.min_replicas}..{report.max_replicas},"
        f" startup {report.startup_delay_s:g} s"
        + (f", loop phase {report.phase:g}" if report.phase else "")
        + (f", HPA {report.hpa_phase_s:g} s after" if report.hpa_phase_s is not None else "")
        + f"\n{pods}"
    )


def write_json(report: SimReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")


COLORS = {"ours": "tab:blue", "wva-tutorial": "tab:orange", "keda-queue": "tab:green"}


def write_plot(report: SimReport, path: Path, title: str | None = None) -> None:
    """Offered load, replicas per policy, mean ITL per policy against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report.series
    minutes = [t / 60.0 for t in series.t]
    edges = [*minutes, (series.t[-1] + series.bin_s) / 60.0] if minutes else []
    fig, (load, replicas, itl) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True)
    try:
        load.stairs(series.offered_rps, edges, color="0.6", fill=True, label="offered (arrivals)")
        load.plot(
            [(t + series.bin_s / 2) / 60.0 for t in series.t],
            series.trace_rps,
            color="black",
            linewidth=1,
            label="trace rate",
        )
        load.set_ylabel("requests / s")
        load.legend(loc="upper left", fontsize="small")
        for name, counts in series.replicas.items():
            color = COLORS.get(name)
            replicas.stairs(counts, edges, baseline=None, color=color, linewidth=1.5, label=name)
            replicas.stairs(
                series.ready[name], edges, baseline=None, color=color, linewidth=1, linestyle=":"
            )
        replicas.set_ylabel("replicas (spec; dotted: ready)")
        replicas.yaxis.get_major_locator().set_params(integer=True)
        replicas.legend(loc="upper left", fontsize="small")
        for name, values in series.itl_ms.items():
            points = [(m, v) for m, v in zip(minutes, values, strict=True) if v is not None]
            itl.plot(
                [m + series.bin_s / 120.0 for m, _ in points],
                [v for _, v in points],
                color=COLORS.get(name),
                linewidth=1,
                label=name,
            )
        itl.axhline(report.slo_itl_ms, color="red", linestyle="--", linewidth=1, label="SLO")
        itl.set_ylabel("mean ITL, ms")
        itl.set_xlabel("virtual time, minutes")
        itl.legend(loc="upper left", fontsize="small")
        fig.suptitle(
            title
            or (
                f"wva-adapter simulate: {report.trace}, {report.requests} requests, "
                f"startup {report.startup_delay_s:g} s, seed {report.seed}"
            )
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
