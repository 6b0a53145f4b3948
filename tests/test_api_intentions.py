"""The intentions and config-entry HTTP API, as Consul clients use it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.control import ControlPlane
from gateway.decode import canonical_config_entry, parse_hcl_or_json
from gateway.store import models


def db_fingerprint(cp: ControlPlane) -> tuple[int, list[tuple[Any, ...]]]:
    """The index counter and every config entry as stored on disk."""
    with Session(cp.store.engine) as s:
        counter = s.get(models.IndexCounter, 1).value
        rows = s.execute(select(models.ConfigEntry.kind, models.ConfigEntry.name, models.ConfigEntry.body)).all()
        return counter, sorted((k, n, repr(b)) for k, n, b in rows)


def test_exact_crud_and_listing(api: TestClient) -> None:
    r = api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"},
                content=b'{"SourceType": "consul", "Action": "deny", "Description": "no"}')
    assert r.status_code == 200 and r.json() is True
    r = api.get("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"})
    assert r.status_code == 200
    ixn = r.json()
    assert (ixn["SourceName"], ixn["DestinationName"], ixn["Action"], ixn["Precedence"], ixn["Description"]) == ("web", "db", "deny", 9, "no")
    assert int(r.headers["X-Consul-Index"]) >= 1
    api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "db"}, json={"Action": "allow"})
    listing = api.get("/v1/connect/intentions").json()
    assert [(i["SourceName"], i["Precedence"]) for i in listing] == [("web", 9), ("*", 8)]
    filtered = api.get("/v1/connect/intentions", params={"filter": 'SourceName == "*"'}).json()
    assert [i["SourceName"] for i in filtered] == ["*"]
    assert api.delete("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"}).json() is True
    assert api.get("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"}).status_code == 404
    assert api.get("/v1/config/service-intentions/db").json()["Sources"][0]["Name"] == "*"
    api.delete("/v1/connect/intentions/exact", params={"source": "*", "destination": "db"})
    assert api.get("/v1/config/service-intentions/db").status_code == 404  # last source gone: entry deleted


def test_check_explains_the_decision(api: TestClient) -> None:
    api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"}, json={"Action": "deny"})
    body = api.get("/v1/connect/intentions/check", params={"source": "web", "destination": "db"}).json()
    assert body["Allowed"] is False
    assert body["MatchedIntention"]["Precedence"] == 9
    assert body["Reason"] == "Matched L4 intention: web => db (Precedence: 9, Action: DENY)"
    other = api.get("/v1/connect/intentions/check", params={"source": "api", "destination": "db"}).json()
    assert other == {"Allowed": True, "Reason": "Default behavior configured by ACLs", "Default": True,
                     "MatchedIntention": None, "PermissionIndex": None}


def test_check_l7_what_if(api: TestClient) -> None:
    api.put("/v1/config", json={"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Permissions": [
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET"]}}]}]})
    l4 = api.get("/v1/connect/intentions/check", params={"source": "web", "destination": "api"}).json()
    assert l4["Allowed"] is False  # L7 intentions count as deny on connection-level checks, as in Consul
    allowed = api.get("/v1/connect/intentions/check", params={"source": "web", "destination": "api", "path": "/x", "method": "GET"}).json()
    assert (allowed["Allowed"], allowed["PermissionIndex"]) == (True, 1)
    denied = api.get("/v1/connect/intentions/check", params={"source": "web", "destination": "api", "path": "/admin/x"}).json()
    assert (denied["Allowed"], denied["PermissionIndex"]) == (False, 0)


def test_match_returns_evaluation_order(api: TestClient) -> None:
    for src, dst, action in [("web", "db", "allow"), ("*", "db", "deny"), ("web", "*", "deny"), ("*", "*", "allow")]:
        assert api.put("/v1/connect/intentions/exact", params={"source": src, "destination": dst}, json={"Action": action}).status_code == 200
    by_dest = api.get("/v1/connect/intentions/match", params={"by": "destination", "name": "db"}).json()
    assert [(i["SourceName"], i["DestinationName"]) for i in by_dest["db"]] == [("web", "db"), ("*", "db"), ("web", "*"), ("*", "*")]
    by_src = api.get("/v1/connect/intentions/match", params={"by": "source", "name": "api"}).json()
    assert [(i["SourceName"], i["DestinationName"]) for i in by_src["api"]] == [("*", "db"), ("*", "*")]
    assert api.get("/v1/connect/intentions/match", params={"by": "nope", "name": "db"}).text == "'by' parameter must be one of 'source' or 'destination'"


def test_legacy_uuid_api(api: TestClient) -> None:
    r = api.post("/v1/connect/intentions", json={"SourceName": "web", "DestinationName": "db", "Action": "allow", "Meta": {"team": "a"}})
    assert r.status_code == 200
    ixn_id = r.json()["ID"]
    got = api.get(f"/v1/connect/intentions/{ixn_id}").json()
    assert (got["ID"], got["Action"], got["Meta"]) == (ixn_id, "allow", {"team": "a"})
    assert "CreatedAt" in got
    dup = api.post("/v1/connect/intentions", json={"SourceName": "web", "DestinationName": "db", "Action": "deny"})
    assert dup.status_code == 400 and "duplicate intention found" in dup.text
    assert api.put(f"/v1/connect/intentions/{ixn_id}", json={"SourceName": "web", "DestinationName": "db", "Action": "deny"}).status_code == 200
    assert api.get(f"/v1/connect/intentions/{ixn_id}").json()["Action"] == "deny"
    assert api.get("/v1/connect/intentions/not-a-uuid").status_code == 400
    assert api.delete(f"/v1/connect/intentions/{ixn_id}").status_code == 200
    missing = api.get(f"/v1/connect/intentions/{ixn_id}")
    assert (missing.status_code, missing.text) == (404, "Intention not found")


def test_config_entries_crud_and_cas(api: TestClient) -> None:
    entry = {"Kind": "service-defaults", "Name": "web", "Protocol": "http"}
    assert api.put("/v1/config", json=entry).json() is True
    got = api.get("/v1/config/service-defaults/web").json()
    assert got["Protocol"] == "http" and got["ModifyIndex"] >= 1
    assert api.put("/v1/config", params={"cas": got["ModifyIndex"] - 1}, json={**entry, "Protocol": "grpc"}).json() is False
    assert api.get("/v1/config/service-defaults/web").json()["Protocol"] == "http"
    assert api.put("/v1/config", params={"cas": got["ModifyIndex"]}, json={**entry, "Protocol": "grpc"}).json() is True
    assert [e["Name"] for e in api.get("/v1/config/service-defaults").json()] == ["web"]
    assert api.delete("/v1/config/service-defaults/web").status_code == 200
    r = api.get("/v1/config/service-defaults/web")
    assert (r.status_code, r.text) == (404, 'Config entry not found for "service-defaults" / "web"')
    assert api.get("/v1/config/bogus-kind").status_code == 400


HCL_ENTRY = '''
Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name   = "web"
    Permissions = [
      {
        Action = "allow"
        HTTP {
          path_prefix = "/v1"
          methods     = ["get", "POST"]
          header = [ { name = "x-env", exact = "prod" } ]
        }
      },
      { Action = "deny", HTTP { path_exact = "/admin" } }
    ]
  },
  { Name = "*", Action = "deny" }
]
'''

JSON_ENTRY = {
    "Kind": "service-intentions", "Name": "api",
    "Sources": [
        {"Name": "web", "Permissions": [
            {"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["GET", "POST"], "Header": [{"Name": "x-env", "Exact": "prod"}]}},
            {"Action": "deny", "HTTP": {"PathExact": "/admin"}}]},
        {"Name": "*", "Action": "deny"},
    ],
}


def test_hcl_and_json_service_intentions_give_the_same_result(make_api: Any) -> None:
    results = []
    for body in (canonical_config_entry(parse_hcl_or_json(HCL_ENTRY)), JSON_ENTRY):
        cp, client = make_api()
        assert client.put("/v1/config", json=body).json() is True
        stored = client.get("/v1/config/service-intentions/api").json()
        decisions = [
            client.get("/v1/connect/intentions/check", params={"source": s, "destination": "api", "path": p, "method": m, "header": h}).json()["Allowed"]
            for s, p, m, h in [("web", "/v1/x", "GET", "x-env:prod"), ("web", "/v1/x", "GET", "x-env:dev"),
                               ("web", "/admin", "GET", "x-env:prod"), ("other", "/v1", "GET", "x-env:prod")]
        ]
        results.append(({k: v for k, v in stored.items() if k not in ("CreateIndex", "ModifyIndex")}, decisions))
        cp.close()
    assert results[0] == results[1]
    assert results[0][1] == [True, True, False, False]  # default allow (ACLs off); unmatched L7 gets the default


# One row per validation rule: (body for PUT /v1/config, the message Consul gives).
P = {"Action": "allow", "HTTP": {"PathPrefix": "/"}}
INVALID = [
    ({"Kind": "service-intentions", "Sources": [{"Name": "web", "Action": "allow"}]}, "Name is required"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": []}, "At least one source is required"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Action": "allow"}]}, "Sources[0].Name is required"),
    ({"Kind": "service-intentions", "Name": "db*", "Sources": [{"Name": "web", "Action": "allow"}]}, "Name: wildcard character '*' cannot be used with partial values"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "we*", "Action": "allow"}]}, "Sources[0].Name: wildcard character '*' cannot be used with partial values"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Namespace": "*", "Action": "allow"}]}, "Sources[0].Name: exact value cannot follow wildcard namespace"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Partition": "*", "Action": "allow"}]}, "Sources[0].Partition: cannot use wildcard '*' in partition"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Peer": "*", "Action": "allow"}]}, "Sources[0].Peer: cannot use wildcard '*' in peer"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Peer": "p", "Partition": "ap", "Action": "allow"}]}, "Sources[0].Peer: cannot set Peer and Partition at the same time."),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Description": "x" * 513}]}, "Sources[0].Description exceeds maximum length 512"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "permit"}]}, "Sources[0].Action must be set to 'allow' or 'deny'"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Permissions": [P]}]}, "Sources[0].Action must be omitted if Permissions are specified"),
    ({"Kind": "service-intentions", "Name": "*", "Sources": [{"Name": "web", "Permissions": [P]}]}, "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Type": "other"}]}, "Sources[0].Type must be set to 'consul'"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow"}]}]}, "Sources[0].Permissions[0].HTTP is required"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "x"}}]}]}, "Sources[0].Permissions[0].HTTP.PathExact doesn't start with '/': \"x\""),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/a", "PathPrefix": "/b"}}]}]}, "Sources[0].Permissions[0].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Header": [{"Exact": "v"}]}}]}]}, "Sources[0].Permissions[0].HTTP.Header[0] missing required Name field"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Header": [{"Name": "h", "Exact": "v", "Prefix": "p"}]}}]}]}, "Sources[0].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Methods": ["FETCH"]}}]}]}, "Sources[0].Permissions[0].HTTP.Methods contains an invalid method \"FETCH\""),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"Methods": ["GET", "get"]}}]}]}, "Sources[0].Permissions[0].HTTP.Methods contains \"GET\" more than once"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {}}]}]}, "Sources[0].Permissions[0].HTTP should not be empty"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]}, "Sources[1] defines \"web\" more than once"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathRegex": "(["}}]}]}, "Sources[0].Permissions[0].HTTP.PathRegex is not a valid RE2 regular expression"),
    ({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow", "Bogus": 1}]}, 'invalid config key "Sources[0].Bogus"'),
    ({"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "a", "Namespace": "*"}]}, "Wildcard namespace is not supported for terminating gateway services"),
    ({"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "a", "CertFile": "c"}]}, "must have a CertFile, CAFile, and KeyFile specified for TLS origination"),
    ({"Kind": "no-such-kind", "Name": "x"}, "invalid config entry kind: no-such-kind"),
]


@pytest.mark.parametrize("body,message", INVALID, ids=[m[:60] for _, m in INVALID])
def test_invalid_entry_is_400_with_consul_message_and_writes_nothing(cp: ControlPlane, api: TestClient, body: dict, message: str) -> None:
    api.put("/v1/connect/intentions/exact", params={"source": "seed", "destination": "db"}, json={"Action": "allow"})
    before = db_fingerprint(cp)
    r = api.put("/v1/config", json=body)
    assert r.status_code == 400
    assert message in r.text
    assert db_fingerprint(cp) == before
    assert len(cp.engine) == 1  # the compiled index did not change either


def test_malformed_bodies_are_400_and_write_nothing(cp: ControlPlane, api: TestClient) -> None:
    before = db_fingerprint(cp)
    for path, params in [("/v1/config", None), ("/v1/connect/intentions/exact", {"source": "a", "destination": "b"}),
                         ("/v1/connect/intentions", None)]:
        for raw in (b"{not json", b"", b"[1, 2]"):
            method = "POST" if path == "/v1/connect/intentions" else "PUT"
            r = api.request(method, path, params=params, content=raw)
            assert r.status_code == 400 and r.text.startswith("Request decode failed"), (path, raw, r.text)
    r = api.put("/v1/connect/intentions/exact", params={"source": "a", "destination": "b"}, json={"Action": "maybe"})
    assert r.status_code == 400 and "Action must be set to 'allow' or 'deny'" in r.text
    r = api.put("/v1/connect/intentions/exact", params={"destination": "b"}, json={"Action": "allow"})
    assert (r.status_code, r.text) == (400, "required query parameter 'source' not set")
    assert db_fingerprint(cp) == before


def test_blocking_query_waits_then_returns_on_timeout_and_promptly_on_write(api: TestClient) -> None:
    api.put("/v1/connect/intentions/exact", params={"source": "a", "destination": "b"}, json={"Action": "allow"})
    index = int(api.get("/v1/connect/intentions").headers["X-Consul-Index"])

    start = time.monotonic()
    r = api.get("/v1/connect/intentions", params={"index": index, "wait": "400ms"})
    waited = time.monotonic() - start
    assert r.status_code == 200 and int(r.headers["X-Consul-Index"]) == index
    assert waited >= 0.4

    writer = threading.Timer(0.3, lambda: api.put("/v1/connect/intentions/exact", params={"source": "c", "destination": "b"}, json={"Action": "deny"}))
    writer.start()
    start = time.monotonic()
    r = api.get("/v1/connect/intentions", params={"index": index, "wait": "30s"})
    waited = time.monotonic() - start
    writer.join()
    assert int(r.headers["X-Consul-Index"]) > index
    assert {i["SourceName"] for i in r.json()} == {"a", "c"}
    assert waited < 10  # woke on the write, not at the 30 s timeout

    # A write to another table does not end an intentions wait.
    start = time.monotonic()
    threading.Timer(0.1, lambda: api.put("/v1/config", json={"Kind": "service-defaults", "Name": "x", "Protocol": "http"})).start()
    r = api.get("/v1/connect/intentions", params={"index": r.headers["X-Consul-Index"], "wait": "600ms"})
    assert time.monotonic() - start >= 0.6


def test_fast_upsert_route_answers_exactly_as_the_fastapi_route(make_cp: Any, tmp_path: Any) -> None:
    """PUT /exact is also a plain Starlette route (app.py): every answer, good or bad, and what
    ends up stored must be what FastAPI's route for the same endpoint gives."""
    from starlette.routing import Route

    from gateway.api.app import create_app
    from gateway.store.database import sqlite_url

    mgmt = "9f6bd2a0-5d1e-4b7e-9c59-3c1b8c0f0a11"
    cps, clients = [], []
    for name, fast in (("fast", True), ("fastapi", False)):
        cp = make_cp(sqlite_url(tmp_path / name), acl_enabled=True, acl_default_policy="deny",
                     initial_management_token=mgmt)
        app = create_app(cp)
        fast_routes = [r for r in app.router.routes if type(r) is Route and r.path == "/v1/connect/intentions/exact"]
        assert len(fast_routes) == 1 and fast_routes[0].methods == {"PUT"}
        if not fast:
            app.router.routes.remove(fast_routes[0])
        cps.append(cp)
        clients.append(TestClient(app).__enter__())
    root = {"X-Consul-Token": mgmt}
    path = "/v1/connect/intentions/exact"
    perms = {"Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["get"]}}]}
    requests: list[tuple[str, dict[str, Any], Any, dict[str, str]]] = [
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "deny", "Description": "now deny"}, root),
        ("PUT", {"source": "api", "destination": "db"}, perms, root),
        ("PUT", {"source": "ns1/api", "destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": "*", "destination": "db"}, {"Action": "deny"}, root),
        ("PUT", {"source": "web", "destination": "*"}, perms, root),  # L7 on a wildcard destination
        ("PUT", {"source": "w*b", "destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": "a/b/c/d", "destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": "web", "destination": ""}, {"Action": "allow"}, root),
        ("PUT", {"destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": ["a", "b"], "destination": "db"}, {"Action": "allow"}, root),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "maybe"}, root),
        ("PUT", {"source": "web", "destination": "db"}, {"ID": "0c1f3e5a-1d2b-4c3d-8e9f-0a1b2c3d4e5f"}, root),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow", "Meta": {"k": "v"}}, root),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow", "Permissions": "nope"}, root),
        ("PUT", {"source": "web", "destination": "db"}, b"{not json", root),
        ("PUT", {"source": "web", "destination": "db"}, b"", root),
        ("PUT", {"source": "web", "destination": "db"}, b"[1, 2]", root),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow"}, {}),  # anonymous: denied
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow"}, {"X-Consul-Token": "unknown"}),
        ("PUT", {"source": "web", "destination": "db", "token": mgmt}, {"Action": "allow"}, {}),
        ("PUT", {"source": "web", "destination": "db"}, {"Action": "allow"}, {"Authorization": f"Bearer {mgmt}"}),
        ("PATCH", {"source": "web", "destination": "db"}, {"Action": "allow"}, root),  # other methods: as before
        ("GET", {"source": "web", "destination": "db"}, None, root),
        ("GET", {"source": "nobody", "destination": "db"}, None, root),
        ("DELETE", {"source": "ns1/api", "destination": "db"}, None, root),
        ("POST", {"source": "web", "destination": "db"}, {"Action": "allow"}, root),
    ]
    for method, params, body, headers in requests:
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        answers = [c.request(method, path, params=params, content=content, headers=headers) for c in clients]
        fast, slow = ((a.status_code, sorted(a.headers.items()), a.content) for a in answers)
        assert fast == slow, (method, params, body)
    assert db_fingerprint(cps[0]) == db_fingerprint(cps[1])
    for c in clients:
        c.__exit__(None, None, None)
