"""A proxy only gets the config of the service its token may write (ACLs on the xDS port),
and the xDS port can be served over TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.support.envoy import free_port
from tests.support.pki import make_ca, make_leaf

pytestmark = pytest.mark.slow
MGMT = "11111111-2222-3333-4444-555555555555"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


async def first_cds(channel: grpc.aio.Channel, node_id: str, token: str | None) -> discovery_pb2.DiscoveryResponse:
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    metadata = (("x-consul-token", token),) if token else None
    call = stub.StreamAggregatedResources(metadata=metadata)
    await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node_id, cluster="api"), type_url=CDS))
    try:
        return await asyncio.wait_for(call.read(), 10)
    finally:
        call.cancel()


def mesh(server: Any) -> dict[str, str]:
    h = {"X-Consul-Token": MGMT}
    with httpx.Client(base_url=server.url, headers=h) as c:
        assert c.put("/v1/agent/service/register", json={"Name": "api", "Port": 9090, "Connect": {"SidecarService": {}}}).status_code == 200
        api_tok = c.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "api"}]}).json()["SecretID"]
        web_tok = c.put("/v1/acl/token", json={"ServiceIdentities": [{"ServiceName": "web"}]}).json()["SecretID"]
    return {"api": api_tok, "web": web_tok}


def test_xds_stream_needs_service_write_on_the_proxied_service(start_server: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.hcl"
    cfg.write_text(f'acl {{\n  enabled = true\n  default_policy = "deny"\n  tokens {{\n    initial_management = "{MGMT}"\n  }}\n}}\n')
    grpc_port = free_port()
    server = start_server("--data-dir", str(tmp_path / "d"), "--config-file", str(cfg), "--grpc-addr", f"127.0.0.1:{grpc_port}")
    tokens = mesh(server)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            resp = await first_cds(channel, "api-sidecar-proxy", tokens["api"])
            assert resp.type_url == CDS and len(resp.resources) >= 1  # local_app at least
            for token in (tokens["web"], None, "not-a-token"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await first_cds(channel, "api-sidecar-proxy", token)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(scenario())


def test_xds_port_over_tls(start_server: Any, tmp_path: Path) -> None:
    ca = make_ca("xds.test")
    leaf = make_leaf(ca, uri_sans=[], dns_sans=["localhost"], eku=("server",))
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    grpc_port = free_port()
    start_server("--dev", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                 "--grpc-tls-cert", str(tmp_path / "cert.pem"), "--grpc-tls-key", str(tmp_path / "key.pem"))

    async def scenario() -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{grpc_port}", creds,
                                           options=(("grpc.ssl_target_name_override", "localhost"),)) as channel:
            resp = await first_cds(channel, "nobody", None)
            assert resp.type_url == CDS
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await first_cds(plain, "nobody", None)

    asyncio.run(scenario())
