"""Parse Consul's ACL rule language (HCL or JSON) into an immutable `Rules` value.

Mirrors `acl/policy.go` + `acl/policy_ce.go` in hashicorp/consul (1.13+ rule set,
with `mesh` and `peering`). Deliberate differences, all in the strict/safe direction:

* Unknown keys (top level or inside a block) are rejected. Consul's HCL decoder
  silently drops them, so a typo such as `servce "web" {}` or `intention = "write"`
  quietly grants nothing and nobody notices.
* Policy values are stored lower-cased. Consul accepts `"WRITE"` (its
  `AccessLevelFromString` lower-cases) but then compares raw strings when merging
  policies and when deriving intentions, so `"DENY"` can lose to `"write"`.
* Every error message starts with `Failed to parse ACL rules: `; Consul only puts that
  prefix on syntax errors and returns bare `Invalid service policy: ...` for bad values.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from hcl.parser import HclParser

from gateway.errors import InvalidInput

ERROR_PREFIX = "Failed to parse ACL rules: "

DENY = "deny"
READ = "read"
LIST = "list"
WRITE = "write"

_LEVELS = frozenset((DENY, READ, WRITE))
_KEY_LEVELS = frozenset((DENY, READ, LIST, WRITE))


@dataclass(frozen=True, slots=True)
class NamedRule:
    """One `<kind> "<name>" { policy = ... }` block (node, agent, key, session, event, query)."""

    name: str
    policy: str


@dataclass(frozen=True, slots=True)
class ServiceRule:
    """A `service`/`service_prefix` block; `intentions == ""` means "derive from policy"."""

    name: str
    policy: str
    intentions: str = ""


@dataclass(frozen=True, slots=True)
class Rules:
    """The parsed rules of one policy, in source order; repeats are kept for the merger."""

    services: tuple[ServiceRule, ...] = ()
    service_prefixes: tuple[ServiceRule, ...] = ()
    nodes: tuple[NamedRule, ...] = ()
    node_prefixes: tuple[NamedRule, ...] = ()
    agents: tuple[NamedRule, ...] = ()
    agent_prefixes: tuple[NamedRule, ...] = ()
    keys: tuple[NamedRule, ...] = ()
    key_prefixes: tuple[NamedRule, ...] = ()
    sessions: tuple[NamedRule, ...] = ()
    session_prefixes: tuple[NamedRule, ...] = ()
    events: tuple[NamedRule, ...] = ()
    event_prefixes: tuple[NamedRule, ...] = ()
    queries: tuple[NamedRule, ...] = ()
    query_prefixes: tuple[NamedRule, ...] = ()
    acl: str = ""
    operator: str = ""
    mesh: str = ""
    peering: str = ""
    keyring: str = ""


# HCL/JSON key -> Rules field. Session/event/query/keyring are not enforced by terminus
# but are accepted so that policies copied from a real Consul still load.
_BLOCK_FIELDS: dict[str, str] = {
    "service": "services",
    "service_prefix": "service_prefixes",
    "node": "nodes",
    "node_prefix": "node_prefixes",
    "agent": "agents",
    "agent_prefix": "agent_prefixes",
    "key": "keys",
    "key_prefix": "key_prefixes",
    "session": "sessions",
    "session_prefix": "session_prefixes",
    "event": "events",
    "event_prefix": "event_prefixes",
    "query": "queries",
    "query_prefix": "query_prefixes",
}
_SCALARS = ("acl", "operator", "mesh", "peering", "keyring")

# Go struct name and label field, used to render errors exactly like Consul's `%#v`.
_GO_STRUCTS: dict[str, tuple[str, str, bool]] = {
    "service": ("ServiceRule", "Name", True),
    "node": ("NodeRule", "Name", True),
    "agent": ("AgentRule", "Node", False),
    "key": ("KeyRule", "Prefix", True),
    "session": ("SessionRule", "Node", False),
    "event": ("EventRule", "Event", False),
    "query": ("PreparedQueryRule", "Prefix", False),
}

# Order in which Consul's PolicyRules.Validate reports the first bad value.
_VALIDATION_ORDER = (
    "agent", "agent_prefix", "key", "key_prefix", "node", "node_prefix",
    "service", "service_prefix", "session", "session_prefix", "event", "event_prefix",
    "query", "query_prefix",
)


class _Pairs(list):  # type: ignore[type-arg]
    """Ordered (key, value) items of one object; unlike a dict it keeps repeated keys."""


class _PairsParser(HclParser):
    """pyhcl's parser without its lossy merge of repeated blocks.

    Stock pyhcl folds `service "a" {policy="deny"}` and a later `service "a" {policy="read"}`
    into one dict where the last one wins, which would turn an explicit deny into a grant.
    """

    def objectlist_flat(self, lt: list[Any], replace: bool) -> _Pairs:  # noqa: ARG002
        return _Pairs(lt)


_local = threading.local()


def _hcl_parser() -> _PairsParser:
    # Building the LALR tables costs ~70 ms and ply parsers are not thread-safe: one per thread.
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _PairsParser()
    return parser


class _RuleError(Exception):
    pass


def parse_rules(text: str) -> Rules:
    """Parse and validate rules text; raise InvalidInput with Consul's wording on any problem."""
    if not text or text.isspace():
        return Rules()
    try:
        tree = _load(text)
        return _build(tree)
    except _RuleError as exc:
        raise InvalidInput(ERROR_PREFIX + str(exc)) from None


def _load(text: str) -> _Pairs:
    if text.lstrip().startswith("{"):
        try:
            tree = json.loads(text, object_pairs_hook=_Pairs)
        except ValueError as exc:
            raise _RuleError(str(exc)) from None
    else:
        try:
            tree = _hcl_parser().parse(text)
        except Exception as exc:  # ply raises ValueError, the lexer sometimes others
            raise _RuleError(str(exc) or type(exc).__name__) from None
    if isinstance(tree, list) and not isinstance(tree, _Pairs):
        tree = _Pairs()  # pyhcl returns [] for input that holds only comments
    if not isinstance(tree, _Pairs):
        raise _RuleError("the rules must be an object")
    return tree


def _build(tree: _Pairs) -> Rules:
    blocks: dict[str, list[tuple[str, dict[str, Any]]]] = {k: [] for k in _BLOCK_FIELDS}
    scalars: dict[str, Any] = {}
    for raw_key, value in tree:
        key = _key(raw_key)
        if key in _SCALARS:
            if key in scalars:
                raise _duplicate(key)
            scalars[key] = _string(value, key)
        elif key in _BLOCK_FIELDS:
            kind = key.removesuffix("_prefix")
            for label, body in _blocks(value, key):
                blocks[key].append((label, _body(body, key, label, kind == "service")))
        else:
            raise _RuleError(f"Unknown key {_go_quote(str(raw_key))}")

    if scalars.get("acl", "") != "" and scalars["acl"].lower() not in _LEVELS:
        raise _RuleError(f"Invalid acl policy: {_go_quote(scalars['acl'])}")
    for kind in _VALIDATION_ORDER:
        _validate_blocks(kind, blocks[kind])
    for key in ("keyring", "operator", "mesh", "peering"):
        value = scalars.get(key, "")
        if value != "" and value.lower() not in _LEVELS:
            raise _RuleError(f"Invalid {key} policy: {_go_quote(value)}")

    fields: dict[str, Any] = {k: v.lower() for k, v in scalars.items()}
    for key, items in blocks.items():
        if key.startswith("service"):
            fields[_BLOCK_FIELDS[key]] = tuple(
                ServiceRule(label, b["policy"].lower(), b.get("intentions", "").lower())
                for label, b in items
            )
        else:
            fields[_BLOCK_FIELDS[key]] = tuple(NamedRule(label, b["policy"].lower()) for label, b in items)
    return Rules(**fields)


def _validate_blocks(key: str, items: list[tuple[str, dict[str, str]]]) -> None:
    kind = key.removesuffix("_prefix")
    allowed = _KEY_LEVELS if kind == "key" else _LEVELS
    for label, body in items:
        if body["policy"].lower() not in allowed:
            raise _RuleError(f"Invalid {key} policy: {_go_rule(kind, label, body)}")
        intentions = body.get("intentions", "")
        if intentions != "" and intentions.lower() not in _LEVELS:
            raise _RuleError(f"Invalid {key} intentions policy: {_go_rule(kind, label, body)}")


def _blocks(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Yield (label, body) for every block of one kind, whatever HCL/JSON shape carried it."""
    if isinstance(value, dict):  # HCL `service "web" { ... }`
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, _Pairs):  # JSON {"service": {"web": {...}}} or HCL `service = {...}`
        items = list(value)
    elif isinstance(value, list):  # JSON {"service": [{"web": {...}}, ...]}
        for element in value:
            if not isinstance(element, (dict, _Pairs)):
                raise _RuleError(f'{key}: expected objects like {key} "<name>" {{ ... }}')
            yield from _blocks(element, key)
        return
    else:
        raise _RuleError(f'{key}: expected a block like {key} "<name>" {{ ... }}')
    for label, body in items:
        if not isinstance(label, str):
            raise _RuleError(f"{key}: invalid block label {label!r}")
        if isinstance(body, _Pairs):
            yield label, body
        elif isinstance(body, dict) and not body:  # pyhcl turns `{}` into a plain dict
            yield label, _Pairs()
        elif isinstance(body, list) and body and all(isinstance(b, _Pairs) for b in body):
            for element in body:
                yield label, element
        elif isinstance(body, dict):
            nested = next(iter(body), "")
            raise _RuleError(f"{key} {_go_quote(label)}: unexpected second label {_go_quote(str(nested))}")
        else:
            raise _RuleError(f'{key}: expected a block like {key} "<name>" {{ ... }}')


def _body(body: _Pairs, key: str, label: str, is_service: bool) -> dict[str, str]:
    allowed = ("policy", "intentions") if is_service else ("policy",)
    out: dict[str, str] = {}
    for raw_field, value in body:
        field = _key(raw_field)
        if field not in allowed:
            raise _RuleError(f"Unknown key {_go_quote(str(raw_field))} in {key} {_go_quote(label)}")
        if field in out:
            raise _duplicate(field)
        out[field] = _string(value, f"{key} {_go_quote(label)}: {field}")
    out.setdefault("policy", "")
    return out


def _key(raw: Any) -> str:
    # Consul's HCL decoder matches field names case-insensitively (ast.ObjectList.Filter).
    if not isinstance(raw, str):
        raise _RuleError(f"invalid key {raw!r}")
    return raw.lower()


def _string(value: Any, where: str) -> str:
    """Coerce like hcl v1's decodeString: number and bool literals become their text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    kind = "list" if isinstance(value, list) and not isinstance(value, _Pairs) else "object"
    if value is None:
        kind = "null"
    raise _RuleError(f"{where}: expected a string, got {kind}")


def _duplicate(field: str) -> _RuleError:
    # Same words as hcl.DecodeErrorOnDuplicates (Consul 1.20+); pyhcl gives no position.
    return _RuleError(f'The argument "{field}" was already set. Each argument can only be defined once')


def _go_rule(kind: str, label: str, body: dict[str, str]) -> str:
    struct, label_field, enterprise = _GO_STRUCTS[kind]
    parts = [f"{label_field}:{_go_quote(label)}", f"Policy:{_go_quote(body['policy'])}"]
    if kind == "service":
        parts.append(f"Intentions:{_go_quote(body.get('intentions', ''))}")
    if enterprise:
        parts.append("EnterpriseRule:acl.EnterpriseRule{}")
    return f"&acl.{struct}{{{', '.join(parts)}}}"


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
               "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(s: str) -> str:
    """Approximate Go's strconv.Quote so error texts match Consul's `%#v` output."""
    out = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)
