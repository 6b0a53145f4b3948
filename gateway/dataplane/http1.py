"""A lean asyncio HTTP/1.1 keep-alive client pool (h11), for the Lambda Invoke path.

Per (scheme, host, port) a LIFO list of idle connections (asyncio streams; TLS with SNI and
verification against certifi's bundle when installed, else the system store). One request
per connection at a time; a response is read in full (content-length or chunked, via h11).

Timeouts follow httpx's ``Timeout(timeout, connect=connect_timeout)``: waiting for a free
slot (``pool``), each write and each read (inactivity, not total) are bounded by
``timeout``; opening a connection (TCP + TLS) by ``connect_timeout``. Timeouts raise
:class:`PoolTimeout` / :class:`ConnectTimeout` / :class:`WriteTimeout` / :class:`ReadTimeout`
(all :class:`HTTPTimeout`); every other failure raises :class:`HTTPError` subclasses.

A pooled connection that fails before any response byte arrived (the peer closed it while
idle) is retried once on a fresh connection. Connections are closed on any error, on
``Connection: close`` (either side) and when idle longer than ``keepalive_expiry``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

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

_READ_SIZE = 65536


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


class _Conn:
    __slots__ = ("reader", "writer", "h11", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        return (now - self.idle_since < expiry and not self.reader.at_eof()
                and not self.writer.is_closing() and self.h11.our_state is h11.IDLE)

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - loop closed, transport gone: nothing left to release
            pass


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
        self._default_headers = default_headers or []
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._n_idle = 0
        self._active: set[_Conn] = set()
        self._slots = asyncio.Semaphore(max_connections)
        self._urls: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._closed = False

    # -- helpers ------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    def _split(self, url: str) -> tuple[tuple[str, str, int], bytes]:
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
        try:
            if scheme == "https":
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._ssl_context(), server_hostname=host, limit=_READ_SIZE)
            else:
                reader, writer = await asyncio.open_connection(host, port, limit=_READ_SIZE)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        return _Conn(reader, writer)

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
        key, target = self._split(url)
        all_headers = self._default_headers + headers
        all_headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        loop = asyncio.get_running_loop()
        phase: list[type[HTTPTimeout]] = [PoolTimeout]
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self._slots.acquire()
                try:
                    conn = self._checkout(key)
                    if conn is not None:
                        try:
                            return await self._exchange(key, conn, method, target, all_headers, body, deadline,
                                                        phase, True)
                        except _Stale:
                            pass  # the peer closed it while idle: one retry on a fresh connection
                    phase[0] = ConnectTimeout
                    deadline.reschedule(loop.time() + self.connect_timeout)
                    conn = await self._connect(key)
                    return await self._exchange(key, conn, method, target, all_headers, body, deadline,
                                                phase, False)
                finally:
                    self._slots.release()
        except TimeoutError:
            raise phase[0](_PHASE_NAMES[phase[0]]) from None

    async def _exchange(self, key: tuple[str, str, int], conn: _Conn, method: bytes, target: bytes,
                        headers: list[tuple[bytes, bytes]], body: bytes, deadline: asyncio.Timeout,
                        phase: list[type[HTTPTimeout]], reused: bool) -> Response:
        loop = asyncio.get_running_loop()
        h = conn.h11
        self._active.add(conn)
        ok = False
        got_bytes = False
        try:
            try:
                data = h.send(h11.Request(method=method, target=target, headers=headers))
                if body:
                    data += h.send(h11.Data(data=body))
                data += h.send(h11.EndOfMessage())
            except h11.LocalProtocolError as exc:
                raise RemoteProtocolError(f"invalid request: {exc}") from exc
            phase[0] = WriteTimeout
            deadline.reschedule(loop.time() + self.timeout)
            try:
                conn.writer.write(data)
                await _drain(conn.writer)
            except (OSError, ssl.SSLError, RuntimeError) as exc:
                err: HTTPError = WriteError(str(exc) or type(exc).__name__)
                raise (_Stale(err) if reused else err) from exc

            phase[0] = ReadTimeout
            status = 0
            resp_headers: list[tuple[bytes, bytes]] = []
            chunks: list[bytes] = []
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    raise RemoteProtocolError(str(exc)) from exc
                if event is h11.NEED_DATA:
                    deadline.reschedule(loop.time() + self.timeout)
                    try:
                        chunk = await conn.reader.read(_READ_SIZE)
                    except (OSError, ssl.SSLError) as exc:
                        rerr: HTTPError = ReadError(str(exc) or type(exc).__name__)
                        raise (_Stale(rerr) if reused and not got_bytes else rerr) from exc
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
            for name, value in resp_headers:
                if name == b"content-encoding":
                    content = _decode_body(value, content)
                    break
            response = Response(status, _decode_headers(resp_headers), content)
            ok = True
            return response
        finally:
            self._active.discard(conn)
            if ok and h.our_state is h11.DONE and h.their_state is h11.DONE:
                try:
                    h.start_next_cycle()
                except h11.LocalProtocolError:  # pragma: no cover
                    conn.close()
                else:
                    self._checkin(key, conn)
            else:
                conn.close()

    async def aclose(self) -> None:
        self._closed = True
        conns = [c for idle in self._idle.values() for c in idle] + list(self._active)
        self._idle.clear()
        self._n_idle = 0
        self._active.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                async with asyncio.timeout(1.0):
                    await conn.writer.wait_closed()
            except Exception:  # noqa: BLE001 - a peer that never answers the TLS close, a reset
                pass


async def _drain(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if transport.get_write_buffer_size() == 0 and not transport.is_closing():
        return  # the common case: the kernel took it all, no await needed
    await writer.drain()


_PHASE_NAMES = {
    PoolTimeout: "timed out waiting for a connection",
    ConnectTimeout: "timed out connecting",
    WriteTimeout: "timed out writing the request",
    ReadTimeout: "timed out reading the response",
}

