"""Arrival-rate traces and the seeded Poisson requests drawn from them (adapter.sim.traces)."""

from __future__ import annotations

import pytest

from adapter.sim.traces import (
    RequestShape,
    TraceError,
    bursty_trace,
    csv_trace,
    diurnal_trace,
    make_workload,
    poisson_arrivals,
    ramp_trace,
    saturating_step_trace,
    step_trace,
)


def test_step_trace_is_the_tutorials_two_jobs() -> None:
    trace = step_trace(3600.0)
    assert [trace.rate(t) for t in (0.0, 1199.9, 1200.0, 2399.9, 2400.0, 3599.0)] == [
        8.0,
        8.0,
        16.0,
        16.0,
        8.0,
        8.0,
    ]
    assert trace.step_up_at == 1200.0
    assert trace.peak == 16.0
    assert trace.name == "step"


def test_saturating_step_overflows_one_full_batch_of_the_samples_profile() -> None:
    trace = saturating_step_trace(3600.0)
    assert trace.name == "step-saturating"
    assert (trace.times, trace.rates) == ((0.0, 1200.0, 2400.0), (8.0, 40.0, 8.0))
    # deploy/samples' H100: 512 sequences per step of 6.356 + 0.044 * 512 ms, 512 tokens each
    full_batch_rps = 512 / ((6.356 + 0.044 * 512) / 1000.0) / 512
    assert full_batch_rps == pytest.approx(34.6, abs=0.05)
    assert 16.0 < full_batch_rps < trace.peak


def test_ramp_goes_linearly_from_start_to_end() -> None:
    trace = ramp_trace(1000.0, 4.0, 32.0)
    assert trace.rate(0.0) == 4.0
    assert trace.rate(500.0) == pytest.approx(18.0)
    assert trace.rate(1000.0) == 32.0
    assert trace.peak == 32.0
    assert trace.step_up_at is None


def test_diurnal_is_low_at_night_high_at_noon_and_compressible() -> None:
    day = diurnal_trace(86_400.0, 4.0, 24.0, period_s=86_400.0)
    assert day.rate(0.0) == pytest.approx(4.0)
    assert day.rate(43_200.0) == pytest.approx(24.0)
    assert day.rate(21_600.0) == pytest.approx(14.0)
    hour = diurnal_trace(3600.0, 4.0, 24.0)  # the day compressed into the run
    assert hour.rate(1800.0) == pytest.approx(24.0)
    assert hour.rate(900.0) == pytest.approx(day.rate(21_600.0))


def test_bursty_switches_between_two_levels_and_repeats_with_its_seed() -> None:
    trace = bursty_trace(7200.0, seed=4, base_rps=8.0, burst_rps=40.0)
    assert set(trace.rates) == {8.0, 40.0}
    assert trace.rates[0] == 8.0
    assert all(a != b for a, b in zip(trace.rates, trace.rates[1:], strict=False))
    assert len(trace.times) > 4  # mean cycle of 360 s over 2 h
    assert bursty_trace(7200.0, seed=4) == trace
    assert bursty_trace(7200.0, seed=5) != trace


def test_csv_trace_is_piecewise_constant() -> None:
    text = "time_s,rate_rps\n# warm-up\n0,8\n\n600, 16  # second job\n1200,8\n1800,8\n"
    trace = csv_trace(text, "jobs.csv")
    assert trace.duration_s == 1800.0
    assert [trace.rate(t) for t in (0.0, 599.0, 600.0, 1199.0, 1200.0)] == [8, 8, 16, 16, 8]
    assert trace.step_up_at == 600.0
    assert csv_trace("0,5\n", "one.csv", duration_s=60.0).rate(59.0) == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_s,rate_rps\n0,8\n600,x\n", "jobs.csv:3: not numbers: '600,x'"),
        ("0,8\n600\n", "jobs.csv:2: expected 'time_s,rate_rps', got '600'"),
        ("0,8\n600,16\n600,8\n", "jobs.csv:3: time_s 600 does not increase (after 600)"),
        ("0,8\n60,-1\n", "jobs.csv:2: rate_rps must be a finite number >= 0, got -1"),
        ("10,8\n60,1\n", "jobs.csv:1: the first time_s must be 0, got 10"),
        ("0,nan\n60,1\n", "jobs.csv:1: rate_rps must be a finite number >= 0, got nan"),
        ("# nothing\n", "jobs.csv: no 'time_s,rate_rps' lines"),
        ("0,8\n", "jobs.csv: one line only: give a duration, or a last line"),
    ],
)
def test_csv_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(TraceError) as caught:
        csv_trace(text, "jobs.csv")
    assert str(caught.value) == message


def test_poisson_arrivals_follow_the_rate_and_repeat_with_the_seed() -> None:
    trace = step_trace(3000.0, 5.0, 20.0)  # 1000 s at 5, 1000 s at 20, 1000 s at 5
    arrivals = poisson_arrivals(trace, seed=7)
    assert arrivals == sorted(arrivals)
    assert all(0.0 < t < 3000.0 for t in arrivals)
    assert poisson_arrivals(trace, seed=7) == arrivals
    assert poisson_arrivals(trace, seed=8) != arrivals
    counts = [sum(1 for t in arrivals if lo <= t < lo + 1000.0) for lo in (0.0, 1000.0, 2000.0)]
    # Poisson counts: mean 5000 / 20000 / 5000, sd ~71 / 141 / 71; 5 sd bands
    assert abs(counts[0] - 5000) < 360
    assert abs(counts[1] - 20000) < 710
    assert abs(counts[2] - 5000) < 360


def test_workload_tokens_default_to_the_tutorial_and_spread_within_bounds() -> None:
    trace = ramp_trace(100.0, 10.0, 10.0)
    fixed = make_workload(trace, seed=1)
    assert set(fixed.prompt_tokens) == {128} and set(fixed.output_tokens) == {512}
    spread = make_workload(trace, seed=1, shape=RequestShape(128, 512, spread=0.25))
    assert spread.arrivals == fixed.arrivals  # token draws do not move the arrivals
    assert min(spread.output_tokens) >= 384 and max(spread.output_tokens) <= 640
    assert len(set(spread.output_tokens)) > 10
    with pytest.raises(TraceError):
        RequestShape(spread=1.0)


def test_bad_trace_parameters_are_refused() -> None:
    with pytest.raises(TraceError, match="duration"):
        step_trace(0.0)
    with pytest.raises(TraceError, match="rates"):
        ramp_trace(60.0, -1.0, 4.0)
