"""The closed loop's scenario: load streams over time and the control loop's settings.

The tutorial's scenario is one stream of 8 req/s for the whole run, a second one of
8 req/s in the middle, then nothing; prompts of 128 tokens, outputs of 512. The serving
physics runs in real time (the tutorial's H100 profile), so what is compressed for a
short run is the control loop: a 2 s adapter cycle and KEDA polling instead of 15 s,
and a 10 s scale-down window instead of 60 s. `time_factor` scales the physics too
(alpha, beta and the SLOs multiplied, request rates divided by it): the optimizer's
decisions do not change under that scaling, so a slower emulated GPU costs less CPU.
With `metrics="prometheus"` the adapter reads a real Prometheus that scrapes the pods
every second (15-30 s in a cluster) and evaluates the same 6 s window the scrape mode
uses. `misprofiled` runs GPUs slower than the VA declares, for the adapter to learn.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MetricsPath = Literal["scrape", "prometheus"]
PROMETHEUS_STARTUP_DELAY_S = 8.0


class Stream(BaseModel):
    """One guidellm run: a constant request rate from `start_s` for `duration_s`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    rate_rps: float = Field(gt=0)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class Scenario(BaseModel):
    """Everything the closed loop needs besides the tutorial's objects (deploy/samples)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    streams: tuple[Stream, ...] = Field(min_length=1)
    end_s: float = Field(gt=0, description="run length; load-free after the last stream")
    prompt_tokens: int = Field(default=128, ge=1)
    output_tokens: int = Field(default=512, ge=1)
    time_factor: float = Field(default=1.0, gt=0)
    cycle_s: float = Field(default=2.0, gt=0, description="adapter --interval")
    rate_window_s: float = Field(
        default=6.0,
        ge=0,
        description="the adapter's rate window (--scrape-window, or --window with"
        " Prometheus): 3 cycles",
    )
    polling_s: float = Field(default=2.0, gt=0, description="KEDA pollingInterval")
    hpa_sync_s: float = Field(default=2.0, gt=0, description="HPA controller sync period")
    scale_down_window_s: int = Field(default=10, ge=0)
    cooldown_s: float = Field(default=10.0, ge=0, description="KEDA cooldownPeriod")
    initial_cooldown_s: float = Field(default=30.0, ge=0)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    initial_replicas: int = Field(default=1, ge=1)
    sample_s: float = Field(default=1.0, gt=0, description="recording period")
    itl_window_s: float = Field(default=5.0, gt=0, description="window of the observed ITL")
    stream_interval_ms: float = Field(default=50.0, ge=0)
    startup_delay_s: float = Field(
        default=0.0, ge=0, description="time a replica added by scaling up takes to serve"
    )
    gpu_speed: float = Field(
        default=1.0,
        gt=0,
        description="the emulated GPUs' step time (alpha and beta) over the VA's declared"
        " profile: 1.2 runs 20 % slower than the VA says",
    )
    metrics: MetricsPath = Field(
        default="scrape",
        description="how the adapter reads vLLM: scraping the pods (--scrape-file) or"
        " from a Prometheus that scrapes them (--prometheus)",
    )
    scrape_interval_s: float = Field(
        default=1.0, gt=0, description="Prometheus' scrape and evaluation interval"
    )

    @model_validator(mode="after")
    def _streams_fit(self) -> Scenario:
        for stream in self.streams:
            if stream.end_s > self.end_s:
                raise ValueError(f"stream {stream.name} ends after the run ({self.end_s:g} s)")
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas > max_replicas")
        if self.metrics == "prometheus" and self.rate_window_s < 2 * self.scrape_interval_s:
            # rate() and delta() need two samples in the window
            raise ValueError("with Prometheus, rate_window_s must span two scrape intervals")
        return self

    def offered_rps(self, t: float) -> float:
        """The planned request rate at `t` (guidellm's own start-up shifts the real one)."""
        return sum(s.rate_rps for s in self.streams if s.start_s <= t < s.end_s)


def tutorial(
    *, short: bool = False, time_factor: float = 1.0, metrics: MetricsPath = "scrape"
) -> Scenario:
    """The tutorial's two jobs. `short` is the CI run (about 2.5 minutes of load)."""
    rate = 8.0 / time_factor
    if short:
        first = Stream(name="job-1", start_s=0, duration_s=125, rate_rps=rate)
        second = Stream(name="job-2", start_s=35, duration_s=50, rate_rps=rate)
        end = 155.0
    else:
        first = Stream(name="job-1", start_s=0, duration_s=180, rate_rps=rate)
        second = Stream(name="job-2", start_s=50, duration_s=70, rate_rps=rate)
        end = 215.0
    return Scenario(
        name="tutorial" + (" (short)" if short else ""),
        streams=(first, second),
        end_s=end,
        time_factor=time_factor,
        metrics=metrics,
        # Prometheus finds a target 5-10 s after it appears (its discovery and scrape
        # managers each pass updates on a fixed 5 s tick in 2.42); in a cluster the pod
        # start-up (minutes for vLLM) hides that, with instant pods it would not
        startup_delay_s=PROMETHEUS_STARTUP_DELAY_S if metrics == "prometheus" else 0.0,
    )


def misprofiled(
    *,
    short: bool = False,
    time_factor: float = 1.0,
    metrics: MetricsPath = "scrape",
    gpu_speed: float = 1.2,
) -> Scenario:
    """The tutorial's first job alone, on GPUs `gpu_speed` times slower than the VA
    declares. At 8 req/s the declared profile puts one replica at 8.2 ms a token, within
    the 9 ms SLO; the emulated GPUs at 1.2 x run it at 9.8 ms. Sizing with the declared
    profile holds one replica and misses the SLO throughout; the adapter learns the
    profile from the pods within seconds and asks for the second replica (8.6 ms)."""
    rate = 8.0 / time_factor
    duration = 80.0 if short else 180.0
    return Scenario(
        name=f"mis-profiled: GPUs {gpu_speed:g} x the VA's profile" + (" (short)" if short else ""),
        streams=(Stream(name="job-1", start_s=0, duration_s=duration, rate_rps=rate),),
        end_s=duration + 10.0,
        time_factor=time_factor,
        metrics=metrics,
        gpu_speed=gpu_speed,
        startup_delay_s=PROMETHEUS_STARTUP_DELAY_S if metrics == "prometheus" else 0.0,
    )
