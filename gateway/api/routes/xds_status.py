"""`/v1/internal/xds/proxies`: what each connected proxy was sent, ACKed, and rejected."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.acl.authorizer import permission_denied_message
from gateway.api.http import caller, consul_json
from gateway.errors import PermissionDenied

router = APIRouter(tags=["xds"])


@router.get("/v1/internal/xds/proxies")
async def proxies(request: Request) -> JSONResponse:
    who = caller(request)
    if not who.authorizer.operator_read():
        raise PermissionDenied(permission_denied_message(who.accessor_id, "operator:read", None))
    control = getattr(request.app.state, "xds", None)
    if control is None:
        return consul_json({})
    return consul_json({node: stats.to_dict() for node, stats in control.cache.all_stats().items()})
