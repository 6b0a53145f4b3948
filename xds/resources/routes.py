"""RDS: routes for the HTTP services a terminating gateway fronts, named by their SNI (as
Consul names them), the sidecar's inbound route (`public_listener`), and a sidecar's HTTP
upstreams. Inbound routes carry the compiled intentions (see authz.py)."""

from __future__ import annotations

from typing import Any

from xds.resources import authz, awslambda
from xds.snapshot import HTTP, ProxySnapshot


def route_config(name: str, cluster: str, auto_host_rewrite: bool, rbac: dict[str, Any] | None = None,
                 per_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster, "timeout": "15s"}
    if auto_host_rewrite:
        action["auto_host_rewrite"] = True
    vhost: dict[str, Any] = {"name": name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": action}]}
    if rbac is not None or per_filter:
        vhost["typed_per_filter_config"] = {**(rbac or {}), **(per_filter or {})}
    return {"name": name, "virtual_hosts": [vhost], "validate_clusters": True}


def routes(snap: ProxySnapshot) -> list[dict[str, Any]]:
    out = [route_config(up.sni, up.sni, False, per_filter=awslambda.per_route(up.lambda_) if up.lambda_ else None)
           for up in snap.upstreams if up.protocol == HTTP]
    if snap.inbound is not None and snap.inbound.protocol == HTTP:
        out.append(route_config("public_listener", "local_app", False, authz.per_route(snap, snap.inbound)))
    # a Lambda's route has no auto_host_rewrite: it conflicts with strip_any_host_port (Consul)
    out += [route_config(ls.sni, ls.sni, ls.lambda_ is None, authz.per_route(snap, ls.inbound),
                         awslambda.per_route(ls.lambda_) if ls.lambda_ else None)
            for ls in snap.linked if ls.inbound.protocol == HTTP]
    return sorted(out, key=lambda r: r["name"])
