"""SDS: the trust bundle (SPIFFE validator) and the leaf certificates a proxy presents."""

from __future__ import annotations

from typing import Any

from xds.resources.common import TRUST_BUNDLE_SECRET, typed
from xds.snapshot import Leaf, ProxySnapshot


def _leaf_secret(leaf: Leaf) -> dict[str, Any]:
    return {
        "name": leaf.secret_name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": leaf.cert_pem},
            "private_key": {"inline_string": leaf.key_pem},
        },
    }


def trust_bundle(snap: ProxySnapshot) -> dict[str, Any]:
    """Envoy's SPIFFE validator: the leaf's trust domain picks the bundle, so one trust
    domain cannot mint identities for another."""
    return {
        "name": TRUST_BUNDLE_SECRET,
        "validation_context": {
            "custom_validator_config": {
                "name": "envoy.tls.cert_validator.spiffe",
                "typed_config": typed(
                    "envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                    trust_domains=[{"name": snap.trust_domain, "trust_bundle": {"inline_string": snap.roots_pem}}],
                ),
            }
        },
    }


def secrets(snap: ProxySnapshot) -> list[dict[str, Any]]:
    leaves = {}
    if snap.inbound is not None:
        leaves[snap.inbound.leaf.secret_name] = snap.inbound.leaf
    for linked in snap.linked:
        leaves[linked.inbound.leaf.secret_name] = linked.inbound.leaf
    return [trust_bundle(snap), *(_leaf_secret(leaves[name]) for name in sorted(leaves))]
