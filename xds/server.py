"""The ADS gRPC server: streams each node's :class:`~xds.cache.SnapshotCache` snapshot.

SotW (``StreamAggregatedResources``) and delta (``DeltaAggregatedResources``) follow
xds-protocol.md §1 and the §9 checklist:

* the node comes from the first request; a stream without ``node.id`` is refused;
* per stream and type we keep the subscription (names + wildcard / legacy wildcard), the last
  nonce and version sent, the last version ACKed and what the client was sent (per resource);
* a NACK (``error_detail`` present) is recorded in the cache and never answered with the same
  content: we send again only when the content changes (no reject loop);
* SotW requests with a stale nonce are ignored; delta never rejects on nonce;
* LDS/CDS responses carry the full state; RDS/EDS/SDS carry the subscribed resources, and newly
  subscribed names are answered even at an unchanged version;
* after a CDS push the next EDS request is answered even if it looks like an ACK (Envoy's
  cluster-warming trap, §1.9);
* pushes go out in :data:`~xds.cache.ORDER`; a type has at most one unacknowledged push, and a
  type whose change is held behind an unacknowledged push also holds the types after it, so
  make-before-break survives coalescing. Requests from the client are always answered.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds.cache import (
    CLUSTER,
    ENDPOINT,
    WILDCARD_TYPES,
    Snapshot,
    SnapshotCache,
    order_types,
)

__all__ = [
    "AggregatedDiscoveryService",
    "Authorizer",
    "XdsAuthError",
    "consul_token",
    "start_xds_server",
]

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]
#: ``authorize(node, invocation_metadata)``; raise :class:`XdsAuthError` / PermissionError to refuse.
Authorizer = Callable[[base_pb2.Node, Metadata], Awaitable[None] | None]

CONTROL_PLANE_ID = "terminus"
_MISSING_NODE = "missing node information"


class XdsAuthError(Exception):
    """Raised by an authorize hook to end the stream with ``code`` (PERMISSION_DENIED by default)."""

    def __init__(self, message: str = "permission denied",
                 code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> None:
        super().__init__(message)
        self.code = code


def consul_token(node: base_pb2.Node, metadata: Metadata | None) -> str | None:
    """The ACL token a proxy presents: gRPC metadata ``x-consul-token``, else node metadata."""
    for key, value in metadata or ():
        if key.lower() == "x-consul-token" and value:
            return value.decode() if isinstance(value, bytes) else value
    field_ = node.metadata.fields.get("x-consul-token")
    if field_ is not None and field_.WhichOneof("kind") == "string_value" and field_.string_value:
        return field_.string_value
    return None


# ---------------------------------------------------------------------- stream skeleton

Req = TypeVar("Req", discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)
State = TypeVar("State")


class _Stream(Generic[Req, State]):
    """One ADS stream: a reader task queues requests, cache changes wake it, one loop answers.

    Everything below runs on the server's event loop; the cache reaches it only through
    ``call_soon_threadsafe``. Responses are written from this single loop, so ordering on the
    wire is the order we decide here.
    """

    def __init__(self, service: AggregatedDiscoveryService, node: base_pb2.Node,
                 context: grpc.aio.ServicerContext) -> None:
        self.cache = service.cache
        self.node = node
        self.node_id = node.id
        self.context = context
        self.types: dict[str, State] = {}
        self._nonces = itertools.count(1)
        self._pending: deque[Req] = deque()
        self._wake = asyncio.Event()
        self._eof = False
        self._read_error: BaseException | None = None

    def _nonce(self) -> str:
        return str(next(self._nonces))

    def _on_change(self) -> None:
        self._wake.set()

    async def _read(self) -> None:
        try:
            while (req := await self.context.read()) is not grpc.aio.EOF:
                self._pending.append(req)
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # peer went away mid-read
            self._read_error = exc
        finally:
            self._eof = True
            self._wake.set()

    async def run(self, first: Req) -> None:
        self._pending.append(first)
        reader = asyncio.create_task(self._read())
        watch = self.cache.watch(self.node_id, self._on_change)
        log.debug("xds: %s stream opened for node %s", type(self).__name__, self.node_id)
        try:
            while True:
                self._wake.clear()
                while self._pending:
                    await self.handle(self._pending.popleft())
                await self.push()
                if self._eof and not self._pending:
                    if self._read_error is not None:
                        log.debug("xds: stream of node %s ended: %s", self.node_id, self._read_error)
                    return
                if not self._pending:
                    await self._wake.wait()
        finally:
            watch.close()
            reader.cancel()
            log.debug("xds: stream closed for node %s", self.node_id)

    async def handle(self, req: Req) -> None:
        raise NotImplementedError

    async def push(self) -> None:
        raise NotImplementedError

    def _control_plane(self) -> base_pb2.ControlPlane:
        return base_pb2.ControlPlane(identifier=CONTROL_PLANE_ID)

    async def _require_type(self, type_url: str) -> None:
        if not type_url:
            await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required on ADS")


# ---------------------------------------------------------------------- state of the world


@dataclass
class _SotwType:
    """Per-stream state of one type (SotW)."""

    type_url: str
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    ever_named: bool = False
    nonce: str = ""
    version: str = ""
    acked: str = ""
    error: str | None = None
    sent: dict[str, str] | None = None  # name → version in the last response; None: owe one
    in_flight: bool = False
    always_respond: bool = False  # EDS after a CDS push (warming)
    requested: bool = False  # the client spoke for this type since the last push pass
    force: bool = False

    def subscribe(self, resource_names: Sequence[str]) -> bool:
        """Apply a request's names (legacy wildcard only for LDS/CDS); True if it changed."""
        before = (self.wildcard, frozenset(self.names))
        names = set(resource_names)
        if names:
            self.ever_named = True
        if not self.ever_named and self.type_url in WILDCARD_TYPES:
            self.wildcard, names = True, set()
        else:
            self.wildcard = "*" in names
            names.discard("*")
        self.names = names
        if self.sent is not None and self.type_url not in WILDCARD_TYPES:
            # Forget what we sent for dropped names, so re-adding one sends it again (§1.7).
            self.sent = {n: v for n, v in self.sent.items() if n in names or self.wildcard}
        return before != (self.wildcard, frozenset(self.names))

    def visible(self, snap: Snapshot) -> dict[str, str]:
        entries = snap.entries(self.type_url)
        if self.wildcard:
            return {n: e.version for n, e in entries.items()}
        return {n: entries[n].version for n in self.names if n in entries}

    def pending(self, snap: Snapshot) -> bool:
        """Would the latest snapshot change what this client has been sent?"""
        visible = self.visible(snap)
        if self.sent is None:
            return True
        if self.type_url in WILDCARD_TYPES:
            return visible != self.sent
        return any(self.sent.get(n) != v for n, v in visible.items())


class _SotwStream(_Stream[discovery_pb2.DiscoveryRequest, _SotwType]):
    async def handle(self, req: discovery_pb2.DiscoveryRequest) -> None:
        t = req.type_url
        await self._require_type(t)
        st = self.types.get(t)
        nack = req.HasField("error_detail")
        if st is None or not req.response_nonce:
            # A new subscription, or the client lost its state (reconnect): answer it.
            st = self.types[t] = _SotwType(t)
            st.subscribe(req.resource_names)
            st.requested = st.force = True
            if nack:
                self.cache.record_nack(self.node_id, t, req.version_info, req.error_detail.message)
            return
        if req.response_nonce != st.nonce:
            log.debug("xds: node %s: stale nonce %s for %s (latest %s), ignored",
                      self.node_id, req.response_nonce, t, st.nonce)
            return
        st.in_flight = False
        if nack:
            st.error = req.error_detail.message
            self.cache.record_nack(self.node_id, t, st.version, st.error)
        else:
            st.acked, st.error = st.version, None
            self.cache.record_ack(self.node_id, t, st.version)
        changed = st.subscribe(req.resource_names)
        st.requested = True
        if not nack and changed and t in WILDCARD_TYPES:
            st.force = True  # full-state types answer any subscription change
        if not nack and st.always_respond:
            st.force = True  # the EDS re-request after CDS looks like an ACK: answer it
        if not nack:
            st.always_respond = False

    async def push(self) -> None:
        snap = self.cache.get(self.node_id)
        if snap is None:
            return
        blocked = False
        for t in order_types(self.types):
            st = self.types[t]
            requested, force = st.requested, st.force
            st.requested = st.force = False
            if st.in_flight:
                blocked = blocked or st.pending(snap)
                continue
            if blocked and not requested:
                continue  # held behind an earlier type's unacknowledged push
            resp = self._response(st, snap, force)
            if resp is not None:
                await self.context.write(resp)

    def _response(self, st: _SotwType, snap: Snapshot, force: bool) -> discovery_pb2.DiscoveryResponse | None:
        t = st.type_url
        entries = snap.entries(t)
        visible = st.visible(snap)
        if st.sent is None:
            force = True
        if t in WILDCARD_TYPES:
            if not force and visible == st.sent:
                return None
        else:
            if st.sent:  # named types: vanished resources are dropped implicitly (§1.8)
                st.sent = {n: v for n, v in st.sent.items() if n in visible}
            if not visible:
                st.sent = {}
                return None  # nothing subscribed exists yet: SotW has nothing to say
            if not force and st.sent is not None and all(st.sent.get(n) == v for n, v in visible.items()):
                return None
        nonce = self._nonce()
        resp = discovery_pb2.DiscoveryResponse(
            version_info=snap.version(t), type_url=t, nonce=nonce, control_plane=self._control_plane(),
        )
        resp.resources.extend(entries[n].packed for n in sorted(visible))
        st.sent, st.version, st.nonce, st.in_flight = dict(visible), resp.version_info, nonce, True
        if t == CLUSTER and ENDPOINT in self.types:
            self.types[ENDPOINT].always_respond = True
        elif t == ENDPOINT:
            st.always_respond = False
        self.cache.record_sent(self.node_id, t, resp.version_info)
        log.debug("xds: node %s <- %s v%s nonce %s (%d resources)",
                  self.node_id, t, resp.version_info, nonce, len(resp.resources))
        return resp


# ---------------------------------------------------------------------- incremental (delta)

_UNSET: Any = object()


@dataclass
class _DeltaType:
    """Per-stream state of one type (delta)."""

    type_url: str
    names: set[str] = field(default_factory=set)
    wildcard: bool = False
    known: dict[str, str | None] = field(default_factory=dict)  # client has name@version; None: told absent
    nonce: str = ""
    version: str = ""
    acked: str = ""
    error: str | None = None
    in_flight: bool = False
    initial: bool = True  # first response still owed (wildcard types answer even when empty)
    requested: bool = False

    def apply(self, req: discovery_pb2.DeltaDiscoveryRequest, first: bool) -> None:
        if first:  # legacy wildcard: the first request subscribes to nothing by name
            self.wildcard = self.type_url in WILDCARD_TYPES and not req.resource_names_subscribe
        for n in req.resource_names_subscribe:
            if n == "*":
                self.wildcard = True
            else:
                self.names.add(n)
                self.known.pop(n, None)  # the client may have dropped it: always send (§1.11)
        for n in req.resource_names_unsubscribe:
            if n == "*":
                self.wildcard = False
            else:
                self.names.discard(n)
                self.known.pop(n, None)  # still under the wildcard: resend it; else forget it
        if not self.wildcard:
            self.known = {n: v for n, v in self.known.items() if n in self.names}
        if first:
            for n, v in req.initial_resource_versions.items():
                if self.wildcard or n in self.names:
                    self.known[n] = v

    def diff(self, snap: Snapshot) -> tuple[list[str], list[str]]:
        """(names to send, names to remove) to bring the client to the latest snapshot."""
        entries = snap.entries(self.type_url)
        want = set(entries) if self.wildcard else self.names & set(entries)
        send = sorted(n for n in want if self.known.get(n, _UNSET) != entries[n].version)
        removed = {n for n, v in self.known.items() if v is not None and n not in want}
        removed |= {n for n in self.names - want if n not in self.known}
        return send, sorted(removed)


class _DeltaStream(_Stream[discovery_pb2.DeltaDiscoveryRequest, _DeltaType]):
    async def handle(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        t = req.type_url
        await self._require_type(t)
        st = self.types.get(t)
        first = st is None
        if st is None:
            st = self.types[t] = _DeltaType(t)
        st.apply(req, first)
        if req.response_nonce:
            latest = req.response_nonce == st.nonce
            if latest:
                st.in_flight = False
            if req.HasField("error_detail"):
                st.error = req.error_detail.message
                version = st.version if latest else ""
                self.cache.record_nack(self.node_id, t, version, st.error)
            elif latest:
                st.acked, st.error = st.version, None
                self.cache.record_ack(self.node_id, t, st.version)
        st.requested = True

    async def push(self) -> None:
        snap = self.cache.get(self.node_id)
        if snap is None:
            return
        blocked = False
        for t in order_types(self.types):
            st = self.types[t]
            requested, st.requested = st.requested, False
            if (st.in_flight or blocked) and not requested:
                send, removed = st.diff(snap)
                blocked = blocked or bool(send or removed)
                continue
            resp = self._response(st, snap)
            if resp is not None:
                await self.context.write(resp)

    def _response(self, st: _DeltaType, snap: Snapshot) -> discovery_pb2.DeltaDiscoveryResponse | None:
        t = st.type_url
        send, removed = st.diff(snap)
        if not (send or removed or (st.initial and t in WILDCARD_TYPES)):
            return None
        st.initial = False
        entries = snap.entries(t)
        nonce = self._nonce()
        resp = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=snap.version(t), type_url=t, nonce=nonce,
            control_plane=self._control_plane(), removed_resources=removed,
        )
        for n in send:
            e = entries[n]
            resp.resources.add(name=n, version=e.version, resource=e.packed)
            st.known[n] = e.version
        for n in removed:
            if n in st.names:
                st.known[n] = None
            else:
                st.known.pop(n, None)
        st.version, st.nonce, st.in_flight = resp.system_version_info, nonce, True
        self.cache.record_sent(self.node_id, t, resp.system_version_info)
        log.debug("xds: node %s <- delta %s nonce %s (+%d -%d)", self.node_id, t, nonce, len(send), len(removed))
        return resp


# ---------------------------------------------------------------------- service


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS over grpc.aio; holds no per-node state itself (that is the cache's and the streams')."""

    def __init__(self, cache: SnapshotCache, authorize: Authorizer | None = None) -> None:
        self.cache = cache
        self.authorize = authorize

    async def _open(self, context: grpc.aio.ServicerContext) -> Any:
        """Read the first request, check its node and authorize the stream."""
        first = await context.read()
        if first is grpc.aio.EOF:
            return None
        if not first.HasField("node") or not first.node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MISSING_NODE)
        if self.authorize is not None:
            try:
                result = self.authorize(first.node, tuple(context.invocation_metadata() or ()))
                if inspect.isawaitable(result):
                    await result
            except XdsAuthError as exc:
                await context.abort(exc.code, str(exc))
            except PermissionError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc) or "permission denied")
            except Exception:
                log.exception("xds: authorize hook failed for node %s", first.node.id)
                await context.abort(grpc.StatusCode.INTERNAL, "authorization check failed")
        return first

    async def StreamAggregatedResources(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext,
    ) -> None:
        first = await self._open(context)
        if first is not None:
            await _SotwStream(self, first.node, context).run(first)

    async def DeltaAggregatedResources(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        first = await self._open(context)
        if first is not None:
            await _DeltaStream(self, first.node, context).run(first)


async def start_xds_server(cache: SnapshotCache, addr: str, authorize: Authorizer | None = None,
                           tls: grpc.ServerCredentials | None = None) -> grpc.aio.Server:
    """Start ADS on exactly ``addr`` (``host:port``); the caller stops it with ``await server.stop(grace)``."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscoveryService(cache, authorize), server)
    port = server.add_secure_port(addr, tls) if tls is not None else server.add_insecure_port(addr)
    if not port:
        raise RuntimeError(f"xds: cannot bind {addr}")
    await server.start()
    log.info("xds: ADS server listening on %s", addr)
    return server
