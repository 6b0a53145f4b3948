"""SPIFFE ID parsing (strict, go-spiffe rules) and Consul's SNI names, byte for byte."""

from __future__ import annotations

import pytest

from gateway.identity.sni import (
    ServiceSNI,
    datacenter_sni,
    destination_cluster_name,
    gateway_sni,
    parse_service_sni,
    peered_cluster_name,
    peered_service_sni,
    query_sni,
    server_sni,
    service_sni,
)
from gateway.identity.spiffe import (
    AgentID,
    InvalidSpiffeID,
    MeshGatewayID,
    ServerID,
    ServiceID,
    SigningID,
    SpiffeID,
    consul_id_from_spiffe,
    parse_consul_id,
    parse_spiffe_id,
    parse_svid_uri,
    trust_domain_for_cluster,
    validate_trust_domain,
)

TD = "11111111-2222-3333-4444-555555555555.consul"

# ----------------------------------------------------------------------------- SPIFFE IDs


@pytest.mark.parametrize(
    "uri, td, segments",
    [
        ("spiffe://example.org", "example.org", ()),
        ("spiffe://example.org/web", "example.org", ("web",)),
        ("spiffe://a/b/c/d", "a", ("b", "c", "d")),
        ("spiffe://td-1_x.y/Path.With-Upper_Case/..x/.x/x.", "td-1_x.y", ("Path.With-Upper_Case", "..x", ".x", "x.")),
        (f"spiffe://{TD}/ns/default/dc/dc1/svc/web", TD, ("ns", "default", "dc", "dc1", "svc", "web")),
    ],
)
def test_parse_valid_round_trips(uri: str, td: str, segments: tuple[str, ...]) -> None:
    sid = parse_spiffe_id(uri)
    assert sid == SpiffeID(td, segments)
    assert sid.uri == uri == str(sid)
    assert sid.path == uri[len("spiffe://") + len(td) :]


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("", "SPIFFE ID is empty"),
        ("example.org/web", "scheme must be 'spiffe://'"),
        ("https://example.org/web", "scheme must be 'spiffe://'"),
        ("spiffe:/example.org/web", "scheme must be 'spiffe://'"),
        ("SPIFFE://example.org/web", "scheme must be lower case 'spiffe'"),
        ("Spiffe://example.org/web", "scheme must be lower case 'spiffe'"),
        ("spiffe://", "trust domain is missing"),
        ("spiffe:///web", "trust domain is missing"),
        ("spiffe://Example.org/web", "trust domain must be lower case"),  # py-spiffe lower-cases this
        ("spiffe://EXAMPLE.ORG", "trust domain must be lower case"),
        ("spiffe://example.org:8443/web", "trust domain must not contain a port"),
        ("spiffe://user@example.org/web", "trust domain must not contain userinfo"),
        ("spiffe://ex%41mple.org/web", "trust domain must not contain percent-encoding"),
        ("spiffe://example.org\n/web", "trust domain contains invalid character '\\n' (allowed: a-z 0-9 . - _)"),
        ("spiffe://example.org\n", "trust domain contains invalid character '\\n' (allowed: a-z 0-9 . - _)"),
        ("spiffe://exa mple.org/web", "trust domain contains invalid character ' ' (allowed: a-z 0-9 . - _)"),
        ("spiffe://exämple.org/web", "trust domain contains invalid character 'ä' (allowed: a-z 0-9 . - _)"),
        ("spiffe://example.org?x=1", "query is not allowed"),
        ("spiffe://example.org/web?x=1", "query is not allowed"),
        ("spiffe://example.org#frag", "fragment is not allowed"),
        ("spiffe://example.org/web#frag", "fragment is not allowed"),
        ("spiffe://example.org/", "path must not have a trailing slash"),
        ("spiffe://example.org/web/", "path must not have a trailing slash"),
        ("spiffe://example.org//web", "path must not contain empty segments"),
        ("spiffe://example.org/a//b", "path must not contain empty segments"),
        ("spiffe://example.org/.", "path must not contain dot segments"),
        ("spiffe://example.org/..", "path must not contain dot segments"),
        ("spiffe://example.org/a/./b", "path must not contain dot segments"),
        ("spiffe://example.org/a/../b", "path must not contain dot segments"),
        ("spiffe://example.org/w%65b", "path must not contain percent-encoding"),
        ("spiffe://example.org/a%2Fb", "path must not contain percent-encoding"),
        # py-spiffe 0.3 accepts this one (re.match + '$' lets a trailing newline through)
        ("spiffe://example.org/web\n", "path segment contains invalid character '\\n' (allowed: A-Z a-z 0-9 . - _)"),
        ("spiffe://example.org/we b", "path segment contains invalid character ' ' (allowed: A-Z a-z 0-9 . - _)"),
        ("spiffe://example.org/a:b", "path segment contains invalid character ':' (allowed: A-Z a-z 0-9 . - _)"),
        ("spiffe://example.org/a\x00", "path segment contains invalid character '\\x00' (allowed: A-Z a-z 0-9 . - _)"),
        ("spiffe://" + "a" * 256 + "/x", "trust domain is longer than 255 bytes"),
        ("spiffe://example.org/" + "a" * 2029, "SPIFFE ID is longer than 2048 bytes"),
    ],
)
def test_parse_rejects_with_reason(uri: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeID) as ei:
        parse_spiffe_id(uri)
    assert ei.value.reason == reason
    assert isinstance(ei.value, ValueError)
    assert repr(uri) in str(ei.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidSpiffeID) as ei:
        parse_spiffe_id(b"spiffe://example.org/web")  # type: ignore[arg-type]
    assert ei.value.reason == "must be a string, not bytes"


def test_length_limits_are_inclusive() -> None:
    td = "a" * 255
    assert parse_spiffe_id(f"spiffe://{td}/x").trust_domain == td
    uri = "spiffe://example.org/" + "a" * (2048 - len("spiffe://example.org/"))
    assert len(uri) == 2048 and parse_spiffe_id(uri).uri == uri


def _svid_cases() -> list[str]:
    base = f"spiffe://{TD}"
    out = [f"{base}/ns/default/dc/dc1/svc/web", f"{base}/ap/part-1/ns/team/dc/dc1/svc/Web_1.x",
           f"{base}/ap/default/ns/default/dc/dc1/svc/web", "spiffe://a/ns/n/dc/d/svc/s",
           f"{base}/agent/client/dc/dc1/id/node-1", f"{base}/agent/server/dc/dc1", f"{base}/gateway/mesh/dc/dc1",
           f"{base}/ap/p/gateway/mesh/dc/dc1", f"{base}", f"{base}/ns/default/dc/dc1/svc", f"{base}/web",
           f"{base}/ns/default/dc/dc1/svc/web/extra", "spiffe://" + "a" * 255 + "/ns/n/dc/d/svc/s",
           "spiffe://" + "a" * 256 + "/ns/n/dc/d/svc/s", f"{base}/ns/default/dc/dc1/svc/" + "s" * 2048]
    for dot in (".", ".."):
        out += [f"{base}/ns/{dot}/dc/dc1/svc/web", f"{base}/ns/n/dc/{dot}/svc/web", f"{base}/ns/n/dc/d/svc/{dot}",
                f"{base}/ap/{dot}/ns/n/dc/d/svc/s"]
    for bad in ("Example.org", "example.org:8080", "ex%41mple.org"):
        out.append(f"spiffe://{bad}/ns/n/dc/d/svc/s")
    out += [f"{base}/ns/default/dc/dc1/svc/web\n", f"{base}/ns/default/dc/dc1/svc/web/", f"{base}//ns/n/dc/d/svc/s",
            f"{base}/ns/default/dc/dc1/svc/w%41b", f"{base}/ns/default/dc/dc1/svc/web?x", "SPIFFE://example.org/ns/n/dc/d/svc/s"]
    return out


@pytest.mark.parametrize("uri", _svid_cases())
def test_svid_uri_parser_is_the_two_step_parse(uri: str) -> None:
    """The verifier's one-match parse answers exactly as parse_spiffe_id + consul_id_from_spiffe."""
    try:
        sid = parse_spiffe_id(uri)
    except InvalidSpiffeID as e:
        with pytest.raises(InvalidSpiffeID) as ei:
            parse_svid_uri(uri)
        assert ei.value.reason == e.reason
        return
    got_sid, got_id = parse_svid_uri(uri)
    assert got_sid == sid and got_id == consul_id_from_spiffe(sid)
    assert type(got_id) is type(consul_id_from_spiffe(sid))


TD_ALLOWED = set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
PATH_ALLOWED = TD_ALLOWED | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@pytest.mark.parametrize("code", range(256))
def test_every_character_in_trust_domain_and_path(code: int) -> None:
    """Port of go-spiffe's byte tables: exactly the allowed characters pass."""
    c = chr(code)
    if c == "/":  # the separator itself: covered by the empty-segment/trailing-slash cases
        return
    td_uri, path_uri = f"spiffe://a{c}b/x", f"spiffe://td/a{c}b"
    if c in TD_ALLOWED:
        assert parse_spiffe_id(td_uri).trust_domain == f"a{c}b"
    else:
        with pytest.raises(InvalidSpiffeID):
            parse_spiffe_id(td_uri)
    if c in PATH_ALLOWED:
        assert parse_spiffe_id(path_uri).segments == (f"a{c}b",)
    else:
        with pytest.raises(InvalidSpiffeID):
            parse_spiffe_id(path_uri)


def test_validate_trust_domain() -> None:
    assert validate_trust_domain("example.org") == "example.org"
    for bad, reason in [
        ("", "trust domain is missing"),
        ("Example.org", "trust domain must be lower case"),
        ("example.org/x", "trust domain contains invalid character '/' (allowed: a-z 0-9 . - _)"),
    ]:
        with pytest.raises(InvalidSpiffeID) as ei:
            validate_trust_domain(bad)
        assert ei.value.reason == reason


# ----------------------------------------------------------------------------- Consul IDs


@pytest.mark.parametrize(
    "obj, uri",
    [
        (ServiceID(TD, "default", "dc1", "web"), f"spiffe://{TD}/ns/default/dc/dc1/svc/web"),
        (ServiceID(TD, "team-a", "dc2", "api", partition="part1"), f"spiffe://{TD}/ap/part1/ns/team-a/dc/dc2/svc/api"),
        (AgentID(TD, "dc1", "0e3a9b7c-node"), f"spiffe://{TD}/agent/client/dc/dc1/id/0e3a9b7c-node"),
        (AgentID(TD, "dc1", "n1", partition="p2"), f"spiffe://{TD}/ap/p2/agent/client/dc/dc1/id/n1"),
        (ServerID(TD, "dc1"), f"spiffe://{TD}/agent/server/dc/dc1"),
        (MeshGatewayID(TD, "dc3"), f"spiffe://{TD}/gateway/mesh/dc/dc3"),
        (MeshGatewayID(TD, "dc3", partition="p1"), f"spiffe://{TD}/ap/p1/gateway/mesh/dc/dc3"),
        (SigningID(TD), f"spiffe://{TD}"),
    ],
)
def test_consul_ids_format_and_parse(obj: object, uri: str) -> None:
    assert obj.uri == uri  # type: ignore[attr-defined]
    assert str(obj) == uri
    assert parse_consul_id(uri) == obj
    # the verifier's shortcut (parts already checked by parse_spiffe_id) builds an equal object
    fast = consul_id_from_spiffe(parse_spiffe_id(uri), validated=True)
    assert fast == obj and hash(fast) == hash(obj) and type(fast) is type(obj)


def test_service_id_defaults_match_consul() -> None:
    assert ServiceID(TD, "", "dc1", "web", "") == ServiceID(TD, "default", "dc1", "web", "default")
    # an explicit /ap/default parses (as in Consul) and formats without the prefix
    parsed = parse_consul_id(f"spiffe://{TD}/ap/default/ns/default/dc/dc1/svc/web")
    assert parsed == ServiceID(TD, "default", "dc1", "web")
    assert parsed.uri == f"spiffe://{TD}/ns/default/dc/dc1/svc/web"


@pytest.mark.parametrize(
    "uri",
    [
        f"spiffe://{TD}/web",
        f"spiffe://{TD}/ns/default/dc/dc1/svc",
        f"spiffe://{TD}/ns/default/dc/dc1/svc/web/extra",
        f"spiffe://{TD}/ns/default/svc/web/dc/dc1",
        f"spiffe://{TD}/ap/p1",
        f"spiffe://{TD}/ap/p1/agent/server/dc/dc1",  # servers have no partition
        f"spiffe://{TD}/agent/node1",  # pre-1.9 agent form, not produced any more
        f"spiffe://{TD}/gateway/terminating/dc/dc1",  # TGWs have no identity of their own
    ],
)
def test_parse_consul_id_rejects_other_paths(uri: str) -> None:
    with pytest.raises(InvalidSpiffeID) as ei:
        parse_consul_id(uri)
    assert ei.value.reason.startswith("not a Consul identity")


def test_parse_consul_id_applies_strict_rules_first() -> None:
    with pytest.raises(InvalidSpiffeID) as ei:
        parse_consul_id(f"spiffe://{TD.upper()}/ns/default/dc/dc1/svc/web")
    assert ei.value.reason == "trust domain must be lower case"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(trust_domain="Bad.TD", namespace="default", datacenter="dc1", service="web"),
        dict(trust_domain=TD, namespace="default", datacenter="dc1", service="a/b"),
        dict(trust_domain=TD, namespace="..", datacenter="dc1", service="web"),
        dict(trust_domain=TD, namespace="default", datacenter="", service="web"),
    ],
)
def test_service_id_constructor_validates(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidSpiffeID):
        ServiceID(**kwargs)


def test_consul_ids_are_frozen_and_slotted() -> None:
    sid = ServiceID(TD, "default", "dc1", "web")
    with pytest.raises(AttributeError):
        sid.service = "other"  # type: ignore[misc]
    assert not hasattr(sid, "__dict__")
    assert {sid: 1}[ServiceID(TD, "default", "dc1", "web")] == 1


def test_trust_domain_for_cluster() -> None:
    assert trust_domain_for_cluster("11111111-2222-3333-4444-555555555555") == TD
    assert trust_domain_for_cluster("ABCDEF01-2222-3333-4444-555555555555") == "abcdef01-2222-3333-4444-555555555555.consul"
    with pytest.raises(InvalidSpiffeID):
        trust_domain_for_cluster("bad/cluster")


# ----------------------------------------------------------------------------- SNI


@pytest.mark.parametrize(
    "args, expected",
    [
        (("api", "", "", "", "dc1", TD), f"api.default.dc1.internal.{TD}"),
        (("api", None, None, None, "dc1", TD), f"api.default.dc1.internal.{TD}"),
        (("api", "", "default", "default", "dc1", TD), f"api.default.dc1.internal.{TD}"),
        (("api", "v2", "default", "", "dc1", TD), f"v2.api.default.dc1.internal.{TD}"),
        (("api", "", "team-a", "", "dc2", TD), f"api.team-a.dc2.internal.{TD}"),
        (("api", "", "default", "part1", "dc1", TD), f"api.default.part1.dc1.internal-v1.{TD}"),
        (("api", "v2", "ns1", "part1", "dc1", TD), f"v2.api.ns1.part1.dc1.internal-v1.{TD}"),
        (("api", "", "", "part1", "dc1", TD), f"api.default.part1.dc1.internal-v1.{TD}"),
    ],
)
def test_service_sni(args: tuple, expected: str) -> None:
    assert service_sni(*args) == expected


def test_other_snis_byte_for_byte() -> None:
    assert peered_service_sni("api", "billing", "", "webstuff", TD) == f"api.billing.default.webstuff.external.{TD}"
    assert peered_service_sni("api", "", "p1", "peer1", TD) == f"api.default.p1.peer1.external.{TD}"
    assert peered_cluster_name("api", "", "peer1", "peer-td.consul") == "api.default.peer1.external.peer-td.consul"
    assert datacenter_sni("dc2", TD) == f"dc2.internal.{TD}"
    assert gateway_sni("dc2", "", TD) == f"dc2.internal.{TD}"
    assert gateway_sni("dc2", "default", TD) == f"dc2.internal.{TD}"
    assert gateway_sni("dc2", "p1", TD) == f"p1.dc2.internal-v1.{TD}"
    assert query_sni("magicquery", "dc1", TD) == f"magicquery.default.dc1.query.{TD}"
    assert server_sni("dc1", TD) == f"server.dc1.peering.{TD}"
    assert (
        destination_cluster_name("ext", "10.0.0.1:443", "", "", "dc1", TD)
        == f"destination.10-0-0-1-443.ext.default.dc1.internal.{TD}"
    )
    assert (
        destination_cluster_name("ext", "api.example.com", "ns", "p1", "dc1", TD)
        == f"destination.api-example-com.ext.ns.p1.dc1.internal-v1.{TD}"
    )
    with pytest.raises(ValueError):
        peered_service_sni("api", "", "", "", TD)


@pytest.mark.parametrize(
    "service, subset, namespace, partition, dc",
    [
        ("api", None, "default", "default", "dc1"),
        ("api", "v2", "default", "default", "dc1"),
        ("web-frontend", None, "team-a", "default", "us_east-1"),
        ("api", None, "default", "part1", "dc1"),
        ("api", "canary", "ns1", "part1", "dc9"),
        ("API_Svc", None, "NS", "default", "dc1"),
    ],
)
def test_parse_service_sni_round_trip(service: str, subset: str | None, namespace: str, partition: str, dc: str) -> None:
    sni = service_sni(service, subset, namespace, partition, dc, TD)
    assert parse_service_sni(sni, TD) == ServiceSNI(service, namespace, partition, dc, subset)


@pytest.mark.parametrize(
    "sni",
    [
        f"dc1.internal.{TD}",  # mesh gateway
        f"p1.dc1.internal-v1.{TD}",  # partitioned mesh gateway
        f"api.default.dc1.query.{TD}",  # prepared query
        f"api.default.default.peer1.external.{TD}",  # peered
        f"server.dc1.peering.{TD}",
        f"destination.10-0-0-1-443.ext.default.dc1.internal.{TD}",  # 3 labels before ns
        "api.default.dc1.internal.other.consul",  # other trust domain
        f"api.default.dc1.internal.x{TD}",  # suffix must be a whole label
        f"api.default.dc1.internal.{TD.upper()}",  # exact match, no case folding
        f"api.default.default.dc1.internal-v1.{TD}",  # Consul never spells out default
        f"api.default.DC1.internal.{TD}",  # datacenters are lower case in Consul
        f"api..dc1.internal.{TD}",
        f".api.default.dc1.internal.{TD}",
        f"V2.api.default.dc1.internal.{TD}",  # subsets are lower-case DNS labels
        f"internal.{TD}",
        TD,
        "",
    ],
)
def test_parse_service_sni_rejects(sni: str) -> None:
    assert parse_service_sni(sni, TD) is None


def test_parse_service_sni_trust_domain_with_many_labels() -> None:
    td = "a.b.c.consul"
    assert parse_service_sni(f"v1.api.ns.dc1.internal.{td}", td) == ServiceSNI("api", "ns", "default", "dc1", "v1")
    assert parse_service_sni("api.ns.dc1.internal.a.b.c.consul", "") is None
