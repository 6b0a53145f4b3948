"""Shared pieces of resource building: type URLs, dict -> proto, and the config sources.

Resources are written as plain dicts in Envoy's JSON shape (readable, and exactly what the
golden files show) and parsed into protos once, with every message type they can mention
imported here so that `@type` resolves.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

# Imported for their side effect: registering the types `@type` may name.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.aws_lambda.v3 import aws_lambda_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2  # noqa: F401
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_spiffe_validator_config_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

from xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET  # noqa: E402  (one definition of the type URLs)

MESSAGE_TYPES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}

ADS = {"ads": {}, "resource_api_version": "V3"}
TRUST_BUNDLE_SECRET = "spiffe-bundle"


def is_ip(value: str) -> bool:
    """An IP literal (endpoints go in as addresses; anything else is a hostname to resolve)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def typed_message(msg: Message) -> dict[str, Any]:
    """A proto built elsewhere (e.g. by the RBAC compiler), as a typed_config dict."""
    return {"@type": f"type.googleapis.com/{msg.DESCRIPTOR.full_name}",
            **json_format.MessageToDict(msg, preserving_proto_field_name=True)}


_PARSED: dict[tuple[str, str], Message] = {}
_PARSED_MAX = 20_000


def to_message(type_url: str, resource: dict[str, Any]) -> Message:
    """Dict -> proto, memoized by content: protobuf's JSON parser is pure Python and was most
    of a rebuild's cost, while many resources (routes carrying the same intentions, clusters,
    the trust bundle) are identical across proxies and across rebuilds. Cached messages are
    shared and must not be mutated."""
    key = (type_url, json.dumps(resource, sort_keys=True, separators=(",", ":")))
    msg = _PARSED.get(key)
    if msg is None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        msg = _PARSED[key] = json_format.ParseDict(resource, MESSAGE_TYPES[type_url](), ignore_unknown_fields=False)
    return msg


def sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": ADS}


def downstream_tls(leaf_secret: str) -> dict[str, Any]:
    """mTLS in: present the service's leaf, require a client certificate from the trust bundle."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            require_client_certificate=True,
            common_tls_context={
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificate_sds_secret_configs": [sds(leaf_secret)],
                "validation_context_sds_secret_config": sds(TRUST_BUNDLE_SECRET),
            },
        ),
    }


def spiffe_san_regex(trust_domain: str, namespace: str, service: str) -> str:
    """The server identity an upstream must present; the datacenter is wildcarded, as in Consul."""
    td = trust_domain.replace(".", r"\.")
    return f"^spiffe://{td}/ns/{namespace}/dc/[^/]+/svc/{service}$"
