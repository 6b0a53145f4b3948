"""A lean asyncio HTTP/1.1 keep-alive client pool, for the Lambda Invoke path.

Per (scheme, host, port) a LIFO list of idle connections (an ``asyncio.Protocol`` per
connection, no streams; TLS with SNI and verification against certifi's bundle when
installed, else the system store; TCP_NODELAY). One request per connection at a time; a
response is read in full.

Responses are parsed by a small parser that accepts only what h11 accepts, and only the
common shape (HTTP/1.1, a status >= 200, one ``Content-Length``, header lines matching h11's
own grammar). Anything else -- chunked bodies, HTTP/1.0, informational responses, a malformed
line, a peer that closes mid-response -- is replayed into an ``h11.Connection`` and read the
way h11 reads it, so results and error messages are h11's whichever path parsed them.

Timeouts follow httpx's ``Timeout(timeout, connect=connect_timeout)``: waiting for a free
slot (``pool``), each write and each read (inactivity, not total) are bounded by
``timeout``; opening a connection (TCP + TLS) by ``connect_timeout``. Timeouts raise
:class:`PoolTimeout` / :class:`ConnectTimeout` / :class:`WriteTimeout` / :class:`ReadTimeout`
(all :class:`HTTPTimeout`); every other failure raises :class:`HTTPError` subclasses.

A pooled connection that fails before any response byte arrived (the peer closed it while
idle) is retried once on a fresh connection. Connections are closed on any error, on
``Connection: close`` (either side), when bytes follow a response, and when idle longer
than ``keepalive_expiry``.

:meth:`HTTP1Pool.request` builds the request with h11 (validating every header);
:meth:`HTTP1Pool.send` takes a request already serialized by the caller (the Lambda client
builds its few fixed headers itself) and shares everything else.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
from h11._readers import header_field_re as _HEADER_FIELD
from h11._readers import status_line_re as _STATUS_LINE
from h11._receivebuffer import blank_line_regex as _BLANK_LINE

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "HTTP1Pool",
    "HTTPError",
    "HTTPTimeout",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "WriteError",
    "WriteTimeout",
]

_MAX_INCOMPLETE = 16 * 1024  # h11's default max_incomplete_event_size (client side)
_BIG_BODY = 65536  # bodies larger than this are written separately from the head
FALLBACK = object()  # "not the common shape: let h11 read it" (also for the server's parser)


class HTTPError(Exception):
    pass


class HTTPTimeout(HTTPError):
    pass


class PoolTimeout(HTTPTimeout):
    pass


class ConnectTimeout(HTTPTimeout):
    pass


class WriteTimeout(HTTPTimeout):
    pass


class ReadTimeout(HTTPTimeout):
    pass


class ConnectError(HTTPError):
    pass


class WriteError(HTTPError):
    pass


class ReadError(HTTPError):
    pass


class RemoteProtocolError(HTTPError):
    pass


class _Stale(Exception):
    """A reused connection failed before any response byte: safe to retry once."""

    def __init__(self, error: HTTPError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order, repeated names kept
    body: bytes


def default_ssl_context() -> ssl.SSLContext:
    """Verifying client context: certifi's bundle if installed (as httpx), else the system's."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi ships with httpx
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class FlowControl(asyncio.Protocol):
    """Write flow control for a protocol: ``paused`` while the transport's buffer is above its
    high-water mark; ``drain_waiter``, if a writer waits, is released when it drains."""

    __slots__ = ()
    paused: bool
    drain_waiter: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Conn(FlowControl):
    """One upstream connection: received bytes are buffered; a waiter is woken on each."""

    __slots__ = ("transport", "buf", "waiter", "eof", "lost", "exc", "idle_since", "paused", "drain_waiter",
                 "closed_waiter", "on_event", "last_rx")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.lost = False
        self.exc: BaseException | None = None
        self.idle_since = 0.0
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.closed_waiter: asyncio.Future[None] | None = None
        self.on_event: Callable[[_Conn], None] | None = None  # set while a callback exchange waits
        self.last_rx = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):  # not TCP (tests may use a Unix socket)
                pass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        on_event = self.on_event
        if on_event is not None:
            on_event(self)
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self.exc = exc
        self._wake()
        waiter = self.closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake(self) -> None:
        on_event = self.on_event
        if on_event is not None:
            on_event(self)
        for waiter in (self.waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- pool helpers -------------------------------------------------------------------------

    def usable(self, now: float, expiry: float) -> bool:
        transport = self.transport
        return (now - self.idle_since < expiry and not self.eof and not self.buf
                and transport is not None and not transport.is_closing())

    def close(self) -> None:
        try:
            if self.transport is not None:
                self.transport.close()
        except Exception:  # noqa: BLE001 - loop closed, transport gone: nothing left to release
            pass

    async def wait_closed(self, timeout: float) -> None:
        if self.lost:
            return
        loop = asyncio.get_running_loop()
        if self.closed_waiter is None:
            self.closed_waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.closed_waiter)
        except Exception:  # noqa: BLE001 - a peer that never answers the TLS close, a reset
            pass


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # As httpx: one encoding for the whole header set, ascii, else utf-8, else latin-1.
    for encoding in ("ascii", "utf-8"):
        try:
            return [(n.decode(encoding), v.decode(encoding)) for n, v in raw]
        except UnicodeDecodeError:
            continue
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]


def _decode_body(encoding: bytes, body: bytes) -> bytes:
    """gzip / deflate content decoding, the two codings we advertise (as httpx does)."""
    codings = [c.strip().lower() for c in encoding.split(b",") if c.strip()]
    for coding in reversed(codings):
        try:
            if coding in (b"gzip", b"x-gzip"):
                body = zlib.decompress(body, zlib.MAX_WBITS | 16)
            elif coding == b"deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
            elif coding != b"identity":
                return body
        except zlib.error as exc:
            raise ReadError(f"cannot decode {coding.decode('latin-1')} body: {exc}") from exc
    return body


def _finish(status: int, raw_headers: list[tuple[bytes, bytes]], content: bytes,
            decoded: list[tuple[str, str]] | None = None) -> Response:
    """``decoded``: the headers already decoded (all ASCII), as _decode_headers would."""
    for name, value in raw_headers:
        if name == b"content-encoding":
            content = _decode_body(value, content)
            break
    return Response(status, decoded if decoded is not None else _decode_headers(raw_headers), content)


_LINES: dict[bytes, tuple[bytes, bytes, tuple[str, str] | None]] = {}  # header line -> as h11 reads it
_STATUS_LINES: dict[bytes, int] = {}
_CACHE_LINE_MAX = 512  # longer lines are parsed every time, never cached
_CACHE_ENTRIES = 4096  # a full cache is emptied (bounded memory whatever peers send)


# Header fields whose value is new in (nearly) every message: request and trace ids, dates.
# Their lines are parsed, never remembered: each would be a fresh entry in a cache that then
# fills, is emptied and loses the lines that do repeat.
PER_MESSAGE_FIELDS = frozenset({
    b"x-request-id", b"x-amzn-requestid", b"x-amz-request-id", b"x-amzn-trace-id", b"x-amz-id-2",
    b"x-client-trace-id", b"traceparent", b"tracestate", b"x-b3-traceid", b"x-b3-spanid",
    b"x-b3-parentspanid", b"x-cloud-trace-context", b"date", b"x-amz-date",
})


def remember(cache: dict[Any, Any], key: Any, value: Any, size: int | None = None) -> None:
    """Keep a parsed (or framed) head line for the next message (they repeat), within bounded
    memory; ``size`` is the line's length when ``key`` is not the line itself."""
    if (len(key) if size is None else size) <= _CACHE_LINE_MAX:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[key] = value


def split_head(buf: bytearray, limit: int) -> tuple[int, list[bytes]] | object | None:
    """The head of the message at the start of ``buf``: (where it ends, its lines); None when
    more bytes are needed; FALLBACK when h11 must read it (over ``limit`` bytes without an
    end, or a start that h11 treats specially: leading blank lines, whitespace)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > limit or buf[0] < 0x21 or _BLANK_LINE.search(buf):
            return FALLBACK
        return None
    return end, bytes(buf[:end]).split(b"\r\n")


def _header_line(line: bytes) -> tuple[bytes, bytes, tuple[str, str] | None] | None:
    """(lower-case name, value, the (name, value) pair decoded as ASCII or None if not ASCII)."""
    hm = _HEADER_FIELD.fullmatch(line)
    if hm is None:
        return None
    name, value = hm.group("field_name").lower(), hm.group("field_value")
    hit = (name, value, (name.decode("ascii"), value.decode("ascii")) if value.isascii() else None)
    if name not in PER_MESSAGE_FIELDS:
        remember(_LINES, line, hit)
    return hit


def _parse_response(buf: bytearray) -> object:
    """The common case, parsed as h11 would: (status, headers, body, keep_alive), or None
    (need more bytes) or FALLBACK (let h11 read it). Consumes the response from ``buf``.
    Header lines already seen are looked up, not matched again (most repeat)."""
    head = split_head(buf, _MAX_INCOMPLETE)
    if type(head) is not tuple:
        return head
    end, lines = head
    first = lines[0]
    status = _STATUS_LINES.get(first)
    if status is None:
        m = _STATUS_LINE.fullmatch(first)
        if m is None or m.group("http_version") != b"1.1":
            return FALLBACK
        status = int(m.group("status_code"))
        if status < 200 or status in (204, 304):
            return FALLBACK
        remember(_STATUS_LINES, first, status)
    headers: list[tuple[bytes, bytes]] = []
    decoded: list[tuple[str, str]] | None = []
    length = -1
    keep_alive = True
    for i in range(1, len(lines)):
        parsed = _LINES.get(lines[i]) or _header_line(lines[i])
        if parsed is None:
            return FALLBACK
        if decoded is not None:
            if parsed[2] is None:
                decoded = None
            else:
                decoded.append(parsed[2])
        name = parsed[0]
        if name == b"content-length":
            value = parsed[1]
            if length >= 0 or not value.isdigit() or len(value) > 20:
                return FALLBACK
            length = int(value)
        elif name == b"transfer-encoding":
            return FALLBACK
        elif name == b"connection":
            if b"close" in [t.strip() for t in parsed[1].lower().split(b",")]:
                keep_alive = False
        headers.append(parsed[:2])
    if length < 0:
        return FALLBACK  # read-until-close framing: h11's business
    total = end + 4 + length
    if len(buf) < total:
        return None
    body = bytes(buf[end + 4:total])
    del buf[:total]
    if buf:
        keep_alive = False  # bytes after a response: do not trust this connection again
    return status, headers, body, keep_alive, decoded


class _Pending:
    """One callback-driven exchange waiting for its response (see HTTP1Pool.send_nowait)."""

    __slots__ = ("pool", "key", "conn", "head", "body", "method", "done")

    def __init__(self, pool: HTTP1Pool, key: tuple[str, str, int], conn: _Conn, head: bytes, body: bytes,
                 method: bytes, done: Callable[[Response | HTTPError], None]) -> None:
        self.pool = pool
        self.key = key
        self.conn = conn
        self.head = head
        self.body = body
        self.method = method
        self.done = done

    def _detach(self) -> None:
        self.conn.on_event = None
        self.pool._pending.discard(self)

    def on_event(self, conn: _Conn) -> None:
        """Bytes, EOF or loss on the connection."""
        if conn.buf and not conn.eof:
            parsed = _parse_response(conn.buf)
            if parsed is None:
                loop = self.pool._loop
                assert loop is not None
                conn.last_rx = loop.time()
                return  # more to come
            if parsed is not FALLBACK:
                self._detach()
                pool = self.pool
                status, raw_headers, content, keep_alive, decoded = parsed  # type: ignore[misc]
                pool._active.discard(conn)
                if keep_alive:
                    pool._checkin(self.key, conn)
                else:
                    conn.close()
                pool._release()
                try:
                    result: Response | HTTPError = _finish(status, raw_headers, content, decoded)
                except HTTPError as exc:
                    result = exc
                self.done(result)
                return
        self.hand_over()

    def hand_over(self) -> None:
        """Let a coroutine take it from here (h11, EOF, errors, retry on a fresh connection)."""
        self._detach()
        pool = self.pool
        pool._spawn(pool._resume(self.key, self.conn, self.head, self.body, self.method), self.done)

    def expire(self) -> None:
        """No response byte for ``timeout``: ReadTimeout, as the coroutine path raises it."""
        self._detach()
        pool = self.pool
        pool._active.discard(self.conn)
        self.conn.close()
        pool._release()
        self.done(ReadTimeout(_PHASE_NAMES[ReadTimeout]))


def _write_request(transport: asyncio.Transport, head: bytes, body: bytes) -> None:
    """One write for a request of usual size (one segment on the wire); a big body is not
    copied onto the head."""
    if body and len(body) > _BIG_BODY:
        transport.write(head)
        transport.write(body)
    else:
        transport.write(head + body if body else head)


class HTTP1Pool:
    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        max_keepalive: int = 64,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        default_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self.default_headers = default_headers or []
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._n_idle = 0
        self._active: set[_Conn] = set()
        self._free_slots = max_connections  # connections that may be in use at once
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._urls: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # asyncio.get_running_loop() costs a getpid()
        self._pending: set[_Pending] = set()  # callback exchanges waiting for a response
        self._sweeper: asyncio.TimerHandle | None = None

    # -- helpers ------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    def split(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """(pool key, request target) of a URL; ConnectError if it is not http(s)."""
        hit = self._urls.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"unsupported URL {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        hit = ((scheme, parts.hostname, port), target.encode("ascii"))
        if len(self._urls) > 1024:
            self._urls.clear()
        self._urls[url] = hit
        return hit

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            if scheme == "https":
                _, conn = await loop.create_connection(_Conn, host, port, ssl=self._ssl_context(),
                                                       server_hostname=host)
            else:
                _, conn = await loop.create_connection(_Conn, host, port)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def _checkout(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection
            self._n_idle -= 1
            if conn.usable(now, self.keepalive_expiry):
                return conn
            conn.close()
        return None

    def _checkin(self, key: tuple[str, str, int], conn: _Conn) -> None:
        if self._closed or self._n_idle >= self.max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        self._n_idle += 1

    # -- the request --------------------------------------------------------------------------

    async def request(self, method: bytes, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
        """Send one request and read the whole response. Raises HTTPError (HTTPTimeout)."""
        if self._closed:
            raise ConnectError("the connection pool is closed")
        key, target = self.split(url)
        all_headers = self.default_headers + headers
        all_headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        h = h11.Connection(h11.CLIENT)
        try:
            data = h.send(h11.Request(method=method, target=target, headers=all_headers))
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise RemoteProtocolError(f"invalid request: {exc}") from exc
        return await self.send(key, data, b"", method)

    # -- slots -------------------------------------------------------------------------------

    async def _acquire(self) -> None:
        if self._free_slots > 0 and not self._slot_waiters:
            self._free_slots -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(fut)
        try:
            async with asyncio.timeout(self.timeout):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self._release()  # it was handed to us as we gave up: pass it on
            else:
                fut.cancel()
            try:
                self._slot_waiters.remove(fut)
            except ValueError:
                pass
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(_PHASE_NAMES[PoolTimeout]) from None
            raise

    def _release(self) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next waiter
                return
        self._free_slots += 1

    # -- the exchange, as a coroutine -----------------------------------------------------------

    async def send(self, key: tuple[str, str, int], head: bytes, body: bytes, method: bytes = b"POST") -> Response:
        """Send ``head`` (request line and headers, serialized by the caller) then ``body``
        (already framed by the head's Content-Length) and read the whole response."""
        if self._closed:
            raise ConnectError("the connection pool is closed")
        await self._acquire()
        try:
            conn = self._checkout(key)
            if conn is not None:
                try:
                    return await self._exchange(key, conn, head, body, method, True)
                except _Stale:
                    pass  # the peer closed it while idle: one retry on a fresh connection
            return await self._fresh_exchange(key, head, body, method)
        finally:
            self._release()

    async def _fresh_exchange(self, key: tuple[str, str, int], head: bytes, body: bytes, method: bytes) -> Response:
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._connect(key)
        except TimeoutError:
            raise ConnectTimeout(_PHASE_NAMES[ConnectTimeout]) from None
        return await self._exchange(key, conn, head, body, method, False)

    # -- the exchange, driven by callbacks ------------------------------------------------------

    def send_nowait(self, key: tuple[str, str, int], head: bytes, body: bytes, method: bytes,
                    done: Callable[[Response | HTTPError], None]) -> bool:
        """:meth:`send` without a task when a slot and an idle connection are free: the request
        is written now and ``done`` is called with the Response (or the HTTPError) from the
        connection's callbacks. Anything but a clean response in the common shape (a stale
        connection, h11's cases, a full send buffer) continues in a coroutine that does what
        :meth:`send` does from that point. Returns False, having done nothing, when there is
        no free slot or idle connection: the caller uses :meth:`send`."""
        if self._closed or self._free_slots <= 0 or self._slot_waiters:
            return False
        conn = self._checkout(key)
        if conn is None:
            return False
        self._free_slots -= 1
        self._active.add(conn)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        transport = conn.transport
        assert transport is not None
        try:
            _write_request(transport, head, body)
        except (OSError, ssl.SSLError, RuntimeError):
            self._active.discard(conn)
            conn.close()
            self._spawn(self._fresh_exchange(key, head, body, method), done)  # stale: a fresh one
            return True
        state = _Pending(self, key, conn, head, body, method, done)
        if conn.paused or conn.buf or conn.eof:
            state.hand_over()
            return True
        conn.last_rx = loop.time()
        conn.on_event = state.on_event
        self._pending.add(state)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_period(), self._sweep)
        return True

    def _sweep_period(self) -> float:
        return max(0.01, min(0.25, self.timeout / 8))

    def _sweep(self) -> None:
        """Read timeouts of callback exchanges: one timer for all of them, not one per request
        (a timeout fires within an eighth of ``timeout``, at most 0.25 s, after it is due)."""
        self._sweeper = None
        if not self._pending:
            return
        assert self._loop is not None
        now = self._loop.time()
        for state in [p for p in self._pending if now - p.conn.last_rx >= self.timeout]:
            state.expire()
        if self._pending:
            self._sweeper = self._loop.call_later(self._sweep_period(), self._sweep)

    def _spawn(self, coro: Any, done: Callable[[Response | HTTPError], None]) -> None:
        """Finish an exchange in a task (the slot is held until it ends)."""

        async def run() -> None:
            try:
                result: Response | HTTPError = await coro
            except HTTPError as exc:
                result = exc
            except _Stale as exc:
                result = exc.error
            except BaseException:
                coro.close()
                raise
            finally:
                self._release()
            done(result)

        asyncio.get_running_loop().create_task(run())

    async def _resume(self, key: tuple[str, str, int], conn: _Conn, head: bytes, body: bytes,
                      method: bytes) -> Response:
        """Continue a callback exchange on a reused connection, as :meth:`send` would."""
        try:
            return await self._read_phase(key, conn, method, True)
        except _Stale:
            return await self._fresh_exchange(key, head, body, method)

    async def _wait(self, conn: _Conn, timeout: float, drain: bool = False) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if drain:
            conn.drain_waiter = fut
        else:
            conn.waiter = fut
        handle = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            if drain:
                conn.drain_waiter = None
            else:
                conn.waiter = None

    async def _exchange(self, key: tuple[str, str, int], conn: _Conn, head: bytes, body: bytes, method: bytes,
                        reused: bool) -> Response:
        self._active.add(conn)
        transport = conn.transport
        assert transport is not None
        try:
            _write_request(transport, head, body)
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            self._active.discard(conn)
            conn.close()
            err: HTTPError = WriteError(str(exc) or type(exc).__name__)
            raise (_Stale(err) if reused else err) from exc
        return await self._read_phase(key, conn, method, reused)

    async def _read_phase(self, key: tuple[str, str, int], conn: _Conn, method: bytes, reused: bool) -> Response:
        """After the request is written: drain, then read the response (the connection goes
        back to the pool or is closed at the end)."""
        keep_alive = False
        try:
            while conn.paused and not conn.lost:
                try:
                    await self._wait(conn, self.timeout, drain=True)
                except TimeoutError:
                    raise WriteTimeout(_PHASE_NAMES[WriteTimeout]) from None
            buf = conn.buf
            while True:
                if buf:
                    parsed = _parse_response(buf)
                    if parsed is FALLBACK:
                        response, keep_alive = await self._read_h11(conn, method, reused)
                        return response
                    if parsed is not None:
                        status, raw_headers, content, keep_alive, decoded = parsed  # type: ignore[misc]
                        return _finish(status, raw_headers, content, decoded)
                if conn.eof:
                    if conn.exc is not None and not buf:
                        rerr: HTTPError = ReadError(str(conn.exc) or type(conn.exc).__name__)
                        raise (_Stale(rerr) if reused else rerr)
                    if not buf:
                        eerr = RemoteProtocolError("Server disconnected without sending a response.")
                        raise (_Stale(eerr) if reused else eerr)
                    response, keep_alive = await self._read_h11(conn, method, reused)  # h11's words for it
                    return response
                try:
                    await self._wait(conn, self.timeout)
                except TimeoutError:
                    raise ReadTimeout(_PHASE_NAMES[ReadTimeout]) from None
        finally:
            self._active.discard(conn)
            if keep_alive:
                self._checkin(key, conn)
            else:
                conn.close()

    async def _read_h11(self, conn: _Conn, method: bytes, reused: bool) -> tuple[Response, bool]:
        """Read the response with h11 (the replayed request only tells it the method)."""
        h = h11.Connection(h11.CLIENT)
        h.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"upstream"), (b"Content-Length", b"0")]))
        h.send(h11.EndOfMessage())
        got_bytes = bool(conn.buf)
        status = 0
        resp_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                while not conn.buf and not conn.eof:
                    try:
                        await self._wait(conn, self.timeout)
                    except TimeoutError:
                        raise ReadTimeout(_PHASE_NAMES[ReadTimeout]) from None
                if conn.buf:
                    chunk = bytes(conn.buf)
                    conn.buf.clear()
                elif conn.exc is not None:
                    rerr: HTTPError = ReadError(str(conn.exc) or type(conn.exc).__name__)
                    raise (_Stale(rerr) if reused and not got_bytes else rerr)
                else:
                    chunk = b""
                if not chunk and not got_bytes:
                    eerr = RemoteProtocolError("Server disconnected without sending a response.")
                    raise (_Stale(eerr) if reused else eerr)
                got_bytes = got_bytes or bool(chunk)
                try:
                    h.receive_data(chunk)
                except h11.RemoteProtocolError as exc:
                    raise RemoteProtocolError(str(exc)) from exc
                continue
            etype = type(event)
            if etype is h11.Response:
                status = event.status_code  # type: ignore[union-attr]
                resp_headers = list(event.headers)  # type: ignore[union-attr]
            elif etype is h11.Data:
                chunks.append(bytes(event.data))  # type: ignore[union-attr]
            elif etype is h11.EndOfMessage:
                break
            elif etype is h11.InformationalResponse:
                continue
            elif etype is h11.ConnectionClosed:
                raise RemoteProtocolError("Server disconnected without sending a complete response.")
            else:  # PAUSED cannot happen before EndOfMessage on the client side
                raise RemoteProtocolError(f"unexpected event {event!r}")
        content = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        response = _finish(status, resp_headers, content)
        trailing, _closed = h.trailing_data
        keep_alive = (h.our_state is h11.DONE and h.their_state is h11.DONE and not trailing and not conn.buf)
        return response, keep_alive

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = [c for idle in self._idle.values() for c in idle] + list(self._active)
        self._idle.clear()
        self._n_idle = 0
        self._active.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed(1.0)


_PHASE_NAMES = {
    PoolTimeout: "timed out waiting for a connection",
    ConnectTimeout: "timed out connecting",
    WriteTimeout: "timed out writing the request",
    ReadTimeout: "timed out reading the response",
}
