"""LDS: the sidecar's public and upstream listeners, and the terminating gateway's listener.

Every inbound HTTP listener normalizes the path before authorization (normalize_path,
merge_slashes, escaped slashes unescaped and redirected): Consul shipped terminating
gateways without this until 2026, which let encoded paths slip past L7 deny rules.
Inbound HTTP routes come over RDS, because that is where their RBAC lives (authz.py).
"""

from __future__ import annotations

from typing import Any

from xds.resources import accesslogs, authz, awslambda
from xds.resources.common import ADS, downstream_tls, typed
from xds.snapshot import HTTP, Inbound, LambdaTarget, ProxySnapshot

ROUTER = {"name": "envoy.filters.http.router", "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")}


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _hcm(snap: ProxySnapshot, stat_prefix: str, http_filters: list[dict[str, Any]], route: dict[str, Any],
         inbound: bool, strip_any_host_port: bool = False) -> dict[str, Any]:
    config: dict[str, Any] = {
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "http_filters": [*http_filters, ROUTER],
        **route,
    }
    if logs := accesslogs.filter_logs(snap.access_logs):
        config["access_log"] = logs
    if strip_any_host_port:  # SigV4 signs Host; a port in it would not match (Consul PR #12681)
        config["strip_any_host_port"] = True
    if inbound:
        config.update(
            normalize_path=True,
            merge_slashes=True,
            path_with_escaped_slashes_action="UNESCAPE_AND_REDIRECT",
            forward_client_cert_details="APPEND_FORWARD",
            set_current_client_cert_details={"subject": True, "cert": True, "chain": True, "dns": True, "uri": True},
        )
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", **config),
    }


def _tcp_proxy(snap: ProxySnapshot, stat_prefix: str, cluster: str) -> dict[str, Any]:
    config: dict[str, Any] = {"stat_prefix": stat_prefix, "cluster": cluster}
    if logs := accesslogs.filter_logs(snap.access_logs):
        config["access_log"] = logs
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": typed("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", **config)}


def _listener(snap: ProxySnapshot, listener: dict[str, Any]) -> dict[str, Any]:
    """A listener with, if proxy-defaults asks for them, the logs of unmatched connections."""
    logs = accesslogs.listener_logs(snap.access_logs)
    return {**listener, "access_log": logs} if logs else listener


def _inbound_filters(snap: ProxySnapshot, inbound: Inbound, cluster: str, stat: str, rds: str,
                     lam: LambdaTarget | None = None) -> list[dict[str, Any]]:
    """L7: HCM with RBAC (rules on the route, over RDS) then the router; L4: network RBAC
    then tcp_proxy (an L7 intention there counts as deny, as in Consul). A Lambda: always
    L7, with the aws_lambda filter between RBAC and the router."""
    if lam is not None:
        route = {"rds": {"route_config_name": rds, "config_source": ADS}}
        return [_hcm(snap, stat, [authz.http_filter_fail_closed(), awslambda.http_filter(lam)], route, inbound=True,
                     strip_any_host_port=True)]
    if inbound.protocol == HTTP:
        route = {"rds": {"route_config_name": rds, "config_source": ADS}}
        return [_hcm(snap, stat, [authz.http_filter_fail_closed()], route, inbound=True)]
    return [authz.network_filter(snap, inbound), _tcp_proxy(snap, stat, cluster)]


def _sidecar(snap: ProxySnapshot) -> list[dict[str, Any]]:
    assert snap.inbound is not None
    out = [_listener(snap, {
        "name": f"public_listener:{snap.listen_address}:{snap.listen_port}",
        "address": _address(snap.listen_address, snap.listen_port),
        "traffic_direction": "INBOUND",
        "filter_chains": [{
            "transport_socket": downstream_tls(snap.inbound.leaf.secret_name),
            "filters": _inbound_filters(snap, snap.inbound, "local_app", "public_listener", "public_listener"),
        }],
    })]
    for up in snap.upstreams:
        if up.lambda_ is not None:  # direct invocation, allowed by intentions (see awslambda.py)
            filters = [_hcm(snap, f"upstream.{up.name}", [awslambda.http_filter(up.lambda_)],
                            {"rds": {"route_config_name": up.sni, "config_source": ADS}}, inbound=False,
                            strip_any_host_port=True)]
        elif up.protocol == HTTP:
            filters = [_hcm(snap, f"upstream.{up.name}", [], {"rds": {"route_config_name": up.sni, "config_source": ADS}},
                            inbound=False)]
        else:
            filters = [_tcp_proxy(snap, f"upstream.{up.name}", up.sni)]
        out.append(_listener(snap, {
            "name": f"{up.name}:{up.bind_address}:{up.bind_port}",
            "address": _address(up.bind_address, up.bind_port),
            "traffic_direction": "OUTBOUND",
            "filter_chains": [{"filters": filters}],
        }))
    return out


def _terminating_gateway(snap: ProxySnapshot) -> list[dict[str, Any]]:
    chains = []
    for linked in snap.linked:  # sorted by SNI: an unchanged regeneration does not churn the listener
        svc = linked.inbound.service
        chains.append({
            "filter_chain_match": {"server_names": [linked.sni]},
            "transport_socket": downstream_tls(linked.inbound.leaf.secret_name),
            "filters": _inbound_filters(snap, linked.inbound, linked.sni,
                                        f"upstream.{svc.name}.{svc.namespace}.default.{snap.datacenter}", linked.sni,
                                        linked.lambda_),
        })
    # Consul's catch-all: keeps the listener (and its health check) up; unknown SNIs are reset.
    chains.append({"filters": [
        {"name": "envoy.filters.network.sni_cluster",
         "typed_config": typed("envoy.extensions.filters.network.sni_cluster.v3.SniCluster")},
        _tcp_proxy(snap, f"terminating_gateway.{snap.proxy_service}", ""),
    ]})
    return [_listener(snap, {
        "name": f"default:{snap.listen_address}:{snap.listen_port}",
        "address": _address(snap.listen_address, snap.listen_port),
        "traffic_direction": "INBOUND",
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                              "typed_config": typed("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")}],
        "filter_chains": chains,
    })]


def listeners(snap: ProxySnapshot) -> list[dict[str, Any]]:
    return _sidecar(snap) if snap.kind == "connect-proxy" else _terminating_gateway(snap)
