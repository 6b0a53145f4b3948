"""The ADS server against a raw gRPC client: the protocol rules of xds-protocol.md §1 and §9.

Each test opens real ADS streams on a free 127.0.0.1 port and plays the client by hand, so
every ACK, NACK, stale nonce and subscription change is explicit. "No response" is asserted by
waiting a short while on a reader task's queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from xds.cache import CLUSTER, ENDPOINT, LISTENER, ORDER, ROUTE, SECRET, SnapshotCache
from xds.server import XdsAuthError, consul_token, start_xds_server
from gateway.loopback import free_port

NODE = "gw-1"
QUIET = 0.3  # how long "no response" is waited for


# ---------------------------------------------------------------------- resources


def cluster(name: str, timeout: int = 1) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=timeout),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
        ),
    )


def cla(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                    address="127.0.0.1", port_value=p))))
            for p in ports
        ])],
    )


def listener(name: str, port: int) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)),
    )


def route(name: str, cluster_name: str) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
        name="all", domains=["*"], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=cluster_name))])])


def secret(name: str, value: str = "a") -> secret_pb2.Secret:
    return secret_pb2.Secret(name=name, generic_secret=secret_pb2.GenericSecret(
        secret=base_pb2.DataSource(inline_string=value)))


def world(*, a_timeout: int = 1, a_port: int = 9001, b: bool = True, listener_port: int = 8443,
          route_cluster: str = "a", sec: str = "a") -> dict[str, dict[str, Message]]:
    """A small but complete snapshot: clusters a (and b), their endpoints, a listener, a route, a secret."""
    clusters: dict[str, Message] = {"a": cluster("a", a_timeout)}
    endpoints: dict[str, Message] = {"a": cla("a", a_port)}
    if b:
        clusters["b"] = cluster("b")
        endpoints["b"] = cla("b", 9002)
    return {
        CLUSTER: clusters,
        ENDPOINT: endpoints,
        SECRET: {"s": secret("s", sec)},
        LISTENER: {"l": listener("l", listener_port)},
        ROUTE: {"r": route("r", route_cluster)},
    }


# ---------------------------------------------------------------------- client


class Ads:
    """One raw ADS stream: requests go out as written, responses queue up as they arrive."""

    def __init__(self, channel: grpc.aio.Channel, cache: SnapshotCache, delta: bool = False,
                 metadata: Any = None) -> None:
        self.cache = cache
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.delta = delta
        self.call: Any = (stub.DeltaAggregatedResources(metadata=metadata) if delta
                          else stub.StreamAggregatedResources(metadata=metadata))
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while (r := await self.call.read()) is not grpc.aio.EOF:
                await self.responses.put(r)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            await self.responses.put(None)

    async def send(self, type_url: str, names: tuple[str, ...] = (), *, version: str = "", nonce: str = "",
                   node: str | None = NODE, error: str | None = None) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                             version_info=version, response_nonce=nonce)
        if node is not None:
            req.node.id = node
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        await self.call.write(req)

    async def send_delta(self, type_url: str, subscribe: tuple[str, ...] = (), unsubscribe: tuple[str, ...] = (),
                         *, nonce: str = "", initial: Mapping[str, str] | None = None,
                         node: str | None = NODE, error: str | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=subscribe, resource_names_unsubscribe=unsubscribe,
            response_nonce=nonce, initial_resource_versions=dict(initial or {}))
        if node is not None:
            req.node.id = node
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> Any:
        resp = await asyncio.wait_for(self.responses.get(), timeout)
        assert resp is not None, f"stream ended: {self.error}"
        return resp

    async def nothing(self, wait: float = QUIET) -> None:
        await asyncio.sleep(wait)
        assert self.responses.empty(), f"unexpected response: {self.responses.get_nowait()}"

    def _counts(self) -> tuple[int, int]:
        st = self.cache.stats(NODE)
        return (st.ack_count, st.nack_count) if st else (0, 0)

    async def processed(self, before: tuple[int, int]) -> None:
        """Wait until the server has taken in an ACK/NACK sent after ``before`` was read.

        Without this, a snapshot change can overtake the ACK on the server, and the ACK then
        (correctly) reads as the EDS-after-CDS re-request.
        """
        async with asyncio.timeout(5):
            while self._counts() == before:
                await asyncio.sleep(0.005)

    async def ack(self, resp: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> None:
        before = self._counts()
        await self.send(resp.type_url, names, version=resp.version_info, nonce=resp.nonce)
        await self.processed(before)

    async def ack_delta(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        before = self._counts()
        await self.send_delta(resp.type_url, nonce=resp.nonce)
        await self.processed(before)

    async def subscribe(self, type_url: str, names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
        """Open a type, take its first response and ACK it (what every client does at start)."""
        await self.send(type_url, names)
        resp = await self.recv()
        assert resp.type_url == type_url
        await self.ack(resp, names)
        return resp

    async def close(self) -> None:
        self.call.cancel()
        self._pump.cancel()


@dataclass
class Env:
    cache: SnapshotCache
    channel: grpc.aio.Channel
    port: int
    streams: list[Ads]

    def ads(self, delta: bool = False, metadata: Any = None) -> Ads:
        a = Ads(self.channel, self.cache, delta, metadata)
        self.streams.append(a)
        return a


async def _env(cache: SnapshotCache, **server: Any) -> AsyncIterator[Env]:
    port = free_port()
    srv = await start_xds_server(cache, f"127.0.0.1:{port}", **server)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    env = Env(cache, channel, port, [])
    try:
        yield env
    finally:
        for s in env.streams:
            await s.close()
        await channel.close()
        await srv.stop(None)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in _env(SnapshotCache()):
        yield e


def names_of(resp: discovery_pb2.DiscoveryResponse, msg_type: type[Message]) -> list[str]:
    out = []
    for any_ in resp.resources:
        msg = msg_type()
        assert any_.Unpack(msg)
        out.append(getattr(msg, "cluster_name", "") or msg.name)  # type: ignore[attr-defined]
    return out


# ---------------------------------------------------------------------- SotW


async def test_initial_wildcard_cds_and_lds(env: Env) -> None:
    env.cache.set(NODE, world())
    snap = env.cache.get(NODE)
    assert snap is not None
    ads = env.ads()
    await ads.send(CLUSTER)
    cds = await ads.recv()
    assert cds.type_url == CLUSTER
    assert sorted(names_of(cds, cluster_pb2.Cluster)) == ["a", "b"]
    assert cds.version_info == snap.version(CLUSTER) and cds.nonce
    await ads.send(LISTENER)
    lds = await ads.recv()
    assert names_of(lds, listener_pb2.Listener) == ["l"]
    assert lds.version_info == snap.version(LISTENER)
    assert lds.nonce != cds.nonce
    assert lds.control_plane.identifier == "terminus"


async def test_ack_produces_no_response(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    await ads.subscribe(LISTENER)
    await ads.subscribe(ENDPOINT, ("a",))
    await ads.nothing()
    stats = env.cache.stats(NODE)
    assert stats is not None and stats.streams == 1
    snap = env.cache.get(NODE)
    assert snap is not None and stats.acked[CLUSTER] == snap.version(CLUSTER)


async def test_change_pushes_only_changed_types_with_new_versions_and_nonces(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    cds = await ads.subscribe(CLUSTER)
    lds = await ads.subscribe(LISTENER)
    await ads.subscribe(ENDPOINT, ("a", "b"))
    assert env.cache.set(NODE, world(listener_port=9443)) is True
    push = await ads.recv()
    assert push.type_url == LISTENER
    assert push.version_info != lds.version_info and push.nonce not in (lds.nonce, cds.nonce)
    await ads.ack(push)
    await ads.nothing()


async def test_unchanged_set_is_a_noop(env: Env) -> None:
    env.cache.set(NODE, world())
    before = env.cache.get(NODE)
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    await ads.subscribe(ENDPOINT, ("a",))
    assert env.cache.set(NODE, world()) is False  # new message objects, same content
    assert env.cache.get(NODE) is before
    await ads.nothing()


async def test_unrelated_named_change_is_not_pushed(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(ENDPOINT, ("a",))
    snap = world()
    snap[ENDPOINT]["b"] = cla("b", 9999)  # the client does not watch b
    assert env.cache.set(NODE, snap) is True
    await ads.nothing()


async def test_push_order_is_cds_eds_sds_lds_rds(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    # Subscribe in the "wrong" order on purpose; pushes must still follow ORDER.
    await ads.subscribe(ROUTE, ("r",))
    await ads.subscribe(LISTENER)
    await ads.subscribe(SECRET, ("s",))
    await ads.subscribe(ENDPOINT, ("a",))
    await ads.subscribe(CLUSTER)
    env.cache.set(NODE, world(a_timeout=2, a_port=9100, listener_port=9443, route_cluster="b", sec="b"))
    got = [(await ads.recv()).type_url for _ in ORDER]
    assert got == list(ORDER)


async def test_stale_nonce_is_ignored(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    first = await ads.subscribe(ENDPOINT, ("a",))
    env.cache.set(NODE, world(a_port=9100))
    push = await ads.recv()
    assert push.type_url == ENDPOINT and push.nonce != first.nonce
    # A request echoing the older nonce (even with a new name) is stale: no answer.
    await ads.send(ENDPOINT, ("a", "b"), version=first.version_info, nonce=first.nonce)
    await ads.nothing()
    # The same request with the latest nonce is answered, with the new name.
    await ads.send(ENDPOINT, ("a", "b"), version=push.version_info, nonce=push.nonce)
    resp = await ads.recv()
    assert sorted(names_of(resp, endpoint_pb2.ClusterLoadAssignment)) == ["a", "b"]


async def test_one_push_in_flight_and_intermediate_versions_skipped(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    env.cache.set(NODE, world(a_timeout=2))
    push = await ads.recv()
    # Not ACKed yet: further changes wait, and only the latest is sent after the ACK.
    env.cache.set(NODE, world(a_timeout=3))
    env.cache.set(NODE, world(a_timeout=4))
    await ads.nothing()
    await ads.ack(push)
    latest = await ads.recv()
    snap = env.cache.get(NODE)
    assert snap is not None and latest.version_info == snap.version(CLUSTER)
    c = cluster_pb2.Cluster()
    latest.resources[0].Unpack(c)
    assert c.connect_timeout.seconds == 4
    await ads.ack(latest)
    await ads.nothing()


async def test_held_change_holds_later_types_but_not_client_requests(env: Env) -> None:
    """Make-before-break survives coalescing: LDS waits behind an unACKed CDS with a held change."""
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    eds = await ads.subscribe(ENDPOINT, ("a",))
    await ads.subscribe(LISTENER)
    env.cache.set(NODE, world(a_timeout=2))
    c2 = await ads.recv()
    assert c2.type_url == CLUSTER
    env.cache.set(NODE, world(a_timeout=3, listener_port=9443))
    await ads.nothing()  # CDS is in flight, LDS is held behind it
    # What the client asks for meanwhile is answered (Envoy needs EDS to finish warming).
    await ads.send(ENDPOINT, ("a", "b"), version=eds.version_info, nonce=eds.nonce)
    assert (await ads.recv()).type_url == ENDPOINT
    await ads.nothing()
    await ads.ack(c2)
    c3 = await ads.recv()
    lds = await ads.recv()
    assert (c3.type_url, lds.type_url) == (CLUSTER, LISTENER)
    assert c3.version_info != c2.version_info


async def test_nack_is_recorded_and_not_resent(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    good = await ads.subscribe(CLUSTER)
    env.cache.set(NODE, world(a_timeout=2))
    bad = await ads.recv()
    await ads.send(CLUSTER, version=good.version_info, nonce=bad.nonce, error="cluster a: bad timeout")
    await ads.nothing()
    nacks = env.cache.nacks(NODE)
    assert [(n.type_url, n.version, n.message) for n in nacks] == [(CLUSTER, bad.version_info, "cluster a: bad timeout")]
    assert env.cache.last_errors()[NODE][CLUSTER].message == "cluster a: bad timeout"
    stats = env.cache.stats(NODE)
    assert stats is not None and stats.acked[CLUSTER] == good.version_info and stats.nack_count == 1
    # Setting the same (rejected) content again changes nothing; a new version is sent.
    assert env.cache.set(NODE, world(a_timeout=2)) is False
    await ads.nothing()
    env.cache.set(NODE, world(a_timeout=3))
    fixed = await ads.recv()
    assert fixed.version_info not in (good.version_info, bad.version_info)
    await ads.ack(fixed)
    await ads.nothing()
    assert NODE not in env.cache.last_errors()
    assert len(env.cache.nacks(NODE)) == 1  # history is kept


async def test_named_eds_and_adding_a_name_at_unchanged_version(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    first = await ads.subscribe(ENDPOINT, ("a",))
    assert names_of(first, endpoint_pb2.ClusterLoadAssignment) == ["a"]
    await ads.send(ENDPOINT, ("a", "b"), version=first.version_info, nonce=first.nonce)
    more = await ads.recv()
    assert more.version_info == first.version_info and more.nonce != first.nonce
    assert sorted(names_of(more, endpoint_pb2.ClusterLoadAssignment)) == ["a", "b"]
    # A name that does not exist yet is remembered and sent once it appears.
    await ads.send(ENDPOINT, ("a", "b", "c"), version=more.version_info, nonce=more.nonce)
    await ads.nothing()
    snap = world()
    snap[ENDPOINT]["c"] = cla("c", 9003)
    env.cache.set(NODE, snap)
    late = await ads.recv()
    assert "c" in names_of(late, endpoint_pb2.ClusterLoadAssignment)
    # Dropping a name and adding it back sends it again.
    await ads.send(ENDPOINT, ("a",), version=late.version_info, nonce=late.nonce)
    await ads.nothing()
    await ads.send(ENDPOINT, ("a", "c"), version=late.version_info, nonce=late.nonce)
    again = await ads.recv()
    assert "c" in names_of(again, endpoint_pb2.ClusterLoadAssignment)


async def test_eds_rerequest_after_cds_change_is_answered(env: Env) -> None:
    """Envoy's warming trap (§1.9): after CDS its EDS request looks exactly like an ACK."""
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    eds = await ads.subscribe(ENDPOINT, ("a", "b"))
    env.cache.set(NODE, world(a_timeout=5))  # cluster a changes, its endpoints do not
    cds = await ads.recv()
    assert cds.type_url == CLUSTER
    await ads.nothing()
    await ads.send(ENDPOINT, ("a", "b"), version=eds.version_info, nonce=eds.nonce)  # identical to the old ACK
    warm = await ads.recv()
    assert warm.type_url == ENDPOINT and warm.version_info == eds.version_info
    assert sorted(names_of(warm, endpoint_pb2.ClusterLoadAssignment)) == ["a", "b"]
    await ads.ack(warm, ("a", "b"))
    await ads.ack(cds)
    await ads.nothing()


async def test_full_state_cds_deletes_by_omission(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads()
    await ads.subscribe(CLUSTER)
    env.cache.set(NODE, world(b=False))
    push = await ads.recv()
    assert names_of(push, cluster_pb2.Cluster) == ["a"]


async def test_grpc_style_named_lds_has_no_legacy_wildcard(env: Env) -> None:
    snap = world()
    snap[LISTENER]["other"] = listener("other", 7000)
    env.cache.set(NODE, snap)
    ads = env.ads()
    resp = await ads.subscribe(LISTENER, ("l",))
    assert names_of(resp, listener_pb2.Listener) == ["l"]
    snap[LISTENER]["other"] = listener("other", 7001)  # not subscribed: not pushed
    env.cache.set(NODE, snap)
    await ads.nothing()
    # Wildcard + a name, then the wildcard dropped: full state follows the subscription.
    await ads.send(LISTENER, ("*", "l"), version=resp.version_info, nonce=resp.nonce)
    both = await ads.recv()
    assert sorted(names_of(both, listener_pb2.Listener)) == ["l", "other"]
    await ads.send(LISTENER, ("l",), version=both.version_info, nonce=both.nonce)
    one = await ads.recv()
    assert names_of(one, listener_pb2.Listener) == ["l"]


async def test_missing_node_is_invalid_argument(env: Env) -> None:
    ads = env.ads()
    await ads.send(CLUSTER, node=None)
    assert await ads.responses.get() is None
    assert ads.error is not None
    assert ads.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ads.error.details() == "missing node information"
    delta = env.ads(delta=True)
    await delta.send_delta(CLUSTER, node=None)
    assert await delta.responses.get() is None
    assert delta.error is not None and delta.error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_on_missing_builds_snapshot_from_a_thread() -> None:
    asked: list[str] = []
    cache = SnapshotCache()

    def build(node_id: str) -> None:
        asked.append(node_id)
        threading.Thread(target=cache.set, args=(node_id, world())).start()

    cache.on_missing = build
    async for env in _env(cache):
        ads = env.ads()
        await ads.send(CLUSTER)
        resp = await ads.recv()
        assert sorted(names_of(resp, cluster_pb2.Cluster)) == ["a", "b"]
        assert asked == [NODE]
        # A second stream for a node that now has a snapshot does not ask again.
        other = env.ads()
        await other.send(CLUSTER)
        await other.recv()
        assert asked == [NODE]


async def test_authorize_hook_denies_and_sees_token() -> None:
    seen: list[str | None] = []

    async def authorize(node: base_pb2.Node, metadata: Any) -> None:
        token = consul_token(node, metadata)
        seen.append(token)
        if token != "secret":
            raise XdsAuthError("ACL not found")

    cache = SnapshotCache()
    cache.set(NODE, world())
    async for env in _env(cache, authorize=authorize):
        denied = env.ads(metadata=(("x-consul-token", "wrong"),))
        await denied.send(CLUSTER)
        assert await denied.responses.get() is None
        assert denied.error is not None and denied.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert denied.error.details() == "ACL not found"
        allowed = env.ads(metadata=(("x-consul-token", "secret"),))
        await allowed.send(CLUSTER)
        assert (await allowed.recv()).type_url == CLUSTER
        assert seen == ["wrong", "secret"]


def test_consul_token_from_node_metadata() -> None:
    node = base_pb2.Node(id="n", metadata=struct_pb2.Struct(fields={
        "x-consul-token": struct_pb2.Value(string_value="from-node")}))
    assert consul_token(node, ()) == "from-node"
    assert consul_token(node, (("x-consul-token", "from-md"),)) == "from-md"
    assert consul_token(base_pb2.Node(id="n"), None) is None


def test_cache_rejects_mismatched_resources() -> None:
    cache = SnapshotCache()
    with pytest.raises(ValueError):
        cache.set(NODE, {CLUSTER: {"a": listener("a", 1)}})
    with pytest.raises(ValueError):
        cache.set(NODE, {CLUSTER: {"a": cluster("b")}})
    with pytest.raises(ValueError):
        cache.set(NODE, {ENDPOINT: {"a": cla("b", 1)}})


def test_versions_are_content_hashes() -> None:
    one, two = SnapshotCache(), SnapshotCache()
    one.set("x", world())
    two.set("y", world())
    a, b = one.get("x"), two.get("y")
    assert a is not None and b is not None
    assert dict(a.versions) == dict(b.versions)
    assert a.entries(CLUSTER)["a"].version == b.entries(CLUSTER)["a"].version
    one.set("x", world(a_timeout=9))
    c = one.get("x")
    assert c is not None and c.version(CLUSTER) != a.version(CLUSTER)
    assert c.version(LISTENER) == a.version(LISTENER)
    assert c.entries(CLUSTER)["b"].version == a.entries(CLUSTER)["b"].version


# ---------------------------------------------------------------------- delta


async def test_delta_initial_wildcard_and_removal(env: Env) -> None:
    env.cache.set(NODE, world())
    snap = env.cache.get(NODE)
    assert snap is not None
    ads = env.ads(delta=True)
    await ads.send_delta(CLUSTER)
    resp = await ads.recv()
    assert {r.name: r.version for r in resp.resources} == {
        n: e.version for n, e in snap.entries(CLUSTER).items()}
    assert resp.system_version_info == snap.version(CLUSTER) and resp.nonce
    assert not resp.removed_resources
    await ads.ack_delta(resp)  # ACK
    await ads.nothing()
    env.cache.set(NODE, world(b=False))
    gone = await ads.recv()
    assert list(gone.removed_resources) == ["b"] and not gone.resources
    await ads.ack_delta(gone)
    env.cache.set(NODE, world(b=False, a_timeout=3))
    changed = await ads.recv()
    assert [r.name for r in changed.resources] == ["a"] and not changed.removed_resources


async def test_delta_named_subscribe_missing_and_unsubscribe(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads(delta=True)
    await ads.send_delta(ENDPOINT, ("a", "nope"))
    resp = await ads.recv()
    assert [r.name for r in resp.resources] == ["a"]
    assert list(resp.removed_resources) == ["nope"]  # fast "does not exist"
    await ads.ack_delta(resp)
    await ads.nothing()
    # Subscribing to a name the client already has is answered (it may have dropped it).
    await ads.send_delta(ENDPOINT, ("a",))
    again = await ads.recv()
    assert [r.name for r in again.resources] == ["a"]
    await ads.ack_delta(again)
    # Unsubscribe: no answer, and later changes to it are not pushed.
    await ads.send_delta(ENDPOINT, (), ("a",))
    await ads.nothing()
    env.cache.set(NODE, world(a_port=9100))
    await ads.nothing()
    # The missing name appears: it is sent.
    snap = world(a_port=9100)
    snap[ENDPOINT]["nope"] = cla("nope", 9004)
    env.cache.set(NODE, snap)
    late = await ads.recv()
    assert [r.name for r in late.resources] == ["nope"]


async def test_delta_initial_resource_versions_skip_unchanged(env: Env) -> None:
    env.cache.set(NODE, world())
    snap = env.cache.get(NODE)
    assert snap is not None
    va = snap.entries(ENDPOINT)["a"].version
    ads = env.ads(delta=True)
    await ads.send_delta(ENDPOINT, ("a", "b"), initial={"a": va})
    resp = await ads.recv()
    assert [r.name for r in resp.resources] == ["b"]
    # Reconnect to wildcard CDS claiming an old a and a deleted z.
    cds = env.ads(delta=True)
    await cds.send_delta(CLUSTER, initial={"a": "stale", "b": snap.entries(CLUSTER)["b"].version, "z": "1"})
    r = await cds.recv()
    assert [x.name for x in r.resources] == ["a"] and list(r.removed_resources) == ["z"]


async def test_delta_nack_not_resent_and_no_stale_nonce_rejection(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads(delta=True)
    await ads.send_delta(ENDPOINT, ("a",))
    first = await ads.recv()
    await ads.send_delta(ENDPOINT, nonce=first.nonce, error="bad endpoint")
    await ads.nothing()
    assert env.cache.nacks(NODE)[-1].message == "bad endpoint"
    # A subscription change carrying an old nonce is still honoured in delta.
    await ads.send_delta(ENDPOINT, ("b",), nonce="0")
    resp = await ads.recv()
    assert [r.name for r in resp.resources] == ["b"]


async def test_delta_wildcard_plus_explicit_unsubscribe_resends(env: Env) -> None:
    env.cache.set(NODE, world())
    ads = env.ads(delta=True)
    await ads.send_delta(CLUSTER)
    first = await ads.recv()
    await ads.send_delta(CLUSTER, ("a",), nonce=first.nonce)
    sub = await ads.recv()
    assert [r.name for r in sub.resources] == ["a"]
    await ads.ack_delta(sub)
    await ads.send_delta(CLUSTER, (), ("a",))  # still covered by the wildcard: must be answered
    resp = await ads.recv()
    assert [r.name for r in resp.resources] == ["a"]
    await ads.ack_delta(resp)
    await ads.send_delta(CLUSTER, (), ("*",))  # wildcard off, nothing named: nothing to send
    await ads.nothing()
    env.cache.set(NODE, world(a_timeout=7))
    await ads.nothing()
