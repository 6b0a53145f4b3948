"""xDS resources as pure functions of a ProxySnapshot, one module per resource type."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from xds.resources import clusters, endpoints, listeners, routes, secrets
from xds.resources.common import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, to_message
from xds.snapshot import HTTP, ProxySnapshot

NAME_FIELD = {ENDPOINT: "cluster_name"}


def resource_dicts(snap: ProxySnapshot) -> dict[str, list[dict[str, Any]]]:
    """Envoy-JSON dicts per type URL: what golden files record."""
    return {
        CLUSTER: clusters.clusters(snap),
        ENDPOINT: endpoints.endpoints(snap),
        SECRET: secrets.secrets(snap),
        LISTENER: listeners.listeners(snap),
        ROUTE: routes.routes(snap),
    }


def _messages(type_url: str, items: list[dict[str, Any]]) -> dict[str, Message]:
    return {item[NAME_FIELD.get(type_url, "name")]: to_message(type_url, item) for item in items}


BUILDERS = {CLUSTER: clusters.clusters, ENDPOINT: endpoints.endpoints, SECRET: secrets.secrets,
            LISTENER: listeners.listeners}


def build_resources(snap: ProxySnapshot) -> dict[str, dict[str, Message]]:
    """Protos per type URL and name: what the cache serves (the protos of resource_dicts)."""
    out = {type_url: _messages(type_url, build(snap)) for type_url, build in BUILDERS.items()}
    out[ROUTE] = routes.route_messages(snap)
    return out


def has_intention_listeners(snap: ProxySnapshot) -> bool:
    """Whether any listener carries intentions (network RBAC of a TCP inbound); HTTP inbound
    intentions ride on routes only (authz.py)."""
    if snap.inbound is not None and snap.inbound.protocol != HTTP:
        return True
    return any(ls.lambda_ is None and ls.inbound.protocol != HTTP for ls in snap.linked)


def rebuild_intention_resources(snap: ProxySnapshot, previous: dict[str, dict[str, Message]]) -> dict[str, dict[str, Message]]:
    """build_resources(snap) when only intentions changed since `previous` was built (from a
    snapshot that differs from `snap` only in intentions and the default policy): routes are
    rebuilt, listeners only where a TCP inbound has network RBAC, everything else is kept."""
    out = dict(previous)
    out[ROUTE] = routes.route_messages(snap)
    if has_intention_listeners(snap):
        out[LISTENER] = _messages(LISTENER, listeners.listeners(snap))
    return out
