"""Decode Consul's HCL/JSON inputs into the canonical JSON shapes of Consul's HTTP API.

Why this exists: terminus must accept files written for Consul unchanged. Consul decodes
them with mapstructure, which (a) matches keys case-insensitively, (b) also accepts the
snake_case spellings listed in `alias:"..."` struct tags (lib/decode.HookTranslateKeys),
(c) unwraps HCL1's "repeated block" lists (decode.HookWeakDecodeFromSlice), and (d) turns
every key it could not place into an error. We reproduce that with one schema table per
Consul type (`Obj`), so adding a field is one line and no key is special-cased at a call
site.

Two decoding styles exist in Consul and both are modelled:
* config entries (api/config_entry*.go, agent/structs/config_entry*.go): keys are the Go
  field names, `WeaklyTypedInput` is on, unknown keys read `invalid config key "Path.Key"`;
* agent config files, incl. service definitions (agent/config/config.go): keys are the
  snake_case `mapstructure` tags (Go field names also match), typing is strict, unknown
  keys read `invalid config key service.foo`.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Union

import hcl

from gateway.errors import InvalidInput

# `consul config write` prints this before any decode error (command/config/write).
CONFIG_ENTRY_INPUT_PREFIX = "Failed to decode config entry input"


# --------------------------------------------------------------------------- parsing


def parse_hcl_or_json(text: str, *, error_prefix: str = CONFIG_ENTRY_INPUT_PREFIX) -> dict[str, Any]:
    """Parse Consul-style input: JSON when the first non-blank character is `{`, else HCL1.

    Same rule as Consul's command/helpers/decode_shim.go (isHCL), so a broken JSON file
    gets a JSON error rather than a confusing HCL one. Errors become one-line InvalidInput
    messages `<error_prefix>: <reason>`.
    """
    if not text.strip():
        return {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{error_prefix}: {exc}") from None
    else:
        try:
            data = hcl.loads(text)
        except Exception as exc:  # pyhcl raises ValueError, but its lexer can raise others
            raise InvalidInput(f"{error_prefix}: {_one_line(str(exc)) or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{error_prefix}: top level must be an object")
    return data


def _one_line(message: str) -> str:
    return " ".join(message.split())


# ---------------------------------------------------------------------------- schema


class Scalar(Enum):
    """Leaf types, named after the Go types mapstructure reports in its errors."""

    STRING = "string"
    INT = "int"
    BOOL = "bool"
    DURATION = "time.Duration"  # Go duration string ("10s") or integer nanoseconds; kept as given
    TIME = "time.Time"  # RFC 3339 string; kept as given


class _AnyValue:
    """A free-form value (proxy Config, extension Arguments): copied verbatim, keys untouched."""

    def __repr__(self) -> str:
        return "ANY"


ANY = _AnyValue()


@dataclass(frozen=True)
class ListOf:
    item: Spec


@dataclass(frozen=True)
class MapOf:
    """A map whose keys are user data (Meta, Config, ...): keys are kept verbatim."""

    value: Spec


@dataclass(frozen=True)
class Field:
    name: str  # canonical key written to the output
    spec: Spec
    keys: frozenset[str]  # accepted input spellings, lower-case
    path: str  # segment used in error paths
    drop: bool = False  # accepted but not written out (read-only / unused by the API)


class Obj:
    """A Consul struct: its fields and every spelling Consul accepts for each."""

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.fields: list[Field] = []
        self._by_key: dict[str, Field] = {}
        self.add(*fields)

    def add(self, *fields: Field) -> Obj:
        for f in fields:
            for key in f.keys:
                if key in self._by_key:
                    raise ValueError(f"{self.name}: key {key!r} declared twice")
                self._by_key[key] = f
            self.fields.append(f)
        return self

    def lookup(self, key: str) -> Field | None:
        return self._by_key.get(key.lower())

    def __repr__(self) -> str:
        return f"Obj({self.name})"


Spec = Union[Scalar, _AnyValue, ListOf, MapOf, Obj]

STR, INT, BOOL, DURATION, TIME = Scalar.STRING, Scalar.INT, Scalar.BOOL, Scalar.DURATION, Scalar.TIME
STR_LIST = ListOf(STR)
STR_MAP = MapOf(STR)
FREE_MAP = MapOf(ANY)


def api_field(name: str, spec: Spec, *aliases: str, drop: bool = False) -> Field:
    """A field of an api/structs type: matched by Go name (any case) or an `alias` tag."""
    return Field(name, spec, frozenset({name.lower(), *aliases}), name, drop)


def cfg_field(tag: str, name: str, spec: Spec, *aliases: str, drop: bool = False) -> Field:
    """A field of an agent/config type: matched by its snake_case tag, the Go field name or
    an alias; written out under `name`, the api.AgentServiceRegistration JSON name."""
    return Field(name, spec, frozenset({tag, name.lower(), *aliases}), tag, drop)


class DecodeError(Exception):
    """A type error found while decoding; callers add their own prefix."""


def decode_with_schema(spec: Spec, value: Any, *, weak: bool, path: str = "") -> tuple[Any, list[str]]:
    """Decode `value` against `spec`; return (canonical value, unknown key paths).

    Type errors raise DecodeError with a mapstructure-style message. `weak` mirrors
    mapstructure's WeaklyTypedInput (on for config entries, off for agent config files).
    """
    decoder = _Decoder(weak=weak)
    return decoder.decode(spec, value, path), decoder.unused


class _Decoder:
    def __init__(self, *, weak: bool) -> None:
        self.weak = weak
        self.unused: list[str] = []

    def decode(self, spec: Spec, value: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(spec, Obj):
            return self._object(spec, value, path)
        if isinstance(spec, ListOf):
            return self._list(spec, value, path)
        if isinstance(spec, MapOf):
            return self._map(spec, value, path)
        if spec is ANY:
            return copy.deepcopy(value)
        assert isinstance(spec, Scalar)
        return self._scalar(spec, value, path)

    def _object(self, spec: Obj, value: Any, path: str) -> dict[str, Any] | None:
        # HCL1 hands a block over as a one-element list of maps (HookWeakDecodeFromSlice).
        if isinstance(value, list):
            if not value:
                return None
            if len(value) != 1 or not isinstance(value[0], dict):
                raise DecodeError(f"'{path}' expected a map, got 'slice'")
            value = value[0]
        if not isinstance(value, dict):
            raise DecodeError(f"'{path}' expected a map, got '{_go_kind(value)}'")
        out: dict[str, Any] = {}
        seen: set[str] = set()
        for raw_key, raw_value in value.items():
            key = str(raw_key)
            f = spec.lookup(key)
            if f is None or f.name in seen:
                # Unknown, or a second spelling of a field already set: Consul leaves the
                # loser unused and reports it.
                self.unused.append(_join(path, key))
                continue
            seen.add(f.name)
            decoded = self.decode(f.spec, raw_value, _join(path, f.path))
            if decoded is not None and not f.drop:
                out[f.name] = decoded
        return out

    def _list(self, spec: ListOf, value: Any, path: str) -> list[Any]:
        if isinstance(value, dict):
            if isinstance(spec.item, Obj):
                value = [value]  # a single HCL block, or JSON giving one object for a list
            elif self.weak and not value:
                value = []
            else:
                raise DecodeError(f"'{path}': source data must be an array or slice, got map")
        elif not isinstance(value, list):
            if not self.weak:
                raise DecodeError(f"'{path}': source data must be an array or slice, got {_go_kind(value)}")
            value = [value]  # WeaklyTypedInput lifts a single value into a slice
        out = []
        for i, item in enumerate(value):
            decoded = self.decode(spec.item, item, f"{path}[{i}]")
            if decoded is not None:
                out.append(decoded)
        return out

    def _map(self, spec: MapOf, value: Any, path: str) -> dict[str, Any]:
        if isinstance(value, list):
            if not all(isinstance(v, dict) for v in value) or (len(value) > 1 and not self.weak):
                raise DecodeError(f"'{path}' expected a map, got 'slice'")
            merged: dict[str, Any] = {}
            for v in value:
                merged.update(v)
            value = merged
        if not isinstance(value, dict):
            raise DecodeError(f"'{path}' expected a map, got '{_go_kind(value)}'")
        out: dict[str, Any] = {}
        for raw_key, raw_value in value.items():
            key = str(raw_key)
            decoded = self.decode(spec.value, raw_value, f"{path}[{key}]")
            if decoded is not None or spec.value is ANY:
                out[key] = decoded
        return out

    def _scalar(self, spec: Scalar, value: Any, path: str) -> Any:
        if isinstance(value, (dict, list)):
            raise DecodeError(_type_error(path, spec.value, value))
        if spec is STR:
            if isinstance(value, str):
                return value
            if self.weak:
                if isinstance(value, bool):
                    return "1" if value else "0"
                if isinstance(value, int):
                    return str(value)
                if isinstance(value, float):
                    return _format_float(value)
            raise DecodeError(_type_error(path, "string", value))
        if spec is INT:
            if isinstance(value, bool):
                if self.weak:
                    return int(value)
                raise DecodeError(_type_error(path, "int", value))
            if isinstance(value, int):
                return value
            if isinstance(value, float):
                return int(value)  # mapstructure truncates floats even when not weak
            if isinstance(value, str) and self.weak:
                return _parse_int(value, path)
            raise DecodeError(_type_error(path, "int", value))
        if spec is BOOL:
            if isinstance(value, bool):
                return value
            if self.weak:
                if isinstance(value, (int, float)):
                    return value != 0
                if isinstance(value, str):
                    return _parse_bool(value, path)
            raise DecodeError(_type_error(path, "bool", value))
        if spec is DURATION:
            if isinstance(value, bool):
                raise DecodeError(_type_error(path, spec.value, value))
            if isinstance(value, (int, float)):
                return int(value)
            if isinstance(value, str):
                if not _GO_DURATION.fullmatch(value):
                    raise DecodeError(f"error decoding '{path}': time: invalid duration {json.dumps(value)}")
                return value
            raise DecodeError(_type_error(path, spec.value, value))
        if spec is TIME:
            if isinstance(value, str):
                try:
                    datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise DecodeError(
                        f"error decoding '{path}': parsing time {json.dumps(value)} as \"2006-01-02T15:04:05Z07:00\""
                    ) from None
                return value
            raise DecodeError(_type_error(path, spec.value, value))
        raise AssertionError(spec)


_GO_DURATION = re.compile(r"[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _go_type(value: Any) -> str:
    return {"slice": "[]interface {}", "map": "map[string]interface {}"}.get(_go_kind(value), _go_kind(value))


def _type_error(path: str, expected: str, value: Any) -> str:
    shown = json.dumps(value) if isinstance(value, (dict, list)) else value
    if isinstance(value, bool):
        shown = "true" if value else "false"
    return f"'{path}' expected type '{expected}', got unconvertible type '{_go_type(value)}', value: '{shown}'"


def _format_float(value: float) -> str:
    """strconv.FormatFloat(f, 'f', -1, 64): shortest form, never exponent notation."""
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def _parse_int(text: str, path: str) -> int:
    try:
        return int(text or "0", 0)
    except ValueError:
        raise DecodeError(
            f"cannot parse '{path}' as int: strconv.ParseInt: parsing {json.dumps(text)}: invalid syntax"
        ) from None


# strconv.ParseBool's vocabulary; mapstructure reads "" as false.
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False", ""), False),
}


def _parse_bool(text: str, path: str) -> bool:
    if text not in _GO_BOOLS:
        raise DecodeError(
            f"cannot parse '{path}' as bool: strconv.ParseBool: parsing {json.dumps(text)}: invalid syntax"
        )
    return _GO_BOOLS[text]


def _go_quote(text: str) -> str:
    """Approximates Go's %q for the messages we copy from Consul."""
    return json.dumps(text, ensure_ascii=False)


# ------------------------------------------------------- config entry schemas (api/*.go)

_f = api_field

MESH_GATEWAY = Obj("MeshGatewayConfig", _f("Mode", STR))
TRANSPARENT_PROXY = Obj(
    "TransparentProxyConfig",
    _f("OutboundListenerPort", INT, "outbound_listener_port"),
    _f("DialedDirectly", BOOL, "dialed_directly"),
)
EXPOSE_PATH = Obj(
    "ExposePath",
    _f("ListenerPort", INT, "listener_port"),
    _f("Path", STR),
    _f("LocalPathPort", INT, "local_path_port"),
    _f("Protocol", STR),
    _f("ParsedFromCheck", BOOL),
)
EXPOSE = Obj("ExposeConfig", _f("Checks", BOOL), _f("Paths", ListOf(EXPOSE_PATH)))
ENVOY_EXTENSION = Obj(
    "EnvoyExtension",
    _f("Name", STR),
    _f("Required", BOOL),
    _f("Arguments", FREE_MAP),  # decoded later by the extension itself; keys kept verbatim
    _f("ConsulVersion", STR),
    _f("EnvoyVersion", STR),
)
UPSTREAM_LIMITS = Obj(
    "UpstreamLimits",
    _f("MaxConnections", INT, "max_connections"),
    _f("MaxPendingRequests", INT, "max_pending_requests"),
    _f("MaxConcurrentRequests", INT, "max_concurrent_requests"),
)
PASSIVE_HEALTH_CHECK = Obj(
    "PassiveHealthCheck",
    _f("Interval", DURATION),
    _f("MaxFailures", INT, "max_failures"),
    _f("EnforcingConsecutive5xx", INT, "enforcing_consecutive_5xx"),
    _f("MaxEjectionPercent", INT, "max_ejection_percent"),
    _f("BaseEjectionTime", DURATION, "base_ejection_time"),
)
UPSTREAM_CONFIG = Obj(
    "UpstreamConfig",
    _f("Name", STR),
    _f("Partition", STR),
    _f("Namespace", STR),
    _f("Peer", STR),
    _f("EnvoyListenerJSON", STR, "envoy_listener_json"),
    _f("EnvoyClusterJSON", STR, "envoy_cluster_json"),
    _f("Protocol", STR),
    _f("ConnectTimeoutMs", INT, "connect_timeout_ms"),
    _f("Limits", UPSTREAM_LIMITS),
    _f("PassiveHealthCheck", PASSIVE_HEALTH_CHECK, "passive_health_check"),
    _f("MeshGateway", MESH_GATEWAY, "mesh_gateway"),
    _f("BalanceOutboundConnections", STR, "balance_outbound_connections"),
)
UPSTREAM_CONFIGURATION = Obj(
    "UpstreamConfiguration", _f("Overrides", ListOf(UPSTREAM_CONFIG)), _f("Defaults", UPSTREAM_CONFIG)
)
DESTINATION = Obj("DestinationConfig", _f("Addresses", STR_LIST), _f("Port", INT))
ROUTE_RATE_LIMITS = Obj(
    "InstanceLevelRouteRateLimits",
    _f("PathExact", STR, "path_exact"),
    _f("PathPrefix", STR, "path_prefix"),
    _f("PathRegex", STR, "path_regex"),
    _f("RequestsPerSecond", INT, "requests_per_second"),
    _f("RequestsMaxBurst", INT, "requests_max_burst"),
)
INSTANCE_LEVEL_RATE_LIMITS = Obj(
    "InstanceLevelRateLimits",
    _f("RequestsPerSecond", INT, "requests_per_second"),
    _f("RequestsMaxBurst", INT, "requests_max_burst"),
    _f("Routes", ListOf(ROUTE_RATE_LIMITS)),
)
RATE_LIMITS = Obj("RateLimits", _f("InstanceLevel", INSTANCE_LEVEL_RATE_LIMITS, "instance_level"))
ACCESS_LOGS = Obj(
    "AccessLogsConfig",
    _f("Enabled", BOOL),
    _f("DisableListenerLogs", BOOL, "disable_listener_logs"),
    _f("Type", STR),
    _f("Path", STR),
    _f("JSONFormat", STR, "json_format"),
    _f("TextFormat", STR, "text_format"),
)
FAILOVER_POLICY = Obj("ServiceResolverFailoverPolicy", _f("Mode", STR), _f("Regions", STR_LIST))
PRIORITIZE_BY_LOCALITY = Obj("ServiceResolverPrioritizeByLocality", _f("Mode", STR))

# service-intentions (api/config_entry_intentions.go)
JWT_CLAIM = Obj("IntentionJWTClaimVerification", _f("Path", STR_LIST), _f("Value", STR))
JWT_PROVIDER = Obj(
    "IntentionJWTProvider", _f("Name", STR), _f("VerifyClaims", ListOf(JWT_CLAIM), "verify_claims")
)
JWT_REQUIREMENT = Obj("IntentionJWTRequirement", _f("Providers", ListOf(JWT_PROVIDER)))
HEADER_PERMISSION = Obj(
    "IntentionHTTPHeaderPermission",
    _f("Name", STR),
    _f("Present", BOOL),
    _f("Exact", STR),
    _f("Prefix", STR),
    _f("Suffix", STR),
    _f("Contains", STR),
    _f("Regex", STR),
    _f("Invert", BOOL),
    _f("IgnoreCase", BOOL, "ignore_case"),
)
HTTP_PERMISSION = Obj(
    "IntentionHTTPPermission",
    _f("PathExact", STR, "path_exact"),
    _f("PathPrefix", STR, "path_prefix"),
    _f("PathRegex", STR, "path_regex"),
    _f("Header", ListOf(HEADER_PERMISSION)),
    _f("Methods", STR_LIST),
)
PERMISSION = Obj(
    "IntentionPermission", _f("Action", STR), _f("HTTP", HTTP_PERMISSION), _f("JWT", JWT_REQUIREMENT)
)
SOURCE_INTENTION = Obj(
    "SourceIntention",
    _f("Name", STR),
    _f("Peer", STR),
    _f("Partition", STR),
    _f("Namespace", STR),
    _f("SamenessGroup", STR, "sameness_group"),
    _f("Action", STR),
    _f("Permissions", ListOf(PERMISSION)),
    _f("Precedence", INT),  # read-only: recomputed on write
    _f("Type", STR),
    _f("Description", STR),
    _f("LegacyID", STR, "legacy_id"),
    _f("LegacyMeta", STR_MAP, "legacy_meta"),
    _f("LegacyCreateTime", TIME, "legacy_create_time"),
    _f("LegacyUpdateTime", TIME, "legacy_update_time"),
)

# terminating-gateway (api/config_entry_gateways.go). Partition is Enterprise-only (structs
# EnterpriseMeta); Consul has no snake_case alias for DisableAutoHostRewrite.
LINKED_SERVICE = Obj(
    "LinkedService",
    _f("Name", STR),
    _f("Namespace", STR),
    _f("Partition", STR),
    _f("CAFile", STR, "ca_file"),
    _f("CertFile", STR, "cert_file"),
    _f("KeyFile", STR, "key_file"),
    _f("SNI", STR),
    _f("DisableAutoHostRewrite", BOOL),
)

# mesh (api/config_entry_mesh.go)
MESH_DIRECTIONAL_TLS = Obj(
    "MeshDirectionalTLSConfig",
    _f("TLSMinVersion", STR, "tls_min_version"),
    _f("TLSMaxVersion", STR, "tls_max_version"),
    _f("CipherSuites", STR_LIST, "cipher_suites"),
)
MESH_TLS = Obj("MeshTLSConfig", _f("Incoming", MESH_DIRECTIONAL_TLS), _f("Outgoing", MESH_DIRECTIONAL_TLS))
MESH_TRANSPARENT_PROXY = Obj(
    "TransparentProxyMeshConfig", _f("MeshDestinationsOnly", BOOL, "mesh_destinations_only")
)
MESH_HTTP = Obj(
    "MeshHTTPConfig", _f("SanitizeXForwardedClientCert", BOOL, "sanitize_x_forwarded_client_cert")
)
MESH_PEERING = Obj("PeeringMeshConfig", _f("PeerThroughMeshGateways", BOOL, "peer_through_mesh_gateways"))


def _entry(type_name: str, *fields: Field) -> Obj:
    """Fields every config entry has; Kind is handled before decoding."""
    return Obj(
        type_name,
        _f("Name", STR),
        _f("Partition", STR),
        _f("Namespace", STR),
        *fields,
        _f("Meta", STR_MAP),
        _f("CreateIndex", INT, drop=True),  # read-only raft indexes: accepted, ignored
        _f("ModifyIndex", INT, drop=True),
    )


_PROXY_COMMON = (
    _f("Mode", STR),
    _f("TransparentProxy", TRANSPARENT_PROXY, "transparent_proxy"),
    _f("MutualTLSMode", STR, "mutual_tls_mode"),
    _f("MeshGateway", MESH_GATEWAY, "mesh_gateway"),
    _f("Expose", EXPOSE),
    _f("EnvoyExtensions", ListOf(ENVOY_EXTENSION), "envoy_extensions"),
)

CONFIG_ENTRY_SCHEMAS: dict[str, Obj] = {
    "service-intentions": _entry(
        "ServiceIntentionsConfigEntry",
        _f("Sources", ListOf(SOURCE_INTENTION)),
        _f("JWT", JWT_REQUIREMENT),
    ),
    "service-defaults": _entry(
        "ServiceConfigEntry",
        _f("Protocol", STR),
        *_PROXY_COMMON,
        _f("ExternalSNI", STR, "external_sni"),
        _f("UpstreamConfig", UPSTREAM_CONFIGURATION, "upstream_config"),
        _f("Destination", DESTINATION),
        _f("MaxInboundConnections", INT, "max_inbound_connections"),
        _f("LocalConnectTimeoutMs", INT, "local_connect_timeout_ms"),
        _f("LocalRequestTimeoutMs", INT, "local_request_timeout_ms"),
        _f("BalanceInboundConnections", STR, "balance_inbound_connections"),
        _f("RateLimits", RATE_LIMITS, "rate_limits"),
    ),
    "proxy-defaults": _entry(
        "ProxyConfigEntry",
        *_PROXY_COMMON,
        _f("Config", FREE_MAP),
        _f("AccessLogs", ACCESS_LOGS, "access_logs"),
        _f("FailoverPolicy", FAILOVER_POLICY, "failover_policy"),
        _f("PrioritizeByLocality", PRIORITIZE_BY_LOCALITY, "prioritize_by_locality"),
    ),
    "terminating-gateway": _entry(
        "TerminatingGatewayConfigEntry",
        _f("Services", ListOf(LINKED_SERVICE)),
    ),
    "mesh": _entry(
        "MeshConfigEntry",
        _f("TransparentProxy", MESH_TRANSPARENT_PROXY, "transparent_proxy"),
        _f("AllowEnablingPermissiveMutualTLS", BOOL, "allow_enabling_permissive_mutual_tls"),
        _f("ValidateClusters", BOOL, "validate_clusters"),
        _f("TLS", MESH_TLS),
        _f("HTTP", MESH_HTTP),
        _f("Peering", MESH_PEERING),
    ),
}

# Kinds whose entry has exactly one legal name (structs Normalize/Validate).
_SINGLETON_NAMES = {"proxy-defaults": "global", "mesh": "mesh"}

# Every kind Consul's MakeConfigEntry knows, so an unsupported-but-real kind is not
# reported as a typo.
CONSUL_CONFIG_ENTRY_KINDS = frozenset({
    "service-defaults", "proxy-defaults", "service-router", "service-splitter", "service-resolver",
    "ingress-gateway", "terminating-gateway", "service-intentions", "mesh", "exported-services",
    "sameness-group", "control-plane-request-limit", "api-gateway", "tcp-route", "http-route",
    "file-system-certificate", "inline-certificate", "jwt-provider",
})


def canonical_config_entry(raw: dict[str, Any]) -> dict[str, Any]:
    """Return `raw` with Consul's canonical CamelCase JSON keys, ready to validate and store.

    Only fields present in the input appear (no defaults), except `Kind` and `Name`, which
    always do (`Name` is "" when absent; "global"/"mesh" for the singleton kinds). Free-form
    maps (Meta, LegacyMeta, Config, Arguments) keep their keys verbatim. Errors use
    Consul's texts without its transport prefix: the HTTP layer should prefix
    `Request decoding failed: `, the CLI `Failed to decode config entry input: `.
    """
    if not isinstance(raw, dict):
        raise InvalidInput("Payload is not a JSON object")
    if "Kind" in raw:
        kind = raw["Kind"]
    elif "kind" in raw:
        kind = raw["kind"]
    else:
        raise InvalidInput("Payload does not contain a kind/Kind key at the top level")
    if not isinstance(kind, str):
        raise InvalidInput("Kind value in payload is not a string")
    schema = CONFIG_ENTRY_SCHEMAS.get(kind)
    if schema is None:
        if kind in CONSUL_CONFIG_ENTRY_KINDS:
            raise InvalidInput(f"config entry kind {_go_quote(kind)} is not supported by terminus")
        raise InvalidInput(f"invalid config entry kind: {kind}")

    body = {k: v for k, v in raw.items() if k not in ("Kind", "kind")}
    try:
        decoded, unused = decode_with_schema(schema, body, weak=True)
    except DecodeError as exc:
        raise InvalidInput(str(exc)) from None
    if unused:
        raise InvalidInput("; ".join(f"invalid config key {_go_quote(k)}" for k in unused))

    name = decoded.pop("Name", "")
    fixed = _SINGLETON_NAMES.get(kind)
    if fixed is not None:
        if name not in ("", fixed):
            raise InvalidInput(f"invalid name ({_go_quote(name)}), only {_go_quote(fixed)} is supported")
        name = fixed
    return {"Kind": kind, "Name": name, **decoded}


# ------------------------------------- agent config: service definitions (agent/config)

_c = cfg_field

SVC_WEIGHTS = Obj("ServiceWeights", _c("passing", "Passing", INT), _c("warning", "Warning", INT))
SVC_ADDRESS = Obj("ServiceAddress", _c("address", "Address", STR), _c("port", "Port", INT))
SVC_MESH_GATEWAY = Obj("MeshGatewayConfig", _c("mode", "Mode", STR))
SVC_TRANSPARENT_PROXY = Obj(
    "TransparentProxyConfig",
    _c("outbound_listener_port", "OutboundListenerPort", INT),
    _c("dialed_directly", "DialedDirectly", BOOL),
)
SVC_EXPOSE_PATH = Obj(
    "ExposePath",
    _c("listener_port", "ListenerPort", INT),
    _c("path", "Path", STR),
    _c("protocol", "Protocol", STR),
    _c("local_path_port", "LocalPathPort", INT),
)
SVC_EXPOSE = Obj(
    "ExposeConfig",
    _c("checks", "Checks", BOOL),
    _c("port", "Port", INT, drop=True),  # parsed by agent/config, absent from the API
    _c("paths", "Paths", ListOf(SVC_EXPOSE_PATH)),
)
SVC_UPSTREAM = Obj(
    "Upstream",
    _c("destination_type", "DestinationType", STR),
    _c("destination_namespace", "DestinationNamespace", STR),
    _c("destination_partition", "DestinationPartition", STR),
    _c("destination_peer", "DestinationPeer", STR),
    _c("destination_name", "DestinationName", STR),
    _c("datacenter", "Datacenter", STR),
    _c("local_bind_address", "LocalBindAddress", STR),
    _c("local_bind_port", "LocalBindPort", INT),
    _c("local_bind_socket_path", "LocalBindSocketPath", STR),
    _c("local_bind_socket_mode", "LocalBindSocketMode", STR),
    _c("config", "Config", FREE_MAP),
    _c("mesh_gateway", "MeshGateway", SVC_MESH_GATEWAY),
)
SVC_PROXY = Obj(
    "ServiceProxy",
    _c("destination_service_name", "DestinationServiceName", STR),
    _c("destination_service_id", "DestinationServiceID", STR),
    _c("local_service_address", "LocalServiceAddress", STR),
    _c("local_service_port", "LocalServicePort", INT),
    _c("local_service_socket_path", "LocalServiceSocketPath", STR),
    _c("transparent_proxy", "TransparentProxy", SVC_TRANSPARENT_PROXY),
    _c("mode", "Mode", STR),
    _c("config", "Config", FREE_MAP),
    _c("upstreams", "Upstreams", ListOf(SVC_UPSTREAM)),
    _c("mesh_gateway", "MeshGateway", SVC_MESH_GATEWAY),
    _c("expose", "Expose", SVC_EXPOSE),
)
SVC_CHECK = Obj(
    "CheckDefinition",
    _c("id", "CheckID", STR, "checkid"),
    _c("name", "Name", STR),
    _c("notes", "Notes", STR),
    _c("service_id", "ServiceID", STR, "serviceid", drop=True),  # implied by the enclosing service
    _c("token", "Token", STR, drop=True),  # not part of a service's check types
    _c("status", "Status", STR),
    _c("args", "ScriptArgs", STR_LIST, "scriptargs"),
    _c("http", "HTTP", STR),
    _c("header", "Header", MapOf(STR_LIST)),
    _c("method", "Method", STR),
    _c("body", "Body", STR),
    _c("disable_redirects", "DisableRedirects", BOOL),
    _c("output_max_size", "OutputMaxSize", INT),
    _c("tcp", "TCP", STR),
    _c("tcp_use_tls", "TCPUseTLS", BOOL),
    _c("udp", "UDP", STR),
    _c("interval", "Interval", STR),
    _c("docker_container_id", "DockerContainerID", STR, "dockercontainerid"),
    _c("shell", "Shell", STR),
    _c("grpc", "GRPC", STR),
    _c("grpc_use_tls", "GRPCUseTLS", BOOL),
    _c("tls_server_name", "TLSServerName", STR),
    _c("tls_skip_verify", "TLSSkipVerify", BOOL, "tlsskipverify"),
    _c("alias_node", "AliasNode", STR),
    _c("alias_service", "AliasService", STR),
    _c("timeout", "Timeout", STR),
    _c("ttl", "TTL", STR),
    _c("h2ping", "H2PING", STR),
    _c("h2ping_use_tls", "H2PingUseTLS", BOOL),
    _c("os_service", "OSService", STR),
    _c("success_before_passing", "SuccessBeforePassing", INT),
    _c("failures_before_warning", "FailuresBeforeWarning", INT),
    _c("failures_before_critical", "FailuresBeforeCritical", INT),
    _c("deregister_critical_service_after", "DeregisterCriticalServiceAfter", STR, "deregistercriticalserviceafter"),
    _c("namespace", "Namespace", STR),
    _c("partition", "Partition", STR),
)
SERVICE_DEFINITION = Obj(
    "ServiceDefinition",
    _c("kind", "Kind", STR),
    _c("id", "ID", STR),
    _c("name", "Name", STR),
    _c("tags", "Tags", STR_LIST),
    _c("address", "Address", STR),
    _c("tagged_addresses", "TaggedAddresses", MapOf(SVC_ADDRESS)),
    _c("meta", "Meta", STR_MAP),
    _c("port", "Port", INT),
    _c("socket_path", "SocketPath", STR),
    _c("check", "Check", SVC_CHECK),
    _c("checks", "Checks", ListOf(SVC_CHECK)),
    _c("token", "Token", STR),
    _c("weights", "Weights", SVC_WEIGHTS),
    _c("enable_tag_override", "EnableTagOverride", BOOL),
    _c("proxy", "Proxy", SVC_PROXY),
    _c("namespace", "Namespace", STR),
    _c("partition", "Partition", STR),
)
SVC_CONNECT = Obj(
    "ServiceConnect",
    _c("native", "Native", BOOL),
    _c("sidecar_service", "SidecarService", SERVICE_DEFINITION),  # same shape, recursively
)
SERVICE_DEFINITION.add(_c("connect", "Connect", SVC_CONNECT))

# agent/config builder.serviceKindVal; Consul silently maps any other value to "".
SERVICE_KINDS = frozenset(
    {"", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway"}
)

# Top-level keys of Consul's agent config (agent/config/config.go Config and
# deprecated.go DeprecatedConfig). A file may carry any of them; everything else is the
# error Consul reports, `invalid config key <key>`.
AGENT_CONFIG_KEYS = frozenset("""
acl addresses advertise_addr advertise_addr_ipv4 advertise_addr_ipv6 advertise_addr_wan
advertise_addr_wan_ipv4 advertise_addr_wan_ipv6 advertise_reconnect_timeout auto_config
autopilot bind_addr bootstrap bootstrap_expect cache check check_output_max_size
check_update_interval checks client_addr cloud config_entries auto_encrypt connect dns_config
domain alt_domain recursors data_dir datacenter default_query_time default_intention_policy
disable_anonymous_signature disable_coordinates disable_host_node_id
disable_http_unprintable_char_filter disable_keyring_file disable_remote_exec
disable_update_check discard_check_output discovery_max_stale enable_agent_tls_for_checks
enable_central_service_config enable_debug enable_script_checks enable_local_script_checks
enable_syslog encrypt encrypt_verify_incoming encrypt_verify_outgoing experiments gossip_lan
gossip_wan http_config leave_on_terminate license_path limits locality log_level
log_sublevels log_json log_file log_rotate_duration log_rotate_bytes log_rotate_max_files
max_query_time node_id node_meta node_name peering performance pid_file ports
primary_datacenter primary_gateways primary_gateways_interval protocol raft_protocol
raft_snapshot_threshold raft_snapshot_interval raft_trailing_logs reconnect_timeout
reconnect_timeout_wan rejoin_after_leave auto_reload_config retry_interval retry_interval_wan
retry_join retry_max retry_max_wan retry_join_wan serf_lan_allowed_cidrs
serf_wan_allowed_cidrs serf_lan serf_wan server server_name server_rejoin_age_max service
services session_ttl_min skip_leave_on_interrupt syslog_facility tls tagged_addresses
telemetry translate_wan_addrs xds ui ui_content_path ui_dir ui_config unix_sockets watches
rpc raft_logstore use_streaming_backend snapshot_agent ae_interval
check_deregister_interval_min check_reap_interval consul revision segment_limit
segment_name_limit sync_coordinate_interval_min sync_coordinate_rate_target version
version_prerelease version_metadata build_date audit read_replica non_voting_server segment
segments partition license_poll_base_time license_poll_max_time license_update_base_time
license_update_max_time reporting acl_enforce_version_8
acl_agent_master_token acl_agent_token acl_token acl_enable_key_list_policy acl_master_token
acl_replication_token enable_acl_replication acl_datacenter acl_default_policy acl_down_policy
acl_ttl ca_file ca_path cert_file key_file tls_cipher_suites tls_min_version verify_incoming
verify_incoming_https verify_incoming_rpc verify_outgoing verify_server_hostname
tls_prefer_server_cipher_suites start_join start_join_wan raft_boltdb
""".split())


def agent_key_spellings(tag: str) -> tuple[str, ...]:
    """Spellings Consul accepts for an agent config key: the tag, or (roughly) its Go
    field name, which mapstructure matches case-insensitively."""
    bare = tag.replace("_", "")
    return (bare,) if bare != tag else ()


def parse_service_definitions(text: str, *, source: str = "service definition") -> list[dict[str, Any]]:
    """Parse a `consul services register` file into `PUT /v1/agent/service/register` bodies.

    Accepts `service { ... }` and/or `services = [ ... ]` (HCL or JSON, snake_case or
    CamelCase keys) and returns api.AgentServiceRegistration-shaped dicts, one per
    service, containing only the fields given (the register endpoint applies defaults).
    Other valid agent config keys in the file are ignored, as Consul does.
    """
    prefix = f"failed to parse {source}"
    raw = parse_hcl_or_json(text, error_prefix=prefix)
    decoder = _Decoder(weak=False)
    found: list[tuple[str, dict[str, Any]]] = []
    try:
        for key, value in raw.items():
            lowered = str(key).lower()
            if lowered == "service":
                # Consul allows one `service` block; repeated HCL blocks are accepted here too.
                items = value if isinstance(value, list) and len(value) > 1 else [value]
                for i, item in enumerate(items):
                    label = "service" if len(items) == 1 else f"service[{i}]"
                    decoded = decoder.decode(SERVICE_DEFINITION, item, label)
                    if decoded is not None:
                        found.append((label, decoded))
            elif lowered == "services":
                for i, decoded in enumerate(decoder.decode(ListOf(SERVICE_DEFINITION), value, "services") or []):
                    found.append((f"services[{i}]", decoded))
            elif lowered in AGENT_CONFIG_KEYS or lowered in _AGENT_KEYS_BARE:
                continue
            else:
                decoder.unused.append(str(key))
    except DecodeError as exc:
        raise InvalidInput(f"{prefix}: {exc}") from None
    if decoder.unused:
        raise InvalidInput(f"{prefix}: " + "; ".join(f"invalid config key {k}" for k in decoder.unused))

    for label, service in found:
        if not service.get("Name"):
            # The text of agent_endpoint.go AgentRegisterService, which Consul's CLI hits.
            raise InvalidInput("Missing service name" if label == "service" else f"{label}: Missing service name")
        _check_kinds(service, label)
    return [service for _, service in found]


_AGENT_KEYS_BARE = frozenset(s for tag in AGENT_CONFIG_KEYS for s in agent_key_spellings(tag))


def _check_kinds(service: dict[str, Any], label: str) -> None:
    """Reject unknown service kinds. Consul silently registers them as typical services,
    which hides typos such as `terminating_gateway`."""
    kind = service.get("Kind", "")
    if kind not in SERVICE_KINDS:
        allowed = ", ".join(_go_quote(k) for k in sorted(SERVICE_KINDS) if k)
        raise InvalidInput(f"{label}: invalid service kind {_go_quote(kind)}: must be one of {allowed} or empty")
    sidecar = (service.get("Connect") or {}).get("SidecarService")
    if sidecar is not None:
        _check_kinds(sidecar, f"{label}.connect.sidecar_service")
