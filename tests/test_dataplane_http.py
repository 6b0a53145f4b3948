"""The native gateway's HTTP/1.1 fast paths say exactly what h11 says.

The gateway parses common-shape requests and Lambda responses itself, writes responses
itself and pre-builds the signed Lambda request; everything else goes to h11. These tests
hold the fast paths to h11 (and to ``Signer``) on generated inputs, and check end to end that
requests outside the common shape still get h11's answers.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import h11
import pytest

from gateway.awslambda.sigv4 import Credentials
from gateway.dataplane import http1
from gateway.dataplane.http1 import FALLBACK
from gateway.dataplane.lambda_client import LambdaClient, LambdaTarget, StaticCredentialProvider, _Stamp
from gateway.dataplane.routes import Routes
from gateway.dataplane.server import GatewayServer, _frame_fast, _parse_request, _replayed_h11, _Response
from gateway.identity.verify import Verifier
from gateway.intentions.engine import IntentionEngine
from tests.test_dataplane import Env, make_env


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[Env]:
    async with make_env(tmp_path) as e:
        yield e


NAMES = ["Host", "host", "HOST", "User-Agent", "x-a", "X-A", "content-length", "Content-Length", "transfer-encoding",
         "Connection", "expect", "upgrade", "x-request-id", "bad name", "x\x00", "", "x-é"]
VALUES = ["", "a", " a ", "a  b", "\ta\t", "1", "0", "01", "5, 5", "keep-alive", "close", "Keep-Alive, Close", "chunked",
          "100-continue", "h2c", "é", "a\x00b", "\x7f", "a\rb", "²"]


def _h11_request(raw: bytes) -> Any:
    """What h11 makes of ``raw``: (method, target, headers, body) or the error."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    conn.receive_data(raw)
    out: dict[str, Any] = {"body": b""}
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                out.update(method=event.method.decode("ascii", "replace"), target=event.target.decode("latin-1"),
                           headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers])
            elif isinstance(event, h11.Data):
                out["body"] += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return out, conn
            else:
                return "incomplete", conn
    except h11.RemoteProtocolError as e:
        return f"error: {e}", conn


def test_request_parser_accepts_only_what_h11_reads_the_same() -> None:
    rng = random.Random(7)
    fast = 0
    for _ in range(6000):
        method = rng.choice(["GET", "POST", "HEAD", "PUT", "CONNECT", "G T", "get"])
        target = rng.choice(["/", "/a?b=1", "/é", "*", "/a b", "/%2F", "http://x/y"])
        version = rng.choice(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "http/1.1"])
        lines = [f"{method} {target} {version}"]
        if rng.random() < 0.9:
            lines.append(f"Host: {rng.choice(['x', 'a.b:1', ''])}")
        for _ in range(rng.randint(0, 4)):
            sep = rng.choice([": ", ":", " : ", ":\t"])
            lines.append(f"{rng.choice(NAMES)}{sep}{rng.choice(VALUES)}")
        if rng.random() < 0.05:
            lines.append(" folded")
        body = rng.choice([b"", b"hello", b"x" * 100])
        if body and rng.random() < 0.8:
            lines.append(f"Content-Length: {len(body)}")
        eol = rng.choice(["\r\n"] * 8 + ["\n"])
        raw = (eol.join(lines) + eol + eol).encode("latin-1", "replace") + body
        if rng.random() < 0.05:
            raw = b"\r\n" + raw
        buf = bytearray(raw)
        got = _parse_request(buf, 1 << 20)
        if got is None or got is FALLBACK:
            continue
        fast += 1
        want, conn = _h11_request(raw)
        assert isinstance(want, dict), (raw, want)
        assert (got.method, got.target, got.headers, got.body) == (  # type: ignore[attr-defined]
            want["method"], want["target"], want["headers"], want["body"]), raw
        assert conn.their_state is h11.DONE and not conn.they_are_waiting_for_100_continue, raw
        assert bytes(buf) == conn.trailing_data[0], raw  # the same bytes are left for the next request
        assert conn.our_state is h11.SEND_RESPONSE  # and h11 keeps the connection alive too
    assert fast > 200  # the generator does reach the fast path


def test_request_parser_waits_or_falls_back_on_partial_input() -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    for cut in range(1, len(raw)):
        assert _parse_request(bytearray(raw[:cut]), 1 << 20) is None, cut
    assert _parse_request(bytearray(raw), 4) is FALLBACK  # over max_body: h11's path answers 413
    assert _parse_request(bytearray(b"\r\n" + raw), 1 << 20) is FALLBACK
    assert _parse_request(bytearray(b"GET / HTTP/1.1\nHost: h\n\n"), 1 << 20) is FALLBACK
    two = bytearray(raw + b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert _parse_request(two, 1 << 20).target == "/x"  # type: ignore[union-attr]
    assert _parse_request(two, 1 << 20).target == "/y"  # type: ignore[union-attr]
    assert not two


def test_per_message_header_lines_are_read_but_not_remembered() -> None:
    """Request and trace ids are new in every message: each would be a cache entry for nothing."""
    from gateway.dataplane import server

    for i in range(50):  # warm the caches with the lines that do repeat
        rid = f"{i:08x}-0000-4000-8000-000000000000"
        req = _parse_request(bytearray(b"GET / HTTP/1.1\r\nHost: h\r\nx-request-id: %s\r\n\r\n" % rid.encode()), 1 << 20)
        assert ("x-request-id", rid) in req.headers  # type: ignore[union-attr]
        got = http1._parse_response(bytearray(b"HTTP/1.1 200 OK\r\nx-amzn-RequestId: %s\r\nContent-Length: 0\r\n\r\n"
                                              % rid.encode()))
        assert got[4] == [("x-amzn-requestid", rid), ("content-length", "0")]  # type: ignore[index]
        assert _frame_fast(_Response(200, [("x-amzn-requestid", rid)]), False) == (
            b"HTTP/1.1 200 OK\r\nx-amzn-requestid: %s\r\ncontent-length: 0\r\n\r\n" % rid.encode())
        if i == 0:
            sizes = (len(server._LINES), len(http1._LINES), len(server._FRAMED))
    assert (len(server._LINES), len(http1._LINES), len(server._FRAMED)) == sizes


def test_response_framing_is_h11s() -> None:
    rng = random.Random(3)
    fast = 0
    for _ in range(4000):
        status = rng.choice([200, 201, 204, 304, 403, 429, 502, 599, 999, 101, 1000, 0])
        headers = [(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randint(0, 4))]
        resp = _Response(status, headers, rng.choice([b"", b"body", b"x" * 70000]), close=rng.random() < 0.3)
        method = rng.choice(["GET", "HEAD", "POST"])
        got = _frame_fast(resp, method == "HEAD")
        try:
            want: Any = GatewayServer._frame_h11(None, _replayed_h11(method), resp, method == "HEAD")  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - _ClientGone, UnicodeEncodeError: h11 refuses
            want = e
        if got is None:
            continue
        fast += 1
        assert isinstance(want, bytes), (resp, want)
        assert (b"".join(got) if isinstance(got, tuple) else got) == want, resp
    assert fast > 500


def _h11_response(raw: bytes, eof: bool) -> Any:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    if eof:
        conn.receive_data(b"")
    status, headers, body = 0, [], b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body, conn.their_state is h11.DONE
            elif event is h11.NEED_DATA:
                return "incomplete"
            else:
                return repr(event)
    except h11.RemoteProtocolError as e:
        return f"error: {e}"


def test_response_parser_reads_what_h11_reads() -> None:
    rng = random.Random(5)
    fast = 0
    for _ in range(5000):
        status_line = rng.choice(["HTTP/1.1 200 OK", "HTTP/1.1 200 ", "HTTP/1.1 200", "HTTP/1.1 404 Not Found",
                                  "HTTP/1.0 200 OK", "HTTP/1.1 100 Continue", "HTTP/1.1 204 No Content",
                                  "HTTP/1.1 20 X", "HTTP/2 200"])
        body = rng.choice([b"", b"{}", b"x" * 300])
        lines = [status_line]
        for _ in range(rng.randint(0, 3)):
            lines.append(f"{rng.choice(NAMES)}{rng.choice([': ', ':'])}{rng.choice(VALUES)}")
        if rng.random() < 0.9:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
        if rng.random() < 0.1:
            raw += b"HTTP/1.1 200 OK\r\n"
        got = http1._parse_response(bytearray(raw))
        if got is None or got is FALLBACK:
            continue
        fast += 1
        want = _h11_response(raw, eof=False)
        assert isinstance(want, tuple), (raw, want)
        status, headers, content, keep_alive, decoded = got  # type: ignore[misc]
        assert (status, headers, content) == want[:3], raw
        assert keep_alive <= want[3]  # never reuses a connection h11 would not
        assert decoded is None or decoded == http1._decode_headers(headers)
    assert fast > 500


def test_signed_head_is_what_signer_and_h11_send() -> None:
    async def main() -> None:
        for creds in (Credentials("AKID", "secret"), Credentials("AKID2", "s/e+c", "tok+/=en")):
            lc = LambdaClient(StaticCredentialProvider(creds))
            for target in (
                LambdaTarget("arn:aws:lambda:us-east-1:123456789012:function:f", "us-east-1", "http://127.0.0.1:9001"),
                LambdaTarget("arn:aws:lambda:eu-west-1:123456789012:function:f:live", "eu-west-1",
                             "https://lambda.eu-west-1.amazonaws.com", asynchronous=True),
                LambdaTarget("arn:aws:lambda:eu-west-1:123456789012:function:f", "eu-west-1", "https://example.com:443/base"),
            ):
                plan = lc._plan(target)
                for payload in (b"", b'{"a":1}', "é".encode()):
                    while True:  # the same second on both sides
                        stamp = _Stamp.now()
                        head = plan.head(creds, payload)
                        headers = plan.headers + lc._signer(target.region).sign(
                            "POST", plan.url, plan.headers, payload, creds, datetime.now(UTC))
                        if _Stamp.now() == stamp:
                            break
                    key, path = lc._pool.split(plan.url)
                    want = h11.Connection(h11.CLIENT).send(h11.Request(
                        method=b"POST", target=path, headers=lc._pool.default_headers
                        + [(n.encode(), v.encode()) for n, v in headers] + [(b"Content-Length", str(len(payload)).encode())]))
                    assert head == want
            # a value h11 would refuse keeps the fast path off (the generic path reports it)
            bad = LambdaClient(StaticCredentialProvider(Credentials("AKID", "secret", "tok\nen")))
            target = LambdaTarget("arn:aws:lambda:us-east-1:123456789012:function:f", "us-east-1", "http://127.0.0.1:9")
            assert bad._plan(target).head(bad.credentials.current(), b"") is None
            await lc.aclose()
            await bad.aclose()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ end to end


async def _raw_exchange(e: Env, service: str, data: bytes, read_until_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", e.gw.port, ssl=e.client_ctx,
                                                   server_hostname=e.sni(service))
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 3 if read_until_close else 1)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return out


async def test_requests_outside_the_common_shape_get_h11s_answers(env: Env) -> None:
    # chunked body: read by h11, then the usual envelope
    out = await _raw_exchange(env, "echo", b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ")
    event = json.loads(body)
    assert event["raw_path"] == "/c" and base64_body(event) == b"abc"
    # Connection: close from the client: h11 adds "Connection: close" and closes
    out = await _raw_exchange(env, "echo", b"GET /cc HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True)
    assert out.startswith(b"HTTP/1.1 201 ") and b"\r\nConnection: close\r\n" in out
    # 100-continue
    out = await _raw_exchange(env, "echo", b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                                           b"Content-Length: 2\r\n\r\nhi")
    assert out.startswith(b"HTTP/1.1 100 ") and b"HTTP/1.1 201 " in out
    # malformed: h11's 400 with its reason, then close
    out = await _raw_exchange(env, "echo", b"GET / HTTP/1.1\r\nHost: h\r\nbad header\r\n\r\n", True)
    assert out.startswith(b"HTTP/1.1 400 ") and b"bad request: illegal header line" in out
    out = await _raw_exchange(env, "echo", b"GET / HTTP/1.1\r\n\r\n", True)
    assert out.startswith(b"HTTP/1.1 400 ") and b"Missing mandatory Host" in out
    # a body over the limit: 413 and close
    env.gw.max_body = 10
    out = await _raw_exchange(env, "echo", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n" + b"x" * 11, True)
    assert out.startswith(b"HTTP/1.1 413 ") and b"request body too large" in out
    assert env.lam.invocations()["echo"] == 3  # chunked, Connection: close, 100-continue


def base64_body(event: dict[str, Any]) -> bytes:
    import base64

    return base64.b64decode(event["body"]) if event["is_base64_encoded"] else event["body"].encode()


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        out.append((int(head.split(b" ")[1]), rest[:length]))
        data = rest[length:]
    return out


async def test_pipelined_requests_answered_in_order(env: Env) -> None:
    reqs = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode() for i in range(3)) + \
        b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\nGET /p3 HTTP/1.1\r\nHost: h\r\n\r\n"
    answers = _responses(await _raw_exchange(env, "echo", reqs))
    assert [status for status, _ in answers] == [201, 201, 201, 403, 201]
    assert [json.loads(body)["raw_path"] for status, body in answers if status == 201] == ["/p0", "/p1", "/p2", "/p3"]


async def test_idle_connection_closed_after_idle_timeout(env: Env) -> None:
    env.gw.idle_timeout = 0.3
    reader, writer = await asyncio.open_connection("127.0.0.1", env.gw.port, ssl=env.client_ctx,
                                                   server_hostname=env.sni("echo"))
    writer.write(b"GET /i HTTP/1.1\r\nHost: h\r\n\r\n")
    first = await asyncio.wait_for(reader.read(65536), 3)
    assert first.startswith(b"HTTP/1.1 201 ")
    rest = await asyncio.wait_for(reader.read(65536), 3)  # the gateway closes the idle connection
    assert rest == b""
    writer.close()


# ------------------------------------------------------------------------------------ pool


class Upstream:
    """A scripted HTTP/1.1 server: each connection gets the next list of raw responses."""

    def __init__(self, scripts: list[list[bytes | None]]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/fn"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            for answer in script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if answer is None:  # close without answering
                    break
                if answer == b"HANG":
                    await asyncio.sleep(5)
                    break
                writer.write(answer)
                await writer.drain()
            await asyncio.sleep(0.05)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"


@pytest.mark.parametrize("nowait", [False, True])
async def test_pool_fallbacks_and_stale_retry(nowait: bool) -> None:
    async def call(pool: http1.HTTP1Pool, url: str) -> http1.Response | http1.HTTPError:
        key, target = pool.split(url)
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n" % target
        if nowait:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if pool.send_nowait(key, head, b"{}", b"POST", fut.set_result):
                return await fut
        try:
            return await pool.send(key, head, b"{}")
        except http1.HTTPError as e:
            return e

    # chunked responses go to h11; the connection is reused afterwards
    async with Upstream([[CHUNKED, OK, CHUNKED]]) as url:
        pool = http1.HTTP1Pool(timeout=2)
        for _ in range(3):
            r = await call(pool, url)
            assert isinstance(r, http1.Response) and r.status == 200 and r.body == b"{}", r
        await pool.aclose()
    # the peer closes an idle kept-alive connection: one retry on a fresh one
    up = Upstream([[OK, None], [OK]])
    async with up as url:
        pool = http1.HTTP1Pool(timeout=2)
        assert isinstance(await call(pool, url), http1.Response)
        r = await call(pool, url)
        assert isinstance(r, http1.Response) and r.status == 200, r
        assert up.connections == 2
        await pool.aclose()
    # a response cut short: h11's words for it, not a retry
    async with Upstream([[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]]) as url:
        pool = http1.HTTP1Pool(timeout=2)
        r = await call(pool, url)
        assert isinstance(r, http1.RemoteProtocolError) and "peer closed connection" in str(r), r
        await pool.aclose()
    # Connection: close from the upstream: not reused
    up = Upstream([[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"]])
    async with up as url:
        pool = http1.HTTP1Pool(timeout=2)
        for _ in range(2):
            assert isinstance(await call(pool, url), http1.Response)
        assert up.connections == 2
        await pool.aclose()
    # a silent upstream: ReadTimeout (on a reused connection too)
    async with Upstream([[OK, b"HANG"]]) as url:
        pool = http1.HTTP1Pool(timeout=0.3)
        assert isinstance(await call(pool, url), http1.Response)
        r = await call(pool, url)
        assert isinstance(r, http1.ReadTimeout), r
        await pool.aclose()


def test_gateway_server_defaults_unchanged() -> None:
    gw = GatewayServer(Routes({}, ""), Verifier([]), IntentionEngine(), credentials=Credentials("a", "b"))
    assert gw.reuse_port is False and gw.idle_timeout == 60.0


def test_deferred_metrics_expose_what_prometheus_client_would() -> None:
    from gateway.dataplane.metrics import GatewayMetrics

    direct, deferred = GatewayMetrics(), GatewayMetrics()
    rng = random.Random(11)
    for i in range(3000):
        value = rng.choice([0.0005, 0.001, 0.0025, 0.003, 0.07, 1.0, 60.0, 100.0, rng.random() * 3])
        label = rng.choice(["a", "b"])
        direct.request_seconds.labels(label).observe(value)
        deferred.fast_histogram(deferred.request_seconds, label).observe(value)
        direct.requests.labels(label, "allow", "200").inc()
        deferred.fast_counter(deferred.requests, label, "allow", "200").inc()
        if i % 500 == 499:
            want = [line for line in direct.render().decode().splitlines() if "_created" not in line]
            got = [line for line in deferred.render().decode().splitlines() if "_created" not in line]
            assert len(got) == len(want)
            for g, w in zip(got, want):
                if g != w:  # only a sum may differ, by float rounding (added in batches)
                    assert "_sum" in g and g.rsplit(" ", 1)[0] == w.rsplit(" ", 1)[0]
                    assert float(g.rsplit(" ", 1)[1]) == pytest.approx(float(w.rsplit(" ", 1)[1]), rel=1e-12)
