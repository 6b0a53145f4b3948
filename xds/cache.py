"""Per-node xDS snapshots, kept apart from the gRPC server (go-control-plane style).

The control plane decides *what* each proxy should have and calls :meth:`SnapshotCache.set`
(from any thread). The server (:mod:`xds.server`) decides *when and how* to send it: every
open stream of a node registers a watch and is woken when the node's snapshot changes, then
reads the latest snapshot. Intermediate snapshots are therefore skipped for free, which is
the coalescing the protocol wants (one queued change plus one in flight).

Versions are content hashes, so an unchanged resource keeps its version across restarts and
replicas, and setting an identical snapshot is a no-op that wakes nobody.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any as _Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ORDER",
    "ROUTE",
    "SECRET",
    "WILDCARD_TYPES",
    "Nack",
    "NodeStats",
    "Resource",
    "Snapshot",
    "SnapshotCache",
    "Watch",
    "order_types",
    "resource_version",
]

log = logging.getLogger(__name__)

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: Make-before-break push order over ADS (xds-protocol §1.10): clusters and their endpoints
#: (and secrets they need) before the listeners and routes that reference them.
ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

#: Types whose SotW responses carry the full state and which have a wildcard (§1.7, §1.8).
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER})

_HASH_LEN = 16
_MAX_NACKS_PER_NODE = 32
_PACKED_MAX = 50_000  # bound of the packed-resource memo (entries keep their message alive)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_HASH_LEN]


def resource_version(packed: any_pb2.Any) -> str:
    """Version of one resource: a hash of its deterministic serialization (type URL included)."""
    return _digest(packed.SerializeToString(deterministic=True))


def _type_version(entries: Mapping[str, Resource]) -> str:
    """Version of a whole type: a hash of the sorted (name, version) pairs."""
    text = "\n".join(f"{name}\x00{entry.version}" for name, entry in sorted(entries.items()))
    return _digest(text.encode())


_EMPTY_VERSION = _digest(b"")


def order_types(type_urls: Iterable[str]) -> list[str]:
    """``type_urls`` in push order: :data:`ORDER` first, then any other type by name."""
    known = [t for t in ORDER if t in type_urls]
    return known + sorted(t for t in set(type_urls) if t not in ORDER)


def _name_of(msg: Message) -> str | None:
    """The resource's own name field (``cluster_name`` for EDS), if it has one."""
    fields = msg.DESCRIPTOR.fields_by_name
    for attr in ("name", "cluster_name"):
        if attr in fields and fields[attr].type == fields[attr].TYPE_STRING:
            return str(getattr(msg, attr))
    return None


@dataclass(frozen=True)
class Resource:
    """One packed resource and its content version."""

    name: str
    version: str
    packed: any_pb2.Any


@dataclass(frozen=True)
class Snapshot:
    """Everything one node should have, per type URL; immutable so streams can share it."""

    node_id: str
    generation: int
    resources: Mapping[str, Mapping[str, Resource]]
    versions: Mapping[str, str]
    created: float

    def version(self, type_url: str) -> str:
        """The type's version; an absent type is empty and has the empty-set version."""
        return self.versions.get(type_url, _EMPTY_VERSION)

    def entries(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, _EMPTY)

    def types(self) -> list[str]:
        return order_types(self.resources)


_EMPTY: Mapping[str, Resource] = MappingProxyType({})


@dataclass(frozen=True)
class Nack:
    """A client's rejection of a version we sent (its ``error_detail``)."""

    node_id: str
    type_url: str
    version: str
    message: str
    at: float

    def to_dict(self) -> dict[str, _Any]:
        return {"node": self.node_id, "type_url": self.type_url, "version": self.version,
                "message": self.message, "time": self.at}


@dataclass
class NodeStats:
    """What the servers observed for a node, for status endpoints and metrics."""

    node_id: str
    streams: int = 0
    acked: dict[str, str] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    pushes: int = 0
    ack_count: int = 0
    nack_count: int = 0
    last_ack: float | None = None
    last_push: float | None = None

    def to_dict(self) -> dict[str, _Any]:
        return {"node": self.node_id, "streams": self.streams, "acked": dict(self.acked),
                "sent": dict(self.sent), "pushes": self.pushes, "acks": self.ack_count, "nacks": self.nack_count,
                "last_ack": self.last_ack, "last_push": self.last_push}


class Watch:
    """A stream's registration for change notifications on one node.

    ``callback`` runs on the loop that created the watch (via ``call_soon_threadsafe``), so
    :meth:`SnapshotCache.set` may be called from worker threads.
    """

    def __init__(self, cache: SnapshotCache, node_id: str, callback: Callable[[], None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.cache = cache
        self.node_id = node_id
        self._callback = callback
        self._loop = loop
        self.closed = False

    def notify(self) -> None:
        if self.closed:
            return
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # loop closed: the stream is gone
            self.closed = True

    def _fire(self) -> None:
        if not self.closed:
            self._callback()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.cache._unwatch(self)


class SnapshotCache:
    """Thread-safe map node id → :class:`Snapshot`, plus watches, ACK/NACK records and stats.

    ``on_missing(node_id)`` is called (on the stream's event loop, so it must not block) when
    a stream opens for a node that has no snapshot yet; the control plane then builds one and
    calls :meth:`set`, which wakes the stream.
    """

    def __init__(self, on_missing: Callable[[str], None] | None = None) -> None:
        self.on_missing = on_missing
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._stats: dict[str, NodeStats] = {}
        self._nacks: dict[str, deque[Nack]] = {}
        self._errors: dict[str, dict[str, Nack]] = {}
        self._generation = 0
        # (id(msg), type URL, name) -> (msg, Resource): a message object set before (by any node)
        # is not packed and hashed again. The message is kept referenced, so its id cannot be
        # reused while the entry lives. Messages handed to set() must not be mutated afterwards
        # (the resource builders share memoized messages on the same terms).
        self._packed: dict[tuple[int, str, str], tuple[Message, Resource]] = {}
        self._packed_lock = threading.Lock()

    # ------------------------------------------------------------------ snapshots

    def set(self, node_id: str, resources: Mapping[str, Mapping[str, Message]]) -> bool:
        """Replace the node's snapshot; returns False (and wakes nobody) when nothing changed.

        Raises ValueError when a message's type does not match its type URL or its own name
        differs from its key, since either would make clients drop it silently.
        """
        if not node_id:
            raise ValueError("node_id is required")
        built: dict[str, dict[str, Resource]] = {}
        for type_url, named in resources.items():
            entries: dict[str, Resource] = {}
            for name, msg in named.items():
                entries[name] = self._pack_memo(type_url, name, msg)
            built[type_url] = entries
        with self._lock:
            prev = self._snapshots.get(node_id)
        versions = {t: self._version_of(prev, t, e) for t, e in built.items()}
        with self._lock:
            old = self._snapshots.get(node_id)
            if old is not None and self._same(old, versions):
                return False
            self._generation += 1
            snap = Snapshot(
                node_id=node_id,
                generation=self._generation,
                resources=MappingProxyType({t: MappingProxyType(e) for t, e in built.items()}),
                versions=MappingProxyType(versions),
                created=time.time(),
            )
            self._snapshots[node_id] = snap
            watches = list(self._watches.get(node_id, ()))
        for w in watches:
            w.notify()
        return True

    def _pack_memo(self, type_url: str, name: str, msg: Message) -> Resource:
        key = (id(msg), type_url, name)
        hit = self._packed.get(key)
        if hit is not None and hit[0] is msg:
            return hit[1]
        res = self._pack(type_url, name, msg)
        with self._packed_lock:
            if len(self._packed) >= _PACKED_MAX:
                self._packed.clear()
            self._packed[key] = (msg, res)
        return res

    @staticmethod
    def _version_of(prev: Snapshot | None, type_url: str, entries: Mapping[str, Resource]) -> str:
        """The type's version; the previous one when every entry is the very same Resource."""
        if prev is not None:
            old = prev.resources.get(type_url)
            if old is not None and len(old) == len(entries) and all(old.get(n) is r for n, r in entries.items()):
                return prev.versions[type_url]
        return _type_version(entries)

    @staticmethod
    def _pack(type_url: str, name: str, msg: Message) -> Resource:
        if isinstance(msg, any_pb2.Any):
            packed = msg
        else:
            packed = any_pb2.Any()
            packed.Pack(msg, deterministic=True)
            own = _name_of(msg)
            if own is not None and own != name:
                raise ValueError(f"resource {name!r} of {type_url} names itself {own!r}")
        if packed.type_url != type_url:
            raise ValueError(f"resource {name!r} is a {packed.type_url}, not a {type_url}")
        return Resource(name=name, version=resource_version(packed), packed=packed)

    @staticmethod
    def _same(old: Snapshot, versions: Mapping[str, str]) -> bool:
        types = set(old.versions) | set(versions)
        return all(old.version(t) == versions.get(t, _EMPTY_VERSION) for t in types)

    def get(self, node_id: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(node_id)

    def delete(self, node_id: str) -> None:
        """Forget a node's snapshot; open streams keep what they were sent."""
        with self._lock:
            self._snapshots.pop(node_id, None)

    def node_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    # ------------------------------------------------------------------ watches

    def watch(self, node_id: str, callback: Callable[[], None],
              loop: asyncio.AbstractEventLoop | None = None) -> Watch:
        """Register a stream; calls ``on_missing`` if the node has no snapshot yet."""
        w = Watch(self, node_id, callback, loop or asyncio.get_running_loop())
        with self._lock:
            self._watches.setdefault(node_id, set()).add(w)
            self._stat(node_id).streams += 1
            missing = node_id not in self._snapshots
        if missing and self.on_missing is not None:
            try:
                self.on_missing(node_id)
            except Exception:
                log.exception("xds: on_missing(%r) failed", node_id)
        return w

    def _unwatch(self, w: Watch) -> None:
        with self._lock:
            ws = self._watches.get(w.node_id)
            if ws is not None and w in ws:
                ws.discard(w)
                if not ws:
                    del self._watches[w.node_id]
                self._stat(w.node_id).streams -= 1

    # ------------------------------------------------------------------ ACK / NACK / stats

    def _stat(self, node_id: str) -> NodeStats:
        st = self._stats.get(node_id)
        if st is None:
            st = self._stats[node_id] = NodeStats(node_id)
        return st

    def record_sent(self, node_id: str, type_url: str, version: str) -> None:
        with self._lock:
            st = self._stat(node_id)
            st.sent[type_url] = version
            st.pushes += 1
            st.last_push = time.time()

    def record_ack(self, node_id: str, type_url: str, version: str) -> None:
        """The client accepted ``version``: it supersedes any outstanding NACK for the type."""
        with self._lock:
            st = self._stat(node_id)
            st.acked[type_url] = version
            st.ack_count += 1
            st.last_ack = time.time()
            errors = self._errors.get(node_id)
            if errors is not None:
                errors.pop(type_url, None)
                if not errors:
                    del self._errors[node_id]

    def record_nack(self, node_id: str, type_url: str, version: str, message: str) -> None:
        """The client rejected ``version`` of ``type_url`` with ``message``."""
        nack = Nack(node_id, type_url, version, message, time.time())
        log.warning("xds: node %s rejected %s version %s: %s", node_id, type_url, version, message)
        with self._lock:
            self._nacks.setdefault(node_id, deque(maxlen=_MAX_NACKS_PER_NODE)).append(nack)
            self._errors.setdefault(node_id, {})[type_url] = nack
            self._stat(node_id).nack_count += 1

    def nacks(self, node_id: str) -> list[Nack]:
        """Recent NACKs of the node, oldest first (bounded history)."""
        with self._lock:
            return list(self._nacks.get(node_id, ()))

    def last_errors(self) -> dict[str, dict[str, Nack]]:
        """Outstanding rejections: node id → type URL → latest NACK not since followed by an ACK."""
        with self._lock:
            return {n: dict(e) for n, e in self._errors.items()}

    def stats(self, node_id: str) -> NodeStats | None:
        with self._lock:
            st = self._stats.get(node_id)
            if st is None:
                return None
            return NodeStats(st.node_id, st.streams, dict(st.acked), dict(st.sent), st.pushes,
                             st.ack_count, st.nack_count, st.last_ack, st.last_push)

    def all_stats(self) -> dict[str, NodeStats]:
        with self._lock:
            ids = list(self._stats)
        return {n: s for n in ids if (s := self.stats(n)) is not None}
