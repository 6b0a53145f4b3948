"""ACLs: Consul's rule language enforced on writes, and reads filtered to what a token may see."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

MGMT = "11111111-2222-3333-4444-555555555555"


def acl_api(make_api: Any, **extra: Any) -> tuple[Any, TestClient]:
    return make_api(acl_enabled=True, acl_default_policy="deny", initial_management_token=MGMT, **extra)


def make_token(api: TestClient, name: str, rules: str) -> str:
    h = {"X-Consul-Token": MGMT}
    pol = api.put("/v1/acl/policy", headers=h, json={"Name": name, "Rules": rules})
    assert pol.status_code == 200, pol.text
    tok = api.put("/v1/acl/token", headers=h, json={"Policies": [{"Name": name}]})
    assert tok.status_code == 200, tok.text
    return tok.json()["SecretID"]


def test_writes_need_a_token_with_the_right(make_api: Any) -> None:
    cp, api = acl_api(make_api)
    params = {"source": "web", "destination": "db"}
    r = api.put("/v1/connect/intentions/exact", params=params, json={"Action": "allow"})
    assert r.status_code == 403
    assert "lacks permission 'intention:write' on \"db\"" in r.text
    reader = make_token(api, "reader", 'service_prefix "" { policy = "read" }')
    r = api.put("/v1/connect/intentions/exact", params=params, json={"Action": "allow"}, headers={"X-Consul-Token": reader})
    assert r.status_code == 403
    writer = make_token(api, "db-admin", 'service "db" { policy = "read" intentions = "write" }')
    r = api.put("/v1/connect/intentions/exact", params=params, json={"Action": "allow"}, headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 200
    r = api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "other"}, json={"Action": "allow"}, headers={"X-Consul-Token": writer})
    assert r.status_code == 403
    assert api.put("/v1/config", json={"Kind": "proxy-defaults", "Name": "global"}, headers={"X-Consul-Token": writer}).status_code == 403
    assert api.get("/v1/connect/intentions", headers={"X-Consul-Token": "not-a-token"}).status_code == 403


def test_reads_are_filtered(make_api: Any) -> None:
    cp, api = acl_api(make_api)
    mgmt = {"X-Consul-Token": MGMT}
    for dst in ("db", "billing"):
        assert api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": dst}, json={"Action": "allow"}, headers=mgmt).status_code == 200
    assert {i["DestinationName"] for i in api.get("/v1/connect/intentions", headers=mgmt).json()} == {"db", "billing"}
    assert api.get("/v1/connect/intentions").json() == []  # anonymous, default deny: sees nothing
    db_reader = make_token(api, "db-reader", 'service "db" { policy = "read" }')
    seen = api.get("/v1/connect/intentions", headers={"X-Consul-Token": db_reader}).json()
    assert [i["DestinationName"] for i in seen] == ["db"]
    assert api.get("/v1/config/service-intentions/billing", headers={"X-Consul-Token": db_reader}).status_code == 404
    assert [e["Name"] for e in api.get("/v1/config/service-intentions", headers={"X-Consul-Token": db_reader}).json()] == ["db"]


def test_bootstrap_once_and_acl_disabled(make_api: Any) -> None:
    cp, api = make_api(acl_enabled=True, acl_default_policy="deny")
    first = api.put("/v1/acl/bootstrap")
    assert first.status_code == 200 and first.json()["SecretID"]
    again = api.put("/v1/acl/bootstrap")
    assert again.status_code == 403 and "ACL bootstrap no longer allowed (reset index:" in again.text
    secret = first.json()["SecretID"]
    assert api.get("/v1/acl/token/self", headers={"X-Consul-Token": secret}).json()["AccessorID"] == first.json()["AccessorID"]
    # secrets are stored hashed: a read never returns one
    assert "SecretID" not in api.get(f"/v1/acl/token/{first.json()['AccessorID']}", headers={"X-Consul-Token": secret}).json()
    _, open_api = make_api()
    r = open_api.put("/v1/acl/bootstrap")
    assert (r.status_code, r.text) == (401, "ACL support disabled")


def test_secrets_are_stored_only_as_digests(make_api: Any) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from gateway.store import models

    cp, api = acl_api(make_api)
    secret = make_token(api, "p", 'node_prefix "" { policy = "read" }')
    with Session(cp.store.engine) as s:
        dump = repr(s.execute(select(models.ACLToken)).scalars().all()) + repr([t.body for t in s.scalars(select(models.ACLToken))])
    assert secret not in dump and MGMT not in dump


def test_default_intention_policy_is_the_same_for_check_and_the_engine(make_api: Any) -> None:
    """Consul PR #23868: /check used the ACL default when default_intention_policy differed."""
    cp, api = acl_api(make_api, default_intention_policy="allow")
    r = api.get("/v1/connect/intentions/check", params={"source": "a", "destination": "b"}, headers={"X-Consul-Token": MGMT})
    assert r.json()["Allowed"] is True and r.json()["Reason"] == "Default intention policy"
    from gateway.intentions.engine import ServiceName

    assert cp.engine.decide(ServiceName("a"), ServiceName("b")).allowed is True


def test_service_identity_token_can_register_its_service_only(make_api: Any) -> None:
    cp, api = acl_api(make_api)
    tok = api.put("/v1/acl/token", headers={"X-Consul-Token": MGMT}, json={"ServiceIdentities": [{"ServiceName": "web"}]}).json()["SecretID"]
    h = {"X-Consul-Token": tok}
    ok = api.put("/v1/agent/service/register", headers=h, json={"Name": "web", "Port": 80, "Connect": {"SidecarService": {}}})
    assert ok.status_code == 200, ok.text
    denied = api.put("/v1/agent/service/register", headers=h, json={"Name": "db", "Port": 5432})
    assert denied.status_code == 403 and "service:write" in denied.text
