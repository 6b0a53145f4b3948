"""gRPC's own xDS client (grpcio, ``xds:///``) resolves a service through terminus's ADS server.

The client runs in a subprocess because ``GRPC_XDS_BOOTSTRAP`` must be set before gRPC
initialises. It calls a generic (proto-less) unary method in a loop and prints which backend
answered; the test moves the EDS endpoint from backend A to backend B and waits for the calls
to follow. Resources are the minimal set of xds-protocol.md §4.3.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE, SnapshotCache
from xds.server import start_xds_server
from gateway.loopback import free_port

pytestmark = pytest.mark.slow

SERVICE = "greeter"
NODE = "grpc-client-1"
METHOD = "/terminus.test.Greeter/Hello"

# The client: one call at a time, one line per result; it exits when its stdin closes, so it
# never outlives the test process.
CLIENT = r"""
import os, sys, threading, time
import grpc

threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
channel = grpc.insecure_channel("xds:///" + sys.argv[1])
hello = channel.unary_unary(sys.argv[2])
while True:
    try:
        print("ok", hello(b"hi", timeout=5, wait_for_ready=True).decode(), flush=True)
    except grpc.RpcError as exc:
        print("err", exc.code().name, exc.details(), flush=True)
    time.sleep(0.05)
"""


def _any(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def resources(backend_port: int) -> dict[str, dict[str, Message]]:
    """Listener (api_listener HCM + RDS), route, EDS cluster, and a weighted locality."""
    ads = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(route_config_name=f"{SERVICE}-route", config_source=ads),
        http_filters=[hcm_pb2.HttpFilter(name="router", typed_config=_any(router_pb2.Router()))],
    )
    lst = listener_pb2.Listener(name=SERVICE, api_listener=api_listener_pb2.ApiListener(api_listener=_any(hcm)))
    rc = route_pb2.RouteConfiguration(name=f"{SERVICE}-route", virtual_hosts=[route_components_pb2.VirtualHost(
        name=SERVICE, domains=[SERVICE], routes=[route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=""),
            route=route_components_pb2.RouteAction(cluster=f"{SERVICE}-cluster"))])])
    cl = cluster_pb2.Cluster(
        name=f"{SERVICE}-cluster", type=cluster_pb2.Cluster.EDS, lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads))
    la = endpoint_pb2.ClusterLoadAssignment(cluster_name=f"{SERVICE}-cluster", endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region="r", zone="z"),
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
            lb_endpoints=[endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                    address="127.0.0.1", port_value=backend_port))))])])
    return {
        LISTENER: {SERVICE: lst},
        ROUTE: {rc.name: rc},
        CLUSTER: {cl.name: cl},
        ENDPOINT: {la.cluster_name: la},
    }


async def backend(name: str) -> tuple[grpc.aio.Server, int]:
    """A proto-less greeter: answers every call to METHOD with its own name."""

    async def hello(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return name.encode()

    server = grpc.aio.server()
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(hello)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


class Client:
    """The subprocess and its output lines; stderr goes to a file for failure messages."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []

    async def until(self, line: str, timeout: float) -> None:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError("client exited")
                    self.lines.append(raw.decode().strip())
                    if self.lines[-1] == line:
                        return
        except (TimeoutError, AssertionError) as exc:
            tail = "\n".join(self.lines[-10:])
            raise AssertionError(f"no {line!r} ({exc!r}); last lines:\n{tail}\nstderr:\n"
                                 f"{self.stderr.read_text()[-3000:]}") from None

    async def next_lines(self, n: int) -> list[str]:
        assert self.proc.stdout is not None
        out = []
        for _ in range(n):
            raw = await asyncio.wait_for(self.proc.stdout.readline(), 10)
            out.append(raw.decode().strip())
        return out


async def start_client(tmp_path: Path, xds_port: int) -> Client:
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(json.dumps({
        "xds_servers": [{"server_uri": f"127.0.0.1:{xds_port}", "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": NODE, "locality": {"zone": "z"}},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_XDS_")}
    env["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
    stderr = tmp_path / "client.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, SERVICE, METHOD, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err)
    return Client(proc, stderr)


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, int]]:
    started = [await backend("backend-a"), await backend("backend-b")]
    try:
        yield {"a": started[0][1], "b": started[1][1]}
    finally:
        for server, _ in started:
            await server.stop(None)


async def test_grpc_xds_client_resolves_and_follows_eds(tmp_path: Path, servers: dict[str, int]) -> None:
    cache = SnapshotCache()
    cache.set(NODE, resources(servers["a"]))
    xds_port = free_port()
    xds = await start_xds_server(cache, f"127.0.0.1:{xds_port}")
    client = await start_client(tmp_path, xds_port)
    try:
        await client.until("ok backend-a", timeout=60)
        stats = cache.stats(NODE)
        assert stats is not None and set(stats.acked) == {LISTENER, ROUTE, CLUSTER, ENDPOINT}
        assert cache.nacks(NODE) == []

        cache.set(NODE, resources(servers["b"]))
        await client.until("ok backend-b", timeout=30)
        assert await client.next_lines(5) == ["ok backend-b"] * 5
        snap = cache.get(NODE)
        assert snap is not None
        await asyncio.sleep(0.2)
        stats = cache.stats(NODE)
        assert stats is not None and stats.acked[ENDPOINT] == snap.version(ENDPOINT)
        assert cache.nacks(NODE) == []
    finally:
        if client.proc.returncode is None:
            client.proc.kill()
        await client.proc.wait()
        await xds.stop(None)
