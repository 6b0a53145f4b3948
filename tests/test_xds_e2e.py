"""End to end with real Envoy 1.40: an `api` sidecar -> a terminating gateway -> a plain
HTTP server registered as an external service. Intentions change over the REST API and
the outcome follows within a second, without restarting Envoy; SotW and delta both."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.support.envoy import EnvoyProcess, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def bootstrap(server: Any, grpc_port: int, xds_api: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "connect", "envoy", "--bootstrap", "--http-addr", server.addr,
         "--grpc-addr", f"127.0.0.1:{grpc_port}", "--admin-bind", f"127.0.0.1:{free_port()}", "--xds-api", xds_api, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        try:
            last = predicate()
            if last:
                return time.monotonic() - start
        except Exception as exc:  # connection refused while Envoy warms up
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: last={last!r}")


def call(port: int) -> int:
    """Status of GET through the sidecar's upstream listener; 0 when the connection is closed."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/hello?x=1", timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.parametrize("xds_api", ["delta", "sotw"])
@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_sidecar_to_terminating_gateway(start_server: Any, backend: int, xds_api: str, protocol: str) -> None:
    grpc_port = free_port()
    server = start_server("--dev", "--grpc-addr", f"127.0.0.1:{grpc_port}")
    api = httpx.Client(base_url=server.url)
    tgw_port, sidecar_port, upstream_port = free_port(), free_port(), free_port()
    assert api.put("/v1/catalog/register", json={
        "Node": "external", "Address": "127.0.0.1", "NodeMeta": {"external-node": "true"},
        "Service": {"Service": "backend", "Port": backend}}).status_code == 200
    assert api.put("/v1/config", json={"Kind": "service-defaults", "Name": "backend", "Protocol": protocol}).json() is True
    assert api.put("/v1/agent/service/register", json={
        "Name": "tgw", "Kind": "terminating-gateway", "Port": tgw_port, "Address": "127.0.0.1"}).status_code == 200
    assert api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "backend"}]}).json() is True
    assert api.put("/v1/agent/service/register", json={
        "Name": "api", "Port": 9999, "Address": "127.0.0.1",
        "Connect": {"SidecarService": {"Port": sidecar_port, "Proxy": {"Upstreams": [
            {"DestinationName": "backend", "LocalBindPort": upstream_port}]}}}}).status_code == 200
    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "allow"})

    with EnvoyProcess(bootstrap(server, grpc_port, xds_api, "--gateway", "terminating", "--service", "tgw")) as tgw, \
            EnvoyProcess(bootstrap(server, grpc_port, xds_api, "--proxy-id", "api-sidecar-proxy")) as sidecar:
        tgw.wait_admin(30)
        sidecar.wait_admin(30)
        wait_until(lambda: call(upstream_port) == 200, 30, f"allowed request through both proxies\n{tgw.log(40)}\n{sidecar.log(40)}")
        if protocol == "http":
            body = httpx.get(f"http://127.0.0.1:{upstream_port}/hello?x=1", timeout=2).json()
            assert body["path"] == "/hello?x=1"
            assert "spiffe://" in body["xfcc"] and "/svc/api" in body["xfcc"]  # the gateway saw the api identity

        api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "deny"})
        denied = 403 if protocol == "http" else 0
        took = wait_until(lambda: call(upstream_port) == denied, 5, "deny to take effect")
        assert took < 1.0, f"deny took {took:.2f}s"

        api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "allow"})
        took = wait_until(lambda: call(upstream_port) == 200, 5, "allow to take effect")
        assert took < 1.0, f"allow took {took:.2f}s"
        assert tgw.running() and sidecar.running()  # no restart was needed
        assert not [n for n in api.get("/v1/internal/xds/proxies").json().values() if n.get("nacks")]
