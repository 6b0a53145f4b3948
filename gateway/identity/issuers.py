"""Issuers whose path OpenSSL has already validated: a new leaf under one costs one signature.

Why: a mesh has a handful of issuing CAs and many leaves (one per workload, renewed every few
days). Validating a new leaf's whole path costs every signature up to the root (~100 µs each
on a small VM) plus OpenSSL 3's parse of the leaf, which decodes its public key through the
provider decoders (~55 µs). Once OpenSSL has validated the path *above* a leaf, everything
it would check again depends only on that path, except the leaf's own part: name chaining to
its issuer, the issuer's signature over it, its validity window and its extensions. The
verifier records the validated issuer (:class:`ValidatedIssuer`, kept with the trust bundles
and dropped with them) and :func:`leaf_step` does that leaf part for the next leaf.

Safety rule: :func:`leaf_step` may only *accept*. It handles the certificates meshes issue
(Consul's and terminus's leaves: keyUsage, extendedKeyUsage, basicConstraints,
subjectAltName, subject/authority key identifiers; ECDSA or RSA PKCS#1 v1.5 signatures). On
anything it does not model (another extension, a critical key identifier, an authority key
identifier naming an issuer or serial, different inner and outer signature algorithms, name
constraints or policy extensions anywhere above the leaf) and on any failure (a bad
signature, a time outside the window, a name that does not chain) it returns None and the
chain goes through OpenSSL's full validation, which gives the verdict and the reason.
``tests/test_identity_verify.py`` runs the whole bad-certificate matrix through a verifier
that holds the issuer records and checks the verdicts and reasons are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

__all__ = ["IssuerKey", "ValidatedIssuer", "cert_layout", "der_tlv", "issuer_key", "leaf_step", "validated_issuer"]

IssuerPublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]
# (trust domain, presented intermediates, the leaf's issuer Name DER, its authority key id)
IssuerKey = tuple[str, tuple[bytes, ...], bytes, Union[bytes, None]]

# Extensions the leaf step models. OpenSSL handles the first four when critical; it treats
# a critical key identifier as an unhandled critical extension, so those must be non-critical.
# (By parsed class: cryptography gives unknown extensions the class UnrecognizedExtension.)
_MAY_BE_CRITICAL = frozenset({x509.KeyUsage, x509.ExtendedKeyUsage, x509.BasicConstraints, x509.SubjectAlternativeName})
_NON_CRITICAL_ONLY = frozenset({x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier})

# Constraints a CA above the leaf may put on it that only a full validation applies.
_CONSTRAINING = frozenset({
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.POLICY_MAPPINGS,
    ExtensionOID.INHIBIT_ANY_POLICY,
})

_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}
_RSA_PKCS1 = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: hashes.SHA256(),
    SignatureAlgorithmOID.RSA_WITH_SHA384: hashes.SHA384(),
    SignatureAlgorithmOID.RSA_WITH_SHA512: hashes.SHA512(),
}


@dataclass(frozen=True, slots=True)
class ValidatedIssuer:
    """The certificate OpenSSL chose as a leaf's issuer on a path it validated.

    ``window`` is the validity shared by every certificate of that path above the leaf."""

    public_key: IssuerPublicKey
    key_id: bytes | None
    window: tuple[float, float]


@dataclass(frozen=True, slots=True)
class CertLayout:
    """Raw DER slices of a certificate, for byte comparisons without building objects."""

    inner_algorithm: bytes  # TBSCertificate.signature (AlgorithmIdentifier TLV)
    issuer: bytes  # issuer Name TLV
    issuer_content: tuple[int, int]
    subject_content: tuple[int, int]
    outer_algorithm: bytes  # Certificate.signatureAlgorithm TLV
    tbs: bytes  # the TBSCertificate TLV: what the signature covers
    signature: bytes  # signatureValue's bits (a whole number of octets)


def der_tlv(buf: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start, end) of the content of the DER element at ``i`` (single-byte tags)."""
    tag = buf[i]
    n = buf[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4:
            raise ValueError("unsupported DER length")
        n = int.from_bytes(buf[i : i + k], "big")
        i += k
    return tag, i, i + n


def cert_layout(der: bytes) -> CertLayout | None:
    """Where the names and signature algorithms sit in ``der``; None if it is not laid out as
    a certificate (the caller then uses the parsed objects)."""
    try:
        tag, tbs_start, _ = der_tlv(der, 0)  # Certificate
        tag2, i, tbs_end = der_tlv(der, tbs_start)  # TBSCertificate
        if tag != 0x30 or tag2 != 0x30:
            return None
        if der[i] == 0xA0:  # [0] version
            i = der_tlv(der, i)[2]
        tag, _, i = der_tlv(der, i)  # serialNumber
        if tag != 0x02:
            return None
        alg_start = i
        tag, _, i = der_tlv(der, i)  # signature AlgorithmIdentifier
        if tag != 0x30:
            return None
        inner = der[alg_start:i]
        issuer_start = i
        tag, s_issuer, e_issuer = der_tlv(der, i)
        if tag != 0x30:
            return None
        tag, _, i = der_tlv(der, e_issuer)  # validity
        if tag != 0x30:
            return None
        tag, s_subject, e_subject = der_tlv(der, i)
        if tag != 0x30:
            return None
        tag, _, outer_end = der_tlv(der, tbs_end)  # signatureAlgorithm
        if tag != 0x30:
            return None
        tag, s_sig, e_sig = der_tlv(der, outer_end)  # signatureValue BIT STRING
        if tag != 0x03 or e_sig != len(der) or e_sig <= s_sig or der[s_sig] != 0:
            return None
    except (IndexError, ValueError):
        return None
    return CertLayout(inner, der[issuer_start:e_issuer], (s_issuer, e_issuer), (s_subject, e_subject),
                      der[tbs_end:outer_end], der[tbs_start:tbs_end], der[s_sig + 1 : e_sig])


def issuer_key(leaf: x509.Certificate, trust_domain: str, intermediates: tuple[bytes, ...], layout: CertLayout) -> IssuerKey | None:
    """The record key a leaf's issuer is found under, or None when the leaf carries something
    the leaf step does not model (it then always takes the full path)."""
    akid: bytes | None = None
    for ext in leaf.extensions:
        kind = type(ext.value)
        if kind in _MAY_BE_CRITICAL:
            if kind is x509.BasicConstraints and ext.value.path_length is not None:
                return None  # OpenSSL marks a pathLen on a non-CA invalid
            continue
        if kind not in _NON_CRITICAL_ONLY or ext.critical:
            return None
        if kind is x509.AuthorityKeyIdentifier:
            value = ext.value
            if value.authority_cert_issuer is not None or value.authority_cert_serial_number is not None:
                return None
            akid = value.key_identifier
    return trust_domain, intermediates, layout.issuer, akid


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
        except ValueError:
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
    return ValidatedIssuer(public_key, key_id, (not_before, not_after))


def leaf_step(
    leaf: x509.Certificate, layout: CertLayout, issuer: ValidatedIssuer, akid: bytes | None, now: float,
    leaf_window: tuple[float, float],
) -> tuple[float, float] | None:
    """The part of path validation that depends on the leaf, under an issuer OpenSSL has
    validated: the path's (notBefore, notAfter) if it passes, else None (take the full path).

    The caller found ``issuer`` under the leaf's issuer name, so names chain byte for byte."""
    not_before = max(leaf_window[0], issuer.window[0])
    not_after = min(leaf_window[1], issuer.window[1])
    if not not_before <= now <= not_after:
        return None
    if leaf.version is not x509.Version.v3 or layout.inner_algorithm != layout.outer_algorithm:
        return None
    if akid is not None and issuer.key_id is not None and akid != issuer.key_id:
        return None
    oid = leaf.signature_algorithm_oid
    key = issuer.public_key
    try:
        if oid in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(layout.signature, layout.tbs, _ECDSA[oid])
        elif oid in _RSA_PKCS1 and isinstance(key, rsa.RSAPublicKey):
            key.verify(layout.signature, layout.tbs, padding.PKCS1v15(), _RSA_PKCS1[oid])
        else:
            return None
    except (InvalidSignature, ValueError):
        return None
    return not_before, not_after
