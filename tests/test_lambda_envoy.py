"""End to end with real Envoy 1.40: `api` sidecar -> terminating gateway `tgw` -> Envoy's aws_lambda
filter -> the local Lambda (gateway/awslambda/local.py), which verifies real SigV4.

The control plane runs with AWS_ENDPOINT_URL_LAMBDA pointing at the local Lambda, so the
gateway's cluster for `authentication` is plain HTTP to it; the gateway's Envoy signs with
the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of its own environment.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import httpx
import pytest

from gateway.awslambda.local import run_in_thread
from gateway.awslambda.sigv4 import Credentials
from tests.support.envoy import EnvoyProcess, free_port
from tests.test_xds_e2e import bootstrap, wait_until

pytestmark = pytest.mark.slow

ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"
AKID, SECRET = "AKIDTERMINUSTEST", "terminus-test-secret-key"
META = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
EVENTS: list[Any] = []
_events_lock = threading.Lock()


def echo(event: Any, context: Any) -> Any:
    with _events_lock:
        EVENTS.append(event)
    if isinstance(event, dict) and "raw_path" in event:  # Envoy's envelope (payload_passthrough off)
        return {"status_code": 201, "headers": {"x-from": "lambda", "content-type": "application/json"},
                "cookies": ["a=1; HttpOnly"], "body": json.dumps({"got": event["body"], "path": event["raw_path"]}),
                "is_base64_encoded": False}
    return {"passthrough": event}  # passthrough: the payload is the body, the result is the response body


@pytest.fixture
def local_lambda() -> Iterator[Any]:
    with run_in_thread({"echo": echo}, credentials=[Credentials(AKID, SECRET)]) as lam:
        EVENTS.clear()
        yield lam


def service_defaults(passthrough: bool = False, mode: str = "synchronous") -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": "authentication", "Protocol": "http", "Meta": {
        META + "enabled": "true", META + "arn": ARN, META + "region": "us-east-1",
        META + "payload-passthrough": "true" if passthrough else "false", META + "invocation-mode": mode}}


def register(api: httpx.Client) -> int:
    tgw_port, sidecar_port, upstream_port = free_port(), free_port(), free_port()
    assert api.put("/v1/catalog/register", json={
        "Node": "lambdas", "Address": "lambdas.invalid", "NodeMeta": {"external-node": "true", "external-probe": "true"},
        "Service": {"Service": "authentication"}}).status_code == 200
    assert api.put("/v1/config", json=service_defaults()).json() is True
    assert api.put("/v1/agent/service/register", json={
        "Name": "tgw", "Kind": "terminating-gateway", "Port": tgw_port, "Address": "127.0.0.1"}).status_code == 200
    assert api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw",
                                       "Services": [{"Name": "authentication"}]}).json() is True
    assert api.put("/v1/agent/service/register", json={
        "Name": "api", "Port": 9999, "Address": "127.0.0.1",
        "Connect": {"SidecarService": {"Port": sidecar_port, "Proxy": {"Upstreams": [
            {"DestinationName": "authentication", "LocalBindPort": upstream_port}]}}}}).status_code == 200
    return upstream_port


def post(port: int) -> httpx.Response | None:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/foo?x=1&x=2&y=3", content=b'{"a":1}',
                          headers={"content-type": "application/json"}, timeout=5)
    except httpx.HTTPError:
        return None


def start_tgw(server: Any, grpc_port: int, secret: str, monkeypatch: pytest.MonkeyPatch) -> EnvoyProcess:
    """EnvoyProcess inherits the test process's environment: set Envoy's AWS credentials there."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", AKID)
        m.setenv("AWS_SECRET_ACCESS_KEY", secret)
        m.setenv("AWS_REGION", "us-east-1")
        m.setenv("AWS_EC2_METADATA_DISABLED", "true")
        return EnvoyProcess(bootstrap(server, grpc_port, "delta", "--gateway", "terminating", "--service", "tgw")).start()


def test_sidecar_to_lambda_through_terminating_gateway(start_server: Any, local_lambda: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    grpc_port = free_port()
    server = start_server("--dev", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                          env={"AWS_ENDPOINT_URL_LAMBDA": local_lambda.endpoint_url})
    api = httpx.Client(base_url=server.url)
    port = register(api)
    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
            json={"Action": "allow"})

    tgw = start_tgw(server, grpc_port, SECRET, monkeypatch)
    try:
        with EnvoyProcess(bootstrap(server, grpc_port, "delta", "--proxy-id", "api-sidecar-proxy")) as sidecar:
            tgw.wait_admin(30)
            sidecar.wait_admin(30)
            wait_until(lambda: (r := post(port)) is not None and r.status_code == 201, 30,
                       f"the function's answer\n{tgw.log(40)}\n{sidecar.log(40)}")

            # payload passthrough off: Envoy's JSON envelope in, the function's response envelope out
            EVENTS.clear()
            resp = post(port)
            assert resp is not None and resp.status_code == 201
            assert resp.headers["x-from"] == "lambda"
            assert resp.headers.get_list("set-cookie") == ["a=1; HttpOnly"]
            assert resp.json() == {"got": '{"a":1}', "path": "/foo?x=1&x=2&y=3"}
            event = EVENTS[-1]
            print("\nENVELOPE:", json.dumps(event, indent=1, sort_keys=True))
            assert event["raw_path"] == "/foo?x=1&x=2&y=3"
            assert event["method"] == "POST"
            assert event["query_string_parameters"] == {"x": "1", "y": "3"}  # the first repeated value wins
            assert event["body"] == '{"a":1}' and event["is_base64_encoded"] is False
            assert event["headers"]["content-type"] == "application/json"
            assert "/svc/api" in event["headers"]["x-forwarded-client-cert"]  # the caller's mesh identity
            assert not any(h.startswith(":") for h in event["headers"])

            # payload passthrough on: the body is the payload, the function's result is the body
            api.put("/v1/config", json=service_defaults(passthrough=True))
            wait_until(lambda: (r := post(port)) is not None and r.status_code == 200, 10, "passthrough to apply")
            EVENTS.clear()
            resp = post(port)
            assert resp is not None and resp.status_code == 200
            assert resp.json() == {"passthrough": {"a": 1}}
            assert EVENTS == [{"a": 1}]
            print("PASSTHROUGH response headers:", dict(resp.headers))

            # a deny intention: 403 at the gateway, the function is never invoked
            before = local_lambda.invocations()["echo"]
            api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
                    json={"Action": "deny"})
            wait_until(lambda: (r := post(port)) is not None and r.status_code == 403, 5, "deny to take effect")
            for _ in range(3):
                resp = post(port)
                assert resp is not None and resp.status_code == 403
                assert "x-amzn-errortype" not in resp.headers  # Envoy's RBAC, not Lambda
            assert local_lambda.invocations()["echo"] == before

            api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
                    json={"Action": "allow"})
            wait_until(lambda: (r := post(port)) is not None and r.status_code == 200, 5, "allow again")

            # the gateway's Envoy with a wrong secret: Lambda rejects the signature
            tgw.stop()
            tgw = start_tgw(server, grpc_port, "not-the-secret", monkeypatch)
            tgw.wait_admin(30)
            before = local_lambda.invocations()["echo"]
            wait_until(lambda: (r := post(port)) is not None and r.status_code == 403, 30,
                       f"the signature to be rejected\n{tgw.log(40)}")
            resp = post(port)
            assert resp is not None and resp.status_code == 403
            assert resp.headers["x-amzn-errortype"] == "InvalidSignatureException"
            assert "signature" in resp.json()["message"].lower()
            assert local_lambda.invocations()["echo"] == before
            assert not [n for n in api.get("/v1/internal/xds/proxies").json().values() if n["nacks"]]
    finally:
        tgw.stop()
