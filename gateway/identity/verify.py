"""X509-SVID verification for the gateway: OpenSSL path validation + SPIFFE leaf rules.

Why both: no single library is a complete SPIFFE verifier (test-oracles.md §5.6).
OpenSSL does RFC 5280 path building, time checks and URI name constraints; the SPIFFE
profile (exactly one URI SAN, strict ID, CA:FALSE, keyUsage rules, EKU) is checked
here. Roots are chosen by the *leaf's* trust domain, so a CA of one federated trust
domain can never vouch for an identity of another.

Order (as go-spiffe's ``x509svid.Verify``): cheap leaf-profile checks first, then the
bundle lookup, then the expensive signature/path validation — a junk certificate costs
no signature operation.

Cost of a miss (two-certificate P-256 chain; ``bench/identity.py``): OpenSSL's full
validation is two ECDSA verifications (~100 us each on a small VM) plus OpenSSL 3's parse of
the new leaf (~55 us: it decodes the public key eagerly). It runs once per new issuing path;
after that a new leaf under the same validated issuer gets the leaf step of
``gateway/identity/issuers.py`` (one signature, done through cryptography), which accepts
only what OpenSSL would and hands everything else back to the full validation. Its input is
read from the leaf's DER by ``gateway/identity/der.py`` (no parsed objects: building them
cost more than the signature's share of the Python time), which only reads leaves that
already satisfy the SVID profile; any other leaf takes the parsers' path below. Everything
else is kept off the miss path: each DER is parsed once per library that needs it, the
``X509Store`` is built once per trust bundle, parsed intermediates are cached by their DER
bytes, and the verified path's validity window comes from values already parsed.
"""

from __future__ import annotations

import calendar
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import crypto

from gateway.identity.der import CertLayout, PlainLeaf, cert_layout, read_plain_leaf, simple_names
from gateway.identity.issuers import IssuerKey, ValidatedIssuer, leaf_step, validated_issuer
from gateway.identity.spiffe import (
    ConsulID,
    InvalidSpiffeID,
    ServiceID,
    SpiffeID,
    consul_id_from_spiffe,
    parse_spiffe_id,
    parse_svid_uri,
    validate_trust_domain,
)

__all__ = [
    "MAX_CHAIN_LENGTH",
    "Purpose",
    "TrustBundle",
    "VerificationError",
    "VerifiedIdentity",
    "Verifier",
]

Purpose = Literal["client", "server"]
CertLike = Union[bytes, bytearray, memoryview, x509.Certificate, crypto.X509]

MAX_CHAIN_LENGTH = 10  # leaf + intermediates; real Consul chains are 1-3
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_INTERMEDIATE_CACHE_SIZE = 256  # parsed intermediates; a mesh has a handful
MAX_ISSUER_RECORDS = 1024  # validated issuers (gateway.identity.issuers); a mesh has a handful

_UTC = timezone.utc
_EKU_FOR = {"client": ExtendedKeyUsageOID.CLIENT_AUTH, "server": ExtendedKeyUsageOID.SERVER_AUTH}
_EKU_NAME = {"client": "clientAuth", "server": "serverAuth"}
_EKU_OID_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}

# Reasons come from this table, keyed by X509_V_ERR_* name, and fall back to OpenSSL's own
# text: the strings change between releases (1.1 "self signed", 3.x "self-signed") and so
# do some numbers (X509_V_ERR_INVALID_CA is 24 in old headers, 79 in the build here), so
# numbers are resolved from the loaded library by name.
_OPENSSL_ERROR_NAMES: dict[str, tuple[str, str]] = {
    "UNABLE_TO_GET_ISSUER_CERT": ("unknown_issuer", "unable to get issuer certificate"),
    "UNABLE_TO_DECRYPT_CERT_SIGNATURE": ("bad_signature", "unable to decrypt certificate's signature"),
    "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY": ("bad_signature", "unable to decode issuer public key"),
    "CERT_SIGNATURE_FAILURE": ("bad_signature", "certificate signature failure"),
    "CERT_NOT_YET_VALID": ("not_yet_valid", "certificate is not yet valid"),
    "CERT_HAS_EXPIRED": ("expired", "certificate has expired"),
    "ERROR_IN_CERT_NOT_BEFORE_FIELD": ("bad_time", "format error in certificate's notBefore field"),
    "ERROR_IN_CERT_NOT_AFTER_FIELD": ("bad_time", "format error in certificate's notAfter field"),
    "DEPTH_ZERO_SELF_SIGNED_CERT": ("self_signed", "self-signed certificate"),
    "SELF_SIGNED_CERT_IN_CHAIN": ("untrusted_root", "self-signed certificate in certificate chain"),
    "UNABLE_TO_GET_ISSUER_CERT_LOCALLY": ("unknown_issuer", "unable to get local issuer certificate"),
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE": ("unknown_issuer", "unable to verify the first certificate"),
    "CERT_CHAIN_TOO_LONG": ("chain_too_long", "certificate chain too long"),
    "INVALID_CA": ("invalid_ca", "invalid CA certificate"),
    "INVALID_NON_CA": ("leaf_is_ca", "invalid non-CA certificate (has CA markings)"),
    "PATH_LENGTH_EXCEEDED": ("path_length", "path length constraint exceeded"),
    "INVALID_PURPOSE": ("invalid_purpose", "unsupported certificate purpose"),
    "CERT_UNTRUSTED": ("untrusted_root", "certificate not trusted"),
    "CERT_REJECTED": ("untrusted_root", "certificate rejected"),
    "SUBJECT_ISSUER_MISMATCH": ("issuer_mismatch", "subject issuer mismatch"),
    "AKID_SKID_MISMATCH": ("issuer_mismatch", "authority and subject key identifier mismatch"),
    "KEYUSAGE_NO_CERTSIGN": ("invalid_ca", "key usage does not include certificate signing"),
    "UNHANDLED_CRITICAL_EXTENSION": ("critical_extension", "unhandled critical extension"),
    "INVALID_EXTENSION": ("invalid_extension", "invalid or inconsistent certificate extension"),
    "PERMITTED_VIOLATION": ("name_constraints", "permitted subtree violation"),
    "EXCLUDED_VIOLATION": ("name_constraints", "excluded subtree violation"),
    "SUBTREE_MINMAX": ("name_constraints", "name constraints minimum and maximum not supported"),
    "UNSUPPORTED_CONSTRAINT_TYPE": ("name_constraints", "unsupported name constraint type"),
    "UNSUPPORTED_CONSTRAINT_SYNTAX": ("name_constraints", "unsupported or invalid name constraint syntax"),
    "UNSUPPORTED_NAME_SYNTAX": ("name_constraints", "unsupported or invalid name syntax"),
}


def _resolve_openssl_errors() -> dict[int, tuple[str, str]]:
    try:
        from OpenSSL._util import lib  # pyOpenSSL's binding of the OpenSSL it verifies with
    except ImportError:  # pragma: no cover - layout change; reasons fall back to OpenSSL text
        return {}
    out: dict[int, tuple[str, str]] = {}
    for name, value in _OPENSSL_ERROR_NAMES.items():
        num = getattr(lib, "X509_V_ERR_" + name, None)
        if isinstance(num, int):
            out[num] = value
    return out


_OPENSSL_ERRORS = _resolve_openssl_errors()


class VerificationError(Exception):
    """A rejected chain. ``reason`` is specific and human-readable; ``code`` is a short
    stable token (for metrics labels and programmatic checks)."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """Who the peer is. ``consul_id`` is set when the SPIFFE ID has one of Consul's shapes."""

    spiffe_id: SpiffeID
    consul_id: ConsulID | None
    serial_hex: str
    not_before: datetime
    not_after: datetime

    @property
    def trust_domain(self) -> str:
        return self.spiffe_id.trust_domain

    @property
    def uri(self) -> str:
        return self.spiffe_id.uri

    @property
    def service(self) -> ServiceID | None:
        return self.consul_id if isinstance(self.consul_id, ServiceID) else None


def _to_crypto(cert: CertLike) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, crypto.X509):
        return cert.to_cryptography()
    return x509.load_der_x509_certificate(bytes(cert))


class TrustBundle:
    """The CA certificates trusted for one trust domain (all of them are trust anchors,
    as in go-spiffe: a bundle may legitimately hold intermediates)."""

    __slots__ = ("trust_domain", "certs", "_x509s", "_subjects", "_windows")

    def __init__(self, trust_domain: str, certs: Iterable[CertLike]) -> None:
        self.trust_domain = validate_trust_domain(trust_domain)
        parsed = tuple(_to_crypto(c) for c in certs)
        if not parsed:
            raise ValueError(f"trust bundle for {trust_domain!r} has no certificates")
        for c in parsed:
            try:
                bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            except x509.DuplicateExtension as e:
                raise ValueError(f"trust bundle for {trust_domain!r}: {c.subject.rfc4514_string()!r}: {e}") from None
            if bc is None or not bc.ca:
                raise ValueError(
                    f"trust bundle for {trust_domain!r}: {c.subject.rfc4514_string()!r} is not a CA certificate"
                )
        self.certs: tuple[x509.Certificate, ...] = parsed
        self._x509s = tuple(crypto.X509.from_cryptography(c) for c in parsed)
        self._subjects = frozenset(c.subject for c in parsed)
        # validity of each anchor, for the cache window of paths that end at it
        self._windows = tuple(
            (x, (c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp()))
            for x, c in zip(self._x509s, parsed)
        )

    @classmethod
    def from_pem(cls, trust_domain: str, pem: str | bytes) -> TrustBundle:
        data = pem.encode() if isinstance(pem, str) else pem
        return cls(trust_domain, x509.load_pem_x509_certificates(data))

    def __repr__(self) -> str:
        return f"TrustBundle({self.trust_domain!r}, {len(self.certs)} certs)"


# chain (tuple of DER bytes) -> (identity, valid from, valid until), LRU order
_Cache = OrderedDict[tuple, tuple[VerifiedIdentity, float, float]]


class _State:
    """Bundles and everything built on them, swapped as one object so a verification
    that raced with :meth:`Verifier.set_bundles` can only ever write to a dead cache.

    ``stores`` holds one ``X509Store`` per trust domain, built here and never mutated
    afterwards, so concurrent ``X509StoreContext`` runs can share it (OpenSSL copies the
    store's parameters into each context). ``anchor_windows`` maps each anchor's OpenSSL
    pointer to its (notBefore, notAfter); the anchors stay alive through ``bundles``.
    """

    __slots__ = ("bundles", "caches", "stores", "anchor_windows", "issuers")

    def __init__(self, bundles: dict[str, TrustBundle], flags: int, previous: _State | None = None) -> None:
        self.bundles = bundles
        self.caches: dict[str, _Cache] = {
            "client": OrderedDict(),
            "server": OrderedDict(),
        }
        stores: dict[str, crypto.X509Store]
        anchor_windows: dict[object, tuple[float, float]]
        if previous is not None and previous.bundles is bundles:  # clear_cache: same trust
            stores, anchor_windows = previous.stores, previous.anchor_windows
        else:
            stores = {td: _make_store(b, flags) for td, b in bundles.items()}
            anchor_windows = {}
            for b in bundles.values():
                for x, window in b._windows:
                    ptr = _ptr(x)
                    if ptr is not None:
                        anchor_windows[ptr] = window
        self.stores = stores
        self.anchor_windows = anchor_windows
        # issuers OpenSSL validated under these bundles (None: that path needs the full check)
        self.issuers: dict[IssuerKey, ValidatedIssuer | None] = {}


def _make_store(bundle: TrustBundle, flags: int, now: datetime | None = None) -> crypto.X509Store:
    store = crypto.X509Store()
    for anchor in bundle._x509s:
        store.add_cert(anchor)
    store.set_flags(flags)
    if now is not None:
        # pyOpenSSL feeds timetuple() to timegm(), so hand it UTC fields.
        store.set_time(now.replace(tzinfo=_UTC) if now.tzinfo is None else now.astimezone(_UTC))
    return store


def _ptr(x: crypto.X509) -> object | None:
    """The ``X509*`` behind a pyOpenSSL certificate (private attribute, hence the guard).
    ``get_verified_chain`` wraps the very pointers it was given (up-referenced, not
    copied), which is what lets a verified certificate be matched to what we parsed."""
    return getattr(x, "_x509", None)


def _x509_window(x: crypto.X509) -> tuple[float, float]:
    return _asn1_ts(x.get_notBefore()), _asn1_ts(x.get_notAfter())


def _timestamp(now: datetime) -> float:
    return (now.replace(tzinfo=_UTC) if now.tzinfo is None else now).timestamp()


def _asn1_ts(value: bytes | None) -> float:
    """``YYYYMMDDhhmmssZ`` (what pyOpenSSL returns) -> POSIX seconds, without strptime."""
    if not value:
        raise VerificationError("certificate has no validity time", "bad_time")
    v = value
    return float(calendar.timegm((int(v[0:4]), int(v[4:6]), int(v[6:8]), int(v[8:10]), int(v[10:12]), int(v[12:14]))))


def _der_of(cert: object) -> bytes:
    if type(cert) is bytes:
        return cert
    if isinstance(cert, (bytes, bytearray, memoryview)):
        return bytes(cert)
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(Encoding.DER)
    if isinstance(cert, crypto.X509):
        return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
    raise TypeError(f"certificate must be DER bytes or an x509 object, not {type(cert).__name__}")


class Verifier:
    """Verifies peer chains against per-trust-domain bundles, with a result cache.

    Cache design — why the key is the tuple of DER ``bytes`` and not a SHA-256 digest:
    a dict lookup compares keys for *equality*, byte for byte, after the hash matches,
    so a hit is only possible for an identical chain; correctness never rests on a hash
    being collision-free (a SHA-256 key would rest on exactly that). Python's bytes hash
    is keyed SipHash, randomised per process, so crafted collisions are impractical and
    could only slow lookups down anyway. It is also ~4x cheaper: hashing two fresh
    ~500-byte certificates is ~0.5 us with SipHash against ~2 us for ``sha256(a+b)``,
    and the hash is cached on each bytes object, so a caller that keeps the same bytes
    pays it once. The price is memory: entries hold the chain bytes (~1-2 KB each,
    <= ~20 MB at the default 10k entries).

    An entry is valid from the latest notBefore to the earliest notAfter of the
    *verified* path (not only the leaf's notAfter: an intermediate or root that expires
    first must end the entry too). Entries are per ``purpose``; :meth:`set_bundles`
    drops all of them. Failures are not cached. LRU eviction at ``cache_size``.
    """

    def __init__(
        self,
        bundles: Iterable[TrustBundle] = (),
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        x509_strict: bool = False,
        intermediate_cache_size: int = DEFAULT_INTERMEDIATE_CACHE_SIZE,
        reuse_validated_issuers: bool = True,
    ) -> None:
        self._cache_size = cache_size
        # X509_STRICT adds leaf checks the leaf step does not model, so it always goes in full
        self._reuse_issuers = reuse_validated_issuers and not x509_strict
        self.leaf_steps = 0  # new leaves accepted under an already-validated issuer
        self._flags = crypto.X509StoreFlags.PARTIAL_CHAIN | (crypto.X509StoreFlags.X509_STRICT if x509_strict else 0)
        self._lock = threading.Lock()
        # DER -> (parsed X509, its (notBefore, notAfter) or None). Filled only by chains
        # that verified, so junk cannot evict the real intermediates; FIFO-bounded.
        # Parsing does not depend on trust, so it survives set_bundles.
        self._intermediates: dict[bytes, tuple[crypto.X509, tuple[float, float] | None]] = {}
        self._intermediate_cache_size = intermediate_cache_size
        self._state = _State(self._index(bundles), self._flags)

    @staticmethod
    def _index(bundles: Iterable[TrustBundle]) -> dict[str, TrustBundle]:
        out: dict[str, TrustBundle] = {}
        for b in bundles:
            if b.trust_domain in out:
                raise ValueError(f"duplicate trust bundle for {b.trust_domain!r}")
            out[b.trust_domain] = b
        return out

    # -- configuration -------------------------------------------------------------
    def set_bundles(self, bundles: Iterable[TrustBundle]) -> None:
        """Replace every bundle (CA rotation, federation change) and drop the cache."""
        self._state = _State(self._index(bundles), self._flags)

    @property
    def bundles(self) -> Mapping[str, TrustBundle]:
        return dict(self._state.bundles)

    def clear_cache(self) -> None:
        state = self._state
        self._state = _State(state.bundles, self._flags, previous=state)
        self._intermediates = {}

    def cache_len(self) -> int:
        return sum(len(c) for c in self._state.caches.values())

    # -- verification --------------------------------------------------------------
    def verify(
        self,
        chain: Sequence[CertLike],
        now: datetime | None = None,
        purpose: Purpose = "client",
    ) -> VerifiedIdentity:
        """Verify ``chain`` (leaf first, then intermediates; DER bytes is the fast path).

        ``now`` defaults to the current time; ``purpose`` picks the EKU required when an
        EKU is present (clientAuth for peers connecting to us, serverAuth for upstreams).
        """
        state = self._state
        key = chain if type(chain) is tuple else tuple(chain)
        cache = state.caches.get(purpose)
        if cache is None:
            raise ValueError(f"purpose must be 'client' or 'server', not {purpose!r}")
        try:
            entry = cache.get(key)
        except TypeError:  # unhashable items (bytearray, ...): normalise on the slow path
            return self._verify_slow(state, key, now, purpose)
        if entry is None:
            return self._verify_slow(state, key, now, purpose)
        t = time.time() if now is None else _timestamp(now)
        if entry[1] <= t <= entry[2]:
            try:
                cache.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile; result still valid
                pass
            return entry[0]
        cache.pop(key, None)
        return self._verify_slow(state, key, now, purpose)

    def verify_pem(
        self, pem_chain: str | bytes, now: datetime | None = None, purpose: Purpose = "client"
    ) -> VerifiedIdentity:
        """Convenience for PEM text (leaf first). Parsing PEM costs far more than a cache hit."""
        data = pem_chain.encode() if isinstance(pem_chain, str) else pem_chain
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as e:
            raise VerificationError(f"malformed PEM certificate chain: {e}", "malformed") from None
        return self.verify(tuple(c.public_bytes(Encoding.DER) for c in certs), now, purpose)

    # -- slow path -----------------------------------------------------------------
    def _verify_slow(self, state: _State, key: tuple, now: datetime | None, purpose: str) -> VerifiedIdentity:
        if not key:
            raise VerificationError("empty certificate chain", "empty_chain")
        if len(key) > MAX_CHAIN_LENGTH:
            raise VerificationError(
                f"certificate chain too long: {len(key)} certificates (max {MAX_CHAIN_LENGTH})", "chain_too_long"
            )
        cache = state.caches[purpose]
        for c in key:
            if type(c) is not bytes:  # x509 objects / bytearray: the cache only holds DER keys, so look again
                ders = tuple(_der_of(c) for c in key)
                entry = cache.get(ders)
                t = time.time() if now is None else _timestamp(now)
                if entry is not None and entry[1] <= t <= entry[2]:
                    return entry[0]
                cache.pop(ders, None)  # expired: _remember appends the new entry at the end
                break
        else:
            ders = key

        leaf_der = ders[0]
        record_key: IssuerKey | None = None
        if now is None and self._reuse_issuers:
            plain = read_plain_leaf(leaf_der, purpose)
            if plain is not None:
                identity, record_key = self._try_leaf_step(state, plain, ders, cache)
                if identity is not None:
                    return identity
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
        except ValueError as e:
            raise VerificationError(f"malformed leaf certificate: {e}", "malformed") from None
        sid, consul_id = _check_leaf(leaf, purpose, leaf_der, cert_layout(leaf_der))

        bundle = state.bundles.get(sid.trust_domain)
        if bundle is None:
            raise VerificationError(
                f"no trust bundle for trust domain {sid.trust_domain!r} (trusted: {sorted(state.bundles) or 'none'})",
                "unknown_trust_domain",
            )

        leaf_nb = leaf.not_valid_before_utc
        leaf_na = leaf.not_valid_after_utc
        window = self._validate_path(state, bundle, sid, ders, now, (leaf_nb.timestamp(), leaf_na.timestamp()), record_key)
        identity = VerifiedIdentity(
            spiffe_id=sid,
            consul_id=consul_id,
            serial_hex=format(leaf.serial_number, "x"),
            not_before=leaf_nb,
            not_after=leaf_na,
        )
        return self._remember(cache, ders, identity, window)

    def _try_leaf_step(
        self, state: _State, plain: PlainLeaf, ders: tuple[bytes, ...], cache: _Cache
    ) -> tuple[VerifiedIdentity | None, IssuerKey | None]:
        """A plain leaf under an issuer OpenSSL has validated: the identity, without building
        any parsed object. Else (None, the key to record the issuer under if the full
        validation succeeds). Every refusal here is decided again, with its reason, in full."""
        try:
            sid, consul_id = parse_svid_uri(plain.uri)
        except InvalidSpiffeID:
            return None, None
        if not sid.segments or sid.trust_domain not in state.bundles:
            return None, None
        record_key = (sid.trust_domain, ders[1:], plain.issuer, plain.akid)
        issuer = state.issuers.get(record_key)
        window = None if issuer is None else leaf_step(plain, issuer, time.time())
        if window is None:
            return None, record_key
        self.leaf_steps += 1
        identity = VerifiedIdentity(sid, consul_id, format(plain.serial, "x"),
                                    datetime.fromtimestamp(plain.not_before, _UTC),
                                    datetime.fromtimestamp(plain.not_after, _UTC))
        return self._remember(cache, ders, identity, window), record_key

    def _remember(
        self, cache: _Cache, ders: tuple[bytes, ...], identity: VerifiedIdentity, window: tuple[float, float]
    ) -> VerifiedIdentity:
        if self._cache_size > 0:
            with self._lock:
                cache[ders] = (identity, window[0], window[1])  # a new key: it goes last (most recent)
                while len(cache) > self._cache_size:
                    cache.popitem(last=False)
        return identity

    def _validate_path(
        self,
        state: _State,
        bundle: TrustBundle,
        sid: SpiffeID,
        ders: tuple[bytes, ...],
        now: datetime | None,
        leaf_window: tuple[float, float],
        record_key: IssuerKey | None = None,
    ) -> tuple[float, float]:
        """RFC 5280 validation by OpenSSL against ``bundle`` only; returns the verified
        path's validity window (latest notBefore, earliest notAfter). With ``record_key``,
        the leaf's issuer on the verified path is recorded for the next leaf's leaf step.

        The bundle's shared store serves ``now=None``; an explicit ``now`` gets a fresh
        store, because ``X509Store.set_time`` mutates the store and other threads may be
        verifying with it (building one costs ~6 us)."""
        intermediates = self._intermediates
        entries: list[tuple[crypto.X509, tuple[float, float] | None]] = []
        fresh: list[tuple[bytes, tuple[crypto.X509, tuple[float, float] | None]]] = []
        try:
            leaf_x = crypto.load_certificate(crypto.FILETYPE_ASN1, ders[0])
            for d in ders[1:]:
                entry = intermediates.get(d)
                if entry is None:
                    x = crypto.load_certificate(crypto.FILETYPE_ASN1, d)
                    try:
                        window: tuple[float, float] | None = _x509_window(x)
                    except (VerificationError, ValueError):
                        window = None  # recomputed (and reported) only if the path verifies
                    entry = (x, window)
                    fresh.append((d, entry))
                entries.append(entry)
        except crypto.Error as e:
            raise VerificationError(f"malformed certificate in chain: {e}", "malformed") from None
        store = state.stores[bundle.trust_domain] if now is None else _make_store(bundle, self._flags, now)
        ctx = crypto.X509StoreContext(store, leaf_x, chain=[e[0] for e in entries] or None)
        try:
            verified = ctx.get_verified_chain()
        except crypto.X509StoreContextError as e:
            raise _chain_error(e, state, bundle, sid, len(ders) - 1) from None

        if record_key is not None and record_key not in state.issuers and len(verified) > 1:
            record = validated_issuer([x.to_cryptography() for x in verified[1:]])
            with self._lock:
                state.issuers[record_key] = record
                while len(state.issuers) > MAX_ISSUER_RECORDS:
                    del state.issuers[next(iter(state.issuers))]

        if fresh and self._intermediate_cache_size > 0:
            with self._lock:
                for d, entry in fresh:
                    intermediates[d] = entry
                while len(intermediates) > self._intermediate_cache_size:
                    del intermediates[next(iter(intermediates))]

        # Window of the path OpenSSL actually built: match each certificate to one we
        # parsed (leaf, presented intermediates, anchors); anything else is read afresh.
        not_before, not_after = leaf_window
        leaf_ptr = _ptr(leaf_x)
        anchors = state.anchor_windows
        for x in verified:
            ptr = _ptr(x)
            if ptr is None:
                w = _x509_window(x)
            elif ptr == leaf_ptr:
                continue
            else:
                w = anchors.get(ptr)
                if w is None:
                    for ix, iw in entries:
                        if _ptr(ix) == ptr:
                            w = iw
                            break
                    if w is None:
                        w = _x509_window(x)
            if w[0] > not_before:
                not_before = w[0]
            if w[1] < not_after:
                not_after = w[1]
        return not_before, not_after


def _check_leaf(
    leaf: x509.Certificate, purpose: str, der: bytes | None = None, layout: CertLayout | None = None
) -> tuple[SpiffeID, ConsulID | None]:
    """The X509-SVID leaf profile (X509-SVID.md §4, §5.2); raises on the first violation.

    ``der`` (the leaf's encoding) and its ``layout`` let the subject/issuer checks skip
    building ``x509.Name`` objects (~25 us) when both names are simple; see :func:`gateway.identity.der.simple_names`."""
    names = simple_names(der, layout) if der is not None else None
    try:
        exts = leaf.extensions
    except (ValueError, x509.DuplicateExtension) as e:  # undecodable or duplicate extension (not a ValueError)
        raise VerificationError(f"malformed leaf certificate extensions: {e}", "malformed") from None
    # One pass instead of a get_extension_for_class scan per lookup; the parser already
    # rejected duplicate extensions, so each class appears at most once.
    by_class = {type(ext.value): ext for ext in exts}

    san = by_class.get(x509.SubjectAlternativeName)
    if san is None:
        raise VerificationError("leaf certificate has no URI SAN (no subjectAltName extension)", "no_uri_san")
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise VerificationError("leaf certificate has no URI SAN", "no_uri_san")
    if len(uris) > 1:
        raise VerificationError(f"leaf certificate must have exactly one URI SAN, found {len(uris)}", "multiple_uri_sans")
    try:
        sid = parse_spiffe_id(uris[0])
    except InvalidSpiffeID as e:
        raise VerificationError(f"leaf URI SAN {uris[0]!r} is not a valid SPIFFE ID: {e.reason}", "invalid_spiffe_id") from None
    if not sid.segments:
        raise VerificationError(
            f"leaf SPIFFE ID {sid.uri!r} has no path (a bare trust domain identifies a CA, not a workload)",
            "invalid_spiffe_id",
        )
    if names is not None:
        subject_empty = not names[1]
        self_issued = names[0] == names[1]
    else:
        subject_empty = len(leaf.subject) == 0
        self_issued = leaf.issuer == leaf.subject
    if subject_empty and not san.critical:
        raise VerificationError("leaf has an empty subject but its subjectAltName is not critical", "san_not_critical")

    if self_issued:
        raise VerificationError("leaf certificate is self-signed (issuer equals subject)", "self_signed")

    bc_ext = by_class.get(x509.BasicConstraints)
    if bc_ext is not None and bc_ext.value.ca:
        raise VerificationError("leaf certificate must not be a CA (basicConstraints CA:TRUE)", "leaf_is_ca")

    ku_ext = by_class.get(x509.KeyUsage)
    if ku_ext is None:
        raise VerificationError("leaf certificate has no keyUsage extension", "key_usage")
    ku = ku_ext.value
    if ku.key_cert_sign:
        raise VerificationError("leaf keyUsage must not include keyCertSign", "key_usage")
    if ku.crl_sign:
        raise VerificationError("leaf keyUsage must not include cRLSign", "key_usage")
    if not ku.digital_signature:
        raise VerificationError("leaf keyUsage must include digitalSignature", "key_usage")

    eku_ext = by_class.get(x509.ExtendedKeyUsage)
    eku = None if eku_ext is None else eku_ext.value
    if eku is not None and _EKU_FOR[purpose] not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        have = ", ".join(_EKU_OID_NAMES.get(o, o.dotted_string) for o in eku) or "none"
        raise VerificationError(
            f"leaf extendedKeyUsage lacks {_EKU_NAME[purpose]} required for {purpose} certificates (has: {have})",
            "extended_key_usage",
        )
    return sid, consul_id_from_spiffe(sid, validated=True)


def _chain_error(
    e: crypto.X509StoreContextError, state: _State, bundle: TrustBundle, sid: SpiffeID, presented: int
) -> VerificationError:
    code_num, depth, openssl_message = e.errors[0], e.errors[1], e.errors[2]
    code, message = _OPENSSL_ERRORS.get(code_num, ("chain_invalid", str(openssl_message)))
    subject = issuer = None
    if e.certificate is not None:
        c = e.certificate.to_cryptography()
        subject, issuer = c.subject, c.issuer
    if subject is None:
        return VerificationError(f"{message} (depth {depth})", code)
    where = f" (depth {depth}: {subject.rfc4514_string()!r})"
    if code == "unknown_issuer" and issuer is not None:
        # Diagnostics only: the verdict is already "reject". Name the trust domain whose
        # CA did sign this chain (the usual federation misconfiguration), else say where
        # the issuer was looked for (tells "rogue CA" from "intermediate not sent").
        for td, other in state.bundles.items():
            if td != bundle.trust_domain and issuer in other._subjects:
                return VerificationError(
                    f"trust domain mismatch: SPIFFE ID {sid.uri!r} is in trust domain {sid.trust_domain!r} "
                    f"but its chain was issued by a CA of trust domain {td!r} ({message}{where})",
                    "trust_domain_mismatch",
                )
        where = (
            f" (depth {depth}: {subject.rfc4514_string()!r}; issuer {issuer.rfc4514_string()!r} is neither in "
            f"the trust bundle of {bundle.trust_domain!r} nor among the {presented} presented intermediate(s))"
        )
    return VerificationError(message + where, code)
