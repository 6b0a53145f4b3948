"""`/v1/connect/intentions`: the exact, match, check and legacy UUID endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.http import apply_filter, blocking, caller, consul_json, control, json_object, run, write
from gateway.errors import InvalidInput
from gateway.intentions.request import HTTPRequest

router = APIRouter(prefix="/v1/connect/intentions", tags=["intentions"])
TABLE = "config:service-intentions"
FILTER_SELECTORS = frozenset({
    "Action", "Description", "DestinationNS", "DestinationName", "ID", "Meta", "Precedence",
    "SourceNS", "SourceName", "SourceType",
})


def _required(request: Request, name: str) -> str:
    values = request.query_params.getlist(name)
    if len(values) != 1 or not values[0]:
        raise InvalidInput(f"required query parameter '{name}' not set")
    return values[0]


@router.get("")
async def list_intentions(request: Request) -> JSONResponse:
    index = await blocking(request, TABLE)
    items = control(request).intentions.list(caller(request))
    return consul_json(apply_filter(request, items, FILTER_SELECTORS), index)


@router.post("")
async def create_intention(request: Request) -> JSONResponse:
    body = await json_object(request)
    new_id = await run(control(request).intentions.create_legacy, caller(request), body)
    return consul_json({"ID": new_id})


@router.get("/exact")
async def get_exact(request: Request) -> JSONResponse:
    source, destination = _required(request, "source"), _required(request, "destination")
    index = await blocking(request, TABLE)
    return consul_json(control(request).intentions.get_exact(caller(request), source, destination), index)


@router.put("/exact")
async def put_exact(request: Request) -> JSONResponse:
    source, destination = _required(request, "source"), _required(request, "destination")
    body = await json_object(request)
    await write(request, control(request).intentions.upsert_exact_txn(caller(request), source, destination, body))
    return consul_json(True)


@router.delete("/exact")
async def delete_exact(request: Request) -> JSONResponse:
    source, destination = _required(request, "source"), _required(request, "destination")
    fn = control(request).intentions.delete_exact_txn(caller(request), source, destination)
    if fn is not None:
        await write(request, fn)
    return consul_json(True)


@router.get("/match")
async def match(request: Request) -> JSONResponse:
    by = request.query_params.getlist("by")
    if len(by) != 1:
        raise InvalidInput("required query parameter 'by' not set")
    names = request.query_params.getlist("name")
    if not names:
        raise InvalidInput("required query parameter 'name' not set")
    index = await blocking(request, TABLE)
    return consul_json(control(request).intentions.match(caller(request), by[0], names), index)


@router.get("/check")
async def check(request: Request) -> JSONResponse:
    """Consul's `{"Allowed": bool}`, plus why: the reason, the matched intention and, for an
    L7 what-if (`?path=&method=&header=name:value`), the permission that decided."""
    source, destination = _required(request, "source"), _required(request, "destination")
    source_type = request.query_params.get("source-type", "consul")
    if source_type != "consul":
        raise InvalidInput(f"unsupported source-type {source_type!r}")
    q = request.query_params
    http = None
    if "path" in q or "method" in q or "header" in q:
        headers = []
        for raw in q.getlist("header"):
            name, sep, value = raw.partition(":")
            if not sep:
                raise InvalidInput(f"header {raw!r} must be name:value")
            headers.append((name.strip(), value.strip()))
        http = HTTPRequest.from_pairs(q.get("method", "GET").upper(), q.get("path", "/"), headers)
    decision = control(request).intentions.check(caller(request), source, destination, http)
    return consul_json(decision.explain())


@router.get("/{intention_id}")
async def get_by_id(request: Request, intention_id: str) -> JSONResponse:
    index = await blocking(request, TABLE)
    return consul_json(control(request).intentions.get_by_id(caller(request), intention_id), index)


@router.put("/{intention_id}")
async def update_by_id(request: Request, intention_id: str) -> JSONResponse:
    body = await json_object(request)
    await run(control(request).intentions.update_by_id, caller(request), intention_id, body)
    return consul_json({"ID": intention_id})


@router.delete("/{intention_id}")
async def delete_by_id(request: Request, intention_id: str) -> JSONResponse:
    await run(control(request).intentions.delete_by_id, caller(request), intention_id)
    return consul_json(True)
