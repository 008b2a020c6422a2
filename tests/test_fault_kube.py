"""Kubernetes API faults the cache must survive: a hung API server (client timeouts), a
watch dropped while objects change and disappear, and an outage of minutes that the
engine must notice (decisions withheld after `--staleness`, said on /metrics, in gRPC
and in the status) and recover from by itself. Through the official client against the
fake API server; backoff is recorded or a few ms, and minutes pass on a ManualClock."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import grpc
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, generate_latest

from adapter.clock import ManualClock
from adapter.collect.kube import CacheSettings, KubeCache, watch_timeout_for
from adapter.collect.metrics import LoadKey, LoadReport
from adapter.engine import Engine
from adapter.exporter import SnapshotCollector, reason_code
from adapter.model.kube import GROUP, PLURAL, VERSION, ClusterSnapshot
from adapter.scaler import ScalerSettings
from adapter.scaler.service import Refusal, ScalerService
from adapter.status import OPTIMIZATION_READY, StatusSettings, StatusWriter
from tests.fakes.kube_api import KIND_TO_RESOURCE, FakeKubeAPI
from tests.kube_helpers import sample_objects, tutorial_load
from tests.test_exporter import samples
from tests.test_kube_cache import (
    WAIT,
    RecordingBackoff,
    create,
    is_va_request,
    partition,
    va,
    va_names,
    watches_open,
    watching,
)

STALENESS = 45.0
KEY = ("vllm-test", "vllm")
_VA = KIND_TO_RESOURCE["VariantAutoscaling"]


def _is_va_list(method: str, path: str) -> bool:
    return method == "GET" and PLURAL in path


def test_a_hung_list_times_out_and_the_cache_recovers(
    fake: FakeKubeAPI, api: client.ApiClient
) -> None:
    create(api, va("a"))
    release = fake.hang_next(1, _is_va_list)
    backoff = RecordingBackoff()
    settings = CacheSettings(watch_timeout_seconds=30, request_timeout_seconds=1.0)
    try:
        with KubeCache(api, settings, backoff=backoff) as kube:
            assert kube.wait_synced(WAIT)
            assert va_names(kube.snapshot()) == {"a"}
            # the hung list timed out and was asked again (by the client's retry or ours)
            lists = [r for r in fake.requests_matching("GET", PLURAL) if "watch" not in r.query]
            assert len(lists) >= 2
            create(api, va("b"))
            snap = kube.wait_for(lambda s: va_names(s) == {"a", "b"}, WAIT)
            assert snap is not None
    finally:
        release.set()


def test_a_watch_dropped_while_objects_change_ends_in_the_true_state(
    fake: FakeKubeAPI, api: client.ApiClient
) -> None:
    for name in ("a", "b", "c"):
        create(api, va(name))
    backoff = RecordingBackoff()
    custom = client.CustomObjectsApi(api)
    with KubeCache(api, CacheSettings(watch_timeout_seconds=30), backoff=backoff) as kube:
        watches_open(fake, kube)
        backoff.hold()  # keep the reflectors down while the objects change
        fake.fail_next(2, 500, _is_va_list)
        assert fake.drop_watches() >= 1
        backoff.wait_calls(lambda calls: any("VariantAutoscaling" in t for t, _ in calls))
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "vllm-test", PLURAL, "a", {"spec": {"modelID": "changed"}}
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, "vllm-test", PLURAL, "b")
        create(api, va("d"))
        backoff.release()
        snap = kube.wait_for(
            lambda s: (
                va_names(s) == {"a", "c", "d"}
                and s.variant_autoscalings[("vllm-test", "a")]["spec"]["modelID"] == "changed"
            ),
            WAIT,
        )
        assert snap is not None, kube.snapshot().variant_autoscalings.keys()
        # nothing forgotten or duplicated: one entry per live object
        assert sorted(name for _ns, name in snap.variant_autoscalings) == ["a", "c", "d"]


class TutorialLoad:
    def collect(self, keys: Collection[LoadKey]) -> LoadReport:
        return tutorial_load()


def scrape(collector: SnapshotCollector) -> dict[Any, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return samples(generate_latest(registry).decode())


def sample(scraped: dict[Any, float], name: str, **labels: str) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


def deployment_replicas(snap: ClusterSnapshot) -> Any:
    return snap.deployments[KEY]["spec"]["replicas"]


@pytest.mark.parametrize("outage", [None, 503], ids=["connections-refused", "503"])
def test_an_api_server_outage_of_minutes_withholds_decisions_then_recovers(
    fake: FakeKubeAPI, api: client.ApiClient, outage: int | None
) -> None:
    for obj in sample_objects():
        fake.apply(obj)
    clock = ManualClock()
    settings = CacheSettings(watch_timeout_seconds=watch_timeout_for(STALENESS))
    # a few ms between retries: a pace for the threads, nothing waits on it
    with KubeCache(api, settings, backoff=lambda _attempt: 0.01, clock=clock) as kube:
        watching(kube)
        engine = Engine(
            cluster=kube.snapshot, metrics=TutorialLoad(), clock=clock, staleness_s=STALENESS
        )
        service = ScalerService(lambda: engine.latest, clock, ScalerSettings(staleness_s=STALENESS))
        collector = SnapshotCollector(
            lambda: engine.latest,
            engine.stats,
            clock,
            max_age_s=STALENESS,
            kubernetes_sync=kube.sync_state,
        )
        assert engine.run_cycle().decisions[KEY].desired_replicas == 1
        assert service.desired(KEY) == 1

        fake.go_down(outage)
        down = kube.wait_sync(
            lambda s: all(p.api_errors >= 2 and not p.watching for p in s.partitions), WAIT
        )
        assert down is not None, kube.sync_state()  # each stream broke, and a retry failed
        # meanwhile the Deployment is scaled: the cache cannot know yet
        (deployment,) = [o for o in sample_objects() if o["kind"] == "Deployment"]
        deployment["spec"]["replicas"] = 2
        fake.apply(deployment)

        for minute_quarter in range(1, 21):  # 5 minutes, a cycle every 15 s
            clock.advance(15)
            age = 15.0 * minute_quarter
            decision = engine.run_cycle().decisions[KEY]
            scraped = scrape(collector)
            for resource in ("VariantAutoscaling", "Deployment", "ConfigMap", "Node"):
                assert sample(scraped, "wva_kubernetes_sync_age_seconds", resource=resource) == age
            labels = {"variant_name": "vllm", "namespace": "vllm-test", "accelerator_type": "H100"}
            if age <= STALENESS:  # recent enough: the last view still decides
                assert decision.desired_replicas == 1, decision.reason
                assert service.desired(KEY) == 1
                continue
            assert decision.desired_replicas is None
            assert reason_code(decision) == "KubernetesStale"
            assert f"VariantAutoscaling (all namespaces) last in sync ({age:.0f} s ago)" in (
                decision.reason
            )
            with pytest.raises(Refusal) as refused:
                service.desired(KEY)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            assert "Kubernetes view out of date" in refused.value.message
            assert sample(scraped, "wva_decision_info", **labels, reason="KubernetesStale") == 1
            assert sample(scraped, "wva_desired_replicas", **labels) is None  # never 0
        assert engine.stats.cycle_errors_total == 0, "every cycle ran; only the VA is unsolved"
        errors = kube.sync_state().errors()
        assert errors[("VariantAutoscaling", "api")] >= 2
        assert errors[("VariantAutoscaling", "unexpected")] == 0

        fake.come_back()  # no restart of anything on the adapter's side
        back = kube.wait_sync(lambda s: max(s.ages().values()) == 0.0, WAIT)
        assert back is not None, kube.sync_state()
        scraped = scrape(collector)
        for resource in ("VariantAutoscaling", "Deployment", "ConfigMap", "Node"):
            assert sample(scraped, "wva_kubernetes_sync_age_seconds", resource=resource) == 0.0
        # the change made during the outage arrives (resumed watch, or relist)
        assert kube.wait_for(lambda s: deployment_replicas(s) == 2, WAIT) is not None
        clock.advance(15)
        decision = engine.run_cycle().decisions[KEY]
        assert (decision.desired_replicas, decision.current_replicas) == (1, 2)
        assert service.desired(KEY) == 1
        assert sample(scrape(collector), "wva_desired_replicas", **labels) == 1.0


def test_watches_failing_while_writes_work_the_status_says_why(
    fake: FakeKubeAPI, api: client.ApiClient
) -> None:
    """Lists and watches of VAs fail (their RBAC revoked, a broken watch cache) while
    status writes still work: the condition tells the user, then clears by itself."""
    for obj in sample_objects():
        fake.apply(obj)
    clock = ManualClock()
    with KubeCache(
        api,
        CacheSettings(watch_timeout_seconds=watch_timeout_for(STALENESS)),
        backoff=lambda _a: 0.01,
        clock=clock,
    ) as kube:
        watching(kube)
        engine = Engine(
            cluster=kube.snapshot, metrics=TutorialLoad(), clock=clock, staleness_s=STALENESS
        )
        writer = StatusWriter(
            client.CustomObjectsApi(api),
            lambda: kube.snapshot().variant_autoscalings,
            clock,
            settings=StatusSettings(max_age_s=STALENESS),
        )

        def ready_reason() -> str:
            stored = fake.store.get(_VA, "vllm-test", "vllm")
            (ready,) = [
                c for c in stored["status"]["conditions"] if c["type"] == OPTIMIZATION_READY
            ]
            return str(ready["reason"])

        def cached_reason(reason: str) -> None:
            """Wait until the cache has seen our write (it is what the next write is based on)."""

            def seen(snap: Any) -> bool:
                status = snap.variant_autoscalings[KEY].get("status") or {}
                return any(c.get("reason") == reason for c in status.get("conditions") or [])

            assert kube.wait_for(seen, WAIT) is not None

        assert writer.sync(engine.run_cycle()).written == [KEY]
        assert ready_reason() == "OptimizationSucceeded"
        cached_reason("OptimizationSucceeded")

        fake.fail_next(10**9, 503, is_va_request)  # GET only: the PATCHes go through
        fake.drop_watches()
        assert kube.wait_sync(
            lambda s: (
                all(p.watching or p.kind == "VariantAutoscaling" for p in s.partitions)
                and partition(s, "VariantAutoscaling").api_errors >= 2
            ),
            WAIT,
        )
        clock.advance(60)
        fake.send_bookmarks()  # the other watches are quiet, and alive
        assert kube.wait_sync(
            lambda s: all(s.age(p) == 0.0 for p in s.partitions if p.kind != "VariantAutoscaling"),
            WAIT,
        )
        snap = engine.run_cycle()
        decision = snap.decisions[KEY]
        assert reason_code(decision) == "KubernetesStale"
        assert "Deployment" not in decision.reason  # only the VAs' partition is behind
        assert writer.sync(snap).written == [KEY]
        assert ready_reason() == "KubernetesStale"
        stored = fake.store.get(_VA, "vllm-test", "vllm")
        assert stored["status"]["desiredOptimizedAlloc"]["numReplicas"] == 1  # kept

        fake.clear_faults()
        cached_reason("KubernetesStale")  # the watch resumed and delivered our write
        clock.advance(15)
        assert writer.sync(engine.run_cycle()).written == [KEY]
        assert ready_reason() == "OptimizationSucceeded"
