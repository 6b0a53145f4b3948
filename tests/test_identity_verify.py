"""X509-SVID verifier: a bad-certificate matrix (one flaw each, one specific reason each),
accepted chains, and the cache (hits, expiry, invalidation, bounds)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from OpenSSL import crypto

from gateway.identity.spiffe import InvalidSpiffeID, ServiceID, SpiffeID
from gateway.identity.verify import MAX_CHAIN_LENGTH, TrustBundle, VerificationError, Verifier
from tests.support.pki import (
    LEAF_KEY_USAGE,
    NOW,
    Cert,
    bundle_pem,
    hours,
    make_ca,
    make_intermediate,
    make_key,
    make_leaf,
    svc_id,
)

WEB = svc_id("web")  # spiffe://example.org/ns/default/dc/dc1/svc/web


@dataclass
class PKI:
    ca: Cert
    ica: Cert
    other_ca: Cert
    rogue: Cert

    def verifier(self, *, other: bool = False, **kw: Any) -> Verifier:
        bundles = [TrustBundle.from_pem("example.org", self.ca.cert_pem)]
        if other:
            bundles.append(TrustBundle.from_pem("other.org", self.other_ca.cert_pem))
        return Verifier(bundles, **kw)


@pytest.fixture(scope="module")
def pki() -> PKI:
    ca = make_ca("example.org", cn="Example Root")
    return PKI(
        ca=ca,
        ica=make_intermediate(ca, cn="Example Issuing CA"),
        other_ca=make_ca("other.org", cn="Other Root"),
        rogue=make_ca("example.org", cn="Rogue Root"),
    )


# ----------------------------------------------------------------------------- the matrix
# Each case: (id, build(pki) -> chain, use both trust domains?, expected code, expected reason).
# A reason ending in "..." is a prefix match (the rest names OpenSSL's depth/subject).

Chain = list[bytes]
Case = tuple[str, Callable[[PKI], Chain], bool, str, str]


def leaf(pki: PKI, uri: str | list[str] = WEB, **kw: Any) -> Chain:
    return make_leaf(pki.ca, uri, **kw).chain_der()


BAD: list[Case] = [
    ("expired", lambda p: leaf(p, not_before=NOW - hours(48), not_after=NOW - hours(1)), False,
     "expired", "certificate has expired (depth 0: 'CN=leaf')"),
    ("not_yet_valid", lambda p: leaf(p, not_before=NOW + hours(1)), False,
     "not_yet_valid", "certificate is not yet valid (depth 0: 'CN=leaf')"),
    ("unknown_ca", lambda p: make_leaf(p.rogue, WEB).chain_der(), False,
     "unknown_issuer",
     "unable to get local issuer certificate (depth 0: 'CN=leaf'; issuer 'CN=Rogue Root,O=terminus-test' is "
     "neither in the trust bundle of 'example.org' nor among the 0 presented intermediate(s))"),
    ("unknown_ca_root_presented", lambda p: make_leaf(p.rogue, WEB).chain_der(include_root=True), False,
     "untrusted_root", "self-signed certificate in certificate chain (depth 1: 'CN=Rogue Root,O=terminus-test')"),
    ("missing_intermediate", lambda p: make_leaf(p.ica, WEB).chain_der()[:1], False,
     "unknown_issuer",
     "unable to get local issuer certificate (depth 0: 'CN=leaf'; issuer 'CN=Example Issuing CA,O=terminus-test' "
     "is neither in the trust bundle of 'example.org' nor among the 0 presented intermediate(s))"),
    ("forged_signature", lambda p: leaf(p, signing_key=make_key("forger")), False,
     "bad_signature", "certificate signature failure (depth 0: 'CN=leaf')"),
    ("self_signed_leaf", lambda p: make_leaf(None, WEB).chain_der(), False,
     "self_signed", "leaf certificate is self-signed (issuer equals subject)"),
    ("two_uri_sans", lambda p: leaf(p, [WEB, svc_id("api")]), False,
     "multiple_uri_sans", "leaf certificate must have exactly one URI SAN, found 2"),
    ("no_uri_san", lambda p: make_leaf(p.ca, [], dns_sans=["web.example.org"]).chain_der(), False,
     "no_uri_san", "leaf certificate has no URI SAN"),
    ("no_san_extension", lambda p: leaf(p, []), False,
     "no_uri_san", "leaf certificate has no URI SAN (no subjectAltName extension)"),
    ("non_spiffe_uri", lambda p: leaf(p, "https://example.org/web"), False,
     "invalid_spiffe_id", "leaf URI SAN 'https://example.org/web' is not a valid SPIFFE ID: scheme must be 'spiffe://'"),
    ("upper_case_scheme", lambda p: leaf(p, "SPIFFE://example.org/web"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'SPIFFE://example.org/web' is not a valid SPIFFE ID: scheme must be lower case 'spiffe'"),
    ("upper_case_trust_domain", lambda p: leaf(p, "spiffe://Example.org/web"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://Example.org/web' is not a valid SPIFFE ID: trust domain must be lower case"),
    ("newline_in_id", lambda p: leaf(p, WEB + "\n"), False,
     "invalid_spiffe_id",
     f"leaf URI SAN {WEB + chr(10)!r} is not a valid SPIFFE ID: path segment contains invalid character '\\n' "
     "(allowed: A-Z a-z 0-9 . - _)"),
    ("dot_segment", lambda p: leaf(p, "spiffe://example.org/ns/../svc/web"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://example.org/ns/../svc/web' is not a valid SPIFFE ID: path must not contain dot segments"),
    ("percent_encoded_path", lambda p: leaf(p, "spiffe://example.org/w%65b"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://example.org/w%65b' is not a valid SPIFFE ID: path must not contain percent-encoding"),
    ("query_in_uri", lambda p: leaf(p, "spiffe://example.org/web?x=1"), False,
     "invalid_spiffe_id", "leaf URI SAN 'spiffe://example.org/web?x=1' is not a valid SPIFFE ID: query is not allowed"),
    ("fragment_in_uri", lambda p: leaf(p, "spiffe://example.org/web#x"), False,
     "invalid_spiffe_id", "leaf URI SAN 'spiffe://example.org/web#x' is not a valid SPIFFE ID: fragment is not allowed"),
    ("empty_path_segment", lambda p: leaf(p, "spiffe://example.org/ns//web"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://example.org/ns//web' is not a valid SPIFFE ID: path must not contain empty segments"),
    ("trailing_slash", lambda p: leaf(p, "spiffe://example.org/web/"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://example.org/web/' is not a valid SPIFFE ID: path must not have a trailing slash"),
    ("port_in_trust_domain", lambda p: leaf(p, "spiffe://example.org:443/web"), False,
     "invalid_spiffe_id",
     "leaf URI SAN 'spiffe://example.org:443/web' is not a valid SPIFFE ID: trust domain must not contain a port"),
    ("root_path_id", lambda p: leaf(p, "spiffe://example.org"), False,
     "invalid_spiffe_id",
     "leaf SPIFFE ID 'spiffe://example.org' has no path (a bare trust domain identifies a CA, not a workload)"),
    ("unknown_trust_domain", lambda p: leaf(p, svc_id("web", "other.org")), False,
     "unknown_trust_domain", "no trust bundle for trust domain 'other.org' (trusted: ['example.org'])"),
    ("wrong_trust_domain", lambda p: leaf(p, svc_id("web", "other.org")), True,
     "trust_domain_mismatch",
     "trust domain mismatch: SPIFFE ID 'spiffe://other.org/ns/default/dc/dc1/svc/web' is in trust domain "
     "'other.org' but its chain was issued by a CA of trust domain 'example.org' (unable to get local issuer "
     "certificate (depth 0: 'CN=leaf'))"),
    ("leaf_ca_true", lambda p: leaf(p, ca=True), False,
     "leaf_is_ca", "leaf certificate must not be a CA (basicConstraints CA:TRUE)"),
    ("leaf_key_cert_sign", lambda p: leaf(p, key_usage=LEAF_KEY_USAGE | {"key_cert_sign"}), False,
     "key_usage", "leaf keyUsage must not include keyCertSign"),
    ("leaf_crl_sign", lambda p: leaf(p, key_usage=LEAF_KEY_USAGE | {"crl_sign"}), False,
     "key_usage", "leaf keyUsage must not include cRLSign"),
    ("leaf_no_key_usage", lambda p: leaf(p, key_usage=None), False,
     "key_usage", "leaf certificate has no keyUsage extension"),
    ("leaf_no_digital_signature", lambda p: leaf(p, key_usage={"key_encipherment"}), False,
     "key_usage", "leaf keyUsage must include digitalSignature"),
    ("server_auth_only_eku", lambda p: leaf(p, eku=("server",)), False,
     "extended_key_usage", "leaf extendedKeyUsage lacks clientAuth required for client certificates (has: serverAuth)"),
    ("code_signing_eku", lambda p: leaf(p, eku=("code_signing",)), False,
     "extended_key_usage",
     "leaf extendedKeyUsage lacks clientAuth required for client certificates (has: codeSigning)"),
    ("empty_subject_non_critical_san", lambda p: leaf(p, cn=None, san_critical=False), False,
     "san_not_critical", "leaf has an empty subject but its subjectAltName is not critical"),
    ("intermediate_not_ca",
     lambda p: make_leaf(make_intermediate(p.ca, cn="Not A CA", ca=False, key_usage=LEAF_KEY_USAGE), WEB).chain_der(),
     False, "invalid_ca", "invalid CA certificate (depth 1: 'CN=Not A CA,O=terminus-test')"),
    ("intermediate_without_basic_constraints",
     lambda p: make_leaf(make_intermediate(p.ca, cn="No BC", ca=None), WEB).chain_der(),
     False, "invalid_ca", "invalid CA certificate (depth 1: 'CN=No BC,O=terminus-test')"),
    ("intermediate_without_key_cert_sign",
     lambda p: make_leaf(make_intermediate(p.ca, cn="No CertSign", key_usage={"crl_sign"}), WEB).chain_der(),
     False, "invalid_ca", "invalid CA certificate (depth 1: 'CN=No CertSign,O=terminus-test')"),
    ("intermediate_expired",
     lambda p: make_leaf(
         make_intermediate(p.ca, cn="Old CA", not_before=NOW - hours(100), not_after=NOW - hours(1)), WEB
     ).chain_der(),
     False, "expired", "certificate has expired (depth 1: 'CN=Old CA,O=terminus-test')"),
    ("path_length_exceeded",
     lambda p: make_leaf(
         make_intermediate(make_intermediate(p.ca, cn="PL0", path_length=0), cn="Below PL0"), WEB
     ).chain_der(),
     False, "path_length", "path length constraint exceeded (depth 2: 'CN=PL0,O=terminus-test')"),
    ("unknown_critical_extension",
     lambda p: leaf(p, extra_extensions=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), True)]),
     False, "critical_extension", "unhandled critical extension (depth 0: 'CN=leaf')"),
    ("authority_key_id_of_another_key",
     lambda p: leaf(p, ski=False, extra_extensions=[
         (x509.AuthorityKeyIdentifier.from_issuer_public_key(make_key("not the issuer").public_key()), False)]),  # type: ignore[arg-type]
     False, "unknown_issuer",
     "unable to get local issuer certificate (depth 0: 'CN=leaf'; issuer 'CN=Example Root,O=terminus-test' is "
     "neither in the trust bundle of 'example.org' nor among the 0 presented intermediate(s))"),
    ("uri_name_constraint_violation",
     lambda p: make_leaf(
         make_intermediate(
             p.ca,
             cn="NC other.org only",
             name_constraints=x509.NameConstraints([x509.UniformResourceIdentifier("other.org")], None),
             uri_sans=[],
         ),
         WEB,
     ).chain_der(),
     False, "name_constraints", "permitted subtree violation (depth 0: 'CN=leaf')"),
]


def _reject(v: Verifier, chain: Chain, **kw: Any) -> VerificationError:
    with pytest.raises(VerificationError) as ei:
        v.verify(chain, **kw)
    return ei.value


@pytest.mark.parametrize("name, build, both, code, reason", BAD, ids=[c[0] for c in BAD])
def test_bad_certificate_matrix(pki: PKI, name: str, build: Callable[[PKI], Chain], both: bool, code: str, reason: str) -> None:
    v = pki.verifier(other=both)
    err = _reject(v, build(pki))
    assert err.reason == reason
    assert str(err) == reason
    assert err.code == code
    assert v.cache_len() == 0  # failures are never cached


@pytest.mark.parametrize("name, build, both, code, reason", BAD, ids=[c[0] for c in BAD])
def test_leaf_step_gives_the_full_validations_verdict(
    pki: PKI, name: str, build: Callable[[PKI], Chain], both: bool, code: str, reason: str
) -> None:
    """The same matrix through a verifier that holds validated issuers for the root and the
    intermediate: every bad leaf under them meets the leaf step first and must still get
    OpenSSL's verdict and reason (gateway/identity/issuers.py may only accept)."""
    v = _warmed(pki, other=both)
    err = _reject(v, build(pki))
    assert (err.code, err.reason) == (code, reason)


def test_matrix_is_big_and_every_reason_is_distinct() -> None:
    assert len(BAD) >= 20
    assert len({c[4] for c in BAD}) == len(BAD)


def test_server_purpose_requires_server_auth(pki: PKI) -> None:
    v = pki.verifier()
    chain = leaf(pki, eku=("client",))
    assert v.verify(chain).uri == WEB  # client purpose is fine
    err = _reject(v, chain, purpose="server")
    assert err.reason == "leaf extendedKeyUsage lacks serverAuth required for server certificates (has: clientAuth)"
    assert v.verify(leaf(pki, eku=("server",)), purpose="server").uri == WEB
    with pytest.raises(ValueError):
        v.verify(chain, purpose="peer")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "chain, code, reason",
    [
        ([], "empty_chain", "empty certificate chain"),
        ([b"\x30\x03\x02\x01\x01"], "malformed", None),
        ([b"not a certificate"], "malformed", None),
    ],
)
def test_malformed_input(pki: PKI, chain: Chain, code: str, reason: str | None) -> None:
    err = _reject(pki.verifier(), chain)
    assert err.code == code
    if reason:
        assert err.reason == reason
    else:
        assert err.reason.startswith("malformed leaf certificate: ")


def test_duplicate_extension_is_a_malformed_leaf(pki: PKI) -> None:
    """cryptography raises DuplicateExtension, which is not a ValueError: it must still become
    a verdict with a reason, on the full path and under a validated issuer alike. (The
    signature no longer matches after the surgery; the parse is refused before it counts.)"""
    from tests.support.pki import der_element, with_extra_extension

    good = make_leaf(pki.ica, WEB)
    second_skid = der_element(0x30, b"\x06\x03\x55\x1d\x0e" + der_element(0x04, der_element(0x04, b"\x03" * 20)))
    chain = [with_extra_extension(good.der, second_skid), pki.ica.der]
    for v in (pki.verifier(), _warmed(pki)):
        err = _reject(v, chain)
        assert err.code == "malformed"
        assert err.reason == "malformed leaf certificate extensions: Duplicate 2.5.29.14 extension found"


def test_chain_too_long(pki: PKI) -> None:
    chain = leaf(pki) + [pki.ica.der] * MAX_CHAIN_LENGTH
    err = _reject(pki.verifier(), chain)
    assert err.reason == f"certificate chain too long: {MAX_CHAIN_LENGTH + 1} certificates (max {MAX_CHAIN_LENGTH})"


def test_bundle_is_the_leaf_trust_domain_only(pki: PKI) -> None:
    """other.org's root must not vouch for example.org IDs even when both are trusted."""
    v = pki.verifier(other=True)
    err = _reject(v, make_leaf(pki.other_ca, WEB).chain_der())
    assert err.code == "trust_domain_mismatch"
    assert "'other.org'" in err.reason and "SPIFFE ID 'spiffe://example.org/" in err.reason


# ----------------------------------------------------------------------------- accepted


def test_plain_leaf_from_root(pki: PKI) -> None:
    c = make_leaf(pki.ca, WEB)
    ident = pki.verifier().verify(c.chain_der())
    assert ident.spiffe_id == SpiffeID("example.org", ("ns", "default", "dc", "dc1", "svc", "web"))
    assert ident.uri == WEB and ident.trust_domain == "example.org"
    assert ident.consul_id == ident.service == ServiceID("example.org", "default", "dc1", "web")
    assert ident.serial_hex == format(c.cert.serial_number, "x")
    assert ident.not_after == c.cert.not_valid_after_utc
    assert ident.not_before == c.cert.not_valid_before_utc


def test_chain_through_intermediate(pki: PKI) -> None:
    v = pki.verifier()
    c = make_leaf(pki.ica, svc_id("api", ns="team-a", dc="dc2"))
    assert v.verify(c.chain_der()).service == ServiceID("example.org", "team-a", "dc2", "api")
    # sending the root too is harmless: the trusted copy is found first
    assert v.verify(c.chain_der(include_root=True)).uri == svc_id("api", ns="team-a", dc="dc2")


def test_two_trust_domains_at_once(pki: PKI) -> None:
    v = pki.verifier(other=True)
    assert v.verify(make_leaf(pki.ca, WEB).chain_der()).trust_domain == "example.org"
    other = v.verify(make_leaf(pki.other_ca, svc_id("billing", "other.org")).chain_der())
    assert other.trust_domain == "other.org" and other.service is not None and other.service.service == "billing"


def test_accepted_variants(pki: PKI) -> None:
    v = pki.verifier()
    # no EKU at all (SPIFFE: "should", not "must"); anyExtendedKeyUsage; empty subject + critical SAN
    assert v.verify(leaf(pki, eku=None)).uri == WEB
    assert v.verify(leaf(pki, eku=("any",))).uri == WEB
    assert v.verify(leaf(pki, cn=None)).uri == WEB
    # basicConstraints absent is CA:FALSE
    assert v.verify(leaf(pki, ca=None)).uri == WEB
    # partitioned Consul ID, and a non-Consul SPIFFE ID (no consul_id)
    ap = v.verify(leaf(pki, "spiffe://example.org/ap/p1/ns/default/dc/dc1/svc/web"))
    assert ap.service == ServiceID("example.org", "default", "dc1", "web", partition="p1")
    plain = v.verify(leaf(pki, "spiffe://example.org/workload/Batch_1"))
    assert plain.consul_id is None and plain.service is None
    agent = v.verify(leaf(pki, "spiffe://example.org/agent/client/dc/dc1/id/node-1"))
    assert agent.consul_id is not None and agent.service is None


def test_uri_name_constraint_permitting_the_trust_domain(pki: PKI) -> None:
    nc = make_intermediate(
        pki.ca, name_constraints=x509.NameConstraints([x509.UniformResourceIdentifier("example.org")], None), uri_sans=[]
    )
    assert pki.verifier().verify(make_leaf(nc, WEB).chain_der()).uri == WEB


def test_bundle_may_hold_an_intermediate_as_anchor(pki: PKI) -> None:
    """As in go-spiffe, every bundle certificate is a trust anchor (partial chains)."""
    v = Verifier([TrustBundle("example.org", [pki.ica.cert])])
    assert v.verify(make_leaf(pki.ica, WEB).chain_der()[:1]).uri == WEB
    assert _reject(v, leaf(pki)).code == "unknown_issuer"  # the root itself is not trusted here


def test_input_forms(pki: PKI) -> None:
    c = make_leaf(pki.ica, WEB)
    v = pki.verifier()
    ders = c.chain_der()
    assert v.verify([x.cert for x in c.chain()]).uri == WEB
    assert v.verify([crypto.X509.from_cryptography(x.cert) for x in c.chain()]).uri == WEB
    assert v.verify([bytearray(d) for d in ders]).uri == WEB
    assert v.verify_pem(c.chain_pem()).uri == WEB
    assert v.verify_pem(c.chain_pem().encode()).uri == WEB
    assert v.cache_len() == 1  # every form lands on the same DER-keyed entry
    with pytest.raises(VerificationError) as ei:
        v.verify_pem("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert ei.value.code == "malformed"
    with pytest.raises(TypeError):
        v.verify(["PEM text is not DER"])  # type: ignore[list-item]


def test_now_parameter_and_timezones(pki: PKI) -> None:
    c = make_leaf(pki.ca, WEB, not_before=NOW, not_after=NOW + hours(2))
    v = pki.verifier(cache_size=0)
    assert v.verify(c.chain_der(), now=NOW + hours(1)).uri == WEB
    assert v.verify(c.chain_der(), now=(NOW + hours(1)).replace(tzinfo=None)).uri == WEB  # naive = UTC
    tz = dt.timezone(dt.timedelta(hours=-5))
    assert _reject(v, c.chain_der(), now=(NOW + hours(3)).astimezone(tz)).code == "expired"
    assert _reject(v, c.chain_der(), now=(NOW - hours(1)).astimezone(tz)).code == "not_yet_valid"


# ----------------------------------------------------------------------------- trust bundles


def test_trust_bundle_validation(pki: PKI) -> None:
    b = TrustBundle.from_pem("example.org", bundle_pem(pki.ca, pki.ica))
    assert len(b.certs) == 2 and b.trust_domain == "example.org"
    with pytest.raises(ValueError, match="no certificates"):
        TrustBundle("example.org", [])
    with pytest.raises(ValueError, match="is not a CA certificate"):
        TrustBundle("example.org", [make_leaf(pki.ca, WEB).cert])
    with pytest.raises(InvalidSpiffeID):
        TrustBundle("Example.org", [pki.ca.cert])
    with pytest.raises(ValueError, match="duplicate trust bundle"):
        Verifier([TrustBundle("example.org", [pki.ca.cert]), TrustBundle("example.org", [pki.ica.cert])])


# ----------------------------------------------------------------------------- cache


def test_cache_hit_returns_same_identity_without_reverifying(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    v = pki.verifier()
    ders = make_leaf(pki.ica, WEB).chain_der()
    first = v.verify(ders)
    assert v.cache_len() == 1

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("slow path taken on a cache hit")

    monkeypatch.setattr(v, "_verify_slow", boom)
    assert v.verify(ders) is first
    assert v.verify(tuple(ders)) is first
    assert v.verify([bytes(bytearray(d)) for d in ders]) is first  # equal bytes, new objects


def test_cache_expires_at_not_after(pki: PKI) -> None:
    c = make_leaf(pki.ca, WEB, not_before=NOW - hours(1), not_after=NOW + hours(1))
    ders = c.chain_der()
    v = pki.verifier()
    first = v.verify(ders, now=NOW)
    assert v.verify(ders, now=NOW + hours(1)) is first  # notAfter itself is still valid
    err = _reject(v, ders, now=NOW + hours(1) + dt.timedelta(seconds=1))
    assert err.reason == "certificate has expired (depth 0: 'CN=leaf')"
    assert v.cache_len() == 0  # the stale entry was dropped
    # a cached entry never answers for a time before notBefore either
    v.verify(ders, now=NOW)
    assert _reject(v, ders, now=NOW - hours(2)).code == "not_yet_valid"


def test_cache_expires_with_an_intermediate_that_expires_first(pki: PKI) -> None:
    short_ica = make_intermediate(pki.ca, cn="Short CA", not_after=NOW + hours(1))
    ders = make_leaf(short_ica, WEB, not_after=NOW + hours(24)).chain_der()
    v = pki.verifier()
    v.verify(ders, now=NOW)
    err = _reject(v, ders, now=NOW + hours(2))
    assert err.reason == "certificate has expired (depth 1: 'CN=Short CA,O=terminus-test')"


def test_set_bundles_clears_cache(pki: PKI) -> None:
    v = pki.verifier(other=True)
    ders = make_leaf(pki.ca, WEB).chain_der()
    v.verify(ders)
    assert v.cache_len() == 1
    v.set_bundles([TrustBundle("other.org", [pki.other_ca.cert])])  # example.org no longer trusted
    assert v.cache_len() == 0
    assert _reject(v, ders).code == "unknown_trust_domain"
    v.set_bundles([TrustBundle("example.org", [pki.rogue.cert])])  # rotated to a different root
    assert _reject(v, ders).code == "unknown_issuer"
    assert set(v.bundles) == {"example.org"}


def test_cache_is_per_purpose(pki: PKI) -> None:
    v = pki.verifier()
    ders = leaf(pki, eku=("client",))
    v.verify(ders)
    assert _reject(v, ders, purpose="server").code == "extended_key_usage"


def test_cache_is_bounded_lru(pki: PKI) -> None:
    v = pki.verifier(cache_size=2)
    a, b, c = (leaf(pki, svc_id(n)) for n in ("a", "b", "c"))
    ia = v.verify(a)
    v.verify(b)
    assert v.verify(a) is ia  # a is now most recently used
    v.verify(c)  # evicts b
    assert v.cache_len() == 2
    assert v.verify(a) is ia
    v.clear_cache()
    assert v.cache_len() == 0
    assert pki.verifier(cache_size=0).verify(a) is not None


def test_x509_strict_option(pki: PKI) -> None:
    strict = pki.verifier(x509_strict=True, cache_size=0)
    assert strict.verify(make_leaf(pki.ica, WEB).chain_der()).uri == WEB  # factory certs carry SKI/AKI
    no_akid = make_leaf(pki.ca, WEB, ski=False).chain_der()
    assert pki.verifier().verify(no_akid).uri == WEB  # default: OpenSSL's normal (non-strict) profile
    assert _reject(strict, no_akid).code == "chain_invalid"  # strict: RFC 5280 AKID required


# ----------------------------------------------------------------------------- leaf step


def _warmed(pki: PKI, **kw: Any) -> Verifier:
    """A verifier that has validated a path through the root and one through the intermediate."""
    v = pki.verifier(**kw)
    v.verify(make_leaf(pki.ca, svc_id("warm")).chain_der())
    v.verify(make_leaf(pki.ica, svc_id("warm")).chain_der())
    assert v.leaf_steps == 0
    return v


def test_new_leaves_under_a_validated_issuer_take_the_leaf_step(pki: PKI) -> None:
    v = _warmed(pki)
    full = pki.verifier(reuse_validated_issuers=False)
    for issuer in (pki.ca, pki.ica, pki.ica):
        chain = make_leaf(issuer, svc_id("api", ns="team-a")).chain_der()
        assert v.verify(chain) == full.verify(chain)
    assert v.leaf_steps == 3
    assert full.leaf_steps == 0


def test_leaf_step_window_is_the_paths_window(pki: PKI) -> None:
    """The cached result ends with whatever certificate of the path expires first."""
    short = make_intermediate(pki.ca, cn="Short CA", not_after=NOW + hours(5))
    v = pki.verifier()
    v.verify(make_leaf(short, svc_id("warm")).chain_der())
    c = make_leaf(short, WEB)
    v.verify(c.chain_der())
    assert v.leaf_steps == 1
    with pytest.raises(VerificationError) as ei:  # the cache entry ended with the intermediate
        v.verify(c.chain_der(), now=NOW + hours(6))
    assert ei.value.code == "expired" and "Short CA" in ei.value.reason


def test_leaf_step_unit(pki: PKI) -> None:
    from gateway.identity.der import read_plain_leaf
    from gateway.identity.issuers import leaf_step, validated_issuer

    record = validated_issuer([pki.ica.cert, pki.ca.cert])
    assert record is not None
    c = make_leaf(pki.ica, WEB)
    plain = read_plain_leaf(c.der, "client")
    assert plain is not None and plain.issuer == pki.ica.cert.subject.public_bytes()
    window = (plain.not_before, plain.not_after)
    now = NOW.timestamp()
    assert leaf_step(plain, record, now) == (max(window[0], record.window[0]), min(window[1], record.window[1]))
    assert leaf_step(plain, record, record.window[1] + 1) is None  # path expired
    assert leaf_step(plain, record, window[1] + 1) is None  # leaf expired
    assert leaf_step(plain, record, window[0] - 1) is None  # leaf not yet valid
    forged = read_plain_leaf(make_leaf(pki.ica, WEB, signing_key=make_key("forger")).der, "client")
    assert forged is not None and leaf_step(forged, record, now) is None
    other_akid = read_plain_leaf(make_leaf(pki.ica, WEB, extra_extensions=()).der, "client")
    assert other_akid is not None and other_akid.akid == record.key_id
    # the key id must chain: the same leaf under a record of another key is refused
    assert leaf_step(plain, validated_issuer([pki.ca.cert]) or record, now) is None
    # what only a full validation applies: name constraints above the leaf
    nc = make_intermediate(
        pki.ca, name_constraints=x509.NameConstraints([x509.UniformResourceIdentifier("example.org")], None), uri_sans=[]
    )
    assert validated_issuer([nc.cert, pki.ca.cert]) is None


def test_name_constrained_paths_are_always_validated_in_full(pki: PKI) -> None:
    nc = make_intermediate(
        pki.ca, name_constraints=x509.NameConstraints([x509.UniformResourceIdentifier("example.org")], None), uri_sans=[]
    )
    v = pki.verifier()
    for name in ("a", "b", "c"):
        assert v.verify(make_leaf(nc, svc_id(name)).chain_der()).uri == svc_id(name)
    assert v.leaf_steps == 0


def test_rsa_issuer_takes_the_leaf_step(pki: PKI) -> None:
    rsa_root = make_ca("example.org", cn="RSA Root", key=make_key(kind="rsa"))
    v = Verifier([TrustBundle("example.org", [rsa_root.cert])])
    v.verify(make_leaf(rsa_root, svc_id("warm")).chain_der())
    assert v.verify(make_leaf(rsa_root, WEB).chain_der()).uri == WEB
    assert v.leaf_steps == 1
    assert _reject(v, make_leaf(rsa_root, WEB, signing_key=make_key("forger", kind="rsa")).chain_der()).code == "bad_signature"


def test_validated_issuers_go_with_the_bundles(pki: PKI) -> None:
    v = _warmed(pki)
    v.set_bundles([TrustBundle("example.org", [pki.rogue.cert])])
    assert _reject(v, make_leaf(pki.ica, WEB).chain_der()).code == "unknown_issuer"
    assert v.leaf_steps == 0


def test_strict_profile_never_takes_the_leaf_step(pki: PKI) -> None:
    v = _warmed(pki, x509_strict=True)
    v.verify(make_leaf(pki.ica, WEB).chain_der())
    assert v.leaf_steps == 0


def test_cert_layout_slices_match_the_parser(pki: PKI) -> None:
    """The leaf step signs over the raw slices: they must be exactly cryptography's."""
    from gateway.identity.der import cert_layout

    for c in (make_leaf(pki.ica, WEB), make_leaf(pki.ca, WEB, cn=None), pki.ica, pki.ca,
              make_leaf(make_ca("example.org", cn="RSA", key=make_key(kind="rsa")), WEB)):
        layout = cert_layout(c.der)
        assert layout is not None
        assert layout.tbs == c.cert.tbs_certificate_bytes
        assert layout.signature == c.cert.signature
        assert layout.issuer == c.cert.issuer.public_bytes()
    assert cert_layout(pki.ca.der + b"\x00") is None  # trailing garbage: not laid out as a certificate
