"""The attainment model against the real-time emulator, one replica, CI-sized.

Runs `bench/attainment_emulator.py`'s code (see its docstring; the full check is its
20-minute run, 2 points) for 60 s judged after an 11 s warm-up: the emulator in its own
process, Poisson streaming completions from an aiohttp client, 64 output tokens at
87.65 req/s (the model's 95 % rate), ITL SLO 9 ms; then the same arrivals through the
simulator.

The tolerances, and why:

- predicted vs the emulator's measured share: `SHARE_TOLERANCE` = 8 points. A share
  measured over 60 s is noisy (the batch wanders on the scale of a request's 0.54 s
  life): over 200 simulator runs of this length the share's standard deviation is
  2.5 points, skewed low (the 0.5th percentile is 7.6 points under the mean). 8 points
  is about 3 standard deviations: the arrivals' noise alone goes beyond it in fewer than
  1 run in 200. The arrivals are the bench's (seed 1), whose first 71 s are a low
  stretch: the simulator on them gives 88.9 %, 6.1 points under the prediction. A model
  with beta 10 % high predicts 73 % here, 16 points under the measurement: the test
  checks that this control would fail.
- the emulator vs the simulator on the same arrivals: `TIMING_TOLERANCE` = 1.5 points,
  and the per-request ITL difference within `ITL_BIAS_MS` = 0.02 ms on average. Sharing
  the arrivals, they differ only by the emulator's timing (and the client's: tokens
  delivered late). Measured on this 2-core machine: -0.5 to +0.05 points and a mean
  difference under 0.001 ms in six runs (60 s to 20 min); a host that freezes the
  emulator and the client moves both (under other test suites' load: -1.45 points and
  +0.10 ms with a 1.7 s freeze in 10 minutes, -3.8 points and +0.16 ms in a 30-s run).
  The simulator with beta 10 % high on the same arrivals is the control: 68.7 %, 20
  points under the measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.script_modules import load_script

pytestmark = [pytest.mark.integration, pytest.mark.realtime]

BENCH = Path(__file__).resolve().parents[1] / "bench" / "attainment_emulator.py"
DURATION_S = 60.0
# the operating point, pinned: the rate the model (beta 0.044 ms) puts at 95 %. Derived
# from the model under test, a wrong model would move the rate with its prediction
# (beta 10 % high: 78.9 req/s, where the true share is about 99.6 %) and stay close.
RATE = 87.65
SHARE_TOLERANCE = 8.0  # points
TIMING_TOLERANCE = 1.5  # points
ITL_BIAS_MS = 0.02


def _bench() -> Any:
    return load_script(BENCH, "wva_bench_attainment_emulator")


@pytest.fixture(scope="module")
def bench() -> Any:
    return _bench()


@pytest.fixture(scope="module")
def measured(bench: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """One CI-sized run: (Result, observations, the simulator's replay of them)."""
    log = tmp_path_factory.mktemp("attainment-emulator") / "emulator.log"
    result, observations, replayed = bench.run(
        rate=RATE, duration_s=DURATION_S, spread_runs=0, tolerance=SHARE_TOLERANCE, log_path=log
    )
    print("\n" + bench.markdown(result, smoke=True))
    return result, observations, replayed


def test_every_request_streamed_all_its_tokens(measured: tuple[Any, Any, Any]) -> None:
    result, _, _ = measured
    assert result.errors == 0
    assert result.incomplete == 0
    # about 87.65 req/s for 60 s
    assert 4800 <= result.judged <= 5700


def test_measured_share_is_the_predicted_one_within_the_runs_noise(
    bench: Any, measured: tuple[Any, Any, Any]
) -> None:
    result, _, _ = measured
    assert abs(result.emulator_pct - result.predicted_pct) <= SHARE_TOLERANCE, result
    # the control: a model with beta 10 % high is told apart at this tolerance
    wrong = 100.0 * bench.predicted_share(result.output_tokens, result.rate, bench.BETA_MS * 1.1)
    assert abs(result.emulator_pct - wrong) > SHARE_TOLERANCE


def test_emulator_keeps_the_simulators_timing_on_the_same_arrivals(
    bench: Any, measured: tuple[Any, Any, Any]
) -> None:
    result, observations, _ = measured
    assert abs(result.emulator_pct - result.simulator_same_pct) <= TIMING_TOLERANCE, result
    assert abs(result.itl_diff_mean_ms) <= ITL_BIAS_MS, result
    # the control: the simulator with beta 10 % high, on the same arrivals, is told apart
    wrong = bench.replay([o.sent for o in observations], result.output_tokens, bench.BETA_MS * 1.1)
    judged = [s for o, s in zip(observations, wrong, strict=True) if o.scheduled >= result.warmup_s]
    wrong_pct = 100.0 * sum(1 for s in judged if s.itl_ms <= bench.SLO_ITL_MS) / len(judged)
    assert abs(result.emulator_pct - wrong_pct) > TIMING_TOLERANCE
