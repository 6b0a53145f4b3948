"""The Envoy bootstrap `terminus connect envoy` writes, like `consul connect envoy -bootstrap`:
node.id = the proxy's service ID, one static cluster to terminus's xDS port, and LDS/CDS
over ADS (state of the world or delta)."""

from __future__ import annotations

from typing import Any

XDS_CLUSTER = "local_agent"  # Consul's name for it


def bootstrap(
    *, proxy_id: str, cluster: str, grpc_host: str, grpc_port: int, admin_host: str, admin_port: int,
    token: str | None = None, delta: bool = True, namespace: str = "default", grpc_ca_file: str | None = None,
) -> dict[str, Any]:
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": XDS_CLUSTER}}
    if token:
        grpc_service["initial_metadata"] = [{"key": "x-consul-token", "value": token}]
    xds_cluster: dict[str, Any] = {}
    if grpc_ca_file:  # the xDS port is served over TLS: verify it with this CA
        xds_cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": grpc_host,
            "common_tls_context": {"validation_context": {"trusted_ca": {"filename": grpc_ca_file}}}}}
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "node": {"id": proxy_id, "cluster": cluster, "metadata": {"namespace": namespace, "partition": "default"}},
        "layered_runtime": {"layers": [{"name": "static_layer", "static_layer": {}}]},
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": grpc_host, "port_value": grpc_port}}}}]}]},
            **xds_cluster,
        }]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [grpc_service],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }
