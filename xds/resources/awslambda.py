"""Envoy pieces for services that are AWS Lambda functions (consul-semantics.md §4.2).

* HTTP filter ``envoy.filters.http.aws_lambda`` after RBAC, immediately before the router; it
  turns the request into a signed Lambda Invoke (SigV4 with the credentials of the Envoy
  process: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, files, IMDS, IRSA...).
  ``host_rewrite`` is the Invoke endpoint's host, so the Host that is signed is the Host that
  is sent and is the one AWS expects, whatever Host the caller used.
* The HCM gets ``strip_any_host_port`` and the route has no ``auto_host_rewrite`` (as Consul).
* The cluster (named by the service's SNI) goes to the Invoke endpoint - LOGICAL_DNS for a
  host name, STATIC for an IP override - and carries ``filter_metadata`` ``com.amazonaws.lambda:
  {egress_gateway: true}``: without it the aws_lambda filter silently does nothing
  (xds-protocol.md §5.1). TLS with SNI = the regional host, verified against the system CA
  bundle and the host's DNS SAN; plain TCP only for an ``http://`` endpoint override.

Direct invocation from a sidecar (builder.may_invoke_directly) is gated on the *source* side:
the sidecar of a service that intentions do not allow to reach the Lambda service gets no
listener and no cluster for it, so its application cannot reach the function *through the
mesh*. That is all it protects. Lambda never sees a mesh identity, so nothing on the function's
side enforces intentions: any process holding AWS credentials with lambda:InvokeFunction
(including that sidecar's host, if the credentials are in its environment) can call AWS
directly. L7 permissions are not enforced on this path either. The terminating-gateway path,
where the gateway alone holds the credentials and enforces intentions with RBAC on the mesh
identity, is the one to use when intentions must really hold.
"""

from __future__ import annotations

from typing import Any

from xds.resources.common import is_ip, typed
from xds.snapshot import LambdaTarget

AWS_LAMBDA_FILTER = "envoy.filters.http.aws_lambda"
LAMBDA_METADATA = {"filter_metadata": {"com.amazonaws.lambda": {"egress_gateway": True}}}
CONNECT_TIMEOUT = "5s"


def _invoke_config(lam: LambdaTarget) -> dict[str, Any]:
    return {"arn": lam.arn, "payload_passthrough": lam.payload_passthrough, "invocation_mode": lam.invocation_mode,
            "host_rewrite": lam.host_header}


def http_filter(lam: LambdaTarget) -> dict[str, Any]:
    return {"name": AWS_LAMBDA_FILTER,
            "typed_config": typed("envoy.extensions.filters.http.aws_lambda.v3.Config", **_invoke_config(lam))}


def per_route(lam: LambdaTarget) -> dict[str, Any]:
    """The same settings on the route (RDS): a change (passthrough, mode, ARN) applies to the next
    request, also on keep-alive connections that a listener update would leave on the old
    filter chain until they drain."""
    return {AWS_LAMBDA_FILTER: typed("envoy.extensions.filters.http.aws_lambda.v3.PerRouteConfig",
                                     invoke_config=_invoke_config(lam))}


def _tls(lam: LambdaTarget) -> dict[str, Any]:
    context: dict[str, Any] = {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}
    if lam.ca_file:
        context["validation_context"] = {
            "trusted_ca": {"filename": lam.ca_file},
            "match_typed_subject_alt_names": [{"san_type": "IP_ADDRESS" if is_ip(lam.host) else "DNS",
                                               "matcher": {"exact": lam.host}}],
        }
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", sni=lam.sni, common_tls_context=context)}


def cluster(name: str, lam: LambdaTarget) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if is_ip(lam.host) else "LOGICAL_DNS",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "ROUND_ROBIN",
        "metadata": LAMBDA_METADATA,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": lam.host, "port_value": lam.port}}}}]}]},
    }
    if not is_ip(lam.host):
        out["dns_lookup_family"] = "V4_ONLY"
    if lam.tls:
        out["transport_socket"] = _tls(lam)
    return out
