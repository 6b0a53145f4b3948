"""Strict SPIFFE ID parsing and Consul's identity URIs.

Rules follow SPIFFE-ID.md §2 the way go-spiffe enforces them, not the way py-spiffe 0.3
does: py-spiffe lower-cases an upper-case trust domain and lets a trailing newline
through (``re.match`` + ``$``), so a certificate carrying ``spiffe://Example.org/web``
or ``spiffe://example.org/web\\n`` would be authorised as someone it is not. Here every
deviation is rejected with a reason that names the rule.

Consul identities (``agent/connect/uri_*.go``) are typed dataclasses on top of the
generic :class:`SpiffeID`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = [
    "AgentID",
    "ConsulID",
    "InvalidSpiffeID",
    "MAX_ID_LENGTH",
    "MAX_TRUST_DOMAIN_LENGTH",
    "MeshGatewayID",
    "ServerID",
    "ServiceID",
    "SigningID",
    "SpiffeID",
    "parse_consul_id",
    "parse_spiffe_id",
    "parse_svid_uri",
    "trust_domain_for_cluster",
    "validate_trust_domain",
]

SCHEME_PREFIX = "spiffe://"
MAX_ID_LENGTH = 2048  # bytes; SPIFFE-ID.md §2.3 (only ASCII passes, so chars == bytes)
MAX_TRUST_DOMAIN_LENGTH = 255
DEFAULT = "default"

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
# Fast path for the common, valid case; fullmatch (not match + $) so "\n" cannot slip by.
_VALID_RE = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")


class InvalidSpiffeID(ValueError):
    """A string that is not a valid SPIFFE ID (or not the expected kind of one).

    ``reason`` is the rule that failed, stable enough for tests and logs.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"invalid SPIFFE ID {value!r}: {reason}")
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SpiffeID:
    """A parsed SPIFFE ID: trust domain plus path segments (empty tuple = no path)."""

    trust_domain: str
    segments: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "".join("/" + s for s in self.segments)

    @property
    def uri(self) -> str:
        return SCHEME_PREFIX + self.trust_domain + self.path

    def __str__(self) -> str:
        return self.uri


def _trust_domain_error(td: str) -> str | None:
    if _TRUST_DOMAIN_RE.fullmatch(td) is not None and len(td) <= MAX_TRUST_DOMAIN_LENGTH:
        return None  # the common case, without a per-character loop (every verified leaf comes here)
    if not td:
        return "trust domain is missing"
    for c in td:
        if c in _TD_CHARS:
            continue
        if "A" <= c <= "Z":
            return "trust domain must be lower case"
        if c == ":":
            return "trust domain must not contain a port"
        if c == "@":
            return "trust domain must not contain userinfo"
        if c == "%":
            return "trust domain must not contain percent-encoding"
        return f"trust domain contains invalid character {c!r} (allowed: a-z 0-9 . - _)"
    if len(td) > MAX_TRUST_DOMAIN_LENGTH:
        return f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} bytes"
    return None


def _path_error(path: str) -> str | None:
    """``path`` is everything after the trust domain; it starts with '/' when non-empty."""
    if "?" in path:
        return "query is not allowed"
    if "#" in path:
        return "fragment is not allowed"
    if "%" in path:
        return "path must not contain percent-encoding"
    segments = path.split("/")[1:]
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if not seg:
            return "path must not have a trailing slash" if i == last else "path must not contain empty segments"
        if seg == "." or seg == "..":
            return "path must not contain dot segments"
        for c in seg:
            if c not in _SEG_CHARS:
                return f"path segment contains invalid character {c!r} (allowed: A-Z a-z 0-9 . - _)"
    return None


def _diagnose(uri: object) -> str:
    """Slow path: find the first rule a (known invalid) ID breaks."""
    if not isinstance(uri, str):
        return f"must be a string, not {type(uri).__name__}"
    if not uri:
        return "SPIFFE ID is empty"
    if len(uri) > MAX_ID_LENGTH:
        return f"SPIFFE ID is longer than {MAX_ID_LENGTH} bytes"
    if not uri.startswith(SCHEME_PREFIX):
        if uri[: len(SCHEME_PREFIX)].lower() == SCHEME_PREFIX:
            return "scheme must be lower case 'spiffe'"
        return "scheme must be 'spiffe://'"
    rest = uri[len(SCHEME_PREFIX) :]
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1 and i < end:
            end = i
    td, path = rest[:end], rest[end:]
    if path[:1] == "?":
        return "query is not allowed"
    if path[:1] == "#":
        return "fragment is not allowed"
    return _trust_domain_error(td) or _path_error(path) or "malformed SPIFFE ID"


def parse_spiffe_id(uri: str) -> SpiffeID:
    """Parse a SPIFFE ID, rejecting anything the spec forbids (see module docstring)."""
    m = _VALID_RE.fullmatch(uri) if type(uri) is str and len(uri) <= MAX_ID_LENGTH else None
    if m is not None:
        td, path = m.group(1), m.group(2)
        segments = tuple(path.split("/")[1:]) if path else ()
        if len(td) <= MAX_TRUST_DOMAIN_LENGTH and "." not in segments and ".." not in segments:
            return SpiffeID(td, segments)
    raise InvalidSpiffeID(uri, _diagnose(uri))


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` unchanged if valid, else raise :class:`InvalidSpiffeID`."""
    err = _trust_domain_error(trust_domain) if isinstance(trust_domain, str) else "trust domain must be a string"
    if err:
        raise InvalidSpiffeID(trust_domain, err)
    return trust_domain


def _check_segment(value: str, what: str) -> None:
    if not isinstance(value, str) or _SEGMENT_RE.fullmatch(value) is None or value in (".", ".."):
        raise InvalidSpiffeID(value, f"{what} is not a valid SPIFFE path segment")


def _or_default(value: str | None) -> str:
    return value or DEFAULT


# --------------------------------------------------------------------------- Consul IDs


@dataclass(frozen=True, slots=True)
class ServiceID:
    """``spiffe://<td>[/ap/<ap>]/ns/<ns>/dc/<dc>/svc/<svc>`` (uri_service.go).

    Empty namespace/partition mean ``default``, as in Consul. ``/ap/default`` parses to
    partition ``default`` and formats without the prefix, as Consul does.
    """

    trust_domain: str
    namespace: str
    datacenter: str
    service: str
    partition: str = DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespace", _or_default(self.namespace))
        object.__setattr__(self, "partition", _or_default(self.partition))
        validate_trust_domain(self.trust_domain)
        for what in ("namespace", "datacenter", "service", "partition"):
            _check_segment(getattr(self, what), what)

    @property
    def uri(self) -> str:
        ap = "" if self.partition == DEFAULT else f"/ap/{self.partition}"
        return f"{SCHEME_PREFIX}{self.trust_domain}{ap}/ns/{self.namespace}/dc/{self.datacenter}/svc/{self.service}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class AgentID:
    """``spiffe://<td>[/ap/<ap>]/agent/client/dc/<dc>/id/<node>`` (uri_agent_ce.go; /ap/ is Enterprise)."""

    trust_domain: str
    datacenter: str
    node_id: str
    partition: str = DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition", _or_default(self.partition))
        validate_trust_domain(self.trust_domain)
        for what in ("datacenter", "node_id", "partition"):
            _check_segment(getattr(self, what), what)

    @property
    def uri(self) -> str:
        ap = "" if self.partition == DEFAULT else f"/ap/{self.partition}"
        return f"{SCHEME_PREFIX}{self.trust_domain}{ap}/agent/client/dc/{self.datacenter}/id/{self.node_id}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class ServerID:
    """``spiffe://<td>/agent/server/dc/<dc>`` (uri_server.go)."""

    trust_domain: str
    datacenter: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _check_segment(self.datacenter, "datacenter")

    @property
    def uri(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}/agent/server/dc/{self.datacenter}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class MeshGatewayID:
    """``spiffe://<td>[/ap/<ap>]/gateway/mesh/dc/<dc>`` (uri_mesh_gateway_ce.go)."""

    trust_domain: str
    datacenter: str
    partition: str = DEFAULT

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition", _or_default(self.partition))
        validate_trust_domain(self.trust_domain)
        _check_segment(self.datacenter, "datacenter")
        _check_segment(self.partition, "partition")

    @property
    def uri(self) -> str:
        ap = "" if self.partition == DEFAULT else f"/ap/{self.partition}"
        return f"{SCHEME_PREFIX}{self.trust_domain}{ap}/gateway/mesh/dc/{self.datacenter}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True, slots=True)
class SigningID:
    """``spiffe://<td>``: the CA signing certificate's ID (uri_signing.go); never a leaf."""

    trust_domain: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)

    @property
    def uri(self) -> str:
        return SCHEME_PREFIX + self.trust_domain

    def __str__(self) -> str:
        return self.uri


ConsulID = Union[ServiceID, AgentID, ServerID, MeshGatewayID, SigningID]

_NOT_CONSUL = (
    "not a Consul identity (expected [/ap/<ap>]/ns/<ns>/dc/<dc>/svc/<svc>, "
    "[/ap/<ap>]/agent/client/dc/<dc>/id/<node>, /agent/server/dc/<dc>, "
    "[/ap/<ap>]/gateway/mesh/dc/<dc> or no path)"
)


def consul_id_from_spiffe(sid: SpiffeID, *, validated: bool = False) -> ConsulID | None:
    """Map a parsed ID onto Consul's shapes (the regexes in agent/connect/uri.go); None if none fits.

    ``validated=True`` says ``sid`` came from :func:`parse_spiffe_id`, whose checks cover a
    ``ServiceID``'s: it is then built without checking each part again (the verifier does
    this for every new leaf)."""
    td, s = sid.trust_domain, sid.segments
    if not s:
        return SigningID(td)
    ap = DEFAULT
    if len(s) >= 2 and s[0] == "ap":
        ap, s = s[1], s[2:]
        if not s:
            return None
    n = len(s)
    if n == 6 and s[0] == "ns" and s[2] == "dc" and s[4] == "svc":
        if validated:
            return _checked_service(td, s[1], s[3], s[5], ap)
        return ServiceID(td, s[1], s[3], s[5], ap)
    if n == 6 and s[0] == "agent" and s[1] == "client" and s[2] == "dc" and s[4] == "id":
        return AgentID(td, s[3], s[5], ap)
    if n == 4 and s[0] == "gateway" and s[1] == "mesh" and s[2] == "dc":
        return MeshGatewayID(td, s[3], ap)
    if n == 4 and len(sid.segments) == 4 and s[:3] == ("agent", "server", "dc"):
        return ServerID(td, s[3])
    return None


def parse_consul_id(uri: str) -> ConsulID:
    """Parse a URI that must be one of Consul's identities; anything else raises."""
    result = consul_id_from_spiffe(parse_spiffe_id(uri))
    if result is None:
        raise InvalidSpiffeID(uri, _NOT_CONSUL)
    return result


def trust_domain_for_cluster(cluster_id: str) -> str:
    """``<cluster-id>.consul``, lower-cased like Consul's SpiffeIDSigningForCluster."""
    return validate_trust_domain(f"{cluster_id.lower()}.consul")


def _checked_service(trust_domain: str, namespace: str, datacenter: str, service: str, partition: str) -> ServiceID:
    """A ServiceID from parts a parser has already checked (no second validation)."""
    out = object.__new__(ServiceID)
    setattr_ = object.__setattr__
    setattr_(out, "trust_domain", trust_domain)
    setattr_(out, "namespace", namespace)
    setattr_(out, "datacenter", datacenter)
    setattr_(out, "service", service)
    setattr_(out, "partition", partition)
    return out


# A Consul service's ID, what nearly every workload leaf carries, in one match.
_SERVICE_ID_RE = re.compile(
    r"spiffe://([a-z0-9._-]+)(?:/ap/([A-Za-z0-9._-]+))?/ns/([A-Za-z0-9._-]+)/dc/([A-Za-z0-9._-]+)/svc/([A-Za-z0-9._-]+)"
)


def parse_svid_uri(uri: str) -> tuple[SpiffeID, ConsulID | None]:
    """``parse_spiffe_id`` then ``consul_id_from_spiffe``, the same answers and errors, with a
    single match for a Consul service ID (the verifier does this for every new leaf)."""
    m = _SERVICE_ID_RE.fullmatch(uri) if type(uri) is str and len(uri) <= MAX_ID_LENGTH else None
    if m is not None:
        td, ap, ns, dc, svc = m.groups()
        # a segment starting with "." may be "." or "..": those (rare) take the two-step parse
        if len(td) <= MAX_TRUST_DOMAIN_LENGTH and ns[0] != "." and dc[0] != "." and svc[0] != "." and (
                ap is None or ap[0] != "."):
            segments = ("ns", ns, "dc", dc, "svc", svc) if ap is None else ("ap", ap, "ns", ns, "dc", dc, "svc", svc)
            return SpiffeID(td, segments), _checked_service(td, ns, dc, svc, ap or DEFAULT)
    sid = parse_spiffe_id(uri)
    return sid, consul_id_from_spiffe(sid, validated=True)
