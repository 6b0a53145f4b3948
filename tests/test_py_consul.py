"""py-consul 1.8.0, a real Consul client, against a real terminus server process."""

from __future__ import annotations

from typing import Any

import consul
import pytest


@pytest.mark.slow
def test_py_consul_intentions_and_config_entries(start_server: Any, tmp_path: Any) -> None:
    server = start_server("--data-dir", str(tmp_path / "d"))
    host, port = server.addr.split(":")
    c = consul.Consul(host=host, port=int(port))

    assert c.connect.intentions.upsert("web", "lambda-fn", action="allow", description="d")
    assert c.connect.intentions.upsert("*", "lambda-fn", action="deny")
    got = c.connect.intentions.read("web", "lambda-fn")
    assert (got["SourceName"], got["Action"], got["Description"]) == ("web", "allow", "d")
    listed = c.connect.intentions.list(filter_expr='DestinationName == "lambda-fn"')
    assert [i["SourceName"] for i in listed] == ["web", "*"]
    assert c.connect.intentions.check("web", "lambda-fn") is True
    assert c.connect.intentions.check("api", "lambda-fn") is False
    matches = c.connect.intentions.match("destination", "lambda-fn")
    assert [i["SourceName"] for i in matches["lambda-fn"]] == ["web", "*"]
    assert c.connect.intentions.delete("web", "lambda-fn")
    assert c.connect.intentions.read("web", "lambda-fn") is None
    assert c.connect.intentions.check("web", "lambda-fn") is False

    assert c.config.set("service-defaults", "lambda-fn", {"Protocol": "http"})
    entry = c.config.get("service-defaults", "lambda-fn")
    assert entry["Protocol"] == "http"
    assert [e["Name"] for e in c.config.list("service-defaults")] == ["lambda-fn"]
    with pytest.raises(consul.base.ConsulException):
        c.config.set("service-intentions", "x", {"Sources": [{"Name": "we*", "Action": "allow"}]})
    assert c.config.delete("service-defaults", "lambda-fn")
    assert c.config.get("service-defaults", "lambda-fn") is None
