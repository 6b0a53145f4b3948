"""Connect CA: roots, leaves, CSRs, key encryption and rotation.

Chains are verified with OpenSSL through pyOpenSSL's X509Store (X509_STRICT),
independently of terminus' own verifier.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from gateway.identity import ca, keys

CLUSTER = "11111111-2222-3333-4444-555555555555"
TD = f"{CLUSTER}.consul"
WEB = f"spiffe://{TD}/ns/default/dc/dc1/svc/web"
API = f"spiffe://{TD}/ns/default/dc/dc1/svc/api"


# --------------------------------------------------------------------------- helpers


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _verify(
    leaf_pem: str,
    trusted: list[str],
    untrusted: list[str] = (),  # type: ignore[assignment]
    at: datetime | None = None,
) -> None:
    """Verify ``leaf_pem`` with OpenSSL; raises X509StoreContextError on failure."""
    store = crypto.X509Store()
    store.set_flags(crypto.X509StoreFlags.X509_STRICT)
    for pem in trusted:
        store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, pem.encode()))
    if at is not None:
        store.set_time(at)
    chain = [crypto.load_certificate(crypto.FILETYPE_PEM, p.encode()) for p in untrusted]
    leaf = crypto.load_certificate(crypto.FILETYPE_PEM, leaf_pem.encode())
    crypto.X509StoreContext(store, leaf, chain=chain).verify_certificate()


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(cls)


def _uris(cert: x509.Certificate) -> list[str]:
    return _ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )


def _csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    names: list[x509.GeneralName],
    *,
    cn: str | None = None,
    ca_ext: bool = False,
) -> str:
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    )
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca_ext:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def ec_root() -> tuple[ca.CARoot, str]:
    return ca.generate_root(TD)


@pytest.fixture(scope="module")
def rsa_root() -> tuple[ca.CARoot, str]:
    return ca.generate_root(TD, key_type="rsa", key_bits=2048)


# --------------------------------------------------------------------------- keys


def test_generate_key_types_and_sizes() -> None:
    assert keys.key_info(keys.generate_key()) == ("ec", 256)
    assert keys.key_info(keys.generate_key("ec", 384)) == ("ec", 384)
    assert keys.key_info(keys.generate_key("RSA", 2048)) == ("rsa", 2048)


@pytest.mark.parametrize(
    ("key_type", "bits", "message"),
    [
        ("rsa", 1024, 'invalid key_bits 1024 for key_type "rsa"'),
        ("rsa", 256, 'invalid key_bits 256 for key_type "rsa"'),
        ("ec", 521, 'invalid key_bits 521 for key_type "ec"'),
        ("ec", 2048, 'invalid key_bits 2048 for key_type "ec"'),
        ("dsa", 2048, 'invalid key_type "dsa"'),
    ],
)
def test_generate_key_rejects_bad_params(key_type: str, bits: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        keys.generate_key(key_type, bits)


def test_key_pem_round_trip_uses_consul_block_types() -> None:
    eck, rsak = keys.generate_key(), keys.generate_key("rsa", 2048)
    ec_pem, rsa_pem = keys.private_key_to_pem(eck), keys.private_key_to_pem(rsak)
    assert ec_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert rsa_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert keys.key_id(keys.private_key_from_pem(ec_pem).public_key()) == keys.key_id(eck.public_key())
    pkcs8 = eck.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert keys.key_id(keys.private_key_from_pem(pkcs8).public_key()) == keys.key_id(eck.public_key())
    with pytest.raises(ValueError):
        keys.private_key_from_pem("not a key")


def test_key_id_is_consul_sha256_of_spki() -> None:
    pub = keys.generate_key().public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = keys.key_id(pub)
    assert kid == ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest())
    assert re.fullmatch(r"([0-9a-f]{2}:){31}[0-9a-f]{2}", kid)


def test_key_encryption_round_trip() -> None:
    pem = keys.private_key_to_pem(keys.generate_key())
    secret = b"\x01" * 32
    blob = keys.encrypt_key_pem(pem, secret)
    assert blob.startswith("v1:") and "\n" not in blob and "PRIVATE" not in blob
    assert keys.decrypt_key_pem(blob, secret) == pem
    assert keys.encrypt_key_pem(pem, secret) != blob  # fresh salt and nonce each time


def test_key_decryption_failures() -> None:
    blob = keys.encrypt_key_pem("-----BEGIN EC PRIVATE KEY-----\n", b"right-secret-0123456789abcdef0123")
    with pytest.raises(keys.KeyDecryptionError, match="wrong secret"):
        keys.decrypt_key_pem(blob, b"wrong-secret-0123456789abcdef0123")
    raw = bytearray(base64.urlsafe_b64decode(blob[3:] + "=" * (-len(blob[3:]) % 4)))
    raw[-1] ^= 1
    tampered = "v1:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(keys.KeyDecryptionError):
        keys.decrypt_key_pem(tampered, b"right-secret-0123456789abcdef0123")
    with pytest.raises(keys.KeyDecryptionError, match="unsupported"):
        keys.decrypt_key_pem("v2:" + blob[3:], b"right-secret-0123456789abcdef0123")
    with pytest.raises(keys.KeyDecryptionError):
        keys.decrypt_key_pem("v1:abc", b"right-secret-0123456789abcdef0123")
    with pytest.raises(ValueError):
        keys.encrypt_key_pem("x", b"")


# --------------------------------------------------------------------------- roots


@pytest.mark.parametrize("fixture", ["ec_root", "rsa_root"])
def test_root_properties(fixture: str, request: pytest.FixtureRequest) -> None:
    root, key_pem = request.getfixturevalue(fixture)
    cert = _cert(root.root_cert_pem)
    key = keys.private_key_from_pem(key_pem)

    assert _uris(cert) == [f"spiffe://{TD}"]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    ski = _ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert ski == _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
    assert keys.hex_string(ski) == keys.key_id(key.public_key()) == root.signing_key_id
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert re.fullmatch(r"pri-[0-9a-z]{8}\.consul\.ca\.11111111\.consul", cn)
    assert cert.issuer == cert.subject
    assert 0 < cert.serial_number < 2**128
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(days=3650)
    _verify(root.root_cert_pem, [root.root_cert_pem])  # self-signed, OpenSSL accepts it as a CA

    expected_type = ("ec", 256) if fixture == "ec_root" else ("rsa", 2048)
    assert (root.private_key_type, root.private_key_bits) == expected_type
    der = cert.public_bytes(serialization.Encoding.DER)
    assert root.id == keys.hex_string(hashlib.sha1(der).digest())  # noqa: S324
    assert root.active and root.rotated_out_at is None and root.intermediate_cert_pems == []


def test_root_consul_json(ec_root: tuple[ca.CARoot, str]) -> None:
    root, _ = ec_root
    doc = root.to_consul_json(create_index=7, modify_index=9)
    assert list(doc) == [
        "ID", "Name", "SerialNumber", "SigningKeyID", "ExternalTrustDomain", "NotBefore",
        "NotAfter", "RootCert", "IntermediateCerts", "Active", "PrivateKeyType",
        "PrivateKeyBits", "CreateIndex", "ModifyIndex",
    ]  # fmt: skip
    assert doc["ExternalTrustDomain"] == CLUSTER and root.trust_domain == TD
    assert doc["Name"] == "Consul CA Primary Cert"
    assert doc["SerialNumber"] == root.serial_number % 2**64
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["NotBefore"])
    assert doc["RootCert"].endswith("-----END CERTIFICATE-----\n")
    assert doc["IntermediateCerts"] is None and doc["Active"] is True
    assert (doc["CreateIndex"], doc["ModifyIndex"]) == (7, 9)
    assert (doc["PrivateKeyType"], doc["PrivateKeyBits"]) == ("ec", 256)


def test_root_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="trust domain"):
        ca.generate_root("spiffe://x/y")
    with pytest.raises(ValueError, match="key_bits 1024"):
        ca.generate_root(TD, key_type="rsa", key_bits=1024)
    root, _ = ca.generate_root(TD.upper(), key_type="ec", key_bits=384)
    assert _uris(root.certificate()) == [f"spiffe://{TD}"]  # lower-cased like Consul
    assert root.private_key_bits == 384


# --------------------------------------------------------------------------- leaves


def _assert_leaf_shape(leaf: x509.Certificate, root: x509.Certificate, uri: str) -> None:
    assert _uris(leaf) == [uri]
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    eku = _ext(leaf, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = _ext(leaf, x509.SubjectKeyIdentifier).value.digest
    assert ski == keys.key_id_bytes(leaf.public_key())  # type: ignore[arg-type]
    aki = _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == _ext(root, x509.SubjectKeyIdentifier).value.digest
    assert leaf.issuer == root.subject


def test_ec_leaf_verifies_and_has_consul_shape(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pem, leaf_key = ca.generate_leaf(root, key, WEB, now=now)
    leaf = _cert(pem)

    _verify(pem, [root.root_cert_pem])
    _assert_leaf_shape(leaf, root.certificate(), WEB)
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_encipherment and not ku.value.key_cert_sign
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web"
    assert leaf.not_valid_before_utc == now - timedelta(minutes=1)
    assert leaf.not_valid_after_utc == now + timedelta(hours=72)
    assert keys.key_id(keys.private_key_from_pem(leaf_key).public_key()) == keys.key_id(
        leaf.public_key()  # type: ignore[arg-type]
    )


def test_rsa_leaf_gets_key_encipherment(rsa_root: tuple[ca.CARoot, str]) -> None:
    root, key = rsa_root
    pem, _ = ca.generate_leaf(root, key, WEB, key_type="rsa", key_bits=2048)
    _verify(pem, [root.root_cert_pem])
    leaf = _cert(pem)
    _assert_leaf_shape(leaf, root.certificate(), WEB)
    ku = _ext(leaf, x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


def test_ec_leaf_from_rsa_root_and_sans(rsa_root: tuple[ca.CARoot, str]) -> None:
    root, key = rsa_root
    pub = keys.generate_key().public_key()
    pem = ca.sign_leaf(
        root.root_cert_pem,
        key,
        spiffe_uri=WEB,
        public_key=keys.public_key_to_pem(pub),
        dns_sans=["web.service.consul", "web.service.consul"],
        ip_sans=["10.0.0.1", ipaddress.ip_address("::1")],
        ttl=timedelta(hours=1),
    )
    _verify(pem, [root.root_cert_pem])
    san = _ext(_cert(pem), x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert san.get_values_for_type(x509.DNSName) == ["web.service.consul"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert not _ext(_cert(pem), x509.KeyUsage).value.key_encipherment  # EC leaf key


def test_leaf_without_service_has_empty_subject_and_critical_san(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    uri = f"spiffe://{TD}/agent/client/dc/dc1/id/abc"
    pem, _ = ca.generate_leaf(root, key, uri)
    leaf = _cert(pem)
    assert len(leaf.subject) == 0 and _ext(leaf, x509.SubjectAlternativeName).critical
    _verify(pem, [root.root_cert_pem])


def test_leaf_rejections(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    other, other_key = ca.generate_root("22222222-2222-3333-4444-555555555555.consul")
    pem, _ = ca.generate_leaf(root, key, WEB)
    with pytest.raises(crypto.X509StoreContextError):
        _verify(pem, [other.root_cert_pem])
    with pytest.raises(ValueError, match="trust domain"):
        ca.generate_leaf(root, key, "spiffe://evil.consul/ns/default/dc/dc1/svc/web")
    with pytest.raises(ValueError, match="does not match"):
        ca.generate_leaf(root, other_key, WEB)
    with pytest.raises(ValueError, match="no path"):
        ca.generate_leaf(root, key, f"spiffe://{TD}")
    with pytest.raises(ValueError, match="spiffe scheme"):
        ca.generate_leaf(root, key, f"https://{TD}/svc/web")
    with pytest.raises(ValueError, match="not a CA"):
        ca.sign_leaf(pem, keys.generate_key(), spiffe_uri=WEB, public_key=keys.generate_key().public_key())


def test_leaf_expiry_and_ttl_cap(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    now = datetime.now(timezone.utc)
    pem, _ = ca.generate_leaf(root, key, WEB, ttl=timedelta(hours=1), now=now)
    _verify(pem, [root.root_cert_pem], at=now + timedelta(minutes=59))
    with pytest.raises(crypto.X509StoreContextError):
        _verify(pem, [root.root_cert_pem], at=now + timedelta(hours=1, minutes=1))
    long_pem, _ = ca.generate_leaf(root, key, WEB, ttl=timedelta(days=10000))
    assert _cert(long_pem).not_valid_after_utc == root.not_after  # capped at the issuer


def test_leaf_via_intermediate(ec_root: tuple[ca.CARoot, str]) -> None:
    """A secondary DC signs with an intermediate (pathlen 0) that the primary root issued."""
    root, root_key_pem = ec_root
    root_cert, root_key = root.certificate(), keys.private_key_from_pem(root_key_pem)
    ikey = keys.generate_key()
    now = datetime.now(timezone.utc)
    inter = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca.ca_common_name(CLUSTER, primary=False))]))
        .issuer_name(root_cert.subject)
        .public_key(ikey.public_key())
        .serial_number(ca.random_serial())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ext(root_cert, x509.KeyUsage).value, critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TD}")]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier(keys.key_id_bytes(ikey.public_key())), critical=False)
        .add_extension(_ext(root_cert, x509.AuthorityKeyIdentifier).value, critical=False)
        .sign(root_key, hashes.SHA256())
    )
    inter_pem = inter.public_bytes(serialization.Encoding.PEM).decode()
    pem, _ = ca.generate_leaf(inter_pem, ikey, API)
    _assert_leaf_shape(_cert(pem), inter, API)
    _verify(pem, [root.root_cert_pem], [inter_pem])
    with pytest.raises(crypto.X509StoreContextError):
        _verify(pem, [root.root_cert_pem])  # the intermediate is needed


# --------------------------------------------------------------------------- CSRs


def test_sign_good_csr(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    leaf_key = keys.generate_key()
    csr = _csr(
        leaf_key,
        [x509.UniformResourceIdentifier(API), x509.DNSName("api.local")],
        cn="admin",  # ignored: the CN comes from the SPIFFE ID
        ca_ext=True,  # ignored: leaves are never CAs
    )
    assert ca.parse_csr(csr).spiffe_uri == API
    pem, uri = ca.sign_csr(root.root_cert_pem, key, csr)
    assert uri == API
    leaf = _cert(pem)
    _verify(pem, [root.root_cert_pem])
    _assert_leaf_shape(leaf, root.certificate(), API)
    assert keys.key_id(leaf.public_key()) == keys.key_id(leaf_key.public_key())  # type: ignore[arg-type]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "api"
    assert _ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["api.local"]
    rsa_csr = _csr(keys.generate_key("rsa", 2048), [x509.UniformResourceIdentifier(API)])
    rsa_pem, _ = ca.sign_csr(root, key, ca.parse_csr(rsa_csr))
    assert _ext(_cert(rsa_pem), x509.KeyUsage).value.key_encipherment


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([x509.UniformResourceIdentifier(API), x509.UniformResourceIdentifier(WEB)], "invalid number of URIs: 2"),
        ([x509.DNSName("api.local")], "invalid number of URIs: 0"),
        ([], "invalid number of URIs: 0"),
        ([x509.UniformResourceIdentifier(API), x509.RFC822Name("a@b.c")], "email addresses"),
        ([x509.UniformResourceIdentifier(f"https://{TD}/svc/api")], "not a valid SPIFFE ID"),
    ],
)
def test_csr_san_rules(ec_root: tuple[ca.CARoot, str], names: list[x509.GeneralName], message: str) -> None:
    root, key = ec_root
    with pytest.raises(ca.CSRError, match=re.escape(message)):
        ca.sign_csr(root, key, _csr(keys.generate_key(), names))


def test_csr_bad_signature_and_garbage_rejected(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    good = _csr(keys.generate_key(), [x509.UniformResourceIdentifier(API)])
    der = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(ca.CSRError, match="signature is invalid"):
        ca.sign_csr(root, key, bad)
    with pytest.raises(ca.CSRError, match="invalid CSR"):
        ca.sign_csr(root, key, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")


def test_csr_other_trust_domain_and_weak_key_rejected(ec_root: tuple[ca.CARoot, str]) -> None:
    root, key = ec_root
    foreign = _csr(keys.generate_key(), [x509.UniformResourceIdentifier("spiffe://other.consul/ns/default/dc/dc1/svc/api")])
    assert ca.parse_csr(foreign).spiffe_uri.startswith("spiffe://other.consul/")  # parses; CA refuses
    with pytest.raises(ca.CSRError, match="trust domain"):
        ca.sign_csr(root, key, foreign)
    weak = _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024), [x509.UniformResourceIdentifier(API)])
    with pytest.raises(ca.CSRError, match="at least 2048"):
        ca.parse_csr(weak)


# --------------------------------------------------------------------------- rotation


def test_rotation_before_during_after() -> None:
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    old, old_key = ca.generate_root(TD, now=t0 - timedelta(days=30))
    # Before: only the old root exists and signs.
    old_leaf, _ = ca.generate_leaf(old, old_key, WEB, now=t0)
    _verify(old_leaf, [old.root_cert_pem], at=t0)
    assert ca.roots_to_publish([old], t0) == [old]

    # Rotation at t1: a new root (different key and CN), cross-signed by the old one.
    t1 = t0 + timedelta(hours=1)
    new, new_key = ca.generate_root(TD, key_type="rsa", key_bits=2048, now=t1)
    assert new.certificate().subject != old.certificate().subject
    old_out, new_in = ca.rotate_root(old, old_key, new, now=t1)
    assert not old_out.active and old_out.rotated_out_at == t1 and new_in.active
    [xc_pem] = new_in.intermediate_cert_pems
    xc = _cert(xc_pem)
    new_cert = new.certificate()
    assert xc.subject == new_cert.subject and xc.issuer == old.certificate().subject
    assert xc.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == new_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _ext(xc, x509.SubjectKeyIdentifier).value == _ext(new_cert, x509.SubjectKeyIdentifier).value
    assert _ext(xc, x509.AuthorityKeyIdentifier).value.key_identifier == bytes.fromhex(
        old.signing_key_id.replace(":", "")
    )
    assert _ext(xc, x509.BasicConstraints).value.ca
    assert _uris(xc) == [f"spiffe://{TD}"]
    assert new_in.to_consul_json()["IntermediateCerts"] == [xc_pem]

    # During: both roots published; new leaves come from the new root.
    t2 = t1 + timedelta(minutes=5)
    published = ca.roots_to_publish([old_out, new_in], t2)
    assert published == [old_out, new_in]
    bundle = [r.root_cert_pem for r in published]
    new_leaf, _ = ca.generate_leaf(new_in, new_key, WEB, now=t2)
    _verify(old_leaf, bundle, at=t2)  # old leaves still verify
    _verify(old_leaf, [old.root_cert_pem], at=t2)
    _verify(new_leaf, [new.root_cert_pem], at=t2)
    _verify(new_leaf, bundle, at=t2)
    # A proxy that only knows the old root accepts the new leaf through the cross-signed cert ...
    _verify(new_leaf, [old.root_cert_pem], [xc_pem], at=t2)
    chain = ca.chain_pem(new_leaf, new_in)
    assert chain.count("BEGIN CERTIFICATE") == 2 and chain.endswith(xc_pem)
    # ... and only through it.
    with pytest.raises(crypto.X509StoreContextError):
        _verify(new_leaf, [old.root_cert_pem], at=t2)

    # The old root stays until the last leaf it signed (issued up to t1) has expired.
    last_old_leaf, _ = ca.generate_leaf(old, old_key, WEB, now=t1)
    expiry = _cert(last_old_leaf).not_valid_after_utc
    assert expiry == t1 + ca.DEFAULT_LEAF_TTL
    assert ca.roots_to_publish([old_out, new_in], expiry) == [old_out, new_in]
    _verify(last_old_leaf, bundle, at=expiry - timedelta(seconds=1))

    # After: the old root drops out; old leaves are expired anyway, new ones still verify.
    t3 = expiry + timedelta(seconds=1)
    assert ca.roots_to_publish([old_out, new_in], t3) == [new_in]
    with pytest.raises(crypto.X509StoreContextError):
        _verify(last_old_leaf, [old.root_cert_pem, new.root_cert_pem], at=t3)
    _verify(new_leaf, [r.root_cert_pem for r in ca.roots_to_publish([old_out, new_in], t3)], at=t3)


def test_roots_to_publish_rules() -> None:
    now = datetime(2030, 1, 10, tzinfo=timezone.utc)
    root, _ = ca.generate_root(TD)
    fresh = ca.CARoot(**{**root.__dict__, "active": False, "rotated_out_at": now - timedelta(hours=71)})
    stale = ca.CARoot(**{**root.__dict__, "active": False, "rotated_out_at": now - timedelta(hours=73)})
    unknown = ca.CARoot(**{**root.__dict__, "active": False, "rotated_out_at": None})
    roots = [stale, fresh, unknown, root]
    assert ca.roots_to_publish(roots, now) == [fresh, unknown, root]
    # Consul-style double margin, and naive datetimes are taken as UTC.
    assert ca.roots_to_publish(roots, now.replace(tzinfo=None), max_leaf_ttl=timedelta(hours=144)) == roots


def test_cross_sign_requires_matching_old_key(ec_root: tuple[ca.CARoot, str]) -> None:
    old, _ = ec_root
    new, new_key = ca.generate_root(TD)
    with pytest.raises(ValueError, match="does not match"):
        ca.cross_sign(new.root_cert_pem, new_key, old.root_cert_pem)


def test_trusted_rsa_key_parse_matches_validated_parse() -> None:
    pem = keys.private_key_to_pem(keys.generate_key("rsa", 2048))
    fast = keys.private_key_from_pem(pem, trusted=True)
    assert keys.key_id(fast.public_key()) == keys.key_id(keys.private_key_from_pem(pem).public_key())
