"""`/v1/status` and `/v1/agent/self`: enough for clients that probe the agent first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway import __version__
from gateway.api.http import consul_json, control

router = APIRouter(tags=["status"])


@router.get("/v1/status/leader")
async def leader(request: Request) -> JSONResponse:
    cfg = control(request).config
    return consul_json(f"{cfg.bind_addr}:8300")


@router.get("/v1/status/peers")
async def peers(request: Request) -> JSONResponse:
    cfg = control(request).config
    return consul_json([f"{cfg.bind_addr}:8300"])


@router.get("/v1/agent/self")
async def agent_self(request: Request) -> JSONResponse:
    cp = control(request)
    cfg = cp.config
    return consul_json({
        "Config": {
            "Datacenter": cfg.datacenter,
            "PrimaryDatacenter": cfg.primary_datacenter or cfg.datacenter,
            "NodeName": cp.catalog.node_name,
            "NodeID": (cp.state.get("nodes", (cp.catalog.node_name,)) or {}).get("ID", ""),
            "Server": True,
            "Version": __version__,
            "Revision": "terminus",
        },
        "DebugConfig": {
            "ACLsEnabled": cfg.acl_enabled,
            "ACLResolverSettings": {"ACLDefaultPolicy": cfg.acl_default_policy},
            "DefaultIntentionPolicy": cfg.default_intention_policy,
        },
        "Member": {"Name": cp.catalog.node_name, "Addr": cfg.bind_addr, "Status": 1},
        "Meta": {},
    })


@router.get("/v1/agent/metrics")
async def agent_metrics(request: Request) -> JSONResponse:
    """Consul's JSON metrics shape; counters for the store and the intention index."""
    import datetime

    cp = control(request)
    gauges = [
        {"Name": "terminus.state.index", "Value": cp.state.index, "Labels": {}},
        {"Name": "terminus.intentions.compiled", "Value": len(cp.engine), "Labels": {}},
    ]
    counters = [
        {"Name": f"terminus.store.{name}", "Count": value, "Sum": value, "Labels": {}}
        for name, value in cp.store.stats.items()
    ]
    return consul_json({
        "Timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        "Gauges": gauges, "Points": [], "Counters": counters, "Samples": [],
    })
