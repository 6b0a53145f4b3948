"""Where intentions reach Envoy.

HTTP: the listener's RBAC filter holds only a fail-closed base (an allow-list with no
policies: deny everything), and the compiled intentions ride on the route configuration
(`typed_per_filter_config` on the virtual host, RBACPerRoute). An intention change is then
an RDS update: it applies to the next request, also on open keep-alive connections, and
never rewrites or drains a listener (Consul puts RBAC in LDS, so every change drains).
TCP: the network RBAC filter, in the listener; a change applies to new connections, as
Consul specifies for L4 intentions.
"""

from __future__ import annotations

from typing import Any

from xds.rbac import compile_rbac
from xds.resources.common import typed, typed_message
from xds.snapshot import Inbound, ProxySnapshot

HTTP_RBAC = "envoy.filters.http.rbac"


def compiled(snap: ProxySnapshot, inbound: Inbound, http: bool) -> Any:
    return compile_rbac(
        inbound.intentions, destination=inbound.service, default_allow=snap.default_allow,
        trust_domain=snap.trust_domain, http=http, datacenters=snap.datacenters,
    )


def http_filter_fail_closed() -> dict[str, Any]:
    """Used only when a route carries no RBAC of its own: then nothing is allowed."""
    return {"name": HTTP_RBAC, "typed_config": typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                                                     rules={"action": "ALLOW"})}


def per_route(snap: ProxySnapshot, inbound: Inbound) -> dict[str, Any]:
    return {HTTP_RBAC: typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
                             rbac={k: v for k, v in typed_message(compiled(snap, inbound, True)).items() if k != "@type"})}


def network_filter(snap: ProxySnapshot, inbound: Inbound) -> dict[str, Any]:
    return {"name": "envoy.filters.network.rbac", "typed_config": typed_message(compiled(snap, inbound, False))}
