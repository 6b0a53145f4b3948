"""Consul's SNI and cluster names, byte for byte (agent/connect/sni.go).

Envoy filter chains, cluster names and route names on a terminating gateway are these
strings, so a single differing byte means a TLS handshake lands on the wrong (or no)
filter chain. Empty namespace/partition mean ``default`` exactly as in Consul.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "ServiceSNI",
    "datacenter_sni",
    "destination_cluster_name",
    "gateway_sni",
    "parse_service_sni",
    "peered_cluster_name",
    "peered_service_sni",
    "query_sni",
    "server_sni",
    "service_sni",
]

DEFAULT = "default"
INTERNAL = "internal"
INTERNAL_VERSION = "internal-v1"
EXTERNAL = "external"


def service_sni(
    service: str,
    subset: str | None,
    namespace: str | None,
    partition: str | None,
    datacenter: str,
    trust_domain: str,
) -> str:
    """``ServiceSNI``: ``[<subset>.]<svc>.<ns>.<dc>.internal.<td>`` or ``...<ns>.<ap>.<dc>.internal-v1.<td>``."""
    ns = namespace or DEFAULT
    ap = partition or DEFAULT
    head = f"{subset}.{service}" if subset else service
    if ap == DEFAULT:
        return f"{head}.{ns}.{datacenter}.{INTERNAL}.{trust_domain}"
    return f"{head}.{ns}.{ap}.{datacenter}.{INTERNAL_VERSION}.{trust_domain}"


def peered_service_sni(service: str, namespace: str | None, partition: str | None, peer: str, trust_domain: str) -> str:
    """``PeeredServiceSNI``: ``<svc>.<ns>.<ap>.<peer>.external.<td>`` (partition always present)."""
    if not peer:
        # Consul panics here; a peered name without a peer is a programming error.
        raise ValueError("peer name is required for a peered service SNI")
    return f"{service}.{namespace or DEFAULT}.{partition or DEFAULT}.{peer}.{EXTERNAL}.{trust_domain}"


def peered_cluster_name(service: str, namespace: str | None, peer: str, peer_trust_domain: str) -> str:
    """``generatePeeredClusterName``: like the peered SNI minus the partition, with the peer's trust domain."""
    return f"{service}.{namespace or DEFAULT}.{peer}.{EXTERNAL}.{peer_trust_domain}"


def datacenter_sni(datacenter: str, trust_domain: str) -> str:
    """``DatacenterSNI``: ``<dc>.internal.<td>`` (a mesh gateway listener matches ``*.`` + this)."""
    return f"{datacenter}.{INTERNAL}.{trust_domain}"


def gateway_sni(datacenter: str, partition: str | None, trust_domain: str) -> str:
    """``GatewaySNI``: ``<dc>.internal.<td>`` or ``<ap>.<dc>.internal-v1.<td>``."""
    ap = partition or DEFAULT
    if ap == DEFAULT:
        return f"{datacenter}.{INTERNAL}.{trust_domain}"
    return f"{ap}.{datacenter}.{INTERNAL_VERSION}.{trust_domain}"


def query_sni(service: str, datacenter: str, trust_domain: str) -> str:
    """``QuerySNI``: ``<svc>.default.<dc>.query.<td>`` (the literal ``default`` is Consul's)."""
    return f"{service}.default.{datacenter}.query.{trust_domain}"


def server_sni(datacenter: str, trust_domain: str) -> str:
    """``PeeringServerSAN``: ``server.<dc>.peering.<td>``."""
    return f"server.{datacenter}.peering.{trust_domain}"


def destination_cluster_name(
    service: str, address: str, namespace: str | None, partition: str | None, datacenter: str, trust_domain: str
) -> str:
    """``clusterNameForDestination`` (TGW service-defaults ``Destination``): ``destination.<addr>.<svc-sni>``."""
    addr = address.replace(":", "-").replace(".", "-")
    return "destination." + service_sni(f"{addr}.{service}", None, namespace, partition, datacenter, trust_domain)


class ServiceSNI(NamedTuple):
    service: str
    namespace: str
    partition: str
    datacenter: str
    subset: str | None


# Consul's own name rules: datacenter ^[a-z0-9_-]+$ (agent/config/builder.go); subsets are
# DNS labels (validServiceSubsetName); namespaces/partitions are DNS-label-like. None
# contains a dot, which is what makes the right-to-left split below unambiguous.
_LABEL = re.compile(r"[A-Za-z0-9_-]+")
_DC = re.compile(r"[a-z0-9_-]+")
_SUBSET = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def parse_service_sni(sni: str, trust_domain: str) -> ServiceSNI | None:
    """Invert :func:`service_sni` for ``trust_domain``; ``None`` if ``sni`` is not a service SNI.

    Labels are taken from the right (the trust domain is known and may contain dots).
    What is left of ``<ns>.<dc>`` / ``<ns>.<ap>.<dc>`` is ``<svc>`` or ``<subset>.<svc>``;
    like Consul's ``TrustDomainForTarget``, this assumes service names contain no dot
    (a dotted service would build the same SNI as a subset, so Consul cannot tell
    either). Names must round-trip: ``/ap/default`` spelled out as ``internal-v1`` is
    not something Consul generates, so it is rejected. Matching is exact (no case
    folding), as it is for Envoy's ``server_names``.
    """
    suffix = "." + trust_domain
    if not trust_domain or not sni.endswith(suffix):
        return None
    labels = sni[: -len(suffix)].split(".")
    kind = labels.pop() if labels else ""
    if kind == INTERNAL:
        if len(labels) < 3:
            return None
        ns, dc = labels[-2], labels[-1]
        ap = DEFAULT
        head = labels[:-2]
    elif kind == INTERNAL_VERSION:
        if len(labels) < 4:
            return None
        ns, ap, dc = labels[-3], labels[-2], labels[-1]
        if ap == DEFAULT or not _LABEL.fullmatch(ap):
            return None
        head = labels[:-3]
    else:
        return None
    if not _LABEL.fullmatch(ns) or not _DC.fullmatch(dc):
        return None
    if len(head) == 1:
        subset, service = None, head[0]
    elif len(head) == 2:
        subset, service = head
        if not _SUBSET.fullmatch(subset):
            return None
    else:
        return None
    if not _LABEL.fullmatch(service):
        return None
    return ServiceSNI(service, ns, ap, dc, subset)
