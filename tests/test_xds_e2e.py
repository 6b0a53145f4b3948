"""End to end with real Envoy 1.40: an `api` sidecar -> a terminating gateway -> a plain
HTTP server registered as an external service. Intentions change over the REST API and
the outcome follows within a second, without restarting Envoy; SotW and delta both."""

from __future__ import annotations

import json
import signal
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


def register_mesh(api: httpx.Client, backend: int, protocol: str) -> int:
    """backend (external, via the gateway `tgw`) and `api` with a sidecar; returns the upstream port."""
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
    return upstream_port


@pytest.mark.parametrize("xds_api", ["delta", "sotw"])
@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_sidecar_to_terminating_gateway(start_server: Any, backend: int, xds_api: str, protocol: str) -> None:
    grpc_port = free_port()
    server = start_server("--dev", "--grpc-addr", f"127.0.0.1:{grpc_port}")
    api = httpx.Client(base_url=server.url)
    upstream_port = register_mesh(api, backend, protocol)
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
        assert not [n for n in api.get("/v1/internal/xds/proxies").json().values() if n["nacks"]]


def test_nack_is_recorded_not_resent_and_last_good_config_keeps_serving(start_server: Any, backend: int, tmp_path: Path) -> None:
    grpc_port = free_port()
    server = start_server("--data-dir", str(tmp_path / "d"), "--grpc-addr", f"127.0.0.1:{grpc_port}",
                          env={"TERMINUS_XDS_TEST_HOOKS": "1"})
    api = httpx.Client(base_url=server.url)
    upstream_port = register_mesh(api, backend, "http")
    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "allow"})
    with EnvoyProcess(bootstrap(server, grpc_port, "delta", "--gateway", "terminating", "--service", "tgw")) as tgw, \
            EnvoyProcess(bootstrap(server, grpc_port, "delta", "--proxy-id", "api-sidecar-proxy")) as sidecar:
        tgw.wait_admin(30)
        sidecar.wait_admin(30)
        wait_until(lambda: call(upstream_port) == 200, 30, "the first good config")
        # the test hook makes the gateway's backend cluster one Envoy must reject
        api.put("/v1/config", json={"Kind": "service-defaults", "Name": "backend", "Protocol": "http",
                                    "Meta": {"terminus-test/reject-cluster": "true"}})

        def nacks() -> list:
            return api.get("/v1/internal/xds/proxies").json().get("tgw", {}).get("nacks", 0)

        wait_until(lambda: nacks() >= 1, 10, "the NACK to be recorded")
        rejected = api.get("/v1/internal/xds/proxies").json()["tgw"]["rejected"]
        assert rejected and "duration" in rejected[-1]["message"].lower()  # Envoy's reason is kept
        time.sleep(2)
        assert tgw.stat("cluster_manager.cds.update_rejected") == 1  # rejected once, never resent in a loop
        assert nacks() == 1
        assert call(upstream_port) == 200  # the last good config keeps serving
        # a fixed config is a new version: sent and accepted
        api.put("/v1/config", json={"Kind": "service-defaults", "Name": "backend", "Protocol": "http"})
        wait_until(lambda: tgw.stat("cluster_manager.cds.update_success") >= 2, 10, "the fixed config to be accepted")
        assert tgw.stat("cluster_manager.cds.update_rejected") == 1
        assert call(upstream_port) == 200


def test_control_plane_killed_envoy_keeps_enforcing_then_converges(start_server: Any, backend: int, tmp_path: Path) -> None:
    grpc_port = free_port()
    data = str(tmp_path / "d")
    server = start_server("--data-dir", data, "--grpc-addr", f"127.0.0.1:{grpc_port}")
    api = httpx.Client(base_url=server.url)
    upstream_port = register_mesh(api, backend, "http")
    api.put("/v1/config", json={"Kind": "service-intentions", "Name": "backend", "Sources": [
        {"Name": "api", "Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                                         {"Action": "allow", "HTTP": {"PathPrefix": "/hello", "Methods": ["GET"]}}]}]})

    def status(path: str) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{upstream_port}{path}", timeout=2).status_code
        except httpx.HTTPError:
            return 0

    with EnvoyProcess(bootstrap(server, grpc_port, "sotw", "--gateway", "terminating", "--service", "tgw")) as tgw, \
            EnvoyProcess(bootstrap(server, grpc_port, "sotw", "--proxy-id", "api-sidecar-proxy")) as sidecar:
        tgw.wait_admin(30)
        sidecar.wait_admin(30)
        wait_until(lambda: status("/hello") == 200, 30, "the allowed path")
        assert status("/admin") == 403
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        wait_until(lambda: tgw.stat("control_plane.connected_state") == 0, 10, "Envoy to notice the control plane is gone")
        for _ in range(5):  # the last config keeps enforcing: allowed stays allowed, denied stays denied
            assert status("/hello") == 200 and status("/admin") == 403
        again = start_server("--data-dir", data, "--grpc-addr", f"127.0.0.1:{grpc_port}")
        wait_until(lambda: tgw.stat("control_plane.connected_state") == 1 and sidecar.stat("control_plane.connected_state") == 1,
                   30, "both proxies to reconnect")
        httpx.put(f"{again.url}/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "deny"})
        wait_until(lambda: status("/hello") == 403, 10, "the restarted control plane's change to converge")


def test_envoy_writes_the_access_log_proxy_defaults_ask_for(start_server: Any, backend: int, tmp_path: Path) -> None:
    """Real Envoy 1.40: enabling AccessLogs after the proxies are up reaches them over xDS;
    both the sidecar and the gateway log the request in the configured text format, denials
    included."""
    grpc_port = free_port()
    server = start_server("--dev", "--grpc-addr", f"127.0.0.1:{grpc_port}")
    api = httpx.Client(base_url=server.url)
    upstream = register_mesh(api, backend, "http")
    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "allow"})
    log = tmp_path / "access.log"
    flush = ["--file-flush-interval-msec", "100"]  # Envoy writes file access logs every 10 s by default
    with EnvoyProcess(bootstrap(server, grpc_port, "delta", "--gateway", "terminating", "--service", "tgw"),
                      extra_args=flush) as tgw, \
            EnvoyProcess(bootstrap(server, grpc_port, "delta", "--proxy-id", "api-sidecar-proxy"), extra_args=flush) as sidecar:
        tgw.wait_admin(30)
        sidecar.wait_admin(30)
        wait_until(lambda: call(upstream) == 200, 30, f"a first answer\n{tgw.log(40)}\n{sidecar.log(40)}")
        assert not log.exists()
        assert api.put("/v1/config", json={"Kind": "proxy-defaults", "Name": "global", "AccessLogs": {
            "Enabled": True, "Type": "file", "Path": str(log),
            "TextFormat": "%REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER%"}}).json() is True

        def logged(code: int) -> bool:
            lines = log.read_text().splitlines() if log.exists() else []
            return sum(line.startswith(f"/hello?x=1 {code} ") for line in lines) >= 2  # sidecar and gateway

        wait_until(lambda: call(upstream) == 200 and logged(200), 10, f"access lines\n{tgw.log(40)}")
        api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "backend"}, json={"Action": "deny"})
        wait_until(lambda: call(upstream) == 403 and logged(403), 10, "a logged denial")
        assert tgw.running() and sidecar.running()  # applied live, no restart
