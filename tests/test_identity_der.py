"""The DER reader behind the verifier's leaf step, held to cryptography's parser.

`read_plain_leaf` may only shorten verifications that would succeed: whatever it accepts,
cryptography and OpenSSL must parse, the X509-SVID leaf profile must accept, and every fact
it returns must equal the parsed certificate's. These tests check that on a corpus of leaves
(each keyword of `make_leaf` breaks one property) and on thousands of mutated encodings.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID
from OpenSSL import crypto

from gateway.identity import ca
from gateway.identity.der import PlainLeaf, cert_layout, read_plain_leaf
from gateway.identity.spiffe import InvalidSpiffeID, parse_spiffe_id
from gateway.identity.verify import TrustBundle, VerificationError, Verifier, _check_leaf
from tests.support.pki import (
    NOW, Cert, der_element, hours, make_ca, make_intermediate, make_key, make_leaf, svc_id, with_extra_extension,
)

WEB = svc_id("web")
_MODELLED = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}


def assert_agrees(der: bytes, plain: PlainLeaf, purpose: str) -> None:
    """What the reader accepted, the parsers accept, with the same facts."""
    cert = x509.load_der_x509_certificate(der)
    crypto.load_certificate(crypto.FILETYPE_ASN1, der)
    try:
        sid, _ = _check_leaf(cert, purpose)
        assert sid.uri == plain.uri
    except VerificationError as e:  # the reader leaves the SPIFFE ID rules to its caller
        assert e.code == "invalid_spiffe_id", e.reason
        with pytest.raises(InvalidSpiffeID):
            parse_spiffe_id(plain.uri)
    assert cert.version is x509.Version.v3
    exts = cert.extensions
    for ext in exts:
        assert ext.oid in _MODELLED
        if ext.oid in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            assert not ext.critical
    try:
        bc = exts.get_extension_for_class(x509.BasicConstraints).value
        assert not bc.ca and bc.path_length is None
    except x509.ExtensionNotFound:
        pass
    try:
        akid = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert akid.authority_cert_issuer is None and akid.authority_cert_serial_number is None
        assert plain.akid == akid.key_identifier
    except x509.ExtensionNotFound:
        assert plain.akid is None
    uris = exts.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [plain.uri]
    assert plain.serial == cert.serial_number
    assert plain.not_before == cert.not_valid_before_utc.timestamp()
    assert plain.not_after == cert.not_valid_after_utc.timestamp()
    assert plain.issuer == cert.issuer.public_bytes()
    assert plain.tbs == cert.tbs_certificate_bytes
    assert plain.signature == cert.signature
    layout = cert_layout(der)
    assert layout is not None and plain.algorithm == layout.inner_algorithm == layout.outer_algorithm


@pytest.fixture(scope="module")
def issuers() -> tuple[Cert, Cert]:
    root = make_ca("example.org", cn="DER Root")
    return root, make_intermediate(root, cn="DER Issuing CA")


# (id, make(ica) -> leaf, readable for "client", readable for "server")
CORPUS = [
    ("plain", lambda ica: make_leaf(ica, WEB), True, True),
    ("rsa leaf key", lambda ica: make_leaf(ica, WEB, key=make_key(kind="rsa")), True, True),
    ("dns names beside the URI", lambda ica: make_leaf(ica, WEB, dns_sans=["web.example", "web"]), True, True),
    ("empty subject, critical SAN", lambda ica: make_leaf(ica, WEB, cn=None), True, True),
    ("no EKU", lambda ica: make_leaf(ica, WEB, eku=None), True, True),
    ("clientAuth only", lambda ica: make_leaf(ica, WEB, eku=["client"]), True, False),
    ("serverAuth only", lambda ica: make_leaf(ica, WEB, eku=["server"]), False, True),
    ("anyExtendedKeyUsage", lambda ica: make_leaf(ica, WEB, eku=["any"]), True, True),
    ("codeSigning beside clientAuth", lambda ica: make_leaf(ica, WEB, eku=["code_signing", "client"]), True, False),
    ("no basicConstraints", lambda ica: make_leaf(ica, WEB, ca=None), True, True),
    ("non-critical BC and KU", lambda ica: make_leaf(ica, WEB, bc_critical=False, ku_critical=False), True, True),
    ("no key identifiers", lambda ica: make_leaf(ica, WEB, ski=False), True, True),
    ("serial 1", lambda ica: make_leaf(ica, WEB, serial=1), True, True),
    ("serial of 20 octets", lambda ica: make_leaf(ica, WEB, serial=2**158 + 12345), True, True),
    ("serial with a leading zero octet", lambda ica: make_leaf(ica, WEB, serial=0x80), True, True),
    ("GeneralizedTime after 2049", lambda ica: make_leaf(ica, WEB, not_after=dt.datetime(2051, 2, 28, 23, 59, 59, tzinfo=dt.timezone.utc)), True, True),
    ("keyAgreement beside digitalSignature", lambda ica: make_leaf(ica, WEB, key_usage=["digital_signature", "key_agreement"]), True, True),
    ("invalid SPIFFE ID (the caller's rule)", lambda ica: make_leaf(ica, "spiffe://Example.org/ns/default/dc/dc1/svc/web"), True, True),
    # not read: the parsers decide
    ("empty subject, SAN not critical", lambda ica: make_leaf(ica, WEB, cn=None, san_critical=False), False, False),
    ("two URI SANs", lambda ica: make_leaf(ica, [WEB, svc_id("db")]), False, False),
    ("no URI SAN", lambda ica: make_leaf(ica, (), dns_sans=["web"]), False, False),
    ("CA:TRUE", lambda ica: make_leaf(ica, WEB, ca=True), False, False),
    ("keyCertSign", lambda ica: make_leaf(ica, WEB, key_usage=["digital_signature", "key_cert_sign"]), False, False),
    ("cRLSign", lambda ica: make_leaf(ica, WEB, key_usage=["digital_signature", "crl_sign"]), False, False),
    ("no digitalSignature", lambda ica: make_leaf(ica, WEB, key_usage=["key_encipherment"]), False, False),
    ("encipherOnly", lambda ica: make_leaf(ica, WEB, key_usage=["digital_signature", "key_agreement", "encipher_only"]), False, False),
    ("decipherOnly", lambda ica: make_leaf(ica, WEB, key_usage=["digital_signature", "key_agreement", "decipher_only"]), False, False),
    ("no keyUsage", lambda ica: make_leaf(ica, WEB, key_usage=None), False, False),
    ("self-signed", lambda ica: make_leaf(None, WEB), False, False),
    ("unknown extension", lambda ica: make_leaf(ica, WEB, extra_extensions=[
        (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"\x05\x00"), False)]), False, False),
    ("critical subject key id", lambda ica: make_leaf(ica, WEB, ski=False, extra_extensions=[
        (x509.SubjectKeyIdentifier(b"\x01" * 20), True)]), False, False),
    ("subject key id with a trailing octet (raw)", lambda ica: make_leaf(ica, WEB, ski=False, extra_extensions=[
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x04\x14" + b"\x01" * 20 + b"\x00"), False)]), False, False),
    ("subject key id that is not an OCTET STRING (raw)", lambda ica: make_leaf(ica, WEB, ski=False, extra_extensions=[
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x05\x14" + b"\x01" * 20), False)]), False, False),
    ("subject key id, raw and well formed", lambda ica: make_leaf(ica, WEB, ski=False, extra_extensions=[
        (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x04\x14" + b"\x01" * 20), False)]), True, True),
    ("authority key id naming issuer and serial", lambda ica: make_leaf(ica, WEB, ski=False, extra_extensions=[
        (x509.AuthorityKeyIdentifier(b"\x01" * 20, [x509.DNSName("ca")], 7), False)]), False, False),
    ("multi-valued RDN subject", lambda ica: _rebuilt(ica, subject=x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "a"), x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "b")])])), False, False),
    ("an email name in the SAN", lambda ica: _rebuilt(ica, sans=[x509.UniformResourceIdentifier(WEB), x509.RFC822Name("a@b.c")]), False, False),
    ("an IP name of 5 octets (raw SAN)", lambda ica: _rebuilt(ica, raw_san=_raw_san(WEB.encode(), b"\x87\x05\x0a\x00\x00\x01\x02")), False, False),
    ("a URI name of 8-bit text (raw SAN)", lambda ica: _rebuilt(ica, raw_san=_raw_san(WEB.encode() + b"\xc3\xa9")), False, False),
    ("the raw SAN encoder itself", lambda ica: _rebuilt(ica, raw_san=_raw_san(WEB.encode(), b"\x87\x04\x0a\x00\x00\x01")), True, True),
]


def _terminus_leaf(ica: Cert, **kw: object) -> Cert:
    """A leaf as terminus's own CA issues it (Connect CA leaf endpoint)."""
    pem, key_pem = ca.generate_leaf(ica.cert, ica.key, WEB, **kw)  # type: ignore[arg-type]
    return Cert(ca.load_certificate(pem), ca.load_private_key(key_pem), ica)  # type: ignore[arg-type]


CORPUS[3:3] = [
    ("terminus CA leaf", lambda ica: _terminus_leaf(ica), True, True),
    ("terminus CA leaf, RSA", lambda ica: _terminus_leaf(ica, key_type="rsa", key_bits=2048), True, True),
    ("terminus CA leaf with DNS and IP names", lambda ica: _terminus_leaf(ica, dns_sans=["web.internal"], ip_sans=["127.0.0.1", "::1"]), True, True),
]


def _raw_san(uri: bytes, extra: bytes = b"") -> bytes:
    """A SAN value with one URI and ``extra`` encoded names, bytes as given (short lengths)."""
    names = b"\x86" + bytes([len(uri)]) + uri + extra
    return b"\x30" + bytes([len(names)]) + names


def _rebuilt(ica: Cert, *, subject: x509.Name | None = None, sans: list[x509.GeneralName] | None = None,
             raw_san: bytes | None = None) -> Cert:
    """A plain leaf with its subject or its SAN replaced (``raw_san``: written as given)."""
    leaf = make_leaf(ica, WEB)
    cert = (
        x509.CertificateBuilder().subject_name(subject or leaf.cert.subject).issuer_name(ica.cert.subject)
        .public_key(leaf.key.public_key()).serial_number(99).not_valid_before(NOW - hours(1)).not_valid_after(NOW + hours(24))
    )
    for ext in leaf.cert.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName) and sans is not None:
            value = x509.SubjectAlternativeName(sans)
        elif isinstance(value, x509.SubjectAlternativeName) and raw_san is not None:
            value = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, raw_san)  # type: ignore[assignment]
        cert = cert.add_extension(value, ext.critical)
    return Cert(cert.sign(ica.key, hashes.SHA256()), leaf.key, ica)  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "client", "server"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_reader_on_the_corpus(issuers: tuple[Cert, Cert], make, client: bool, server: bool) -> None:
    der = make(issuers[1]).der
    for purpose, readable in (("client", client), ("server", server)):
        plain = read_plain_leaf(der, purpose)
        assert (plain is not None) == readable, purpose
        if plain is not None:
            assert_agrees(der, plain, purpose)


def test_reader_on_mutated_encodings(issuers: tuple[Cert, Cert]) -> None:
    """Byte flips, truncations and insertions: never a reading the parsers disagree with."""
    rng = random.Random(7)
    bases = [make_leaf(issuers[1], WEB).der, make_leaf(issuers[1], WEB, cn=None, key=make_key(kind="rsa")).der,
             make_leaf(issuers[1], WEB, dns_sans=["a"], eku=["any"]).der,
             _terminus_leaf(issuers[1], dns_sans=["web.internal"], ip_sans=["10.0.0.1"]).der]
    read = 0
    for _ in range(8000):
        der = bytearray(rng.choice(bases))
        roll = rng.random()
        if roll < 0.6:
            for _ in range(rng.randint(1, 3)):
                der[rng.randrange(len(der))] = rng.randrange(256)
        elif roll < 0.8:
            del der[rng.randrange(len(der)):]
        else:
            der[rng.randrange(len(der)):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        data = bytes(der)
        for purpose in ("client", "server"):
            plain = read_plain_leaf(data, purpose)
            if plain is not None:
                read += 1
                assert_agrees(data, plain, purpose)
    assert read > 1000  # most flips land in values (key, signature, names): still read


def test_remembered_extensions_never_excuse_a_duplicate(issuers: tuple[Cert, Cert]) -> None:
    """The extensions a CA repeats are read once per distinct block; a leaf that adds a second
    subject key id (or SAN) to a block already read is still refused."""
    long_skid = (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_KEY_IDENTIFIER, b"\x04\x81\x90" + b"\x02" * 0x90), False)
    leaf = make_leaf(issuers[1], WEB, ski=False, extra_extensions=[long_skid])
    plain = read_plain_leaf(leaf.der, "client")
    assert plain is not None
    assert_agrees(leaf.der, plain, "client")  # the long subject key id is read as a repeated extension
    short_skid = der_element(0x30, b"\x06\x03\x55\x1d\x0e" + der_element(0x04, der_element(0x04, b"\x03" * 20)))
    second_san = der_element(0x30, b"\x06\x03\x55\x1d\x11" + der_element(0x04, der_element(0x30, der_element(0x86, svc_id("db").encode()))))
    for extra in (short_skid, second_san):
        doubled = with_extra_extension(leaf.der, extra)
        with pytest.raises(x509.DuplicateExtension):  # cryptography refuses them
            x509.load_der_x509_certificate(doubled).extensions
        assert read_plain_leaf(doubled, "client") is None
    assert read_plain_leaf(leaf.der, "client") == plain


def test_leaf_step_identity_equals_the_full_path(issuers: tuple[Cert, Cert]) -> None:
    """The identity the leaf step builds from the DER is the one the parsers build."""
    root, ica = issuers
    fast = Verifier([TrustBundle("example.org", [root.cert])])
    full = Verifier([TrustBundle("example.org", [root.cert])], reuse_validated_issuers=False)
    fast.verify(make_leaf(ica, svc_id("warm")).chain_der())
    readable = [make(ica) for _, make, client, _ in CORPUS if client]
    recorded = {read_plain_leaf(make_leaf(ica, svc_id("warm")).der, "client").akid}  # type: ignore[union-attr]
    stepped = 0
    for leaf in readable:
        chain = leaf.chain_der()
        if leaf.uri_sans[0].startswith("spiffe://Example"):
            with pytest.raises(VerificationError) as ei:
                fast.verify(chain)
            assert ei.value.code == "invalid_spiffe_id"
            continue
        assert fast.verify(chain) == full.verify(chain)
        # issuers are recorded under the leaf's authority key id: the first leaf of each
        # distinct one (the warm-up's, or none) takes the full path, the rest the leaf step
        akid = read_plain_leaf(leaf.der, "client").akid  # type: ignore[union-attr]
        stepped += akid in recorded
        recorded.add(akid)
    assert fast.leaf_steps == stepped > len(readable) // 2
