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
`from_zero` starts the Deployment at 0 replicas behind a gateway that holds requests (an
llm-d router's flow control): the first request wakes it, and an idle tail parks it again.
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
    initial_replicas: int = Field(
        default=1,
        ge=0,
        description="the Deployment's replicas at the start; 0 needs min_replicas 0 and a"
        " gateway that holds requests (gateway_hold_s), which wakes it",
    )
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
    scale_to_zero_after_s: float = Field(
        default=0.0,
        ge=0,
        description="with min_replicas 0: the adapter's --scale-to-zero-after, how long an"
        " idle variant is held at 1 replica before it answers 0 (0: at once, the"
        " optimizer's answer as is)",
    )
    gateway_hold_s: float = Field(
        default=0.0,
        ge=0,
        description="> 0: the emulator's gateway holds a request up to this long while no"
        " replica is ready (an llm-d router's flow control), the adapter reads its queue"
        " (--gateway) to wake a variant at zero, and KEDA's external-push trigger is"
        " emulated (StreamIsActive activates at once); 0: a Service, 503 with no replica",
    )
    complete_requests: bool = Field(
        default=False,
        description="each stream sends rate x duration requests and waits for every answer"
        " (guidellm max_requests), so every request sent is accounted for; False: it stops"
        " at its duration and cancels what is in flight (max_duration)",
    )

    @model_validator(mode="after")
    def _streams_fit(self) -> Scenario:
        for stream in self.streams:
            if stream.end_s > self.end_s:
                raise ValueError(f"stream {stream.name} ends after the run ({self.end_s:g} s)")
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas > max_replicas")
        if self.initial_replicas > self.max_replicas:
            raise ValueError("initial_replicas > max_replicas")
        if self.initial_replicas == 0 and self.min_replicas != 0:
            # KEDA/HPA would never start one: the HPA is disabled at 0 unless min is 0
            raise ValueError("initial_replicas 0 needs min_replicas 0")
        if self.initial_replicas == 0 and self.gateway_hold_s == 0:
            raise ValueError(
                "initial_replicas 0 needs a gateway that holds requests (gateway_hold_s > 0):"
                " its queue is what wakes a Deployment at zero, without it every request"
                " fails before any replica exists"
            )
        if self.gateway_hold_s > 0 and self.min_replicas != 0:
            raise ValueError("gateway_hold_s (scale from zero) needs min_replicas 0")
        if self.gateway_hold_s > 0 and self.metrics != "scrape":
            raise ValueError(
                "scale from zero (gateway_hold_s) runs with the pods scraped (metrics"
                " 'scrape') only: Prometheus has no pod to scrape before the first wake-up"
            )
        if self.metrics == "prometheus" and self.rate_window_s < 2 * self.scrape_interval_s:
            # rate() and delta() need two samples in the window
            raise ValueError("with Prometheus, rate_window_s must span two scrape intervals")
        return self

    @property
    def idle_start(self) -> bool:
        """Whether the run starts without load: the first stream starts after 0."""
        return min(s.start_s for s in self.streams) > 0

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


def from_zero(
    *, short: bool = False, time_factor: float = 1.0, metrics: MetricsPath = "scrape"
) -> Scenario:
    """Scale from zero and back: the Deployment starts at 0 replicas behind a gateway
    that holds requests (an llm-d router's flow control). After an idle start the first
    stream's first request waits at the gateway; the adapter reads that queue (--gateway)
    and StreamIsActive pushes the wake-up, KEDA activates one replica, which serves the
    held requests once started (`startup_delay_s`). A second stream on top takes it to 2
    replicas, back to 1 when it stops; once all load has stopped the adapter holds the
    idle variant at 1 replica for `scale_to_zero_after_s`, then answers 0 and KEDA parks
    it after its cooldown. The run ends with an idle tail at 0.

    6 + 6 req/s, not the tutorial's 8 + 8: the adapter sizes for 99 % of requests within
    the 9 ms ITL, which one replica holds up to about 10.5 req/s, so 6 takes one replica
    and 12 two, as 8 and 16 do; but one replica still serves 12 req/s at 8.7 ms a token,
    within the SLO while the second one starts, and 16 at 9.9 ms. Measured at 8 + 8:
    85 % of requests within the SLO, the misses (9.0-9.1 ms) all sent in the seconds
    before the second replica served; at 6 + 6: 100 %. The backlog held through the
    wake-up (32 requests at 6 req/s, 42 at 8) missed it in neither.

    The short run (CI): 15 s idle, job-1 for 28 s, job-2 on top from its 8th second for
    12 s, a retention of 10 s, KEDA's cooldown 5 s, 125 s in all. The full run: 30 s
    idle, 90 s and 40 s from the 25th, a retention of 20 s, 330 s in all.

    Only the scrape metrics path: before the first wake-up there is no pod for a
    Prometheus to scrape."""
    if metrics != "scrape":
        raise ValueError(
            "the from-zero scenario runs with --metrics scrape only: before the first"
            " wake-up there is no pod for Prometheus to scrape"
        )
    rate = 6.0 / time_factor
    if short:
        idle, first, second, end = 15.0, 28.0, (8.0, 12.0), 125.0
        retention = 10.0
    else:
        idle, first, second, end = 30.0, 90.0, (25.0, 40.0), 330.0
        retention = 20.0
    return Scenario(
        name="from zero" + (" (short)" if short else ""),
        streams=(
            Stream(name="job-1", start_s=idle, duration_s=first, rate_rps=rate),
            Stream(name="job-2", start_s=idle + second[0], duration_s=second[1], rate_rps=rate),
        ),
        end_s=end,
        time_factor=time_factor,
        metrics=metrics,
        initial_replicas=0,
        min_replicas=0,
        # the adapter's retention holds an idle variant before it answers 0: KEDA's own
        # cooldown only needs to ride over a poll or two
        cooldown_s=5.0,
        scale_to_zero_after_s=retention,
        startup_delay_s=5.0,
        gateway_hold_s=120.0,
        complete_requests=True,
    )
