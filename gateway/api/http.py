"""What every endpoint shares: tokens, bodies, blocking queries, filters and Consul's headers."""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
from collections.abc import Callable
from concurrent.futures import Future as ConcurrentFuture, ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.acl.resolver import Caller
from gateway.api.filter import compile_filter
from gateway.control import ControlPlane
from gateway.duration import parse_duration
from gateway.errors import InvalidInput
from gateway.store.store import Txn

T = TypeVar("T")
DEFAULT_WAIT, MAX_WAIT = 300.0, 600.0


def control(request: Request) -> ControlPlane:
    return request.app.state.cp


def token_of(request: Request) -> str | None:
    """X-Consul-Token, then `Authorization: Bearer`, then the legacy ?token= parameter."""
    token = request.headers.get("x-consul-token")
    if token:
        return token
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token") or None


def caller(request: Request) -> Caller:
    return control(request).acl_resolver.resolve(token_of(request))


async def json_body(request: Request) -> Any:
    """Consul clients (py-consul among them) send JSON without a Content-Type, so read raw bytes."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("Request decode failed: EOF")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"Request decode failed: {exc}") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("Request decode failed: expected a JSON object")
    return body


def parse_index(request: Request) -> int | None:
    raw = request.query_params.get("index")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"Invalid index: {raw!r}") from None
    return max(value, 0)


def wait_seconds(request: Request) -> float:
    """A blocking query's ?wait= (default 5 min, at most 10), plus Consul's jitter of up to
    wait/16 so that waiters do not wake in lockstep."""
    raw = request.query_params.get("wait")
    wait = min(parse_duration(raw), MAX_WAIT) if raw else DEFAULT_WAIT
    return wait + random.uniform(0, wait / 16)


async def blocking(request: Request, *tables: str) -> int:
    """Wait as a Consul blocking query does, then return the X-Consul-Index for these tables."""
    cp = control(request)
    min_index = parse_index(request)
    if min_index:
        await cp.hub.wait(lambda: cp.state.index_of(*tables), min_index, wait_seconds(request))
    return cp.state.index_of(*tables)


def consul_json(data: Any, index: int | None = None, status_code: int = 200) -> JSONResponse:
    headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    return JSONResponse(data, status_code=status_code, headers=headers)


def text(body: str, status_code: int) -> Response:
    return Response(body, status_code=status_code, media_type="text/plain; charset=utf-8")


def apply_filter(request: Request, items: list[Any], allowed: frozenset[str] | None = None) -> list[Any]:
    expression = request.query_params.get("filter")
    if not expression:
        return items
    predicate = compile_filter(expression, allowed)
    return [item for item in items if predicate(item)]


# Threads for blocking calls (store writes wait for their fsync). Group commit needs several:
# writers that arrive during a commit wait in Store.write and go into the next one together.
_WORKERS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="terminus-api")


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Store writes block on disk: run them off the event loop, in the caller's context.

    The thread reports back with one call_soon_threadsafe. (anyio's run_sync, what Starlette's
    run_in_threadpool uses, cost about 150 µs of CPU per call against about 50 µs here, and a
    write endpoint makes one call per request.)
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def report(done: ConcurrentFuture[T]) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, done)
        except RuntimeError:  # the loop is gone (shutdown): nobody is waiting any more
            pass

    _WORKERS.submit(contextvars.copy_context().run, fn, *args).add_done_callback(report)
    return await future


async def write(request: Request, fn: Callable[[Txn], T]) -> T:
    """Commit fn (a store write prepared on the event loop) and return its result once durable.

    No thread of ours waits for it: the store's committer runs it in its next group commit and
    reports back with one call_soon_threadsafe. The response is sent only after that: an
    acknowledged write is on disk and visible to every read that follows.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def report(job: Any) -> None:
        try:
            loop.call_soon_threadsafe(_settle_write, future, job)
        except RuntimeError:  # the loop is gone (shutdown): nobody is waiting any more
            pass

    control(request).store.submit(fn, report)
    return await future


def _settle_write(future: asyncio.Future[Any], job: Any) -> None:
    if future.cancelled():
        return
    if job.error is None:
        future.set_result(job.result)
    else:
        future.set_exception(job.error)


def _settle(future: asyncio.Future[T], done: ConcurrentFuture[T]) -> None:
    if future.cancelled():
        return
    error = done.exception()
    if error is None:
        future.set_result(done.result())
    else:
        future.set_exception(error)


def cas_param(request: Request) -> int | None:
    raw = request.query_params.get("cas")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"Request decode failed: invalid cas {raw!r}") from None
