"""`/v1/acl`: bootstrap, tokens and policies."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.http import blocking, caller, consul_json, control, json_object, run

router = APIRouter(prefix="/v1/acl", tags=["acl"])


@router.put("/bootstrap")
async def bootstrap(request: Request) -> JSONResponse:
    return consul_json(await run(control(request).acl.bootstrap))


@router.post("/bootstrap", include_in_schema=False)
async def bootstrap_post(request: Request) -> JSONResponse:
    """Older clients POST here; same operation."""
    return await bootstrap(request)


@router.put("/token")
async def create_token(request: Request) -> JSONResponse:
    body = await json_object(request)
    return consul_json(await run(control(request).acl.create_token, caller(request), body))


@router.get("/token/self")
async def token_self(request: Request) -> JSONResponse:
    return consul_json(control(request).acl.self_token(caller(request)))


@router.get("/tokens")
async def list_tokens(request: Request) -> JSONResponse:
    index = await blocking(request, "acl_tokens")
    return consul_json(control(request).acl.list_tokens(caller(request)), index)


@router.get("/token/{accessor_id}")
async def read_token(request: Request, accessor_id: str) -> JSONResponse:
    index = await blocking(request, "acl_tokens")
    return consul_json(control(request).acl.read_token(caller(request), accessor_id), index)


@router.put("/token/{accessor_id}")
async def update_token(request: Request, accessor_id: str) -> JSONResponse:
    body = await json_object(request)
    return consul_json(await run(control(request).acl.update_token, caller(request), accessor_id, body))


@router.delete("/token/{accessor_id}")
async def delete_token(request: Request, accessor_id: str) -> JSONResponse:
    await run(control(request).acl.delete_token, caller(request), accessor_id)
    return consul_json(True)


@router.put("/policy")
async def create_policy(request: Request) -> JSONResponse:
    body = await json_object(request)
    return consul_json(await run(control(request).acl.create_policy, caller(request), body))


@router.get("/policies")
async def list_policies(request: Request) -> JSONResponse:
    index = await blocking(request, "acl_policies")
    return consul_json(control(request).acl.list_policies(caller(request)), index)


@router.get("/policy/name/{name}")
async def read_policy_by_name(request: Request, name: str) -> JSONResponse:
    return consul_json(control(request).acl.read_policy(caller(request), name=name))


@router.get("/policy/{policy_id}")
async def read_policy(request: Request, policy_id: str) -> JSONResponse:
    return consul_json(control(request).acl.read_policy(caller(request), policy_id=policy_id))


@router.put("/policy/{policy_id}")
async def update_policy(request: Request, policy_id: str) -> JSONResponse:
    body = await json_object(request)
    return consul_json(await run(control(request).acl.update_policy, caller(request), policy_id, body))


@router.delete("/policy/{policy_id}")
async def delete_policy(request: Request, policy_id: str) -> JSONResponse:
    await run(control(request).acl.delete_policy, caller(request), policy_id)
    return consul_json(True)
