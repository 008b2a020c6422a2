"""A list+watch cache of what the adapter reads from Kubernetes, on the official client.

One background thread per (resource, namespace) runs a reflector loop, as client-go does:
list (remember the list's resourceVersion), then watch from it; on a normal end of the
stream, watch again from the last resourceVersion seen; on a broken stream or a server
error, wait `backoff(attempt)` and resume from the last resourceVersion; on 410 Gone
(the server no longer has events that old), relist and replace that partition wholesale,
so nothing deleted meanwhile is kept and nothing is duplicated.

`snapshot()` returns an immutable `ClusterSnapshot`; `wait_synced()` blocks until every
reflector has listed once. `patch_status()` writes the VA `/status` subresource.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kubernetes import client

from adapter.model.kube import (
    ACCELERATOR_COSTS_CONFIGMAP,
    DEFAULT_CONFIG_NAMESPACE,
    GROUP,
    PLURAL,
    SERVICE_CLASSES_CONFIGMAP,
    VERSION,
    ClusterSnapshot,
    ObjectKey,
    VariantAutoscalingStatus,
    slim_object,
)

__all__ = [
    "Backoff",
    "CacheSettings",
    "ClusterSnapshot",
    "KubeCache",
    "exponential_backoff",
    "patch_va_status",
]

log = logging.getLogger(__name__)

Backoff = Callable[[int], float]
"""attempt number (1, 2, ...) -> seconds to wait before retrying."""

CONFIG_MAP_NAMES = (ACCELERATOR_COSTS_CONFIGMAP, SERVICE_CLASSES_CONFIGMAP)


def exponential_backoff(
    base: float = 0.5, cap: float = 30.0, jitter: float = 0.2, rng: random.Random | None = None
) -> Backoff:
    """base * 2**(attempt-1), capped, with +-jitter so many replicas do not retry in step."""
    generator = rng or random.Random()

    def delay(attempt: int) -> float:
        raw: float = min(cap, base * 2.0 ** max(attempt - 1, 0))
        return raw * (1.0 + jitter * (2.0 * generator.random() - 1.0))

    return delay


@dataclass(frozen=True, slots=True)
class CacheSettings:
    namespaces: tuple[str, ...] = ()  # VA (and Deployment) namespaces; () = all namespaces
    config_namespace: str = DEFAULT_CONFIG_NAMESPACE
    watch_timeout_seconds: int = 300  # server-side end of each watch; the loop re-watches
    request_timeout_seconds: float = 30.0  # connect timeout, and read timeout of lists


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _WatchFailed(Exception):
    """The server sent an ERROR event other than 410."""


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class _Reflector:
    """List+watch of one resource in one scope, kept in `objects` (owned by the cache lock)."""

    def __init__(
        self,
        cache: KubeCache,
        kind: str,
        scope: str,
        call: Callable[..., Any],
        keep: Callable[[Mapping[str, Any]], bool] = lambda _obj: True,
    ) -> None:
        self.cache = cache
        self.kind = kind
        self.scope = scope
        self.call = call
        self.keep = keep
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = False
        self.response: Any = None
        self.thread = threading.Thread(
            target=self.run, name=f"watch-{kind}-{scope or 'all'}", daemon=True
        )

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.scope or 'all namespaces'})"

    def run(self) -> None:
        attempt = 0
        stop = self.cache._stop
        while not stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                started = time.monotonic()
                events = self._watch()
                if events == 0 and time.monotonic() - started < 1.0 and not stop.is_set():
                    raise _WatchFailed("watch ended at once without events")
                attempt = 0
            except _Expired:
                log.info(
                    "%s: resourceVersion %s expired, relisting", self.name, self.resource_version
                )
                self.resource_version = None
            except Exception as error:
                if stop.is_set():
                    break
                attempt += 1
                delay = self.cache._backoff(attempt)
                log.warning(
                    "%s: %s: %s; retry %d in %.2fs",
                    self.name,
                    type(error).__name__,
                    error,
                    attempt,
                    delay,
                )
                stop.wait(delay)

    def _list(self) -> None:
        settings = self.cache.settings
        response = self.call(
            _preload_content=False, _request_timeout=settings.request_timeout_seconds
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = body.get("items") or []
        objects = {}
        for item in items:
            item.setdefault("kind", self.kind)
            if self.keep(item):
                objects[_key(item)] = slim_object(self.kind, item)
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        self.cache._replace(self, objects)
        log.debug("%s: listed %d objects at %s", self.name, len(objects), self.resource_version)

    def _watch(self) -> int:
        settings = self.cache.settings
        try:
            response = self.call(
                watch=True,
                resource_version=self.resource_version or None,
                timeout_seconds=settings.watch_timeout_seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(
                    settings.request_timeout_seconds,
                    settings.watch_timeout_seconds + settings.request_timeout_seconds,
                ),
            )
        except client.ApiException as error:
            if error.status == 410:
                raise _Expired() from None
            raise
        self.response = response
        count = 0
        try:
            if self.cache._stop.is_set():
                return count
            for line in _lines(response):
                event = json.loads(line)
                count += 1
                self._apply(event)
        finally:
            self.response = None
            response.close()
            response.release_conn()
        return count

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise _WatchFailed(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            return
        obj.setdefault("kind", self.kind)
        key = _key(obj)
        if kind in ("ADDED", "MODIFIED") and self.keep(obj):
            self.cache._put(self, key, slim_object(self.kind, obj))
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.cache._put(self, key, None)
        if rv:
            self.resource_version = str(rv)

    def interrupt(self) -> None:
        """Unblock a thread reading a watch stream by shutting its socket down."""
        response = self.response
        connection = getattr(response, "connection", None)
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _lines(response: Any) -> Iterator[str]:
    """Newline-delimited JSON from a streamed urllib3 response."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode("utf-8")
    if buffer.strip():
        yield buffer.decode("utf-8")


class KubeCache:
    """Watches VariantAutoscalings, the two ConfigMaps, Nodes and Deployments."""

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: CacheSettings | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self._backoff = backoff or exponential_backoff()
        self._custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._revision = 0
        self._started = False
        self._reflectors: list[_Reflector] = []

        def add(kind: str, scope: str, call: Callable[..., Any], **keep: Any) -> None:
            self._reflectors.append(_Reflector(self, kind, scope, call, **keep))

        custom = self._custom
        if self.settings.namespaces:
            for ns in self.settings.namespaces:
                add(
                    "VariantAutoscaling",
                    ns,
                    _bind(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL),
                )
                add("Deployment", ns, _bind(apps.list_namespaced_deployment, ns))
        else:
            add(
                "VariantAutoscaling",
                "",
                _bind(custom.list_cluster_custom_object, GROUP, VERSION, PLURAL),
            )
            add("Deployment", "", _bind(apps.list_deployment_for_all_namespaces))
        config_ns = self.settings.config_namespace
        add(
            "ConfigMap",
            config_ns,
            _bind(core.list_namespaced_config_map, config_ns),
            keep=lambda obj: (obj.get("metadata") or {}).get("name") in CONFIG_MAP_NAMES,
        )
        add("Node", "", _bind(core.list_node))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KubeCache:
        if self._started:
            raise RuntimeError("KubeCache.start() called twice")
        self._started = True
        for reflector in self._reflectors:
            reflector.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for reflector in self._reflectors:
            reflector.interrupt()
        deadline = time.monotonic() + timeout
        for reflector in self._reflectors:
            if reflector.thread.is_alive():
                reflector.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> KubeCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ reading

    @property
    def revision(self) -> int:
        """Bumped on every change; lets a consumer tell whether anything moved."""
        with self._cond:
            return self._revision

    @property
    def synced(self) -> bool:
        with self._cond:
            return all(r.synced for r in self._reflectors)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every resource has been listed at least once."""
        return self.wait_for(lambda _s: True, timeout) is not None

    def wait_for(
        self, predicate: Callable[[ClusterSnapshot], bool], timeout: float | None = None
    ) -> ClusterSnapshot | None:
        """The first synced snapshot satisfying `predicate`, or None at the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if all(r.synced for r in self._reflectors):
                    snap = self._snapshot_locked()
                    if predicate(snap):
                        return snap
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def snapshot(self) -> ClusterSnapshot:
        with self._cond:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> ClusterSnapshot:
        merged: dict[str, dict[ObjectKey, dict[str, Any]]] = {
            "VariantAutoscaling": {},
            "Deployment": {},
            "ConfigMap": {},
            "Node": {},
        }
        for reflector in self._reflectors:
            merged[reflector.kind].update(reflector.objects)
        by_name = {
            kind: MappingProxyType({k[1]: v for k, v in sorted(merged[kind].items())})
            for kind in ("ConfigMap", "Node")
        }
        return ClusterSnapshot(
            variant_autoscalings=MappingProxyType(
                dict(sorted(merged["VariantAutoscaling"].items()))
            ),
            config_maps=by_name["ConfigMap"],
            nodes=by_name["Node"],
            deployments=MappingProxyType(dict(sorted(merged["Deployment"].items()))),
            config_namespace=self.settings.config_namespace,
        )

    # ------------------------------------------------------------ writes from reflectors

    def _replace(self, reflector: _Reflector, objects: dict[ObjectKey, dict[str, Any]]) -> None:
        with self._cond:
            reflector.objects = objects
            reflector.synced = True
            self._revision += 1
            self._cond.notify_all()

    def _put(self, reflector: _Reflector, key: ObjectKey, obj: dict[str, Any] | None) -> None:
        with self._cond:
            # snapshots copy the mappings and objects are replaced, never changed in place
            if obj is None:
                if reflector.objects.pop(key, None) is None:
                    return
            else:
                reflector.objects[key] = obj
            self._revision += 1
            self._cond.notify_all()

    # ------------------------------------------------------------ status writes

    def patch_status(
        self, namespace: str, name: str, status: VariantAutoscalingStatus | Mapping[str, Any]
    ) -> dict[str, Any]:
        return patch_va_status(self._custom, namespace, name, status)


def _bind(call: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    def bound(**kwargs: Any) -> Any:
        return call(*args, **kwargs)

    return bound


def patch_va_status(
    api: client.CustomObjectsApi,
    namespace: str,
    name: str,
    status: VariantAutoscalingStatus | Mapping[str, Any],
) -> dict[str, Any]:
    """Merge-patch the VA's `/status` subresource (spec untouched); returns the stored object.

    A merge patch replaces lists whole, so pass the complete `conditions` list.
    """
    body = status.to_json() if isinstance(status, VariantAutoscalingStatus) else dict(status)
    result = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": body}
    )
    return dict(result) if isinstance(result, Mapping) else {}
