"""State -> ProxySnapshot: what one proxy needs, read from the catalog, config entries,
intentions and the CA. Proxies are identified by node.id = their catalog service ID,
as `consul connect envoy -proxy-id` does."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from gateway.awslambda.config import lambda_config, lambda_endpoint
from gateway.control import ControlPlane
from gateway.identity.sni import service_sni
from gateway.intentions.engine import ServiceName
from xds.resources.common import is_ip
from xds.snapshot import (
    HTTP, HTTP_PROTOCOLS, TCP, AccessLogs, Endpoint, Inbound, LambdaTarget, Leaf, LinkedService, ProxySnapshot, Upstream,
)

# Where the TLS to AWS's Invoke endpoint is verified from: the first system bundle present.
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def find_proxy(cp: ControlPlane, node_id: str) -> dict[str, Any] | None:
    """The catalog service with this ID (any node), if it is a proxy kind terminus configures."""
    for key in sorted(cp.state.services_by_id.get(node_id, ())):
        svc = cp.state.tables["services"][key]
        if svc.get("Kind") in ("connect-proxy", "terminating-gateway"):
            return svc
    return None


def protocol_of(cp: ControlPlane, service: str, namespace: str = "default") -> str:
    """service-defaults Protocol, else proxy-defaults Config.protocol, else tcp (Consul's order)."""
    entry = cp.state.config_entry("service-defaults", service, namespace)
    proto = (entry or {}).get("Protocol") or ""
    if not proto:
        global_entry = cp.state.config_entry("proxy-defaults", "global")
        proto = str(((global_entry or {}).get("Config") or {}).get("protocol", ""))
    proto = proto.lower()
    return HTTP if proto in HTTP_PROTOCOLS else TCP


def access_logs_of(cp: ControlPlane) -> AccessLogs | None:
    """proxy-defaults AccessLogs when enabled: Consul applies them to every proxy it configures."""
    logs = (cp.state.config_entry("proxy-defaults", "global") or {}).get("AccessLogs") or {}
    if not logs.get("Enabled"):
        return None
    return AccessLogs(bool(logs.get("DisableListenerLogs")), logs.get("Type") or "", logs.get("Path") or "",
                      logs.get("JSONFormat") or "", logs.get("TextFormat") or "")


def _address(cp: ControlPlane, svc: dict[str, Any]) -> str:
    if svc.get("Address"):
        return svc["Address"]
    node = cp.state.get("nodes", (svc["Node"],)) or {}
    return node.get("Address") or "127.0.0.1"


def _healthy(cp: ControlPlane, svc: dict[str, Any]) -> bool:
    """Consul: any critical check (node or service) makes an endpoint unhealthy."""
    return not any(
        chk.get("ServiceID") in ("", svc["ID"]) and chk["Status"] == "critical" for chk in cp.state.node_checks(svc["Node"])
    )


def _endpoints(cp: ControlPlane, instances: list[dict[str, Any]]) -> tuple[Endpoint, ...]:
    out = {Endpoint(_address(cp, s), int(s.get("Port") or 0), _healthy(cp, s)) for s in instances}
    return tuple(sorted(out, key=lambda e: (e.address, e.port)))


def _leaf(cp: ControlPlane, service: str, namespace: str) -> Leaf:
    leaf = cp.ca.leaf(service, namespace)
    return Leaf(service, namespace, leaf.cert_pem, leaf.key_pem)


def _inbound(cp: ControlPlane, service: str, namespace: str) -> Inbound:
    name = ServiceName(service, namespace)
    return Inbound(name, protocol_of(cp, service, namespace), tuple(cp.engine.for_destination(name)), _leaf(cp, service, namespace))


def lambda_target(cp: ControlPlane, service: str, namespace: str = "default") -> LambdaTarget | None:
    """The service's Lambda function (service-defaults Meta keys or builtin/aws/lambda), with the
    Invoke endpoint as the control plane's environment says (AWS_ENDPOINT_URL_LAMBDA, ...)."""
    cfg = lambda_config(cp.state.config_entry("service-defaults", service, namespace))
    if cfg is None:
        return None
    ep = lambda_endpoint(cfg.region)
    ca = next((p for p in SYSTEM_CA_BUNDLES if os.path.exists(p)), "") if ep.tls else ""
    return LambdaTarget(cfg.arn, cfg.payload_passthrough, cfg.invocation_mode, ep.host, ep.port, ep.tls, ep.sni, ca)


def may_invoke_directly(cp: ControlPlane, source: ServiceName, destination: ServiceName) -> bool:
    """Source-side gate for a sidecar that invokes a Lambda itself: an L4 allow, or an L7
    intention (whose permissions the sidecar cannot enforce: Lambda sees no client identity,
    so an L7 intention is treated as allowing the whole function)."""
    decision = cp.engine.decide(source, destination)
    return decision.allowed or bool(decision.intention is not None and decision.intention.permissions)


def build_snapshot(cp: ControlPlane, node_id: str) -> ProxySnapshot | None:
    svc = find_proxy(cp, node_id)
    if svc is None:
        return None
    ns = svc.get("Namespace") or "default"
    dc = cp.config.datacenter
    td = cp.ca.trust_domain
    common = dict(
        node_id=node_id, kind=svc["Kind"], proxy_service=svc["Service"], namespace=ns, datacenter=dc,
        trust_domain=td, roots_pem="".join(r.root_cert_pem for r in cp.ca.published_roots()),
        default_allow=cp.engine.default_allow, datacenters=(dc,),
        listen_address=_address(cp, svc), listen_port=int(svc.get("Port") or 0), access_logs=access_logs_of(cp),
    )
    if svc["Kind"] == "connect-proxy":
        proxy = svc.get("Proxy") or {}
        dest = proxy["DestinationServiceName"]
        upstreams = []
        for up in proxy.get("Upstreams") or ():
            uname, uns = up["DestinationName"], up.get("DestinationNamespace") or "default"
            udc = up.get("Datacenter") or dc
            upstream = Upstream(
                name=uname, namespace=uns, datacenter=udc,
                bind_address=up.get("LocalBindAddress") or "127.0.0.1", bind_port=int(up["LocalBindPort"]),
                protocol=protocol_of(cp, uname, uns),
                sni=service_sni(uname, None, uns, "default", udc, td),
                endpoints=_endpoints(cp, cp.catalog.connect_instances(uname)),
            )
            lam = lambda_target(cp, uname, uns) if udc == dc else None
            if lam is not None:
                if cp.catalog.gateways_for(uname, uns):
                    upstream = replace(upstream, protocol=HTTP)  # through the gateway, which invokes it
                elif may_invoke_directly(cp, ServiceName(dest, ns), ServiceName(uname, uns)):
                    upstream = replace(upstream, protocol=HTTP, endpoints=(), lambda_=lam)
                else:
                    continue  # intentions deny: no listener, no cluster, no way to it through this proxy
            upstreams.append(upstream)
        return ProxySnapshot(
            **common, inbound=_inbound(cp, dest, ns),
            local_app_address=proxy.get("LocalServiceAddress") or "127.0.0.1",
            local_app_port=int(proxy.get("LocalServicePort") or 0),
            upstreams=tuple(sorted(upstreams, key=lambda u: (u.bind_port, u.name))),
        )
    linked = []
    for link in cp.catalog.linked_services(svc["Service"]):
        name, lns = link["Service"], link.get("Namespace") or "default"
        lam = lambda_target(cp, name, lns)
        if lam is not None:  # a function, not addresses: invoked over HTTP whatever its protocol
            inbound = _inbound(cp, name, lns)
            linked.append(LinkedService(
                inbound=replace(inbound, protocol=HTTP), sni=service_sni(name, None, lns, "default", dc, td),
                endpoints=(), hostnames=(), lambda_=lam,
            ))
            continue
        instances = cp.state.services_named(name)
        endpoints = _endpoints(cp, instances)
        linked.append(LinkedService(
            inbound=_inbound(cp, name, lns),
            sni=service_sni(name, None, lns, "default", dc, td),
            endpoints=tuple(e for e in endpoints if is_ip(e.address)),
            hostnames=tuple(sorted({f"{e.address}:{e.port}" for e in endpoints if not is_ip(e.address)})),
            tls={k: link[k] for k in ("CAFile", "CertFile", "KeyFile", "SNI") if link.get(k)},
        ))
    return ProxySnapshot(**common, linked=tuple(sorted(linked, key=lambda item: item.sni)))


def intention_gated_upstreams(cp: ControlPlane, node_id: str) -> bool:
    """Whether intentions decide which upstreams the proxy has at all (a Lambda upstream it may
    invoke directly: see may_invoke_directly); then an intention change needs a full rebuild."""
    svc = find_proxy(cp, node_id)
    if svc is None or svc["Kind"] != "connect-proxy":
        return False
    dc = cp.config.datacenter
    for up in (svc.get("Proxy") or {}).get("Upstreams") or ():
        if (up.get("Datacenter") or dc) != dc:
            continue
        if lambda_target(cp, up["DestinationName"], up.get("DestinationNamespace") or "default") is not None:
            return True
    return False


def refresh_intentions(cp: ControlPlane, snap: ProxySnapshot) -> ProxySnapshot:
    """`snap` with the intentions (and default policy) as they are now: what build_snapshot
    would return when nothing but intentions changed since `snap` was built, for a proxy
    without intention-gated upstreams."""
    def fresh(inbound: Inbound) -> Inbound:
        return replace(inbound, intentions=tuple(cp.engine.for_destination(inbound.service)))

    return replace(
        snap, default_allow=cp.engine.default_allow,
        inbound=fresh(snap.inbound) if snap.inbound is not None else None,
        linked=tuple(replace(ls, inbound=fresh(ls.inbound)) for ls in snap.linked),
    )
