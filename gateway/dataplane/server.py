"""The native data plane: mTLS in, intention decision, Lambda (or plain HTTP) out.

One ``asyncio.Protocol`` per downstream connection (uvloop when the process runs with it);
HTTP/1.1 with keep-alive; TLS by Python's ``ssl``:

* the outer context has no certificate of its own: its ``sni_callback`` switches the
  connection to the per-SNI context holding that linked service's leaf; an unknown or
  missing SNI fails the handshake (``unrecognized_name``), as a listener with no
  matching filter chain does in Envoy;
* client certificates are required and path-validated by OpenSSL against the CA roots
  (a certificate from another CA fails the handshake), then the peer leaf goes through
  terminus's :class:`Verifier` (SPIFFE profile, trust domain). Python 3.11's ``ssl``
  exposes only the peer leaf, so the chain given to the verifier is the leaf alone:
  that is complete when leaves are issued directly by a root in the bundle (the
  primary-DC case). An identity the verifier rejects, or one that is not a service,
  gets 403 with the reason and the connection is closed. The identity, the XFCC value
  and the metric children are worked out once per connection, not per request (the
  verifier's cache is keyed by the DER bytes, so a reconnecting caller is a cache hit);
* session tickets are off, so every connection presents and proves its certificate.

HTTP/1.1 framing: requests in the common shape (HTTP/1.1, one Host, at most one
``Content-Length``, no ``Transfer-Encoding`` / ``Expect`` / ``Upgrade`` / ``Connection:
close``, every line matching h11's grammar) are parsed by a small parser that accepts only
what h11 accepts; responses whose headers all pass h11's validation are written directly, in
the bytes h11 would write. Everything else -- malformed input, chunked bodies, HTTP/1.0,
100-continue, a response h11 would refuse -- goes to h11: the connection switches to an
h11 state machine from that request on (or, for a response, h11 frames that one response),
so error answers and edge cases are h11's, as before.

Per request: target normalized (``pathnorm``; escaped slashes -> 307; results cached per
target), L7 decision from the intention engine with the normalized path, then the target:
a Lambda invocation in Envoy's ``aws_lambda`` format (``transform``) or a plain HTTP upstream.

``reuse_port=True`` binds the listener with SO_REUSEPORT, so several processes (``terminus
gateway --workers N``) can share one port; the kernel spreads connections across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http
import json
import logging
import os
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from h11._headers import _field_name_re as _H11_NAME
from h11._headers import _field_value_re as _H11_VALUE
from h11._readers import header_field_re as _HEADER_FIELD
from h11._readers import request_line_re as _REQUEST_LINE

from gateway.awslambda.sigv4 import Credentials
from gateway.dataplane.lambda_client import (
    Boto3CredentialProvider,
    CredentialProvider,
    HTTPUpstream,
    InvokeOutcome,
    InvokeResult,
    LambdaClient,
    LambdaTarget,
    StaticCredentialProvider,
)
from gateway.dataplane.http1 import FALLBACK, PER_MESSAGE_FIELDS, FlowControl, remember, split_head
from gateway.dataplane.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.dataplane.pathnorm import NormalizedPath, PathError, normalize_request_target
from gateway.dataplane.routes import Route, Routes, routes_from_control_plane
from gateway.dataplane.transform import InvalidFunctionResponse, dejsonize_response, jsonize_request
from gateway.identity.verify import VerificationError, Verifier
from gateway.intentions.engine import IntentionEngine, ServiceName
from gateway.intentions.request import HTTPRequest

__all__ = ["GatewayServer", "run_gateway", "serve_gateway"]

log = logging.getLogger("terminus.gateway")
access_log = logging.getLogger("terminus.gateway.access")

MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MAX_HEADER = 64 * 1024
READ_CHUNK = 65536
SNI_ATTR = "terminus_sni"

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
    "content-length", "host",
})
_PASSTHROUGH_STATUS = frozenset({400, 413, 415})  # Lambda rejected the caller's own payload
_FRAMING = frozenset({"content-length", "connection", "transfer-encoding"})
# Request headers that send a request to h11 (the fast parser does not interpret them).
_SPECIAL_REQUEST_HEADERS = frozenset({b"content-length", b"host", b"connection", b"transfer-encoding", b"expect",
                                      b"upgrade"})


def _status_line(status: int) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


_STATUS_LINES = {code: _status_line(code) for code in range(200, 1000)}


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False
    decision: str = "allow"  # allow | deny | none (answered before a decision)
    function: str = ""
    detail: str = ""


def _text(status: int, message: str, *, close: bool = False, decision: str = "none", **kw: Any) -> _Response:
    return _Response(status, [("content-type", "text/plain; charset=utf-8")], (message + "\n").encode(), close,
                     decision, **kw)


def _json(status: int, doc: dict[str, Any], **kw: Any) -> _Response:
    return _Response(status, [("content-type", "application/json")], json.dumps(doc).encode(), **kw)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """``load_cert_chain`` needs files: write both to a private temp file, load, delete."""
    fd, path = tempfile.mkstemp(prefix="terminus-leaf-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key_pem if key_pem.endswith("\n") else key_pem + "\n")
            f.write(cert_pem)
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _base_context(roots_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_TICKET
    if roots_pem:
        ctx.load_verify_locations(cadata=roots_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _split_hostport(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


# -- request parsing (the common case) ---------------------------------------------------------


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-case names, values as received (latin-1)
    body: bytes
    head: bool  # a HEAD request


_LINES: dict[bytes, tuple[bytes, str, str]] = {}  # header line -> (lower-case name, name, value)
_REQUEST_LINES: dict[bytes, tuple[bytes, str, str]] = {}  # request line -> (method, method, target)


def _header_line(line: bytes) -> tuple[bytes, str, str] | None:
    """h11's reading of one header line (its regex): (lower-case name, name, value) or None."""
    hit = _LINES.get(line)
    if hit is None:
        hm = _HEADER_FIELD.fullmatch(line)
        if hm is None:
            return None
        lname = hm.group("field_name").lower()
        hit = (lname, lname.decode("ascii"), hm.group("field_value").decode("latin-1"))
        if lname not in PER_MESSAGE_FIELDS:
            remember(_LINES, line, hit)
    return hit


def _parse_request(buf: bytearray, max_body: int) -> object:
    """One request from ``buf`` if it is in the common shape and complete: a _Request (its
    bytes removed from ``buf``), None (need more bytes) or FALLBACK (h11 must read it).

    Accepts a strict subset of what h11 accepts, with h11's own regular expressions, and
    reads it the way h11 does (names lower-cased, values without surrounding whitespace).
    Lines already seen are looked up, not parsed again (they repeat: a sidecar sends the
    same few headers on every request)."""
    head = split_head(buf, MAX_HEADER)
    if type(head) is not tuple:
        return head
    end, lines = head
    first = lines[0]
    request_line = _REQUEST_LINES.get(first)
    if request_line is None:
        m = _REQUEST_LINE.fullmatch(first)
        if m is None or m.group("http_version") != b"1.1" or m.group("method") == b"CONNECT":
            return FALLBACK
        request_line = (m.group("method"), m.group("method").decode("ascii"), m.group("target").decode("latin-1"))
        remember(_REQUEST_LINES, first, request_line)
    headers: list[tuple[str, str]] = []
    length = -1
    hosts = 0
    for i in range(1, len(lines)):
        parsed = _LINES.get(lines[i]) or _header_line(lines[i])
        if parsed is None:
            return FALLBACK
        lname = parsed[0]
        if lname in _SPECIAL_REQUEST_HEADERS:
            if lname == b"content-length":
                value = parsed[2]
                if length >= 0 or not value.isdigit() or not value.isascii() or len(value) > 20:
                    return FALLBACK
                length = int(value)
            elif lname == b"host":
                hosts += 1
            elif lname == b"connection":
                if "close" in [t.strip() for t in parsed[2].lower().split(",")]:
                    return FALLBACK  # h11 adds "Connection: close" to the answer and closes
            else:
                return FALLBACK  # transfer-encoding, expect, upgrade
        headers.append((parsed[1], parsed[2]))
    if hosts != 1 or length > max_body:
        return FALLBACK
    start = end + 4
    if length <= 0:
        body = b""
        del buf[:start]
    else:
        stop = start + length
        if len(buf) < stop:
            return None
        body = bytes(buf[start:stop])
        del buf[:stop]
    return _Request(request_line[1], request_line[2], headers, body, request_line[0] == b"HEAD")


_FRAMED: dict[tuple[str, str], bytes | None] = {}  # (name, value) -> "name: value\r\n", None if h11 refuses


def _header_bytes(name: str, value: str) -> bytes | None:
    """The line h11 writes for this response header, or None if h11 would refuse it."""
    try:
        nb = name.encode("ascii")
        vb = value.encode("ascii")
    except UnicodeEncodeError:
        return None
    if _H11_NAME.fullmatch(nb) is None or _H11_VALUE.fullmatch(vb) is None:
        return None
    line = b"%s: %s\r\n" % (nb, vb)
    if nb.lower() not in PER_MESSAGE_FIELDS:
        remember(_FRAMED, (name, value), line, len(line))
    return line


def _frame_fast(resp: _Response, head: bool) -> bytes | None:
    """The bytes h11 would write for ``resp`` (see GatewayServer._frame_h11), or None when
    any header is one h11 would refuse or rewrite (then h11 frames it)."""
    status = resp.status
    line = _STATUS_LINES.get(status)
    if line is None:
        return None
    out = [line]
    hosts: list[bytes] = []
    for n, v in resp.headers:
        framed = _FRAMED.get((n, v))
        if framed is None:
            if n.lower() in _FRAMING:
                continue
            framed = _header_bytes(n, v)
            if framed is None:
                return None
        if framed[:5].lower() == b"host:":
            hosts.append(framed)
        else:
            out.append(framed)
    if status not in (204, 304):
        out.append(b"content-length: %d\r\n" % len(resp.body))
    if resp.close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    if hosts:
        out[1:1] = hosts
    body = resp.body
    if body and not head and status not in (204, 304):
        if len(body) <= 65536:
            out.append(body)
        else:
            return b"".join(out), body  # type: ignore[return-value]
    return b"".join(out)


# -- per-connection state ----------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    """Who is on the other end of one connection, and what we answer them with."""

    route: Route | None
    caller: ServiceName | None
    caller_uri: str
    rejection: str
    xfcc: str  # x-forwarded-client-cert value for this connection
    dest: str  # metric/log label of the route's destination ("" without a route)


class _Downstream(FlowControl):
    """One downstream connection (TLS done when ``connection_made`` runs).

    Requests are parsed here and handed to :meth:`GatewayServer._dispatch` one at a time:
    the next request on the connection is taken only after the previous answer is written
    (h11's rule too). A request outside the common shape switches the connection to the h11
    loop (:meth:`GatewayServer._serve_h11`), fed from this protocol through a StreamReader."""

    __slots__ = ("server", "transport", "peer", "buf", "busy", "closed", "paused", "drain_waiter", "reader",
                 "task", "idle_since", "idle_timer", "closed_waiter", "in_next", "done_waiter")

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: _Peer | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.reader: asyncio.StreamReader | None = None  # set in h11 mode
        self.task: asyncio.Task[Any] | None = None
        self.idle_since = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed_waiter: asyncio.Future[None] | None = None
        self.in_next = False
        self.done_waiter: asyncio.Future[None] | None = None  # stop() waits on it

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server._downstreams.add(self)
        server.metrics.connections.inc()
        server.metrics.connections_active.inc()
        try:
            self.peer = server._peer(transport.get_extra_info("ssl_object"))
        except Exception:  # noqa: BLE001
            log.exception("gateway connection failed")
            transport.close()
            return
        loop = server._loop
        self.idle_since = loop.time()
        self.idle_timer = loop.call_later(server.idle_timeout, self._idle_check)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            reader.feed_data(data)
            return
        self.buf += data
        self.idle_since = self.server._loop.time()
        if not self.busy:
            self._next()

    def eof_received(self) -> bool:
        if self.reader is not None:
            self.reader.feed_eof()
        elif not self.busy:
            self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        server = self.server
        server._downstreams.discard(self)
        server.metrics.connections_active.dec()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.reader is not None:
            if exc is None:
                self.reader.feed_eof()
            else:
                self.reader.set_exception(exc)
        for waiter in (self.drain_waiter, self.closed_waiter, self.done_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- helpers ------------------------------------------------------------------------------

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _idle_check(self) -> None:
        """No bytes for ``idle_timeout`` while waiting for a request: close (as before)."""
        self.idle_timer = None
        if self.closed or self.reader is not None:
            return
        loop = self.server._loop
        timeout = self.server.idle_timeout
        if self.busy:
            delay = timeout
        else:
            delay = self.idle_since + timeout - loop.time()
            if delay <= 0:
                self._close()
                return
        self.idle_timer = loop.call_later(delay, self._idle_check)

    async def drain(self) -> None:
        while self.paused and not self.closed:
            self.drain_waiter = self.server._loop.create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None
        if self.closed:
            raise ConnectionResetError("Connection lost")

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self.closed_waiter is None:
            self.closed_waiter = self.server._loop.create_future()
        await asyncio.shield(self.closed_waiter)

    def _next(self) -> None:
        """Take the next complete requests in the buffer, one at a time: each is answered on
        the spot, or by callbacks, or by a task (GatewayServer._dispatch)."""
        if self.in_next:
            return
        self.in_next = True
        server = self.server
        try:
            while not self.busy and not self.closed and self.buf and self.peer is not None:
                req = _parse_request(self.buf, server.max_body)
                if req is None:
                    return
                self.busy = True
                if req is FALLBACK:
                    self._to_h11()
                    return
                try:
                    server._dispatch(self, req)  # type: ignore[arg-type]
                except Exception as exc:  # noqa: BLE001
                    self.fail(exc)
                    return
        finally:
            self.in_next = False

    def fail(self, exc: Exception) -> None:
        """A request failed outside a task: close, logging what is not a connection problem."""
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, _ClientGone)):
            log.error("gateway connection failed", exc_info=exc)
        self._close()

    def done(self) -> None:
        """The current request is answered: wait for the next one."""
        self.busy = False
        self.idle_since = self.server._loop.time()
        waiter = self.done_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.buf and not self.in_next:
            self._next()

    def _to_h11(self) -> None:
        """From here on, this connection is read by h11 (starting with the buffered bytes)."""
        reader = asyncio.StreamReader(limit=MAX_HEADER, loop=self.server._loop)
        reader.set_transport(self.transport)  # type: ignore[arg-type]
        if self.buf:
            reader.feed_data(bytes(self.buf))
            self.buf.clear()
        self.reader = reader
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.task = self.server._loop.create_task(self._run_h11(reader))

    def run(self, coro: Any) -> None:
        """Finish the current request in a task (stop() waits for it)."""
        self.task = self.server._loop.create_task(self._guarded(coro))

    async def _guarded(self, coro: Any) -> None:
        try:
            await coro
        except (ConnectionError, ssl.SSLError, TimeoutError, _ClientGone, asyncio.CancelledError):
            self._close()
        except Exception:  # noqa: BLE001
            log.exception("gateway connection failed")
            self._close()
        finally:
            self.task = None

    async def answer(self, req: _Request, started: float, answer: Any) -> None:
        """Await ``answer`` (a coroutine giving the _Response), then send it."""
        resp = await answer
        await self.server._complete(self, req, resp, started, wait=True)

    async def _run_h11(self, reader: asyncio.StreamReader) -> None:
        try:
            await self.server._serve_h11(self, reader)
        except (ConnectionError, ssl.SSLError, TimeoutError, _ClientGone, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            log.exception("gateway connection failed")
        finally:
            self.task = None
            self._close()

    # StreamWriter-like surface for the h11 loop
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)


class _Done:
    """An awaitable that is already done (what _complete returns when nothing is left to wait)."""

    def __await__(self) -> Any:
        return
        yield  # pragma: no cover


_DONE = _Done()


def _replayed_h11(method: str) -> h11.Connection:
    """An h11 server connection that has just read a ``method`` request (HTTP/1.1, keep-alive,
    no body): what framing a response needs depends on nothing else."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
    conn.receive_data(b"%s / HTTP/1.1\r\nhost: gateway\r\n\r\n" % method.encode("ascii"))
    conn.next_event()  # Request
    conn.next_event()  # EndOfMessage
    return conn


_NORMALIZED: dict[str, NormalizedPath | PathError] = {}


def _normalize(target: str) -> NormalizedPath | PathError:
    """normalize_request_target, memoized (a gateway sees the same few targets over and over)."""
    hit = _NORMALIZED.get(target)
    if hit is None:
        try:
            hit = normalize_request_target(target)
        except PathError as e:
            hit = e
        if len(_NORMALIZED) >= 4096:
            _NORMALIZED.clear()
        _NORMALIZED[target] = hit
    return hit


class _RequestIds:
    """UUID4 strings (what ``str(uuid.uuid4())`` gives), made 64 at a time: per request a pop,
    not a cold pass through the formatting code (a quiet gateway finds its caches cold)."""

    _BATCH = 64

    def __init__(self) -> None:
        self._ready: list[str] = []

    def next(self) -> str:
        ready = self._ready
        if not ready:
            self._refill()
        return ready.pop()

    def _refill(self) -> None:
        pool = os.urandom(16 * self._BATCH)
        for at in range(0, len(pool), 16):
            b = bytearray(pool[at:at + 16])
            b[6] = (b[6] & 0x0F) | 0x40
            b[8] = (b[8] & 0x3F) | 0x80
            h = b.hex()
            self._ready.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")


class GatewayServer:
    """A terminating-gateway data plane for one set of :class:`Routes`.

    ``credentials``: a :class:`CredentialProvider`, fixed :class:`Credentials`, or None for
    boto3's default chain (resolved at start, refreshed in the background).
    ``routes_provider`` (optional, blocking, run in a thread) is polled every
    ``refresh_interval`` seconds; changed routes (new leaf, new link, new roots) replace the
    TLS contexts for new connections.
    ``metrics_port=None`` disables the plain-HTTP metrics listener (``GET /metrics``).
    ``reuse_port=True`` sets SO_REUSEPORT on the listener (several worker processes).
    """

    def __init__(
        self,
        routes: Routes,
        verifier: Verifier,
        engine: IntentionEngine,
        *,
        credentials: CredentialProvider | Credentials | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_host: str = "127.0.0.1",
        metrics_port: int | None = 0,
        lambda_timeout: float = 30.0,
        upstream_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 10.0,
        max_body: int = MAX_BODY,
        routes_provider: Callable[[], Routes] | None = None,
        refresh_interval: float = 30.0,
        transport: Any = None,
        metrics: GatewayMetrics | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.verifier = verifier
        self.engine = engine
        self.host = host
        self.port = port
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self.upstream_timeout = upstream_timeout
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_body = max_body
        self.routes_provider = routes_provider
        self.refresh_interval = refresh_interval
        self.reuse_port = reuse_port
        self.metrics = metrics or GatewayMetrics()
        if credentials is None:
            provider: CredentialProvider = Boto3CredentialProvider()
        elif isinstance(credentials, Credentials):
            provider = StaticCredentialProvider(credentials)
        else:
            provider = credentials
        self._credentials = provider
        self._lambda_timeout = lambda_timeout
        self._transport = transport
        self.lambda_client: LambdaClient | None = None
        self._routes = routes
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._outer: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._metrics_server: asyncio.Server | None = None
        self._downstreams: set[_Downstream] = set()
        self._connections: set[asyncio.Task[Any]] = set()  # metrics listener connections
        self._refresher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._gateway_uri = ""
        self._ids = _RequestIds()
        self._cert_hashes: dict[bytes, str] = {}
        # deferred metric recorders (GatewayMetrics.fast_*), looked up once per label set
        self._m_requests: dict[tuple[str, str, str], Any] = {}
        self._m_request_seconds: dict[str, Any] = {}
        self._m_lambda: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._functions: dict[str, str] = {}  # ARN -> function label

    # -- routes / TLS ------------------------------------------------------------------------

    @property
    def routes(self) -> Routes:
        return self._routes

    def update_routes(self, routes: Routes) -> None:
        """Swap routes and TLS contexts; open connections keep what they negotiated."""
        contexts: dict[str, ssl.SSLContext] = {}
        for sni, route in routes.routes.items():
            ctx = _base_context(routes.roots_pem)
            _load_chain(ctx, route.cert_pem, route.key_pem)
            contexts[sni] = ctx
            _route_uri(route)  # parsed here, so a connection only looks it up
        if self._outer is not None and routes.roots_pem:
            self._outer.load_verify_locations(cadata=routes.roots_pem)  # additive: new roots only
        self._contexts, self._routes = contexts, routes

    def _sni_callback(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        ctx = self._contexts.get(server_name) if server_name else None
        if ctx is None:
            self.metrics.rejected.labels("unknown_sni" if server_name else "no_sni").inc()
            log.info("TLS: refusing SNI %r (no linked service)", server_name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = ctx
        with contextlib.suppress(AttributeError):
            setattr(sslobj, SNI_ATTR, server_name)
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        self._loop = loop = asyncio.get_running_loop()
        await self._credentials.start()
        self.lambda_client = LambdaClient(self._credentials, timeout=self._lambda_timeout, transport=self._transport)
        self._outer = _base_context(self._routes.roots_pem)
        self._outer.sni_callback = self._sni_callback
        self.update_routes(self._routes)
        self._server = await loop.create_server(
            lambda: _Downstream(self), self.host, self.port, ssl=self._outer,
            ssl_handshake_timeout=self.handshake_timeout, reuse_port=self.reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.metrics_port is not None:
            self._metrics_server = await asyncio.start_server(self._on_metrics, self.metrics_host, self.metrics_port)
            self.metrics_port = self._metrics_server.sockets[0].getsockname()[1]
        if self.routes_provider is not None:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="gateway-routes-refresh")
        log.info("gateway listening on %s:%d (%d routes), metrics on %s", self.host, self.port,
                 len(self._routes.routes), self.metrics_port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish for ``grace`` seconds, then cancel.
        Connections waiting for their next request are closed at once."""
        for srv in (self._server, self._metrics_server):
            if srv is not None:
                srv.close()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for d in list(self._downstreams):
            if not d.busy:
                d._close()
        tasks: set[asyncio.Future[Any]] = set(self._connections)
        for d in self._downstreams:
            if d.task is not None:
                tasks.add(d.task)
            elif d.busy:  # a callback-driven exchange in flight
                if d.done_waiter is None:
                    d.done_waiter = self._loop.create_future()
                tasks.add(d.done_waiter)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for d in list(self._downstreams):
            d._close()
        for srv in (self._server, self._metrics_server):
            if srv is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), grace)
        self._server = self._metrics_server = None
        if self.lambda_client is not None:
            await self.lambda_client.aclose()
        await self._credentials.close()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _refresh_loop(self) -> None:
        assert self.routes_provider is not None
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                new = await asyncio.to_thread(self.routes_provider)
                if new.version is None or new.version != self._routes.version:
                    self.update_routes(new)
                    log.info("gateway routes updated: %d routes", len(new.routes))
            except Exception:  # noqa: BLE001
                log.exception("refreshing gateway routes failed; keeping the current ones")

    # -- connections -------------------------------------------------------------------------

    def _peer(self, sslobj: Any) -> _Peer:
        """Everything about a new connection that holds for all its requests."""
        sni = getattr(sslobj, SNI_ATTR, None) if sslobj is not None else None
        route = self._routes.get(sni)
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        caller, caller_uri, rejection = self._identify(der)
        if der:
            cert_hash = self._cert_hashes.get(der)
            if cert_hash is None:
                if len(self._cert_hashes) >= 4096:
                    self._cert_hashes.clear()
                cert_hash = self._cert_hashes[der] = hashlib.sha256(der).hexdigest()
        else:
            cert_hash = ""
        xfcc = f"By={_route_uri(route)};Hash={cert_hash};URI={caller_uri}"
        return _Peer(route, caller, caller_uri, rejection, xfcc, str(route.destination) if route is not None else "")

    def _identify(self, der: bytes | None) -> tuple[ServiceName | None, str, str]:
        """(caller, its SPIFFE URI, rejection reason)."""
        if not der:
            return None, "", "no client certificate"
        try:
            ident = self.verifier.verify((der,), purpose="client")
        except VerificationError as e:
            self.metrics.rejected.labels(f"identity_{e.code}").inc()
            return None, "", f"client certificate rejected: {e.reason}"
        svc = ident.service
        if svc is None:
            self.metrics.rejected.labels("not_a_service").inc()
            return None, ident.uri, f"client identity {ident.uri} is not a service identity"
        return ServiceName(svc.service, svc.namespace, svc.partition), ident.uri, ""

    async def _serve_h11(self, d: _Downstream, reader: asyncio.StreamReader) -> None:
        """The h11 loop, for connections that sent something outside the common shape."""
        peer = d.peer
        assert peer is not None
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
        while True:
            try:
                event = await self._next_event(conn, reader, self.idle_timeout)
            except h11.RemoteProtocolError as e:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, d, _text(e.error_status_hint, f"bad request: {e}", close=True), False)
                return
            if isinstance(event, (h11.ConnectionClosed, h11.EndOfMessage)) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            started = time.perf_counter()
            method = event.method.decode("ascii", "replace")
            target = event.target.decode("latin-1")
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            try:
                body = await self._read_body(conn, reader, d)
            except _BodyTooLarge:
                resp = _text(413, "request body too large", close=True)
            except h11.RemoteProtocolError as e:
                resp = _text(400, f"bad request: {e}", close=True)
            else:
                if peer.rejection:
                    resp = _text(403, peer.rejection, close=True, decision="deny")
                else:
                    resp = await self._handle(peer, method, target, headers, body)
            await self._send(conn, d, resp, method == "HEAD")
            self._record(peer, method, target, resp, time.perf_counter() - started)
            if resp.close or conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
            except TimeoutError:
                raise _ClientGone() from None
            conn.receive_data(data)

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: Any) -> bytes:
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(conn, reader, self.idle_timeout)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    raise _BodyTooLarge()
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise _ClientGone()

    def _frame_h11(self, conn: h11.Connection, resp: _Response, head: bool) -> bytes:
        headers = [(n, v) for n, v in resp.headers if n.lower() not in _FRAMING]
        no_body = head or resp.status in (204, 304) or resp.status < 200
        if resp.status not in (204, 304):
            headers.append(("content-length", str(len(resp.body))))
        if resp.close:
            headers.append(("connection", "close"))
        try:
            reason = http.HTTPStatus(resp.status).phrase.encode()
        except ValueError:
            reason = b""
        try:
            data = conn.send(h11.Response(status_code=resp.status, headers=headers, reason=reason)) or b""
            if resp.body and not no_body:
                data += conn.send(h11.Data(data=resp.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            log.exception("cannot frame response")
            raise _ClientGone() from None
        return data

    async def _send(self, conn: h11.Connection, writer: Any, resp: _Response, head: bool) -> None:
        writer.write(self._frame_h11(conn, resp, head))
        await writer.drain()

    # -- requests ----------------------------------------------------------------------------

    def _dispatch(self, d: _Downstream, req: _Request) -> None:
        """Answer one request of the common shape without a task when possible: early answers
        (403, 307, 400...) on the spot, a Lambda call on an idle pooled connection by callbacks.
        Anything else is awaited in a task; both end in :meth:`_complete`."""
        started = time.perf_counter()
        peer = d.peer
        assert peer is not None
        if peer.rejection:
            self._complete(d, req, _text(403, peer.rejection, close=True, decision="deny"), started)
            return
        prepared = self._prepare(peer, req.method, req.target, req.headers)
        if type(prepared) is _Response:
            self._complete(d, req, prepared, started)
            return
        tgt, path, fwd = prepared  # type: ignore[misc]
        if type(tgt) is LambdaTarget and self.lambda_client is not None:
            payload = req.body if tgt.payload_passthrough else jsonize_request(req.method, path, fwd, req.body)
            t0 = time.perf_counter()

            def invoked(result: InvokeResult) -> None:
                elapsed = time.perf_counter() - t0
                try:
                    resp = self._lambda_answer(tgt, result)
                    resp.decision = "allow"
                    self._complete(d, req, resp, started)
                    self._observe_lambda(resp.function, result.outcome, elapsed)  # the answer is out
                except Exception as exc:  # noqa: BLE001
                    d.fail(exc)

            if self.lambda_client.invoke_nowait(tgt, payload, invoked):
                return
            d.run(d.answer(req, started, self._invoke_payload(tgt, payload)))
            return
        d.run(d.answer(req, started, self._target(tgt, req.method, path, fwd, req.body)))

    def _complete(self, d: _Downstream, req: _Request, resp: _Response, started: float,
                  wait: bool = False) -> Any:
        """Send the answer to a request read by the fast parser, record it, take the next.
        With ``wait`` (from a task) returns an awaitable that also waits for the send buffer
        to drain; without, a full send buffer is drained in a task before the next request."""
        if d.closed:
            return _DONE if wait else None  # the caller left: nothing to send, nothing recorded
        data = _frame_fast(resp, req.head)
        if data is None:
            data = self._frame_h11(_replayed_h11(req.method), resp, req.head)
        transport = d.transport
        assert transport is not None
        if type(data) is tuple:
            transport.write(data[0])
            transport.write(data[1])
        else:
            transport.write(data)  # type: ignore[arg-type]
        if d.paused:
            finish = self._finish_after_drain(d, req, resp, started)
            if wait:
                return finish
            d.run(finish)
            return None
        self._finish(d, req, resp, started)
        return _DONE if wait else None

    async def _finish_after_drain(self, d: _Downstream, req: _Request, resp: _Response, started: float) -> None:
        await d.drain()
        self._finish(d, req, resp, started)

    def _finish(self, d: _Downstream, req: _Request, resp: _Response, started: float) -> None:
        assert d.peer is not None
        self._record(d.peer, req.method, req.target, resp, time.perf_counter() - started)
        if resp.close:
            d._close()
            return
        d.done()

    def _prepare(self, peer: _Peer, method: str, target: str,
                 headers: list[tuple[str, str]]) -> _Response | tuple[Any, str, list[tuple[str, str]]]:
        """Everything before the upstream call: an early answer, or (target, path, forwarded
        headers) for an allowed request."""
        norm = _normalize(target)
        if type(norm) is not NormalizedPath:
            return _text(400, f"bad request: {norm}")
        if norm.redirect:
            return _Response(307, [("location", norm.target)], b"", decision="none")
        route, caller = peer.route, peer.caller
        if route is None or caller is None:
            return _text(503, "no route for this server name", close=True)
        path = norm.target
        # HTTPRequest.from_pairs(method, path, pseudo + headers), built in the same pass as
        # the forwarded headers (header names are lower-case tokens: no ":" collisions)
        authority = None
        joined: dict[str, str] = {}
        fwd: list[tuple[str, str]] = []
        has_request_id = False
        for n, v in headers:
            if n in joined:
                joined[n] = f"{joined[n]},{v}"
            else:
                joined[n] = v
            if n == "host":
                if authority is None:
                    authority = v
            elif n == "x-forwarded-client-cert" or n == "x-forwarded-proto":
                continue
            elif n == "x-request-id":
                has_request_id = True
            fwd.append((n, v))
        joined = {":authority": authority or "", ":method": method, ":path": path, ":scheme": "https", **joined}
        decision = self.engine.decide(caller, route.destination, HTTPRequest(method, path, joined))
        if not decision.allowed:
            return _text(403, decision.reason, decision="deny", detail=decision.reason)
        if not has_request_id:
            fwd.append(("x-request-id", self._ids.next()))
        fwd.append(("x-forwarded-proto", "https"))
        fwd.append(("x-forwarded-client-cert", peer.xfcc))
        return route.target, path, fwd

    async def _handle(self, peer: _Peer, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes) -> _Response:
        prepared = self._prepare(peer, method, target, headers)
        if type(prepared) is _Response:
            return prepared
        tgt, path, fwd = prepared  # type: ignore[misc]
        return await self._target(tgt, method, path, fwd, body)

    async def _target(self, tgt: Any, method: str, path: str, fwd: list[tuple[str, str]], body: bytes) -> _Response:
        if isinstance(tgt, LambdaTarget):
            resp = await self._invoke(tgt, method, path, fwd, body)
        elif isinstance(tgt, HTTPUpstream):
            resp = await self._proxy(tgt, method, path, fwd, body)
        else:
            resp = _text(503, "no upstream for this service")
        resp.decision = "allow"
        return resp

    async def _invoke(self, target: LambdaTarget, method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes) -> _Response:
        payload = body if target.payload_passthrough else jsonize_request(method, path, headers, body)
        return await self._invoke_payload(target, payload)

    async def _invoke_payload(self, target: LambdaTarget, payload: bytes) -> _Response:
        assert self.lambda_client is not None
        t0 = time.perf_counter()
        result = await self.lambda_client.invoke(target, payload)
        resp = self._lambda_answer(target, result)
        self._observe_lambda(resp.function, result.outcome, time.perf_counter() - t0)
        resp.decision = "allow"
        return resp

    def _lambda_answer(self, target: LambdaTarget, result: InvokeResult) -> _Response:
        resp = self._lambda_response(target, result)
        function = self._functions.get(target.arn)  # keyed by the ARN: a str hashes in C
        if function is None:
            function = self._functions[target.arn] = target.function
        resp.function = function
        return resp

    def _observe_lambda(self, function: str, outcome: InvokeOutcome, elapsed: float) -> None:
        key = (function, outcome._value_)  # not .value (a Python property) nor the enum (hashed in Python)
        children = self._m_lambda.get(key)
        if children is None:
            m = self.metrics
            children = self._m_lambda[key] = (m.fast_histogram(m.lambda_seconds, function),
                                              m.fast_counter(m.lambda_invocations, function, key[1]))
        children[0].observe(elapsed)
        children[1].inc()

    @staticmethod
    def _lambda_response(target: LambdaTarget, result: InvokeResult) -> _Response:
        outcome = result.outcome
        if outcome is InvokeOutcome.OK:
            if target.asynchronous or target.payload_passthrough:
                hdrs = [(n, v) for n, v in result.headers if n.lower() not in _HOP_BY_HOP]
                return _Response(result.status, hdrs, result.body)
            try:
                t = dejsonize_response(result.headers, result.body)
            except InvalidFunctionResponse as e:
                return _text(500, "invalid function response", detail=str(e))
            return _Response(t.status, t.headers, t.body)
        if outcome is InvokeOutcome.FUNCTION_ERROR:
            kind = result.header("x-amz-function-error") or "Unhandled"
            etype = result.detail.split(":", 1)[0] if result.detail else ""
            return _json(502, {"message": "function error", "function_error": kind, "error_type": etype},
                         detail=result.detail)
        if outcome is InvokeOutcome.THROTTLED:
            retry = result.header("retry-after") or _retry_after_from_body(result.body) or "1"
            r = _json(429, {"message": "function throttled"}, detail=result.detail)
            r.headers.append(("retry-after", retry))
            return r
        if outcome is InvokeOutcome.CLIENT_ERROR and result.status in _PASSTHROUGH_STATUS:
            hdrs = [(n, v) for n, v in result.headers if n.lower() not in _HOP_BY_HOP]
            return _Response(result.status, hdrs, result.body, detail=result.detail)
        if outcome is InvokeOutcome.CLIENT_ERROR:
            return _json(502, {"message": "function invocation rejected by Lambda"}, detail=result.detail)
        if outcome is InvokeOutcome.TIMEOUT:
            return _json(504, {"message": "function timed out"}, detail=result.detail)
        return _json(503, {"message": "function unavailable"}, detail=result.detail)  # 5xx, unreachable

    async def _proxy(self, target: HTTPUpstream, method: str, path: str, headers: list[tuple[str, str]],
                     body: bytes) -> _Response:
        assert self.lambda_client is not None
        fwd = [(n, v) for n, v in headers if n not in _HOP_BY_HOP]
        try:
            r = await self.lambda_client.http.request(method, target.url.rstrip("/") + path, headers=fwd,
                                                      content=body, timeout=self.upstream_timeout)
        except Exception as e:  # noqa: BLE001 - httpx errors and invalid URLs alike
            import httpx

            status = 504 if isinstance(e, httpx.TimeoutException) else 503
            return _text(status, "upstream unavailable", detail=f"{type(e).__name__}: {e}")
        hdrs = [(n, v) for n, v in r.headers.multi_items() if n.lower() not in _HOP_BY_HOP]
        return _Response(r.status_code, hdrs, r.content)

    def _record(self, peer: _Peer, method: str, target: str, resp: _Response, elapsed: float) -> None:
        dest = peer.dest
        key = (dest, resp.decision, str(resp.status))
        counter = self._m_requests.get(key)
        if counter is None:
            counter = self._m_requests[key] = self.metrics.fast_counter(self.metrics.requests, *key)
        counter.inc()
        histogram = self._m_request_seconds.get(dest)
        if histogram is None:
            histogram = self._m_request_seconds[dest] = self.metrics.fast_histogram(self.metrics.request_seconds, dest)
        histogram.observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            caller = peer.caller
            access_log.info(
                "caller=%s dest=%s method=%s path=%s decision=%s function=%s status=%d latency_ms=%.1f%s",
                caller if caller is not None else (peer.caller_uri or "-"), dest or "-", method, target[:512],
                resp.decision, resp.function or "-", resp.status, elapsed * 1000,
                f" detail={resp.detail!r}" if resp.detail else "",
            )

    # -- metrics listener --------------------------------------------------------------------

    async def _on_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
        try:
            event = await self._next_event(conn, reader, 10.0)
            if isinstance(event, h11.Request):
                path = event.target.decode("latin-1").split("?", 1)[0]
                if path == "/metrics" and event.method in (b"GET", b"HEAD"):
                    resp = _Response(200, [("content-type", CONTENT_TYPE_LATEST)], self.metrics.render(), True)
                elif path == "/ready":
                    resp = _text(200, "ready", close=True)
                else:
                    resp = _text(404, "not found", close=True)
                await self._send(conn, writer, resp, event.method == b"HEAD")
        except (ConnectionError, _ClientGone, h11.ProtocolError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


_ROUTE_URIS: dict[str, str] = {}  # leaf PEM -> its SPIFFE URI (filled by update_routes)


def _route_uri(route: Route | None) -> str:
    """The SPIFFE URI of the leaf presented for this route (XFCC ``By``)."""
    if route is None:
        return ""
    hit = _ROUTE_URIS.get(route.cert_pem)
    if hit is not None:
        return hit
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(route.cert_pem.encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        uri = uris[0] if uris else ""
    except Exception:  # noqa: BLE001
        uri = ""
    if len(_ROUTE_URIS) >= 1024:
        _ROUTE_URIS.clear()
    _ROUTE_URIS[route.cert_pem] = uri
    return uri


def _retry_after_from_body(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict):
        for key in ("retryAfterSeconds", "RetryAfterSeconds"):
            value = doc.get(key)
            if isinstance(value, (int, float, str)) and str(value).strip():
                return str(value)
    return None


async def serve_gateway(
    cp_or_source: Any,
    gateway_name: str,
    listen: str,
    *,
    metrics_listen: str | None = "127.0.0.1:0",
    verifier: Verifier | None = None,
    engine: IntentionEngine | None = None,
    credentials: CredentialProvider | Credentials | None = None,
    refresh_interval: float = 15.0,
    started: Callable[[GatewayServer], None] | None = None,
    **options: Any,
) -> None:
    """Run a gateway until cancelled.

    ``cp_or_source`` is a ``ControlPlane`` (routes built from ``gateway_name``'s linked
    services and refreshed every ``refresh_interval`` seconds; the CA's verifier and the
    control plane's engine are used) or a :class:`Routes` (then ``verifier`` and
    ``engine`` are required). ``options`` go to :class:`GatewayServer` (``reuse_port``...).
    """
    host, port = _split_hostport(listen)
    mhost, mport = _split_hostport(metrics_listen) if metrics_listen else ("127.0.0.1", None)
    if isinstance(cp_or_source, Routes):
        if verifier is None or engine is None:
            raise ValueError("serving fixed Routes needs a verifier and an engine")
        routes, provider = cp_or_source, None
    else:
        cp = cp_or_source
        verifier = verifier or cp.ca.verifier
        engine = engine or cp.engine

        def provider() -> Routes:
            return routes_from_control_plane(cp, gateway_name)

        routes = await asyncio.to_thread(provider)
    server = GatewayServer(
        routes, verifier, engine, credentials=credentials, host=host, port=port, metrics_host=mhost,
        metrics_port=mport, routes_provider=provider, refresh_interval=refresh_interval, **options,
    )
    await server.start()
    if started is not None:
        started(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def run_gateway(*args: Any, **kwargs: Any) -> None:
    """Blocking entry point for the CLI: ``serve_gateway`` on uvloop when available.

    SIGTERM (and SIGINT) stop it gracefully: no new connections, in-flight requests get
    ``stop``'s grace period, idle keep-alive connections are closed at once."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve_gateway(*args, **kwargs)

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
