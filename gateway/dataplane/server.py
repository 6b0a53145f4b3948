"""The native data plane: mTLS in, intention decision, Lambda (or plain HTTP) out.

One asyncio task per downstream connection (uvloop when the process runs with it);
HTTP/1.1 framing by h11 with keep-alive; TLS by Python's ``ssl``:

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
  gets 403 with the reason and the connection is closed;
* session tickets are off, so every connection presents and proves its certificate.

Per request: target normalized (``pathnorm``; escaped slashes -> 307), L7 decision
from the intention engine with the normalized path, then the target: a Lambda
invocation in Envoy's ``aws_lambda`` format (``transform``) or a plain HTTP upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http
import json
import logging
import os
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11

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
from gateway.dataplane.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.dataplane.pathnorm import PathError, normalize_request_target
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


class GatewayServer:
    """A terminating-gateway data plane for one set of :class:`Routes`.

    ``credentials``: a :class:`CredentialProvider`, fixed :class:`Credentials`, or None for
    boto3's default chain (resolved at start, refreshed in the background).
    ``routes_provider`` (optional, blocking, run in a thread) is polled every
    ``refresh_interval`` seconds; changed routes (new leaf, new link, new roots) replace the
    TLS contexts for new connections.
    ``metrics_port=None`` disables the plain-HTTP metrics listener (``GET /metrics``).
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
        self._connections: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self._gateway_uri = ""

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
        await self._credentials.start()
        self.lambda_client = LambdaClient(self._credentials, timeout=self._lambda_timeout, transport=self._transport)
        self._outer = _base_context(self._routes.roots_pem)
        self._outer.sni_callback = self._sni_callback
        self.update_routes(self._routes)
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, ssl=self._outer,
            ssl_handshake_timeout=self.handshake_timeout, limit=MAX_HEADER,
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
        """Stop accepting, let in-flight requests finish for ``grace`` seconds, then cancel."""
        for srv in (self._server, self._metrics_server):
            if srv is not None:
                srv.close()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
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

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.metrics.connections.inc()
        self.metrics.connections_active.inc()
        try:
            await self._serve(reader, writer)
        except (ConnectionError, ssl.SSLError, TimeoutError, _ClientGone, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            log.exception("gateway connection failed")
        finally:
            self.metrics.connections_active.dec()
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        sni = getattr(sslobj, SNI_ATTR, None) if sslobj is not None else None
        route = self._routes.get(sni)
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        caller, caller_uri, rejection = self._identify(der)
        cert_hash = hashlib.sha256(der).hexdigest() if der else ""
        gateway_uri = _route_uri(route)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER)
        while True:
            try:
                event = await self._next_event(conn, reader, self.idle_timeout)
            except h11.RemoteProtocolError as e:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, _text(e.error_status_hint, f"bad request: {e}", close=True), False)
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
                body = await self._read_body(conn, reader, writer)
            except _BodyTooLarge:
                resp = _text(413, "request body too large", close=True)
            except h11.RemoteProtocolError as e:
                resp = _text(400, f"bad request: {e}", close=True)
            else:
                if rejection:
                    resp = _text(403, rejection, close=True, decision="deny")
                else:
                    resp = await self._handle(route, caller, method, target, headers, body,
                                              gateway_uri, caller_uri, cert_hash)
            await self._send(conn, writer, resp, method == "HEAD")
            self._record(route, caller, caller_uri, method, target, resp, time.perf_counter() - started)
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

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
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

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: _Response, head: bool) -> None:
        headers = [(n, v) for n, v in resp.headers if n.lower() not in ("content-length", "connection",
                                                                       "transfer-encoding")]
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
        writer.write(data)
        await writer.drain()

    # -- requests ----------------------------------------------------------------------------

    async def _handle(
        self, route: Route | None, caller: ServiceName | None, method: str, target: str,
        headers: list[tuple[str, str]], body: bytes, gateway_uri: str, caller_uri: str, cert_hash: str,
    ) -> _Response:
        try:
            norm = normalize_request_target(target)
        except PathError as e:
            return _text(400, f"bad request: {e}")
        if norm.redirect:
            return _Response(307, [("location", norm.target)], b"", decision="none")
        if route is None or caller is None:
            return _text(503, "no route for this server name", close=True)
        authority = next((v for n, v in headers if n == "host"), "")
        pseudo = [(":authority", authority), (":method", method), (":path", norm.target), (":scheme", "https")]
        decision = self.engine.decide(caller, route.destination, HTTPRequest.from_pairs(method, norm.target,
                                                                                       pseudo + headers))
        if not decision.allowed:
            return _text(403, decision.reason, decision="deny", detail=decision.reason)
        fwd = [(n, v) for n, v in headers if n not in ("x-forwarded-client-cert", "x-forwarded-proto")]
        if not any(n == "x-request-id" for n, _ in fwd):
            fwd.append(("x-request-id", str(uuid.uuid4())))
        fwd.append(("x-forwarded-proto", "https"))
        fwd.append(("x-forwarded-client-cert", f"By={gateway_uri};Hash={cert_hash};URI={caller_uri}"))
        tgt = route.target
        if isinstance(tgt, LambdaTarget):
            resp = await self._invoke(tgt, method, norm.target, fwd, body)
        elif isinstance(tgt, HTTPUpstream):
            resp = await self._proxy(tgt, method, norm.target, fwd, body)
        else:
            resp = _text(503, "no upstream for this service")
        resp.decision = "allow"
        return resp

    async def _invoke(self, target: LambdaTarget, method: str, path: str, headers: list[tuple[str, str]],
                      body: bytes) -> _Response:
        assert self.lambda_client is not None
        payload = body if target.payload_passthrough else jsonize_request(method, path, headers, body)
        t0 = time.perf_counter()
        result = await self.lambda_client.invoke(target, payload)
        self.metrics.lambda_seconds.labels(target.function).observe(time.perf_counter() - t0)
        self.metrics.lambda_invocations.labels(target.function, result.outcome.value).inc()
        resp = self._lambda_response(target, result)
        resp.function = target.function
        return resp

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

    def _record(self, route: Route | None, caller: ServiceName | None, caller_uri: str, method: str, target: str,
                resp: _Response, elapsed: float) -> None:
        dest = str(route.destination) if route is not None else ""
        self.metrics.requests.labels(dest, resp.decision, str(resp.status)).inc()
        self.metrics.request_seconds.labels(dest).observe(elapsed)
        access_log.info(
            "caller=%s dest=%s method=%s path=%s decision=%s function=%s status=%d latency_ms=%.1f%s",
            caller if caller is not None else (caller_uri or "-"), dest or "-", method, target[:512],
            resp.decision, resp.function or "-", resp.status, elapsed * 1000,
            f" detail={resp.detail!r}" if resp.detail else "",
        )

    # -- metrics listener --------------------------------------------------------------------

    async def _on_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _route_uri(route: Route | None) -> str:
    """The SPIFFE URI of the leaf presented for this route (XFCC ``By``)."""
    if route is None:
        return ""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(route.cert_pem.encode())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        return uris[0] if uris else ""
    except Exception:  # noqa: BLE001
        return ""


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
    ``engine`` are required).
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
    """Blocking entry point for the CLI: ``serve_gateway`` on uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve_gateway(*args, **kwargs))
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_gateway(*args, **kwargs))
