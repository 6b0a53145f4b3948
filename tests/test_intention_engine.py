"""The decision engine: Consul's precedence, first-match, L7 ordering and default policy."""

from __future__ import annotations

import itertools
import random

import pytest

from gateway.configentries.service import prepare
from gateway.intentions.engine import IntentionEngine, ServiceName
from gateway.intentions.request import HTTPRequest
from tests.support.consul import PRECEDENCE_ROWS


def entry(dest: str, *sources: dict, dest_ns: str = "default") -> dict:
    return prepare({"Kind": "service-intentions", "Name": dest, "Namespace": dest_ns, "Sources": list(sources)})


def src(name: str, action: str | None = "allow", ns: str = "default", **extra: object) -> dict:
    out: dict = {"Name": name, "Namespace": ns, **extra}
    if action:
        out["Action"] = action
    return out


def engine_with(*entries: dict, default_allow: bool = False) -> IntentionEngine:
    eng = IntentionEngine(default_allow=default_allow)
    eng.load(entries)
    return eng


S = ServiceName


@pytest.mark.parametrize("precedence,source,dest", PRECEDENCE_ROWS)
def test_each_precedence_row_is_computed_and_matches(precedence: int, source: tuple, dest: tuple) -> None:
    e = entry(dest[1], src(source[1], "deny", ns=source[0]), dest_ns=dest[0])
    assert e["Sources"][0]["Precedence"] == precedence
    eng = engine_with(e, default_allow=True)
    decision = eng.decide(S("web", "ns1"), S("db", "ns2"))
    assert decision.allowed is False
    assert decision.intention is not None and decision.intention.precedence == precedence


def test_highest_precedence_wins_over_every_lower_row() -> None:
    """Put all nine rows in place with alternating actions; remove from the top one by one."""
    entries: dict[tuple[str, str], dict] = {}
    actions = {}
    for precedence, source, dest in PRECEDENCE_ROWS:
        action = "allow" if precedence % 2 else "deny"
        actions[precedence] = action
        e = entries.setdefault(dest, {"Kind": "service-intentions", "Name": dest[1], "Namespace": dest[0], "Sources": []})
        e["Sources"].append(src(source[1], action, ns=source[0]))
    eng = IntentionEngine(default_allow=False)
    prepared = {k: prepare(v) for k, v in entries.items()}
    eng.load(prepared.values())
    for precedence, source, dest in PRECEDENCE_ROWS:
        d = eng.decide(S("web", "ns1"), S("db", "ns2"))
        assert d.intention.precedence == precedence
        assert d.allowed == (actions[precedence] == "allow")
        # drop that row and rebuild its destination incrementally
        e = prepared[dest]
        e = {**e, "Sources": [s for s in e["Sources"] if (s["Namespace"], s["Name"]) != source]}
        prepared[dest] = prepare(e) if e["Sources"] else None
        eng.update_entry(("default", dest[0], dest[1]), prepared[dest])
    assert eng.decide(S("web", "ns1"), S("db", "ns2")).by_default


def test_intern_trusted_app_worked_example() -> None:
    """consul-semantics.md 3.5: trusted-app allowed, other interns denied, everyone else allowed."""
    eng = engine_with(
        entry("payment-svc",
              src("trusted-app", "allow", ns="intern"),
              src("*", "deny", ns="intern"),
              src("*", "allow", ns="*"),
              dest_ns="billing"),
        default_allow=False,
    )
    dest = S("payment-svc", "billing")
    assert eng.decide(S("trusted-app", "intern"), dest).allowed
    assert not eng.decide(S("other-app", "intern"), dest).allowed
    assert eng.decide(S("web", "frontend"), dest).allowed
    assert not eng.decide(S("web", "frontend"), S("ledger", "billing")).allowed  # no intention: default deny
    assert eng.decide(S("trusted-app", "intern"), dest).intention.precedence == 9
    assert eng.decide(S("other-app", "intern"), dest).intention.precedence == 8
    assert eng.decide(S("web", "frontend"), dest).intention.precedence == 7


def test_first_match_has_no_fall_through_to_lower_precedence() -> None:
    # An L7 intention for web->api that allows only GET /ok must govern web->api even though a
    # lower-precedence wildcard would allow everything.
    eng = engine_with(
        entry("api", src("web", None, Permissions=[{"Action": "allow", "HTTP": {"PathExact": "/ok"}}]),
              src("*", "allow")),
        default_allow=False,
    )
    d = eng.decide(S("web"), S("api"), HTTPRequest("GET", "/other"))
    assert not d.allowed and d.by_default and d.intention.precedence == 9
    assert eng.decide(S("web"), S("api"), HTTPRequest("GET", "/ok")).allowed
    assert eng.decide(S("other"), S("api"), HTTPRequest("GET", "/other")).allowed


def test_l7_permissions_are_ordered_first_match_wins() -> None:
    perms = [
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin", "Methods": ["POST"]}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/admin"}},
        {"Action": "deny", "HTTP": {"PathPrefix": "/"}},
        {"Action": "allow", "HTTP": {"PathPrefix": "/public"}},  # shadowed by the line above
    ]
    eng = engine_with(entry("api", src("web", None, Permissions=perms)), default_allow=True)
    cases = [
        ("POST", "/admin/x", False, 0),
        ("GET", "/admin/x", True, 1),
        ("GET", "/public/x", False, 2),
        ("GET", "/admin?x=/public", True, 1),  # the query string is not part of the path
    ]
    for method, path, allowed, index in cases:
        d = eng.decide(S("web"), S("api"), HTTPRequest(method, path))
        assert (d.allowed, d.permission_index) == (allowed, index), (method, path)


def test_unmatched_l7_request_gets_the_default_not_a_lower_intention() -> None:
    perms = [{"Action": "allow", "HTTP": {"PathExact": "/x"}}]
    for default in (True, False):
        eng = engine_with(entry("api", src("web", None, Permissions=perms), src("*", "deny" if default else "allow")),
                          default_allow=default)
        d = eng.decide(S("web"), S("api"), HTTPRequest("GET", "/y"))
        assert d.allowed is default and d.by_default and d.permission_index is None


def test_headers_follow_envoy_semantics() -> None:
    perms = [
        {"Action": "allow", "HTTP": {"Header": [{"Name": "X-Env", "Exact": "prod"}]}},
        {"Action": "allow", "HTTP": {"Header": [{"Name": "X-Trace", "Present": True, "Invert": True}]}},
        {"Action": "allow", "HTTP": {"Header": [{"Name": "X-Ver", "Prefix": "v2", "Invert": True}]}},
        {"Action": "allow", "HTTP": {"Header": [{"Name": "X-Id", "Regex": "[0-9]{3}"}, {"Name": "X-Suf", "Suffix": ".io"}]}},
    ]
    eng = engine_with(entry("api", src("web", None, Permissions=perms)), default_allow=False)

    def decide(headers: list[tuple[str, str]]) -> tuple[bool, int | None]:
        d = eng.decide(S("web"), S("api"), HTTPRequest.from_pairs("GET", "/", [("X-Trace", "1")] + headers))
        return d.allowed, d.permission_index

    assert decide([("x-env", "prod")]) == (True, 0)
    assert decide([("X-Env", "prod"), ("X-Env", "dev")]) == (False, None)  # joined "prod,dev"
    assert decide([("X-Ver", "v1")]) == (True, 2)
    # A missing header never matches an inverted prefix (Envoy), so X-Ver absent -> not rule 2.
    assert decide([]) == (False, None)
    assert decide([("X-Id", "123"), ("X-Suf", "a.io")]) == (True, 3)
    assert decide([("X-Id", "1234"), ("X-Suf", "a.io")]) == (False, None)  # regex is a full match
    d = eng.decide(S("web"), S("api"), HTTPRequest("GET", "/"))
    assert d.allowed and d.permission_index == 1  # X-Trace absent: inverted presence matches


def test_methods_and_path_regex() -> None:
    perms = [{"Action": "allow", "HTTP": {"PathRegex": "/v[0-9]+/items", "Methods": ["GET", "HEAD"]}}]
    eng = engine_with(entry("api", src("web", None, Permissions=perms)), default_allow=False)
    assert eng.decide(S("web"), S("api"), HTTPRequest("GET", "/v2/items")).allowed
    assert not eng.decide(S("web"), S("api"), HTTPRequest("POST", "/v2/items")).allowed
    assert not eng.decide(S("web"), S("api"), HTTPRequest("GET", "/v2/items/1")).allowed


def test_connection_level_checks_treat_l7_as_deny() -> None:
    perms = [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]
    eng = engine_with(entry("api", src("web", None, Permissions=perms)), default_allow=True)
    d = eng.decide(S("web"), S("api"))
    assert not d.allowed and d.reason.startswith("Matched L7 intention: web => api")


@pytest.mark.parametrize(
    "default_intention_policy,acl_enabled,acl_default,expected,reason",
    [
        ("", False, "deny", True, "Default behavior configured by ACLs"),  # ACLs off: allow
        ("", True, "deny", False, "Default behavior configured by ACLs"),
        ("", True, "allow", True, "Default behavior configured by ACLs"),
        ("deny", False, "allow", False, "Default intention policy"),
        ("deny", True, "allow", False, "Default intention policy"),
        ("allow", True, "deny", True, "Default intention policy"),
    ],
)
def test_default_policy_chain(default_intention_policy: str, acl_enabled: bool, acl_default: str, expected: bool, reason: str) -> None:
    eng = IntentionEngine.from_policy(default_intention_policy, acl_enabled, acl_default)
    d = eng.decide(S("web"), S("db"))
    assert (d.allowed, d.reason, d.by_default) == (expected, reason, True)


def test_partitions_and_peers_are_matched_exactly() -> None:
    eng = engine_with(
        entry("db", src("web", "allow", Partition="ap1"), src("web", "allow", Peer="east"), src("*", "deny")),
        default_allow=True,
    )
    assert eng.decide(S("web", partition="ap1"), S("db")).allowed
    assert eng.decide(S("web", peer="east"), S("db")).allowed
    assert not eng.decide(S("web"), S("db")).allowed  # local default-partition web: only the wildcard deny
    assert eng.decide(S("web", peer="west"), S("db")).by_default  # the local wildcard does not cover peers


def test_decisions_agree_with_a_sort_and_scan_reference() -> None:
    """Randomized: the 9-lookup index decides exactly as Consul's sort-by-precedence-and-scan."""
    rng = random.Random(7)
    names, namespaces = ["a", "b", "c", "*"], ["n1", "n2", "*"]
    for _ in range(30):
        by_dest: dict[tuple[str, str], dict] = {}
        for _ in range(rng.randint(1, 25)):
            dns = rng.choice(namespaces)
            dname = "*" if dns == "*" else rng.choice(names)
            sns = rng.choice(namespaces)
            sname = "*" if sns == "*" else rng.choice(names)
            e = by_dest.setdefault((dns, dname), {"Kind": "service-intentions", "Name": dname, "Namespace": dns, "Sources": []})
            if all((s["Namespace"], s["Name"]) != (sns, sname) for s in e["Sources"]):
                e["Sources"].append(src(sname, rng.choice(["allow", "deny"]), ns=sns))
        entries = [prepare(e) for e in by_dest.values()]
        default = rng.random() < 0.5
        eng = engine_with(*entries, default_allow=default)
        flat = sorted(
            ((s["Precedence"], s["Namespace"], s["Name"], e["Namespace"], e["Name"], s["Action"]) for e in entries for s in e["Sources"]),
            key=lambda t: (-t[0], t[1], t[2], t[3], t[4]),
        )
        for (sns, sname), (dns, dname) in itertools.product(
            itertools.product(["n1", "n2"], ["a", "b", "c"]), itertools.product(["n1", "n2"], ["a", "b", "c"])
        ):
            expected = default
            for _, ins, iname, idns, idname, action in flat:
                if ins in (sns, "*") and iname in (sname, "*") and idns in (dns, "*") and idname in (dname, "*"):
                    expected = action == "allow"
                    break
            assert eng.decide(S(sname, sns), S(dname, dns)).allowed == expected


def test_update_recompiles_only_changed_sources() -> None:
    """Unchanged sources keep their compiled intention, whether the store hands back the same
    objects or equal copies; a changed or new source is compiled afresh."""
    import copy

    first = entry("db", src("web"), src("api", "deny"), src("batch"))
    eng = engine_with(first)
    before = {n: eng.match(S(n), S("db")) for n in ("web", "api", "batch")}
    key = ("default", "default", "db")

    same_objects = {**first, "Sources": [*first["Sources"], src("new")]}
    eng.update_entry(key, same_objects)
    assert all(eng.match(S(n), S("db")) is ci for n, ci in before.items())
    assert eng.match(S("new"), S("db")) is not None

    copies = copy.deepcopy(same_objects)
    copies["Sources"][1] = {**copies["Sources"][1], "Action": "allow"}  # api changes
    eng.update_entry(key, copies)
    assert eng.match(S("web"), S("db")) is before["web"] and eng.match(S("batch"), S("db")) is before["batch"]
    changed = eng.match(S("api"), S("db"))
    assert changed is not before["api"] and eng.decide(S("api"), S("db")).allowed


def test_held_names_follow_incremental_updates() -> None:
    """A data plane holds its ServiceNames, which carry their resolved view: after every
    incremental update (wildcard destinations too), decisions through held names equal a
    freshly loaded engine's, and L7 winners keep their requests' answers."""
    rng = random.Random(11)
    names, namespaces = ["a", "b", "c", "*"], ["n1", "n2", "*"]
    concrete = [S(n, ns) for ns in ("n1", "n2") for n in ("a", "b", "c")]
    held_sources, held_dests = list(concrete), list(concrete)
    eng = IntentionEngine(default_allow=False)
    current: dict[tuple[str, str], dict] = {}
    request = HTTPRequest("GET", "/admin/x", {})
    for _ in range(150):
        dns = rng.choice(namespaces)
        dname = "*" if dns == "*" else rng.choice(names)
        sources = []
        for _ in range(rng.randint(0, 4)):
            sns = rng.choice(namespaces)
            sname = "*" if sns == "*" else rng.choice(names)
            if all((s["Namespace"], s["Name"]) != (sns, sname) for s in sources):
                if dname != "*" and rng.random() < 0.2:  # L7 needs an exact destination
                    sources.append(src(sname, None, ns=sns, Permissions=[{"Action": "allow", "HTTP": {"PathPrefix": "/admin"}}]))
                else:
                    sources.append(src(sname, rng.choice(["allow", "deny"]), ns=sns))
        key = ("default", dns, dname)
        if sources:
            current[(dns, dname)] = entry(dname, *sources, dest_ns=dns)
        else:
            current.pop((dns, dname), None)
        eng.update_entry(key, current.get((dns, dname)))
        fresh = engine_with(*current.values())
        for s_held, d_held in itertools.product(held_sources, held_dests):
            s_new, d_new = S(s_held.name, s_held.namespace), S(d_held.name, d_held.namespace)
            for req in (None, request):
                got, want = eng.decide(s_held, d_held, req), fresh.decide(s_new, d_new, req)
                assert (got.allowed, got.reason) == (want.allowed, want.reason)
        assert all(d.resolved_view is not None and d.resolved_view[0] is eng._epoch for d in held_dests)


def test_a_name_used_with_two_engines_gets_each_engines_answer() -> None:
    allow, deny = engine_with(entry("db", src("web"))), engine_with(entry("db", src("web", "deny")))
    web, db = S("web"), S("db")
    for _ in range(3):
        assert allow.decide(web, db).allowed and not deny.decide(web, db).allowed
