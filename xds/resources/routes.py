"""RDS: routes for the HTTP services a terminating gateway fronts, named by their SNI (as
Consul names them), the sidecar's inbound route (`public_listener`), and a sidecar's HTTP
upstreams. Inbound routes carry the compiled intentions (see authz.py)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from xds.resources import authz, awslambda
from xds.resources.common import ROUTE, to_message
from xds.snapshot import HTTP, Inbound, LambdaTarget, ProxySnapshot


def route_config(name: str, cluster: str, auto_host_rewrite: bool, rbac: dict[str, Any] | None = None,
                 per_filter: dict[str, Any] | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": cluster, "timeout": "15s"}
    if auto_host_rewrite:
        action["auto_host_rewrite"] = True
    vhost: dict[str, Any] = {"name": name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": action}]}
    if rbac is not None or per_filter:
        vhost["typed_per_filter_config"] = {**(rbac or {}), **(per_filter or {})}
    return {"name": name, "virtual_hosts": [vhost], "validate_clusters": True}


# One route per (name, cluster, auto_host_rewrite, inbound-or-None, lambda): the inbound's
# intentions enter through the compiled RBAC message (authz.compiled, memoized by the
# engine's view), so only the few fields here need comparing.
_Spec = tuple[str, str, bool, Inbound | None, LambdaTarget | None]


def _specs(snap: ProxySnapshot) -> list[_Spec]:
    out: list[_Spec] = [(up.sni, up.sni, False, None, up.lambda_) for up in snap.upstreams if up.protocol == HTTP]
    if snap.inbound is not None and snap.inbound.protocol == HTTP:
        out.append(("public_listener", "local_app", False, snap.inbound, None))
    # a Lambda's route has no auto_host_rewrite: it conflicts with strip_any_host_port (Consul)
    out += [(ls.sni, ls.sni, ls.lambda_ is None, ls.inbound, ls.lambda_)
            for ls in snap.linked if ls.inbound.protocol == HTTP]
    return out


def _dict(snap: ProxySnapshot, spec: _Spec) -> dict[str, Any]:
    name, cluster, auto_host_rewrite, inbound, lam = spec
    return route_config(name, cluster, auto_host_rewrite,
                        authz.per_route(snap, inbound) if inbound is not None else None,
                        awslambda.per_route(lam) if lam else None)


def routes(snap: ProxySnapshot) -> list[dict[str, Any]]:
    return sorted((_dict(snap, spec) for spec in _specs(snap)), key=lambda r: r["name"])


_MESSAGES: dict[tuple[Any, ...], tuple[Any, Message]] = {}
_MESSAGES_MAX = 20_000


def route_messages(snap: ProxySnapshot) -> dict[str, Message]:
    """The protos of routes(snap) by name, equal to to_message of each dict, without building
    the dict (and its JSON key) again when the route's inputs are unchanged: the hot path of
    an intention change, which only touches routes. Cached messages are shared: never mutate."""
    out: dict[str, Message] = {}
    for spec in sorted(_specs(snap), key=lambda s: s[0]):
        name, cluster, auto_host_rewrite, inbound, lam = spec
        rbac = authz.compiled(snap, inbound, True) if inbound is not None else None
        key = (name, cluster, auto_host_rewrite, id(rbac), lam)
        hit = _MESSAGES.get(key)
        if hit is not None and hit[0] is rbac:
            out[name] = hit[1]
            continue
        msg = to_message(ROUTE, _dict(snap, spec))
        if len(_MESSAGES) >= _MESSAGES_MAX:
            _MESSAGES.clear()
        _MESSAGES[key] = (rbac, msg)
        out[name] = msg
    return out
