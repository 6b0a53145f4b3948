"""Normalization and validation of intentions, mirroring Consul's rules and error texts.

Sources: hashicorp/consul `agent/structs/config_entry_intentions.go` (normalize(),
validate(), validateIntentionWildcards(), computeIntentionPrecedence()),
`config_entry_intentions_ce.go`, `config_entry.go` (validateConfigEntryMeta) and
`intention.go` (Intention.Validate()), plus `agent/consul/intention_endpoint.go`
(the per-operation checks of Intention.Apply).

Order matters and follows Consul: `ConfigEntry.Apply` runs Normalize() and *then*
Validate(). So `validate_service_intentions` expects a normalized entry, and the
`Sources[i]` indexes in its messages refer to the precedence-sorted order, exactly as
Consul reports them. `prepare_service_intentions` does both steps in that order.

Error texts are Consul's byte for byte. Where Consul returns a go-multierror
(config-entry Meta, JWT, legacy Intention.Validate()) the text is multierror's
`ListFormatFunc` output; Go map iteration order is random there, so we list keys
sorted. Lengths are counted in UTF-8 bytes, as Go's len() does.
"""

from __future__ import annotations

import copy
import operator
from types import MappingProxyType
from typing import Any, Mapping, NoReturn

from gateway.errors import InvalidInput

try:  # google-re2: the same engine Envoy uses for safe_regex.
    import re2 as _re2
except ImportError:  # pragma: no cover - the package is a declared dependency
    _re2 = None

SERVICE_INTENTIONS = "service-intentions"
WILDCARD = "*"
DEFAULT = "default"
SOURCE_TYPE_CONSUL = "consul"
ACTIONS = ("allow", "deny")

# agent/structs/structs.go
META_MAX_KEY_PAIRS = 64
META_KEY_MAX_LENGTH = 128
META_VALUE_MAX_LENGTH = 512

# isValidHTTPMethod: Go's net/http method constants.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE")

_LEGACY_ONLY_FIELDS = ("LegacyID", "LegacyCreateTime", "LegacyUpdateTime")

# A source's identity for the duplicate rule: (Peer, SamenessGroup, "partition/ns/name").
SourceIdentity = tuple[str, str, str]
# Sources already prepared (see PreparedSources): id(source) -> (source, its identity).
Prepared = Mapping[int, tuple[dict[str, Any], SourceIdentity]]
NOT_PREPARED: Prepared = MappingProxyType({})


# ---------------------------------------------------------------------------
# small helpers


def go_quote(value: str) -> str:
    """Go's %q (strconv.Quote), so messages that embed user strings match Consul."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def multierror_text(messages: list[str]) -> str:
    """go-multierror's ListFormatFunc: what Consul prints for aggregated errors."""
    if len(messages) == 1:
        return f"1 error occurred:\n\t* {messages[0]}\n\n"
    points = "\n\t".join(f"* {m}" for m in messages)
    return f"{len(messages)} errors occurred:\n\t{points}\n\n"


def _blen(value: str) -> int:
    return len(value.encode("utf-8"))


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _str(obj: Mapping[str, Any], key: str, path: str) -> str:
    """A string field; null/missing is "" like Go's zero value. Wrong types are
    rejected here because Consul's JSON decoder would reject them too."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{path}: expected a string, got {_type_name(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{path}: expected an array, got {_type_name(value)}")
    return value


def _dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{path}: expected an object, got {_type_name(value)}")
    return value


def _str_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidInput(f"{path}: expected an object of strings")
    return value


# ---------------------------------------------------------------------------
# precedence


def _count_exact(ns: str, name: str) -> int:
    """intentionCountExact: `*/*` -> 0, `ns/*` -> 1, `ns/name` -> 2."""
    if (ns or DEFAULT) == WILDCARD:
        return 0
    if name == WILDCARD:
        return 1
    return 2


def compute_precedence(source_ns: str, source_name: str, dest_ns: str, dest_name: str) -> int:
    """computeIntentionPrecedence: 9 (exact->exact) down to 1 (*/* -> */*).

    Empty namespaces mean "default" (NamespaceOrDefault). Partition and peer never
    affect precedence.
    """
    top = {2: 9, 1: 6, 0: 3}[_count_exact(dest_ns, dest_name)]
    return top - (2 - _count_exact(source_ns, source_name))


# ---------------------------------------------------------------------------
# service-intentions config entry


def normalize_service_intentions(
    entry: Mapping[str, Any], *, legacy: bool = False, prepared: Prepared = NOT_PREPARED,
) -> dict[str, Any]:
    """ServiceIntentionsConfigEntry.normalize(); returns a new dict, input untouched.

    Steps in Consul's order: Kind forced; destination namespace/partition defaulted;
    per source: Type defaults to "consul", namespace/partition inherited from the
    destination (peer and sameness-group sources only get their namespace defaulted),
    Precedence computed *after* that, legacy fields cleared (non-legacy writes) or
    LegacyMeta forced to {} (legacy writes), HTTP methods upper-cased; finally the
    sources are stable-sorted by precedence, highest first. `Meta` is kept as given:
    Consul tags it omitempty, so a missing Meta stays missing.

    `prepared` is keyed by the id()s of source dicts that are themselves the output of an
    earlier `prepare_service_intentions` of an entry with this same destination and `legacy`
    flag (see `PreparedSources`). normalize() is idempotent on its output, so such a source is
    kept as it is instead of being normalized again.
    """
    # Shallow copies of exactly what is changed below: stored entries are never mutated,
    # so the rest can be shared, and a write does not pay to copy every source.
    out = dict(_dict(entry, "entry"))
    out["Kind"] = SERVICE_INTENTIONS
    dest_ns = _str(out, "Namespace", "Namespace") or DEFAULT
    dest_partition = _str(out, "Partition", "Partition") or DEFAULT
    dest_name = _str(out, "Name", "Name")
    out["Namespace"] = dest_ns
    out["Partition"] = dest_partition

    sources: list[dict[str, Any]] = []
    for i, raw in enumerate(_list(out, "Sources", "Sources")):
        known = prepared.get(id(raw))
        if known is not None and known[0] is raw:
            sources.append(raw)
            continue
        path = f"Sources[{i}]"
        src = dict(_dict(raw, path))
        if not _str(src, "Type", f"{path}.Type"):
            src["Type"] = SOURCE_TYPE_CONSUL

        ns = _str(src, "Namespace", f"{path}.Namespace")
        if _str(src, "Peer", f"{path}.Peer") or _str(src, "SamenessGroup", f"{path}.SamenessGroup"):
            # NormalizeNamespace only: Peer/SamenessGroup exclude Partition.
            src["Namespace"] = ns or DEFAULT
        else:
            # MergeNoWildcard(dest) then Normalize(): a wildcard is never inherited.
            partition = _str(src, "Partition", f"{path}.Partition")
            if not ns and dest_ns != WILDCARD:
                ns = dest_ns
            if not partition and dest_partition != WILDCARD:
                partition = dest_partition
            src["Namespace"] = ns or DEFAULT
            src["Partition"] = partition or DEFAULT

        src["Precedence"] = compute_precedence(
            src["Namespace"], _str(src, "Name", f"{path}.Name"), dest_ns, dest_name
        )

        if legacy:
            if src.get("LegacyMeta") is None:
                src["LegacyMeta"] = {}
        else:
            # LegacyMeta is deliberately kept so validate() can refuse it.
            for key in _LEGACY_ONLY_FIELDS:
                src.pop(key, None)

        perms = _list(src, "Permissions", f"{path}.Permissions")
        if perms:
            copied = []
            for j, perm in enumerate(perms):
                perm = _dict(perm, f"{path}.Permissions[{j}]")
                http = perm.get("HTTP")
                if isinstance(http, dict) and isinstance(http.get("Methods"), list):
                    upper = [m.upper() if isinstance(m, str) else m for m in http["Methods"]]
                    if upper != http["Methods"]:
                        perm = {**perm, "HTTP": {**http, "Methods": upper}}
                copied.append(perm)
            src["Permissions"] = copied
        sources.append(src)

    # highest first; list.sort is stable (reverse=True too), like sort.SliceStable
    sources.sort(key=_precedence, reverse=True)
    out["Sources"] = sources
    return out


_precedence = operator.itemgetter("Precedence")


def _wildcard_error(name: str, ns: str, partition: str, peer: str, sameness_group: str) -> str | None:
    """validateIntentionWildcards; the caller adds the `Sources[i].` prefix."""
    ns = ns or DEFAULT
    if ns != WILDCARD and WILDCARD in ns:
        return "Namespace: wildcard character '*' cannot be used with partial values"
    if name != WILDCARD:
        if WILDCARD in name:
            return "Name: wildcard character '*' cannot be used with partial values"
        if ns == WILDCARD:
            return "Name: exact value cannot follow wildcard namespace"
    if WILDCARD in (partition or DEFAULT):
        return "Partition: cannot use wildcard '*' in partition"
    if WILDCARD in peer:
        return "Peer: cannot use wildcard '*' in peer"
    if WILDCARD in sameness_group:
        return "SamenessGroup: cannot use wildcard '*' in sameness group"
    return None


def _meta_errors(meta: Mapping[str, str], prefix: str = "") -> list[str]:
    """validateConfigEntryMeta / Intention.Validate meta rules (keys sorted)."""
    errors: list[str] = []
    if len(meta) > META_MAX_KEY_PAIRS:
        errors.append(f"{prefix}Meta exceeds maximum element count {META_MAX_KEY_PAIRS}")
    for key in sorted(meta):
        if _blen(key) > META_KEY_MAX_LENGTH:
            errors.append(f"{prefix}Meta key {go_quote(key)} exceeds maximum length {META_KEY_MAX_LENGTH}")
        if _blen(meta[key]) > META_VALUE_MAX_LENGTH:
            errors.append(
                f"{prefix}Meta value for key {go_quote(key)} exceeds maximum length {META_VALUE_MAX_LENGTH}"
            )
    return errors


def _validate_jwt(jwt: Any, path: str) -> None:
    """IntentionJWTRequirement.Validate(): a multierror of unnamed providers."""
    if jwt is None:
        return
    jwt = _dict(jwt, path)
    errors = []
    for k, provider in enumerate(_list(jwt, "Providers", f"{path}.Providers")):
        provider = _dict(provider, f"{path}.Providers[{k}]")
        if not _str(provider, "Name", f"{path}.Providers[{k}].Name"):
            errors.append("JWT provider name is required")
    if errors:
        raise InvalidInput(multierror_text(errors))


def _re2_error(pattern: str) -> str | None:
    """Compile under RE2 (Envoy's engine); None when valid or RE2 is unavailable."""
    if _re2 is None:
        return None
    options = _re2.Options()
    options.log_errors = False
    try:
        _re2.compile(pattern, options)
    except Exception as exc:  # re2.error, or TypeError on odd input
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return str(detail)
    return None


def _validate_permission(perm: dict[str, Any], i: int, j: int) -> None:
    if perm.get("Action") not in ACTIONS:
        raise InvalidInput(f"Sources[{i}].Permissions[{j}].Action must be set to 'allow' or 'deny'")

    prefix = f"Sources[{i}].Permissions[{j}].HTTP"
    if perm.get("HTTP") is None:
        raise InvalidInput(f"{prefix} is required")
    http = _dict(perm["HTTP"], prefix)

    path_parts = 0
    for field in ("PathExact", "PathPrefix"):
        value = _str(http, field, f"{prefix}.{field}")
        if value:
            path_parts += 1
            if not value.startswith("/"):
                raise InvalidInput(f"{prefix}.{field} doesn't start with '/': {go_quote(value)}")
    path_regex = _str(http, "PathRegex", f"{prefix}.PathRegex")
    if path_regex:
        path_parts += 1
    if path_parts > 1:
        raise InvalidInput(f"{prefix} should only contain at most one of PathExact, PathPrefix, or PathRegex")

    perm_parts = path_parts
    headers = _list(http, "Header", f"{prefix}.Header")
    for k, hdr in enumerate(headers):
        hdr = _dict(hdr, f"{prefix}.Header[{k}]")
        if not _str(hdr, "Name", f"{prefix}.Header[{k}].Name"):
            raise InvalidInput(f"{prefix}.Header[{k}] missing required Name field")
        hdr_parts = int(bool(hdr.get("Present"))) + sum(
            1 for f in ("Exact", "Regex", "Prefix", "Suffix") if _str(hdr, f, f"{prefix}.Header[{k}].{f}")
        )
        if hdr_parts != 1:
            raise InvalidInput(
                f"{prefix}.Header[{k}] should only contain one of Present, Exact, Prefix, Suffix, or Regex"
            )
        perm_parts += 1

    methods = _list(http, "Methods", f"{prefix}.Methods")
    if methods:
        seen: set[str] = set()
        for method in methods:
            if not isinstance(method, str):
                raise InvalidInput(f"{prefix}.Methods: expected strings, got {_type_name(method)}")
            if method not in HTTP_METHODS:
                raise InvalidInput(f"{prefix}.Methods contains an invalid method {go_quote(method)}")
            if method in seen:
                raise InvalidInput(f"{prefix}.Methods contains {go_quote(method)} more than once")
            seen.add(method)
        perm_parts += 1

    if perm_parts == 0:
        raise InvalidInput(f"{prefix} should not be empty")

    _validate_jwt(perm.get("JWT"), f"{prefix[: -len('.HTTP')]}.JWT")

    # Not a Consul check (Consul lets Envoy reject the regex at xDS time, which
    # breaks the whole listener); terminus refuses it at write time instead.
    if path_regex and (err := _re2_error(path_regex)) is not None:
        raise InvalidInput(f"{prefix}.PathRegex is not a valid RE2 regular expression: {err}")
    for k, hdr in enumerate(headers):
        regex = hdr.get("Regex") or ""
        if regex and (err := _re2_error(regex)) is not None:
            raise InvalidInput(f"{prefix}.Header[{k}].Regex is not a valid RE2 regular expression: {err}")


def _service_name_string(name: str, ns: str, partition: str) -> str:
    """ServiceName.String(): CE prints just the name. For non-default tenancy we
    print partition/ns/name (Enterprise format, not confirmed from source)."""
    ns = ns or DEFAULT
    partition = partition or DEFAULT
    if ns == DEFAULT and partition == DEFAULT:
        return name
    if partition == DEFAULT:
        return f"{ns}/{name}"
    return f"{partition}/{ns}/{name}"


def validate_service_intentions(
    entry: Mapping[str, Any], *, legacy: bool = False, allow_sameness_groups: bool = False,
    prepared: Prepared = NOT_PREPARED, record: dict[int, tuple[dict[str, Any], SourceIdentity]] | None = None,
) -> None:
    """ServiceIntentionsConfigEntry.validate(legacy); raises InvalidInput on the first error.

    Expects the output of `normalize_service_intentions` (same `legacy` flag).
    `allow_sameness_groups=False` is Consul CE: any SamenessGroup is refused with
    CE's text; True applies the Enterprise sameness-group rules.

    Sources whose id() is in `prepared` already passed every per-source rule in an entry with
    this same destination and flags (see `normalize_service_intentions`); those rules depend
    on nothing but the source, the destination and the flags, so only the cross-source rule
    (a source defined twice) is checked for them again, with the identity `prepared` kept for
    them. The first error is the same either way. With `record`, every source of a valid entry
    is added to it the same way (what `prepared` takes next time).
    """
    entry = _dict(entry, "entry")
    name = _str(entry, "Name", "Name")
    if not name:
        raise InvalidInput("Name is required")
    dest_ns = _str(entry, "Namespace", "Namespace") or DEFAULT
    dest_partition = _str(entry, "Partition", "Partition")
    if (err := _wildcard_error(name, dest_ns, dest_partition, "", "")) is not None:
        raise InvalidInput(err)
    dest_is_wild = dest_ns == WILDCARD or name == WILDCARD

    _validate_jwt(entry.get("JWT"), "JWT")

    meta = _str_map(entry, "Meta", "Meta")
    if legacy:
        if meta:
            raise InvalidInput("Meta must be omitted for legacy intention writes")
    elif errors := _meta_errors(meta):
        raise InvalidInput(multierror_text(errors))

    sources = _list(entry, "Sources", "Sources")
    if not sources:
        raise InvalidInput("At least one source is required")

    seen: set[tuple[str, str, str]] = set()
    for i, src in enumerate(sources):
        known = prepared.get(id(src))
        if known is not None and known[0] is src:  # valid on its own: only a duplicate can fail
            key = known[1]
            if key in seen:
                _duplicate_source(i, src["Name"], src.get("Namespace") or DEFAULT, src.get("Partition") or "",
                                  key[0], key[1])
            seen.add(key)
            if record is not None:
                record[id(src)] = known
            continue
        src = _dict(src, f"Sources[{i}]")
        src_name = _str(src, "Name", f"Sources[{i}].Name")
        if not src_name:
            raise InvalidInput(f"Sources[{i}].Name is required")
        peer = _str(src, "Peer", f"Sources[{i}].Peer")
        sameness_group = _str(src, "SamenessGroup", f"Sources[{i}].SamenessGroup")
        src_ns = _str(src, "Namespace", f"Sources[{i}].Namespace") or DEFAULT
        src_partition = _str(src, "Partition", f"Sources[{i}].Partition")

        if sameness_group and not allow_sameness_groups:
            # config_entry_intentions_ce.go; note Consul's trailing space.
            raise InvalidInput(f"Sources[{i}].SamenessGroup: Sameness groups are a Consul Enterprise feature. ")
        if (err := _wildcard_error(src_name, src_ns, src_partition, peer, sameness_group)) is not None:
            raise InvalidInput(f"Sources[{i}].{err}")
        if peer and src_partition:
            raise InvalidInput(f"Sources[{i}].Peer: cannot set Peer and Partition at the same time.")
        if sameness_group and src_partition:
            raise InvalidInput(f"Sources[{i}].SamenessGroup: cannot set SamenessGroup and Partition at the same time")
        if sameness_group and peer:
            raise InvalidInput(f"Sources[{i}].SamenessGroup: cannot set SamenessGroup and Peer at the same time")

        if _blen(_str(src, "Description", f"Sources[{i}].Description")) > META_VALUE_MAX_LENGTH:
            raise InvalidInput(f"Sources[{i}].Description exceeds maximum length {META_VALUE_MAX_LENGTH}")

        legacy_meta = _str_map(src, "LegacyMeta", f"Sources[{i}].LegacyMeta")
        if legacy:
            if peer:
                raise InvalidInput(f"Sources[{i}].Peer cannot be set by legacy intentions")
            if sameness_group:
                raise InvalidInput(f"Sources[{i}].SamenessGroup cannot be set by legacy intentions")
            if errors := _meta_errors(legacy_meta, prefix=f"Sources[{i}]."):
                raise InvalidInput(errors[0])  # Consul returns the first one, no multierror
            if src.get("LegacyCreateTime") is None:
                raise InvalidInput(f"Sources[{i}].LegacyCreateTime must be set")
            if src.get("LegacyUpdateTime") is None:
                raise InvalidInput(f"Sources[{i}].LegacyUpdateTime must be set")
            if not _str(src, "LegacyID", f"Sources[{i}].LegacyID"):
                raise InvalidInput(f"Sources[{i}].LegacyID must be set")
        else:
            if legacy_meta:
                raise InvalidInput(f"Sources[{i}].LegacyMeta must be omitted")
            if src.get("LegacyCreateTime") is not None:
                raise InvalidInput(f"Sources[{i}].LegacyCreateTime must be omitted")
            if src.get("LegacyUpdateTime") is not None:
                raise InvalidInput(f"Sources[{i}].LegacyUpdateTime must be omitted")
            if _str(src, "LegacyID", f"Sources[{i}].LegacyID"):
                raise InvalidInput(f"Sources[{i}].LegacyID must be omitted")

        permissions = _list(src, "Permissions", f"Sources[{i}].Permissions")
        action = src.get("Action") or ""
        if (legacy or not permissions) and action not in ACTIONS:
            raise InvalidInput(f"Sources[{i}].Action must be set to 'allow' or 'deny'")
        if permissions and action:
            raise InvalidInput(f"Sources[{i}].Action must be omitted if Permissions are specified")
        if dest_is_wild and permissions:
            raise InvalidInput(
                f"Sources[{i}].Permissions cannot be specified on intentions with wildcarded destinations"
            )
        if src.get("Type") != SOURCE_TYPE_CONSUL:
            raise InvalidInput(f"Sources[{i}].Type must be set to 'consul'")

        for j, perm in enumerate(permissions):
            _validate_permission(_dict(perm, f"Sources[{i}].Permissions[{j}]"), i, j)

        key = (peer, sameness_group, f"{src_partition or DEFAULT}/{src_ns}/{src_name}")
        if key in seen:
            _duplicate_source(i, src_name, src_ns, src_partition, peer, sameness_group)
        seen.add(key)
        if record is not None:
            record[id(src)] = (src, key)


def _duplicate_source(i: int, name: str, ns: str, partition: str, peer: str, sameness_group: str) -> NoReturn:
    qualified = go_quote(_service_name_string(name, ns, partition))
    if peer:
        raise InvalidInput(f"Sources[{i}] defines peer({go_quote(peer)}) {qualified} more than once")
    if sameness_group:
        raise InvalidInput(f"Sources[{i}] defines sameness-group({go_quote(sameness_group)}) {qualified} more than once")
    raise InvalidInput(f"Sources[{i}] defines {qualified} more than once")


def prepare_service_intentions(
    entry: Mapping[str, Any], *, legacy: bool = False, allow_sameness_groups: bool = False,
    prepared: Prepared = NOT_PREPARED, record: dict[int, tuple[dict[str, Any], SourceIdentity]] | None = None,
) -> dict[str, Any]:
    """Normalize then validate, in Consul's order; returns the entry to store.

    `prepared` and `record`: see `validate_service_intentions` and `PreparedSources`; sources
    that came out of an earlier call for this same destination and flags are not normalized
    and checked one by one again (an upsert of one source into a large entry then costs one
    source, not all of them).
    """
    normalized = normalize_service_intentions(entry, legacy=legacy, prepared=prepared)
    validate_service_intentions(
        normalized, legacy=legacy, allow_sameness_groups=allow_sameness_groups, prepared=prepared, record=record)
    return normalized


class PreparedSources:
    """Which source dicts are known to be the output of `prepare_service_intentions`.

    Per destination entry and `legacy` flag (keyed `(name, namespace, partition, legacy)`),
    the sources of the entry last prepared - the sources a read-modify-write of that entry
    starts from - by id(), each with its identity for the duplicate rule. The objects
    themselves are held (so their id()s cannot be reused while here) and are never mutated
    (stored entries are immutable), so a hit whose object `is` the source is the very object
    that passed. Thread-safe: each update is one dict store, and every object any snapshot
    holds did pass, whichever snapshot wins a race.
    """

    def __init__(self) -> None:
        self._by_entry: dict[tuple[Any, ...], dict[int, tuple[dict[str, Any], SourceIdentity]]] = {}

    def get(self, memo_key: tuple[Any, ...]) -> Prepared:
        return self._by_entry.get(memo_key) or NOT_PREPARED

    def remember(self, memo_key: tuple[Any, ...], record: dict[int, tuple[dict[str, Any], SourceIdentity]]) -> None:
        self._by_entry[memo_key] = record

    def forget(self, config_key: tuple[str, str, str, str]) -> None:
        """The entry `(kind, partition, namespace, name)` was deleted: keep nothing of it alive."""
        _, partition, namespace, name = config_key
        for legacy in (False, True):
            self._by_entry.pop((name, namespace, partition, legacy), None)


# ---------------------------------------------------------------------------
# flattened (legacy API) intentions


def normalize_legacy_intention(ixn: Mapping[str, Any]) -> dict[str, Any]:
    """What Intention.Apply does before validating a flattened intention.

    FillPartitionAndNamespace(…, true) defaults both namespaces to "default"; the
    source type defaults to "consul"; Precedence is recomputed (UpdatePrecedence).
    CE blanks partitions; terminus stores them, so empty ones become "default"
    (a peer or sameness-group source keeps an empty partition). Returns a new dict.
    """
    out = copy.deepcopy(dict(_dict(ixn, "intention")))
    out["SourceNS"] = _str(out, "SourceNS", "SourceNS") or DEFAULT
    out["DestinationNS"] = _str(out, "DestinationNS", "DestinationNS") or DEFAULT
    out["DestinationPartition"] = _str(out, "DestinationPartition", "DestinationPartition") or DEFAULT
    if not (_str(out, "SourcePeer", "SourcePeer") or _str(out, "SourceSamenessGroup", "SourceSamenessGroup")):
        out["SourcePartition"] = _str(out, "SourcePartition", "SourcePartition") or DEFAULT
    if not _str(out, "SourceType", "SourceType"):
        out["SourceType"] = SOURCE_TYPE_CONSUL
    out["Precedence"] = compute_precedence(
        out["SourceNS"],
        _str(out, "SourceName", "SourceName"),
        out["DestinationNS"],
        _str(out, "DestinationName", "DestinationName"),
    )
    return out


def _intention_validate_errors(ixn: Mapping[str, Any]) -> list[str]:
    """Intention.Validate() (agent/structs/intention.go), every error in order."""
    errors: list[str] = []
    src_ns = _str(ixn, "SourceNS", "SourceNS")
    src_name = _str(ixn, "SourceName", "SourceName")
    dst_ns = _str(ixn, "DestinationNS", "DestinationNS")
    dst_name = _str(ixn, "DestinationName", "DestinationName")
    for field, value in (
        ("SourceNS", src_ns),
        ("SourceName", src_name),
        ("DestinationNS", dst_ns),
        ("DestinationName", dst_name),
    ):
        if not value:
            errors.append(f"{field} must be set")
    for side, ns, name in (("Source", src_ns, src_name), ("Destination", dst_ns, dst_name)):
        ns_field = f"{side}NS"
        name_field = f"{side}Name"
        if ns != WILDCARD and WILDCARD in ns:
            errors.append(f"{ns_field}: wildcard character '*' cannot be used with partial values")
        if name != WILDCARD:
            if WILDCARD in name:
                errors.append(f"{name_field}: wildcard character '*' cannot be used with partial values")
            if ns == WILDCARD:
                errors.append(f"{name_field}: exact value cannot follow wildcard namespace")
    if _blen(_str(ixn, "Description", "Description")) > META_VALUE_MAX_LENGTH:
        errors.append(f"Description exceeds maximum length {META_VALUE_MAX_LENGTH}")
    errors.extend(_meta_errors(_str_map(ixn, "Meta", "Meta")))
    if ixn.get("Action") not in ACTIONS:
        errors.append("Action must be set to 'allow' or 'deny'")
    if _list(ixn, "Permissions", "Permissions"):
        errors.append("Permissions must not be set when using the legacy APIs")
    if ixn.get("SourceType") != SOURCE_TYPE_CONSUL:
        errors.append("SourceType must be set to 'consul'")
    return errors


def validate_legacy_intention(
    ixn: Mapping[str, Any], *, op: str = "create", existing_entry: Mapping[str, Any] | None = None
) -> None:
    """Checks Intention.Apply makes on a flattened intention, per operation.

    * op="create" (POST /v1/connect/intentions): ID must be empty, then
      Intention.Validate() (multierror; Permissions refused).
    * op="update" (PUT /v1/connect/intentions/:id): Intention.Validate().
    * op="upsert" (PUT /v1/connect/intentions/exact): no Intention.Validate() —
      Consul validates the resulting config entry instead, which is how L7
      Permissions get through; only ID and Meta are checked here.
      `existing_entry` is the destination's current service-intentions entry.

    Call after `normalize_legacy_intention`. The caller must then validate the
    resulting entry (legacy=True for create/update, False for upsert), which is
    where Peer/SamenessGroup and duplicate-source rules live.
    """
    ixn = _dict(ixn, "intention")
    ixn_id = _str(ixn, "ID", "ID")
    if op == "upsert":
        if ixn_id:
            raise InvalidInput("ID must not be specified")
        meta = _str_map(ixn, "Meta", "Meta")
        if meta:
            if existing_entry is None:
                raise InvalidInput("Meta must not be specified")
            if dict(existing_entry.get("Meta") or {}) != meta:
                raise InvalidInput("Meta must not be specified, or should be unchanged during an update.")
        return
    if op == "create" and ixn_id:
        raise InvalidInput("ID must be empty when creating a new intention")
    if op not in ("create", "update"):
        raise ValueError(f"unknown op {op!r}")
    if errors := _intention_validate_errors(ixn):
        raise InvalidInput(multierror_text(errors))


def check_legacy_apply_allowed(entry: Mapping[str, Any] | None) -> None:
    """checkLegacyIntentionApplyAllowed: the legacy ID API may only touch entries
    whose every source carries a LegacyID."""
    if entry is None:
        return
    if all(s.get("LegacyID") for s in entry.get("Sources") or []):
        return
    name = _service_name_string(entry.get("Name") or "", entry.get("Namespace") or "", entry.get("Partition") or "")
    raise InvalidInput(
        "cannot use legacy intention API to edit intentions with a destination of "
        f"{go_quote(name)} after editing them via a service-intentions config entry"
    )
