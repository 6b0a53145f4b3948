"""Certificates read straight from their DER bytes, for the verifier's hot paths.

Why: building cryptography's objects for a new leaf (the certificate, its extensions, its
names, datetimes) costs more Python time than the one signature check a known issuing path
needs (``bench/identity.py``). Everything here reads only the simple, canonical shapes a
mesh CA writes and answers None for anything else; the caller then uses cryptography's and
OpenSSL's parsers, which stay the reference and give every rejection its reason. So these
readers may only ever *shorten* a verification that would succeed anyway; they never make a
verdict. ``tests/test_identity_der.py`` holds them to cryptography's parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

__all__ = ["CertLayout", "PlainLeaf", "cert_layout", "read_plain_leaf", "simple_names"]


class _NotPlain(Exception):
    """Outside the shapes read here: the caller takes the parsers' path."""


def _tlv(buf: bytes, i: int, end: int) -> tuple[int, int, int]:
    """Strict DER header at ``i`` inside ``buf[:end]``: (tag, content start, content end);
    single-byte tags and minimal lengths only."""
    tag = buf[i]
    n = buf[i + 1]
    if tag & 0x1F == 0x1F:
        raise _NotPlain
    i += 2
    if n >= 0x80:
        if n == 0x81:
            n = buf[i]
            if n < 0x80:
                raise _NotPlain
            i += 1
        elif n == 0x82:
            n = buf[i] << 8 | buf[i + 1]
            if n < 0x100:
                raise _NotPlain
            i += 2
        else:
            raise _NotPlain
    n += i
    if n > end:
        raise _NotPlain
    return tag, i, n


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


def cert_layout(der: bytes) -> CertLayout | None:
    """Where the names and signature algorithms sit in ``der``; None if it is not laid out as
    a certificate (the caller then uses the parsed objects)."""

    def at(i: int, tag: int) -> tuple[int, int]:
        found, start, end = _tlv(der, i, len(der))
        if found != tag:
            raise _NotPlain
        return start, end

    try:
        tbs_start, _ = at(0, 0x30)  # Certificate
        i, tbs_end = at(tbs_start, 0x30)  # TBSCertificate
        if der[i] == 0xA0:  # [0] version
            i = at(i, 0xA0)[1]
        alg_start = i = at(i, 0x02)[1]  # serialNumber
        i = at(i, 0x30)[1]  # signature AlgorithmIdentifier
        issuer = at(i, 0x30)
        subject = at(at(issuer[1], 0x30)[1], 0x30)  # after the validity
        outer_end = at(tbs_end, 0x30)[1]  # signatureAlgorithm
        s_sig, e_sig = at(outer_end, 0x03)  # signatureValue BIT STRING
        if e_sig != len(der) or e_sig <= s_sig or der[s_sig] != 0:
            return None
    except (_NotPlain, IndexError):
        return None
    return CertLayout(der[alg_start:i], der[i : issuer[1]], issuer, subject,
                      der[tbs_end:outer_end], der[tbs_start:tbs_end], der[s_sig + 1 : e_sig])


# -- names ----------------------------------------------------------------------------------
# ``x509.Name`` equality is per RDN, on (OID, decoded value) of each attribute, ignoring the
# string type. For names whose every RDN is one attribute with a well-formed UTF8String,
# PrintableString or IA5String value (all decode as UTF-8), that equality is exactly equality
# of the (OID bytes, value bytes) sequences, so those are compared instead (cryptography
# builds parsed names unvalidated, so its length rules only warn). Anything else (multi-valued
# RDNs, other string types, long attributes, unusual OIDs) gives None and the caller uses
# ``x509.Name``.
_UTF8_STRING, _PRINTABLE_STRING, _IA5_STRING = 0x0C, 0x13, 0x16
_PRINTABLE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
_OTHER_SIMPLE_OIDS = frozenset({
    b"\x09\x92\x26\x89\x93\xf2\x2c\x64\x01\x19",  # domainComponent
    b"\x09\x92\x26\x89\x93\xf2\x2c\x64\x01\x01",  # userId
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x01",  # emailAddress
})

Name = tuple[tuple[bytes, bytes], ...]


def _simple_name(buf: bytes, i: int, end: int) -> Name | None:
    """The attributes of the DER Name content ``buf[i:end]`` as (OID, value) pairs, or None
    when it is not in the simple form. Only short-form lengths (attributes < 126 bytes)."""
    out = []
    while i < end:
        # RDN: 31 L { 30 L' { 06 n <oid> <tag> m <value> } } with exactly one attribute
        rdn_len = buf[i + 1]
        seq_len = buf[i + 3]
        if buf[i] != 0x31 or buf[i + 2] != 0x30 or rdn_len >= 0x80 or rdn_len != seq_len + 2 or buf[i + 4] != 0x06:
            return None
        j = i + 6 + buf[i + 5]  # after the OID (its length is < 0x80: seq_len bounds it)
        oid = buf[i + 6 : j]
        tag = buf[j]
        v_len = buf[j + 1]
        i += 2 + rdn_len
        if v_len >= 0x80 or j + 2 + v_len != i or not (
            (len(oid) == 3 and oid[0] == 0x55 and oid[1] == 0x04 and oid[2] < 0x80)  # 2.5.4.x
            or oid in _OTHER_SIMPLE_OIDS
        ):
            return None
        value = buf[j + 2 : i]
        if tag == _UTF8_STRING:
            value.decode("utf-8")  # strict, like cryptography's parser; raises if malformed
        elif tag == _PRINTABLE_STRING:
            if not _PRINTABLE.issuperset(value):
                return None
        elif tag != _IA5_STRING or not value.isascii():
            return None
        out.append((oid, value))
    return tuple(out) if i == end else None


def _simple_pair(der: bytes, issuer: tuple[int, int], subject: tuple[int, int]) -> tuple[Name, Name] | None:
    try:
        i = _simple_name(der, *issuer)
        s = None if i is None else _simple_name(der, *subject)
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return None if s is None else (i, s)


def simple_names(der: bytes, layout: CertLayout | None) -> tuple[Name, Name] | None:
    """(issuer, subject) of a DER certificate as compared by ``x509.Name``, or None
    when either name is outside the simple form (then ``x509.Name`` decides)."""
    return None if layout is None else _simple_pair(der, layout.issuer_content, layout.subject_content)


# -- the plain SVID leaf --------------------------------------------------------------------
class PlainLeaf(NamedTuple):
    """What the leaf step needs from a leaf that already satisfies the X509-SVID leaf profile.
    (A named tuple: built once per new leaf, where a frozen dataclass costs a call per field.)"""

    uri: str  # the one URI SAN (not yet checked as a SPIFFE ID)
    serial: int
    not_before: float  # POSIX seconds
    not_after: float
    issuer: bytes  # issuer Name TLV: the leaf step's record is found under it
    akid: bytes | None  # authorityKeyIdentifier keyIdentifier
    algorithm: bytes  # signature AlgorithmIdentifier TLV (inner and outer are the same bytes)
    tbs: bytes  # what the signature covers
    signature: bytes


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _utc_time(buf: bytes, s: int) -> float:
    """The 13 octets ``YYMMDDhhmmssZ`` of a UTCTime's content at ``s`` -> POSIX seconds."""
    digits = buf[s : s + 12]
    if buf[s + 12] != 0x5A or not digits.isdigit():
        raise _NotPlain
    return _seconds(int(digits), True)


def _seconds(v: int, two_digit_year: bool) -> float:
    """``[YY]YYMMDDhhmmss`` as one integer -> POSIX seconds; the date is checked by ``date``."""
    v, second = divmod(v, 100)
    v, minute = divmod(v, 100)
    v, hour = divmod(v, 100)
    v, day = divmod(v, 100)
    year, month = divmod(v, 100)
    if two_digit_year:
        year += 1900 if year >= 50 else 2000
    if hour > 23 or minute > 59 or second > 59:
        raise _NotPlain
    return float((date(year, month, day).toordinal() - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second)


def _time(buf: bytes, i: int, end: int) -> tuple[float, int]:
    """UTCTime ``YYMMDDhhmmssZ`` or GeneralizedTime ``YYYYMMDDhhmmssZ`` -> POSIX seconds."""
    tag, s, e = _tlv(buf, i, end)
    digits = buf[s : e - 1]
    if buf[e - 1] != 0x5A or not digits.isdigit():  # "...Z"; bytes.isdigit: ASCII digits only
        raise _NotPlain
    if tag == 0x17 and e - s == 13:
        return _seconds(int(digits), True), e
    if tag == 0x18 and e - s == 15:
        return _seconds(int(digits), False), e
    raise _NotPlain


# Whole TLVs, compared as bytes.
_VERSION_3 = b"\xa0\x03\x02\x01\x02"
_SPKI_ALGORITHMS = frozenset({
    b"\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07",  # EC P-256
    b"\x30\x10\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x05\x2b\x81\x04\x00\x22",  # EC P-384
    b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00",  # rsaEncryption
})
_SAN, _KU, _EKU, _BC = b"\x06\x03\x55\x1d\x11", b"\x06\x03\x55\x1d\x0f", b"\x06\x03\x55\x1d\x25", b"\x06\x03\x55\x1d\x13"
_SKID, _AKID = b"\x06\x03\x55\x1d\x0e", b"\x06\x03\x55\x1d\x23"
_ID_CE = b"\x06\x03\x55\x1d"  # id-ce: the OID arc of every extension read here
_CRITICAL = b"\x01\x01\xff"
_EKU_OID = {
    "client": b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x02",
    "server": b"\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x01",
}
_EKU_PURPOSES = {oid: (purpose,) for purpose, oid in _EKU_OID.items()}
_EKU_PURPOSES[b"\x06\x04\x55\x1d\x25\x00"] = tuple(_EKU_OID)  # anyExtendedKeyUsage
_URI, _DNS, _IP = 0x86, 0x82, 0x87
# keyUsage, first octet: digitalSignature 0x80, keyCertSign 0x04, cRLSign 0x02, encipherOnly 0x01
_KU_DIGITAL_SIGNATURE, _KU_CA_BITS = 0x80, 0x04 | 0x02 | 0x01

# Extensions and issuer names repeat from leaf to leaf of one CA (everything but the SAN and
# the subject key id): each distinct encoding is read once. Bounded; cleared when full.
_MEMO_SIZE = 512
_block_memo: dict[bytes, tuple[frozenset[str], bytes | None, bool]] = {}
_name_memo: dict[bytes, Name | None] = {}


def _oid_ok(buf: bytes, s: int, e: int) -> bool:
    """A well-formed OID body: minimal base-128 subidentifiers (as cryptography requires)."""
    if s >= e or buf[e - 1] & 0x80:
        return False
    first = True
    for k in range(s, e):
        if first and buf[k] == 0x80:
            return False
        first = not buf[k] & 0x80
    return True


def read_plain_leaf(der: bytes, purpose: str) -> PlainLeaf | None:
    """The leaf's facts when ``der`` is a canonical v3 certificate that satisfies the X509-SVID
    leaf profile for ``purpose`` in the simple shapes mesh CAs write; None otherwise.

    Checked here, as ``verify._check_leaf`` checks them: exactly one URI SAN; a critical SAN
    if the subject is empty; issuer name not equal to the subject's; basicConstraints, if
    present, empty (CA false, no pathLen); keyUsage present with digitalSignature and without
    keyCertSign, cRLSign (or encipherOnly, which cryptography refuses without keyAgreement);
    extendedKeyUsage, if present, with the purpose's OID or anyExtendedKeyUsage. Also what the
    leaf step models: only those extensions plus non-critical key identifiers, an authority
    key identifier that carries only a key id, the same inner and outer signature algorithm.
    The URI is returned unparsed: the SPIFFE ID rules are the caller's."""
    try:
        return _read(der, purpose)
    except (_NotPlain, IndexError, ValueError):
        return None


def _read(der: bytes, purpose: str) -> PlainLeaf:
    end = len(der)
    tag, s, e = _tlv(der, 0, end)  # Certificate
    if tag != 0x30 or e != end:
        raise _NotPlain
    tag, ts, te = _tlv(der, s, e)  # TBSCertificate
    if tag != 0x30 or der[ts : ts + 5] != _VERSION_3:
        raise _NotPlain
    tag, a, b = _tlv(der, ts + 5, te)  # serialNumber: positive, minimal, at most 20 octets
    if tag != 0x02 or not 0 < b - a <= 20 or der[a] & 0x80 or (der[a] == 0 and b - a > 1 and not der[a + 1] & 0x80):
        raise _NotPlain
    serial = int.from_bytes(der[a:b], "big")
    tag, _, i = _tlv(der, b, te)
    if tag != 0x30:
        raise _NotPlain
    algorithm = der[b:i]
    tag, ns, ne = _tlv(der, i, te)  # issuer
    if tag != 0x30:
        raise _NotPlain
    issuer = der[i:ne]
    tag, vs, ve = _tlv(der, ne, te)  # validity
    if tag != 0x30:
        raise _NotPlain
    if ve - vs == 30 and der[vs] == 0x17 and der[vs + 1] == 13 and der[vs + 15] == 0x17 and der[vs + 16] == 13:
        not_before = _utc_time(der, vs + 2)  # the usual validity: two UTCTimes
        not_after = _utc_time(der, vs + 17)
    else:
        not_before, k = _time(der, vs, ve)
        not_after, k = _time(der, k, ve)
        if k != ve:
            raise _NotPlain
    tag, ss, se = _tlv(der, ve, te)  # subject
    if tag != 0x30:
        raise _NotPlain
    subject_empty = ss == se
    tag, ps, pe = _tlv(der, se, te)  # subjectPublicKeyInfo
    if tag != 0x30:
        raise _NotPlain
    tag, _, k = _tlv(der, ps, pe)
    if tag != 0x30 or der[ps:k] not in _SPKI_ALGORITHMS:
        raise _NotPlain
    tag, bs, be = _tlv(der, k, pe)
    if tag != 0x03 or be != pe or be - bs < 2 or der[bs] != 0:
        raise _NotPlain
    tag, xs, xe = _tlv(der, pe, te)  # [3] extensions; no unique identifiers
    if tag != 0xA3 or xe != te:
        raise _NotPlain
    tag, ls, le = _tlv(der, xs, xe)
    if tag != 0x30 or le != xe:
        raise _NotPlain

    # Walk the extension headers; the SAN and the subject key id differ from leaf to leaf,
    # everything else repeats across a CA's leaves and is read once per distinct block.
    static: list[bytes] = []
    san: tuple[int, int] | None = None
    skids = 0
    i = ls
    while i < le:
        n = der[i + 1]
        if der[i] == 0x30 and n < 0x80:  # most extensions are short: no call for the header
            es, ee = i + 2, i + 2 + n
            if ee > le:
                raise _NotPlain
        else:
            tag, es, ee = _tlv(der, i, le)
            if tag != 0x30:
                raise _NotPlain
        kind = der[es + 4] if der.startswith(_ID_CE, es) else 0
        if kind == 0x0E and der[es + 5] == 0x04 and der[es + 7] == 0x04 and 0 < der[es + 8] == der[es + 6] - 2 < 0x7E \
                and es + 9 + der[es + 8] == ee:
            skids += 1  # non-critical, one short OCTET STRING
        elif kind == 0x11 and san is None:
            san = (es, ee)
        else:
            static.append(der[i:ee])
        i = ee
    if san is None or skids > 1:
        raise _NotPlain
    block = b"".join(static)  # DER elements are self-delimiting: equal bytes, equal lists
    facts = _block_memo.get(block)
    if facts is None:
        facts = _static_extensions(static)
        if len(_block_memo) >= _MEMO_SIZE:
            _block_memo.clear()
        _block_memo[block] = facts
    eku, akid, has_skid = facts
    if purpose not in eku or (has_skid and skids):
        raise _NotPlain
    uri, san_critical = _extension(der, *san)[1]  # type: ignore[misc]

    tag, _, k = _tlv(der, te, e)  # signatureAlgorithm: the same bytes as inside
    if tag != 0x30 or der[te:k] != algorithm:
        raise _NotPlain
    tag, gs, ge = _tlv(der, k, e)
    if tag != 0x03 or ge != e or ge - gs < 2 or der[gs] != 0:
        raise _NotPlain

    issuer_name = _memo_name(der, issuer, ns, ne)
    subject_name = _memo_name(der, der[ve:se], ss, se)
    if issuer_name is None or subject_name is None or issuer_name == subject_name or (subject_empty and not san_critical):
        raise _NotPlain  # a name outside the simple form, self-issued, or an empty subject without a critical SAN
    return PlainLeaf(uri, serial, not_before, not_after, issuer, akid, algorithm, der[s:te], der[gs + 1 : ge])


def _static_extensions(static: list[bytes]) -> tuple[frozenset[str], bytes | None, bool]:
    """What the extensions other than the SAN and the short subject key id say: (the purposes
    the EKU allows, or all when there is none; the authority key id; whether a subject key id
    is among them). Raises _NotPlain unless keyUsage is there and allowed, each extension
    appears at most once, and nothing else does."""
    seen = {_SAN}
    eku: frozenset[str] = frozenset(_EKU_OID)
    akid: bytes | None = None
    for tlv in static:
        tag, s, e = _tlv(tlv, 0, len(tlv))
        oid, value = _extension(tlv, s, e)
        if oid in seen:
            raise _NotPlain
        seen.add(oid)
        if oid == _EKU:
            eku = value  # type: ignore[assignment]
        elif oid == _AKID:
            akid = value  # type: ignore[assignment]
    if _KU not in seen:
        raise _NotPlain
    return eku, akid, _SKID in seen


def _memo_name(der: bytes, tlv: bytes, s: int, e: int) -> Name | None:
    """``_simple_name``, once per distinct encoding (issuers repeat, and so do the subjects
    of a service's instances)."""
    name = _name_memo.get(tlv, False)
    if name is False:
        name = _simple_name(der, s, e)
        if len(_name_memo) >= _MEMO_SIZE:
            _name_memo.clear()
        _name_memo[tlv] = name
    return name  # type: ignore[return-value]


def _extension(der: bytes, s: int, e: int) -> tuple[bytes, object]:
    """(OID TLV, what matters of the value) of one Extension's content ``der[s:e]``: for the
    SAN (its URI, critical?), keyUsage True, extendedKeyUsage the purposes it allows, the
    authority key id its key id, else None. Raises _NotPlain for anything else."""
    tag, _, k = _tlv(der, s, e)
    if tag != 0x06:
        raise _NotPlain
    oid = der[s:k]
    critical = der[k : k + 3] == _CRITICAL
    if critical:
        k += 3
    tag, vs, ve = _tlv(der, k, e)
    if tag != 0x04 or ve != e:
        raise _NotPlain
    if oid == _SAN:
        n = der[vs + 3]
        if der[vs] == 0x30 and der[vs + 1] == n + 2 and der[vs + 2] == _URI and n < 0x7E and vs + 4 + n == ve:
            uri = der[vs + 4 : ve]  # the usual SAN: one short URI and nothing else
            if not uri.isascii():
                raise _NotPlain
            return oid, (uri.decode("ascii"), critical)
        return oid, (_san_uri(der, vs, ve), critical)
    if oid == _KU:
        if der[vs : vs + 2] != b"\x03\x02" or ve != vs + 4:  # one octet of named bits
            raise _NotPlain
        unused, bits = der[vs + 2], der[vs + 3]
        if unused > 7 or bits & ((1 << unused) - 1) or bits & _KU_CA_BITS or not bits & _KU_DIGITAL_SIGNATURE:
            raise _NotPlain
        return oid, True
    if oid == _EKU:
        return oid, _eku_purposes(der, vs, ve)
    if oid == _BC:
        if der[vs:ve] != b"\x30\x00":  # CA false, no pathLen
            raise _NotPlain
        return oid, None
    if critical:
        raise _NotPlain  # OpenSSL does not handle critical key identifiers
    if oid == _SKID:
        tag, ks, ke = _tlv(der, vs, ve)
        if tag != 0x04 or ke != ve or ke == ks:
            raise _NotPlain
        return oid, None
    if oid == _AKID:
        tag, ss, se = _tlv(der, vs, ve)
        if tag != 0x30 or se != ve:
            raise _NotPlain
        tag, ks, ke = _tlv(der, ss, se)  # [0] keyIdentifier only
        if tag != 0x80 or ke != se or ke == ks:
            raise _NotPlain
        return oid, der[ks:ke]
    raise _NotPlain


def _san_uri(der: bytes, s: int, e: int) -> str:
    """The one URI of a SAN made of URI, DNS (ASCII, as IA5String requires) and IP names."""
    tag, gs, ge = _tlv(der, s, e)
    if tag != 0x30 or ge != e:
        raise _NotPlain
    uri: str | None = None
    i = gs
    while i < ge:
        tag, vs, ve = _tlv(der, i, ge)
        value = der[vs:ve]
        if tag == _IP and (ve - vs == 4 or ve - vs == 16):
            i = ve
            continue
        if (tag != _URI and tag != _DNS) or not value.isascii():
            raise _NotPlain
        if tag == _URI:
            if uri is not None:
                raise _NotPlain
            uri = value.decode("ascii")
        i = ve
    if uri is None:
        raise _NotPlain
    return uri


def _eku_purposes(der: bytes, s: int, e: int) -> frozenset[str]:
    tag, qs, qe = _tlv(der, s, e)
    if tag != 0x30 or qe != e or qs == qe:
        raise _NotPlain
    allowed: set[str] = set()
    i = qs
    while i < qe:
        tag, os_, oe = _tlv(der, i, qe)
        if tag != 0x06 or not _oid_ok(der, os_, oe):
            raise _NotPlain
        allowed.update(_EKU_PURPOSES.get(der[i:oe], ()))
        i = oe
    return frozenset(allowed)
