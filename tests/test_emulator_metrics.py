"""The emulated vLLM exposition: real vLLM names per release, negotiated like vLLM's
(classic text with colons, or OpenMetrics with the installed prometheus_client's
escaping), values parse back."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from adapter.collect.scrape import parse_exposition
from adapter.emulator.metrics import MetricsServer, VllmMetrics
from adapter.vllm_metrics import RELEASES, VllmRelease

ITL_NEW = "vllm:inter_token_latency_seconds"
ITL_OLD = "vllm:time_per_output_token_seconds"
# what Prometheus 2.42 sends (its binary's scrape Accept header)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    """The samples of `name` (model m, engine 0) summed over `finished_reason`; buckets
    aside. Fails if there is none."""
    found = [v for (n, labels), v in parsed.items() if n == name and "le" not in dict(labels)]
    assert found, name
    return sum(found)


def test_exposition_keeps_colon_names_and_parses_back() -> None:
    metrics = VllmMetrics("m", release="0.11")  # both ITL names
    for _ in range(3):
        metrics.record_request(
            prompt_tokens=100,
            output_tokens=11,
            queue_time_s=0.5,
            ttft_s=0.75,
            inter_token_latencies_s=[0.02] * 10,
        )
    metrics.set_gauges(running=4, waiting=2, kv_cache_usage=0.25)

    body, content_type = metrics.exposition()

    assert content_type == CONTENT_TYPE_PLAIN_0_0_4
    text = body.decode()
    assert "vllm:request_success_total{" in text
    assert "vllm_" not in text and "_created" not in text
    parsed = samples(body)
    assert (
        parsed[
            "vllm:request_success_total",
            frozenset({"model_name": "m", "engine": "0", "finished_reason": "length"}.items()),
        ]
        == 3
    )
    assert value(parsed, "vllm:prompt_tokens_total") == 300
    assert value(parsed, "vllm:generation_tokens_total") == 33
    assert value(parsed, "vllm:request_prompt_tokens_sum") == 300
    assert value(parsed, "vllm:request_prompt_tokens_count") == 3
    assert value(parsed, "vllm:request_generation_tokens_sum") == 33
    assert value(parsed, "vllm:request_queue_time_seconds_sum") == pytest.approx(1.5)
    assert value(parsed, "vllm:time_to_first_token_seconds_sum") == pytest.approx(2.25)
    for itl in (ITL_NEW, ITL_OLD):
        assert value(parsed, f"{itl}_count") == 30
        assert value(parsed, f"{itl}_sum") == pytest.approx(0.6)
    # e2e defaults to TTFT plus the token latencies
    assert value(parsed, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(3 * 0.95)
    assert value(parsed, "vllm:num_requests_running") == 4
    assert value(parsed, "vllm:num_requests_waiting") == 2
    assert value(parsed, "vllm:kv_cache_usage_perc") == 0.25
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["vllm:request_success"] == "counter"
    assert families["vllm:time_to_first_token_seconds"] == "histogram"
    assert families["vllm:kv_cache_usage_perc"] == "gauge"


def test_series_exist_at_zero_before_any_request() -> None:
    parsed = samples(VllmMetrics("m").exposition()[0])
    assert value(parsed, "vllm:request_success_total") == 0
    assert value(parsed, "vllm:request_generation_tokens_count") == 0
    assert value(parsed, "vllm:num_requests_running") == 0


@pytest.mark.parametrize(
    ("release", "exported", "absent"),
    [
        ("0.10", (ITL_OLD,), ITL_NEW),
        ("0.11", (ITL_NEW, ITL_OLD), None),
        ("0.34", (ITL_NEW,), ITL_OLD),
    ],
)
def test_each_release_exports_its_itl_histogram_names(
    release: VllmRelease, exported: tuple[str, ...], absent: str | None
) -> None:
    metrics = VllmMetrics("m", release=release)
    metrics.record_request(
        prompt_tokens=1, output_tokens=2, queue_time_s=0, ttft_s=0.1, inter_token_latencies_s=[0.05]
    )
    text = metrics.exposition()[0].decode()
    for name in exported:
        assert f"{name}_count" in text
    assert absent is None or absent not in text
    # every other family is the same in every release
    assert "vllm:kv_cache_usage_perc{" in text and "vllm:request_success_total{" in text


def test_the_default_release_is_the_newest() -> None:
    assert VllmMetrics("m").release == RELEASES[-1] == "0.34"


def test_unknown_release_is_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"unknown vLLM release '0\.9'; known: 0\.10, 0\.11, 0\.34"
    ):
        VllmMetrics("m", release="0.9")  # type: ignore[arg-type]


def test_openmetrics_is_served_when_asked_for_as_prometheus_does() -> None:
    """As vLLM's /metrics (prometheus_client's negotiation): Prometheus' Accept header gets
    OpenMetrics, whose sample lines the locked prometheus_client (0.26) writes `vllm_...`
    while `# TYPE` keeps the colon (client_python#1177); no Accept header, or the classic
    format asked for, gets colons. The scraper reads both answers alike."""
    metrics = VllmMetrics("m")
    metrics.set_gauges(running=7)
    metrics.record_request(
        prompt_tokens=3, output_tokens=2, queue_time_s=0, ttft_s=0.1, inter_token_latencies_s=[0.05]
    )
    with MetricsServer(metrics) as server, requests.Session() as http:
        negotiated = http.get(server.url, headers={"Accept": PROMETHEUS_ACCEPT}, timeout=5)
        plain = http.get(server.url, timeout=5)
        missing = http.get(server.url.replace("/metrics", "/other"), timeout=5)

    assert negotiated.status_code == 200
    assert negotiated.headers["Content-Type"].startswith("application/openmetrics-text;")
    assert negotiated.text.endswith("# EOF\n")
    assert "# TYPE vllm:num_requests_running gauge" in negotiated.text
    assert 'vllm_num_requests_running{engine="0",model_name="m"} 7.0' in negotiated.text
    assert "vllm:num_requests_running{" not in negotiated.text
    assert "_created" not in negotiated.text
    assert plain.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert 'vllm:num_requests_running{engine="0",model_name="m"} 7.0' in plain.text
    assert "vllm_" not in plain.text
    as_read = parse_exposition(negotiated.text, 0.0, negotiated.headers["Content-Type"])
    assert as_read.values == parse_exposition(plain.text, 0.0).values
    assert as_read.values[ITL_NEW + "_count", "m"] == 1
    assert missing.status_code == 404


def test_server_source_can_be_swapped_to_emulate_a_restart() -> None:
    before = VllmMetrics("m")
    before.record_request(
        prompt_tokens=1, output_tokens=1, queue_time_s=0, ttft_s=0, inter_token_latencies_s=[]
    )
    with MetricsServer(before) as server, requests.Session() as http:
        first = samples(http.get(server.url, timeout=5).content)
        server.source = VllmMetrics("m")
        second = samples(http.get(server.url, timeout=5).content)

    assert value(first, "vllm:request_success_total") == 1
    assert value(second, "vllm:request_success_total") == 0


def test_stopped_server_releases_its_port() -> None:
    server = MetricsServer(VllmMetrics("m")).start()
    url = server.url
    server.stop()
    with pytest.raises(requests.ConnectionError), requests.Session() as http:
        http.get(url, timeout=2)


def test_each_moment_of_a_request_records_what_vllm_records_then() -> None:
    """vLLM (vllm/v1/metrics/stats.py, loggers.py): prompt tokens and TTFT at the first
    token, the inter-token latency per later token, the success counter and the
    per-request histograms at the finish only."""
    metrics = VllmMetrics("m")

    def now() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(metrics.exposition()[0])

    metrics.record_first_token(prompt_tokens=5, ttft_s=0.2)
    first = now()
    assert value(first, "vllm:prompt_tokens_total") == 5
    assert value(first, "vllm:generation_tokens_total") == 1
    assert value(first, "vllm:time_to_first_token_seconds_count") == 1
    assert value(first, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.2)
    assert value(first, f"{ITL_NEW}_count") == 0
    assert value(first, "vllm:request_success_total") == 0
    assert value(first, "vllm:request_prompt_tokens_count") == 0

    metrics.record_tokens(gap_s=0.01, tokens=3)
    decoding = now()
    assert value(decoding, "vllm:generation_tokens_total") == 4
    assert value(decoding, f"{ITL_NEW}_count") == 3
    assert value(decoding, f"{ITL_NEW}_sum") == pytest.approx(0.03)
    assert value(decoding, "vllm:request_success_total") == 0

    metrics.record_finish(prompt_tokens=5, output_tokens=4, queue_time_s=0.05, e2e_s=0.23)
    done = now()
    assert value(done, "vllm:request_prompt_tokens_sum") == 5
    assert value(done, "vllm:request_generation_tokens_sum") == 4
    assert value(done, "vllm:request_queue_time_seconds_sum") == pytest.approx(0.05)
    assert value(done, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(0.23)
    # counted once, at the first token, not again at the finish
    assert value(done, "vllm:prompt_tokens_total") == 5
    assert value(done, "vllm:time_to_first_token_seconds_count") == 1
    reasons = {
        dict(labels)["finished_reason"]: v
        for (name, labels), v in done.items()
        if name == "vllm:request_success_total"
    }
    # vLLM creates a series per finish reason at start-up
    assert reasons == {"stop": 0, "length": 1, "abort": 0}
