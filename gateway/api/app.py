"""The FastAPI application: Consul's HTTP API over a ControlPlane."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import __version__
from gateway.api.http import text
from gateway.api.routes import acl, catalog, config, connect, intentions, status
from gateway.control import ControlPlane
from gateway.errors import TerminusError


async def _tick(cp: ControlPlane) -> None:
    """Time-driven housekeeping: rotated-out CA roots leave the bundle when their leaves expire."""
    while True:
        await asyncio.sleep(60)
        try:
            await asyncio.to_thread(cp.ca.tick)
        except Exception:  # pragma: no cover - logged by the default handler; never stop ticking
            pass


def create_app(cp: ControlPlane) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cp.hub.bind(asyncio.get_running_loop())
        ticker = asyncio.create_task(_tick(cp))
        yield
        ticker.cancel()

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

    for module in (intentions, config, catalog, acl, connect, status):
        app.include_router(module.router)
    return app
