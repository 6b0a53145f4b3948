"""`/v1/internal/xds/proxies`: what each connected proxy was sent, ACKed, and rejected
(with Envoy's error text), so a NACKed config is visible without reading proxy logs."""

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
    cache = control.cache
    out = {}
    for node, stats in cache.all_stats().items():
        item = stats.to_dict()
        item["rejected"] = [n.to_dict() for n in cache.nacks(node)]  # the last errors Envoy reported
        out[node] = item
    return consul_json(out)
