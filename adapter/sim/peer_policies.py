"""The three peer recipes (`adapter.sim.peers`) as policies of `wva-adapter simulate`.

Each one runs against its own `SimCluster` through the same KEDA/HPA simulator as the
others (`KedaLoop`, with the recipe's `PeerScaledObject.to_spec()`), and reads what the
recipe's PromQL returns from a Prometheus in virtual time (`adapter.sim.promsim`) that
scrapes the cluster every `scrape_interval_s` (15 s):

- `llmd-saturation` (llm-d keda-epp, saturation overlay): at every KEDA poll and HPA
  sync (15 s) the instant values of `max(llm_d_epp_flow_control_pool_saturation)` and
  `sum(llm_d_epp_request_running)` as last scraped; the HPA races the two triggers
  (`llmd_saturation_proposal`). The EPP's gauge is computed at each scrape from the
  ready pods' waiting requests and KV usage (`epp_pool_saturation`: the EPP refreshes
  its endpoints every 50 ms, so it is fresh when scraped); the running gauge counts the
  requests dispatched to any pod and not finished.
- `llmd-slo` (llm-d SLO-aware recipe): the recording rules evaluate right after each
  scrape (one rule group every 15 s, the same instant: the freshest case): P90 of the
  EPP's TTFT and streaming-TPOT histograms over `rate(...[1m])`, raw = the worse of the
  two over their SLOs (the scenario's SLOs), clamped at 2, smoothed by
  `avg_over_time[45s]`; at every KEDA poll / HPA sync (15 s) the formula
  (`slo_desired_replicas`) of the smoothed value and kube-state-metrics' replicas and
  ready replicas, as last scraped.
- `wva-saturation` (WVA v0.9.0, V2 saturation analyzer): every 15 s WVA reads per pod
  `max_over_time(kv_cache_usage[1m])` and `max_over_time(num_requests_waiting[1m])`,
  the average prompt and output tokens per request over `rate(...[5m])`, the cache
  config and the Deployment's replicas (from the API, fresh), decides
  (`wva_desired_replicas`) and publishes `wva_desired_replicas`, which Prometheus scrapes
  like the pods and KEDA reads (poll 5 s, HPA sync 15 s). So the HPA acts on pod data
  up to two scrapes old.

Timing. Every loop starts at `phase_s` (a fraction of the 15 s cycle, as the others);
KEDA polls and the HPA syncs from there (the HPA every 15 s); Prometheus scrapes every
15 s from `scrape_offset_s`, by default half an interval after the loop's instants, so a
reading is 7.5 s old when read (an arbitrary phase in a cluster; half is its mean).
At one instant: scrape, then rules or WVA's cycle, then KEDA/HPA.

Where this simulation departs from the recipes' clusters, on purpose and stated:

- replicas bounds: every policy of a comparison shares `--min-replicas`/`--max-replicas`
  (the recipes ship 1..10, 3..8 and 1..10); the rest of each ScaledObject is the recipe's;
- knobs (`name@value`): llmd-saturation's saturation target (0.7), llmd-slo's
  scale-up threshold (0.55) with the scale-down threshold kept at 0.40/0.55 of it (the
  dead band keeps its proportion), WVA's scaleUpThreshold (0.85) with the
  scaleDownBoundary kept at 0.70/0.85 of it;
- no flow control at the gateway (requests with no ready pod are refused): the EPP's
  queue is always 0, and at saturation pods' own queues grow instead;
- WVA: the engine's `--max-num-seqs` is the pods' batch limit; a pod whose series a query
  still returns after it was deleted is skipped (its owner lookup fails:
  internal/collector/replica_metrics.go `buildInstanceKey`), a terminating one counts;
  prompt and output tokens are averaged over the Deployment's counters (the pods are
  alike), no prefix caching.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Final

from adapter.sim.cluster import SimCluster
from adapter.sim.hpa import DEFAULT_SYNC_PERIOD_SECONDS, KedaDriven, KedaLoop
from adapter.sim.peers import (
    EPP_POOL_SATURATION,
    EPP_QUEUE_SIZE,
    EPP_REQUEST_RUNNING,
    EPP_TPOT,
    EPP_TTFT,
    KSM_READY_REPLICAS,
    KSM_REPLICAS,
    LLMD_RUNNING_TARGET,
    LLMD_SATURATION_TARGET,
    SLO_CAP,
    SLO_CLAMPED_RULE,
    SLO_QUANTILE,
    SLO_RATE_WINDOW_S,
    SLO_RAW_RULE,
    SLO_SMOOTHED_RULE,
    SLO_SMOOTHING_S,
    SLO_THETA_DN,
    SLO_THETA_UP,
    SLO_TPOT_P90_RULE,
    SLO_TTFT_P90_RULE,
    WVA_CYCLE_S,
    WVA_DESIRED_REPLICAS,
    WVA_SCALE_DOWN_BOUNDARY,
    WVA_SCALE_UP_THRESHOLD,
    EndpointLoad,
    PeerScaledObject,
    PoolReadings,
    SaturationSignal,
    WvaConfig,
    WvaDecision,
    WvaReadings,
    WvaReplica,
    WvaState,
    epp_pool_saturation,
    llmd_saturation_proposal,
    llmd_saturation_scaled_object,
    llmd_slo_scaled_object,
    slo_desired_replicas,
    slo_raw_saturation,
    wva_desired_replicas,
    wva_scaled_object,
)
from adapter.sim.promsim import (
    DEFAULT_SCRAPE_INTERVAL_S,
    Prometheus,
    SeriesKey,
    Target,
    avg_over_time,
    histogram_series,
    max_over_time,
)
from adapter.vllm_metrics import (
    KV_CACHE_USAGE,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_GENERATION_TOKENS,
    REQUEST_PROMPT_TOKENS,
)

PEER_CYCLE_S: Final = 15.0  # every recipe's decision period (KEDA polling or WVA's cycle)
POOL: Final = "vllm-pool"  # the InferencePool's name on the EPP's series
STAGES: Final = ("prefill", "decode", "effective")  # no P/D roles: all three equal
WVA_WINDOW_S: Final = 60.0  # max_over_time(...[1m])
WVA_TOKENS_WINDOW_S: Final = 300.0  # rate(...[5m]) of the token histograms


def cluster_target(cluster: SimCluster) -> Target:
    """What Prometheus scrapes from the simulated cluster, as the recipes' series.

    - each serving pod (ready or terminating; a starting pod's vLLM does not answer
      yet): vLLM's running, waiting and KV-usage gauges, label `pod`;
    - the EPP: pool saturation over the ready pods (per stage), running requests, the
      flow-control queue (always 0 here), its TTFT and streaming-TPOT histograms;
    - the Deployment's vLLM prompt and generation token histograms' `_sum` and `_count`
      (the sum over pods; only ratios of their rates are read);
    - kube-state-metrics: the Deployment's status replicas and ready replicas.
    """
    waiting, running = NUM_REQUESTS_WAITING.value, NUM_REQUESTS_RUNNING.value
    kv = KV_CACHE_USAGE.value
    saturation_keys = [
        SeriesKey.of(EPP_POOL_SATURATION, inference_pool=POOL, stage=s) for s in STAGES
    ]
    running_key = SeriesKey.of(EPP_REQUEST_RUNNING)
    queue_key = SeriesKey.of(EPP_QUEUE_SIZE, inference_pool=POOL)
    replicas_key, ready_key = SeriesKey.of(KSM_REPLICAS), SeriesKey.of(KSM_READY_REPLICAS)
    token_keys = (
        SeriesKey.of(REQUEST_PROMPT_TOKENS.sum),
        SeriesKey.of(REQUEST_PROMPT_TOKENS.count),
        SeriesKey.of(REQUEST_GENERATION_TOKENS.sum),
        SeriesKey.of(REQUEST_GENERATION_TOKENS.count),
    )

    def collect() -> dict[SeriesKey, float]:
        out: dict[SeriesKey, float] = {}
        endpoints: list[EndpointLoad] = []
        for pod in cluster.pod_gauges():
            out[SeriesKey.of(waiting, pod=pod.name)] = float(pod.waiting)
            out[SeriesKey.of(running, pod=pod.name)] = float(pod.running)
            out[SeriesKey.of(kv, pod=pod.name)] = pod.kv_cache_usage
            if pod.state == "ready":  # a terminating pod has left the pool
                endpoints.append(EndpointLoad(pod.waiting, pod.kv_cache_usage))
        saturation = epp_pool_saturation(endpoints)
        for key in saturation_keys:
            out[key] = saturation
        gateway = cluster.gateway_gauges()
        out[running_key] = float(gateway.running)
        out[queue_key] = float(gateway.queued)
        ttft, tpot = cluster.gateway_histograms()
        for name, histogram in ((EPP_TTFT, ttft), (EPP_TPOT, tpot)):
            out.update(
                histogram_series(
                    name, histogram.le, histogram.buckets, histogram.sum, histogram.count
                )
            )
        counters = cluster.counters
        values = (
            counters.prompt_tokens,
            counters.success,
            counters.output_tokens,
            counters.success,
        )
        out.update(zip(token_keys, map(float, values), strict=True))
        out[replicas_key] = float(cluster.replicas)
        out[ready_key] = float(cluster.ready_replicas)
        return out

    return collect


class _PeerPolicy:
    """A recipe: Prometheus scraping the cluster, maybe a controller, KEDA + HPA."""

    name: str
    cycle_s: float = PEER_CYCLE_S

    def __init__(
        self,
        cluster: SimCluster,
        recipe: PeerScaledObject,
        metric: Callable[[], float],
        *,
        phase_s: float,
        scrape_offset_s: float | None,
        scrape_interval_s: float,
        extra_targets: tuple[Target, ...] = (),
    ) -> None:
        if not (math.isfinite(phase_s) and phase_s >= 0):
            raise ValueError(f"a loop's first decision must be at >= 0 s, got {phase_s}")
        if scrape_offset_s is None:
            scrape_offset_s = (phase_s + scrape_interval_s / 2.0) % scrape_interval_s
        self.first_cycle_s = float(phase_s)
        self.cluster = cluster
        self.recipe = recipe
        self.prometheus = Prometheus(
            (cluster_target(cluster), *extra_targets),
            interval_s=scrape_interval_s,
            first_scrape_s=scrape_offset_s,
        )
        self.keda = KedaLoop(
            spec=recipe.to_spec(),
            get_metrics=metric,
            initial_replicas=cluster.replicas,
            start=self.first_cycle_s,
            hpa_sync_period=DEFAULT_SYNC_PERIOD_SECONDS,
            tolerance=recipe.hpa_tolerance,
        )
        self._keda = KedaDriven(self.keda, cluster)

    def _next_own(self) -> float:
        """The recipe's own controller's next cycle (none by default)."""
        return math.inf

    def _own(self, now: float) -> None:
        """Run the recipe's own controller at `now` (after the scrape, before KEDA)."""

    def _after_scrape(self, now: float) -> None:
        """What follows each scrape at once (recording rules)."""

    def next_time(self) -> float:
        return min(self.prometheus.next_scrape, self._next_own(), self._keda.next_time())

    def act(self, now: float) -> None:
        if self.prometheus.next_scrape <= now:
            self.prometheus.scrape(now)
            self._after_scrape(now)
        if self._next_own() <= now:
            self._own(now)
        if self._keda.next_time() <= now:
            self._keda.act(now)


def _bounded(recipe: PeerScaledObject, min_replicas: int, max_replicas: int) -> PeerScaledObject:
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError("need 1 <= min_replicas <= max_replicas")
    return replace(recipe, min_replicas=min_replicas, max_replicas=max_replicas)


class LlmdSaturationPolicy(_PeerPolicy):
    """llm-d keda-epp, saturation overlay (see the module docstring)."""

    name = "llmd-saturation"

    def __init__(
        self,
        cluster: SimCluster,
        *,
        min_replicas: int,
        max_replicas: int,
        saturation_target: float = LLMD_SATURATION_TARGET,
        running_target: float = LLMD_RUNNING_TARGET,
        signal: SaturationSignal = "saturation",
        phase_s: float = 0.0,
        scrape_offset_s: float | None = None,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ) -> None:
        """`running_target`: the running-requests trigger's AverageValue (16 in the
        recipe); on loads that keep the batch far from full it is the trigger that sizes,
        the saturation one staying near 0, so it is the knob a user would turn."""
        self.saturation_target = saturation_target
        self.running_target = running_target
        self.signal: SaturationSignal = signal
        recipe = llmd_saturation_scaled_object(
            signal=signal, saturation_target=saturation_target, running_target=running_target
        )
        super().__init__(
            cluster,
            _bounded(recipe, min_replicas, max_replicas),
            self.metric,
            phase_s=phase_s,
            scrape_offset_s=scrape_offset_s,
            scrape_interval_s=scrape_interval_s,
        )

    def readings(self, now: float) -> PoolReadings:
        """The two triggers' queries at `now` (an empty result reads 0: ignoreNullValues)."""
        prometheus = self.prometheus
        saturation = prometheus.instant(EPP_POOL_SATURATION, now).values()
        return PoolReadings(
            pool_saturation=max(saturation, default=0.0),
            running_requests=sum(prometheus.instant(EPP_REQUEST_RUNNING, now).values()),
            queue_size=sum(prometheus.instant(EPP_QUEUE_SIZE, now).values()),
        )

    def metric(self) -> float:
        """The larger of the two triggers' HPA proposals (the pass-through metric of
        `PeerScaledObject.to_spec`), against the Deployment's status replicas now."""
        cluster = self.cluster
        proposal = llmd_saturation_proposal(
            self.readings(cluster.now),
            cluster.replicas,
            signal=self.signal,
            saturation_target=self.saturation_target,
            running_target=self.running_target,
            tolerance=self.recipe.hpa_tolerance,
        )
        return float(proposal.replicas)


class LlmdSloPolicy(_PeerPolicy):
    """llm-d SLO-aware KEDA recipe (see the module docstring)."""

    name = "llmd-slo"

    def __init__(
        self,
        cluster: SimCluster,
        *,
        min_replicas: int,
        max_replicas: int,
        ttft_slo_s: float,
        tpot_slo_s: float,
        theta_up: float = SLO_THETA_UP,
        phase_s: float = 0.0,
        scrape_offset_s: float | None = None,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ) -> None:
        if not (ttft_slo_s > 0 and tpot_slo_s > 0 and theta_up > 0):
            raise ValueError("the SLOs and theta_up must be > 0")
        self.ttft_slo_s, self.tpot_slo_s = ttft_slo_s, tpot_slo_s
        self.theta_up = theta_up
        self.theta_dn = theta_up * SLO_THETA_DN / SLO_THETA_UP  # the dead band keeps its shape
        super().__init__(
            cluster,
            _bounded(llmd_slo_scaled_object(), min_replicas, max_replicas),
            self.metric,
            phase_s=phase_s,
            scrape_offset_s=scrape_offset_s,
            scrape_interval_s=scrape_interval_s,
        )

    def _after_scrape(self, now: float) -> None:
        """The recording rules, in their group's order, each seeing the ones before."""
        prometheus = self.prometheus
        ttft = prometheus.quantile(SLO_QUANTILE, EPP_TTFT + "_bucket", now, SLO_RATE_WINDOW_S)
        tpot = prometheus.quantile(SLO_QUANTILE, EPP_TPOT + "_bucket", now, SLO_RATE_WINDOW_S)
        # `(histogram_quantile(...) >= 0) or vector(0)`: NaN (no traffic) reads 0
        prometheus.record(SeriesKey.of(SLO_TTFT_P90_RULE), now, ttft if ttft >= 0 else 0.0)
        prometheus.record(SeriesKey.of(SLO_TPOT_P90_RULE), now, tpot if tpot >= 0 else 0.0)
        raw = slo_raw_saturation(ttft, tpot, ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s)
        clamped = SeriesKey.of(SLO_CLAMPED_RULE)
        prometheus.record(SeriesKey.of(SLO_RAW_RULE), now, raw)
        prometheus.record(clamped, now, min(raw, SLO_CAP))
        smoothed = avg_over_time(prometheus.tsdb.samples(clamped, now, SLO_SMOOTHING_S))
        assert smoothed is not None  # the sample just recorded is in the window
        prometheus.record(SeriesKey.of(SLO_SMOOTHED_RULE), now, smoothed)

    def readings(self, now: float) -> tuple[float, float, float]:
        """(s, n, r): the three triggers at `now` (an empty result reads 0)."""
        prometheus = self.prometheus

        def value(name: str) -> float:
            return max(prometheus.instant(name, now).values(), default=0.0)

        return value(SLO_SMOOTHED_RULE), value(KSM_REPLICAS), value(KSM_READY_REPLICAS)

    def metric(self) -> float:
        """The scalingModifiers formula's value: the replica count it asks."""
        s, n, r = self.readings(self.cluster.now)
        return slo_desired_replicas(s, n, r, theta_up=self.theta_up, theta_dn=self.theta_dn)


class WvaSaturationPolicy(_PeerPolicy):
    """WVA v0.9.0's saturation analyzer behind the llm-d guide's ScaledObject (see the
    module docstring)."""

    name = "wva-saturation"
    cycle_s = WVA_CYCLE_S

    def __init__(
        self,
        cluster: SimCluster,
        *,
        min_replicas: int,
        max_replicas: int,
        scale_up_threshold: float = WVA_SCALE_UP_THRESHOLD,
        phase_s: float = 0.0,
        scrape_offset_s: float | None = None,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ) -> None:
        self.config = WvaConfig(
            scale_up_threshold=scale_up_threshold,
            scale_down_boundary=scale_up_threshold
            * WVA_SCALE_DOWN_BOUNDARY
            / WVA_SCALE_UP_THRESHOLD,
            max_num_seqs=cluster.settings.profile.max_batch_size,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
        )
        self.state = WvaState()
        self.decision: WvaDecision | None = None  # the last cycle's
        self._cycles = 0
        self._published_key = SeriesKey.of(WVA_DESIRED_REPLICAS, variant_name="vllm")
        super().__init__(
            cluster,
            wva_scaled_object(min_replicas=min_replicas, max_replicas=max_replicas),
            self.metric,
            phase_s=phase_s,
            scrape_offset_s=scrape_offset_s,
            scrape_interval_s=scrape_interval_s,
            extra_targets=(self._published,),
        )

    def _published(self) -> Mapping[SeriesKey, float]:
        """WVA's /metrics: its gauge, once it decided."""
        if self.decision is None:
            return {}
        return {self._published_key: float(self.decision.desired_replicas)}

    def _next_own(self) -> float:
        return self.first_cycle_s + self._cycles * self.cycle_s

    def _own(self, now: float) -> None:
        self._cycles += 1
        decision = wva_desired_replicas(self.readings(now), self.config, self.state)
        self.state = decision.state
        self.decision = decision

    def readings(self, now: float) -> WvaReadings:
        """WVA's queries at `now` and the scale target's status."""
        prometheus, cluster = self.prometheus, self.cluster
        kv = _by_pod(prometheus.over_time(KV_CACHE_USAGE.value, now, WVA_WINDOW_S, max_over_time))
        waiting = _by_pod(
            prometheus.over_time(NUM_REQUESTS_WAITING.value, now, WVA_WINDOW_S, max_over_time)
        )
        prompt = self._average(REQUEST_PROMPT_TOKENS.sum, REQUEST_PROMPT_TOKENS.count, now)
        output = self._average(REQUEST_GENERATION_TOKENS.sum, REQUEST_GENERATION_TOKENS.count, now)
        cache = cluster.cache_config()
        existing = {pod.name for pod in cluster.pod_gauges()}
        replicas = tuple(
            WvaReplica(
                kv_cache_usage=kv[pod],
                waiting=waiting[pod],
                num_gpu_blocks=cache.num_gpu_blocks,
                block_size=cache.block_size,
                avg_input_tokens=prompt,
                avg_output_tokens=output,
            )
            for pod in sorted(kv.keys() & waiting.keys() & existing)
        )
        return WvaReadings(
            replicas=replicas,
            current_replicas=cluster.replicas,
            ready_replicas=cluster.ready_replicas,
            scheduler_queue_size=sum(prometheus.instant(EPP_QUEUE_SIZE, now).values()),
        )

    def _average(self, total: str, count: str, now: float) -> float:
        """rate(total[5m]) / rate(count[5m]); 0 where PromQL gives nothing or NaN."""
        totals = self.prometheus.rate(total, now, WVA_TOKENS_WINDOW_S)
        counts = self.prometheus.rate(count, now, WVA_TOKENS_WINDOW_S)
        numerator, denominator = sum(totals.values()), sum(counts.values())
        if not totals or not counts or denominator <= 0:
            return 0.0
        return numerator / denominator

    def metric(self) -> float:
        """`wva_desired_replicas` as last scraped (an empty result reads 0)."""
        published = self.prometheus.instant(WVA_DESIRED_REPLICAS, self.cluster.now)
        return max(published.values(), default=0.0)


def _by_pod(values: Mapping[SeriesKey, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        pod = key.label("pod")
        if pod is not None:
            out[pod] = max(out.get(pod, value), value)
    return out
