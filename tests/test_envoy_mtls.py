"""Real Envoy 1.40 mTLS with the SPIFFE validator, fed by terminus's own CA.

Every client certificate goes through two judges: terminus's ``Verifier`` (the gateway's
X509-SVID check) and a real TLS handshake with Envoy's ``envoy.tls.cert_validator.spiffe``
(one trust bundle: terminus's root for the cluster's trust domain). Where Envoy checks a
rule, both must refuse the certificate; where Envoy is laxer, terminus must still refuse.

Verdicts observed with Envoy 1.40.0 (BoringSSL); "Envoy reason" is its connection log
(``TLS_error``) at debug, "stat" the ``listener.<addr>.ssl.*`` counter that moves:

=========================  ====================  ======  =====================================  ===================
client certificate         terminus Verifier     Envoy   Envoy reason                           stat
=========================  ====================  ======  =====================================  ===================
CA-issued leaf (web)       accepted              ACCEPT  -                                      handshake
no client certificate      empty_chain           REJECT  PEER_DID_NOT_RETURN_A_CERTIFICATE      fail_verify_no_cert
leaf from unknown CA       unknown_issuer        REJECT  unable to get local issuer certificate fail_verify_error
AKI != root SKI            unknown_issuer        REJECT  unable to get local issuer certificate fail_verify_error
expired leaf               expired               REJECT  certificate has expired                fail_verify_error
not-yet-valid leaf         not_yet_valid         REJECT  certificate is not yet valid           fail_verify_error
no keyUsage                key_usage             REJECT  cert precheck                          fail_verify_error
keyUsage keyCertSign       key_usage             REJECT  cert precheck                          fail_verify_error
keyUsage cRLSign           key_usage             REJECT  cert precheck                          fail_verify_error
keyUsage w/o digitalSig    key_usage             REJECT  KEY_USAGE_BIT_INCORRECT (handshake)    connection_error
CA:TRUE leaf               leaf_is_ca            REJECT  cert precheck                          fail_verify_error
self-signed leaf           self_signed           REJECT  unable to get local issuer certificate fail_verify_error
no URI SAN                 no_uri_san            REJECT  no trust bundle store                  fail_verify_error
bare trust-domain ID       invalid_spiffe_id     REJECT  no trust bundle store                  fail_verify_error
https:// URI SAN           invalid_spiffe_id     REJECT  no trust bundle store                  fail_verify_error
other TD, other TD's CA    unknown_trust_domain  REJECT  no trust bundle store                  fail_verify_error
other TD ID, our CA        unknown_trust_domain  REJECT  no trust bundle store                  fail_verify_error
our TD ID, other TD's CA   unknown_issuer        REJECT  unable to get local issuer certificate fail_verify_error
=========================  ====================  ======  =====================================  ===================

Where Envoy is MORE LENIENT than the SPIFFE X509-SVID spec, and terminus:

=========================  ======================================  ======  =========================================
client certificate         terminus Verifier                       Envoy   x-peer-uri-san
=========================  ======================================  ======  =========================================
two URI SANs               multiple_uri_sans   (X509-SVID §2)      ACCEPT  both IDs, comma-joined
EKU serverAuth only        extended_key_usage  (X509-SVID §4.4)    ACCEPT  the ID
=========================  ======================================  ======  =========================================
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.identity import ca as terminus_ca
from gateway.identity.verify import TrustBundle, VerificationError, Verifier
from tests.support.envoy import EnvoyProcess, free_port
from tests.support.pki import Cert, make_ca, make_key, make_leaf

pytestmark = pytest.mark.slow

TD = "11111111-2222-3333-4444-555555555555.consul"
OTHER_TD = "99999999-8888-7777-6666-555555555555.consul"


def svc(service: str, td: str = TD) -> str:
    """A Consul service SPIFFE ID."""
    return f"spiffe://{td}/ns/default/dc/dc1/svc/{service}"


WEB, API = svc("web"), svc("api")


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class ClientCert:
    """What a client presents: PEM chain + key, and the same chain as DER for the Verifier."""

    cert_pem: str
    key_pem: str
    chain_der: tuple[bytes, ...]

    @classmethod
    def from_pem(cls, cert_pem: str | bytes, key_pem: str | bytes) -> ClientCert:
        cp = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
        kp = key_pem.decode() if isinstance(key_pem, bytes) else key_pem
        ders = tuple(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(cp.encode()))
        return cls(cp, kp, ders)

    @classmethod
    def from_cert(cls, c: Cert) -> ClientCert:
        return cls.from_pem(c.cert_pem, c.key_pem)


@dataclass
class PKI:
    """terminus's root for TD (what Envoy trusts) and a second root for OTHER_TD."""

    root: terminus_ca.CARoot
    root_key: str
    other_root: terminus_ca.CARoot
    other_key: str
    server: ClientCert
    tmp: Path
    _signer: Cert | None = field(default=None, repr=False)

    @property
    def signer(self) -> Cert:
        """The terminus root as a ``tests.support.pki`` issuer, for flawed leaves."""
        if self._signer is None:
            self._signer = Cert(self.root.certificate(), terminus_ca.load_private_key(self.root_key))
        return self._signer

    def other_signer(self) -> Cert:
        return Cert(self.other_root.certificate(), terminus_ca.load_private_key(self.other_key))

    def flawed(self, uri: str | list[str], *, signer: Cert | None = None, **kw: Any) -> ClientCert:
        """A ``make_leaf`` leaf under terminus's root, with terminus's key identifiers.

        ``make_leaf`` derives the AKI with RFC 5280 method 1 (SHA-1), while terminus's
        root SKI is ``keys.key_id_bytes`` (SHA-256): left alone, the AKI would not
        match and every chain would fail path building before reaching its flaw
        (the ``aki_mismatch`` case pins that). So SKI/AKI are set explicitly.
        """
        signer = signer or self.signer
        key = make_key()
        ids = [
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),  # type: ignore[arg-type]
            (x509.AuthorityKeyIdentifier(_ski(signer.cert), None, None), False),
        ]
        return ClientCert.from_cert(make_leaf(signer, uri, key=key, ski=False, extra_extensions=ids, **kw))

    def leaf(self, uri: str, **kw: Any) -> ClientCert:
        """A leaf issued by terminus's CA library itself."""
        return ClientCert.from_pem(*terminus_ca.generate_leaf(self.root.root_cert_pem, self.root_key, uri, **kw))

    def verifier(self) -> Verifier:
        """terminus's verifier with the same trust as Envoy: one bundle, for TD."""
        return Verifier([TrustBundle.from_pem(TD, self.root.root_cert_pem)])


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root, root_key = terminus_ca.generate_root(TD)
    other_root, other_key = terminus_ca.generate_root(OTHER_TD)
    server = ClientCert.from_pem(*terminus_ca.generate_leaf(root, root_key, API))
    return PKI(root, root_key, other_root, other_key, server, tmp_path_factory.mktemp("mtls"))


# --------------------------------------------------------------------------- Envoy


def mtls_config(pki: PKI, port: int) -> dict[str, Any]:
    """A static mTLS listener: SPIFFE validator trusting terminus's root for TD only."""
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [
                {
                    "certificate_chain": {"inline_string": pki.server.cert_pem},
                    "private_key": {"inline_string": pki.server.key_pem},
                }
            ],
            "validation_context": {
                "custom_validator_config": {
                    "name": "envoy.tls.cert_validator.spiffe",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                        "trust_domains": [{"name": TD, "trust_bundle": {"inline_string": pki.root.root_cert_pem}}],
                    },
                }
            },
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "mtls",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
                        }
                    ],
                    "response_headers_to_add": [
                        {"header": {"key": "x-peer-uri-san", "value": "%DOWNSTREAM_PEER_URI_SAN%"}}
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "mtls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
                            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                        }
                    ],
                }
            ]
        }
    }


@dataclass
class Gateway:
    envoy: EnvoyProcess
    port: int

    def ssl_name(self, name: str) -> str:
        return f"listener.127.0.0.1_{self.port}.ssl.{name}"

    def ssl_stat(self, name: str) -> int:
        return self.envoy.stat(self.ssl_name(name))

    def log_mark(self) -> int:
        return len(self.envoy.log().splitlines())

    def wait_tls_error(self, mark: int, timeout: float = 5.0) -> str:
        """The first ``TLS_error`` line Envoy logged after ``mark`` (connection log at debug)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.envoy.log().splitlines()[mark:]:
                if "TLS_error" in line:
                    return line.split("TLS_error:", 1)[1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no TLS_error logged; log tail:\n{self.envoy.log(tail=20)}")
            time.sleep(0.02)


@pytest.fixture(scope="module")
def gw(pki: PKI) -> Iterator[Gateway]:
    port = free_port()
    with EnvoyProcess(mtls_config(pki, port)) as envoy:
        envoy.wait_ready(timeout=30)
        envoy.set_log_level("debug", "connection")  # logs why each handshake was refused
        yield Gateway(envoy, port)
    assert not envoy.running()


# --------------------------------------------------------------------------- client


@dataclass
class Outcome:
    """A request's result: HTTP status and headers, or the TLS/socket error."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    server_uri_sans: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def request(pki: PKI, port: int, client: ClientCert | None, name: str) -> Outcome:
    """GET / over mTLS; the server must chain to terminus's root (its URI SAN is checked by callers)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE: identity is the URI SAN, not a host name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pki.root.root_cert_pem)
    if client is not None:
        cert_file, key_file = pki.tmp / f"{name}.pem", pki.tmp / f"{name}.key"
        cert_file.write_text(client.cert_pem)
        key_file.write_text(client.key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    out = Outcome()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
                out.server_uri_sans = peer.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.UniformResourceIdentifier)
                # With TLS 1.3 the server judges the client certificate after the
                # client's handshake is done: a rejection surfaces as an alert here.
                tls.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
                data = _read_response(tls)
    except (ssl.SSLError, OSError) as e:
        out.error = f"{type(e).__name__}: {e}"
        return out
    if not data:
        out.error = "connection closed without a response"
        return out
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    out.status = int(head[0].split()[1])
    out.headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}
    return out


def _read_response(tls: ssl.SSLSocket) -> bytes:
    """Read one response: headers, then Content-Length bytes. Not until EOF: Envoy holds
    a ``Connection: close`` socket open for its delayed-close timeout (1 s) otherwise."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        (int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length and (chunk := tls.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def terminus_rejects(pki: PKI, client: ClientCert | None) -> VerificationError:
    """Run terminus's verifier; it must raise. Returns the error."""
    with pytest.raises(VerificationError) as info:
        pki.verifier().verify(client.chain_der if client else ())
    return info.value


# --------------------------------------------------------------------------- accepted


def test_ca_issued_leaf_is_accepted(pki: PKI, gw: Gateway) -> None:
    """terminus's CA issues a leaf; terminus and Envoy both accept it and agree on the identity."""
    client = pki.leaf(WEB)
    assert pki.verifier().verify(client.chain_der).uri == WEB
    before = gw.ssl_stat("handshake")
    out = request(pki, gw.port, client, "good")
    assert out.ok, f"{out}\n{gw.envoy.log(tail=30)}"
    assert out.headers["x-peer-uri-san"] == WEB
    assert out.server_uri_sans == [API]
    assert gw.ssl_stat("handshake") == before + 1


def test_unflawed_test_pki_leaf_is_accepted(pki: PKI, gw: Gateway) -> None:
    """Control for the cases below: ``PKI.flawed`` with no flaw is accepted by both judges,
    so each rejection there is caused by its one flaw."""
    client = pki.flawed(WEB)
    assert pki.verifier().verify(client.chain_der).uri == WEB
    out = request(pki, gw.port, client, "control")
    assert out.ok, f"{out}\n{gw.envoy.log(tail=30)}"
    assert out.headers["x-peer-uri-san"] == WEB


# --------------------------------------------------------------------------- refused by both

Build = Callable[[PKI], "ClientCert | None"]
NOW_UTC = datetime.now(timezone.utc)
NO_ISSUER = "unable to get local issuer certificate"
NO_BUNDLE = "verify cert failed: no trust bundle store"  # SPIFFE validator: no bundle for the ID's TD
PRECHECK = "verify cert failed: cert precheck"  # SPIFFE validator: CA:TRUE / KU certSign, cRLSign / no KU
FAIL_VERIFY = "fail_verify_error"


@dataclass(frozen=True)
class Rejected:
    """One flaw: terminus's error code, the reason in Envoy's connection log, the ssl stat that moves."""

    name: str
    build: Build
    code: str
    envoy_reason: str
    envoy_stat: str = FAIL_VERIFY


REJECTED: list[Rejected] = [
    Rejected("no_client_cert", lambda p: None, "empty_chain", "PEER_DID_NOT_RETURN_A_CERTIFICATE", "fail_verify_no_cert"),
    Rejected(
        "unknown_ca",
        lambda p: ClientCert.from_cert(make_leaf(make_ca(TD, cn="Rogue Root"), WEB, cn="web")),
        "unknown_issuer",
        NO_ISSUER,
    ),
    # AKI (SHA-1 key id) does not match the root's SKI (terminus: SHA-256 key id): both
    # path builders then find no issuer, though the signature itself is valid.
    Rejected("aki_mismatch", lambda p: ClientCert.from_cert(make_leaf(p.signer, WEB)), "unknown_issuer", NO_ISSUER),
    Rejected(
        "expired",
        lambda p: p.leaf(WEB, now=NOW_UTC - timedelta(hours=5), ttl=timedelta(hours=1)),
        "expired",
        "certificate has expired",
    ),
    Rejected(
        "not_yet_valid", lambda p: p.leaf(WEB, now=NOW_UTC + timedelta(hours=2)), "not_yet_valid", "certificate is not yet valid"
    ),
    Rejected("no_key_usage", lambda p: p.flawed(WEB, key_usage=None), "key_usage", PRECHECK),
    Rejected("ku_key_cert_sign", lambda p: p.flawed(WEB, key_usage={"digital_signature", "key_cert_sign"}), "key_usage", PRECHECK),
    Rejected("ku_crl_sign", lambda p: p.flawed(WEB, key_usage={"digital_signature", "crl_sign"}), "key_usage", PRECHECK),
    # Not the validator: BoringSSL refuses the client's CertificateVerify signature made with
    # a key whose keyUsage lacks digitalSignature, so no fail_verify_* stat moves.
    Rejected(
        "ku_no_digital_signature",
        lambda p: p.flawed(WEB, key_usage={"key_encipherment"}),
        "key_usage",
        "KEY_USAGE_BIT_INCORRECT",
        "connection_error",
    ),
    Rejected("ca_true_leaf", lambda p: p.flawed(WEB, ca=True), "leaf_is_ca", PRECHECK),
    Rejected("self_signed", lambda p: ClientCert.from_cert(make_leaf(None, WEB, cn="web")), "self_signed", NO_ISSUER),
    Rejected("no_uri_san", lambda p: p.flawed([], dns_sans=["web"]), "no_uri_san", NO_BUNDLE),
    Rejected("bare_trust_domain_id", lambda p: p.flawed(f"spiffe://{TD}"), "invalid_spiffe_id", NO_BUNDLE),
    Rejected("not_spiffe_scheme", lambda p: p.flawed(f"https://{TD}/ns/default/dc/dc1/svc/web"), "invalid_spiffe_id", NO_BUNDLE),
    Rejected(
        "other_td_by_other_ca",
        lambda p: ClientCert.from_pem(*terminus_ca.generate_leaf(p.other_root, p.other_key, svc("web", OTHER_TD))),
        "unknown_trust_domain",
        NO_BUNDLE,
    ),
    Rejected("other_td_id_by_our_ca", lambda p: p.flawed(svc("web", OTHER_TD)), "unknown_trust_domain", NO_BUNDLE),
    Rejected("our_td_id_by_other_ca", lambda p: p.flawed(WEB, signer=p.other_signer()), "unknown_issuer", NO_ISSUER),
]


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_rejected_by_terminus_and_envoy(pki: PKI, gw: Gateway, case: Rejected) -> None:
    """terminus's verifier rejects it for the expected reason; Envoy refuses the handshake,
    logs its own reason for the same flaw and counts it."""
    client = case.build(pki)
    err = terminus_rejects(pki, client)
    assert err.code == case.code, err.reason
    handshakes, failures = gw.ssl_stat("handshake"), gw.ssl_stat(case.envoy_stat)
    mark = gw.log_mark()
    out = request(pki, gw.port, client, case.name)
    assert out.status is None and out.error, f"Envoy accepted {case.name}: {out}"
    gw.envoy.wait_for_stat(gw.ssl_name(case.envoy_stat), failures + 1)
    tls_error = gw.wait_tls_error(mark)
    assert case.envoy_reason in tls_error, tls_error
    assert gw.ssl_stat("handshake") == handshakes


def test_envoy_ssl_stats_count_the_rejections(pki: PKI, gw: Gateway) -> None:
    """No certificate -> ssl.fail_verify_no_cert; bad chain or precheck -> ssl.fail_verify_error;
    a good certificate -> ssl.handshake only."""
    names = ("handshake", "fail_verify_no_cert", "fail_verify_error")
    base = {n: gw.ssl_stat(n) for n in names}
    assert request(pki, gw.port, None, "stats-none").error
    assert request(pki, gw.port, ClientCert.from_cert(make_leaf(make_ca(TD, cn="Rogue 2"), WEB)), "stats-rogue").error
    assert request(pki, gw.port, pki.flawed(WEB, key_usage=None), "stats-noku").error
    assert request(pki, gw.port, pki.leaf(WEB), "stats-good").ok
    gw.envoy.wait_for_stat(gw.ssl_name("fail_verify_error"), base["fail_verify_error"] + 2)
    assert {n: gw.ssl_stat(n) - base[n] for n in names} == {
        "handshake": 1,
        "fail_verify_no_cert": 1,
        "fail_verify_error": 2,
    }


# --------------------------------------------------------------------------- Envoy is laxer
# The SPIFFE X509-SVID spec forbids both, Envoy 1.40's SPIFFE validator lets both through
# (test-oracles.md §1.3/§5.6, xds-protocol.md §5.4). terminus's verifier is the stricter
# judge here: a gateway that relied on Envoy alone would accept these identities.
#
#   rule                                  spec                Envoy 1.40   terminus
#   exactly one URI SAN                   X509-SVID §2        ACCEPTS 2    rejects (multiple_uri_sans)
#   EKU present => serverAuth+clientAuth  X509-SVID §4.4      ACCEPTS      rejects (extended_key_usage)
#                                                             serverAuth-only

LENIENT: list[tuple[str, Build, str, str]] = [
    (
        "two_uri_sans",
        lambda p: p.flawed([WEB, svc("admin")]),
        "multiple_uri_sans",
        f"{WEB},{svc('admin')}",
    ),
    (
        "eku_server_auth_only",
        lambda p: p.flawed(WEB, eku=("server",)),
        "extended_key_usage",
        WEB,
    ),
]


@pytest.mark.parametrize(("name", "build", "code", "peer_san"), LENIENT, ids=[c[0] for c in LENIENT])
def test_envoy_accepts_what_terminus_rejects(
    pki: PKI, gw: Gateway, name: str, build: Build, code: str, peer_san: str
) -> None:
    """Stricter than what people use: Envoy serves the request, terminus's verifier refuses."""
    client = build(pki)
    err = terminus_rejects(pki, client)
    assert err.code == code, err.reason
    out = request(pki, gw.port, client, name)
    assert out.ok, f"Envoy 1.40 was expected to accept {name} (spec violation it does not check): {out}"
    assert out.headers["x-peer-uri-san"] == peer_san
