"""Incremental rebuilds (xds/control.py): an intention-only change refreshes routes (and TCP
listeners) from the node's previous snapshot; the result must equal a from-scratch build."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.control import ControlPlane
from xds.builder import build_snapshot
from xds.cache import LISTENER, ROUTE, SnapshotCache
from xds.control import XDSControl
from xds.resources import build_resources

NODES = ["web-sidecar-proxy", "db-sidecar-proxy", "tgw", "api-sidecar-proxy"]


def _mesh(api: TestClient) -> None:
    def ok(r: Any) -> None:
        assert r.status_code == 200, r.text

    ok(api.put("/v1/config", json={"Kind": "service-defaults", "Name": "web", "Protocol": "http"}))
    ok(api.put("/v1/config", json={"Kind": "service-defaults", "Name": "db", "Protocol": "tcp"}))
    ok(api.put("/v1/config", json={"Kind": "service-defaults", "Name": "ext-http", "Protocol": "http"}))
    for name in ("ext-http", "ext-tcp"):
        ok(api.put("/v1/catalog/register", json={
            "Node": "external", "Address": "10.1.0.1", "NodeMeta": {"external-node": "true"},
            "Service": {"Service": name, "Port": 8080 if name == "ext-http" else 5432}}))
    ok(api.put("/v1/agent/service/register", json={"Name": "tgw", "Kind": "terminating-gateway", "Port": 8443,
                                                     "Address": "127.0.0.1"}))
    ok(api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw",
                                   "Services": [{"Name": "ext-http"}, {"Name": "ext-tcp"}]}))
    for i, name in enumerate(("web", "db", "api")):
        ok(api.put("/v1/agent/service/register", json={
            "Name": name, "Port": 9000 + i, "Address": "127.0.0.1",
            "Connect": {"SidecarService": {"Port": 21000 + i, "Proxy": {"Upstreams": [
                {"DestinationName": "web", "LocalBindPort": 7000}, {"DestinationName": "db", "LocalBindPort": 7001}]}}}}))


def _bytes(resources: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    return {t: {n: m.SerializeToString(deterministic=True) for n, m in named.items()} for t, named in resources.items()}


def _assert_fresh(cp: ControlPlane, cache: SnapshotCache) -> None:
    """What the cache serves equals a full build from the current state."""
    fresh = SnapshotCache()
    for node in NODES:
        fresh.set(node, build_resources(build_snapshot(cp, node)))
        ours, theirs = cache.get(node), fresh.get(node)
        assert ours is not None and theirs is not None
        assert dict(ours.versions) == dict(theirs.versions), node
        for t in theirs.resources:
            assert {n: r.version for n, r in ours.entries(t).items()} == {n: r.version for n, r in theirs.entries(t).items()}


def _flip(api: TestClient, xc: XDSControl, source: str, dest: str, action: str) -> tuple[list[str], list[str]]:
    xc._take()
    r = api.put("/v1/connect/intentions/exact", params={"source": source, "destination": dest}, json={"Action": action})
    assert r.status_code == 200, r.text
    return xc._take()


def test_intention_change_refreshes_only_what_carries_intentions(cp: ControlPlane, api: TestClient) -> None:
    _mesh(api)
    cache = SnapshotCache()
    xc = XDSControl(cp, cache)
    xc._run_batch(sorted(NODES))
    _assert_fresh(cp, cache)
    before = {n: cache.get(n) for n in NODES}

    # a wildcard destination: every node, intention-only (no full rebuild); deny, since the
    # default policy here is allow (an allow would compile to the same RBAC)
    full, intent = _flip(api, xc, "web", "*", "deny")
    assert full == [] and intent == sorted(NODES)
    xc._run_batch(full, intent)
    _assert_fresh(cp, cache)
    for node in NODES:
        old, new = before[node], cache.get(node)
        assert new is not None and old is not None
        changed = {t for t in set(old.versions) | set(new.versions) if old.version(t) != new.version(t)}
        assert changed <= {ROUTE, LISTENER}, (node, changed)
        for t in set(new.resources) - {ROUTE, LISTENER}:  # untouched types: the very same entries
            assert all(new.entries(t)[n] is r for n, r in old.entries(t).items())
    # db is TCP: its network RBAC is in the listener; web's RBAC is on its route
    assert before["db-sidecar-proxy"].version(LISTENER) != cache.get("db-sidecar-proxy").version(LISTENER)
    assert before["web-sidecar-proxy"].version(ROUTE) != cache.get("web-sidecar-proxy").version(ROUTE)
    assert before["web-sidecar-proxy"].version(LISTENER) == cache.get("web-sidecar-proxy").version(LISTENER)

    # a named destination marks only the nodes enforcing it
    full, intent = _flip(api, xc, "api", "ext-tcp", "deny")
    assert full == [] and intent == ["tgw"]
    xc._run_batch(full, intent)
    _assert_fresh(cp, cache)
    for action in ("allow", "deny", "allow"):
        xc._run_batch(*_flip(api, xc, "web", "*", action))
        _assert_fresh(cp, cache)

    # anything else is a full rebuild of every node
    xc._take()
    api.put("/v1/config", json={"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
    full, intent = xc._take()
    assert full == sorted(NODES) and intent == []
    xc._run_batch(full, intent)
    _assert_fresh(cp, cache)
    xc._run_batch(*_flip(api, xc, "web", "*", "allow"))
    _assert_fresh(cp, cache)


def test_cache_reuses_packed_messages_without_changing_versions() -> None:
    from envoy.config.route.v3 import route_pb2

    cache = SnapshotCache()
    msg = route_pb2.RouteConfiguration(name="r")
    assert cache.set("a", {ROUTE: {"r": msg}}) is True
    assert cache.set("b", {ROUTE: {"r": msg}}) is True
    a, b = cache.get("a"), cache.get("b")
    assert a is not None and b is not None
    assert a.entries(ROUTE)["r"] is b.entries(ROUTE)["r"]  # packed once
    assert cache.set("a", {ROUTE: {"r": msg}}) is False
    other = route_pb2.RouteConfiguration(name="r", validate_clusters={"value": True})
    assert cache.set("a", {ROUTE: {"r": other}}) is True
    fresh = SnapshotCache()
    fresh.set("a", {ROUTE: {"r": route_pb2.RouteConfiguration(name="r", validate_clusters={"value": True})}})
    assert cache.get("a").versions == fresh.get("a").versions  # type: ignore[union-attr]
