"""The FastAPI application: Consul's HTTP API over a ControlPlane."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from gateway import __version__
from gateway.api.http import text
from gateway.api.routes import acl, catalog, config, connect, intentions, status, xds_status
from gateway.control import ControlPlane
from gateway.errors import TerminusError
from xds.auth import xds_authorizer


async def _tick(cp: ControlPlane) -> None:
    """Time-driven housekeeping: rotated-out CA roots leave the bundle when their leaves expire."""
    while True:
        await asyncio.sleep(60)
        try:
            await asyncio.to_thread(cp.ca.tick)
        except Exception:  # pragma: no cover - logged by the default handler; never stop ticking
            pass


async def _tick_xds(control: object) -> None:
    while True:
        await asyncio.sleep(60)
        control.tick()  # type: ignore[attr-defined]


def create_app(
    cp: ControlPlane, xds_addr: str | None = None, xds_tls: object | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """The HTTP API; with xds_addr, the xDS server runs on the same event loop. on_shutdown runs
    when the server stops, also on SIGTERM (after which uvicorn re-raises the signal, so code
    after uvicorn.run never runs)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cp.hub.bind(asyncio.get_running_loop())
        tasks = [asyncio.create_task(_tick(cp))]
        grpc_server = None
        if xds_addr:
            from xds.cache import SnapshotCache
            from xds.control import XDSControl
            from xds.server import start_xds_server

            cache = SnapshotCache()
            control = XDSControl(cp, cache)
            app.state.xds = control
            tasks.append(asyncio.create_task(control.run()))
            tasks.append(asyncio.create_task(_tick_xds(control)))
            grpc_server = await start_xds_server(cache, xds_addr, authorize=xds_authorizer(cp), tls=xds_tls)  # type: ignore[arg-type]
        yield
        for task in tasks:
            task.cancel()
        if grpc_server is not None:
            await grpc_server.stop(1)
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="terminus",
        version=__version__,
        description="Consul-compatible HTTP API for intentions, config entries, catalog and ACLs.",
        lifespan=lifespan,
    )
    app.state.cp = cp

    @app.exception_handler(TerminusError)
    async def _terminus_error(_: Request, exc: TerminusError) -> Response:
        # Consul answers errors as plain text; clients print the body as is.
        return text(exc.message, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return text(f"Request decode failed: {exc.errors()}", 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return text("method not allowed", 405)
        return text(str(exc.detail), exc.status_code)

    for module in (intentions, config, catalog, acl, connect, status, xds_status):
        app.include_router(module.router)
    # The hottest write, intention upserts, skips FastAPI's per-request route machinery: the
    # same endpoint (it takes the Request and returns a Response, so FastAPI has no parameter
    # to solve and no response to convert) is also a plain Starlette route, matched first. It
    # runs inside the same middleware and exception handlers, so every answer is the same
    # (tests/test_api_intentions.py compares the two); the FastAPI route stays for OpenAPI and
    # for every other method on the path (those match it, not this one).
    app.router.routes.insert(0, Route("/v1/connect/intentions/exact", intentions.put_exact, methods=["PUT"]))
    return app
