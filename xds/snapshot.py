"""Everything one proxy's config depends on, gathered from the state first.

Resources are pure functions of a ProxySnapshot (xds/resources/*), so a snapshot is the
unit that is compared, cached and golden-tested. Building one reads the in-memory state
and the CA; it never talks to Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.intentions.engine import CompiledIntention, ServiceName

TCP, HTTP = "tcp", "http"
HTTP_PROTOCOLS = ("http", "http2", "grpc")


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    healthy: bool = True
    weight: int = 1


@dataclass(frozen=True)
class Leaf:
    service: str
    namespace: str
    cert_pem: str
    key_pem: str

    @property
    def secret_name(self) -> str:
        return f"leaf/{self.namespace}/{self.service}"


@dataclass(frozen=True)
class Inbound:
    """Traffic into a service: who may call it is decided by its intentions."""

    service: ServiceName
    protocol: str
    intentions: tuple[CompiledIntention, ...]
    leaf: Leaf


@dataclass(frozen=True)
class LambdaTarget:
    """An AWS Lambda function behind a service: Envoy's aws_lambda filter invokes it.

    host/port/tls/sni are the Invoke endpoint (gateway/awslambda/config.lambda_endpoint);
    `host_header` is what the filter signs and sends as Host."""

    arn: str
    payload_passthrough: bool
    invocation_mode: str  # SYNCHRONOUS | ASYNCHRONOUS
    host: str
    port: int
    tls: bool
    sni: str
    ca_file: str = ""  # system CA bundle for the endpoint's certificate ("" for plain HTTP)

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """A sidecar's upstream: a local listener that dials the service over mTLS."""

    name: str
    namespace: str
    datacenter: str
    bind_address: str
    bind_port: int
    protocol: str
    sni: str
    endpoints: tuple[Endpoint, ...]
    lambda_: LambdaTarget | None = None  # direct invocation from the sidecar (see builder.py)


@dataclass(frozen=True)
class LinkedService:
    """A service a terminating gateway fronts: mTLS in with its leaf, plain or TLS out."""

    inbound: Inbound
    sni: str
    endpoints: tuple[Endpoint, ...]
    hostnames: tuple[str, ...]  # endpoints that are DNS names: a STRICT_DNS cluster
    tls: dict[str, Any] = field(default_factory=dict)  # CAFile, CertFile, KeyFile, SNI from the gateway entry
    lambda_: LambdaTarget | None = None  # the service is a Lambda function: invoke it, HTTP whatever its protocol


@dataclass(frozen=True)
class AccessLogs:
    """proxy-defaults ``AccessLogs`` when ``Enabled`` (Consul's AccessLogsConfig)."""

    disable_listener_logs: bool = False
    type: str = ""  # "" (stdout) | "stdout" | "stderr" | "file"
    path: str = ""
    json_format: str = ""
    text_format: str = ""


@dataclass(frozen=True)
class ProxySnapshot:
    node_id: str
    kind: str  # "connect-proxy" | "terminating-gateway"
    proxy_service: str
    namespace: str
    datacenter: str
    trust_domain: str
    roots_pem: str
    default_allow: bool
    datacenters: tuple[str, ...]
    listen_address: str
    listen_port: int
    # connect-proxy
    inbound: Inbound | None = None
    local_app_address: str = "127.0.0.1"
    local_app_port: int = 0
    upstreams: tuple[Upstream, ...] = ()
    # terminating-gateway
    linked: tuple[LinkedService, ...] = ()
    # both
    access_logs: AccessLogs | None = None
