"""The list+watch cache against the fake API server, through the official `kubernetes` client."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from adapter.assemble import build_system
from adapter.clock import ManualClock
from adapter.collect.kube import (
    CacheSettings,
    ClusterSnapshot,
    KubeCache,
    SyncState,
    exponential_backoff,
    watch_timeout_for,
)
from adapter.collect.sync import PartitionSync
from adapter.model.kube import GROUP, PLURAL, VERSION, VariantAutoscalingStatus, slim_object
from adapter.model.system import parse_system
from tests.fakes.kube_api import FakeKubeAPI
from tests.kube_helpers import assert_tutorial_system, sample_objects, tutorial_load

WAIT = 10.0


def is_va_request(method: str, path: str) -> bool:
    return method == "GET" and PLURAL in path


class RecordingSleep:
    """The cache's `sleep`: records each wait (thread name, seconds), returns at once."""

    def __init__(self) -> None:
        self.waits: list[tuple[str, float]] = []
        self._cond = threading.Condition()

    def __call__(self, _stop: threading.Event, seconds: float) -> None:
        with self._cond:
            self.waits.append((threading.current_thread().name, seconds))
            self._cond.notify_all()

    def of(self, kind: str) -> list[float]:
        with self._cond:
            return [s for thread, s in self.waits if f"-{kind}-" in thread]

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, WAIT), self.waits


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

    watches_open(fake, cache)
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


def test_the_backoff_schedule_doubles_from_half_a_second_to_a_30_s_cap() -> None:
    assert [exponential_backoff(jitter=0.0)(n) for n in range(1, 10)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
        30.0,
    ]
    jittered = exponential_backoff(rng=random.Random(7))
    for attempt, nominal in enumerate((0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0), start=1):
        delays = [jittered(attempt) for _ in range(50)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays)
        assert max(delays) - min(delays) > 0.1 * nominal  # replicas do not retry in step


def test_server_errors_are_retried_with_the_real_backoff_growing_capped_and_reset(
    fake: FakeKubeAPI, api: client.ApiClient
) -> None:
    """The cache's own backoff (no `backoff=`), its waits recorded instead of slept."""
    sleep = RecordingSleep()
    with KubeCache(api, CacheSettings(watch_timeout_seconds=30), sleep=sleep) as kube:
        assert kube.wait_synced(WAIT)
        create(api, va("a"))
        wait_names(kube, {"a"})  # the watch delivered an event: it made progress
        fake.fail_next(11, 500, is_va_request)
        fake.drop_watches()
        # the drop, then 11 answers 500 in a row: 12 waits, none reset in between
        sleep.wait_for(lambda: len(sleep.of("VariantAutoscaling")) >= 12)
        create(api, va("b"))
        wait_names(kube, {"a", "b"})  # resumed, and an event arrived: progress again
        fake.drop_watches()
        sleep.wait_for(lambda: len(sleep.of("VariantAutoscaling")) >= 13)
    waits = sleep.of("VariantAutoscaling")
    nominal = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    for got, expected in zip(waits, nominal, strict=False):
        assert 0.8 * expected <= got <= 1.2 * expected, (waits, nominal)
    assert all(b > a for a, b in itertools.pairwise(waits[:7])), "grows until the cap"
    assert max(waits) <= 36.0, "capped at 30 s (+20 % jitter)"
    assert 0.4 <= waits[12] <= 0.6, "a try that made progress starts the schedule again"


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


# ---------------------------------------------------------------- pagination


def va_list_requests(fake: FakeKubeAPI) -> list[dict[str, str]]:
    return [r.query for r in fake.requests_matching("GET", PLURAL) if "watch" not in r.query]


def test_a_list_of_several_pages_arrives_complete(
    fake: FakeKubeAPI, api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    for i in range(7):
        create(api, va(f"va-{i}"))
    settings = CacheSettings(watch_timeout_seconds=30, page_size=3)
    with KubeCache(api, settings, backoff=backoff) as kube:
        assert kube.wait_synced(WAIT)
        assert va_names(kube.snapshot()) == {f"va-{i}" for i in range(7)}
        # and the watch goes on from the list's resourceVersion
        create(api, va("late"))
        wait_names(kube, {*(f"va-{i}" for i in range(7)), "late"})
    pages = va_list_requests(fake)
    assert [q.get("limit") for q in pages] == ["3", "3", "3"]
    assert ["continue" in q for q in pages] == [False, True, True]
    assert backoff.calls == []


def test_an_expired_continue_token_relists_in_one_request(
    fake: FakeKubeAPI,
    api: client.ApiClient,
    backoff: RecordingBackoff,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(5):
        create(api, va(f"va-{i}"))
    fake.expire_continue_next(1)  # the list's snapshot is compacted after its first page
    settings = CacheSettings(watch_timeout_seconds=30, page_size=2)
    with (
        caplog.at_level(logging.INFO, "adapter.collect.kube"),
        KubeCache(api, settings, backoff=backoff) as kube,
    ):
        assert kube.wait_synced(WAIT)
        assert va_names(kube.snapshot()) == {f"va-{i}" for i in range(5)}
    pages = va_list_requests(fake)
    assert [(q.get("limit"), "continue" in q) for q in pages] == [
        ("2", False),
        ("2", True),  # 410 Expired
        (None, False),  # client-go's pager fallback: the whole list at once
    ]
    assert backoff.calls == [], "an expired token is not a failure to back off from"
    assert any("continue token expired" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- sync: proofs and age


def partition(state: SyncState, kind: str) -> PartitionSync:
    (found,) = [p for p in state.partitions if p.kind == kind]
    return found


def va_age(state: SyncState) -> float:
    return state.age(partition(state, "VariantAutoscaling"))


def watching(kube: KubeCache) -> SyncState:
    """Once every partition has listed and opened its watch: no proof is on its way
    that the clock could date after a test advances it."""
    state = kube.wait_sync(lambda s: all(p.watching for p in s.partitions), WAIT)
    assert state is not None, kube.sync_state()
    return state


def watches_open(fake: FakeKubeAPI, kube: KubeCache) -> None:
    """Once every partition's watch is open at the server too, so that `drop_watches()`
    cuts all of them: a reflector counts as watching as soon as its request is sent."""
    assert fake.wait_open_watches(len(watching(kube).partitions), WAIT), fake.open_watches()


def test_a_list_proves_sync_and_a_snapshot_carries_its_age(
    fake: FakeKubeAPI, api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    clock = ManualClock()
    settings = CacheSettings(watch_timeout_seconds=15)  # stale past max(limit, 2 x 15 s)
    kube = KubeCache(api, settings, backoff=backoff, clock=clock)
    clock.advance(5)
    never = kube.sync_state()
    assert {p.synced_at for p in never.partitions} == {None}
    assert never.ages()["Node"] == 5.0  # never in sync: counted from the cache's creation
    fake.fail_next(10**9, 503, is_va_request, watch=True)  # VAs: only their list proves
    with kube:
        state = kube.wait_sync(
            lambda s: (
                partition(s, "VariantAutoscaling").api_errors >= 1
                and all(p.watching for p in s.partitions if p.kind != "VariantAutoscaling")
            ),
            WAIT,
        )
        assert state is not None
        listed = partition(state, "VariantAutoscaling")
        assert (listed.synced_at, listed.watching) == (5.0, False)
        clock.advance(40)  # a quiet cluster: no event, no bookmark, no renewal yet
        snap = kube.snapshot()
    assert snap.sync is not None
    assert dict(snap.sync.ages()) == {
        "VariantAutoscaling": 40.0,
        "Deployment": 40.0,
        "ConfigMap": 40.0,
        "Node": 40.0,
    }
    assert snap.sync.behind(45.0) == ()
    assert snap.sync.limit(20.0) == 30.0, "never below two watch renewals"
    assert [p.name for p, _age in snap.sync.behind(39.0)] == [
        "VariantAutoscaling (all namespaces)",
        "Deployment (all namespaces)",
        "ConfigMap (inferno-autoscaler-system)",
        "Node (all namespaces)",
    ]


def test_events_prove_sync_of_their_resource_only(
    api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    clock = ManualClock()
    with KubeCache(
        api, CacheSettings(watch_timeout_seconds=30), backoff=backoff, clock=clock
    ) as kube:
        watching(kube)
        clock.advance(100)
        create(api, va("a"))
        state = kube.wait_sync(lambda s: va_age(s) == 0.0, WAIT)
        assert state is not None
        assert state.ages()["Node"] == 100.0


def test_bookmarks_advance_the_resource_version_and_prove_sync(
    fake: FakeKubeAPI, api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    clock = ManualClock()
    create(api, va("a"))
    with KubeCache(
        api, CacheSettings(watch_timeout_seconds=30), backoff=backoff, clock=clock
    ) as kube:
        before = partition(watching(kube), "VariantAutoscaling").resource_version
        clock.advance(100)
        assert va_age(kube.sync_state()) == 100.0  # a quiet watch proves nothing by itself
        # other kinds change: the server's resourceVersion moves past the VA watch's
        client.CoreV1Api(api).create_node({"metadata": {"name": "n1"}})  # type: ignore[arg-type]
        latest = str(fake.store.last_rv)
        assert int(latest) > int(before)
        fake.send_bookmarks()
        state = kube.wait_sync(
            lambda s: partition(s, "VariantAutoscaling").resource_version == latest, WAIT
        )
        assert state is not None
        assert va_age(state) == 0.0
        # a resumed watch starts from the bookmark's version: no replay, no relist
        lists = va_lists(fake)
        clock.advance(10)
        fake.drop_watches()
        assert kube.wait_sync(lambda s: va_age(s) == 0.0, WAIT) is not None
        resumed = [
            r.query.get("resourceVersion")
            for r in fake.requests_matching("GET", PLURAL, watch="true")
        ]
        assert resumed[-1] == latest
        assert va_lists(fake) == lists


def test_a_quiet_watch_is_proven_at_every_renewal(
    api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    """No event, no bookmark: the server ends the watch at its timeout (2 s here) and the
    next one opens; both prove the partition in sync again."""
    clock = ManualClock()
    with KubeCache(
        api, CacheSettings(watch_timeout_seconds=2), backoff=backoff, clock=clock
    ) as kube:
        assert kube.wait_synced(WAIT)
        clock.advance(300)
        state = kube.wait_sync(lambda s: max(s.ages().values()) == 0.0, WAIT)
        assert state is not None
    assert backoff.calls == [], "a normal end of a watch is not a failure"


def test_a_watch_refused_at_once_proves_nothing(
    fake: FakeKubeAPI, api: client.ApiClient, backoff: RecordingBackoff
) -> None:
    """A resume after compaction is accepted (200) then refused (ERROR 410): its opening
    is taken back, so while the relist fails the age goes on counting."""
    create(api, va("a"))
    clock = ManualClock()
    with KubeCache(
        api, CacheSettings(watch_timeout_seconds=30), backoff=backoff, clock=clock
    ) as kube:
        watches_open(fake, kube)
        backoff.hold()
        fake.drop_watches()
        backoff.wait_calls(lambda calls: any("VariantAutoscaling" in t for t, _ in calls))
        clock.advance(100)
        create(api, {"kind": "Node", "metadata": {"name": "n1"}})  # past the VAs' version
        fake.compact()  # so the VA watch's resume is refused: 410
        fake.fail_next(10_000, 503, is_va_request, watch=False)  # and its relists fail
        errors = partition(kube.sync_state(), "VariantAutoscaling").api_errors
        backoff.release()
        state = kube.wait_sync(
            lambda s: partition(s, "VariantAutoscaling").api_errors >= errors + 3, WAIT
        )
        assert state is not None
        assert va_age(state) == 100.0
        fake.clear_faults()
        assert kube.wait_sync(lambda s: va_age(s) == 0.0, WAIT) is not None


def test_the_watch_timeout_keeps_a_quiet_partition_within_the_staleness_limit() -> None:
    assert watch_timeout_for(45.0) == 22 == CacheSettings().watch_timeout_seconds
    assert watch_timeout_for(10.0) == 5
    assert watch_timeout_for(1.0) == 1
    assert watch_timeout_for(3600.0) == 300


# ---------------------------------------------------------------- errors


def test_an_unexpected_error_logs_its_traceback_and_counts_apart_from_api_errors(
    fake: FakeKubeAPI,
    api: client.ApiClient,
    cache: KubeCache,
    backoff: RecordingBackoff,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = slim_object
    broken = {"left": 1}

    def buggy(kind: str, obj: Any) -> dict[str, Any]:
        if obj.get("metadata", {}).get("name") == "boom" and broken["left"]:
            broken["left"] -= 1
            raise KeyError("a bug in the cache")
        return real(kind, obj)

    monkeypatch.setattr("adapter.collect.kube.slim_object", buggy)
    with caplog.at_level(logging.WARNING, "adapter.collect.kube"):
        create(api, va("boom"))
        wait_names(cache, {"boom"})  # retried: the event comes again from the same version
        fake.fail_next(1, 500, is_va_request)
        fake.drop_watches()
        create(api, va("after"))
        wait_names(cache, {"boom", "after"})
    state = cache.sync_state()
    assert state.errors()[("VariantAutoscaling", "unexpected")] == 1
    assert state.errors()[("VariantAutoscaling", "api")] == 2  # the drop and the 500
    records = [r for r in caplog.records if "VariantAutoscaling" in r.getMessage()]
    bug = [r for r in records if r.levelno == logging.ERROR]
    assert len(bug) == 1 and bug[0].exc_info is not None
    assert "unexpected KeyError" in bug[0].getMessage()
    api_failures = [r for r in records if r.levelno == logging.WARNING]
    assert len(api_failures) == 2 and all(r.exc_info is None for r in api_failures)
