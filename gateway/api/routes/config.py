"""`/v1/config`: config entries of every supported kind."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.http import apply_filter, blocking, caller, cas_param, consul_json, control, json_object, run

router = APIRouter(prefix="/v1/config", tags=["config"])


@router.put("")
async def apply(request: Request) -> JSONResponse:
    body = await json_object(request)
    applied = await run(control(request).config_entries.apply, caller(request), body, cas_param(request))
    return consul_json(applied)


@router.get("/{kind}")
async def list_entries(request: Request, kind: str) -> JSONResponse:
    cp = control(request)
    cp.config_entries.check_kind(kind)
    index = await blocking(request, f"config:{kind}")
    return consul_json(apply_filter(request, cp.config_entries.list(caller(request), kind)), index)


@router.get("/{kind}/{name}")
async def get_entry(request: Request, kind: str, name: str) -> JSONResponse:
    cp = control(request)
    cp.config_entries.check_kind(kind)
    index = await blocking(request, f"config:{kind}")
    q = request.query_params
    return consul_json(cp.config_entries.get(caller(request), kind, name, q.get("ns", ""), q.get("partition", "")), index)


@router.delete("/{kind}/{name}")
async def delete_entry(request: Request, kind: str, name: str) -> JSONResponse:
    q = request.query_params
    deleted = await run(
        control(request).config_entries.delete, caller(request), kind, name, q.get("ns", ""), q.get("partition", ""),
        cas_param(request),
    )
    # Consul answers `true` (or the cas outcome); py-consul's delete(cas=) parses the body as JSON
    return consul_json(deleted)
