"""Validation for the config entry kinds other than service-intentions (which has its own module).

Texts follow Consul's config_entry*.go where Consul has one.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.awslambda.config import validate_lambda
from gateway.errors import InvalidInput

KINDS = ("service-intentions", "service-defaults", "proxy-defaults", "terminating-gateway", "mesh")
PROTOCOLS = ("tcp", "http", "http2", "grpc")
META_MAX_PAIRS, META_KEY_MAX, META_VALUE_MAX = 64, 128, 512


def validate_meta(meta: dict[str, Any] | None) -> None:
    if not meta:
        return
    if len(meta) > META_MAX_PAIRS:
        raise InvalidInput(f"Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs")
    for key, value in meta.items():
        if not key:
            raise InvalidInput("Key cannot be blank")
        if len(key) > META_KEY_MAX:
            raise InvalidInput(f"Key is too long (limit: {META_KEY_MAX} characters)")
        if not isinstance(value, str):
            raise InvalidInput(f"Value for key {key!r} must be a string")
        if len(value) > META_VALUE_MAX:
            raise InvalidInput(f"Value is too long (limit: {META_VALUE_MAX} characters)")


def validate_service_defaults(entry: dict[str, Any]) -> None:
    protocol = entry.get("Protocol", "")
    if protocol and protocol.lower() not in PROTOCOLS:
        raise InvalidInput(f"invalid protocol {protocol!r}: must be one of {', '.join(PROTOCOLS)}")
    mode = (entry.get("MeshGateway") or {}).get("Mode", "")
    if mode not in ("", "none", "local", "remote"):
        raise InvalidInput(f'Invalid Mesh Gateway mode "{mode}"')
    tmode = entry.get("Mode", "")
    if tmode not in ("", "direct", "transparent"):
        raise InvalidInput(f'invalid proxy mode: "{tmode}"')
    validate_lambda(entry)  # Meta keys or the builtin/aws/lambda extension: 400 on a bad ARN, mode, region


def validate_proxy_defaults(entry: dict[str, Any]) -> None:
    if entry["Name"] != "global":
        raise InvalidInput(f'invalid name ("{entry["Name"]}"), only "global" is supported')
    validate_access_logs(entry.get("AccessLogs") or {})


ACCESS_LOG_TYPES = ("", "stdout", "stderr", "file")


def validate_access_logs(logs: dict[str, Any]) -> None:
    """Consul's AccessLogsConfig.Validate, in its order and with its texts."""
    kind, path = logs.get("Type") or "", logs.get("Path") or ""
    json_format, text_format = logs.get("JSONFormat") or "", logs.get("TextFormat") or ""
    if kind not in ACCESS_LOG_TYPES:
        raise InvalidInput(f"invalid access log type: {kind}")
    if kind == "file" and not path:
        raise InvalidInput("path must be specified when using file type access logs")
    if json_format and text_format:
        raise InvalidInput("cannot specify both access log JSONFormat and TextFormat")
    if kind != "file" and path:
        raise InvalidInput("path is only valid for file type access logs")
    if json_format:
        try:
            parsed = json.loads(json_format)
        except ValueError as exc:
            raise InvalidInput(f"invalid access log json for JSON format: {exc}") from None
        if not isinstance(parsed, dict):  # Consul accepts any JSON here, then fails to build the proxy config
            raise InvalidInput("invalid access log json for JSON format: must be a JSON object")


def validate_mesh(entry: dict[str, Any]) -> None:
    if entry["Name"] != "mesh":
        raise InvalidInput(f'invalid name ("{entry["Name"]}"), only "mesh" is supported')


def validate_terminating_gateway(entry: dict[str, Any]) -> None:
    seen: set[tuple[str, str]] = set()
    for svc in entry.get("Services") or ():
        name = svc.get("Name", "")
        if not name:
            raise InvalidInput("Service name cannot be blank.")
        ns = svc.get("Namespace") or "default"
        if ns == "*":
            raise InvalidInput("Wildcard namespace is not supported for terminating gateway services")
        if (ns, name) in seen:
            raise InvalidInput(f"Service {ns}/{name} was specified more than once within a namespace")
        seen.add((ns, name))
        has_cert, has_key, has_ca = bool(svc.get("CertFile")), bool(svc.get("KeyFile")), bool(svc.get("CAFile"))
        if (has_cert or has_key) and not (has_cert and has_key and has_ca):
            raise InvalidInput(
                f"Service {ns}/{name} must have a CertFile, CAFile, and KeyFile specified for TLS origination"
            )


def normalize_terminating_gateway(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    out["Services"] = [
        {**svc, "Namespace": svc.get("Namespace") or "default", "Partition": svc.get("Partition") or "default"}
        for svc in entry.get("Services") or ()
    ]
    return out
