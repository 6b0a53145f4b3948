"""CDS: where each proxy sends traffic.

Sidecar: `local_app` (the service next to it) and one mTLS cluster per upstream, named by
the upstream's SNI, that presents the sidecar's own leaf and checks the server's SPIFFE ID.
Terminating gateway: one cluster per linked service, to its external addresses - EDS for
IPs, STRICT_DNS with every hostname (Consul resolves only one) - with TLS origination from
the gateway entry, matching the SNI against every SAN type (Consul #20360).
"""

from __future__ import annotations

from typing import Any

from xds.resources import awslambda
from xds.resources.common import ADS, TRUST_BUNDLE_SECRET, sds, spiffe_san_regex, typed
from xds.snapshot import LinkedService, ProxySnapshot

CONNECT_TIMEOUT = "5s"


def _eds(name: str) -> dict[str, Any]:
    return {"name": name, "type": "EDS", "eds_cluster_config": {"eds_config": ADS},
            "connect_timeout": CONNECT_TIMEOUT, "outlier_detection": {}}


def _mesh_tls(snap: ProxySnapshot, sni: str, namespace: str, service: str) -> dict[str, Any]:
    assert snap.inbound is not None
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            sni=sni,
            common_tls_context={
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificate_sds_secret_configs": [sds(snap.inbound.leaf.secret_name)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{
                            "san_type": "URI",
                            "matcher": {"safe_regex": {"regex": spiffe_san_regex(snap.trust_domain, namespace, service)}},
                        }],
                    },
                    "validation_context_sds_secret_config": sds(TRUST_BUNDLE_SECRET),
                },
            },
        ),
    }


def _origination_tls(linked: LinkedService) -> dict[str, Any] | None:
    tls = linked.tls
    if not tls.get("CAFile"):
        return None
    context: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": tls["CAFile"]}}}
    if tls.get("SNI"):
        context["validation_context"]["match_typed_subject_alt_names"] = [
            {"san_type": san, "matcher": {"exact": tls["SNI"]}} for san in ("DNS", "URI", "EMAIL", "IP_ADDRESS")
        ]
    if tls.get("CertFile"):
        context["tls_certificates"] = [{"certificate_chain": {"filename": tls["CertFile"]},
                                        "private_key": {"filename": tls["KeyFile"]}}]
    out = typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", common_tls_context=context)
    if tls.get("SNI"):
        out["sni"] = tls["SNI"]
    return {"name": "envoy.transport_sockets.tls", "typed_config": out}


def _linked_cluster(snap: ProxySnapshot, linked: LinkedService) -> dict[str, Any]:
    if linked.lambda_ is not None:
        return awslambda.cluster(linked.sni, linked.lambda_)
    if linked.hostnames:
        cluster: dict[str, Any] = {
            "name": linked.sni, "type": "STRICT_DNS", "connect_timeout": CONNECT_TIMEOUT,
            "dns_lookup_family": "V4_ONLY", "outlier_detection": {},
            "load_assignment": {"cluster_name": linked.sni, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host.rsplit(":", 1)[0],
                                                              "port_value": int(host.rsplit(":", 1)[1])}}}}
                for host in linked.hostnames
            ]}]},
        }
    else:
        cluster = _eds(linked.sni)
    tls = _origination_tls(linked)
    if tls is not None:
        cluster["transport_socket"] = tls
    return cluster


def clusters(snap: ProxySnapshot) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if snap.kind == "connect-proxy":
        out.append({
            "name": "local_app", "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
            "load_assignment": {"cluster_name": "local_app", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": snap.local_app_address, "port_value": snap.local_app_port}}}}]}]},
        })
        for up in snap.upstreams:
            if up.lambda_ is not None:
                out.append(awslambda.cluster(up.sni, up.lambda_))
                continue
            cluster = _eds(up.sni)
            cluster["transport_socket"] = _mesh_tls(snap, up.sni, up.namespace, up.name)
            out.append(cluster)
    else:
        out += [_linked_cluster(snap, linked) for linked in snap.linked]
    return sorted(out, key=lambda c: c["name"])
