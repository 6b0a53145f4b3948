"""Test PKI factory: SPIFFE CAs, intermediates and leaves with any single flaw.

Every knob defaults to a *correct* X509-SVID (EC P-256, critical basicConstraints,
critical keyUsage, EKU client+server, exactly one URI SAN) so a test states only the
flaw it is about::

    ca = make_ca("example.org")
    ica = make_intermediate(ca)
    leaf = make_leaf(ica, "spiffe://example.org/ns/default/dc/dc1/svc/web")
    leaf.chain_der()                 # [leaf DER, ica DER] as a TLS peer would send it
    expired = make_leaf(ca, "spiffe://example.org/web", not_after=NOW - hours(1))

Keys are derived from a label (deterministic; pass ``key_label`` to share or vary a key);
validity windows are relative to :data:`NOW`, fixed at import. ECDSA signatures are
randomised, so DER bytes differ between runs ("deterministic-ish").
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Cert",
    "LEAF_KEY_USAGE",
    "CA_KEY_USAGE",
    "NOW",
    "bundle_pem",
    "hours",
    "make_ca",
    "make_intermediate",
    "make_key",
    "make_leaf",
    "svc_id",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

NOW = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign", "digital_signature"})
LEAF_KEY_USAGE = frozenset({"digital_signature", "key_encipherment"})
_KU_FIELDS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
_EKU_NAMES = {
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
}
_UNSET: object = object()  # "use the default" where None already means "omit"
_counter = itertools.count(1)


def hours(n: float) -> _dt.timedelta:
    return _dt.timedelta(hours=n)


def svc_id(service: str, trust_domain: str = "example.org", dc: str = "dc1", ns: str = "default") -> str:
    """A Consul service SPIFFE ID, the usual leaf URI SAN."""
    return f"spiffe://{trust_domain}/ns/{ns}/dc/{dc}/svc/{service}"


def make_key(label: str | None = None, kind: str = "ec") -> PrivateKey:
    """EC P-256 (default) derived from ``label``; ``rsa`` / ``ed25519`` for variety."""
    label = label if label is not None else f"key-{next(_counter)}"
    seed = hashlib.sha256(label.encode()).digest()
    if kind == "ec":
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        return ec.derive_private_key(int.from_bytes(seed, "big") % (order - 1) + 1, ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}")


@dataclass(frozen=True)
class Cert:
    """A certificate with its key and the issuer it was made under (None for roots)."""

    cert: x509.Certificate
    key: PrivateKey
    issuer: Cert | None = field(default=None, repr=False)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def uri_sans(self) -> list[str]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return san.get_values_for_type(x509.UniformResourceIdentifier)

    @property
    def is_root(self) -> bool:
        return self.issuer is None

    def chain(self, include_root: bool = False) -> list[Cert]:
        """Self, then issuers up to (and optionally including) the root."""
        out: list[Cert] = []
        node: Cert | None = self
        while node is not None:
            if node.is_root and not include_root and out:
                break
            out.append(node)
            node = node.issuer
        return out

    def chain_der(self, include_root: bool = False) -> list[bytes]:
        return [c.der for c in self.chain(include_root)]

    def chain_pem(self, include_root: bool = False) -> str:
        return "".join(c.cert_pem.decode() for c in self.chain(include_root))


def bundle_pem(*cas: Cert) -> str:
    return "".join(c.cert_pem.decode() for c in cas)


def _name(cn: str | None, org: str | None = None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_usage(names: Iterable[str]) -> x509.KeyUsage:
    names = set(names)
    unknown = names - set(_KU_FIELDS)
    if unknown:
        raise ValueError(f"unknown keyUsage bits {sorted(unknown)}")
    flags = {f: f in names for f in _KU_FIELDS}
    if not (flags["key_agreement"]):
        flags["encipher_only"] = flags["decipher_only"] = False
    return x509.KeyUsage(**flags)


def _eku(values: Iterable[str | x509.ObjectIdentifier]) -> x509.ExtendedKeyUsage:
    return x509.ExtendedKeyUsage([_EKU_NAMES[v] if isinstance(v, str) else v for v in values])


def _build(
    *,
    subject: x509.Name,
    issuer_name: x509.Name,
    public_key: object,
    signing_key: PrivateKey,
    issuer_key_for_aki: PrivateKey | None,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    ca: bool | None,
    path_length: int | None,
    bc_critical: bool,
    key_usage: Iterable[str] | None,
    ku_critical: bool,
    eku: Iterable[str | x509.ObjectIdentifier] | None,
    uri_sans: Sequence[str],
    dns_sans: Sequence[str],
    san_critical: bool | None,
    ski: bool,
    name_constraints: x509.NameConstraints | None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]],
    serial: int | None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else int.from_bytes(hashlib.sha256(f"serial-{next(_counter)}".encode()).digest()[:16], "big") >> 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=bc_critical)
    if key_usage is not None:
        b = b.add_extension(_key_usage(key_usage), critical=ku_critical)
    if eku is not None:
        b = b.add_extension(_eku(eku), critical=False)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
    names += [x509.DNSName(d) for d in dns_sans]
    if names:
        crit = san_critical if san_critical is not None else len(subject) == 0
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=crit)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        if issuer_key_for_aki is not None:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key_for_aki.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
    if name_constraints is not None:
        b = b.add_extension(name_constraints, critical=True)
    for ext, critical in extra_extensions:
        b = b.add_extension(ext, critical=critical)
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(signing_key, algorithm)  # type: ignore[arg-type]


def _window(not_before: _dt.datetime | None, not_after: _dt.datetime | None, days: float) -> tuple[_dt.datetime, _dt.datetime]:
    nb = not_before if not_before is not None else NOW - hours(1)
    na = not_after if not_after is not None else NOW + _dt.timedelta(days=days)
    return nb, na


def _build_ca(
    subject: x509.Name,
    issuer_name: x509.Name,
    key: PrivateKey,
    signing_key: PrivateKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    ca: bool | None,
    path_length: int | None,
    key_usage: Iterable[str] | None,
    uri_sans: Sequence[str],
    ski: bool,
    name_constraints: x509.NameConstraints | None,
) -> x509.Certificate:
    """A CA certificate (root, cross-signed or intermediate): critical BC and KU, no EKU."""
    return _build(
        subject=subject, issuer_name=issuer_name, public_key=key.public_key(), signing_key=signing_key,
        issuer_key_for_aki=signing_key, not_before=not_before, not_after=not_after, ca=ca, path_length=path_length,
        bc_critical=True, key_usage=key_usage, ku_critical=True, eku=None, uri_sans=uri_sans, dns_sans=(),
        san_critical=False, ski=ski, name_constraints=name_constraints, extra_extensions=(), serial=None,
    )


def make_ca(
    trust_domain: str = "example.org",
    *,
    cn: str | None = None,
    key: PrivateKey | None = None,
    key_label: str | None = None,
    signer: Cert | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    path_length: int | None = None,
    ca: bool | None = True,
    key_usage: Iterable[str] | None = CA_KEY_USAGE,
    uri_sans: Sequence[str] | object = _UNSET,
    name_constraints: x509.NameConstraints | None = None,
    ski: bool = True,
) -> Cert:
    """A root CA for ``trust_domain`` (URI SAN ``spiffe://<td>`` like Consul's signing cert).

    ``signer`` makes it a cross-signed CA (issuer = signer) while keeping this subject/key.
    """
    key = key or make_key(key_label or f"ca:{trust_domain}:{cn}:{next(_counter)}")
    subject = _name(cn or f"{trust_domain} Root CA", "terminus-test")
    sans = [f"spiffe://{trust_domain}"] if uri_sans is _UNSET else list(uri_sans)  # type: ignore[arg-type]
    nb, na = _window(not_before, not_after, 3650)
    cert = _build_ca(subject, signer.cert.subject if signer else subject, key, signer.key if signer else key,
                     nb, na, ca, path_length, key_usage, sans, ski, name_constraints)
    return Cert(cert, key, signer)


def make_intermediate(
    parent: Cert,
    *,
    trust_domain: str | None = None,
    cn: str | None = None,
    key: PrivateKey | None = None,
    key_label: str | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    ca: bool | None = True,
    path_length: int | None = None,
    key_usage: Iterable[str] | None = CA_KEY_USAGE,
    uri_sans: Sequence[str] | object = _UNSET,
    name_constraints: x509.NameConstraints | None = None,
    ski: bool = True,
) -> Cert:
    """An intermediate under ``parent``; ``ca=False`` / ``key_usage=...`` make a broken one."""
    td = trust_domain or _trust_domain_of(parent) or "example.org"
    key = key or make_key(key_label or f"ica:{td}:{cn}:{next(_counter)}")
    sans = [f"spiffe://{td}"] if uri_sans is _UNSET else list(uri_sans)  # type: ignore[arg-type]
    nb, na = _window(not_before, not_after, 365)
    subject = _name(cn or f"{td} Intermediate CA {next(_counter)}", "terminus-test")
    cert = _build_ca(subject, parent.cert.subject, key, parent.key, nb, na, ca, path_length, key_usage, sans, ski,
                     name_constraints)
    return Cert(cert, key, parent)


def make_leaf(
    issuer: Cert | None,
    uri_sans: str | Sequence[str] = (),
    *,
    cn: str | None = "leaf",
    dns_sans: Sequence[str] = (),
    key: PrivateKey | None = None,
    key_label: str | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    ca: bool | None = False,
    bc_critical: bool = True,
    key_usage: Iterable[str] | None = LEAF_KEY_USAGE,
    ku_critical: bool = True,
    eku: Iterable[str | x509.ObjectIdentifier] | None = ("client", "server"),
    san_critical: bool | None = None,
    self_signed: bool = False,
    signing_key: PrivateKey | None = None,
    ski: bool = True,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    serial: int | None = None,
) -> Cert:
    """A leaf (SVID) issued by ``issuer``; each keyword breaks exactly one property.

    ``ca=None`` omits basicConstraints, ``key_usage=None`` / ``eku=None`` omit those
    extensions, ``self_signed=True`` (or ``issuer=None``) signs with the leaf's own key
    and issuer = subject, ``signing_key`` signs with a key other than the issuer's
    (a forged signature under the right issuer name).
    """
    sans = [uri_sans] if isinstance(uri_sans, str) else list(uri_sans)
    key = key or make_key(key_label or f"leaf:{sans}:{next(_counter)}")
    subject = _name(cn)
    self_signed = self_signed or issuer is None
    nb, na = _window(not_before, not_after, 3)
    cert = _build(
        subject=subject,
        issuer_name=subject if self_signed else issuer.cert.subject,  # type: ignore[union-attr]
        public_key=key.public_key(),
        signing_key=signing_key or (key if self_signed else issuer.key),  # type: ignore[union-attr]
        issuer_key_for_aki=key if self_signed else issuer.key,  # type: ignore[union-attr]
        not_before=nb,
        not_after=na,
        ca=ca,
        path_length=None,
        bc_critical=bc_critical,
        key_usage=key_usage,
        ku_critical=ku_critical,
        eku=eku,
        uri_sans=sans,
        dns_sans=dns_sans,
        san_critical=san_critical,
        ski=ski,
        name_constraints=None,
        extra_extensions=extra_extensions,
        serial=serial,
    )
    return Cert(cert, key, None if self_signed else issuer)


def _trust_domain_of(c: Cert) -> str | None:
    for uri in c.uri_sans:
        if uri.startswith("spiffe://"):
            return uri[len("spiffe://") :].split("/", 1)[0]
    return None


def leaf_client_context(api: Any, service: str, directory: Path) -> tuple[ssl.SSLContext, str]:
    """A client TLS context with ``service``'s leaf from a running server's API (``httpx``
    client), trusting the server's roots; and the trust domain."""
    leaf = api.get(f"/v1/agent/connect/ca/leaf/{service}").json()
    roots = api.get("/v1/connect/ca/roots").json()
    (directory / "leaf.pem").write_text(leaf["CertPEM"])
    (directory / "key.pem").write_text(leaf["PrivateKeyPEM"])
    ctx = ssl.create_default_context(cadata="".join(r["RootCert"] for r in roots["Roots"]))
    ctx.check_hostname = False
    ctx.load_cert_chain(directory / "leaf.pem", directory / "key.pem")
    return ctx, roots["TrustDomain"]


# ------------------------------------------------------------- DER surgery (no re-signing)


def der_element(tag: int, content: bytes) -> bytes:
    """One DER element (definite length up to 64 KiB), for certificates built byte by byte."""
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + content


def _children(data: bytes) -> list[bytes]:
    """The DER elements of a constructed value's content, whole."""
    out, i = [], 0
    while i < len(data):
        n, k = data[i + 1], i + 2
        if n & 0x80:
            n, k = int.from_bytes(data[k : k + (n & 0x7F)], "big"), k + (n & 0x7F)
        out.append(data[i : k + n])
        i = k + n
    return out


def _content(element: bytes) -> bytes:
    n = element[1]
    return element[2 + (n & 0x7F if n & 0x80 else 0):]


def with_extra_extension(der: bytes, extension: bytes) -> bytes:
    """``der`` with one more extension appended, lengths fixed, signature left as it was."""
    tbs, alg, sig = _children(_content(der))
    fields = _children(_content(tbs))
    exts = _children(_content(_content(fields[-1])))
    fields[-1] = der_element(0xA3, der_element(0x30, b"".join([*exts, extension])))
    return der_element(0x30, der_element(0x30, b"".join(fields)) + alg + sig)
