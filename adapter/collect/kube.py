"""A list+watch cache of what the adapter reads from Kubernetes, on the official client.

One background thread per partition (a resource kind in one scope: VariantAutoscalings
and Deployments per namespace or across all, the config namespace's ConfigMaps, Nodes)
runs a reflector loop, as client-go does:

- list in pages of `page_size` (`limit`/`continue`), so 5000 VAs are not one answer the
  API server must build and hold at once; a continue token that expires mid-list (410:
  the list took longer than the server keeps its snapshot) restarts the list as one
  unpaginated request, as client-go's pager does, rather than paging again and again;
- watch from the list's resourceVersion, asking for BOOKMARKs, for `timeoutSeconds`;
  when the server ends the watch normally, watch again from the last resourceVersion
  seen (a BOOKMARK's included, so a quiet watch resumes from a recent version);
- on a broken stream or a failed request, wait `backoff(attempt)` and resume from the
  last resourceVersion; the attempt count starts again once a try makes progress (a
  complete list, or a watch that delivered an event or ended normally), so a stream
  cut after hours retries at once while a server that fails every request is asked
  less and less often;
- on 410 Gone (the server no longer has events that old), relist and replace that
  partition wholesale, so nothing deleted meanwhile is kept and nothing is duplicated.
  A watch that expires right after its own list is a failure (backoff), not a relist
  loop.

Failures the API server causes (error answers, watch ERROR events, connection errors,
timeouts) are logged as one warning line and counted as `api`. Anything else is a bug
or an answer nobody anticipated: logged with its traceback and counted as `unexpected`,
so it is never mistaken for a network error. Both are retried.

The cache knows how current it is: per partition, when it was last known in sync with
the API server (`adapter.collect.sync` defines the proofs). `snapshot()` returns an
immutable `SyncedClusterSnapshot` carrying that next to the objects; `sync_state()`
reads it alone (cheap, for /metrics). A quiet, healthy partition is proven at least at
every watch renewal, so `watch_timeout_seconds` must stay well below the staleness
limit the engine applies: `watch_timeout_for(staleness)`.

`wait_synced()` blocks until every reflector has listed once. `patch_status()` writes
the VA `/status` subresource.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import urllib3
from kubernetes import client

from adapter.clock import Clock, WallClock
from adapter.collect.sync import PartitionSync, SyncedClusterSnapshot, SyncState
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
    "Sleep",
    "SyncState",
    "SyncedClusterSnapshot",
    "exponential_backoff",
    "patch_va_status",
    "watch_timeout_for",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Backoff = Callable[[int], float]
"""attempt number (1, 2, ...) -> seconds to wait before retrying."""

Sleep = Callable[[threading.Event, float], object]
"""Wait up to `seconds`, returning early once the event (the cache's stop) is set."""

CONFIG_MAP_NAMES = (ACCELERATOR_COSTS_CONFIGMAP, SERVICE_CLASSES_CONFIGMAP)

# A watch the server ends this soon without an event was refused, not served (some
# proxies answer 200 and close); real seconds on the wire, not the injected clock.
AT_ONCE_S = 1.0


def exponential_backoff(
    base: float = 0.5, cap: float = 30.0, jitter: float = 0.2, rng: random.Random | None = None
) -> Backoff:
    """base * 2**(attempt-1), capped, with +-jitter so many replicas do not retry in step."""
    generator = rng or random.Random()

    def delay(attempt: int) -> float:
        raw: float = min(cap, base * 2.0 ** max(attempt - 1, 0))
        return raw * (1.0 + jitter * (2.0 * generator.random() - 1.0))

    return delay


def watch_timeout_for(staleness_s: float) -> int:
    """The watch timeout that keeps a quiet, healthy partition's age below `staleness_s`.

    A quiet partition is proven in sync when its watch ends normally and the next one
    opens, so its age peaks at about the watch timeout. Half the staleness limit leaves
    the other half for a failed renewal and its backoff before the engine would call a
    healthy partition stale. At least 1 s; at most 300 s (client-go's watches last 5-10
    minutes; longer ones would only delay the proofs).
    """
    return max(1, min(300, int(staleness_s / 2)))


@dataclass(frozen=True, slots=True)
class CacheSettings:
    namespaces: tuple[str, ...] = ()  # VA (and Deployment) namespaces; () = all namespaces
    config_namespace: str = DEFAULT_CONFIG_NAMESPACE
    # server-side end of each watch (the loop re-watches): the proof-of-life period of a
    # quiet partition; the default suits the default --staleness (3 x 15 s)
    watch_timeout_seconds: int = watch_timeout_for(45.0)
    request_timeout_seconds: float = 30.0  # connect timeout, and read timeout of lists
    page_size: int = 500  # objects per list page (client-go's pager default); 0: no paging


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _ContinueExpired(Exception):
    """A list's continue token expired (410) before the last page."""


class _WatchFailed(Exception):
    """The server sent an ERROR event other than 410, or refused a watch otherwise."""


# what the API server (or the network to it) causes: one warning line, no traceback
_API_ERRORS: tuple[type[BaseException], ...] = (
    client.ApiException,
    urllib3.exceptions.HTTPError,  # connection refused/reset, read timeouts, broken chunks
    http.client.HTTPException,
    OSError,
    _WatchFailed,
)


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _wait(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


class _Reflector:
    """List+watch of one partition, kept in `objects`.

    `objects`, `synced`, `synced_at`, the error counts and `watching` are guarded by the
    cache lock; the rest belongs to the reflector's thread (`sync_state` also reads
    `resource_version`, one reference, without it)."""

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
        self.synced = False  # listed at least once
        self.synced_at: float | None = None  # last proof of sync (adapter.collect.sync)
        self.api_errors = 0
        self.unexpected_errors = 0
        self.watching = False
        self.resource_version: str | None = None
        self.progressed = False  # the current try made progress: the next failure is #1
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
            self.progressed = False
            listed = False
            try:
                if self.resource_version is None:
                    self._list()
                    listed = True
                self._watch()
                attempt = 0
                continue
            except _Expired:
                if not listed:
                    log.info(
                        "%s: resourceVersion %s expired, relisting",
                        self.name,
                        self.resource_version,
                    )
                    self.resource_version = None
                    continue
                # the watch from a list just made expired at once: relisting at once
                # again could loop as fast as the server answers
                self.resource_version = None
                attempt = self._retry(
                    attempt, _WatchFailed("the watch from a fresh list expired at once")
                )
            except Exception as error:
                if stop.is_set():
                    break
                attempt = self._retry(attempt, error)

    def _retry(self, attempt: int, error: Exception) -> int:
        """Count, log and wait out one failure (called in its except block); the new attempt."""
        expected = isinstance(error, _API_ERRORS)
        self.cache._failed(self, expected)
        attempt = 1 if self.progressed else attempt + 1
        delay = self.cache._backoff(attempt)
        if expected:
            log.warning(
                "%s: %s: %s; retry %d in %.2fs",
                self.name,
                type(error).__name__,
                error,
                attempt,
                delay,
            )
        else:
            log.exception(
                "%s: unexpected %s (not an API or connection error); retry %d in %.2fs",
                self.name,
                type(error).__name__,
                attempt,
                delay,
            )
        self.cache._sleep(self.cache._stop, delay)
        return attempt

    # ------------------------------------------------------------ list

    def _list(self) -> None:
        cache = self.cache
        requested = cache._clock.monotonic()
        page_size = cache.settings.page_size
        try:
            objects, rv, pages = self._pages(page_size if page_size > 0 else None)
        except _ContinueExpired as expired:
            log.info(
                "%s: the list's continue token expired after %s page(s); listing again "
                "in one request",
                self.name,
                expired,
            )
            requested = cache._clock.monotonic()
            objects, rv, pages = self._pages(None)
        self.resource_version = rv
        cache._replace(self, objects, requested)
        self.progressed = True
        log.debug("%s: listed %d objects in %d page(s) at %s", self.name, len(objects), pages, rv)

    def _pages(self, limit: int | None) -> tuple[dict[ObjectKey, dict[str, Any]], str, int]:
        """Every page of one consistent list: (objects kept, resourceVersion, pages)."""
        timeout = self.cache.settings.request_timeout_seconds
        objects: dict[ObjectKey, dict[str, Any]] = {}
        token: str | None = None
        pages = 0
        while True:
            kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": timeout}
            if limit is not None:
                kwargs["limit"] = limit
            if token is not None:
                kwargs["_continue"] = token
            try:
                response = self.call(**kwargs)
            except client.ApiException as error:
                if error.status == 410 and token is not None:
                    raise _ContinueExpired(pages) from error
                raise
            try:
                body = json.loads(response.data)
            finally:
                response.release_conn()
            pages += 1
            for item in body.get("items") or []:
                item.setdefault("kind", self.kind)
                if self.keep(item):
                    objects[_key(item)] = slim_object(self.kind, item)
            meta = body.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                return objects, str(meta.get("resourceVersion") or ""), pages

    # ------------------------------------------------------------ watch

    def _watch(self) -> None:
        cache = self.cache
        settings = cache.settings
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
        opened = time.monotonic()
        proof = cache._opened(self)  # taken back if the server refuses the watch at once
        count = 0
        try:
            if cache._stop.is_set():
                return
            for line in _lines(response):
                event = json.loads(line)
                if count == 0 and event.get("type") == "ERROR":
                    cache._retract(self, proof)
                count += 1
                self._apply(event)
            if count == 0 and time.monotonic() - opened < AT_ONCE_S and not cache._stop.is_set():
                raise _WatchFailed("watch ended at once without events")
            cache._prove(self)  # a normal end: the server sent everything up to now
            self.progressed = True
        except BaseException:
            if count == 0 and time.monotonic() - opened < AT_ONCE_S:
                cache._retract(self, proof)
            raise
        finally:
            cache._closed(self)
            self.response = None
            response.close()
            response.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise _WatchFailed(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        self.progressed = True
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("kind", self.kind)
            keep = kind != "DELETED" and self.keep(obj)
            self.cache._put(self, _key(obj), slim_object(self.kind, obj) if keep else None)
        else:  # BOOKMARK: nothing changed up to its resourceVersion
            self.cache._prove(self)
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


@dataclass(frozen=True, slots=True)
class _Proof:
    """A provisional proof of sync (a watch just opened) and the one it replaced."""

    at: float
    replaced: float | None


class KubeCache:
    """Watches VariantAutoscalings, the two ConfigMaps, Nodes and Deployments.

    `clock` dates the proofs of sync (its monotonic seconds); `sleep` waits out the
    backoff between retries. Tests inject both: nothing here needs real time to pass.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: CacheSettings | None = None,
        backoff: Backoff | None = None,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self._backoff = backoff or exponential_backoff()
        self._clock: Clock = clock or WallClock()
        self._sleep: Sleep = sleep or _wait
        self._custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._revision = 0
        self._started = False
        self._started_at = self._clock.monotonic()
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
        with self._cond:
            self._started_at = self._clock.monotonic()
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
        """Bumped on every change of an object; lets a consumer tell whether anything moved."""
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

        def ready() -> ClusterSnapshot | None:
            if not all(r.synced for r in self._reflectors):
                return None
            snap = self._snapshot_locked()
            return snap if predicate(snap) else None

        return self._wait_until(ready, timeout)

    def wait_sync(
        self, predicate: Callable[[SyncState], bool], timeout: float | None = None
    ) -> SyncState | None:
        """The first sync state satisfying `predicate` (re-checked at every proof, error
        and change), or None at the deadline."""

        def ready() -> SyncState | None:
            state = self._sync_locked()
            return state if predicate(state) else None

        return self._wait_until(ready, timeout)

    def _wait_until(self, ready: Callable[[], T | None], timeout: float | None) -> T | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                found = ready()
                if found is not None:
                    return found
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def snapshot(self) -> SyncedClusterSnapshot:
        with self._cond:
            return self._snapshot_locked()

    def sync_state(self) -> SyncState:
        """When each partition was last in sync, read now (cheap: no objects copied)."""
        with self._cond:
            return self._sync_locked()

    def _sync_locked(self) -> SyncState:
        return SyncState(
            taken_at=self._clock.monotonic(),
            started_at=self._started_at,
            renewal_s=float(self.settings.watch_timeout_seconds),
            partitions=tuple(
                PartitionSync(
                    kind=r.kind,
                    scope=r.scope,
                    synced_at=r.synced_at,
                    resource_version=r.resource_version or "",
                    api_errors=r.api_errors,
                    unexpected_errors=r.unexpected_errors,
                    watching=r.watching,
                )
                for r in self._reflectors
            ),
        )

    def _snapshot_locked(self) -> SyncedClusterSnapshot:
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
        return SyncedClusterSnapshot(
            variant_autoscalings=MappingProxyType(
                dict(sorted(merged["VariantAutoscaling"].items()))
            ),
            config_maps=by_name["ConfigMap"],
            nodes=by_name["Node"],
            deployments=MappingProxyType(dict(sorted(merged["Deployment"].items()))),
            config_namespace=self.settings.config_namespace,
            sync=self._sync_locked(),
        )

    # ------------------------------------------------------------ writes from reflectors

    def _replace(
        self, reflector: _Reflector, objects: dict[ObjectKey, dict[str, Any]], synced_at: float
    ) -> None:
        with self._cond:
            reflector.objects = objects
            reflector.synced = True
            reflector.synced_at = synced_at
            self._revision += 1
            self._cond.notify_all()

    def _put(self, reflector: _Reflector, key: ObjectKey, obj: dict[str, Any] | None) -> None:
        """An event: the object's new state (None: gone), and a proof of sync."""
        with self._cond:
            reflector.synced_at = self._clock.monotonic()
            # snapshots copy the mappings and objects are replaced, never changed in place
            if obj is not None:
                reflector.objects[key] = obj
                self._revision += 1
            elif reflector.objects.pop(key, None) is not None:
                self._revision += 1
            self._cond.notify_all()

    def _prove(self, reflector: _Reflector) -> None:
        with self._cond:
            reflector.synced_at = self._clock.monotonic()
            self._cond.notify_all()

    def _opened(self, reflector: _Reflector) -> _Proof:
        with self._cond:
            proof = _Proof(self._clock.monotonic(), reflector.synced_at)
            reflector.synced_at = proof.at
            reflector.watching = True
            self._cond.notify_all()
            return proof

    def _closed(self, reflector: _Reflector) -> None:
        with self._cond:
            reflector.watching = False
            self._cond.notify_all()

    def _retract(self, reflector: _Reflector, proof: _Proof) -> None:
        """The server refused the watch it had accepted: its opening proved nothing."""
        with self._cond:
            if reflector.synced_at == proof.at:
                reflector.synced_at = proof.replaced
                self._cond.notify_all()

    def _failed(self, reflector: _Reflector, expected: bool) -> None:
        with self._cond:
            if expected:
                reflector.api_errors += 1
            else:
                reflector.unexpected_errors += 1
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
