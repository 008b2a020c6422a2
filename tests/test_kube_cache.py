"""The list+watch cache against the fake API server, through the official `kubernetes` client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from adapter.assemble import build_system
from adapter.collect.kube import CacheSettings, ClusterSnapshot, KubeCache
from adapter.model.kube import GROUP, PLURAL, VERSION, VariantAutoscalingStatus
from adapter.model.system import parse_system
from tests.fakes.kube_api import FakeKubeAPI
from tests.kube_helpers import assert_tutorial_system, sample_objects, tutorial_load

WAIT = 10.0


class RecordingBackoff:
    """Zero delay; records (thread, attempt); can hold reflectors until `release()`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self._called = threading.Condition()
        self._gate = threading.Event()
        self._gate.set()

    def __call__(self, attempt: int) -> float:
        with self._called:
            self.calls.append((threading.current_thread().name, attempt))
            self._called.notify_all()
        self._gate.wait(WAIT)
        return 0.0

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_calls(self, predicate: Callable[[list[tuple[str, int]]], bool]) -> None:
        with self._called:
            assert self._called.wait_for(lambda: predicate(self.calls), WAIT), self.calls


def create(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Create a manifest through the official client, as `kubectl apply` would on first use."""
    kind, ns = obj["kind"], obj["metadata"].get("namespace", "default")
    body: Any = obj  # the client accepts plain manifests as bodies
    if kind == "ConfigMap":
        client.CoreV1Api(api).create_namespaced_config_map(ns, body)
    elif kind == "Node":
        client.CoreV1Api(api).create_node(body)
    elif kind == "Deployment":
        client.AppsV1Api(api).create_namespaced_deployment(ns, body)
    elif kind == "VariantAutoscaling":
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, obj
        )
    else:
        raise AssertionError(kind)


def va(name: str, namespace: str = "vllm-test", model: str = "m") -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"inference.optimization/acceleratorName": "H100"},
        },
        "spec": {
            "modelID": model,
            "modelProfile": {
                "accelerators": [
                    {"acc": "H100", "accCount": 1, "alpha": "1", "beta": "1", "maxBatchSize": 8}
                ]
            },
        },
    }


@pytest.fixture
def backoff() -> RecordingBackoff:
    return RecordingBackoff()


@pytest.fixture
def cache(api: client.ApiClient, backoff: RecordingBackoff) -> Iterator[KubeCache]:
    with KubeCache(api, CacheSettings(watch_timeout_seconds=30), backoff=backoff) as kube:
        assert kube.wait_synced(WAIT)
        yield kube
        backoff.release()


def va_names(snap: ClusterSnapshot) -> set[str]:
    return {name for _ns, name in snap.variant_autoscalings}


def wait_names(cache: KubeCache, names: set[str]) -> ClusterSnapshot:
    snap = cache.wait_for(lambda s: va_names(s) == names, WAIT)
    assert snap is not None, va_names(cache.snapshot())
    return snap


def va_lists(fake: FakeKubeAPI) -> int:
    return sum(1 for r in fake.requests_matching("GET", PLURAL) if r.query.get("watch") != "true")


def test_tutorial_objects_through_the_api_give_the_tutorial_system(
    api: client.ApiClient, cache: KubeCache
) -> None:
    for obj in sample_objects():
        create(api, obj)
    snap = cache.wait_for(
        lambda s: (
            len(s.nodes) == 4
            and len(s.config_maps) == 2
            and bool(s.deployments)
            and bool(s.variant_autoscalings)
        ),
        WAIT,
    )
    assert snap is not None
    assembly = build_system(snap, tutorial_load())
    assert assembly.problems == () and assembly.config_problems == ()
    parsed = parse_system(assembly.system)
    assert parsed.problems == ()
    assert_tutorial_system(parsed.spec)
    assert assembly.servers["vllm:vllm-test"].metadata.resource_version is not None


def test_snapshot_is_immutable_and_unaffected_by_later_events(
    api: client.ApiClient, cache: KubeCache
) -> None:
    create(api, va("a"))
    before = wait_names(cache, {"a"})
    create(api, va("b"))
    wait_names(cache, {"a", "b"})
    assert va_names(before) == {"a"}
    with pytest.raises(TypeError):
        before.variant_autoscalings[("x", "y")] = {}  # type: ignore[index]


def test_watch_sees_add_modify_delete(api: client.ApiClient, cache: KubeCache) -> None:
    custom = client.CustomObjectsApi(api)
    create(api, va("a"))
    wait_names(cache, {"a"})
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "vllm-test", PLURAL, "a", {"spec": {"modelID": "changed"}}
    )
    snap = cache.wait_for(
        lambda s: s.variant_autoscalings[("vllm-test", "a")]["spec"]["modelID"] == "changed", WAIT
    )
    assert snap is not None
    assert snap.variant_autoscalings[("vllm-test", "a")]["metadata"]["generation"] == 2
    custom.delete_namespaced_custom_object(GROUP, VERSION, "vllm-test", PLURAL, "a")
    wait_names(cache, set())


def test_deployments_configmaps_and_nodes_are_watched(
    api: client.ApiClient, cache: KubeCache
) -> None:
    for obj in sample_objects():
        if obj["kind"] != "VariantAutoscaling":
            create(api, obj)
    client.AppsV1Api(api).patch_namespaced_deployment(
        "vllm", "vllm-test", {"spec": {"replicas": 3}}
    )
    snap = cache.wait_for(
        lambda s: s.deployments.get(("vllm-test", "vllm"), {}).get("spec", {}).get("replicas") == 3,
        WAIT,
    )
    assert snap is not None
    # nodes are slimmed to what the adapter reads; unrelated ConfigMaps are not kept
    create(
        api,
        {
            "kind": "ConfigMap",
            "metadata": {"name": "other", "namespace": "inferno-autoscaler-system"},
        },
    )
    client.CoreV1Api(api).delete_node("pokprod-b93r39s1")
    snap = cache.wait_for(lambda s: len(s.nodes) == 3, WAIT)
    assert snap is not None
    assert set(snap.config_maps) == {"accelerator-unit-costs", "service-classes-config"}
    assert set(snap.nodes["pokprod-b93r38s0"]) == {"kind", "metadata", "status"}


def test_dropped_stream_resumes_from_last_resource_version_without_relist(
    fake: FakeKubeAPI, api: client.ApiClient, cache: KubeCache, backoff: RecordingBackoff
) -> None:
    custom = client.CustomObjectsApi(api)
    create(api, va("a"))
    create(api, va("b"))
    snap = wait_names(cache, {"a", "b"})
    last_rv = max(int(o["metadata"]["resourceVersion"]) for o in snap.variant_autoscalings.values())
    lists = va_lists(fake)

    backoff.hold()
    assert fake.drop_watches() >= 4
    backoff.wait_calls(lambda calls: any("VariantAutoscaling" in t for t, _ in calls))
    # changes made while the client is disconnected
    custom.delete_namespaced_custom_object(GROUP, VERSION, "vllm-test", PLURAL, "a")
    create(api, va("c"))
    backoff.release()

    snap = wait_names(cache, {"b", "c"})
    assert va_lists(fake) == lists, "resumed by watching, not by listing again"
    resumed = [
        r
        for r in fake.requests_matching("GET", PLURAL, watch="true")
        if r.query.get("resourceVersion") == str(last_rv)
    ]
    assert resumed, "the watch after the drop resumed from the last resourceVersion seen"
    assert any("VariantAutoscaling" in t and a == 1 for t, a in backoff.calls)


def test_gone_triggers_relist_with_nothing_forgotten_or_duplicated(
    fake: FakeKubeAPI, api: client.ApiClient, cache: KubeCache, backoff: RecordingBackoff
) -> None:
    custom = client.CustomObjectsApi(api)
    for name in ("a", "b", "c"):
        create(api, va(name))
    wait_names(cache, {"a", "b", "c"})
    lists = va_lists(fake)

    backoff.hold()
    fake.drop_watches()
    backoff.wait_calls(lambda calls: any("VariantAutoscaling" in t for t, _ in calls))
    custom.delete_namespaced_custom_object(GROUP, VERSION, "vllm-test", PLURAL, "a")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "vllm-test", PLURAL, "b", {"spec": {"modelID": "b2"}}
    )
    create(api, va("d"))
    fake.compact()  # the events above are gone: a resume must get 410 Expired
    backoff.release()

    snap = cache.wait_for(
        lambda s: (
            va_names(s) == {"b", "c", "d"}
            and s.variant_autoscalings[("vllm-test", "b")]["spec"]["modelID"] == "b2"
        ),
        WAIT,
    )
    assert snap is not None, va_names(cache.snapshot())
    assert va_lists(fake) > lists, "410 led to a relist"
    assert len(snap.variant_autoscalings) == 3
    # and the cache keeps following changes after the relist
    create(api, va("e"))
    wait_names(cache, {"b", "c", "d", "e"})


def test_server_errors_are_retried_with_increasing_backoff(
    fake: FakeKubeAPI, api: client.ApiClient, cache: KubeCache, backoff: RecordingBackoff
) -> None:
    create(api, va("a"))
    wait_names(cache, {"a"})
    fake.fail_next(3, 500, lambda method, path: method == "GET" and PLURAL in path)
    fake.drop_watches()
    create(api, va("b"))
    wait_names(cache, {"a", "b"})
    attempts = [a for t, a in backoff.calls if "VariantAutoscaling" in t]
    # the drop, then three 500 answers: attempts 1..4 without a reset in between
    assert attempts[:4] == [1, 2, 3, 4]


def test_initial_sync_survives_failing_lists(
    fake: FakeKubeAPI, api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    create(api, va("a"))
    fake.fail_next(2, 503, lambda method, path: method == "GET" and "/nodes" in path)
    with KubeCache(api, CacheSettings(watch_timeout_seconds=30), backoff=backoff) as kube:
        assert kube.wait_synced(WAIT)
        assert va_names(kube.snapshot()) == {"a"}
    assert [a for t, a in backoff.calls if "Node" in t] == [1, 2]


def test_namespaced_cache_ignores_other_namespaces(
    api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    create(api, va("a", namespace="team-a"))
    create(api, va("b", namespace="team-b"))
    settings = CacheSettings(namespaces=("team-a",), watch_timeout_seconds=30)
    with KubeCache(api, settings, backoff=backoff) as kube:
        snap = kube.wait_for(lambda s: bool(s.variant_autoscalings), WAIT)
        assert snap is not None
        create(api, va("c", namespace="team-b"))
        create(api, va("d", namespace="team-a"))
        snap = kube.wait_for(lambda s: ("team-a", "d") in s.variant_autoscalings, WAIT)
        assert snap is not None
        assert set(snap.variant_autoscalings) == {("team-a", "a"), ("team-a", "d")}


def test_stop_ends_all_watch_threads_promptly(fake: FakeKubeAPI, api: client.ApiClient) -> None:
    kube = KubeCache(api, CacheSettings(watch_timeout_seconds=600)).start()
    assert kube.wait_synced(WAIT)
    started = time.monotonic()
    kube.stop(timeout=WAIT)
    assert time.monotonic() - started < 5
    assert not any(t.name.startswith("watch-") and t.is_alive() for t in threading.enumerate())


def test_status_writer_patches_only_status(api: client.ApiClient, cache: KubeCache) -> None:
    create(api, va("a"))
    wait_names(cache, {"a"})
    status = VariantAutoscalingStatus.model_validate(
        {
            "currentAlloc": {
                "accelerator": "H100",
                "numReplicas": 1,
                "maxBatch": 256,
                "variantCost": "100.00",
                "itlAverage": "8.46",
                "waitAverage": "0.00",
                "load": {"arrivalRate": "480.00", "avgLength": "512"},
            },
            "desiredOptimizedAlloc": {
                "lastRunTime": "2025-08-20T19:37:49Z",
                "accelerator": "H100",
                "numReplicas": 2,
            },
            "actuation": {"applied": True},
            "conditions": [
                {"type": "OptimizationReady", "status": "True", "reason": "OptimizationSucceeded"}
            ],
        }
    )
    stored = cache.patch_status("vllm-test", "a", status)
    assert stored["status"]["desiredOptimizedAlloc"]["numReplicas"] == 2
    assert stored["spec"]["modelID"] == "m" and stored["metadata"]["generation"] == 1
    snap = cache.wait_for(lambda s: "status" in s.variant_autoscalings[("vllm-test", "a")], WAIT)
    assert snap is not None
    seen = VariantAutoscalingStatus.model_validate(
        snap.variant_autoscalings[("vllm-test", "a")]["status"]
    )
    assert seen == status
    with pytest.raises(client.ApiException) as missing:
        cache.patch_status("vllm-test", "nope", {"actuation": {"applied": False}})
    assert missing.value.status == 404
