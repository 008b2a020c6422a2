"""What the closed loop records, and what is made of it: the live table, the summary
(reaction times, ITL against the SLO per phase) as JSON, and the plot."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict


class Sample(BaseModel):
    """The loop at one instant (seconds since the loop started)."""

    model_config = ConfigDict(frozen=True)

    t: float
    planned_rps: float
    offered_rps: float  # requests that reached the gateway, over the last period
    completed_rps: float
    itl_ms: float | None  # observed mean ITL of the tokens of the last window
    desired: float | None  # the adapter's GetMetrics answer; None when it refused
    replicas: int  # what KEDA/HPA set
    running: int
    waiting: int
    adapter_error: str = ""
    # the adapter's learned profile (its /metrics), once the pods gave an observation
    learned_alpha_ms: float | None = None
    learned_beta_ms: float | None = None
    learned_in_use: bool | None = None
    held: int = 0  # requests the gateway holds, waiting for a ready replica
    # replicas that hold a GPU: starting, ready and terminating (finishing their running
    # requests); None in recordings made before it was sampled
    pods: int | None = None


HEADER = (
    f"{'t s':>6} {'planned':>7} {'offered':>7} {'done':>6} {'ITL ms':>7} "
    f"{'desired':>7} {'replicas':>8} {'running':>7} {'waiting':>7}"
)


def table_row(sample: Sample) -> str:
    itl = f"{sample.itl_ms:7.2f}" if sample.itl_ms is not None else f"{'-':>7}"
    desired = f"{sample.desired:7g}" if sample.desired is not None else f"{'n/a':>7}"
    return (
        f"{sample.t:6.0f} {sample.planned_rps:7.1f} {sample.offered_rps:7.1f} "
        f"{sample.completed_rps:6.1f} {itl} {desired} {sample.replicas:8d} "
        f"{sample.running:7d} {sample.waiting:7d}"
    )


class LiveTable:
    """Prints the header once, then one row per sample (every `every`-th)."""

    def __init__(self, out: TextIO, every: int = 1) -> None:
        self._out = out
        self._every = max(1, every)
        self._seen = 0

    def __call__(self, sample: Sample) -> None:
        if self._seen == 0:
            self._out.write(HEADER + "\n")
        if self._seen % self._every == 0:
            self._out.write(table_row(sample) + "\n")
            self._out.flush()
        self._seen += 1


class Phase(BaseModel):
    """A stretch of constant planned load, as it was served."""

    start_s: float
    end_s: float
    planned_rps: float
    offered_rps_median: float
    replicas_at_end: int
    replicas_max: int
    itl_ms_median: float | None
    itl_ms_max_settled: float | None  # after the first scale event within the phase + settle
    first_replica_change_s: float | None  # seconds after the phase began


class Requests(BaseModel):
    """Every request the load generator sent, as its reports (guidellm, client side) tell."""

    sent: int  # answered, errored or cut in flight
    completed: int  # answered with every token
    errored: int
    incomplete: int  # in flight when the stream stopped (guidellm cancels them)
    # sent, and still "processing" in the report's final state, so with no outcome in it:
    # guidellm at times writes its report before the last answer is recorded (its
    # progress had counted that one processed)
    unrecorded: int = 0
    missing_reports: list[str]  # streams whose report was not written
    itl_within_slo: int  # completed requests whose mean ITL met the SLO
    first_sent_s: float | None = None  # the run's first request, on the run's clock
    first_token_s: float | None = None  # when its first token came back

    @property
    def failed(self) -> int:
        """Sent and not answered in full, as guidellm saw: errors, requests cut in flight."""
        return self.errored + self.incomplete

    @property
    def itl_attainment_pct(self) -> float | None:
        return 100.0 * self.itl_within_slo / self.completed if self.completed else None


def read_requests(
    reports: Mapping[str, Path],
    streams: Iterable[str],
    slo_itl_ms: float,
    wall_start: float | None,
) -> Requests:
    """The requests in guidellm's JSON reports (one benchmark each), for `streams`:
    counts, the share within the ITL SLO (each request's mean inter-token latency, as
    guidellm measures it: from its first token to its last), and the first request's
    send and first-token times (`wall_start`: the wall clock at the run's t = 0)."""
    sent = completed = errored = incomplete = within = unrecorded = 0
    first: tuple[float, float | None] | None = None  # sent at, first token at (wall)
    missing: list[str] = []
    for name in streams:
        path = reports.get(name)
        if path is None or not path.exists():
            missing.append(name)
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        for benchmark in document["benchmarks"]:
            found = benchmark["requests"]
            for status in ("successful", "errored", "incomplete"):
                for request in found.get(status) or ():
                    sent += 1
                    started = request.get("request_start_time")
                    ttft = request.get("time_to_first_token_ms")
                    if started is not None and (first is None or started < first[0]):
                        token = started + ttft / 1000.0 if ttft is not None else None
                        first = (started, token)
                    if status != "successful":
                        continue
                    completed += 1
                    itl = request.get("inter_token_latency_ms")
                    if itl is not None and itl <= slo_itl_ms:
                        within += 1
            errored += len(found.get("errored") or ())
            incomplete += len(found.get("incomplete") or ())
            processing = int(benchmark.get("scheduler_state", {}).get("processing_requests", 0))
            unrecorded += processing
            sent += processing

    def clock(at: float | None) -> float | None:
        return round(at - wall_start, 3) if at is not None and wall_start is not None else None

    return Requests(
        sent=sent,
        completed=completed,
        errored=errored,
        incomplete=incomplete,
        unrecorded=unrecorded,
        missing_reports=missing,
        itl_within_slo=within,
        first_sent_s=clock(first[0]) if first else None,
        first_token_s=clock(first[1]) if first else None,
    )


class Summary(BaseModel):
    scenario: str
    duration_s: float
    slo_itl_ms: float
    slo_ttft_ms: float
    replicas_path: list[int]  # successive distinct replica counts
    phases: list[Phase]
    itl_attainment_pct: float  # samples with observed ITL within the SLO
    replica_seconds: float
    # (alpha, beta) in ms: the VA's, the emulated GPUs', the adapter's last learned one
    declared_profile_ms: tuple[float, float] | None = None
    gpu_profile_ms: tuple[float, float] | None = None
    learned_profile_ms: tuple[float, float] | None = None
    learned_in_use_from_s: float | None = None  # first sample sized with a learned profile
    # scale to and from zero, and what it saves
    requests: Requests | None = None  # every request sent, from guidellm's reports
    itl_attainment_requests_pct: float | None = None  # completed requests within the ITL SLO
    # a run from zero: the first request's wait at the gateway to its first token
    wake_up_s: float | None = None
    activated_at_s: float | None = None  # KEDA's first activation from zero
    activated_by: str | None = None  # "push" (StreamIsActive) or "poll" (IsActive)
    pushed_true_at_s: float | None = None  # StreamIsActive's first true
    gateway_arrived: int | None = None  # requests the gateway received
    gateway_held: int | None = None  # of which it held, waiting for a ready replica
    gateway_answered: int | None = None  # of which it answered whole (200, every token)
    gpu_seconds: float | None = None  # pods (starting, ready, terminating) x time
    held_at_one_gpu_seconds: float | None = None  # 1 replica x the run's length
    gpu_seconds_ratio: float | None = None  # gpu_seconds / held_at_one_gpu_seconds


def observed_span(
    samples: Sequence[Sample], above_rps: float, *, after: float = 0.0, width: int = 9
) -> tuple[float, float] | None:
    """When the offered load (centred median of `width` samples) was above `above_rps`: the
    first such stretch after `after`, as (start, end).

    guidellm takes tens of seconds to start, more on a busy machine, so a stream begins
    later than planned; judging the loop against the load it really got keeps the
    verdict about the autoscaler, not about the load generator's start-up. A starved
    guidellm also sends in bursts (16 req/s arrived as 11, 10, then 27 in one CI run):
    the median of 9 one-second samples rides over that and still moves with a step."""
    rates = [s.offered_rps for s in samples]
    half = width // 2
    start: float | None = None
    for i, sample in enumerate(samples):
        window = sorted(rates[max(0, i - half) : i + half + 1])  # centred
        median = window[len(window) // 2]
        if start is None and sample.t >= after and median > above_rps:
            start = sample.t
        elif start is not None and median <= above_rps:
            return start, sample.t
    return (start, samples[-1].t) if start is not None else None


def phases(samples: Sequence[Sample], settle_s: float = 10.0) -> list[Phase]:
    """Split the run where the planned rate changes."""
    found: list[Phase] = []
    i = 0
    while i < len(samples):
        j = i
        while j + 1 < len(samples) and samples[j + 1].planned_rps == samples[i].planned_rps:
            j += 1
        part = samples[i : j + 1]
        start, end = part[0].t, part[-1].t
        change = next((s.t for s in part if s.replicas != part[0].replicas), None)
        settled_from = (change if change is not None else start) + settle_s
        itls = [s.itl_ms for s in part if s.itl_ms is not None]
        settled = [s.itl_ms for s in part if s.itl_ms is not None and s.t >= settled_from]
        found.append(
            Phase(
                start_s=start,
                end_s=end,
                planned_rps=part[0].planned_rps,
                offered_rps_median=statistics.median(s.offered_rps for s in part),
                replicas_at_end=part[-1].replicas,
                replicas_max=max(s.replicas for s in part),
                itl_ms_median=statistics.median(itls) if itls else None,
                itl_ms_max_settled=max(settled) if settled else None,
                first_replica_change_s=(change - start) if change is not None else None,
            )
        )
        i = j + 1
    return found


def summarize(
    scenario: str,
    samples: Sequence[Sample],
    slo_itl_ms: float,
    slo_ttft_ms: float,
    *,
    declared_profile_ms: tuple[float, float] | None = None,
    gpu_profile_ms: tuple[float, float] | None = None,
    requests: Requests | None = None,
    from_zero: bool = False,
    activation: tuple[float, str] | None = None,
    pushed_true_at_s: float | None = None,
    gateway: tuple[int, int, int] | None = None,
) -> Summary:
    """`requests`: guidellm's account of them; `from_zero`: the run started at 0
    replicas, so its first request's time to first token is the wake-up; `activation`:
    (when, how) KEDA first activated; `pushed_true_at_s`: when StreamIsActive first sent
    true (a poll in the same instant may activate KEDA first); `gateway`: requests it
    received, held and answered whole."""
    path: list[int] = []
    for s in samples:
        if not path or path[-1] != s.replicas:
            path.append(s.replicas)
    itls = [s.itl_ms for s in samples if s.itl_ms is not None]
    seconds = sum(a.replicas * (b.t - a.t) for a, b in itertools.pairwise(samples))
    gpu = held_at_one = None
    if samples and all(s.pods is not None for s in samples):
        gpu = sum((a.pods or 0) * (b.t - a.t) for a, b in itertools.pairwise(samples))
        held_at_one = samples[-1].t - samples[0].t
    wake_up = None
    if from_zero and requests is not None and requests.first_token_s is not None:
        assert requests.first_sent_s is not None
        wake_up = round(requests.first_token_s - requests.first_sent_s, 3)
    return Summary(
        scenario=scenario,
        duration_s=samples[-1].t if samples else 0.0,
        slo_itl_ms=slo_itl_ms,
        slo_ttft_ms=slo_ttft_ms,
        replicas_path=path,
        phases=phases(samples),
        itl_attainment_pct=(
            100.0 * sum(1 for v in itls if v <= slo_itl_ms) / len(itls) if itls else 0.0
        ),
        replica_seconds=round(seconds, 1),
        declared_profile_ms=declared_profile_ms,
        gpu_profile_ms=gpu_profile_ms,
        learned_profile_ms=_last_learned(samples),
        learned_in_use_from_s=next((s.t for s in samples if s.learned_in_use), None),
        requests=requests,
        itl_attainment_requests_pct=(
            round(requests.itl_attainment_pct, 2)
            if requests is not None and requests.itl_attainment_pct is not None
            else None
        ),
        wake_up_s=wake_up,
        activated_at_s=activation[0] if activation else None,
        activated_by=activation[1] if activation else None,
        pushed_true_at_s=pushed_true_at_s,
        gateway_arrived=gateway[0] if gateway else None,
        gateway_held=gateway[1] if gateway else None,
        gateway_answered=gateway[2] if gateway else None,
        gpu_seconds=round(gpu, 1) if gpu is not None else None,
        held_at_one_gpu_seconds=round(held_at_one, 1) if held_at_one is not None else None,
        gpu_seconds_ratio=(
            round(gpu / held_at_one, 3) if gpu is not None and held_at_one else None
        ),
    )


def _last_learned(samples: Sequence[Sample]) -> tuple[float, float] | None:
    for s in reversed(samples):
        if s.learned_alpha_ms is not None and s.learned_beta_ms is not None:
            return (s.learned_alpha_ms, s.learned_beta_ms)
    return None


def plot(
    samples: Sequence[Sample],
    slo_itl_ms: float,
    path: Path,
    title: str,
    *,
    profiles: Mapping[str, tuple[float, float]] | None = None,
    wake_up: tuple[float, float] | None = None,
    note: str = "",
) -> None:
    """Load, ITL against the SLO, desired and actual replicas over time (PNG); with
    `profiles` ((alpha, beta) by name: the VA's, the GPUs'), the learned step time too.
    `wake_up`: (first request sent, its first token) of a run from zero: shaded on every
    panel, with the requests the gateway held and the pods that hold a GPU drawn too;
    `note`: a line under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    panels = 4 if profiles else 3
    figure, axes = plt.subplots(panels, 1, sharex=True, figsize=(9, 2.5 * panels))
    load, itl, replicas = axes[:3]
    load.plot(t, [s.planned_rps for s in samples], "--", color="grey", label="planned")
    load.plot(t, [s.offered_rps for s in samples], label="offered (gateway)")
    load.plot(t, [s.completed_rps for s in samples], label="completed")
    load.set_ylabel("requests/s")
    load.legend(loc="upper left" if wake_up is not None else "upper right", fontsize="small")
    if wake_up is not None:
        held = load.twinx()
        held.plot(t, [s.held for s in samples], ":", color="black",
                  label="held at the gateway (requests)")  # fmt: skip
        held.set_ylabel("requests held")
        held.set_ylim(bottom=0)
        held.legend(loc="upper right", fontsize="small")
    itl.plot(t, [s.itl_ms if s.itl_ms is not None else float("nan") for s in samples],
             label="observed ITL")  # fmt: skip
    itl.axhline(slo_itl_ms, color="red", linestyle="--", label=f"SLO {slo_itl_ms:g} ms")
    itl.set_ylabel("ms/token")
    itl.legend(loc="upper right", fontsize="small")
    replicas.step(t, [s.desired if s.desired is not None else float("nan") for s in samples],
                  where="post", label="desired (adapter)")  # fmt: skip
    replicas.step(t, [s.replicas for s in samples], where="post", label="actual (KEDA/HPA)")
    if wake_up is not None:
        replicas.step(t, [s.pods if s.pods is not None else float("nan") for s in samples],
                      ":", where="post", label="pods holding a GPU")  # fmt: skip
        for axis in axes:
            axis.axvspan(*wake_up, color="orange", alpha=0.25, linewidth=0)
        replicas.plot([], [], color="orange", alpha=0.4, linewidth=6,
                      label=f"wake-up: {wake_up[1] - wake_up[0]:.1f} s")  # fmt: skip
    replicas.set_ylabel("replicas")
    replicas.set_ylim(bottom=-0.2)
    replicas.legend(loc="upper right", fontsize="small")
    if profiles:
        _plot_profiles(axes[3], samples, profiles)
    axes[-1].set_xlabel("seconds")
    figure.suptitle(f"{title}\n{note}" if note else title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_profiles(
    axis: Any, samples: Sequence[Sample], profiles: Mapping[str, tuple[float, float]]
) -> None:
    """The decode step time at batch 16, learned over time, against the given profiles."""
    batch = 16.0
    t = [s.t for s in samples]
    learned = [
        s.learned_alpha_ms + s.learned_beta_ms * batch
        if s.learned_alpha_ms is not None and s.learned_beta_ms is not None
        else float("nan")
        for s in samples
    ]
    axis.plot(t, learned, label="learned (adapter)")
    for (name, (alpha, beta)), style in zip(profiles.items(), ("--", ":"), strict=False):
        axis.axhline(alpha + beta * batch, color="grey", linestyle=style, label=name)
    in_use = [s.t for s in samples if s.learned_in_use]
    if in_use:
        axis.axvline(in_use[0], color="green", linewidth=1, label="sized with the learned")
    axis.set_ylabel(f"step ms at batch {batch:g}")
    axis.legend(loc="lower right", fontsize="small")
