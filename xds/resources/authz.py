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

from xds.rbac import _view, compile_rbac
from xds.resources.common import typed, typed_message
from xds.snapshot import Inbound, ProxySnapshot

HTTP_RBAC = "envoy.filters.http.rbac"


_COMPILED: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
_COMPILED_MAX = 20_000


def compiled(snap: ProxySnapshot, inbound: Inbound, http: bool) -> Any:
    """compile_rbac, memoized: its result depends on the destination only through the
    engine's merged view (which intention governs each source key), so destinations with the
    same view (e.g. all those a wildcard intention alone governs), or an unchanged destination
    rebuilt for an unrelated change, share one compiled (and never mutated) message.
    Compiled intentions are immutable (the engine makes a new one when a source changes);
    the key holds them, so their ids stay unique while the entry lives."""
    view = _view(inbound.intentions, inbound.service)
    held = tuple(sorted(((k, ci) for k, ci in view.items()), key=lambda kv: kv[0]))
    key = (tuple((k, id(ci)) for k, ci in held), snap.default_allow, snap.trust_domain, http,
           tuple(sorted(set(snap.datacenters))))
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit[1]
    msg = compile_rbac(
        inbound.intentions, destination=inbound.service, default_allow=snap.default_allow,
        trust_domain=snap.trust_domain, http=http, datacenters=snap.datacenters,
    )
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[key] = (held, msg)
    return msg


def http_filter_fail_closed() -> dict[str, Any]:
    """Used only when a route carries no RBAC of its own: then nothing is allowed."""
    return {"name": HTTP_RBAC, "typed_config": typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                                                     rules={"action": "ALLOW"})}


def per_route(snap: ProxySnapshot, inbound: Inbound) -> dict[str, Any]:
    return {HTTP_RBAC: typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
                             rbac={k: v for k, v in typed_message(compiled(snap, inbound, True)).items() if k != "@type"})}


def network_filter(snap: ProxySnapshot, inbound: Inbound) -> dict[str, Any]:
    return {"name": "envoy.filters.network.rbac", "typed_config": typed_message(compiled(snap, inbound, False))}
