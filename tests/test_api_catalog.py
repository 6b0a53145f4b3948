"""Catalog, agent registration and health, in Consul's shapes."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_agent_register_expands_sidecar_service(api: TestClient) -> None:
    r = api.put("/v1/agent/service/register", json={
        "Name": "api", "Port": 9090,
        "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "authentication", "LocalBindPort": 2345}]}}},
    })
    assert r.status_code == 200, r.text
    sidecar = api.get("/v1/catalog/service/api-sidecar-proxy").json()
    assert len(sidecar) == 1
    s = sidecar[0]
    assert (s["ServiceID"], s["ServiceKind"], s["ServicePort"]) == ("api-sidecar-proxy", "connect-proxy", 21000)
    assert s["ServiceProxy"]["DestinationServiceName"] == "api"
    assert s["ServiceProxy"]["LocalServicePort"] == 9090
    assert s["ServiceProxy"]["Upstreams"] == [{"DestinationName": "authentication", "LocalBindPort": 2345}]
    # a second sidecar gets the next port
    api.put("/v1/agent/service/register", json={"Name": "web", "Port": 80, "Connect": {"SidecarService": {}}})
    assert api.get("/v1/catalog/service/web-sidecar-proxy").json()[0]["ServicePort"] == 21001
    assert set(api.get("/v1/catalog/services").json()) == {"api", "api-sidecar-proxy", "web", "web-sidecar-proxy"}
    connect = api.get("/v1/health/connect/api").json()
    assert [e["Service"]["ID"] for e in connect] == ["api-sidecar-proxy"]
    # deregistering the service takes its sidecar with it
    assert api.put("/v1/agent/service/deregister/api").status_code == 200
    assert api.get("/v1/catalog/service/api-sidecar-proxy").json() == []
    r = api.put("/v1/agent/service/deregister/nope")
    assert r.status_code == 404


def test_health_connect_includes_terminating_gateways(api: TestClient) -> None:
    assert api.put("/v1/catalog/register", json={
        "Node": "external", "Address": "10.0.0.9", "NodeMeta": {"external-node": "true"},
        "Service": {"Service": "billing", "Port": 443, "Address": "billing.example.com"},
    }).json() is True
    api.put("/v1/agent/service/register", json={"Name": "tgw", "Kind": "terminating-gateway", "Port": 8443})
    assert api.get("/v1/health/connect/billing").json() == []
    assert api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "billing"}]}).json() is True
    gws = api.get("/v1/health/connect/billing").json()
    assert [(e["Service"]["Service"], e["Service"]["Kind"]) for e in gws] == [("tgw", "terminating-gateway")]
    plain = api.get("/v1/health/service/billing").json()
    assert plain[0]["Node"]["Node"] == "external" and plain[0]["Service"]["Address"] == "billing.example.com"


def test_catalog_register_validation_and_checks(api: TestClient) -> None:
    assert api.put("/v1/catalog/register", json={"Address": "1.2.3.4"}).text == "Must provide node"
    assert api.put("/v1/catalog/register", json={"Node": "n"}).text == "Must provide address if SkipNodeUpdate is not set"
    r = api.put("/v1/catalog/register", json={"Node": "n", "Address": "1.2.3.4", "Service": {"Service": "s", "Kind": "weird"}})
    assert r.status_code == 400
    api.put("/v1/catalog/register", json={
        "Node": "n", "Address": "1.2.3.4", "Service": {"ID": "s1", "Service": "s", "Port": 1},
        "Check": {"CheckID": "c1", "Name": "c", "Status": "critical", "ServiceID": "s1"},
    })
    assert len(api.get("/v1/health/service/s").json()) == 1
    assert api.get("/v1/health/service/s", params={"passing": "1"}).json() == []
    api.put("/v1/catalog/register", json={"Node": "n", "Address": "1.2.3.4", "Check": {"CheckID": "c1", "Status": "passing", "ServiceID": "s1"}})
    assert len(api.get("/v1/health/service/s", params={"passing": "1"}).json()) == 1
    nodes = {n["Node"] for n in api.get("/v1/catalog/nodes").json()}
    assert {"n", "test-node"} <= nodes
    assert api.put("/v1/catalog/deregister", json={"Node": "n"}).json() is True
    assert api.get("/v1/health/service/s").json() == []


def test_status_and_agent_self(api: TestClient) -> None:
    assert api.get("/v1/status/leader").json().endswith(":8300")
    me = api.get("/v1/agent/self").json()
    assert me["Config"]["Datacenter"] == "dc1" and me["Config"]["NodeName"] == "test-node"
    assert api.get("/docs").status_code == 200
    assert "/v1/connect/intentions/exact" in api.get("/openapi.json").json()["paths"]
