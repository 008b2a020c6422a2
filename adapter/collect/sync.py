"""How current the adapter's view of the Kubernetes API is (pure: no client, no I/O).

The cache (`adapter.collect.kube`) keeps one list+watch per resource kind and scope: a
*partition* (VariantAutoscalings of one namespace or of all, Deployments likewise, the
ConfigMaps of the config namespace, Nodes). A snapshot of a cluster that the API server
stopped answering looks exactly like a healthy one; what tells them apart is when each
partition was last *known in sync* with the API server.

A partition is in sync at time T when, at T, the server had given proof that the cache
holds every change it committed to that partition up to then. The proofs, each dated
when the cache receives it:

- a complete list (all its pages), dated when its first page was requested (the list is
  a consistent read at least that recent);
- a watch the server accepted (HTTP 200) from the cache's resourceVersion, dated when
  it opened, unless the server rejects it at once (an ERROR event first, such as 410
  Expired, or a stream that ends within a second without an event): from then on the
  stream carries every change as it happens;
- every event the watch delivers, BOOKMARKs included (a BOOKMARK is the server saying
  "nothing for you up to this resourceVersion");
- the clean end of a watch at its `timeoutSeconds` (the server closed it normally after
  sending everything).

Nothing else counts: an open stream that has gone silent proves nothing by itself (a
network partition without a reset keeps a socket open for minutes). A quiet but healthy
partition is still proven regularly, because the server ends every watch after the
`timeoutSeconds` the cache asks for and the cache opens the next one at once: its age
stays below the watch timeout plus a round trip. BOOKMARKs add proofs when the server
sends them (Kubernetes sends them about once a minute, but promises no interval), so
the watch timeout is what bounds the age, and it must stay well below the staleness
limit (`adapter.collect.kube.watch_timeout_for`).

A partition's *age* is the time since its last proof (since the cache started, for a
partition never in sync). The engine compares it with `--staleness` and withholds the
decisions of the VariantAutoscalings a partition too old bears on. A limit shorter than
twice the watch timeout would call healthy quiet partitions stale between renewals, so
`behind` never applies less than that (`SyncState.limit`): a cache built with a watch
timeout too long for the staleness limit warns less early, it does not flap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapter.model.kube import ClusterSnapshot

__all__ = [
    "RESOURCES",
    "PartitionSync",
    "SyncState",
    "SyncedClusterSnapshot",
]

# the watched kinds, in the order they are reported
RESOURCES: tuple[str, ...] = ("VariantAutoscaling", "Deployment", "ConfigMap", "Node")

# kinds whose objects bear on every VariantAutoscaling, whatever its namespace: the
# service classes and unit costs (ConfigMaps) and the GPU capacity (Nodes)
CLUSTER_WIDE: frozenset[str] = frozenset({"ConfigMap", "Node"})


@dataclass(frozen=True, slots=True)
class PartitionSync:
    """One list+watch partition: when it was last in sync, and how its requests fared."""

    kind: str  # one of RESOURCES
    scope: str  # its namespace; "" = all namespaces (or a cluster-scoped kind)
    synced_at: float | None  # the cache clock's monotonic seconds of the last proof
    resource_version: str = ""  # the last resourceVersion the cache has seen
    api_errors: int = 0  # failed requests: error answers, connection errors, timeouts
    unexpected_errors: int = 0  # anything else (a bug, an answer nobody anticipated)
    watching: bool = False  # a watch stream is open (what it proves is in `synced_at`)

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.scope or 'all namespaces'})"

    def covers(self, namespace: str) -> bool:
        """Whether this partition's objects bear on a VariantAutoscaling in `namespace`."""
        return self.kind in CLUSTER_WIDE or self.scope in ("", namespace)


@dataclass(frozen=True, slots=True)
class SyncState:
    """Every partition's last proof of sync, read at `taken_at` (same clock)."""

    taken_at: float
    started_at: float  # when the cache started: the age of a partition never in sync
    partitions: tuple[PartitionSync, ...]
    # the longest a quiet, healthy partition goes without a proof (the watch timeout)
    renewal_s: float = 0.0

    def limit(self, staleness_s: float) -> float:
        """The age past which a partition is behind: `staleness_s`, but never less than
        two renewals (one may fail and be retried), or quiet partitions would flap."""
        return max(staleness_s, 2.0 * self.renewal_s)

    def age(self, partition: PartitionSync) -> float:
        """Seconds from the partition's last proof of sync to `taken_at`."""
        since = partition.synced_at if partition.synced_at is not None else self.started_at
        return max(0.0, self.taken_at - since)

    def ages(self) -> Mapping[str, float]:
        """Per resource kind, the age of its oldest partition (its worst namespace)."""
        out: dict[str, float] = {}
        for partition in self.partitions:
            age = self.age(partition)
            out[partition.kind] = max(age, out.get(partition.kind, 0.0))
        return {kind: out[kind] for kind in RESOURCES if kind in out}

    def errors(self) -> Mapping[tuple[str, str], int]:
        """(resource kind, "api" | "unexpected") -> failed list/watch requests so far."""
        out: dict[tuple[str, str], int] = {}
        for partition in self.partitions:
            for error_kind, count in (
                ("api", partition.api_errors),
                ("unexpected", partition.unexpected_errors),
            ):
                key = (partition.kind, error_kind)
                out[key] = out.get(key, 0) + count
        return out

    def behind(self, staleness_s: float) -> tuple[tuple[PartitionSync, float], ...]:
        """The partitions not in sync for longer than `limit(staleness_s)`, with their ages."""
        limit = self.limit(staleness_s)
        return tuple(
            (partition, self.age(partition))
            for partition in self.partitions
            if self.age(partition) > limit
        )


@dataclass(frozen=True, slots=True)
class SyncedClusterSnapshot(ClusterSnapshot):
    """A ClusterSnapshot that says how current it is (what `KubeCache.snapshot` returns).

    `sync` is read under the same lock as the objects, so the ages describe exactly the
    objects in this snapshot. Sources without an API server behind them (a folder of
    YAML) give plain ClusterSnapshots, which are never out of date.
    """

    sync: SyncState | None = None
