"""`wva-adapter simulate` end to end: table, JSON report, PNG plot, input errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.cli import EXIT_INPUT, EXIT_OK, main
from adapter.sim.command import TRACES, SimulateInputError, make_trace, parse_duration

VENV_BIN = Path(sys.executable).parent


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["simulate", *argv], out=out, err=err, environ={})
    return status, out.getvalue(), err.getvalue()


def test_simulate_writes_the_table_json_and_plot(tmp_path: Path) -> None:
    report, plot = tmp_path / "out" / "report.json", tmp_path / "out" / "plot.png"
    status, out, err = run(
        "--trace", "step", "--duration", "6m", "--seed", "2", "--startup-delay", "30s",
        "--json", str(report), "--plot", str(plot), "--policies", "ours,wva-tutorial,keda-queue",
    )  # fmt: skip
    assert status == EXIT_OK, err
    assert "trace step: 360 s virtual" in out
    assert "startup 30 s" in out
    for policy in ("ours", "wva-tutorial", "keda-queue"):
        assert f"\n{policy} " in out
    document = json.loads(report.read_text())
    assert [p["policy"] for p in document["policies"]] == ["ours", "wva-tutorial", "keda-queue"]
    assert document["seed"] == 2 and document["startup_delay_s"] == 30.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {report}" in out and f"wrote {plot}" in out


def test_simulate_runs_a_csv_trace_and_a_subset_of_policies(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.csv"
    trace.write_text("time_s,rate_rps\n0,8\n60,16\n120,8\n180,8\n")
    report = tmp_path / "r.json"
    status, out, err = run(
        "--trace", str(trace), "--policies", "keda-queue,ours", "--json", str(report),
        "--phase", "0.5", "--hpa-phase", "3",
    )  # fmt: skip
    assert status == EXIT_OK, err
    assert "loop phase 0.5, HPA 3 s after" in out
    document = json.loads(report.read_text())
    assert document["duration_s"] == 180.0 and document["step_up_at"] == 60.0
    assert (document["phase"], document["hpa_phase_s"]) == (0.5, 3.0)
    assert [p["policy"] for p in document["policies"]] == ["keda-queue", "ours"]


def test_simulate_runs_other_gpus_a_small_cache_and_no_configurable_tolerance(
    tmp_path: Path,
) -> None:
    report = tmp_path / "r.json"
    status, out, err = run(
        "--duration", "2m", "--policies", "ours", "--json", str(report),
        "--true-alpha-ms", "7", "--true-beta-ms", "0.05", "--true-prefill-ms-per-token", "0.01",
        "--kv-cache-tokens", "100010", "--termination-grace", "1m",
        "--no-hpa-configurable-tolerance",
    )  # fmt: skip
    assert status == EXIT_OK, err
    assert (
        "pods: step 7 + 0.05 x batch ms, prefill 0.01 ms/token, batch <= 512, KV cache 100000"
        " tokens (6250 blocks of 16), termination grace 60 s (not the VA's profile: 6.356 +"
        " 0.044 x batch ms, prefill 0 ms/token, batch <= 512, which the policies read); no"
        " HPAConfigurableTolerance: ours' HPA tolerance is the default 10 %"
    ) in out
    assert "killed retried" in out
    document = json.loads(report.read_text())
    assert document["true_profile"] == {
        "alpha_ms": 7.0,
        "beta_ms": 0.05,
        "prefill_ms_per_token": 0.01,
        "max_batch_size": 512,
    }
    assert document["va_profile"]["alpha_ms"] == 6.356
    assert (document["kv_cache_tokens"], document["num_gpu_blocks"]) == (
        100000,
        6250,
    )  # whole blocks
    assert (document["termination_grace_s"], document["hpa_configurable_tolerance"]) == (
        60.0,
        False,
    )
    (ours,) = document["policies"]
    assert (ours["killed"], ours["retried"], ours["preemptions"]) == (0, 0, 0)


def test_simulate_from_zero_runs_ours_and_compares_it_held_at_one_replica(tmp_path: Path) -> None:
    """`simulate --min-replicas 0` alone: ours (the one policy that starts at 0), its pods
    at the SLO batch as docs/deploy.md deploys them for scale from zero, and the same run
    held at one replica, whose GPU-hours the from-zero run is compared with."""
    trace = tmp_path / "gaps.csv"
    trace.write_text("time_s,rate_rps\n0,0\n120,8\n420,0\n1500,0\n")
    report = tmp_path / "r.json"
    status, out, err = run(
        "--trace", str(trace), "--min-replicas", "0", "--startup-delay", "20",
        "--scale-to-zero-after", "60", "--json", str(report),
    )  # fmt: skip
    assert status == EXIT_OK, err
    document = json.loads(report.read_text())
    (zero,) = document["policies"]
    (one,) = document["held_at_one"]
    assert zero["policy"] == one["policy"] == "ours"
    assert document["true_profile"]["max_batch_size"] == 60  # (9 - 6.356) / 0.044
    assert "from zero, vLLM's --max-num-seqs is the SLO batch 60" in out
    assert len(zero["wake_ups_s"]) == 1 and 20 <= zero["wake_ups_s"][0] <= 22
    assert zero["held"] > 0 and zero["rejected"] == zero["unfinished"] == 0
    assert zero["itl_attainment_pct"] >= 99.0
    # idle 2 of 25 minutes before the load and 18 after it, less the 60 s retention
    ratio = zero["gpu_hours"] / one["gpu_hours"]
    assert ratio < 0.6, ratio
    assert f"from zero takes {ratio:.2f} x its GPU-hours" in out
    # the pods' batch is the user's when given
    status, out, err = run(
        "--trace", str(trace), "--min-replicas", "0", "--true-max-batch", "512",
        "--duration", "5m", "--json", str(report),
    )  # fmt: skip
    assert status == EXIT_OK, err
    assert json.loads(report.read_text())["true_profile"]["max_batch_size"] == 512


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "{csv}"], "error: {csv}:3: rate_rps must be a finite number >= 0, got -2\n"),
        (
            ["--trace", "sawtooth"],
            "expected one of step, step-saturating, ramp, diurnal, bursty, noisy, flash,"
            " accelerating or a .csv file",
        ),
        (["--trace", "missing.csv"], "error: cannot read missing.csv"),
        (
            ["--policies", "ours,hpa"],
            "error: --policies: unknown policy 'hpa'; known: ours, wva-tutorial",
        ),
        (["--samples", "{tmp}/nowhere"], "nowhere: no such file or directory"),
        (["--variant", "vllm"], "error: --variant 'vllm': expected NAMESPACE/NAME"),
        (["--min-replicas", "3", "--max-replicas", "2"], "need 0 <= min_replicas <= max_replicas"),
        (
            ["--min-replicas", "0", "--policies", "ours,keda-queue"],
            "keda-queue does not scale from zero",
        ),
        (["--kv-cache-tokens", "20"], "--kv-cache-tokens 20: need at least two blocks of 16"),
        (["--kv-cache-tokens", "600"], "a request of 128 + 512 tokens does not fit a KV cache"),
        (["--true-alpha-ms", "0"], "error: simulate: alpha_ms must be > 0, got 0.0"),
    ],
)
def test_simulate_input_errors_exit_2_with_one_line(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("time_s,rate_rps\n0,8\n60,-2\n")
    argv = [a.format(csv=csv, tmp=tmp_path) for a in argv]
    status, out, err = run(*argv, "--duration", "60")
    assert status == EXIT_INPUT
    assert message.format(csv=csv, tmp=tmp_path) in err
    assert "Traceback" not in err and out == ""


def test_named_traces() -> None:
    assert TRACES == (
        "step",
        "step-saturating",
        "ramp",
        "diurnal",
        "bursty",
        "noisy",
        "flash",
        "accelerating",
    )
    saturating = make_trace("step-saturating", 900.0, 1)
    assert (saturating.name, saturating.step_up_at, saturating.peak) == (
        "step-saturating",
        300.0,
        40.0,
    )
    assert make_trace("step", None, 1).duration_s == 3600.0
    noisy, other = make_trace("noisy", 900.0, 2), make_trace("noisy", 900.0, 3)
    assert (noisy.name, noisy.duration_s) == ("noisy", 900.0)
    assert noisy.rate(450.0) != other.rate(450.0)  # the seed draws the trace


def test_flash_crowds_climb_over_minutes_and_accelerating_ramps_speed_up() -> None:
    flash = make_trace("flash", 7200.0, 1)
    assert flash.rate(0.0) == flash.rate(599.0) == 8.0  # ten calm minutes first
    assert 20.0 <= flash.peak <= 32.0  # 2.5-4 x the base
    # no stair of a climb is a step: each adds at most a twelfth of the crowd
    rises = [flash.rate(t + 5.0) - flash.rate(t) for t in range(0, 7195, 5)]
    assert max(rises) <= (flash.peak - 8.0) / 12 + 1e-9
    other = make_trace("flash", 7200.0, 2)
    assert [other.rate(t) for t in range(0, 7200, 60)] != [
        flash.rate(t) for t in range(0, 7200, 60)
    ]
    accelerating = make_trace("accelerating", 3600.0, 1)
    early = accelerating.rate(900.0) - accelerating.rate(0.0)
    late = accelerating.rate(3585.0) - accelerating.rate(2700.0)
    assert late > 3 * early and accelerating.peak <= 32.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-3", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(SimulateInputError, match="is not a duration"):
        parse_duration(text)


def test_installed_command_runs() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "wva-adapter"), "simulate", "--duration", "2m", "--policies", "ours"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ours" in done.stdout
