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


@dataclass(frozen=True)
class LinkedService:
    """A service a terminating gateway fronts: mTLS in with its leaf, plain or TLS out."""

    inbound: Inbound
    sni: str
    endpoints: tuple[Endpoint, ...]
    hostnames: tuple[str, ...]  # endpoints that are DNS names: a STRICT_DNS cluster
    tls: dict[str, Any] = field(default_factory=dict)  # CAFile, CertFile, KeyFile, SNI from the gateway entry


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
