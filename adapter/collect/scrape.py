"""Load without Prometheus: scrape each vLLM pod's /metrics and difference two scrapes.

The arrival rate is what entered the pods: completions plus the growth of the requests
in the pod (running + waiting) over the interval. vLLM counts no arrivals, and the
completion rate alone lags a load step by a whole request's duration and overshoots
while a backlog drains (more completions than arrivals right after a scale-up), which
made a closed loop add a replica it did not need. Without those gauges the completion
rate is used. A request its client aborts leaves running + waiting without a completion
(vLLM counts no finish for it), so this estimate misses aborted arrivals.

Each target keeps its last two scrapes; counters become rates over the interval
between them (a counter that went down was reset, e.g. the pod restarted, and counts
from zero; so does the growth of running + waiting, since the old process's requests
were lost, not served). Rates and gauges are then summed by (namespace, model_name),
the same aggregation the PromQL source uses. A window with no completion takes its
token means from the histograms' totals since the pods started.

A target that fails to answer is not read as idle: the models it served at its last
answer are reported incomplete, so their VAs are not sized on a partial load.

The names are those of adapter/vllm_metrics.py. The scraper asks for the classic text
format, which keeps vLLM's colon names, but reads an OpenMetrics answer too (a server
that does not honour the Accept header), whose samples prometheus_client >= 0.23 writes
as `vllm_...`: every sample is read under its colon name, whichever form it came in.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapter.collect.metrics import (
    LoadKey,
    LoadReport,
    MetricsUnavailable,
    MetricsWarmingUp,
    ModelLoad,
    served_models,
)
from adapter.vllm_metrics import (
    ITL_FAMILIES,
    KV_CACHE_USAGE,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    REQUEST_GENERATION_TOKENS,
    REQUEST_PROMPT_TOKENS,
    REQUEST_QUEUE_TIME,
    REQUEST_SUCCESS,
    TIME_TO_FIRST_TOKEN,
    Family,
    canonical,
)

log = logging.getLogger(__name__)

# Ask for the classic text format: it keeps vLLM's colon names whatever the server's
# prometheus_client version (OpenMetrics output of >= 0.23 rewrites them to `_`).
_ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"

_SUCCESS = REQUEST_SUCCESS.total
_PROMPT = REQUEST_PROMPT_TOKENS.name
_OUTPUT = REQUEST_GENERATION_TOKENS.name
_QUEUE = REQUEST_QUEUE_TIME.name
_TTFT = TIME_TO_FIRST_TOKEN.name
# counters rated as they are; the ITL histogram is picked per target (see add_rates)
_RATED = (
    _SUCCESS,
    *(
        name
        for h in (REQUEST_PROMPT_TOKENS, REQUEST_GENERATION_TOKENS, REQUEST_QUEUE_TIME)
        for name in (h.sum, h.count)
    ),
    TIME_TO_FIRST_TOKEN.sum,
    TIME_TO_FIRST_TOKEN.count,
)
_COUNTERS = frozenset([*_RATED, *(name for h in ITL_FAMILIES for name in (h.sum, h.count))])
_RUNNING = NUM_REQUESTS_RUNNING.value
_WAITING = NUM_REQUESTS_WAITING.value
_KV = KV_CACHE_USAGE.value
_GAUGES = frozenset([_RUNNING, _WAITING, _KV])
_TOKEN_TOTALS = frozenset(
    name for h in (REQUEST_PROMPT_TOKENS, REQUEST_GENERATION_TOKENS) for name in (h.sum, h.count)
)
_IN_SYSTEM = (_RUNNING, _WAITING)
# what the optimizer sizes on (arrivals, output length, requests in flight): a pod's odd
# value of one of these makes its model's load unknown; of the others (latencies, KV
# cache, prompt tokens), it is only left out of that quantity
_SIZED_ON = frozenset(
    [_SUCCESS, REQUEST_GENERATION_TOKENS.sum, REQUEST_GENERATION_TOKENS.count, *_IN_SYSTEM]
)
_IN_SYSTEM_GROWTH = "in_system_growth"

Series = tuple[str, str]  # (sample name, model_name), other labels summed away


class ScrapeTarget(BaseModel):
    """One vLLM pod's metrics endpoint and the namespace its load belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="Full URL, e.g. http://10.0.0.7:8000/metrics")
    namespace: str

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("url must start with http:// or https:// and name a host")
        return url


class TargetsFileError(ValueError):
    """A targets file that cannot be used; the message names the file and the entry."""


def load_targets_file(path: Path, default_namespace: str | None = None) -> list[ScrapeTarget]:
    """Targets from a file in Prometheus' file_sd format (JSON or YAML).

    A list of groups `{"targets": ["host:port", ...], "labels": {...}}`. The `namespace`
    label says whose load a target carries (default: `default_namespace`);
    `__scheme__` and `__metrics_path__` work as in Prometheus (http, /metrics).
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise TargetsFileError(f"{path}: {error}") from error
    if document is None:
        return []
    if not isinstance(document, list):
        raise TargetsFileError(f"{path}: expected a list of target groups")
    targets = []
    for index, group in enumerate(document):
        where = f"{path}: group {index}"
        if not isinstance(group, Mapping) or not isinstance(group.get("targets"), list):
            raise TargetsFileError(f"{where}: expected a mapping with a 'targets' list")
        labels = group.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise TargetsFileError(f"{where}: 'labels' must be a mapping")
        namespace = str(labels.get("namespace") or default_namespace or "")
        if not namespace:
            raise TargetsFileError(f"{where}: no 'namespace' label says whose load it carries")
        scheme = str(labels.get("__scheme__") or "http")
        metrics_path = str(labels.get("__metrics_path__") or "/metrics")
        for address in group["targets"]:
            try:
                targets.append(
                    ScrapeTarget(url=f"{scheme}://{address}{metrics_path}", namespace=namespace)
                )
            except ValidationError as error:
                raise TargetsFileError(
                    f"{where}: target {address!r}: {error.errors()[0]['msg']}"
                ) from error
    return targets


class TargetsFile:
    """A targets file re-read when it changes, so scaled pods are followed.

    A file that turns bad keeps the last good list (logged with its path): losing every
    target would read as zero load.
    """

    def __init__(self, path: str | Path, default_namespace: str | None = None) -> None:
        self.path = Path(path)
        self.default_namespace = default_namespace
        self.errors_total = 0
        self._stamp = self._stat()
        self._targets = load_targets_file(self.path, default_namespace)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def targets(self) -> list[ScrapeTarget]:
        stamp = self._stat()
        if stamp != self._stamp:
            try:
                self._targets = load_targets_file(self.path, self.default_namespace)
            except TargetsFileError as error:
                self.errors_total += 1
                log.error("keeping the previous scrape targets: %s", error)
            self._stamp = stamp
        return list(self._targets)


class ScrapeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: tuple[ScrapeTarget, ...] = ()
    timeout_s: float = Field(default=5.0, gt=0)
    max_workers: int = Field(default=10, ge=1, description="Targets scraped concurrently")
    window_s: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Rate over at least this many seconds of scrapes (0: the last interval)",
    )


@dataclass(frozen=True, slots=True)
class Scrape:
    """One target's vLLM series at one moment (also built by the simulator)."""

    at: float  # clock() when the answer arrived
    values: Mapping[Series, float]  # summed over the series' other labels
    series: Mapping[Series, int]  # how many series were summed (to average ratios)
    # series the optimizer sizes on that the pod answered with NaN, an infinity or a
    # negative number: left out of `values`; the model's load is then unknown, not smaller
    odd: Mapping[Series, float] = field(default_factory=dict)


class ScrapeSource:
    """MetricsSource that scrapes the vLLM pods directly.

    `clock` returns monotonic seconds (injected so tests control the intervals).
    `discover`, if given, supplies the targets anew before every collect (a targets
    file that follows the pods).
    After each collect, `last_failures` lists the targets that could not be scraped
    and `failures_total` counts them over the source's life. Not thread-safe: collect
    and set_targets belong to the one thread running the cycle.
    """

    def __init__(
        self,
        settings: ScrapeSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        discover: Callable[[], Iterable[ScrapeTarget]] | None = None,
    ) -> None:
        self.settings = settings
        self._discover = discover
        self._clock = clock
        self._session = session if session is not None else requests.Session()
        self._targets: tuple[ScrapeTarget, ...] = tuple(dict.fromkeys(settings.targets))
        self._history: dict[ScrapeTarget, list[Scrape]] = {}  # oldest first
        self.last_failures: tuple[ScrapeTarget, ...] = ()
        self.failures_total = 0

    @property
    def targets(self) -> tuple[ScrapeTarget, ...]:
        return self._targets

    def set_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Replace the target list (pods come and go); forgotten targets lose their history."""
        self._targets = tuple(dict.fromkeys(targets))  # a duplicate would count twice
        kept = set(self._targets)
        self._history = {t: h for t, h in self._history.items() if t in kept}

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ScrapeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        """Scrape every target once, then report the wanted keys.

        No targets means no pod serves anything: an empty (zero-load) report.
        Raises MetricsUnavailable if every target failed, and MetricsWarmingUp if the
        targets that answered have been scraped once only. If only some failed, the
        models they served (at their last answer) are reported `incomplete`.
        """
        if self._discover is not None:
            self.set_targets(self._discover())
        targets = self._targets
        if not targets:
            return LoadReport()
        workers = min(self.settings.max_workers, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape") as pool:
            answers = list(pool.map(self._scrape, targets))
        results = [a if isinstance(a, Scrape) else None for a in answers]
        errors = {t: a for t, a in zip(targets, answers, strict=True) if isinstance(a, str)}

        failed = tuple(errors)
        self.last_failures = failed
        self.failures_total += len(failed)
        if len(failed) == len(targets):
            raise MetricsUnavailable(
                f"all {len(targets)} vLLM metrics targets failed to scrape"
                f" (first: {targets[0].url})"
            )

        totals = ScrapeTotals()
        rated = 0
        bases: list[tuple[ScrapeTarget, Scrape, Scrape | None, bool]] = []
        window: dict[str, float] = defaultdict(float)  # longest covered span per namespace
        for target, scrape in zip(targets, results, strict=True):
            if scrape is None:
                continue  # keep its older scrape: the next rate spans the gap
            previous, covered = self._base(target, scrape)
            bases.append((target, scrape, previous, covered))
            if previous is not None and covered:
                window[target.namespace] = max(window[target.namespace], scrape.at - previous.at)
        for target, scrape, previous, covered in bases:
            if previous is not None:
                rated += 1
                # A target younger than the window (a pod that just started) adds what
                # it did to the window of the others: as a rate over its own short span
                # it would count again the requests that moved to it from them.
                span = None if covered else window.get(target.namespace)
                totals.add_rates(target.namespace, previous, scrape, span)
            totals.add_gauges(target.namespace, scrape)
        if rated == 0:
            raise MetricsWarmingUp(
                "vLLM metrics targets scraped once only; rates need a second scrape"
            )
        warming = len(targets) - len(failed) - rated
        if warming:
            log.info("%d new vLLM metrics targets have no rate yet", warming)

        wanted = set(keys)
        every = totals.loads()
        loads = {key: load for key, load in every.items() if key in wanted}
        incomplete = self._incomplete(targets, results, errors, wanted)
        for key, reason in _odd_values(targets, results, wanted).items():
            incomplete.setdefault(key, reason)
        return LoadReport(
            loads=loads, queries=len(targets), incomplete=incomplete, served=served_models(every)
        )

    def _incomplete(
        self,
        targets: Sequence[ScrapeTarget],
        results: Sequence[Scrape | None],
        errors: Mapping[ScrapeTarget, str],
        wanted: Collection[LoadKey],
    ) -> dict[LoadKey, str]:
        """The keys that failed targets served at their last good scrape, with why.

        Skipping a failed pod would under-count its model (or read it as idle); which
        model it serves is known only from an earlier answer, so a target that never
        answered is logged and holds nothing back.
        """
        pods: dict[LoadKey, int] = defaultdict(int)  # targets serving the key, failed too
        lost: dict[LoadKey, list[str]] = defaultdict(list)
        for target, scrape in zip(targets, results, strict=True):
            if scrape is not None:
                for model in _models(scrape):
                    pods[target.namespace, model] += 1
                continue
            history = self._history.get(target)
            if not history:
                log.warning(
                    "%s has never answered: its model is unknown, so no load is held back for it",
                    target.url,
                )
                continue
            for model in _models(history[-1]):
                pods[target.namespace, model] += 1
                lost[target.namespace, model].append(f"{target.url}: {errors[target]}")
        return {
            key: f"{len(urls)} of {pods[key]} pods of model {key[1]} in namespace {key[0]}"
            f" failed to scrape ({_first(urls)})"
            for key, urls in lost.items()
            if key in wanted
        }

    def _base(self, target: ScrapeTarget, scrape: Scrape) -> tuple[Scrape | None, bool]:
        """Record `scrape`; return the one to rate against: the newest at least
        `window_s` older (the oldest kept while the window is not yet covered), and
        whether it covers the window."""
        kept = self._history.setdefault(target, [])
        kept.append(scrape)
        cutoff = scrape.at - self.settings.window_s
        base, covered = 0, False
        for i, older in enumerate(kept[:-1]):
            if older.at <= cutoff:
                base, covered = i, True
        del kept[:base]
        return (kept[0] if len(kept) > 1 else None), covered

    def _scrape(self, target: ScrapeTarget) -> Scrape | str:
        """One scrape, or why (logged) the target did not answer with metrics."""
        try:
            response = self._session.get(
                target.url, headers={"Accept": _ACCEPT}, timeout=self.settings.timeout_s
            )
            at = self._clock()
            response.raise_for_status()
            return parse_exposition(response.text, at, response.headers.get("Content-Type"))
        except (requests.RequestException, ValueError) as exc:
            log.warning("cannot scrape %s: %s: %s", target.url, type(exc).__name__, exc)
            return f"{type(exc).__name__}: {exc}"


def parse_exposition(text: str, at: float, content_type: str | None = None) -> Scrape:
    """The vLLM series the adapter reads from one exposition, by (colon name, model).

    `content_type` (the answer's header) says which parser: OpenMetrics for
    `application/openmetrics-text`, the classic text format otherwise. Raises
    ValueError for a body its parser rejects.
    """
    values: dict[Series, float] = defaultdict(float)
    series: dict[Series, int] = defaultdict(int)
    odd: dict[Series, float] = {}
    openmetrics = (content_type or "").lower().startswith("application/openmetrics-text")
    families = (openmetrics_families if openmetrics else text_string_to_metric_families)(text)
    for family in families:
        for sample in family.samples:
            name = canonical(sample.name)
            if name is None or (name not in _COUNTERS and name not in _GAUGES):
                continue
            model = sample.labels.get("model_name")
            # every vLLM family is a count, a duration or a ratio: negative is garbage
            if not model:
                continue
            if math.isfinite(sample.value) and sample.value >= 0:
                values[name, model] += sample.value
                series[name, model] += 1
            elif name in _SIZED_ON:
                odd[name, model] = sample.value
    return Scrape(at=at, values=dict(values), series=dict(series), odd=odd)


class ScrapeTotals:
    """Per (namespace, model) sums of counter rates and gauges across targets."""

    def __init__(self) -> None:
        self.rates: dict[LoadKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[LoadKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.series: dict[LoadKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.totals: dict[LoadKey, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add_rates(
        self, namespace: str, previous: Scrape, current: Scrape, span: float | None = None
    ) -> None:
        """Add the increases from `previous` to `current` as rates over `span` seconds
        (default: the time between the two scrapes)."""
        elapsed = current.at - previous.at
        if elapsed <= 0:
            return
        span = max(span or 0.0, elapsed)
        # A counter that went down: the pod restarted behind the same URL. The requests
        # in the old process when it died are gone, not served: growth counts from 0.
        restarted = any(
            value < previous.values[series]
            for series, value in current.values.items()
            if series[0] in _COUNTERS and series in previous.values
        )
        for model in _models(current):
            # one ITL histogram per target: the newest name the pod exports
            itl = itl_family(current, model)
            names = {name: name for name in _RATED}
            names[itl.sum], names[itl.count] = "itl_sum", "itl_count"
            rates = self.rates[namespace, model]
            for name, as_name in names.items():
                now = current.values.get((name, model))
                before = previous.values.get((name, model))
                if now is None or before is None:
                    continue  # a rate needs the series in both scrapes, as in PromQL
                increase = now - before if now >= before else now  # went down: reset
                rates[as_name] += increase / span
            # arrivals = completions + growth of what is in the pod (running + waiting)
            if all((g, model) in s.values for g in _IN_SYSTEM for s in (previous, current)):
                grown = sum(
                    current.values[g, model] - (0.0 if restarted else previous.values[g, model])
                    for g in _IN_SYSTEM
                )
                rates[_IN_SYSTEM_GROWTH] += grown / span

    def add_gauges(self, namespace: str, current: Scrape) -> None:
        """Add the values read as they are: the gauges, and the token histograms' totals
        since the pod started (the means to fall back on when the window has none)."""
        for (name, model), value in current.values.items():
            if name in _GAUGES:
                self.gauges[namespace, model][name] += value
                self.series[namespace, model][name] += current.series[name, model]
            elif name in _TOKEN_TOTALS:
                self.totals[namespace, model][name] += value

    def loads(self) -> dict[LoadKey, ModelLoad]:
        loads = {}
        all_rates = self.rates
        for key in all_rates.keys() | self.gauges.keys():
            rates = all_rates.get(key, {})
            gauges = self.gauges.get(key, {})
            totals = self.totals.get(key, {})
            kv_series = self.series.get(key, {}).get(_KV, 0)
            loads[key] = ModelLoad(
                namespace=key[0],
                model=key[1],
                arrival_rate_rpm=max(
                    0.0, rates.get(_SUCCESS, 0.0) + rates.get(_IN_SYSTEM_GROWTH, 0.0)
                )
                * 60.0,
                # no completion in the window (e.g. the first cycles with traffic, long
                # requests): the mean since the pods started, rather than no length
                avg_prompt_tokens=_mean_or(rates, totals, _PROMPT),
                avg_output_tokens=_mean_or(rates, totals, _OUTPUT),
                itl_ms=_ms(_mean(rates, "itl")),
                decoding=rates.get("itl_sum") if "itl_count" in rates else None,
                queue_time_ms=_ms(_mean(rates, _QUEUE)),
                ttft_ms=_ms(_mean(rates, _TTFT)),
                running=gauges.get(_RUNNING),
                waiting=gauges.get(_WAITING),
                kv_cache_usage=gauges[_KV] / kv_series if kv_series else None,
            )
        return loads


def itl_family(scrape: Scrape, model: str) -> Family:
    """The per-token latency histogram to read for `model` in `scrape`: the newest name
    there (a 0.11 pod exports both with the same observations; counting both would
    count its tokens twice), the oldest when there is none."""
    for family in ITL_FAMILIES:
        if (family.count, model) in scrape.values:
            return family
    return ITL_FAMILIES[-1]


def _mean(rates: Mapping[str, float], histogram: str) -> float | None:
    """Mean observation over the interval: rate of _sum over rate of _count (None
    without both: a count without its sum is no mean of 0)."""
    count = rates.get(f"{histogram}_count", 0.0)
    total = rates.get(f"{histogram}_sum")
    return total / count if count > 0 and total is not None else None


def _mean_or(rates: Mapping[str, float], totals: Mapping[str, float], histogram: str) -> float:
    """The window's mean, else the mean since the pods started, else 0."""
    for values in (rates, totals):
        mean = _mean(values, histogram)
        if mean is not None:
            return mean
    return 0.0


def _first(items: Sequence[str], shown: int = 3) -> str:
    """A few items and how many more: a reason stays readable when 50 pods fail."""
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000.0 if seconds is not None else None


def _models(scrape: Scrape) -> Sequence[str]:
    return sorted({model for _, model in (*scrape.values, *scrape.odd)})


def _odd_values(
    targets: Sequence[ScrapeTarget], results: Sequence[Scrape | None], wanted: Collection[LoadKey]
) -> dict[LoadKey, str]:
    """The keys a pod answered NaN, an infinity or a negative number for, with why.

    Leaving one pod's value out of a sum would read its model's load as smaller than it
    is (its in-flight requests as none); the value is unknown, so the load is too.
    """
    odd: dict[LoadKey, str] = {}
    for target, scrape in zip(targets, results, strict=True):
        for (name, model), value in sorted((scrape.odd if scrape else {}).items()):
            key = (target.namespace, model)
            if key in wanted and key not in odd:
                odd[key] = f"{target.url} answered {name}={value} for model {model}"
    return odd
