"""Kubernetes API faults the cache must survive: a hung API server (client timeouts) and
a watch dropped while objects change and disappear. Through the official client against
the fake API server; backoff is recorded, not slept."""

from __future__ import annotations

from kubernetes import client

from adapter.collect.kube import CacheSettings, KubeCache
from adapter.model.kube import GROUP, PLURAL, VERSION
from tests.fakes.kube_api import FakeKubeAPI
from tests.test_kube_cache import WAIT, RecordingBackoff, create, va, va_names


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
        assert kube.wait_synced(WAIT)
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
