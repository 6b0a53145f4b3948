"""Issuers whose path OpenSSL has already validated: a new leaf under one costs one signature.

Why: a mesh has a handful of issuing CAs and many leaves (one per workload, renewed every few
days). Validating a new leaf's whole path costs every signature up to the root (~100 µs each
on a small VM) plus OpenSSL 3's parse of the leaf, which decodes its public key through the
provider decoders (~55 µs). Once OpenSSL has validated the path *above* a leaf, everything
it would check again depends only on that path, except the leaf's own part: name chaining to
its issuer, the issuer's signature over it, its validity window and its extensions. The
verifier records the validated issuer (:class:`ValidatedIssuer`, kept with the trust bundles
and dropped with them) and :func:`leaf_step` does that leaf part for the next leaf.

Safety rule: :func:`leaf_step` may only *accept*. It takes leaves that
:func:`gateway.identity.der.read_plain_leaf` read from their DER (the certificates meshes
issue: keyUsage, extendedKeyUsage, basicConstraints, subjectAltName, non-critical key
identifiers; one signature algorithm; ECDSA or RSA PKCS#1 v1.5), and paths without name
constraints or policy extensions. On any failure (a bad signature, a time outside the window,
a key identifier that does not chain) it returns None and the chain goes through OpenSSL's
full validation, which gives the verdict and the reason. ``tests/test_identity_verify.py``
runs the whole bad-certificate matrix through a verifier that holds the issuer records and
checks the verdicts and reasons are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID

from gateway.identity.der import PlainLeaf

__all__ = ["IssuerKey", "ValidatedIssuer", "leaf_step", "validated_issuer"]

IssuerPublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]
# (trust domain, presented intermediates, the leaf's issuer Name DER, its authority key id)
IssuerKey = tuple[str, tuple[bytes, ...], bytes, Union[bytes, None]]

# Constraints a CA above the leaf may put on it that only a full validation applies.
_CONSTRAINING = frozenset({
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
})

# Signature AlgorithmIdentifier TLVs, as the leaf carries them (RSA with its NULL parameter).
_ECDSA = {
    b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02": ec.ECDSA(hashes.SHA256()),
    b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03": ec.ECDSA(hashes.SHA384()),
    b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x04": ec.ECDSA(hashes.SHA512()),
}
_PKCS1 = padding.PKCS1v15()
_RSA_PKCS1 = {
    b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b\x05\x00": hashes.SHA256(),
    b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c\x05\x00": hashes.SHA384(),
    b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0d\x05\x00": hashes.SHA512(),
}


@dataclass(frozen=True, slots=True)
class ValidatedIssuer:
    """The certificate OpenSSL chose as a leaf's issuer on a path it validated.

    ``window`` is the validity shared by every certificate of that path above the leaf."""

    public_key: IssuerPublicKey
    key_id: bytes | None
    window: tuple[float, float]
    is_ec: bool  # else RSA (decided once: isinstance against the key ABCs is not free)


def validated_issuer(above_leaf: list[x509.Certificate]) -> ValidatedIssuer | None:
    """A record for the first certificate of a validated path above a leaf; None when the
    path constrains leaves in ways only a full validation applies (or uses a key type the
    leaf step does not verify)."""
    if not above_leaf:
        return None
    not_before, not_after = float("-inf"), float("inf")
    for cert in above_leaf:
        try:
            if any(ext.oid in _CONSTRAINING for ext in cert.extensions):
                return None
        except (ValueError, x509.DuplicateExtension):
            return None
        not_before = max(not_before, cert.not_valid_before_utc.timestamp())
        not_after = min(not_after, cert.not_valid_after_utc.timestamp())
    issuer = above_leaf[0]
    public_key = issuer.public_key()
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return None
    try:
        key_id: bytes | None = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        key_id = None
    return ValidatedIssuer(public_key, key_id, (not_before, not_after), isinstance(public_key, ec.EllipticCurvePublicKey))


def leaf_step(leaf: PlainLeaf, issuer: ValidatedIssuer, now: float) -> tuple[float, float] | None:
    """The part of path validation that depends on the leaf, under an issuer OpenSSL has
    validated: the path's (notBefore, notAfter) if it passes, else None (take the full path).

    The caller found ``issuer`` under the leaf's issuer name, so names chain byte for byte;
    :func:`gateway.identity.der.read_plain_leaf` has checked the leaf's own profile."""
    not_before = max(leaf.not_before, issuer.window[0])
    not_after = min(leaf.not_after, issuer.window[1])
    if not not_before <= now <= not_after:
        return None
    if leaf.akid is not None and issuer.key_id is not None and leaf.akid != issuer.key_id:
        return None
    key = issuer.public_key
    try:
        if issuer.is_ec:
            algorithm = _ECDSA.get(leaf.algorithm)
            if algorithm is None:
                return None
            key.verify(leaf.signature, leaf.tbs, algorithm)  # type: ignore[call-arg]
        else:
            digest = _RSA_PKCS1.get(leaf.algorithm)
            if digest is None:
                return None
            key.verify(leaf.signature, leaf.tbs, _PKCS1, digest)  # type: ignore[call-arg, arg-type]
    except (InvalidSignature, ValueError):
        return None
    return not_before, not_after
