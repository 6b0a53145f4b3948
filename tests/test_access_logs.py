"""proxy-defaults AccessLogs are validated as Consul validates them (what Envoy then logs is
tested end to end in tests/test_xds_e2e.py; the resources in the golden files)."""

from __future__ import annotations

from typing import Any

import pytest

BAD = [
    ({"Type": "syslog"}, "invalid access log type: syslog"),
    ({"Type": "file"}, "path must be specified when using file type access logs"),
    ({"JSONFormat": "{}", "TextFormat": "%START_TIME%"}, "cannot specify both access log JSONFormat and TextFormat"),
    ({"Type": "stderr", "Path": "/tmp/a.log"}, "path is only valid for file type access logs"),
    ({"JSONFormat": "{not json"}, "invalid access log json for JSON format: "),
    # stricter than Consul, which accepts any JSON here and then fails to build every proxy's config
    ({"JSONFormat": "[1]"}, "invalid access log json for JSON format: must be a JSON object"),
]


@pytest.mark.parametrize("logs,message", BAD, ids=[m for _, m in BAD])
def test_invalid_access_logs_are_400_and_nothing_is_written(api: Any, logs: dict[str, str], message: str) -> None:
    good = {"Kind": "proxy-defaults", "Name": "global", "AccessLogs": {"Enabled": True}}
    assert api.put("/v1/config", json=good).json() is True
    resp = api.put("/v1/config", json={**good, "AccessLogs": {"Enabled": True, **logs}})
    assert resp.status_code == 400 and resp.text.startswith(message), resp.text
    assert api.get("/v1/config/proxy-defaults/global").json()["AccessLogs"] == {"Enabled": True}
