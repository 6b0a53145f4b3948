"""The slice of Consul's agent configuration terminus needs, read from Consul's own files.

Why: operators point terminus at the HCL/JSON they already give `consul agent`. We read the
handful of keys that change terminus's behaviour, accept (and ignore) every other valid
Consul key, and reject what Consul rejects with Consul's wording (agent/config/builder.go).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gateway.decode import (
    AGENT_CONFIG_KEYS,
    ANY,
    BOOL,
    INT,
    STR,
    DecodeError,
    Field,
    Obj,
    Spec,
    agent_key_spellings,
    cfg_field,
    decode_with_schema,
    parse_hcl_or_json,
)
from gateway.errors import InvalidInput

INTENTION_POLICIES = ("", "allow", "deny")


@dataclass
class AgentConfig:
    datacenter: str = "dc1"
    primary_datacenter: str | None = None
    data_dir: str | None = None
    bind_addr: str = "127.0.0.1"
    http_port: int = 8500  # -1 when disabled (Consul: any value <= 0)
    grpc_port: int = 8502
    acl_enabled: bool = False
    acl_default_policy: str = "allow"
    initial_management_token: str | None = None
    default_intention_policy: str = ""  # "" | "allow" | "deny"

    def intention_default_allow(self) -> bool:
        """What happens when no intention matches, as in Consul's AgentConnectAuthorize:
        `default_intention_policy` if set, else the ACL default policy when ACLs are on,
        else allow (ACLs off means the allow-all authorizer)."""
        if self.default_intention_policy:
            return self.default_intention_policy == "allow"
        if self.acl_enabled:
            return self.acl_default_policy == "allow"
        return True


# ----------------------------------------------------------------------------- schema


def _ignored(tag: str) -> Field:
    return cfg_field(tag, tag, ANY, *agent_key_spellings(tag), drop=True)


def _key(tag: str, name: str, spec: Spec) -> Field:
    return cfg_field(tag, name, spec, *agent_key_spellings(tag))


_PORT_TAGS = ("dns", "http", "https", "serf_lan", "serf_wan", "server", "grpc", "grpc_tls",
              "proxy_min_port", "proxy_max_port", "sidecar_min_port", "sidecar_max_port",
              "expose_min_port", "expose_max_port")
_PORTS = Obj("Ports", *(_key(t, t, INT) for t in _PORT_TAGS))

_TOKENS = Obj(
    "Tokens",
    _key("initial_management", "initial_management", STR),
    _key("master", "master", STR),  # DEPRECATED: renamed to initial_management
    *(_ignored(t) for t in ("replication", "agent_recovery", "agent_master", "default", "agent", "dns",
                            "config_file_service_registration", "managed_service_provider")),
)
_ACL = Obj(
    "ACL",
    _key("enabled", "enabled", BOOL),
    _key("default_policy", "default_policy", STR),
    _key("tokens", "tokens", _TOKENS),
    *(_ignored(t) for t in ("enable_token_replication", "policy_ttl", "role_ttl", "token_ttl", "down_policy",
                            "enable_key_list_policy", "enable_token_persistence", "msp_disable_bootstrap")),
)

_READ = {
    "datacenter": STR,
    "primary_datacenter": STR,
    "data_dir": STR,
    "bind_addr": STR,
    "default_intention_policy": STR,
    "ports": _PORTS,
    "acl": _ACL,
    # deprecated spellings Consul still maps (agent/config/deprecated.go)
    "acl_master_token": STR,
    "acl_datacenter": STR,
    "acl_default_policy": STR,
}
_CONFIG = Obj(
    "Config",
    *(_key(tag, tag, spec) for tag, spec in _READ.items()),
    *(_ignored(tag) for tag in sorted(AGENT_CONFIG_KEYS - _READ.keys())),
)


# ---------------------------------------------------------------------------- loading


def parse_agent_config(text: str, *, source: str = "agent config") -> AgentConfig:
    """Parse one Consul agent config document (HCL or JSON)."""
    return _finish(_settings(text, source), AgentConfig())


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Load a Consul agent config file, or every *.hcl/*.json file of a directory in name
    order with later files overriding earlier ones (like `consul agent -config-dir`)."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.suffix in (".hcl", ".json") and f.is_file()) if p.is_dir() else [p]
    merged: dict[str, Any] = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"config: failed to read {f}: {exc.strerror or exc}") from None
        merged.update(_settings(text, str(f)))
    return _finish(merged, AgentConfig())


def _settings(text: str, source: str) -> dict[str, Any]:
    """The AgentConfig fields one source sets, before validation."""
    prefix = f"failed to parse {source}"
    raw = parse_hcl_or_json(text, error_prefix=prefix)
    try:
        c, unused = decode_with_schema(_CONFIG, raw, weak=False)
    except DecodeError as exc:
        raise InvalidInput(f"{prefix}: {exc}") from None
    if unused:
        raise InvalidInput(f"{prefix}: " + "; ".join(f"invalid config key {k}" for k in unused))

    acl = c.get("acl", {})
    tokens = acl.get("tokens", {})
    ports = c.get("ports", {})
    out: dict[str, Any] = {}
    for name in ("datacenter", "primary_datacenter", "data_dir", "bind_addr", "default_intention_policy"):
        if name in c:
            out[name] = c[name]
    # Deprecated keys fill in only what the new spelling left unset, as Consul does.
    if "enabled" in acl:
        out["acl_enabled"] = acl["enabled"]
    if "acl_datacenter" in c:
        out.setdefault("primary_datacenter", c["acl_datacenter"])
        out["acl_enabled"] = True  # acl_datacenter implicitly enables ACLs
    policy = acl.get("default_policy", c.get("acl_default_policy"))
    if policy is not None:
        out["acl_default_policy"] = policy
    token = tokens.get("initial_management", tokens.get("master", c.get("acl_master_token")))
    if token is not None:
        out["initial_management_token"] = token
    for tag, name in (("http", "http_port"), ("grpc", "grpc_port")):
        if tag in ports:
            out[name] = _port(f"ports.{tag}", ports[tag])
    return out


def _port(name: str, value: int) -> int:
    """builder.portVal: <= 0 disables the listener (-1); above 65535 is an error."""
    if value <= 0:
        return -1
    if value > 65535:
        raise InvalidInput(f"{name}: invalid port: {value}")
    return value


# Same regexp and wording as builder.go validateBasicName.
_BASIC_NAME = re.compile(r"^[a-z0-9_-]+$")


def _basic_name(field: str, value: str) -> None:
    if value == "":
        raise InvalidInput(f"{field} cannot be empty")
    if not _BASIC_NAME.match(value):
        raise InvalidInput(
            f"{field} can only contain lowercase alphanumeric, - or _ characters. received: {_quote(value)}"
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _finish(settings: dict[str, Any], base: AgentConfig) -> AgentConfig:
    known = {f.name for f in fields(AgentConfig)}
    cfg = replace(base, **{k: v for k, v in settings.items() if k in known})

    cfg.datacenter = cfg.datacenter.lower()  # Consul lower-cases before validating
    _basic_name("datacenter", cfg.datacenter)
    if cfg.primary_datacenter is not None:
        cfg.primary_datacenter = cfg.primary_datacenter.lower() or None
        if cfg.primary_datacenter is not None:
            _basic_name("primary_datacenter", cfg.primary_datacenter)
    if cfg.data_dir == "":
        cfg.data_dir = None

    if cfg.bind_addr == "":
        raise InvalidInput("bind_addr cannot be empty")
    if "{{" not in cfg.bind_addr:  # go-sockaddr templates are resolved at bind time
        try:
            ipaddress.ip_address(cfg.bind_addr)
        except ValueError:
            raise InvalidInput("bind_addr must be an ip address") from None

    if cfg.acl_default_policy not in ("allow", "deny"):
        raise InvalidInput(f"Unsupported default ACL policy: {cfg.acl_default_policy}")
    if cfg.default_intention_policy not in INTENTION_POLICIES:
        raise InvalidInput(
            f'default_intention_policy must be "allow" or "deny", received: {_quote(cfg.default_intention_policy)}'
        )
    return cfg
