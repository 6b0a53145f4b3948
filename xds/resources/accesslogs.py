"""Envoy access loggers from proxy-defaults ``AccessLogs``, as Consul's agent/xds/accesslogs.

One logger per place Consul puts one: every HTTP connection manager and TCP proxy ("Consul
Listener Filter Log"), and every listener for connections that match no filter chain
("Consul Listener Log", response flag NR), unless ``DisableListenerLogs``. Sinks: stdout (the
default), stderr or a file; format: Consul's default JSON, or the entry's ``JSONFormat`` or
``TextFormat`` (a trailing newline added, as Consul does).
"""

from __future__ import annotations

import json
from typing import Any

from xds.resources.common import typed
from xds.snapshot import AccessLogs

# Consul's defaultJSONFormat, field for field
DEFAULT_JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def _format(logs: AccessLogs) -> dict[str, Any]:
    if logs.text_format and not logs.json_format:
        text = logs.text_format if logs.text_format.endswith("\n") else logs.text_format + "\n"
        return {"text_format_source": {"inline_string": text}}
    return {"json_format": json.loads(logs.json_format) if logs.json_format else DEFAULT_JSON_FORMAT}


def _sink(logs: AccessLogs) -> dict[str, Any]:
    log_format = _format(logs)
    if logs.type == "file":
        return typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", path=logs.path, log_format=log_format)
    if logs.type == "stderr":
        return typed("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", log_format=log_format)
    return typed("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", log_format=log_format)


def filter_logs(logs: AccessLogs | None) -> list[dict[str, Any]]:
    """``access_log`` of an HTTP connection manager or a TCP proxy."""
    if logs is None:
        return []
    return [{"name": "Consul Listener Filter Log", "typed_config": _sink(logs)}]


def listener_logs(logs: AccessLogs | None) -> list[dict[str, Any]]:
    """``access_log`` of a listener: connections no filter chain took (response flag NR)."""
    if logs is None or logs.disable_listener_logs:
        return []
    return [{"name": "Consul Listener Log", "filter": {"response_flag_filter": {"flags": ["NR"]}},
             "typed_config": _sink(logs)}]
