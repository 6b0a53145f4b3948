"""A local AWS Lambda Invoke endpoint for development and tests.

moto's Lambda echoes any function name, cannot raise function errors and ignores the region
(test-oracles.md §2.1), so terminus needs its own stand-in to prove what reached a function.
This one speaks the Invoke wire protocol closely enough for boto3 and Envoy's aws_lambda filter:

* ``POST /2015-03-31/functions/{name|arn|partial-arn}[:qualifier]/invocations[?Qualifier=...]``
* SigV4 verified against configured credentials before anything else (403 with AWS's
  ``x-amzn-ErrorType``), then the function looked up (404 ``ResourceNotFoundException``)
* ``X-Amz-Invocation-Type``: ``RequestResponse`` (200 + JSON result), ``Event`` (202, runs in
  the background), ``DryRun`` (204)
* a handler exception gives 200 with ``X-Amz-Function-Error: Unhandled`` and the Python
  runtime's ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` body
* ``GET /_terminus/invocations``: per-function count of handler calls, so a test can prove a
  rejected request never reached the function

It is a raw asyncio HTTP/1.1 server (h11 for the framing) so it sees the request target
byte for byte, which the signature covers. Handlers run in a thread pool: a slow or blocking
handler never stalls the event loop or other invocations.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import ipaddress
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import h11

from gateway.awslambda.sigv4 import Credentials, verify

__all__ = ["LambdaContext", "LocalLambda", "load_handler", "run_in_thread"]

log = logging.getLogger(__name__)

Handler = Callable[[Any, "LambdaContext"], Any]

INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"
COUNTERS_PATH = "/_terminus/invocations"
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # AWS: 6 MB request and response for RequestResponse
MAX_HEADER_BYTES = 64 * 1024
LATEST = "$LATEST"


def load_handler(spec: str | Handler) -> Handler:
    """``"package.module:function"`` (or Lambda's ``"module.function"``) → the callable."""
    if callable(spec):
        return spec
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"handler must look like 'module:function', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"handler {spec!r} is not callable")
    return obj


@dataclass
class LambdaContext:
    """The subset of the Python runtime's context object that handlers actually use."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    deadline: float  # time.monotonic() at which the invocation times out
    function_version: str = LATEST
    memory_limit_in_mb: str = "128"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class _Function:
    name: str
    handler: Handler
    timeout: float
    invocations: int = 0


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_error(status: int, error_type: str, message: str, *, key: str = "Message") -> _Response:
    body = json.dumps({"Type": "User", key: message}).encode()
    return _Response(status, body, [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BodyTooLarge(Exception):
    pass


class LocalLambda:
    """A local Lambda Invoke endpoint.

    ``functions`` maps a function name to a handler (``"module:function"`` or a callable);
    handlers are imported here, so a bad spec fails at construction, not on first call.
    ``credentials`` are the key pairs whose SigV4 signatures are accepted; ``None`` turns
    verification off (development only — every request is then anonymous). ``clock`` lets
    tests move "now" for the signature-expiry check.
    """

    def __init__(
        self,
        functions: Mapping[str, str | Handler],
        *,
        credentials: Iterable[Credentials] | None = None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        timeout: float = 30.0,
        max_workers: int = 16,
        max_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self.max_skew = max_skew
        self._clock = clock or (lambda: datetime.now(UTC))
        self._functions = {name: _Function(name, load_handler(spec), timeout) for name, spec in functions.items()}
        self._credentials: dict[str, Credentials] | None = (
            None if credentials is None else {c.access_key: c for c in credentials}
        )
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._lock = threading.Lock()
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def invocations(self) -> dict[str, int]:
        """How many times each handler was actually called."""
        with self._lock:
            return {f.name: f.invocations for f in self._functions.values()}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (loopback only: handlers are arbitrary local code); port 0 picks one."""
        if not _is_loopback(host):
            raise ValueError(f"the local Lambda only binds loopback addresses, not {host!r}")
        if self._server is not None:
            raise RuntimeError("already started")
        self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="local-lambda")
        self._server = await asyncio.start_server(self._serve_connection, host, port, limit=MAX_HEADER_BYTES)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        log.info("local lambda listening on %s with functions %s", self.endpoint_url, sorted(self._functions))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, drop idle connections, wait for running handlers (Event ones too)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._background:
            await asyncio.wait(list(self._background), timeout=grace)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    # -- HTTP/1.1 ------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                event = await self._next_event(conn, reader, writer)
                if not isinstance(event, h11.Request):
                    break
                try:
                    body = await self._read_body(conn, reader, writer, event)
                except _BodyTooLarge:
                    resp = _json_error(
                        413, "RequestTooLargeException",
                        f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation",
                        key="message",
                    )
                    resp.headers.append(("Connection", "close"))
                    await self._send(conn, writer, resp)
                    break
                try:
                    resp = await self._dispatch(event, body)
                except Exception:  # a bug here must not kill the connection silently
                    log.exception("local lambda: internal error")
                    resp = _json_error(500, "ServiceException", "internal error in the local Lambda")
                await self._send(conn, writer, resp)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    await self._send(conn, writer, _Response(
                        exc.error_status_hint, b"", [("Connection", "close")]))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): close the connection below
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _next_event(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            data = await reader.read(65536)
            conn.receive_data(data)

    async def _read_body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: h11.Request
    ) -> bytes:
        for name, value in request.headers:
            if name == b"content-length" and int(value) > MAX_SYNC_PAYLOAD:
                raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(conn, reader, writer)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_SYNC_PAYLOAD:
                    raise _BodyTooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # ConnectionClosed mid-body
                raise ConnectionError("client closed the connection mid-body")

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: _Response) -> None:
        headers = [(k, v) for k, v in resp.headers]
        if resp.status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(resp.body))))
        headers.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        data = conn.send(h11.Response(status_code=resp.status, headers=headers)) or b""
        if resp.body:
            data += conn.send(h11.Data(data=resp.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        writer.write(data)
        await writer.drain()

    # -- Lambda API ----------------------------------------------------------------------------

    async def _dispatch(self, request: h11.Request, body: bytes) -> _Response:
        method = request.method.decode("ascii")
        target = request.target.decode("utf-8", "surrogateescape")
        path, _, query = target.partition("?")
        request_id = str(uuid.uuid4())
        if path == COUNTERS_PATH and method == "GET":
            resp = _Response(200, json.dumps(self.invocations()).encode(), [("Content-Type", "application/json")])
        elif path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX) and method == "POST":
            headers = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in request.headers]
            resp = await self._invoke(path, query, headers, body, target, request_id)
        else:
            resp = _json_error(404, "UnknownOperationException", f"Unknown operation {method} {path}", key="message")
        resp.headers.append(("x-amzn-RequestId", request_id))
        return resp

    def _authenticate(self, target: str, headers: list[tuple[str, str]], body: bytes) -> _Response | None:
        if self._credentials is None:
            return None
        error = verify(
            "POST", target, headers, body, self._credentials,
            service="lambda", region=self.region, now=self._clock(), max_skew=self.max_skew,
        )
        if error is None:
            return None
        # Errors raised by AWS's front end before the Lambda service use a lower-case "message".
        return _json_error(403, error.code, error.message, key="message")

    def _resolve(self, raw_name: str, query: str) -> tuple[str, str | None, _Response | None]:
        """Function name and qualifier from a name, ``name:qual``, partial or full ARN."""
        name = unquote(raw_name)
        qualifier: str | None = None
        parts = name.split(":")
        if name.startswith("arn:"):
            # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
            if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
                return name, None, _json_error(400, "ValidationException", f"Invalid function ARN: {name}")
            region, account = parts[3], parts[4]
            name, qualifier = parts[6], (parts[7] if len(parts) == 8 else None)
            if region != self.region or account != self.account_id:
                arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
                return name, qualifier, _json_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        elif len(parts) in (3, 4) and parts[1] == "function":  # <account>:function:<name>[:<qualifier>]
            account, name, qualifier = parts[0], parts[2], (parts[3] if len(parts) == 4 else None)
            if account != self.account_id:
                arn = f"arn:aws:lambda:{self.region}:{account}:function:{name}"
                return name, qualifier, _json_error(404, "ResourceNotFoundException", f"Function not found: {arn}")
        elif len(parts) == 2:
            name, qualifier = parts
        for item in query.split("&"):
            key, _, value = item.partition("=")
            if key == "Qualifier" and value:
                qualifier = unquote(value)
        return name, qualifier, None

    async def _invoke(
        self, path: str, query: str, headers: list[tuple[str, str]], body: bytes, target: str, request_id: str
    ) -> _Response:
        denied = self._authenticate(target, headers, body)
        if denied is not None:
            return denied
        name, qualifier, failed = self._resolve(path[len(INVOKE_PREFIX): -len(INVOKE_SUFFIX)], query)
        if failed is not None:
            return failed
        fn = self._functions.get(name)
        if fn is None:
            return _json_error(404, "ResourceNotFoundException", f"Function not found: {self.function_arn(name, qualifier)}")

        lowered = {n.lower(): v for n, v in headers}
        invocation_type = lowered.get("x-amz-invocation-type", "RequestResponse").strip() or "RequestResponse"
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return _json_error(
                400, "InvalidParameterValueException",
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
            )
        try:
            event = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _json_error(400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}")
        if invocation_type == "DryRun":
            return _Response(204)

        context = LambdaContext(
            function_name=fn.name,
            invoked_function_arn=self.function_arn(fn.name, qualifier),
            aws_request_id=request_id,
            deadline=time.monotonic() + fn.timeout,
            log_group_name=f"/aws/lambda/{fn.name}",
            log_stream_name=f"{datetime.now(UTC):%Y/%m/%d}/[{LATEST}]{uuid.uuid4().hex}",
            client_context=_client_context(lowered.get("x-amz-client-context")),
        )
        run = asyncio.ensure_future(self._run(fn, event, context))
        if invocation_type == "Event":
            self._background.add(run)
            run.add_done_callback(self._background.discard)
            return _Response(202, b"", [("Content-Type", "application/json")])
        payload, function_error = await run
        out = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", LATEST)]
        if function_error:
            out.append(("X-Amz-Function-Error", function_error))
        return _Response(200, payload, out)

    async def _run(self, fn: _Function, event: Any, context: LambdaContext) -> tuple[bytes, str | None]:
        """Call the handler in the pool; AWS's timeout and error shapes on failure."""
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        with self._lock:
            fn.invocations += 1
        future = loop.run_in_executor(self._executor, _call_handler, fn.handler, event, context)
        try:
            return await asyncio.wait_for(asyncio.shield(future), fn.timeout)
        except TimeoutError:
            # The thread cannot be killed; it finishes in the background and its result is dropped.
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            msg = f"{stamp} {context.aws_request_id} Task timed out after {fn.timeout:.2f} seconds"
            return json.dumps({"errorMessage": msg}).encode(), "Unhandled"


def _client_context(header: str | None) -> Any:
    """X-Amz-Client-Context is base64 JSON {client, custom, env}, as the mobile SDKs send it."""
    if not header:
        return None
    try:
        data = json.loads(base64.b64decode(header, validate=True))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict):
        return None
    return SimpleNamespace(client=data.get("client"), custom=data.get("custom"), env=data.get("env"))


def _call_handler(handler: Handler, event: Any, context: LambdaContext) -> tuple[bytes, str | None]:
    """Runs in a worker thread: call, then marshal the result or the exception like the runtime."""
    try:
        result = handler(event, context)
    except Exception as exc:  # noqa: BLE001 - every handler exception is a function error
        frames = traceback.extract_tb(exc.__traceback__)[1:]  # drop this wrapper's frame
        body = {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": context.aws_request_id,
            "stackTrace": traceback.format_list(frames),
        }
        return json.dumps(body).encode(), "Unhandled"
    try:
        return json.dumps(result).encode(), None
    except (TypeError, ValueError) as exc:
        body = {
            "errorMessage": f"Unable to marshal response: {exc}",
            "errorType": "Runtime.MarshalError",
            "requestId": context.aws_request_id,
            "stackTrace": [],
        }
        return json.dumps(body).encode(), "Unhandled"


@contextlib.contextmanager
def run_in_thread(
    functions: Mapping[str, str | Handler],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Iterator[LocalLambda]:
    """Run a :class:`LocalLambda` on its own event loop thread for synchronous tests and tools.

    The loop, server, pool and thread are all gone when the ``with`` block exits.
    """
    lam = LocalLambda(functions, **kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-lambda-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(lam.start(host, port), loop).result(30)
        yield lam
    finally:
        try:
            asyncio.run_coroutine_threadsafe(lam.stop(), loop).result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
