"""`/v1/catalog`, `/v1/agent/service` and `/v1/health`: registrations and what sidecars dial."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.http import apply_filter, blocking, caller, consul_json, control, json_object, run

router = APIRouter(tags=["catalog"])
CATALOG = ("nodes", "services")
HEALTH = ("nodes", "services", "checks", "config:terminating-gateway")


@router.put("/v1/catalog/register")
async def catalog_register(request: Request) -> JSONResponse:
    body = await json_object(request)
    await run(control(request).catalog.register, caller(request), body)
    return consul_json(True)


@router.put("/v1/catalog/deregister")
async def catalog_deregister(request: Request) -> JSONResponse:
    body = await json_object(request)
    await run(control(request).catalog.deregister, caller(request), body)
    return consul_json(True)


@router.get("/v1/catalog/services")
async def catalog_services(request: Request) -> JSONResponse:
    index = await blocking(request, "services")
    return consul_json(control(request).catalog.services(caller(request)), index)


@router.get("/v1/catalog/service/{name}")
async def catalog_service(request: Request, name: str) -> JSONResponse:
    index = await blocking(request, *CATALOG)
    items = control(request).catalog.catalog_service(caller(request), name, request.query_params.get("tag"))
    return consul_json(apply_filter(request, items), index)


@router.get("/v1/catalog/nodes")
async def catalog_nodes(request: Request) -> JSONResponse:
    index = await blocking(request, "nodes")
    return consul_json(apply_filter(request, control(request).catalog.nodes(caller(request))), index)


@router.put("/v1/agent/service/register")
async def agent_register(request: Request) -> JSONResponse:
    body = await json_object(request)
    await run(control(request).catalog.agent_register, caller(request), body)
    return consul_json(None)


@router.get("/v1/agent/service/{service_id}")
async def agent_service(request: Request, service_id: str) -> JSONResponse:
    """One service by ID (Consul's agent endpoint; terminus serves every node's services)."""
    cp = control(request)
    index = await blocking(request, "services")
    found = cp.catalog.service_by_id(caller(request), service_id)
    return consul_json(found, index)


@router.put("/v1/agent/service/deregister/{service_id}")
async def agent_deregister(request: Request, service_id: str) -> JSONResponse:
    await run(control(request).catalog.agent_deregister, caller(request), service_id)
    return consul_json(None)


def _passing(request: Request) -> bool:
    raw = request.query_params.get("passing")
    return raw is not None and raw.lower() not in ("0", "false")


@router.get("/v1/health/service/{name}")
async def health_service(request: Request, name: str) -> JSONResponse:
    index = await blocking(request, *HEALTH)
    items = control(request).catalog.health_service(
        caller(request), name, _passing(request), tag=request.query_params.get("tag"))
    return consul_json(apply_filter(request, items), index)


@router.get("/v1/health/connect/{name}")
async def health_connect(request: Request, name: str) -> JSONResponse:
    """Proxies, native instances and the terminating gateways in front of `name`."""
    index = await blocking(request, *HEALTH)
    items = control(request).catalog.health_service(
        caller(request), name, _passing(request), connect=True, tag=request.query_params.get("tag"))
    return consul_json(apply_filter(request, items), index)
