"""vLLM's Prometheus metric vocabulary: every vLLM name the adapter reads or emulates.

One module, so that the readers (pod scraping, PromQL), the emulator, the simulator and
the demo harness cannot drift apart on a name, and pure (standard library only), so the
emulator and the simulator import it without pulling in a collector.

Three things vary, and each reader must accept all of them:

- **The form of a name.** vLLM registers `vllm:`-prefixed families with
  prometheus_client. Asked for the classic text format, prometheus_client writes the
  samples with the colon (`vllm:request_success_total`). Asked for OpenMetrics, as
  Prometheus asks first, prometheus_client 0.23 and newer write the sample lines with
  underscores (`vllm_request_success_total`) while `# TYPE` keeps the colon
  (prometheus/client_python#1177; checked on this machine with the installed 0.26.0:
  `prometheus_client.exposition.choose_encoder` picks `escaping=underscores` for an
  OpenMetrics Accept header). A Prometheus that scraped vLLM in OpenMetrics then holds
  only `vllm_` series, and a query naming `vllm:` finds nothing. `forms()` gives both,
  `canonical()` maps either back to the colon form.
- **The release.** The per-token latency histogram was renamed:
  `vllm:time_per_output_token_seconds` only in 0.10, both names in 0.11 (the old one
  deprecated), `vllm:inter_token_latency_seconds` only in 0.34. `ITL_FAMILIES` lists
  both, newest first, and `exported_families(release)` what a release exports.
- **The sample suffixes** prometheus_client adds: `_total` for a counter, `_sum`,
  `_count`, `_bucket` for a histogram (`Family.total`, `.sum`, `.count`).

Sources: vllm-project/vllm `vllm/v1/metrics/loggers.py` at 005a810bc40faa25b8870fbc8559c3462581eee3
(a V1 engine of the 0.10 line: the names, types and documentation strings below, the
only ITL histogram `vllm:time_per_output_token_seconds`, `vllm:request_success` labelled
by `finished_reason`). The 0.11 and 0.34 ITL names are from the issue's reading of those
releases' `loggers.py`, not checked here. `vllm:gpu_cache_usage_perc`, the pre-0.9 name
of the KV-cache gauge, is deliberately absent: no reader uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

PREFIX: Final = "vllm:"
ESCAPED_PREFIX: Final = "vllm_"

Kind = Literal["counter", "gauge", "histogram"]
VllmRelease = Literal["0.10", "0.11", "0.34"]
RELEASES: Final[tuple[VllmRelease, ...]] = get_args(VllmRelease)
# The emulator's default: the newest release, which exports one ITL name only, so a
# reader that knows only the other name fails against the default emulator too.
DEFAULT_RELEASE: Final[VllmRelease] = "0.34"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as vLLM registers it with prometheus_client (colon form)."""

    name: str
    kind: Kind
    documentation: str

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX) or ":" in self.name[len(PREFIX) :]:
            raise ValueError(f"a vLLM family name is {PREFIX}<name>, not {self.name!r}")

    def _sample(self, suffix: str, *kinds: Kind) -> str:
        if self.kind not in kinds:
            raise ValueError(f"{self.name} is a {self.kind}: it has no {suffix} sample")
        return self.name + suffix

    @property
    def total(self) -> str:
        """A counter's sample (prometheus_client appends `_total`)."""
        return self._sample("_total", "counter")

    @property
    def sum(self) -> str:
        return self._sample("_sum", "histogram")

    @property
    def count(self) -> str:
        return self._sample("_count", "histogram")

    @property
    def bucket(self) -> str:
        return self._sample("_bucket", "histogram")

    @property
    def value(self) -> str:
        """A gauge's sample: the family's own name."""
        return self._sample("", "gauge")

    @property
    def samples(self) -> tuple[str, ...]:
        """Every sample name a scrape of this family shows (colon form)."""
        if self.kind == "counter":
            return (self.total,)
        if self.kind == "gauge":
            return (self.value,)
        return (self.sum, self.count, self.bucket)


# --- the families (documentation strings as vLLM's) -------------------------------------

REQUEST_SUCCESS: Final = Family(
    "vllm:request_success", "counter", "Count of successfully processed requests."
)
PROMPT_TOKENS: Final = Family(
    "vllm:prompt_tokens", "counter", "Number of prefill tokens processed."
)
GENERATION_TOKENS: Final = Family(
    "vllm:generation_tokens", "counter", "Number of generation tokens processed."
)
REQUEST_PROMPT_TOKENS: Final = Family(
    "vllm:request_prompt_tokens", "histogram", "Number of prefill tokens processed."
)
REQUEST_GENERATION_TOKENS: Final = Family(
    "vllm:request_generation_tokens", "histogram", "Number of generation tokens processed."
)
TIME_TO_FIRST_TOKEN: Final = Family(
    "vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds."
)
INTER_TOKEN_LATENCY: Final = Family(
    "vllm:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency in seconds."
)
TIME_PER_OUTPUT_TOKEN: Final = Family(
    "vllm:time_per_output_token_seconds",
    "histogram",
    "Histogram of time per output token in seconds.",
)
REQUEST_QUEUE_TIME: Final = Family(
    "vllm:request_queue_time_seconds",
    "histogram",
    "Histogram of time spent in WAITING phase for request.",
)
E2E_REQUEST_LATENCY: Final = Family(
    "vllm:e2e_request_latency_seconds", "histogram", "Histogram of e2e request latency in seconds."
)
NUM_REQUESTS_RUNNING: Final = Family(
    "vllm:num_requests_running", "gauge", "Number of requests in model execution batches."
)
NUM_REQUESTS_WAITING: Final = Family(
    "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."
)
KV_CACHE_USAGE: Final = Family(
    "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."
)

# --- histogram bucket bounds (seconds) ------------------------------------------------
# vLLM centralises its buckets in vllm-project/vllm vllm/v1/metrics/buckets.py at
# 3168f587f0555dda23ee852316697cc12f314eab (`DEFAULT_BUCKETS`): PREFILL_LATENCY for the
# time to first token, TOKEN_STEP_LATENCY for the inter-token latency and the per-request
# time per output token (both ITL names). The same bounds as loggers.py at
# 005a810bc40faa25b8870fbc8559c3462581eee3, before they were centralised. The emulator and
# the simulator observe into exactly these: histogram_quantile interpolates inside a
# bucket, so other bounds would give other quantiles.

TTFT_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S: Final[tuple[float, ...]] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip

# The per-token latency histogram under its names, newest first: where a pod exports
# both (0.11), readers take the new one, so its tokens are not counted twice.
ITL_FAMILIES: Final = (INTER_TOKEN_LATENCY, TIME_PER_OUTPUT_TOKEN)

FAMILIES: Final = (
    REQUEST_SUCCESS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    REQUEST_PROMPT_TOKENS,
    REQUEST_GENERATION_TOKENS,
    TIME_TO_FIRST_TOKEN,
    *ITL_FAMILIES,
    REQUEST_QUEUE_TIME,
    E2E_REQUEST_LATENCY,
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    KV_CACHE_USAGE,
)

_ITL_BY_RELEASE: Final[dict[VllmRelease, tuple[Family, ...]]] = {
    "0.10": (TIME_PER_OUTPUT_TOKEN,),
    "0.11": (INTER_TOKEN_LATENCY, TIME_PER_OUTPUT_TOKEN),
    "0.34": (INTER_TOKEN_LATENCY,),
}

# Values of `finished_reason` every V1 release pre-creates at zero (vLLM makes one child
# of `vllm:request_success` per FinishReason at start-up; later releases add more).
FINISHED_REASONS: Final = ("stop", "length", "abort")


def release(version: str) -> VllmRelease:
    """`version` as a known release, or ValueError naming the known ones."""
    for known in RELEASES:
        if version == known:
            return known
    raise ValueError(f"unknown vLLM release {version!r}; known: {', '.join(RELEASES)}")


def itl_families(version: VllmRelease) -> tuple[Family, ...]:
    """The per-token latency histogram(s) a release exports, newest name first."""
    return _ITL_BY_RELEASE[version]


def exported_families(version: VllmRelease) -> tuple[Family, ...]:
    """The families of this vocabulary that a release exports, in FAMILIES order."""
    itl = _ITL_BY_RELEASE[version]
    return tuple(f for f in FAMILIES if f not in ITL_FAMILIES or f in itl)


def escaped(name: str) -> str:
    """A colon-form name as prometheus_client's OpenMetrics output writes its samples."""
    if not name.startswith(PREFIX):
        raise ValueError(f"not a vLLM name: {name!r}")
    return ESCAPED_PREFIX + name[len(PREFIX) :]


def forms(name: str) -> tuple[str, str]:
    """Both forms a sample of a vLLM family may be stored under: (colon, escaped)."""
    return name, escaped(name)


_CANONICAL: Final[dict[str, str]] = {
    form: sample for family in FAMILIES for sample in family.samples for form in forms(sample)
}


def canonical(sample_name: str) -> str | None:
    """The colon form of a known vLLM sample name in either form, else None."""
    return _CANONICAL.get(sample_name)
