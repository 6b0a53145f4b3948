"""The intentions -> RBAC compiler (xds/rbac.py): decisions, structure, size, determinism.

Decisions are checked with a small interpreter of the xDS matcher tree (the semantics
Envoy 1.40 applies; tests/test_rbac_differential.py checks the same configs against a
real Envoy), so thousands of intention sets can be compared with the engine in seconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import re2
from google.protobuf import json_format

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from gateway.configentries.service import prepare
from gateway.intentions.engine import IntentionEngine, ServiceName
from gateway.intentions.request import HTTPRequest
from xds.rbac import compile_rbac, consul_rbac, consul_rbac_size, rbac_size_bytes, spiffe_service_id
from xds.type.matcher.v3 import cel_pb2 as cel_matcher_pb2
from xds.type.matcher.v3 import matcher_pb2
from tests.support.consul import PRECEDENCE_ROWS

TD = "11111111-2222-3333-4444-555555555555.consul"
DCS = ("dc1",)
S = ServiceName


# ----------------------------------------------------------------------------- helpers


def entry(dest: str, *sources: dict[str, Any], dest_ns: str = "default") -> dict[str, Any]:
    return prepare({"Kind": "service-intentions", "Name": dest, "Namespace": dest_ns, "Sources": list(sources)})


def src(name: str, action: str | None = "allow", ns: str = "default", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": name, "Namespace": ns, **extra}
    if action:
        out["Action"] = action
    return out


def perm(action: str, **http: Any) -> dict[str, Any]:
    return {"Action": action, "HTTP": http}


@dataclass
class Compiled:
    engine: IntentionEngine
    destination: ServiceName
    msg: http_rbac_pb2.RBAC | network_rbac_pb2.RBAC
    http: bool

    def allowed(self, caller: ServiceName, request: HTTPRequest | None = None, dc: str = "dc1") -> bool:
        uri = spiffe_service_id(TD, caller.name, caller.namespace, dc, caller.partition)
        return evaluate(self.msg, uri, request if self.http else None)

    def engine_allowed(self, caller: ServiceName, request: HTTPRequest | None = None) -> bool:
        return self.engine.decide(caller, self.destination, request if self.http else None).allowed


def compile_entries(*entries: dict[str, Any], default_allow: bool = False, http: bool = True,
                    destination: ServiceName | None = None, datacenters: tuple[str, ...] = DCS) -> Compiled:
    destination = destination or S("api")
    eng = IntentionEngine(default_allow=default_allow)
    eng.load(entries)
    msg = compile_rbac(eng.for_destination(destination), destination=destination, default_allow=default_allow,
                       trust_domain=TD, http=http, datacenters=datacenters)
    return Compiled(eng, destination, msg, http)


def GET(path: str, **headers: str) -> HTTPRequest:
    return HTTPRequest("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})


# ----------------------------------------------------------------------------- matcher interpreter


@dataclass
class Ctx:
    uri: str
    request: HTTPRequest | None
    headers: Mapping[str, str] = field(default_factory=dict)


def evaluate(msg: http_rbac_pb2.RBAC | network_rbac_pb2.RBAC, uri: str, request: HTTPRequest | None) -> bool:
    """The RBAC filter's verdict: the matched Action, and no match at all means deny."""
    headers: dict[str, str] = {}
    if request is not None:
        headers = {**request.headers, ":path": request.path, ":method": request.method}
    action = _match(msg.matcher, Ctx(uri, request, headers))
    return action is not None and action.action == rbac_pb2.RBAC.ALLOW


def _match(m: matcher_pb2.Matcher, ctx: Ctx) -> rbac_pb2.Action | None:
    if m.HasField("matcher_tree"):
        value = _input(m.matcher_tree.input, ctx)
        if value is not None:
            tree = m.matcher_tree
            if tree.HasField("exact_match_map"):
                candidates = [tree.exact_match_map.map[value]] if value in tree.exact_match_map.map else []
            else:  # longest prefix first; a subtree that does not match tries the next one
                keys = sorted((k for k in tree.prefix_match_map.map if value.startswith(k)), key=len, reverse=True)
                candidates = [tree.prefix_match_map.map[k] for k in keys]
            for on_match in candidates:
                if (hit := _on_match(on_match, ctx)) is not None:
                    return hit
    elif m.HasField("matcher_list"):
        for fm in m.matcher_list.matchers:
            if _predicate(fm.predicate, ctx) and (hit := _on_match(fm.on_match, ctx)) is not None:
                return hit
    if m.HasField("on_no_match"):
        return _on_match(m.on_no_match, ctx)
    return None


def _on_match(om: matcher_pb2.Matcher.OnMatch, ctx: Ctx) -> rbac_pb2.Action | None:
    if om.HasField("action"):
        action = rbac_pb2.Action()
        assert om.action.typed_config.Unpack(action)
        return action
    return _match(om.matcher, ctx)


def _input(inp: Any, ctx: Ctx) -> str | None:
    type_name = inp.typed_config.type_url.rsplit("/", 1)[1]
    if type_name == "envoy.extensions.matching.common_inputs.ssl.v3.UriSanInput":
        return ctx.uri
    if type_name == "envoy.type.matcher.v3.HttpRequestHeaderMatchInput":
        hdr = http_inputs_pb2.HttpRequestHeaderMatchInput()
        inp.typed_config.Unpack(hdr)
        return ctx.headers.get(hdr.header_name.lower())
    if type_name == "xds.type.matcher.v3.HttpAttributesCelMatchInput":
        return "" if ctx.request is not None else None
    raise AssertionError(f"unexpected input {type_name}")


def _predicate(p: Any, ctx: Ctx) -> bool:
    kind = p.WhichOneof("match_type")
    if kind == "or_matcher":
        return any(_predicate(x, ctx) for x in p.or_matcher.predicate)
    if kind == "and_matcher":
        return all(_predicate(x, ctx) for x in p.and_matcher.predicate)
    if kind == "not_matcher":
        return not _predicate(p.not_matcher, ctx)
    single = p.single_predicate
    value = _input(single.input, ctx)
    if value is None:
        return False
    if single.HasField("custom_match"):  # only ever request.url_path.matches('<re>')
        cel = cel_matcher_pb2.CelMatcher()
        assert single.custom_match.typed_config.Unpack(cel)
        call = cel.expr_match.cel_expr_parsed.expr.call_expr
        assert call.function == "matches" and call.target.select_expr.field == "url_path"
        assert ctx.request is not None
        return re2.search(call.args[0].const_expr.string_value, ctx.request.url_path) is not None
    sm = single.value_match
    which = sm.WhichOneof("match_pattern")
    if which == "exact":
        return value == sm.exact
    if which == "prefix":
        return value.startswith(sm.prefix)
    if which == "suffix":
        return value.endswith(sm.suffix)
    if which == "safe_regex":
        return re2.fullmatch(sm.safe_regex.regex, value) is not None
    raise AssertionError(f"unexpected string matcher {which}")


# ----------------------------------------------------------------------------- decisions


def test_consul_worked_example_intern_trusted_app() -> None:
    """consul-semantics §3.5: trusted-app allowed, the rest of intern denied, everyone else allowed."""
    c = compile_entries(entry("payment-svc", src("trusted-app", "allow", ns="intern"), src("*", "deny", ns="intern"),
                              src("*", "allow", ns="*"), dest_ns="billing"),
                        destination=S("payment-svc", "billing"), default_allow=False)
    assert c.allowed(S("trusted-app", "intern"))
    assert not c.allowed(S("other", "intern"))
    assert c.allowed(S("web", "default"))
    assert c.allowed(S("trusted-app", "default"))
    assert not c.allowed(S("web", "default", "p1"))  # */* of the default partition only
    assert c.allowed(S("trusted-app", "intern"), dc="dc-unknown")  # the datacenter is never checked
    assert not c.allowed(S("other", "intern"), dc="dc-unknown")

    tree = c.msg.matcher.matcher_tree
    assert list(tree.exact_match_map.map) == [f"spiffe://{TD}/ns/intern/dc/dc1/svc/trusted-app"]
    wild = c.msg.matcher.on_no_match.matcher.matcher_tree
    assert list(wild.prefix_match_map.map) == [f"spiffe://{TD}/ns/"]
    per_ns = wild.prefix_match_map.map[f"spiffe://{TD}/ns/"].matcher
    assert list(per_ns.matcher_tree.prefix_match_map.map) == [f"spiffe://{TD}/ns/intern/dc/"]
    for caller in (S("trusted-app", "intern"), S("other", "intern"), S("web"), S("x", "y")):
        assert c.allowed(caller) == c.engine_allowed(caller)


@pytest.mark.parametrize("precedence,source,dest", PRECEDENCE_ROWS)
def test_each_precedence_row(precedence: int, source: tuple[str, str], dest: tuple[str, str]) -> None:
    e = entry(dest[1], src(source[1], "deny", ns=source[0]), dest_ns=dest[0])
    assert e["Sources"][0]["Precedence"] == precedence
    c = compile_entries(e, default_allow=True, destination=S("db", "ns2"))
    assert not c.allowed(S("web", "ns1"))
    other = S("other", "ns3")
    assert c.allowed(other) is (source != ("*", "*")) is c.engine_allowed(other)


def test_highest_precedence_wins_with_all_nine_rows() -> None:
    """All rows at once with alternating actions; drop the top row one by one."""
    rows = list(PRECEDENCE_ROWS)
    while rows:
        by_dest: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for prec, source, dest in rows:
            by_dest.setdefault(dest, []).append(src(source[1], "allow" if prec % 2 else "deny", ns=source[0]))
        entries = [entry(d[1], *sources, dest_ns=d[0]) for d, sources in by_dest.items()]
        for default_allow in (False, True):
            c = compile_entries(*entries, default_allow=default_allow, destination=S("db", "ns2"))
            top = rows[0][0]
            assert c.allowed(S("web", "ns1")) == bool(top % 2) == c.engine_allowed(S("web", "ns1"))
            for caller in (S("other", "ns1"), S("web", "ns3"), S("web", "ns1", "p1")):
                assert c.allowed(caller) == c.engine_allowed(caller), (top, caller)
        rows.pop(0)


@pytest.mark.parametrize("default_allow", [False, True])
def test_default_policy_without_intentions(default_allow: bool) -> None:
    c = compile_entries(default_allow=default_allow)
    assert c.allowed(S("web")) is default_allow
    assert not c.msg.matcher.HasField("matcher_tree") and not c.msg.matcher.HasField("matcher_list")
    action = rbac_pb2.Action()
    c.msg.matcher.on_no_match.action.typed_config.Unpack(action)
    assert action.action == (rbac_pb2.RBAC.ALLOW if default_allow else rbac_pb2.RBAC.DENY)


@pytest.mark.parametrize("default_allow", [False, True])
def test_default_applies_to_unmatched_callers(default_allow: bool) -> None:
    c = compile_entries(entry("api", src("web", "deny"), src("*", "allow", ns="ns1")), default_allow=default_allow)
    assert not c.allowed(S("web"))
    assert c.allowed(S("x", "ns1"))
    assert c.allowed(S("db")) is default_allow
    assert c.allowed(S("x", "ns1", "p1")) is default_allow


def test_l7_permissions_first_match_wins_then_default_not_a_lower_intention() -> None:
    c = compile_entries(entry("api",
                              src("web", None, Permissions=[perm("deny", PathPrefix="/admin"),
                                                           perm("allow", PathPrefix="/"),
                                                           perm("deny", PathExact="/never-reached")]),
                              src("*", "allow", ns="*")),
                        default_allow=False)
    web = S("web")
    assert not c.allowed(web, GET("/admin/x"))
    assert c.allowed(web, GET("/api"))
    assert c.allowed(web, GET("/never-reached"))  # an earlier permission matched
    c2 = compile_entries(entry("api", src("web", None, Permissions=[perm("allow", PathExact="/ok")]),
                               src("*", "allow", ns="*")), default_allow=False)
    assert c2.allowed(web, GET("/ok"))
    assert not c2.allowed(web, GET("/other"))  # the DEFAULT (deny), not the */* allow below
    assert c2.allowed(S("db"), GET("/other"))


def test_l7_paths_ignore_the_query_string() -> None:
    c = compile_entries(entry("api", src("web", None, Permissions=[
        perm("allow", PathExact="/exact"),
        perm("allow", PathPrefix="/pre"),
        perm("allow", PathRegex="/rx/[0-9]+"),
        perm("allow", PathExact="/with?query"),  # can never match a query-free path
    ])), default_allow=False)
    web = S("web")
    for path, want in [("/exact", True), ("/exact?a=1", True), ("/exact/x", False), ("/exactly", False),
                       ("/pre", True), ("/prefix?x", True), ("/pr?e", False), ("/rx/12", True), ("/rx/12?x=y", True),
                       ("/rx/1?2", True), ("/rx/a?1", False), ("/x?/rx/1", False), ("/with?query", False)]:
        request = GET(path)
        assert c.engine_allowed(web, request) is want, path
        assert c.allowed(web, request) is want, path


def test_l7_headers_methods_and_invert_follow_envoy_header_semantics() -> None:
    c = compile_entries(entry("api", src("web", None, Permissions=[
        perm("deny", Header=[{"Name": "x-a", "Exact": "bad", "Invert": True}]),
        perm("allow", Methods=["GET", "PUT"], Header=[{"Name": "x-b", "Present": True, "Invert": True}]),
        perm("allow", Header=[{"Name": "x-b", "Regex": "1,2"}]),
    ])), default_allow=False)
    web = S("web")
    cases = [
        HTTPRequest("GET", "/", {}),                          # x-a missing: the inverted Exact does not match
        HTTPRequest("GET", "/", {"x-a": "good"}),             # inverted Exact matches -> deny
        HTTPRequest("GET", "/", {"x-a": "bad"}),              # -> perm 1: GET, x-b absent -> allow
        HTTPRequest("POST", "/", {"x-a": "bad"}),
        HTTPRequest.from_pairs("POST", "/", [("x-a", "bad"), ("x-b", "1"), ("x-b", "2")]),  # joined "1,2"
        HTTPRequest("PUT", "/", {"x-a": "bad", "x-b": ""}),
    ]
    got = [c.allowed(web, r) for r in cases]
    assert got == [c.engine_allowed(web, r) for r in cases]
    assert got == [True, False, True, False, True, False]


def test_tcp_listener_treats_l7_intentions_as_deny() -> None:
    entries = [entry("api", src("web", None, Permissions=[perm("allow", PathPrefix="/")]), src("*", "allow", ns="*"))]
    for default_allow in (False, True):
        c = compile_entries(*entries, default_allow=default_allow, http=False)
        assert isinstance(c.msg, network_rbac_pb2.RBAC) and c.msg.stat_prefix == "connect_authz"
        assert not c.allowed(S("web"))
        assert c.allowed(S("db"))
        assert "HttpRequestHeaderMatchInput" not in str(c.msg)
    assert isinstance(compile_entries(*entries).msg, http_rbac_pb2.RBAC)


def test_callers_from_unknown_datacenters_are_decided_exactly() -> None:
    """The hash path knows dc1/dc2; dc9 goes through the datacenter-wildcard alternations."""
    entries = [entry("api", src("web", "deny"), src("db", None, Permissions=[perm("allow", PathPrefix="/db")]),
                     src("*", "allow", ns="default"), src("*", "deny", ns="*"))]
    c = compile_entries(*entries, datacenters=("dc2", "dc1"))
    for dc in ("dc1", "dc2", "dc9"):
        assert not c.allowed(S("web"), GET("/"), dc=dc)
        assert c.allowed(S("db"), GET("/db"), dc=dc) and not c.allowed(S("db"), GET("/x"), dc=dc)
        assert c.allowed(S("cache"), GET("/"), dc=dc)
        assert not c.allowed(S("cache", "ns1"), GET("/"), dc=dc)
    keys = sorted(c.msg.matcher.matcher_tree.exact_match_map.map)
    assert keys == [f"spiffe://{TD}/ns/default/dc/{dc}/svc/{s}" for dc in ("dc1", "dc2") for s in ("db", "web")]
    # no datacenters at all: still exact, through the alternations only
    c0 = compile_entries(*entries, datacenters=())
    assert not c0.msg.matcher.HasField("matcher_tree") or not c0.msg.matcher.matcher_tree.HasField("exact_match_map")
    assert not c0.allowed(S("web")) and c0.allowed(S("cache"))


def test_partitions_use_the_ap_segment() -> None:
    c = compile_entries(entry("api", src("web", "allow", Partition="p1"), src("*", "deny", ns="*", Partition="p1"),
                              src("*", "allow", ns="*")), default_allow=False)
    assert c.allowed(S("web", "default", "p1")) and not c.allowed(S("db", "default", "p1"))
    assert c.allowed(S("db"))
    assert f"spiffe://{TD}/ap/p1/ns/default/dc/dc1/svc/web" in c.msg.matcher.matcher_tree.exact_match_map.map


def test_peered_sources_are_skipped() -> None:
    c = compile_entries(entry("api", src("web", "allow", Peer="other-cluster")), default_allow=False)
    assert rbac_size_bytes(c.msg) == rbac_size_bytes(compile_entries(default_allow=False).msg)


def test_random_sets_agree_with_the_engine() -> None:
    """Thousands of sets through the interpreter (the Envoy test runs fewer, for real)."""
    from tests.test_rbac_differential import CALLERS, random_entries, random_request

    rng = random.Random(7)
    checked = 0
    for _ in range(600):
        default_allow = rng.random() < 0.5
        http = rng.random() < 0.8
        entries = random_entries(rng)
        c = compile_entries(*entries, default_allow=default_allow, http=http, datacenters=("dc1", "dc2"))
        for _ in range(30):
            caller = rng.choice(CALLERS)
            method, path, pairs = random_request(rng)
            request = HTTPRequest.from_pairs(method, path, pairs)
            want = c.engine_allowed(caller.service, request)
            got = c.allowed(caller.service, request, dc=caller.dc)  # caller.uri has the other test's TD
            assert got == want, (entries, default_allow, http, caller, method, path, pairs)
            checked += 1
    assert checked == 18000


# ----------------------------------------------------------------------------- size


def scale_entries(n: int, *, seed: int = 1, l7_share: float = 0.05, namespaces: int = 0) -> list[dict[str, Any]]:
    """n sources into api: mostly exact, ~10% namespace wildcards, one */*, some L7."""
    rng = random.Random(seed)
    namespaces = namespaces or max(1, n // 50)
    sources = [src("*", "allow", ns="*")]
    wildcards = {f"ns{i}" for i in rng.sample(range(namespaces), min(namespaces, max(1, n // 10)))}
    for ns in sorted(wildcards):
        sources.append(src("*", rng.choice(("allow", "deny")), ns=ns))
    i = 0
    while len(sources) < n:
        ns = f"ns{i % namespaces}"
        name = f"svc-{i}"
        i += 1
        if rng.random() < l7_share:
            sources.append(src(name, None, ns=ns, Permissions=[
                perm("deny", PathPrefix="/admin"), perm("allow", PathPrefix="/api", Methods=["GET", "POST"]),
                perm("allow", Header=[{"Name": "x-debug", "Present": True}])]))
        else:
            sources.append(src(name, rng.choice(("allow", "deny")), ns=ns))
    return [entry("api", *sources)]


def sizes(n: int, default_allow: bool = False, **kw: Any) -> tuple[int, int]:
    c = compile_entries(*scale_entries(n, **kw), default_allow=default_allow)
    consul = consul_rbac_size(c.engine.for_destination(S("api")), default_allow=default_allow, trust_domain=TD)
    return rbac_size_bytes(c.msg), consul


def test_size_is_linear_in_the_number_of_intentions() -> None:
    small, _ = sizes(100)
    large, _ = sizes(1000)
    assert 8 < large / small < 12, (small, large)


def test_size_is_linear_in_permissions_where_consul_is_quadratic() -> None:
    def l7(n_perms: int) -> tuple[int, int]:
        perms = [perm("allow" if i % 2 else "deny", PathExact=f"/p{i}") for i in range(n_perms)]
        c = compile_entries(entry("api", src("web", None, Permissions=perms)), default_allow=False)
        return rbac_size_bytes(c.msg), consul_rbac_size(c.engine.for_destination(S("api")), default_allow=False,
                                                         trust_domain=TD)
    ours_10, consul_10 = l7(10)
    ours_100, consul_100 = l7(100)
    assert ours_100 / ours_10 < 12
    assert consul_100 / consul_10 > 40


def test_l7_all_wildcard_is_not_copied_into_every_namespace() -> None:
    """An L7 */* with exact sources in many namespaces: one copy, reached by fall-through."""
    many_perms = [perm("allow", PathPrefix=f"/p{i}") for i in range(40)]

    def size(namespaces: int) -> int:
        sources = [src("*", None, ns="*", Permissions=many_perms)]
        sources += [src("web", "allow", ns=f"ns{i}") for i in range(namespaces)]
        c = compile_entries(entry("api", *sources), default_allow=False)
        assert c.allowed(S("web", "ns0"), GET("/nope"), dc="dc9")  # its own intention, any datacenter
        assert not c.allowed(S("db", "ns0"), GET("/nope"))  # */* L7, unmatched: default
        assert c.allowed(S("db", "ns0"), GET("/p7/x")) and c.allowed(S("db", "ns0"), GET("/p7/x"), dc="dc9")
        return rbac_size_bytes(c.msg)

    base, grown = size(1), size(101)
    assert (grown - base) / 100 < 600  # per namespace: two small entries, never the 40 permissions


def test_consul_reference_matches_the_worked_example_shape() -> None:
    c = compile_entries(entry("payment-svc", src("trusted-app", "allow", ns="intern"), src("*", "deny", ns="intern"),
                              src("*", "allow", ns="*"), dest_ns="billing"),
                        destination=S("payment-svc", "billing"), default_allow=False)
    ref = consul_rbac(c.engine.for_destination(S("payment-svc", "billing")), default_allow=False, trust_domain=TD,
                      http=True)
    rules = json_format.MessageToDict(ref.rules)
    assert rules.get("action", "ALLOW") == "ALLOW"
    principals = rules["policies"]["consul-intentions-layer4"]["principals"]
    regexes = json.dumps(principals)
    assert f"^spiffe://{TD}/ns/intern/dc/[^/]+/svc/trusted-app$" in regexes
    assert "notId" in regexes and f"^spiffe://{TD}/ns/intern/dc/[^/]+/svc/[^/]+$" in regexes
    assert len(principals) == 2


# ----------------------------------------------------------------------------- determinism, validity


def test_output_is_deterministic() -> None:
    entries = scale_entries(300, seed=5, l7_share=0.2)
    a = compile_entries(*entries, datacenters=("dc1", "dc2"))
    shuffled = list(a.engine.for_destination(S("api")))
    random.Random(3).shuffle(shuffled)
    b = compile_rbac(shuffled, destination=S("api"), default_allow=False, trust_domain=TD, http=True,
                     datacenters=("dc2", "dc1", "dc1"))
    assert a.msg.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    # Map order is the serializer's business: golden files use deterministic bytes or sorted JSON.
    assert json_format.MessageToJson(a.msg, sort_keys=True) == json_format.MessageToJson(b, sort_keys=True)


def _static_config(filters: list[tuple[str, Any]]) -> dict[str, Any]:
    """One listener per filter config: HCM (+ HTTP RBAC) or network RBAC in front of it."""
    listeners = []
    for i, (kind, msg) in enumerate(filters):
        typed = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        typed["@type"] = f"type.googleapis.com/{msg.DESCRIPTOR.full_name}"
        http_filters: list[dict[str, Any]] = [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        if kind == "http":
            http_filters.insert(0, {"name": "envoy.filters.http.rbac", "typed_config": typed})
        hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": f"l{i}",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": http_filters}}
        filters_ = [hcm] if kind == "http" else [{"name": "envoy.filters.network.rbac", "typed_config": typed}, hcm]
        listeners.append({"name": f"l{i}", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000 + i}},
                          "filter_chains": [{"filters": filters_}]})
    return {"static_resources": {"listeners": listeners}}


def test_generated_configs_pass_envoy_validate() -> None:
    from tests.support.envoy import validate_config

    entries = scale_entries(200, seed=9, l7_share=0.3)
    entries.append(entry("api", src("web", None, ns="ns0", Permissions=[
        perm("allow", PathRegex="/api/v[0-9]+/.*", Methods=["GET"], Header=[{"Name": "x-a", "Regex": "a.*", "Invert": True}]),
        perm("deny", PathExact="/admin", Header=[{"Name": "x-b", "Present": True, "Invert": True}]),
        perm("allow", Header=[{"Name": "x-c", "Suffix": "z"}, {"Name": "x-d", "Prefix": "a"}])])))
    configs = []
    for default_allow in (False, True):
        for http in (True, False):
            c = compile_entries(*entries, default_allow=default_allow, http=http, datacenters=("dc1", "dc2"))
            configs.append(("http" if http else "network", c.msg))
    configs.append(("http", compile_entries().msg))
    configs.append(("http", consul_rbac(compile_entries(*entries).engine.for_destination(S("api")),
                                        default_allow=False, trust_domain=TD, http=True)))
    ok, output = validate_config(_static_config(configs))
    assert ok, output[-3000:]


def test_report_sizes_against_consul(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a limit: prints the numbers the benchmark will track (bytes of the filter config)."""
    rows = []
    for n in (100, 1000):
        for default_allow in (False, True):
            ours, consul = sizes(n, default_allow=default_allow)
            rows.append(f"n={n:>5} default={'allow' if default_allow else 'deny '} terminus={ours:>9} consul={consul:>9}")
    with capsys.disabled():
        print("\n" + "\n".join(rows))
