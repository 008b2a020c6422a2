"""Matching the gateway's (EPP's) series to VAs: names, namespaces, the clash, unknowns.

Pure: `attribute` over hand-built samples in the EPP's label shape
(adapter/gateway_metrics.py). The clash (GIE #2309: the EPP's series name no namespace)
is tested with the VA namespaces listed in both orders.
"""

from __future__ import annotations

import math

import pytest

from adapter.collect.gateway import (
    GatewayEndpoint,
    GatewayReport,
    GatewaySample,
    attribute,
    parse_gateway_exposition,
    prometheus_samples,
)
from adapter.gateway_metrics import QUEUE_BYTES, QUEUE_SIZE, RUNNING

MODEL = "unsloth/Meta-Llama-3.1-8B"


def queue(
    value: float,
    *,
    name: str = QUEUE_SIZE.name,
    model: str = MODEL,
    namespace: str | None = None,
    endpoint: str | None = None,
    priority: str = "0",
    target: str | None = None,
) -> GatewaySample:
    labels = {
        "fairness_id": "default",
        "priority": priority,
        "inference_pool": "pool",
        "model_name": model,
        "target_model_name": target if target is not None else model,
    }
    if namespace is not None:
        labels["namespace"] = namespace
    return GatewaySample(name, labels, value, endpoint)


def test_the_queue_is_summed_over_flows_and_priorities_per_target_model() -> None:
    report = attribute(
        [
            queue(3, namespace="team-a"),
            queue(2, namespace="team-a", priority="-10"),
            queue(7, namespace="team-a", model="other"),
            queue(100, name=QUEUE_BYTES.name, namespace="team-a"),
        ],
        [("team-a", MODEL)],
    )
    assert report.waiting(("team-a", MODEL)) == 5
    assert report.queues[("team-a", MODEL)].queue_bytes == 100


def test_a_rewritten_request_counts_for_the_model_it_is_sent_to() -> None:
    report = attribute(
        [queue(4, namespace="team-a", model="alias", target=MODEL)], [("team-a", MODEL)]
    )
    assert report.waiting(("team-a", MODEL)) == 4


def test_the_new_name_wins_and_the_deprecated_mirror_is_not_added() -> None:
    both = [queue(3, namespace="ns"), queue(3, name=QUEUE_SIZE.alias, namespace="ns")]
    assert attribute(both, [("ns", MODEL)]).waiting(("ns", MODEL)) == 3
    # upstream GIE exports the old name only
    old = [queue(2, name=QUEUE_SIZE.alias, namespace="ns")]
    assert attribute(old, [("ns", MODEL)]).waiting(("ns", MODEL)) == 2


def test_a_scraped_endpoints_namespace_places_its_series() -> None:
    report = attribute([queue(6, endpoint="team-b")], [("team-a", MODEL), ("team-b", MODEL)])
    assert report.waiting(("team-b", MODEL)) == 6
    assert report.waiting(("team-a", MODEL)) == 0


def test_no_namespace_and_one_va_serving_the_model_is_that_va() -> None:
    report = attribute([queue(2)], [("team-a", MODEL), ("team-a", "other")])
    assert report.waiting(("team-a", MODEL)) == 2
    assert report.waiting(("team-a", "other")) == 0


@pytest.mark.parametrize("namespaces", [("aaa", "zzz"), ("zzz", "aaa")])
def test_no_namespace_and_two_namespaces_serving_the_model_is_unknown_for_both_only(
    namespaces: tuple[str, str],
) -> None:
    keys = [(namespaces[0], MODEL), ("mmm", "other"), (namespaces[1], MODEL)]
    report = attribute([queue(2), queue(5, model="other")], keys)
    for namespace in namespaces:
        assert report.waiting((namespace, MODEL)) is None
        why = report.why_unknown((namespace, MODEL))
        assert "names no namespace" in why and "aaa, zzz" in why
    # the other model's queue is read as before: the clash changes nothing else
    assert report.waiting(("mmm", "other")) == 5


def test_a_namespaced_series_is_never_ambiguous() -> None:
    keys = [("aaa", MODEL), ("zzz", MODEL)]
    report = attribute([queue(2, namespace="zzz")], keys)
    assert (report.waiting(("aaa", MODEL)), report.waiting(("zzz", MODEL))) == (0, 2)


def test_no_queue_family_means_nothing_held_and_says_the_queue_is_not_exported() -> None:
    # the EPP creates the series at the first request it holds; without flow control it
    # holds nothing: either way nothing waits
    running = GatewaySample(RUNNING.alias, {"model_name": MODEL}, 4.0)
    report = attribute([running], [("ns", MODEL)])
    assert report.waiting(("ns", MODEL)) == 0 and not report.exported
    assert attribute([queue(0, namespace="ns")], [("ns", MODEL)]).exported


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_a_garbage_value_makes_its_model_unknown(bad: float) -> None:
    report = attribute(
        [queue(bad, namespace="ns"), queue(1, namespace="ns", model="other")],
        [("ns", MODEL), ("ns", "other")],
    )
    assert report.waiting(("ns", MODEL)) is None
    assert report.waiting(("ns", "other")) == 1


def test_an_unreadable_gateway_knows_nothing() -> None:
    report = GatewayReport(error="connection refused")
    assert report.waiting(("ns", MODEL)) is None
    assert "connection refused" in report.why_unknown(("ns", MODEL))


def test_the_exposition_and_the_prometheus_answer_give_the_same_samples() -> None:
    text = (
        f"# TYPE {QUEUE_SIZE.name} gauge\n"
        f'{QUEUE_SIZE.name}{{fairness_id="f",inference_pool="p",model_name="{MODEL}",'
        f'priority="0",target_model_name="{MODEL}"}} 3\n'
        "# TYPE unrelated gauge\nunrelated 1\n"
    )
    (scraped,) = parse_gateway_exposition(text, "ns")
    answer = [{"metric": {"__name__": QUEUE_SIZE.name, **scraped.labels}, "value": [0, "3"]}]
    (queried,) = prometheus_samples(answer)
    assert (scraped.name, scraped.value) == (queried.name, queried.value) == (QUEUE_SIZE.name, 3)
    with pytest.raises(ValueError):
        prometheus_samples({"resultType": "matrix"})


@pytest.mark.parametrize(
    ("item", "url", "namespace"),
    [
        ("http://epp:9090/metrics", "http://epp:9090/metrics", None),
        ("team-a=http://epp:9090/metrics", "http://epp:9090/metrics", "team-a"),
        ("http://epp/metrics?x=y", "http://epp/metrics?x=y", None),
    ],
)
def test_gateway_endpoints_parse(item: str, url: str, namespace: str | None) -> None:
    endpoint = GatewayEndpoint.parse(item)
    assert (endpoint.url, endpoint.namespace) == (url, namespace)
