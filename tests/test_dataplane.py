"""The native data plane end to end: real mTLS, real intentions, the local Lambda.

Everything binds 127.0.0.1 on free ports and is stopped by the fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11
import pytest
import uvloop

from gateway.awslambda.local import LocalLambda
from gateway.awslambda.sigv4 import Credentials
from gateway.dataplane import GatewayServer, LambdaTarget, Route, Routes, lambda_target_from_meta
from gateway.dataplane.pathnorm import normalize_request_target
from gateway.dataplane.transform import dejsonize_response, jsonize_request, query_string_parameters
from gateway.identity.ca import generate_leaf, generate_root
from gateway.identity.sni import service_sni
from gateway.identity.spiffe import ServiceID
from gateway.identity.verify import TrustBundle, Verifier
from gateway.intentions.engine import IntentionEngine, ServiceName

REGION = "us-east-1"
DC = "dc1"
CREDS = Credentials("AKIDGATEWAYTEST", "gateway/secret+key")
FAKE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


# ------------------------------------------------------------------------------------ functions


def echo(event: Any, context: Any) -> Any:
    """Returns the envelope it received, through Envoy's response format (snake_case)."""
    return {"status_code": 201, "headers": {"x-from": "lambda", "content-type": "application/json"},
            "cookies": ["a=1; HttpOnly", "b=2"], "body": json.dumps(event), "is_base64_encoded": False}


def binary(event: Any, context: Any) -> Any:
    """Reverses the (base64) body; camelCase response spelling (protobuf JSON accepts both)."""
    raw = base64.b64decode(event["body"]) if event["is_base64_encoded"] else event["body"].encode()
    return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(raw[::-1]).decode(), "isBase64Encoded": True}


def passthrough(event: Any, context: Any) -> Any:
    return {"got": event, "note": "raw result"}


def fail(event: Any, context: Any) -> Any:
    raise ValueError("secret internal detail")


def slow(event: Any, context: Any) -> Any:
    time.sleep(1.0)
    return {"body": "slow done"}


def notjson(event: Any, context: Any) -> Any:
    return "just a string"


FUNCTIONS = {"echo": echo, "binary": binary, "passthrough": passthrough, "fail": fail, "slow": slow,
             "notjson": notjson, "async": passthrough}


# ------------------------------------------------------------------------------------ fakes


class FakeLambda:
    """A tiny Invoke endpoint for failure modes the local Lambda does not produce."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.hits: list[str] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
            await reader.readexactly(length)
            self.hits.append(path)
            if ":function:throttle" in path:
                body = b'{"Type":"User","message":"Rate Exceeded.","Reason":"ConcurrentInvocationLimitExceeded"}'
                status, extra = "429 Too Many Requests", "Retry-After: 7\r\nx-amzn-ErrorType: TooManyRequestsException\r\n"
            elif ":function:boom" in path:
                body, status, extra = b'{"Type":"Service","message":"internal"}', "500 Internal Server Error", ""
            elif ":function:hang" in path:
                await asyncio.sleep(30)
                return
            else:
                body, status, extra = b'{"message":"not found"}', "404 Not Found", ""
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@dataclass
class Env:
    gw: GatewayServer
    lam: LocalLambda
    fake: FakeLambda
    td: str
    roots_pem: str
    client_ctx: ssl.SSLContext  # caller "web"
    evil_ctx: ssl.SSLContext  # caller "evil": valid cert, no intention
    other_ca_ctx: ssl.SSLContext  # "web" from a foreign CA

    def sni(self, service: str) -> str:
        return service_sni(service, None, "default", "default", DC, self.td)


def gateway_on_fixed_routes(targets: dict[str, LambdaTarget], root: Any, root_key: Any,
                            intentions: list[dict[str, Any]], **options: Any) -> GatewayServer:
    """A gateway (not started) serving each target under its service's SNI with a leaf from
    ``root``, enforcing ``intentions`` with default deny, trusting ``root`` only."""
    td = root.trust_domain
    routes: dict[str, Route] = {}
    for name, target in targets.items():
        sni = service_sni(name, None, "default", "default", DC, td)
        cert, key = generate_leaf(root.root_cert_pem, root_key, ServiceID(td, "default", DC, name).uri)
        routes[sni] = Route(sni, ServiceName(name), cert, key, target)
    engine = IntentionEngine(default_allow=False)
    engine.load(intentions)
    verifier = Verifier([TrustBundle.from_pem(td, root.root_cert_pem)])
    return GatewayServer(Routes(routes, root.root_cert_pem, td), verifier, engine, **options)


def _client_ctx(roots_pem: str, cert_pem: str, key_pem: str, tmp: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=roots_pem)
    ctx.check_hostname = False  # mesh leaves carry a SPIFFE URI, no DNS name
    path = tmp / f"client-{id(ctx)}.pem"
    path.write_text(key_pem + cert_pem)
    ctx.load_cert_chain(str(path))
    return ctx


INTENTIONS = [{
    "Kind": "service-intentions", "Name": "*",
    "Sources": [{
        "Name": "web", "Precedence": 8,
        "Permissions": [
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "allow", "HTTP": {"PathPrefix": "/"}},
        ],
    }],
}]


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[Env]:
    async with make_env(tmp_path) as e:
        yield e


@contextlib.asynccontextmanager
async def make_env(tmp_path: Any) -> AsyncIterator[Env]:
    root, root_key = generate_root("11111111-2222-3333-4444-555555555555.consul")
    td = root.trust_domain
    other, other_key = generate_root("99999999-2222-3333-4444-555555555555.consul")

    def leaf(name: str, ca: Any = root, key: Any = root_key, trust_domain: str = td) -> tuple[str, str]:
        return generate_leaf(ca.root_cert_pem, key, ServiceID(trust_domain, "default", DC, name).uri)

    lam = LocalLambda(FUNCTIONS, credentials=[CREDS], region=REGION)
    await lam.start()
    fake = FakeLambda()
    await fake.start()
    fake_url = f"http://127.0.0.1:{fake.port}"

    targets: dict[str, LambdaTarget] = {
        "echo": LambdaTarget(lam.function_arn("echo"), REGION, lam.endpoint_url),
        "binary": LambdaTarget(lam.function_arn("binary"), REGION, lam.endpoint_url),
        "passthrough": LambdaTarget(lam.function_arn("passthrough"), REGION, lam.endpoint_url, payload_passthrough=True),
        "async": LambdaTarget(lam.function_arn("async"), REGION, lam.endpoint_url, asynchronous=True),
        "fail": LambdaTarget(lam.function_arn("fail"), REGION, lam.endpoint_url),
        "slow": LambdaTarget(lam.function_arn("slow"), REGION, lam.endpoint_url),
        "notjson": LambdaTarget(lam.function_arn("notjson"), REGION, lam.endpoint_url),
        "throttle": LambdaTarget(FAKE_ARN.format("throttle"), REGION, fake_url),
        "boom": LambdaTarget(FAKE_ARN.format("boom"), REGION, fake_url),
        "hang": LambdaTarget(FAKE_ARN.format("hang"), REGION, fake_url),
    }
    gw = gateway_on_fixed_routes(targets, root, root_key, INTENTIONS, credentials=CREDS, lambda_timeout=1.5)
    await gw.start()
    web_cert, web_key = leaf("web")
    evil_cert, evil_key = leaf("evil")
    foreign_cert, foreign_key = generate_leaf(other.root_cert_pem, other_key,
                                              ServiceID(other.trust_domain, "default", DC, "web").uri)
    e = Env(
        gw, lam, fake, td, root.root_cert_pem,
        _client_ctx(root.root_cert_pem, web_cert, web_key, tmp_path),
        _client_ctx(root.root_cert_pem, evil_cert, evil_key, tmp_path),
        _client_ctx(root.root_cert_pem, foreign_cert, foreign_key, tmp_path),
    )
    try:
        yield e
    finally:
        await gw.stop()
        await lam.stop()
        await fake.stop()


# ------------------------------------------------------------------------------------ client


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class Client:
    """One HTTP/1.1 connection over mTLS, h11-framed, for keep-alive checks."""

    def __init__(self, port: int, sni: str, ctx: ssl.SSLContext) -> None:
        self.port, self.sni, self.ctx = port, sni, ctx
        self.conn = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.ctx, server_hostname=self.sni)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass

    async def request(self, method: str, target: str, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None) -> Resp:
        hdrs = [("host", "gateway.test"), *(headers or [])]
        if body or method in ("POST", "PUT"):
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        status, rheaders, chunks = 0, [], []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 10))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                rheaders = [(n.decode(), v.decode()) for n, v in event.headers]
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return Resp(status, rheaders, b"".join(chunks))


async def call(e: Env, service: str, method: str, target: str, body: bytes = b"",
               headers: list[tuple[str, str]] | None = None, ctx: ssl.SSLContext | None = None) -> Resp:
    async with Client(e.gw.port, e.sni(service), ctx or e.client_ctx) as c:
        return await c.request(method, target, body, headers)


async def metrics_text(e: Env) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", e.gw.metrics_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return data.decode()


# ------------------------------------------------------------------------------------ tests


async def test_allowed_request_envelope_and_transformed_response(env: Env) -> None:
    r = await call(env, "echo", "POST", "/orders/../items//42?x=1&x=2&y=3&flag", b'{"a":1}',
                   [("content-type", "application/json"), ("x-multi", "one"), ("x-multi", "two")])
    assert r.status == 201
    assert r.header("x-from") == "lambda"
    assert r.header("content-type") == "application/json"
    assert r.all("set-cookie") == ["a=1; HttpOnly", "b=2"]
    event = json.loads(r.body)
    assert set(event) == {"raw_path", "method", "headers", "query_string_parameters", "body", "is_base64_encoded"}
    assert event["raw_path"] == "/items/42?x=1&x=2&y=3&flag"  # normalized path, raw query
    assert event["method"] == "POST"
    assert event["query_string_parameters"] == {"x": "1", "y": "3", "flag": ""}  # first value wins (Envoy)
    assert event["body"] == '{"a":1}' and event["is_base64_encoded"] is False
    h = event["headers"]
    assert h["x-multi"] == "one,two" and h["content-type"] == "application/json" and h["content-length"] == "7"
    assert "host" not in h and h["x-forwarded-proto"] == "https" and h["x-request-id"]
    xfcc = h["x-forwarded-client-cert"]
    assert xfcc.startswith(f"By=spiffe://{env.td}/ns/default/dc/{DC}/svc/echo;Hash=")
    assert xfcc.endswith(f";URI=spiffe://{env.td}/ns/default/dc/{DC}/svc/web")
    assert env.lam.invocations()["echo"] == 1


async def test_binary_body_is_base64_both_ways(env: Env) -> None:
    payload = bytes(range(256)) * 3
    r = await call(env, "binary", "PUT", "/blob", payload, [("content-type", "application/octet-stream")])
    assert r.status == 200
    assert r.body == payload[::-1]
    assert r.header("content-type") == "application/octet-stream"
    # text/* is sent as text, an unknown content type as base64 (Envoy's isContentTypeTextual)
    r = await call(env, "echo", "POST", "/t", "héllo".encode(), [("content-type", "text/plain; charset=utf-8")])
    assert json.loads(r.body)["body"] == "héllo" and json.loads(r.body)["is_base64_encoded"] is False
    r = await call(env, "echo", "POST", "/t", b"abc", [("content-type", "application/json; charset=utf-8")])
    ev = json.loads(r.body)
    assert ev["is_base64_encoded"] is True and base64.b64decode(ev["body"]) == b"abc"
    r = await call(env, "echo", "GET", "/nobody")
    ev = json.loads(r.body)
    assert ev["body"] == "" and ev["is_base64_encoded"] is False  # as Envoy: no body, no base64 and ev["query_string_parameters"] == {}


async def test_passthrough_sends_raw_body_and_returns_raw_result(env: Env) -> None:
    r = await call(env, "passthrough", "POST", "/ignored?q=1", b'{"k":[1,2]}', [("content-type", "application/json")])
    assert r.status == 200
    assert json.loads(r.body) == {"got": {"k": [1, 2]}, "note": "raw result"}
    assert r.header("content-type") == "application/json"
    # Lambda rejects a non-JSON raw payload: the caller's fault, passed through
    r = await call(env, "passthrough", "POST", "/", b"not json", [("content-type", "text/plain")])
    assert r.status == 400
    assert env.lam.invocations()["passthrough"] == 1


async def test_event_invocation_returns_202(env: Env) -> None:
    r = await call(env, "async", "POST", "/fire", b'{"n":1}', [("content-type", "application/json")])
    assert r.status == 202 and r.body == b""
    for _ in range(100):
        if env.lam.invocations()["async"] == 1:
            break
        await asyncio.sleep(0.02)
    assert env.lam.invocations()["async"] == 1


async def test_deny_intention_403_with_reason_and_no_invocation(env: Env) -> None:
    r = await call(env, "echo", "GET", "/admin/users")
    assert r.status == 403
    assert b"Matched L7 intention: web => *" in r.body and b"permission 0 (deny)" in r.body
    # normalization happens before the decision: these are /admin too
    for sneaky in ("/x/../admin/users", "//admin", "/%61dmin", "/./admin"):
        r = await call(env, "echo", "GET", sneaky)
        assert r.status == 403, sneaky
    # a caller with a valid certificate but no intention: default deny
    r = await call(env, "echo", "GET", "/ok", ctx=env.evil_ctx)
    assert r.status == 403 and b"Default" in r.body
    assert env.lam.invocations()["echo"] == 0


async def test_escaped_slash_redirects(env: Env) -> None:
    r = await call(env, "echo", "GET", "/admin%2Fusers?a=%2F")
    assert r.status == 307
    assert r.header("location") == "/admin/users?a=%2F"
    assert env.lam.invocations()["echo"] == 0


async def test_foreign_ca_client_fails_handshake(env: Env) -> None:
    # TLS 1.3: the client finishes first, then reads the server's alert or EOF
    with pytest.raises((ssl.SSLError, ConnectionError, h11.RemoteProtocolError)):
        async with Client(env.gw.port, env.sni("echo"), env.other_ca_ctx) as c:
            await c.request("GET", "/ok")
    # unknown SNI: no linked service, no handshake
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with Client(env.gw.port, "nope.default.dc1.internal." + env.td, env.client_ctx) as c:
            await c.request("GET", "/ok")
    assert sum(env.lam.invocations().values()) == 0
    # the gateway is still fine
    assert (await call(env, "echo", "GET", "/ok")).status == 201


async def test_function_error_is_502_without_leaking(env: Env) -> None:
    r = await call(env, "fail", "POST", "/", b"{}", [("content-type", "application/json")])
    assert r.status == 502
    doc = json.loads(r.body)
    assert doc["function_error"] == "Unhandled" and doc["error_type"] == "ValueError"
    assert b"secret internal detail" not in r.body
    r = await call(env, "notjson", "GET", "/")
    assert r.status == 500  # Envoy: a result that is not the Response message is a server error


async def test_lambda_throttle_5xx_and_timeout(env: Env) -> None:
    r = await call(env, "throttle", "GET", "/")
    assert r.status == 429 and r.header("retry-after") == "7"
    r = await call(env, "boom", "GET", "/")
    assert r.status == 503
    t0 = time.monotonic()
    r = await call(env, "hang", "GET", "/")
    assert r.status == 504 and time.monotonic() - t0 < 5
    assert any(":function:throttle/" in p for p in env.fake.hits)


async def test_slow_function_does_not_block_others(env: Env) -> None:
    async def fast() -> tuple[float, int]:
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        r = await call(env, "echo", "GET", "/quick")
        return time.monotonic() - t0, r.status

    slow_task = asyncio.create_task(call(env, "slow", "GET", "/"))
    elapsed, status = await fast()
    assert status == 201 and elapsed < 0.8
    assert not slow_task.done()
    r = await slow_task
    assert r.status == 200 and r.body == b"slow done"


async def test_keep_alive_two_requests_one_connection(env: Env) -> None:
    async with Client(env.gw.port, env.sni("echo"), env.client_ctx) as c:
        r1 = await c.request("GET", "/one")
        r2 = await c.request("POST", "/two", b"x", [("content-type", "text/plain")])
        r3 = await c.request("GET", "/admin")  # a denial does not close the connection
        r4 = await c.request("GET", "/three")
    assert [r.status for r in (r1, r2, r3, r4)] == [201, 201, 403, 201]
    assert json.loads(r2.body)["raw_path"] == "/two"
    assert env.lam.invocations()["echo"] == 3


async def test_metrics_endpoint(env: Env) -> None:
    await call(env, "echo", "GET", "/m")
    await call(env, "echo", "GET", "/admin")
    text = await metrics_text(env)
    assert "200 OK" in text.splitlines()[0]
    assert 'terminus_gateway_requests_total{code="201",decision="allow",destination="echo"} 1.0' in text
    assert 'terminus_gateway_requests_total{code="403",decision="deny",destination="echo"} 1.0' in text
    assert 'terminus_gateway_lambda_invocations_total{function="echo",outcome="ok"} 1.0' in text
    assert "terminus_gateway_request_duration_seconds_bucket" in text


# ------------------------------------------------------------------------------------ units


def test_path_normalization() -> None:
    n = normalize_request_target
    assert n("/a/./b/../c").target == "/a/c"
    assert n("/a//b///c?x=//y").target == "/a/b/c?x=//y"
    assert n("/../../a").target == "/a"
    assert n("/%7Euser/%2e%2e/x").target == "/x"
    assert n("/a%20b/%3F").target == "/a%20b/%3F"  # reserved escapes are kept
    assert n("/a\\b").target == "/a/b"
    assert n("/a%2fb").redirect and n("/a%2fb").target == "/a/b"
    assert n("/a%5Cb").redirect and n("/a%5Cb").target == "/a/b"
    assert not n("/a/b").redirect
    assert n("/p#frag").target == "/p"
    with pytest.raises(ValueError):
        n("*")


def test_transform_units() -> None:
    assert query_string_parameters("/p?a=1&a=2&b&c=%20") == {"a": "1", "b": "", "c": "%20"}
    doc = json.loads(jsonize_request("GET", "/p", [("Content-Type", "text/html"), ("Host", "h")], b"<p>"))
    assert doc == {"raw_path": "/p", "method": "GET", "headers": {"content-type": "text/html"},
                   "query_string_parameters": {}, "body": "<p>", "is_base64_encoded": False}
    chunked = json.loads(jsonize_request("POST", "/", [("content-type", "text/plain"),
                                                       ("transfer-encoding", "chunked")], b"x"))
    assert chunked["is_base64_encoded"] is True
    t = dejsonize_response([("x-amzn-RequestId", "r1"), ("Content-Length", "9")], b'{"body":"hi"}')
    assert t.status == 200 and t.body == b"hi"
    assert ("x-amzn-requestid", "r1") in t.headers and ("content-type", "application/json") in t.headers
    assert all(n != "content-length" for n, _ in t.headers)


def test_request_ids_are_fresh_uuid4s() -> None:
    from gateway.dataplane.server import _RequestIds

    ids = _RequestIds()
    got = [ids.next() for _ in range(300)]  # several batches
    assert len(set(got)) == 300
    for rid in got:
        u = uuid.UUID(rid)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == rid


def test_lambda_meta_keys() -> None:
    p = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
    env = {"AWS_ENDPOINT_URL_LAMBDA": "http://127.0.0.1:9999/"}
    t = lambda_target_from_meta({p + "enabled": "true", p + "arn": FAKE_ARN.format("f"), p + "region": "eu-west-1",
                                 p + "payload-passthrough": "true", p + "invocation-mode": "asynchronous"}, env)
    assert t == LambdaTarget(FAKE_ARN.format("f"), "eu-west-1", "http://127.0.0.1:9999", True, True)
    t = lambda_target_from_meta({p + "enabled": "true", p + "arn": "a", p + "region": "us-west-2"}, {})
    assert t is not None and t.endpoint_url == "https://lambda.us-west-2.amazonaws.com" and not t.asynchronous
    assert lambda_target_from_meta({p + "enabled": "false", p + "arn": "a", p + "region": "r"}, {}) is None
    assert lambda_target_from_meta({p + "enabled": "true", p + "arn": "a"}, {}) is None


def test_under_uvloop(tmp_path: Any) -> None:
    """The production loop: SNI callback, mTLS, keep-alive and a Lambda call on uvloop."""

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with make_env(tmp_path) as e:
            async with Client(e.gw.port, e.sni("echo"), e.client_ctx) as c:
                assert (await c.request("GET", "/a?x=1")).status == 201
                assert (await c.request("GET", "/admin")).status == 403
            with pytest.raises((ssl.SSLError, ConnectionError, h11.RemoteProtocolError)):
                async with Client(e.gw.port, e.sni("echo"), e.other_ca_ctx) as c:
                    await c.request("GET", "/ok")
            assert e.lam.invocations()["echo"] == 1

    uvloop.run(main())


async def test_serve_gateway_from_control_plane(cp: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter: linked services of a terminating gateway, Lambda Meta keys, CA leaves."""
    from gateway.acl.authorizer import Authorizer
    from gateway.acl.resolver import Caller
    from gateway.dataplane import serve_gateway

    lam = LocalLambda(FUNCTIONS, credentials=[CREDS], region=REGION)
    await lam.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", lam.endpoint_url)
    root = Caller("root", Authorizer.management())
    p = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
    cp.catalog.register(root, {"Node": "lambdas", "Address": "lambdas", "NodeMeta": {"external-node": "true"},
                               "Service": {"Service": "orders"}})
    cp.config_entries.apply(root, {"Kind": "service-defaults", "Name": "orders", "Protocol": "http",
                                   "Meta": {p + "enabled": "true", p + "arn": lam.function_arn("echo"),
                                            p + "region": REGION}})
    cp.config_entries.apply(root, {"Kind": "terminating-gateway", "Name": "tgw",
                                   "Services": [{"Name": "orders"}]})
    cp.intentions.upsert_exact(root, "web", "orders", {"Action": "allow"})
    cp.intentions.upsert_exact(root, "evil", "orders", {"Action": "deny"})
    roots = "".join(r.root_cert_pem for r in cp.ca.published_roots())
    web, evil = cp.ca.leaf("web"), cp.ca.leaf("evil")
    sni = service_sni("orders", None, "default", "default", cp.config.datacenter, cp.ca.trust_domain)

    ready: asyncio.Future[GatewayServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_gateway(cp, "tgw", "127.0.0.1:0", credentials=CREDS, started=ready.set_result))
    try:
        gw = await asyncio.wait_for(ready, 30)
        assert set(gw.routes.routes) == {sni}
        async with Client(gw.port, sni, _client_ctx(roots, web.cert_pem, web.key_pem, tmp_path)) as c:
            r = await c.request("POST", "/o?id=7", b'{"n":1}', [("content-type", "application/json")])
        assert r.status == 201, r.body
        assert json.loads(r.body)["query_string_parameters"] == {"id": "7"}
        async with Client(gw.port, sni, _client_ctx(roots, evil.cert_pem, evil.key_pem, tmp_path)) as c:
            r = await c.request("GET", "/o")
        assert r.status == 403 and b"evil => orders" in r.body
        assert lam.invocations()["echo"] == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await lam.stop()
