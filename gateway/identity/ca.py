"""Built-in Connect CA: root generation, leaf signing, CSR signing and root rotation.

Mirrors Consul's built-in provider (``agent/connect/ca/provider_consul.go``) so
that Envoy proxies and Consul clients see the same certificate shapes:

* Root: self-signed, URI SAN ``spiffe://<trust-domain>`` (no path),
  ``basicConstraints CA:TRUE`` (no path length), keyUsage
  keyCertSign+cRLSign+digitalSignature, SKI = AKI = ``keys.key_id_bytes``,
  CN ``pri-<uid8>.consul.ca.<cluster-id[:8]>.consul`` (``connect.CACN``; the
  random UID keeps subjects distinct across rotations, which cross-signing
  chain building relies on).
* Leaf: exactly one URI SAN (the SPIFFE ID) plus optional DNS/IP SANs,
  ``CA:FALSE``, EKU serverAuth+clientAuth, SKI of the leaf key and AKI of the
  issuer, valid from now-1m (clock skew) to now+TTL (72h default).
* Rotation: the old root cross-signs the new root; the cross-signed cert goes
  into the new root's ``IntermediateCerts`` and is appended to issued leaf PEMs
  (``chain_pem``) so proxies that only trust the old root still accept new
  leaves. The old root stays published until its last leaf expired
  (``roots_to_publish``).

Where terminus deliberately differs from Consul:

* Leaf keyUsage is digitalSignature (+keyEncipherment for RSA leaf keys only);
  Consul also sets dataEncipherment and keyAgreement on every leaf.
* Leaves get ``CN=<service>`` when the SPIFFE ID names a service (Consul leaves
  have an empty subject); otherwise the subject is empty and the SAN extension
  is marked critical as RFC 5280 requires.
* Serial numbers are random 128-bit values instead of a Raft counter, and
  validity starts one minute in the past for roots too. Leaf validity is
  capped at the issuer's ``notAfter``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Union
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.identity import keys as _keys
from gateway.identity.keys import PrivateKey, PublicKey

CLOCK_SKEW = timedelta(minutes=1)
DEFAULT_ROOT_TTL = timedelta(days=3650)
DEFAULT_LEAF_TTL = timedelta(hours=72)
#: Consul's CrossSignCA uses 7 days: long enough to outlive any 72h leaf signed
#: by the old root while the rotation settles.
DEFAULT_CROSS_SIGN_TTL = timedelta(days=7)
DEFAULT_ROOT_NAME = "Consul CA Primary Cert"
MIN_RSA_LEAF_BITS = 2048

_IpAddr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
CertLike = Union[str, bytes, x509.Certificate, "CARoot"]
KeyLike = Union[str, bytes, PrivateKey]

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_TRUST_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class CSRError(ValueError):
    """A certificate signing request was rejected (bad PEM, signature, SANs or key)."""


# --------------------------------------------------------------------------- roots


@dataclass
class CARoot:
    """One CA root as Consul's ``structs.CARoot``; ``rotated_out_at`` is internal (``json:"-"``)."""

    id: str
    name: str
    serial_number: int
    signing_key_id: str
    not_before: datetime
    not_after: datetime
    root_cert_pem: str
    intermediate_cert_pems: list[str] = field(default_factory=list)
    private_key_type: str = _keys.DEFAULT_KEY_TYPE
    private_key_bits: int = _keys.DEFAULT_KEY_BITS
    active: bool = True
    rotated_out_at: datetime | None = None
    #: Consul's ``ExternalTrustDomain``: the cluster ID (trust domain minus ``.consul``).
    external_trust_domain: str = ""

    @classmethod
    def from_pem(
        cls,
        root_cert_pem: str,
        *,
        name: str = DEFAULT_ROOT_NAME,
        external_trust_domain: str | None = None,
        active: bool = True,
    ) -> CARoot:
        """Describe an existing root certificate the way Consul's ``newCARoot`` does."""
        cert = load_certificate(root_cert_pem)
        ktype, kbits = _keys.key_info(cert.public_key())  # type: ignore[arg-type]
        if external_trust_domain is None:
            host = _cert_spiffe_host(cert) or ""
            external_trust_domain = host.removesuffix(".consul")
        pem = root_cert_pem if root_cert_pem.endswith("\n") else root_cert_pem + "\n"
        return cls(
            id=cert_fingerprint(cert),
            name=name,
            serial_number=cert.serial_number,
            signing_key_id=_keys.hex_string(_subject_key_id(cert)),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            root_cert_pem=pem,
            private_key_type=ktype,
            private_key_bits=kbits,
            active=active,
            external_trust_domain=external_trust_domain,
        )

    @property
    def trust_domain(self) -> str:
        """The SPIFFE trust domain (``<cluster-id>.consul``)."""
        return f"{self.external_trust_domain}.consul" if self.external_trust_domain else ""

    def certificate(self) -> x509.Certificate:
        return load_certificate(self.root_cert_pem)

    def to_consul_json(self, create_index: int = 0, modify_index: int = 0) -> dict[str, Any]:
        """Consul's ``api.CARoot`` JSON. ``SerialNumber`` is a uint64 in Consul, so like Go's
        ``big.Int.Uint64`` it carries the low 64 bits of the (128-bit) serial."""
        return {
            "ID": self.id,
            "Name": self.name,
            "SerialNumber": self.serial_number & 0xFFFF_FFFF_FFFF_FFFF,
            "SigningKeyID": self.signing_key_id,
            "ExternalTrustDomain": self.external_trust_domain,
            "NotBefore": _go_time(self.not_before),
            "NotAfter": _go_time(self.not_after),
            "RootCert": self.root_cert_pem,
            # Go marshals a nil slice as null, which is what a fresh Consul root shows.
            "IntermediateCerts": list(self.intermediate_cert_pems) or None,
            "Active": self.active,
            "PrivateKeyType": self.private_key_type,
            "PrivateKeyBits": self.private_key_bits,
            "CreateIndex": create_index,
            "ModifyIndex": modify_index,
        }


def generate_root(
    trust_domain: str,
    *,
    key_type: str = _keys.DEFAULT_KEY_TYPE,
    key_bits: int = _keys.DEFAULT_KEY_BITS,
    ttl: timedelta = DEFAULT_ROOT_TTL,
    common_name: str | None = None,
    name: str = DEFAULT_ROOT_NAME,
    primary: bool = True,
    now: datetime | None = None,
) -> tuple[CARoot, str]:
    """Create a self-signed Connect root for ``trust_domain``; returns (root, private key PEM)."""
    td = validate_trust_domain(trust_domain)
    if ttl <= timedelta(0):
        raise ValueError("root TTL must be positive")
    key = _keys.generate_key(key_type, key_bits)
    cluster_id = td.removesuffix(".consul")
    cn = common_name or ca_common_name(cluster_id, primary=primary)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = _now(now)
    ski = _keys.key_id_bytes(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{td}")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        .add_extension(_aki(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    root = CARoot.from_pem(_cert_pem(cert), name=name, external_trust_domain=cluster_id)
    return root, _keys.private_key_to_pem(key)


def ca_common_name(cluster_id: str, *, primary: bool = True, provider: str = "consul") -> str:
    """Consul's ``connect.CACN``: ``{pri|sec}-{uid8}.{provider}.ca.{cluster_id[:8]}.consul``."""
    uid = "".join(_B36[secrets.randbelow(36)] for _ in range(8))
    prov = re.sub(r"[^a-z0-9]", "", provider.lower())[:32]
    return f"{'pri' if primary else 'sec'}-{uid}.{prov}.ca.{cluster_id[:8]}.consul"


def validate_trust_domain(trust_domain: str) -> str:
    """Lower-case (as Consul does) and check that the trust domain is a plain DNS name."""
    td = (trust_domain or "").strip().lower()
    if not td or len(td) > 253 or not _TRUST_DOMAIN_RE.match(td):
        raise ValueError(f"invalid trust domain {trust_domain!r}")
    return td


# --------------------------------------------------------------------------- leaves


def sign_leaf(
    signing_cert: CertLike,
    signing_key: KeyLike,
    *,
    spiffe_uri: str,
    public_key: PublicKey | str | bytes,
    ttl: timedelta = DEFAULT_LEAF_TTL,
    dns_sans: Iterable[str] = (),
    ip_sans: Iterable[str | _IpAddr] = (),
    common_name: str | None = None,
    now: datetime | None = None,
) -> str:
    """Issue a leaf for ``public_key`` (object or PEM) with ``spiffe_uri`` as its only URI SAN.

    ``signing_cert`` is the root, or the intermediate in a secondary DC; the
    leaf's issuer and AKI follow it. Returns the leaf certificate PEM only (see
    ``chain_pem`` for what to hand to proxies). On hot paths pass parsed
    objects: parsing an RSA CA key PEM costs ~45 ms (see
    ``keys.private_key_from_pem(trusted=True)``).
    """
    issuer = load_certificate(signing_cert)
    key = load_private_key(signing_key)
    pub = _load_public_key(public_key)
    _check_leaf_key(pub, ValueError)
    host, _ = parse_spiffe_uri(spiffe_uri)
    _check_can_sign(issuer, host, ValueError)
    ips = [ipaddress.ip_address(ip) if isinstance(ip, str) else ip for ip in ip_sans]
    cert = _issue_leaf(issuer, key, pub, spiffe_uri, list(dns_sans), ips, ttl, common_name, now)
    return _cert_pem(cert)


def generate_leaf(
    signing_cert: CertLike,
    signing_key: KeyLike,
    spiffe_uri: str,
    *,
    key_type: str = _keys.DEFAULT_KEY_TYPE,
    key_bits: int = _keys.DEFAULT_KEY_BITS,
    ttl: timedelta = DEFAULT_LEAF_TTL,
    dns_sans: Iterable[str] = (),
    ip_sans: Iterable[str | _IpAddr] = (),
    now: datetime | None = None,
) -> tuple[str, str]:
    """Generate a key and a leaf for it, as ``GET /v1/agent/connect/ca/leaf/<svc>`` needs.

    Returns (leaf cert PEM, leaf private key PEM).
    """
    key = _keys.generate_key(key_type, key_bits)
    cert_pem = sign_leaf(
        signing_cert,
        signing_key,
        spiffe_uri=spiffe_uri,
        public_key=key.public_key(),
        ttl=ttl,
        dns_sans=dns_sans,
        ip_sans=ip_sans,
        now=now,
    )
    return cert_pem, _keys.private_key_to_pem(key)


def chain_pem(leaf_pem: str, root: CARoot) -> str:
    """Leaf PEM followed by the root's intermediates, as Consul returns ``CertPEM``.

    During a rotation this carries the cross-signed cert, which is what lets a
    proxy that only trusts the old root accept a leaf from the new one.
    """
    parts = [leaf_pem, *root.intermediate_cert_pems]
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


# --------------------------------------------------------------------------- CSRs


@dataclass(frozen=True)
class CSRInfo:
    """A CSR that passed ``parse_csr``; ``spiffe_uri`` is what the caller authorizes (ACLs)."""

    csr: x509.CertificateSigningRequest
    spiffe_uri: str
    dns_sans: tuple[str, ...]
    ip_sans: tuple[_IpAddr, ...]


def parse_csr(csr_pem: str | bytes) -> CSRInfo:
    """Parse and check a CSR: valid signature, exactly one SPIFFE URI SAN, no emails, sane key.

    Messages follow Consul's ``AuthorizeAndSignCertificate`` where it has one.
    """
    data = csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CSRError(f"invalid CSR: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, InvalidSignature, NotImplementedError):
        valid = False
    if not valid:
        raise CSRError("CSR signature is invalid")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names: list[x509.GeneralName] = list(san)
    except x509.ExtensionNotFound:
        names = []
    uris = [n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1:
        raise CSRError(f"CSR SAN contains an invalid number of URIs: {len(uris)}")
    if any(isinstance(n, x509.RFC822Name) for n in names):
        raise CSRError("CSR SAN does not allow specifying email addresses")
    allowed = (x509.UniformResourceIdentifier, x509.DNSName, x509.IPAddress)
    if any(not isinstance(n, allowed) for n in names):
        raise CSRError("CSR SAN may only contain one URI, DNS names and IP addresses")
    try:
        parse_spiffe_uri(uris[0])
    except ValueError as exc:
        raise CSRError(f"CSR SAN URI is not a valid SPIFFE ID: {exc}") from None
    pub = csr.public_key()
    _check_leaf_key(pub, CSRError)
    return CSRInfo(
        csr=csr,
        spiffe_uri=uris[0],
        dns_sans=tuple(n.value for n in names if isinstance(n, x509.DNSName)),
        ip_sans=tuple(n.value for n in names if isinstance(n, x509.IPAddress)),  # type: ignore[misc]
    )


def sign_csr(
    signing_cert: CertLike,
    signing_key: KeyLike,
    csr: str | bytes | CSRInfo,
    *,
    ttl: timedelta = DEFAULT_LEAF_TTL,
    now: datetime | None = None,
) -> tuple[str, str]:
    """Sign a PEM CSR (or a ``CSRInfo`` already checked); returns (leaf PEM, SPIFFE URI).

    Call ``parse_csr`` first to authorize the URI before signing. Only the CSR's
    key and SANs are used: its subject and any requested extensions (e.g.
    CA:TRUE) are ignored, exactly as Consul's provider ignores them.
    """
    info = csr if isinstance(csr, CSRInfo) else parse_csr(csr)
    issuer = load_certificate(signing_cert)
    key = load_private_key(signing_key)
    host, _ = parse_spiffe_uri(info.spiffe_uri)
    _check_can_sign(issuer, host, CSRError)
    pub: PublicKey = info.csr.public_key()  # type: ignore[assignment]
    cert = _issue_leaf(
        issuer, key, pub, info.spiffe_uri, list(info.dns_sans), list(info.ip_sans), ttl, None, now
    )
    return _cert_pem(cert), info.spiffe_uri


# --------------------------------------------------------------------------- rotation


def cross_sign(
    new_root_cert: CertLike,
    old_root_key: KeyLike,
    old_root_cert: CertLike,
    *,
    ttl: timedelta = DEFAULT_CROSS_SIGN_TTL,
    now: datetime | None = None,
) -> str:
    """The new root's subject, key, SKI and extensions, issued by the old root (Consul ``CrossSignCA``).

    A proxy trusting only the old root can then build leaf -> cross-signed ->
    old root for leaves the new root signs.
    """
    new = load_certificate(new_root_cert)
    old = load_certificate(old_root_cert)
    key = load_private_key(old_root_key)
    _check_key_matches(old, key)
    start = _now(now)
    not_after = min(start + ttl, new.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new.subject)
        .issuer_name(old.subject)
        .public_key(new.public_key())  # type: ignore[arg-type]
        .serial_number(random_serial())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(not_after)
    )
    for ext in new.extensions:
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    builder = builder.add_extension(_aki(_subject_key_id(old)), critical=False)
    return _cert_pem(builder.sign(key, hashes.SHA256()))


def rotate_root(
    old_root: CARoot,
    old_root_key: KeyLike,
    new_root: CARoot,
    *,
    cross_sign_ttl: timedelta = DEFAULT_CROSS_SIGN_TTL,
    now: datetime | None = None,
) -> tuple[CARoot, CARoot]:
    """Apply Consul's rotation to two roots; returns (old rotated out, new active).

    The new root gains the cross-signed cert in ``intermediate_cert_pems``; the
    old one is marked inactive with ``rotated_out_at = now`` so
    ``roots_to_publish`` can drop it once its leaves have expired.
    """
    at = _now(now)
    xc = cross_sign(new_root.root_cert_pem, old_root_key, old_root.root_cert_pem, ttl=cross_sign_ttl, now=at)
    old_out = replace(old_root, active=False, rotated_out_at=at)
    new_in = replace(new_root, active=True, intermediate_cert_pems=[*new_root.intermediate_cert_pems, xc])
    return old_out, new_in


def roots_to_publish(
    roots: Sequence[CARoot], now: datetime, *, max_leaf_ttl: timedelta = DEFAULT_LEAF_TTL
) -> list[CARoot]:
    """Roots that belong in the trust bundle at ``now``.

    Rule: an inactive root stays until the last leaf it could have signed has
    expired, i.e. while ``now <= rotated_out_at + max_leaf_ttl`` (leaves end at
    issue time + TTL, and it stopped issuing at ``rotated_out_at``). Active
    roots, and inactive ones with no ``rotated_out_at``, are always kept.
    Consul prunes later, at ``rotated_out_at + 2 * LeafCertTTL``; pass a doubled
    ``max_leaf_ttl`` for that extra margin. Input order is preserved.
    """
    at = _aware(now)
    return [
        r
        for r in roots
        if r.active or r.rotated_out_at is None or at <= _aware(r.rotated_out_at) + max_leaf_ttl
    ]


# --------------------------------------------------------------------------- helpers


def load_certificate(cert: CertLike) -> x509.Certificate:
    """Accept a PEM string/bytes, a parsed certificate or a ``CARoot``."""
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, CARoot):
        cert = cert.root_cert_pem
    data = cert.encode("ascii") if isinstance(cert, str) else cert
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"error parsing certificate: {exc}") from None


def load_private_key(key: KeyLike) -> PrivateKey:
    """Accept a PEM private key or an EC/RSA key object."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return key
    if isinstance(key, (str, bytes)):
        return _keys.private_key_from_pem(key)
    raise ValueError(f"unsupported private key: {type(key).__name__}")


def cert_fingerprint(cert: CertLike) -> str:
    """Consul's ``CalculateCertFingerprint``: colon-hex SHA-1 of the DER cert; the ``CARoot.ID``."""
    der = load_certificate(cert).public_bytes(serialization.Encoding.DER)
    return _keys.hex_string(hashlib.sha1(der).digest())  # noqa: S324 - identifier, not security


def random_serial() -> int:
    """A random, positive 128-bit serial number."""
    return secrets.randbits(128) or 1


def parse_spiffe_uri(uri: str) -> tuple[str, str]:
    """Minimal SPIFFE ID check for leaves: ``spiffe://<host>/<path>``; returns (host, path)."""
    parts = urlsplit(uri)
    if parts.scheme != "spiffe":
        raise ValueError(f"URI {uri!r} does not use the spiffe scheme")
    if not parts.hostname or parts.port is not None or parts.username or parts.password:
        raise ValueError(f"URI {uri!r} has no valid trust domain")
    if not parts.path or parts.path == "/":
        raise ValueError(f"URI {uri!r} has no path (a signing ID cannot be a leaf identity)")
    if parts.query or parts.fragment:
        raise ValueError(f"URI {uri!r} must not have a query or fragment")
    return parts.hostname, parts.path


def _issue_leaf(
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    pub: PublicKey,
    spiffe_uri: str,
    dns_sans: list[str],
    ip_sans: list[_IpAddr],
    ttl: timedelta,
    common_name: str | None,
    now: datetime | None,
) -> x509.Certificate:
    if ttl <= timedelta(0):
        raise ValueError("leaf TTL must be positive")
    _check_issuer(issuer)
    _check_key_matches(issuer, issuer_key)
    start = _now(now)
    not_after = min(start + ttl, issuer.not_valid_after_utc)
    cn = common_name if common_name is not None else _service_from_uri(spiffe_uri)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn and len(cn) <= 64 else []
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_uri)]
    names += [x509.DNSName(d) for d in dict.fromkeys(dns_sans) if d]
    names += [x509.IPAddress(ip) for ip in dict.fromkeys(ip_sans)]
    is_rsa = isinstance(pub, rsa.RSAPublicKey)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(pub)
        .serial_number(random_serial())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        # RFC 5280 4.2.1.6: SAN must be critical when the subject is empty.
        .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier(_keys.key_id_bytes(pub)), critical=False)
        .add_extension(_aki(_subject_key_id(issuer)), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _service_from_uri(uri: str) -> str | None:
    segs = urlsplit(uri).path.split("/")
    for i, seg in enumerate(segs[:-1]):
        if seg == "svc" and segs[i + 1]:
            return segs[i + 1]
    return None


def _check_issuer(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ValueError("signing certificate is not a CA certificate")


def _check_key_matches(cert: x509.Certificate, key: PrivateKey) -> None:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ValueError("signing key does not match the signing certificate")


def _check_leaf_key(pub: object, err: type[ValueError]) -> None:
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < MIN_RSA_LEAF_BITS:
            raise err(f"RSA key size must be at least {MIN_RSA_LEAF_BITS} bits, got {pub.key_size}")
        return
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise err(f"unsupported leaf key type {type(pub).__name__}: only EC and RSA keys are allowed")


def _check_can_sign(issuer: x509.Certificate, host: str, err: type[ValueError]) -> None:
    """Consul's ``CanSign``: the leaf's trust domain must equal the signing cert's (case-insensitive)."""
    signing_host = _cert_spiffe_host(issuer)
    if signing_host is not None and signing_host.lower() != host.lower():
        raise err(
            f"SPIFFE ID trust domain {host!r} does not match the CA trust domain {signing_host!r}"
        )


def _cert_spiffe_host(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        parts = urlsplit(uri)
        if parts.scheme == "spiffe" and parts.hostname:
            return parts.hostname
    return None


def _subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return _keys.key_id_bytes(cert.public_key())  # type: ignore[arg-type]


def _load_public_key(key: PublicKey | str | bytes) -> PublicKey:
    if isinstance(key, (str, bytes)):
        data = key.encode("ascii") if isinstance(key, str) else key
        try:
            loaded = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"error parsing public key: {exc}") from None
        return loaded  # type: ignore[return-value]
    return key


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(key_id: bytes) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier(
        key_identifier=key_id, authority_cert_issuer=None, authority_cert_serial_number=None
    )


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _now(now: datetime | None) -> datetime:
    """UTC ``now`` truncated to seconds (X.509 times have no fractions)."""
    return _aware(now or datetime.now(timezone.utc)).replace(microsecond=0)


def _go_time(dt: datetime) -> str:
    """Go's ``time.Time`` JSON (RFC 3339, fraction without trailing zeros) in UTC."""
    dt = _aware(dt)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
    return f"{base}{frac}Z"
