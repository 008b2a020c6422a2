"""The emulated vLLM exposition: real vLLM names, colons kept, values parse back."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from adapter.emulator.metrics import ITL_NEW, ITL_OLD, MetricsServer, VllmMetrics

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    """The single sample of `name` (model m, engine 0), label `le` and reason excepted."""
    found = [v for (n, labels), v in parsed.items() if n == name and ("le", "+Inf") not in labels]
    assert len(found) == 1, (name, found)
    return found[0]


def test_exposition_keeps_colon_names_and_parses_back() -> None:
    metrics = VllmMetrics("m")
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


@pytest.mark.parametrize(("exported", "absent"), [((ITL_NEW,), ITL_OLD), ((ITL_OLD,), ITL_NEW)])
def test_itl_histogram_names_are_configurable(exported: tuple[str], absent: str) -> None:
    metrics = VllmMetrics("m", itl_metrics=exported)
    metrics.record_request(
        prompt_tokens=1, output_tokens=2, queue_time_s=0, ttft_s=0.1, inter_token_latencies_s=[0.05]
    )
    text = metrics.exposition()[0].decode()
    assert f"{exported[0]}_count" in text
    assert absent not in text


def test_unknown_itl_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="itl_metrics"):
        VllmMetrics("m", itl_metrics=["vllm:itl"])


def test_server_serves_classic_format_even_when_openmetrics_is_asked() -> None:
    metrics = VllmMetrics("m")
    metrics.set_gauges(running=7)
    with MetricsServer(metrics) as server, requests.Session() as http:
        response = http.get(server.url, headers={"Accept": OPENMETRICS_ACCEPT}, timeout=5)
        missing = http.get(server.url.replace("/metrics", "/other"), timeout=5)

        assert response.status_code == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
        assert 'vllm:num_requests_running{engine="0",model_name="m"} 7.0' in response.text
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
