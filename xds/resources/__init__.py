"""xDS resources as pure functions of a ProxySnapshot, one module per resource type."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from xds.resources import clusters, endpoints, listeners, routes, secrets
from xds.resources.common import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, to_message
from xds.snapshot import ProxySnapshot

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


def build_resources(snap: ProxySnapshot) -> dict[str, dict[str, Message]]:
    """Protos per type URL and name: what the cache serves."""
    out: dict[str, dict[str, Message]] = {}
    for type_url, items in resource_dicts(snap).items():
        out[type_url] = {item[NAME_FIELD.get(type_url, "name")]: to_message(type_url, item) for item in items}
    return out
