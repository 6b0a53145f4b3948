"""EDS: one ClusterLoadAssignment per EDS cluster. Localities carry a weight, which gRPC's
xDS client requires (an unweighted locality is dropped)."""

from __future__ import annotations

from typing import Any

from xds.snapshot import Endpoint, ProxySnapshot


def assignment(cluster: str, endpoints: tuple[Endpoint, ...], region: str) -> dict[str, Any]:
    return {
        "cluster_name": cluster,
        "endpoints": [{
            "locality": {"region": region},
            "load_balancing_weight": 1,
            "lb_endpoints": [
                {
                    "endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}},
                    "health_status": "HEALTHY" if e.healthy else "UNHEALTHY",
                    "load_balancing_weight": max(1, min(e.weight, 128)),
                }
                for e in endpoints
            ],
        }] if endpoints else [],
    }


def endpoints(snap: ProxySnapshot) -> list[dict[str, Any]]:
    out = [assignment(up.sni, up.endpoints, snap.datacenter) for up in snap.upstreams if up.lambda_ is None]
    out += [assignment(ls.sni, ls.endpoints, snap.datacenter) for ls in snap.linked
            if not ls.hostnames and ls.lambda_ is None]
    return sorted(out, key=lambda a: a["cluster_name"])
