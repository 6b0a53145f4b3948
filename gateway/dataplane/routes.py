"""What the gateway serves: SNI -> (destination, leaf, target), plus the trust roots.

The gateway takes this as an injectable value so tests need no database; the adapter
:func:`routes_from_control_plane` builds it from an in-process :class:`ControlPlane`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from gateway.awslambda.config import lambda_config
from gateway.dataplane.lambda_client import HTTPUpstream, LambdaTarget, lambda_endpoint, region_from_arn
from gateway.identity.sni import service_sni
from gateway.intentions.engine import ServiceName

if TYPE_CHECKING:
    from gateway.control import ControlPlane

__all__ = ["LAMBDA_META_PREFIX", "Route", "Routes", "lambda_target_from_meta", "routes_from_control_plane"]

LAMBDA_META_PREFIX = "serverless.consul.hashicorp.com/v1alpha1/lambda/"

Target = Union[LambdaTarget, HTTPUpstream]


@dataclass(frozen=True)
class Route:
    sni: str
    destination: ServiceName
    cert_pem: str  # leaf (+ intermediates) presented for this SNI
    key_pem: str
    target: Target | None  # None: no upstream known (answered 503)


@dataclass(frozen=True)
class Routes:
    routes: Mapping[str, Route]
    roots_pem: str  # CA certificates trusted for client certificates (PEM, concatenated)
    trust_domain: str = ""
    version: Any = None  # anything comparable: lets a refresher skip identical rebuilds

    def get(self, sni: str | None) -> Route | None:
        return None if sni is None else self.routes.get(sni)


def lambda_target_from_meta(meta: Mapping[str, str], env: Mapping[str, str] | None = None) -> LambdaTarget | None:
    """A target straight from Consul's Meta keys, without validation (for callers holding only
    Meta). Stored entries are read through gateway/awslambda/config.py instead."""
    if meta.get(LAMBDA_META_PREFIX + "enabled") != "true":
        return None
    arn = meta.get(LAMBDA_META_PREFIX + "arn")
    # as gateway/awslambda/config.py and Envoy's path do: the region may come from the ARN
    region = meta.get(LAMBDA_META_PREFIX + "region") or region_from_arn(arn or "")
    if not arn or not region:
        return None
    return LambdaTarget(
        arn=arn,
        region=region,
        endpoint_url=lambda_endpoint(region, env),
        payload_passthrough=meta.get(LAMBDA_META_PREFIX + "payload-passthrough") == "true",
        asynchronous=meta.get(LAMBDA_META_PREFIX + "invocation-mode") == "asynchronous",
    )


def _lambda_target(defaults: Mapping[str, Any], env: Mapping[str, str]) -> LambdaTarget | None:
    """The service-defaults entry's Lambda config, read by the same parser that validates it
    on write and builds Envoy's aws_lambda config (gateway/awslambda/config.py)."""
    cfg = lambda_config(defaults)
    if cfg is None:
        return None
    return LambdaTarget(cfg.arn, cfg.region, lambda_endpoint(cfg.region, env), cfg.payload_passthrough,
                        cfg.invocation_mode == "ASYNCHRONOUS")


def _http_upstream(cp: ControlPlane, name: str) -> HTTPUpstream | None:
    for svc in cp.state.services_named(name):
        node = cp.state.get("nodes", (svc["Node"],)) or {}
        addr = svc.get("Address") or node.get("Address")
        port = svc.get("Port")
        if addr and port:
            host = f"[{addr}]" if ":" in addr else addr
            return HTTPUpstream(f"http://{host}:{port}")
    return None


def routes_from_control_plane(
    cp: ControlPlane, gateway_name: str, env: Mapping[str, str] | None = None,
) -> Routes:
    """One route per service linked to ``gateway_name`` (terminating-gateway entry)."""
    env = os.environ if env is None else env
    td = cp.ca.trust_domain
    dc = cp.config.datacenter
    out: dict[str, Route] = {}
    for link in cp.catalog.linked_services(gateway_name):
        name = link["Service"]
        ns = link.get("Namespace") or "default"
        ap = link.get("Partition") or "default"
        sni = service_sni(name, None, ns, ap, dc, td)
        leaf = cp.ca.leaf(name, ns, ap)
        defaults = cp.state.config_entry("service-defaults", name, ns, ap) or {}
        target: Target | None = _lambda_target(defaults, env)
        if target is None:
            target = _http_upstream(cp, name)
        out[sni] = Route(sni, ServiceName(name, ns, ap), leaf.cert_pem, leaf.key_pem, target)
    roots = cp.ca.published_roots()
    roots_pem = "".join(r.root_cert_pem if r.root_cert_pem.endswith("\n") else r.root_cert_pem + "\n" for r in roots)
    version = (tuple(sorted((s, r.cert_pem, r.target) for s, r in out.items())), roots_pem)
    return Routes(out, roots_pem, td, version)
