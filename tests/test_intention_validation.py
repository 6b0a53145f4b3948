"""Intention normalization/validation/conversion against Consul's rules and exact texts.

Expected messages are copied from hashicorp/consul agent/structs/config_entry_intentions.go,
config_entry_intentions_ce.go, config_entry.go, intention.go and
agent/consul/intention_endpoint.go.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import struct
from datetime import datetime, timezone
from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.intentions.convert import (
    entry_to_intentions,
    go_time_json,
    intention_sort_key,
    intention_to_source,
    permission_json,
    remove_source,
    source_key,
    upsert_source,
)
from gateway.intentions.validate import (
    check_legacy_apply_allowed,
    compute_precedence,
    go_quote,
    normalize_legacy_intention,
    normalize_service_intentions,
    prepare_service_intentions,
    validate_legacy_intention,
    validate_service_intentions,
)


def entry(*sources: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Kind": "service-intentions", "Name": "api"}
    out.update(fields)
    out["Sources"] = list(sources)
    return out


def l7(*perms: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"Name": "web", "Permissions": list(perms), **fields}


def http_perm(**http: Any) -> dict[str, Any]:
    return {"Action": "allow", "HTTP": http}


def rejects(raw: dict[str, Any], message: str, **kwargs: Any) -> None:
    """Normalize then validate (Consul's order) and expect exactly `message`."""
    with pytest.raises(InvalidInput) as exc:
        prepare_service_intentions(raw, **kwargs)
    assert exc.value.message == message
    assert exc.value.status_code == 400


def legacy_source(**fields: Any) -> dict[str, Any]:
    src = {
        "Name": "web",
        "Action": "allow",
        "LegacyID": "11111111-2222-3333-4444-555555555555",
        "LegacyCreateTime": "2024-01-02T03:04:05Z",
        "LegacyUpdateTime": "2024-01-02T03:04:05Z",
    }
    src.update(fields)
    return src


# ---------------------------------------------------------------------------
# precedence (reference 1.4 table)


@pytest.mark.parametrize(
    ("expected", "src_ns", "src_name", "dst_ns", "dst_name"),
    [
        (9, "ns", "web", "ns", "api"),
        (8, "ns", "*", "ns", "api"),
        (7, "*", "*", "ns", "api"),
        (6, "ns", "web", "ns", "*"),
        (5, "ns", "*", "ns", "*"),
        (4, "*", "*", "ns", "*"),
        (3, "ns", "web", "*", "*"),
        (2, "ns", "*", "*", "*"),
        (1, "*", "*", "*", "*"),
    ],
)
def test_precedence_table(expected: int, src_ns: str, src_name: str, dst_ns: str, dst_name: str) -> None:
    assert compute_precedence(src_ns, src_name, dst_ns, dst_name) == expected


def test_precedence_empty_namespace_means_default() -> None:
    assert compute_precedence("", "web", "", "api") == 9
    assert compute_precedence("", "*", "", "*") == 5


# ---------------------------------------------------------------------------
# normalization


def test_normalize_defaults_kind_type_and_tenancy() -> None:
    out = normalize_service_intentions({"Name": "api", "Sources": [{"Name": "web", "Action": "allow"}]})
    assert out["Kind"] == "service-intentions"
    assert (out["Namespace"], out["Partition"]) == ("default", "default")
    src = out["Sources"][0]
    assert src["Type"] == "consul"
    assert (src["Namespace"], src["Partition"], src["Precedence"]) == ("default", "default", 9)
    assert "Meta" not in out  # omitempty in Consul: missing stays missing


def test_normalize_keeps_meta_and_explicit_type() -> None:
    out = normalize_service_intentions(
        entry({"Name": "web", "Action": "allow", "Type": "other"}, Meta={"owner": "team"})
    )
    assert out["Meta"] == {"owner": "team"}
    assert out["Sources"][0]["Type"] == "other"


def test_normalize_does_not_mutate_input() -> None:
    raw = entry({"Name": "web", "Permissions": [http_perm(Methods=["get"])]})
    before = copy.deepcopy(raw)
    out = normalize_service_intentions(raw)
    assert raw == before
    out["Sources"][0]["Permissions"][0]["HTTP"]["Methods"].append("PUT")
    assert raw == before


def test_non_peer_source_inherits_destination_namespace_and_partition() -> None:
    out = normalize_service_intentions(
        entry({"Name": "web", "Action": "allow"}, {"Name": "db", "Namespace": "other", "Action": "allow"},
              Namespace="team", Partition="p1")
    )
    by_name = {s["Name"]: s for s in out["Sources"]}
    assert (by_name["web"]["Namespace"], by_name["web"]["Partition"]) == ("team", "p1")
    assert (by_name["db"]["Namespace"], by_name["db"]["Partition"]) == ("other", "p1")


def test_wildcard_destination_namespace_is_not_inherited() -> None:
    out = normalize_service_intentions(entry({"Name": "web", "Action": "allow"}, Name="*", Namespace="*"))
    src = out["Sources"][0]
    assert src["Namespace"] == "default"
    assert src["Precedence"] == 3  # exact source -> */*


@pytest.mark.parametrize("field", ["Peer", "SamenessGroup"])
def test_peer_and_sameness_group_sources_only_get_namespace(field: str) -> None:
    out = normalize_service_intentions(
        entry({"Name": "web", field: "remote", "Action": "allow"}, Namespace="team", Partition="p1")
    )
    src = out["Sources"][0]
    assert src["Namespace"] == "default"  # NormalizeNamespace, not the destination's
    assert "Partition" not in src


def test_precedence_uses_namespace_after_inheritance() -> None:
    out = normalize_service_intentions(
        entry(
            {"Name": "*", "Namespace": "*", "Action": "deny"},
            {"Name": "*", "Action": "deny"},
            {"Name": "web", "Action": "allow", "Precedence": 1},
            Namespace="team",
        )
    )
    assert [(s["Name"], s["Namespace"], s["Precedence"]) for s in out["Sources"]] == [
        ("web", "team", 9),  # client-supplied Precedence is recomputed
        ("*", "team", 8),
        ("*", "*", 7),
    ]


def test_methods_are_upper_cased() -> None:
    out = normalize_service_intentions(entry(l7(http_perm(Methods=["get", "Post"]))))
    assert out["Sources"][0]["Permissions"][0]["HTTP"]["Methods"] == ["GET", "POST"]
    prepare_service_intentions(entry(l7(http_perm(Methods=["get"]))))  # valid after upper-casing


def test_sources_are_stable_sorted_by_precedence() -> None:
    out = normalize_service_intentions(
        entry(
            {"Name": "*", "Action": "deny", "Description": "first wildcard"},
            {"Name": "b", "Action": "allow"},
            {"Name": "a", "Action": "allow"},
            {"Name": "*", "Namespace": "*", "Action": "deny"},
            {"Name": "c", "Action": "allow"},
        )
    )
    assert [s["Name"] for s in out["Sources"]] == ["b", "a", "c", "*", "*"]
    assert [s["Precedence"] for s in out["Sources"]] == [9, 9, 9, 8, 7]


def test_non_legacy_normalize_clears_legacy_fields_but_keeps_legacy_meta() -> None:
    out = normalize_service_intentions(entry(legacy_source(LegacyMeta={"k": "v"})))
    src = out["Sources"][0]
    assert not {"LegacyID", "LegacyCreateTime", "LegacyUpdateTime"} & src.keys()
    assert src["LegacyMeta"] == {"k": "v"}
    rejects(entry(legacy_source(LegacyMeta={"k": "v"})), "Sources[0].LegacyMeta must be omitted")
    prepare_service_intentions(entry(legacy_source()))  # silently dropped, as in Consul


def test_legacy_normalize_keeps_legacy_fields_and_defaults_legacy_meta() -> None:
    out = normalize_service_intentions(entry(legacy_source()), legacy=True)
    src = out["Sources"][0]
    assert src["LegacyID"] == "11111111-2222-3333-4444-555555555555"
    assert src["LegacyMeta"] == {}
    prepare_service_intentions(entry(legacy_source()), legacy=True)


def test_error_indexes_refer_to_sorted_order() -> None:
    # "web" (9) sorts ahead of "*" (8), so Consul reports it as Sources[0].
    rejects(entry({"Name": "*", "Action": "allow"}, {"Name": "web"}),
            "Sources[0].Action must be set to 'allow' or 'deny'")


# ---------------------------------------------------------------------------
# validation: destination and entry-level rules


def test_valid_entry_passes() -> None:
    prepare_service_intentions(
        entry(
            {"Name": "web", "Action": "allow", "Description": "x" * 512},
            {"Name": "*", "Action": "deny"},
            {"Name": "web", "Peer": "dc2", "Action": "allow"},
            l7(
                http_perm(PathRegex="^/v[0-9]+/.*$", Methods=["GET", "HEAD"]),
                {"Action": "deny", "HTTP": {"Header": [{"Name": "x-admin", "Regex": "^(yes|true)$", "Invert": True}]}},
                Name="worker",
            ),
            Meta={"k": "v" * 512, "x" * 128: "v"},
            JWT={"Providers": [{"Name": "okta"}]},
        )
    )


def test_name_is_required() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, Name=""), "Name is required")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Name": "ap*"}, "Name: wildcard character '*' cannot be used with partial values"),
        ({"Namespace": "te*m"}, "Namespace: wildcard character '*' cannot be used with partial values"),
        ({"Namespace": "*"}, "Name: exact value cannot follow wildcard namespace"),
        ({"Partition": "*"}, "Partition: cannot use wildcard '*' in partition"),
    ],
)
def test_destination_wildcards(fields: dict[str, Any], message: str) -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, **fields), message)


def test_entry_jwt_provider_name_required() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, JWT={"Providers": [{"Name": ""}]}),
            "1 error occurred:\n\t* JWT provider name is required\n\n")


def test_entry_meta_too_many_pairs() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, Meta={f"k{i}": "v" for i in range(65)}),
            "1 error occurred:\n\t* Meta exceeds maximum element count 64\n\n")


def test_entry_meta_key_too_long() -> None:
    key = "k" * 129
    rejects(entry({"Name": "web", "Action": "allow"}, Meta={key: "v"}),
            f'1 error occurred:\n\t* Meta key "{key}" exceeds maximum length 128\n\n')


def test_entry_meta_value_too_long_counts_utf8_bytes() -> None:
    # 257 "é" are 514 bytes: Go's len() counts bytes.
    rejects(entry({"Name": "web", "Action": "allow"}, Meta={"k": "é" * 257}),
            '1 error occurred:\n\t* Meta value for key "k" exceeds maximum length 512\n\n')


def test_entry_meta_errors_are_aggregated() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, Meta={"a": "v" * 513, "b": "v" * 513}),
            "2 errors occurred:\n"
            '\t* Meta value for key "a" exceeds maximum length 512\n'
            '\t* Meta value for key "b" exceeds maximum length 512\n\n')


def test_legacy_write_refuses_entry_meta() -> None:
    rejects(entry(legacy_source(), Meta={"k": "v"}), "Meta must be omitted for legacy intention writes", legacy=True)


@pytest.mark.parametrize("sources", [[], None])
def test_at_least_one_source(sources: Any) -> None:
    rejects({"Name": "api", "Sources": sources}, "At least one source is required")


# ---------------------------------------------------------------------------
# validation: per-source rules


def test_source_name_required() -> None:
    rejects(entry({"Action": "allow"}), "Sources[0].Name is required")


def test_sameness_group_is_enterprise_only_in_ce() -> None:
    rejects(entry({"Name": "web", "SamenessGroup": "sg", "Action": "allow"}),
            "Sources[0].SamenessGroup: Sameness groups are a Consul Enterprise feature. ")
    prepare_service_intentions(entry({"Name": "web", "SamenessGroup": "sg", "Action": "allow"}),
                               allow_sameness_groups=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Name": "we*"}, "Sources[0].Name: wildcard character '*' cannot be used with partial values"),
        ({"Namespace": "n*"}, "Sources[0].Namespace: wildcard character '*' cannot be used with partial values"),
        ({"Namespace": "*"}, "Sources[0].Name: exact value cannot follow wildcard namespace"),
        ({"Partition": "*"}, "Sources[0].Partition: cannot use wildcard '*' in partition"),
        ({"Peer": "dc*"}, "Sources[0].Peer: cannot use wildcard '*' in peer"),
        ({"SamenessGroup": "*"}, "Sources[0].SamenessGroup: cannot use wildcard '*' in sameness group"),
    ],
)
def test_source_wildcards(fields: dict[str, Any], message: str) -> None:
    rejects(entry({"Name": "web", "Action": "allow", **fields}), message, allow_sameness_groups=True)


def test_peer_and_partition_are_exclusive() -> None:
    rejects(entry({"Name": "web", "Peer": "dc2", "Partition": "default", "Action": "allow"}),
            "Sources[0].Peer: cannot set Peer and Partition at the same time.")


def test_sameness_group_and_partition_are_exclusive() -> None:
    rejects(entry({"Name": "web", "SamenessGroup": "sg", "Partition": "p1", "Action": "allow"}),
            "Sources[0].SamenessGroup: cannot set SamenessGroup and Partition at the same time",
            allow_sameness_groups=True)


def test_sameness_group_and_peer_are_exclusive() -> None:
    rejects(entry({"Name": "web", "SamenessGroup": "sg", "Peer": "dc2", "Action": "allow"}),
            "Sources[0].SamenessGroup: cannot set SamenessGroup and Peer at the same time",
            allow_sameness_groups=True)


def test_description_max_length() -> None:
    prepare_service_intentions(entry({"Name": "web", "Action": "allow", "Description": "d" * 512}))
    rejects(entry({"Name": "web", "Action": "allow", "Description": "d" * 513}),
            "Sources[0].Description exceeds maximum length 512")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Peer": "dc2"}, "Sources[0].Peer cannot be set by legacy intentions"),
        ({"LegacyMeta": {f"k{i}": "v" for i in range(65)}}, "Sources[0].Meta exceeds maximum element count 64"),
        ({"LegacyMeta": {"k" * 129: "v"}}, f'Sources[0].Meta key "{"k" * 129}" exceeds maximum length 128'),
        ({"LegacyMeta": {"k": "v" * 513}}, 'Sources[0].Meta value for key "k" exceeds maximum length 512'),
        ({"LegacyCreateTime": None}, "Sources[0].LegacyCreateTime must be set"),
        ({"LegacyUpdateTime": None}, "Sources[0].LegacyUpdateTime must be set"),
        ({"LegacyID": ""}, "Sources[0].LegacyID must be set"),
        ({"Action": ""}, "Sources[0].Action must be set to 'allow' or 'deny'"),
    ],
)
def test_legacy_source_rules(fields: dict[str, Any], message: str) -> None:
    rejects(entry(legacy_source(**fields)), message, legacy=True)


def test_legacy_refuses_sameness_group() -> None:
    rejects(entry(legacy_source(SamenessGroup="sg")), "Sources[0].SamenessGroup cannot be set by legacy intentions",
            legacy=True, allow_sameness_groups=True)


def test_legacy_requires_action_even_with_permissions() -> None:
    src = legacy_source(Action="", Permissions=[http_perm(PathExact="/")])
    rejects(entry(src), "Sources[0].Action must be set to 'allow' or 'deny'", legacy=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [("LegacyCreateTime", "2024-01-02T03:04:05Z"), ("LegacyUpdateTime", "2024-01-02T03:04:05Z"), ("LegacyID", "x")],
)
def test_non_legacy_validate_refuses_legacy_fields(field: str, value: str) -> None:
    # Only reachable when validating an un-normalized entry: normalize() clears them.
    normalized = normalize_service_intentions(entry({"Name": "web", "Action": "allow"}))
    normalized["Sources"][0][field] = value
    with pytest.raises(InvalidInput) as exc:
        validate_service_intentions(normalized)
    assert exc.value.message == f"Sources[0].{field} must be omitted"


@pytest.mark.parametrize("action", [None, "", "ALLOW", "permit"])
def test_action_must_be_allow_or_deny(action: Any) -> None:
    rejects(entry({"Name": "web", "Action": action}), "Sources[0].Action must be set to 'allow' or 'deny'")


def test_action_must_be_omitted_with_permissions() -> None:
    rejects(entry(l7(http_perm(PathExact="/"), Action="allow")),
            "Sources[0].Action must be omitted if Permissions are specified")


@pytest.mark.parametrize("dest", [{"Name": "*"}, {"Name": "*", "Namespace": "*"}])
def test_permissions_refused_on_wildcard_destination(dest: dict[str, Any]) -> None:
    rejects(entry(l7(http_perm(PathExact="/")), **dest),
            "Sources[0].Permissions cannot be specified on intentions with wildcarded destinations")


def test_type_must_be_consul() -> None:
    rejects(entry({"Name": "web", "Action": "allow", "Type": "external"}), "Sources[0].Type must be set to 'consul'")


def test_duplicate_source() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}),
            'Sources[1] defines "web" more than once')


def test_duplicate_source_after_namespace_inheritance() -> None:
    rejects(entry({"Name": "web", "Action": "allow"}, {"Name": "web", "Namespace": "team", "Action": "deny"},
                  Namespace="team"),
            'Sources[1] defines "team/web" more than once')


def test_duplicate_peer_source() -> None:
    rejects(entry({"Name": "web", "Peer": "dc2", "Action": "allow"}, {"Name": "web", "Peer": "dc2", "Action": "deny"}),
            'Sources[1] defines peer("dc2") "web" more than once')


def test_duplicate_sameness_group_source() -> None:
    rejects(entry({"Name": "web", "SamenessGroup": "sg", "Action": "allow"},
                  {"Name": "web", "SamenessGroup": "sg", "Action": "deny"}),
            'Sources[1] defines sameness-group("sg") "web" more than once', allow_sameness_groups=True)


def test_same_name_from_local_and_peer_is_not_a_duplicate() -> None:
    prepare_service_intentions(
        entry({"Name": "web", "Action": "allow"}, {"Name": "web", "Peer": "dc2", "Action": "deny"},
              {"Name": "web", "Peer": "dc3", "Action": "deny"})
    )


# ---------------------------------------------------------------------------
# validation: permissions


@pytest.mark.parametrize("action", [None, "", "Allow"])
def test_permission_action(action: Any) -> None:
    rejects(entry(l7({"Action": action, "HTTP": {"PathExact": "/"}})),
            "Sources[0].Permissions[0].Action must be set to 'allow' or 'deny'")


def test_permission_http_required() -> None:
    rejects(entry(l7({"Action": "allow"})), "Sources[0].Permissions[0].HTTP is required")


@pytest.mark.parametrize("field", ["PathExact", "PathPrefix"])
def test_paths_must_start_with_slash(field: str) -> None:
    rejects(entry(l7(http_perm(**{field: "api"}))),
            f"Sources[0].Permissions[0].HTTP.{field} doesn't start with '/': \"api\"")


def test_path_message_uses_go_quoting() -> None:
    rejects(entry(l7(http_perm(PathExact='a"b\n\x01'))),
            "Sources[0].Permissions[0].HTTP.PathExact doesn't start with '/': \"a\\\"b\\n\\x01\"")


@pytest.mark.parametrize(
    "paths",
    [{"PathExact": "/a", "PathPrefix": "/b"}, {"PathExact": "/a", "PathRegex": "/c"},
     {"PathPrefix": "/b", "PathRegex": "/c"}],
)
def test_at_most_one_path_matcher(paths: dict[str, str]) -> None:
    rejects(entry(l7(http_perm(**paths))),
            "Sources[0].Permissions[0].HTTP should only contain at most one of PathExact, PathPrefix, or PathRegex")


def test_header_name_required() -> None:
    rejects(entry(l7(http_perm(Header=[{"Name": "x", "Present": True}, {"Exact": "v"}]))),
            "Sources[0].Permissions[0].HTTP.Header[1] missing required Name field")


@pytest.mark.parametrize(
    "header",
    [{"Name": "x"}, {"Name": "x", "Present": False, "Invert": True}, {"Name": "x", "Exact": "a", "Prefix": "b"},
     {"Name": "x", "Present": True, "Regex": "a"}, {"Name": "x", "Suffix": "a", "Regex": "b"}],
)
def test_header_exactly_one_match_type(header: dict[str, Any]) -> None:
    rejects(entry(l7(http_perm(Header=[header]))),
            "Sources[0].Permissions[0].HTTP.Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex")


def test_invalid_method() -> None:
    rejects(entry(l7(http_perm(Methods=["GET", "fetch"]))),
            'Sources[0].Permissions[0].HTTP.Methods contains an invalid method "FETCH"')


def test_duplicate_method_after_upper_casing() -> None:
    rejects(entry(l7(http_perm(Methods=["get", "GET"]))),
            'Sources[0].Permissions[0].HTTP.Methods contains "GET" more than once')


def test_all_go_http_methods_are_valid() -> None:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"]
    prepare_service_intentions(entry(l7(http_perm(Methods=methods))))


@pytest.mark.parametrize("http", [{}, {"Methods": [], "Header": []}, {"PathExact": ""}])
def test_http_must_not_be_empty(http: dict[str, Any]) -> None:
    rejects(entry(l7({"Action": "allow", "HTTP": http})), "Sources[0].Permissions[0].HTTP should not be empty")


def test_permission_jwt_provider_name_required() -> None:
    rejects(entry(l7({"Action": "allow", "HTTP": {"PathPrefix": "/"}, "JWT": {"Providers": [{}, {"Name": ""}]}})),
            "2 errors occurred:\n\t* JWT provider name is required\n\t* JWT provider name is required\n\n")


def test_second_permission_is_indexed() -> None:
    rejects(entry(l7(http_perm(PathExact="/ok"), {"Action": "deny"})), "Sources[0].Permissions[1].HTTP is required")


def test_invalid_path_regex_rejected_up_front() -> None:
    rejects(entry(l7(http_perm(PathRegex="/api/(v1"))),
            "Sources[0].Permissions[0].HTTP.PathRegex is not a valid RE2 regular expression: missing ): /api/(v1")


def test_perl_only_regex_rejected_as_not_re2() -> None:
    rejects(entry(l7(http_perm(PathRegex="^/(?=admin)"))),
            "Sources[0].Permissions[0].HTTP.PathRegex is not a valid RE2 regular expression: "
            "invalid perl operator: (?=")


def test_invalid_header_regex_rejected_up_front() -> None:
    rejects(entry(l7(http_perm(Header=[{"Name": "x", "Present": True}, {"Name": "y", "Regex": "[a-"}]))),
            "Sources[0].Permissions[0].HTTP.Header[1].Regex is not a valid RE2 regular expression: missing ]: [a-")


def test_valid_re2_only_syntax_is_accepted() -> None:
    # \pL and \z are RE2 syntax that Python's re would not accept the same way.
    prepare_service_intentions(entry(l7(http_perm(PathRegex=r"^/\pL+\z"))))


def test_wrong_json_type_is_invalid_input() -> None:
    rejects(entry({"Name": 5, "Action": "allow"}), "Sources[0].Name: expected a string, got number")


# ---------------------------------------------------------------------------
# legacy flattened intentions


def test_legacy_validate_unnormalized_reports_every_error() -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention({})
    assert exc.value.message == (
        "6 errors occurred:\n"
        "\t* SourceNS must be set\n"
        "\t* SourceName must be set\n"
        "\t* DestinationNS must be set\n"
        "\t* DestinationName must be set\n"
        "\t* Action must be set to 'allow' or 'deny'\n"
        "\t* SourceType must be set to 'consul'\n\n"
    )


def test_normalize_legacy_intention_fills_defaults() -> None:
    raw = {"SourceName": "web", "DestinationName": "api", "Action": "allow"}
    out = normalize_legacy_intention(raw)
    assert out == {
        "SourceName": "web",
        "DestinationName": "api",
        "Action": "allow",
        "SourceNS": "default",
        "DestinationNS": "default",
        "SourcePartition": "default",
        "DestinationPartition": "default",
        "SourceType": "consul",
        "Precedence": 9,
    }
    assert raw == {"SourceName": "web", "DestinationName": "api", "Action": "allow"}
    validate_legacy_intention(out)


def test_normalize_legacy_peer_source_has_no_partition() -> None:
    out = normalize_legacy_intention({"SourceName": "web", "SourcePeer": "dc2", "DestinationName": "api"})
    assert "SourcePartition" not in out


def legacy_rejects(ixn: dict[str, Any], *messages: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention(normalize_legacy_intention(ixn), **kwargs)
    if len(messages) == 1:
        assert exc.value.message == f"1 error occurred:\n\t* {messages[0]}\n\n"
    else:
        points = "\n\t".join(f"* {m}" for m in messages)
        assert exc.value.message == f"{len(messages)} errors occurred:\n\t{points}\n\n"


def base_ixn(**fields: Any) -> dict[str, Any]:
    return {"SourceName": "web", "DestinationName": "api", "Action": "allow", **fields}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"SourceNS": "n*"}, "SourceNS: wildcard character '*' cannot be used with partial values"),
        ({"SourceName": "w*"}, "SourceName: wildcard character '*' cannot be used with partial values"),
        ({"SourceNS": "*"}, "SourceName: exact value cannot follow wildcard namespace"),
        ({"DestinationNS": "n*"}, "DestinationNS: wildcard character '*' cannot be used with partial values"),
        ({"DestinationName": "a*"}, "DestinationName: wildcard character '*' cannot be used with partial values"),
        ({"DestinationNS": "*"}, "DestinationName: exact value cannot follow wildcard namespace"),
        ({"Description": "d" * 513}, "Description exceeds maximum length 512"),
        ({"Meta": {f"k{i}": "v" for i in range(65)}}, "Meta exceeds maximum element count 64"),
        ({"Meta": {"k" * 129: "v"}}, f'Meta key "{"k" * 129}" exceeds maximum length 128'),
        ({"Meta": {"k": "v" * 513}}, 'Meta value for key "k" exceeds maximum length 512'),
        ({"Action": "ALLOW"}, "Action must be set to 'allow' or 'deny'"),
        ({"Permissions": [http_perm(PathExact="/")]}, "Permissions must not be set when using the legacy APIs"),
        ({"SourceType": "external"}, "SourceType must be set to 'consul'"),
    ],
)
def test_legacy_intention_rules(fields: dict[str, Any], message: str) -> None:
    legacy_rejects(base_ixn(**fields), message)


def test_legacy_errors_accumulate_in_consul_order() -> None:
    legacy_rejects(
        base_ixn(SourceName="w*", Action="", SourceType="x"),
        "SourceName: wildcard character '*' cannot be used with partial values",
        "Action must be set to 'allow' or 'deny'",
        "SourceType must be set to 'consul'",
    )


def test_legacy_wildcards_are_allowed_whole() -> None:
    validate_legacy_intention(normalize_legacy_intention(base_ixn(SourceNS="*", SourceName="*")))


def test_legacy_create_refuses_id() -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention(normalize_legacy_intention(base_ixn(ID="abc")))
    assert exc.value.message == "ID must be empty when creating a new intention"
    validate_legacy_intention(normalize_legacy_intention(base_ixn(ID="abc")), op="update")


def test_exact_upsert_refuses_id() -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention(base_ixn(ID="abc"), op="upsert")
    assert exc.value.message == "ID must not be specified"


def test_exact_upsert_allows_permissions() -> None:
    validate_legacy_intention({"SourceType": "consul", "Permissions": [http_perm(PathPrefix="/api")]}, op="upsert")


def test_exact_upsert_meta_rules() -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention(base_ixn(Meta={"k": "v"}), op="upsert")
    assert exc.value.message == "Meta must not be specified"
    with pytest.raises(InvalidInput) as exc:
        validate_legacy_intention(base_ixn(Meta={"k": "v"}), op="upsert", existing_entry=entry(Meta={"k": "w"}))
    assert exc.value.message == "Meta must not be specified, or should be unchanged during an update."
    validate_legacy_intention(base_ixn(Meta={"k": "v"}), op="upsert", existing_entry=entry(Meta={"k": "v"}))


def test_legacy_api_refused_on_config_entry_managed_destination() -> None:
    check_legacy_apply_allowed(None)
    check_legacy_apply_allowed(entry(legacy_source()))
    with pytest.raises(InvalidInput) as exc:
        check_legacy_apply_allowed(entry(legacy_source(), {"Name": "db", "Action": "allow"}))
    assert exc.value.message == (
        'cannot use legacy intention API to edit intentions with a destination of "api" '
        "after editing them via a service-intentions config entry"
    )


def test_go_quote() -> None:
    assert go_quote('a"b\\c\td') == '"a\\"b\\\\c\\td"'
    assert go_quote("é\x7f") == '"é\\x7f"'


# ---------------------------------------------------------------------------
# conversion


def test_entry_to_intentions_matches_consul_json() -> None:
    stored = prepare_service_intentions(
        entry(
            {"Name": "web", "Action": "allow", "Description": "front"},
            l7(http_perm(PathPrefix="/v1", Methods=["get"], PathExact=""), Name="worker"),
            Meta={"owner": "team"},
        )
    )
    stored.update(CreateIndex=7, ModifyIndex=9)
    assert entry_to_intentions(stored) == [
        {
            "Description": "front",
            "SourceNS": "default",
            "SourceName": "web",
            "DestinationNS": "default",
            "DestinationName": "api",
            "SourceType": "consul",
            "Action": "allow",
            "Meta": {"owner": "team"},  # entry Meta when there is no LegacyID
            "Precedence": 9,
            "CreateIndex": 7,
            "ModifyIndex": 9,
        },
        {
            "SourceNS": "default",
            "SourceName": "worker",
            "DestinationNS": "default",
            "DestinationName": "api",
            "SourceType": "consul",
            "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["GET"]}}],
            "Meta": {"owner": "team"},
            "Precedence": 9,
            "CreateIndex": 7,
            "ModifyIndex": 9,
        },
    ]


def test_entry_to_intentions_key_order_follows_go() -> None:
    stored = prepare_service_intentions(entry(legacy_source(LegacyMeta={"a": "b"}), JWT={"Providers": [{"Name": "okta"}]}),
                                        legacy=True)
    (ixn,) = entry_to_intentions(stored)
    assert list(ixn) == [
        "CreatedAt", "UpdatedAt", "ID", "SourceNS", "SourceName", "DestinationNS", "DestinationName",
        "SourceType", "Action", "JWT", "Meta", "Precedence", "Hash", "CreateIndex", "ModifyIndex",
    ]
    assert ixn["ID"] == "11111111-2222-3333-4444-555555555555"
    assert ixn["Meta"] == {"a": "b"}  # LegacyMeta wins for legacy sources
    assert ixn["JWT"] == {"Providers": [{"Name": "okta"}]}
    assert ixn["CreatedAt"] == "2024-01-02T03:04:05Z"


def test_partitions_and_peers_in_flattened_form() -> None:
    stored = prepare_service_intentions(
        entry({"Name": "web", "Action": "allow"}, {"Name": "web", "Peer": "dc2", "Action": "deny"}, Partition="p1")
    )
    local, peer = entry_to_intentions(stored)
    assert (local["SourcePartition"], local["DestinationPartition"]) == ("p1", "p1")
    assert peer["SourcePeer"] == "dc2" and "SourcePartition" not in peer
    default = entry_to_intentions(prepare_service_intentions(entry({"Name": "web", "Action": "allow"})))[0]
    assert "SourcePartition" not in default and "DestinationPartition" not in default  # as CE prints


def test_hash_only_for_legacy_and_follows_set_hash() -> None:
    plain = entry_to_intentions(prepare_service_intentions(entry({"Name": "web", "Action": "allow"})))[0]
    assert "Hash" not in plain

    stored = prepare_service_intentions(entry(legacy_source(LegacyMeta={"b": "2", "a": "1"})), legacy=True)
    ixn = entry_to_intentions(stored)[0]
    h = hashlib.blake2b(digest_size=32)
    for part in ("11111111-2222-3333-4444-555555555555", "", "default", "web", "default", "api", "consul", "allow"):
        h.update(part.encode())
    h.update(struct.pack("<Q", 9))
    for part in ("a", "1", "b", "2"):
        h.update(part.encode())
    assert ixn["Hash"] == base64.b64encode(h.digest()).decode()


def test_go_time_json() -> None:
    assert go_time_json(None) is None
    assert go_time_json("0001-01-01T00:00:00Z") is None
    assert go_time_json(datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)) == "2024-01-02T03:04:05.12Z"
    assert go_time_json(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05Z"


def test_permission_json_applies_omitempty() -> None:
    perm = {"Action": "deny", "HTTP": {"PathExact": "", "PathRegex": "^/x$", "Methods": [],
                                       "Header": [{"Name": "h", "Present": True, "Exact": "", "Invert": False}]}}
    assert permission_json(perm) == {"Action": "deny", "HTTP": {"PathRegex": "^/x$", "Header": [{"Name": "h", "Present": True}]}}


def test_round_trip_entry_intentions_sources() -> None:
    original = prepare_service_intentions(
        entry(
            {"Name": "web", "Action": "allow", "Description": "d"},
            {"Name": "*", "Action": "deny"},
            {"Name": "web", "Peer": "dc2", "Action": "allow"},
            l7(http_perm(PathPrefix="/v1", Methods=["GET"]),
               {"Action": "deny", "HTTP": {"Header": [{"Name": "x", "Regex": "^a$", "Invert": True}]}}, Name="worker"),
            Namespace="team",
        )
    )
    rebuilt: dict[str, Any] | None = None
    for ixn in entry_to_intentions(original):
        rebuilt = upsert_source(rebuilt, ixn["DestinationName"], ixn["DestinationNS"], "default",
                                intention_to_source(ixn, legacy=False))
    assert prepare_service_intentions(rebuilt)["Sources"] == original["Sources"]


def test_legacy_round_trip_keeps_id_meta_and_times() -> None:
    original = prepare_service_intentions(entry(legacy_source(LegacyMeta={"k": "v"}, Description="d")), legacy=True)
    (ixn,) = entry_to_intentions(original)
    src = intention_to_source(ixn)
    assert src == {
        "Name": "web", "Namespace": "default", "Action": "allow", "Type": "consul", "Description": "d",
        "LegacyID": "11111111-2222-3333-4444-555555555555", "LegacyMeta": {"k": "v"},
        "LegacyCreateTime": "2024-01-02T03:04:05Z", "LegacyUpdateTime": "2024-01-02T03:04:05Z",
    }
    rebuilt = prepare_service_intentions(upsert_source(None, "api", "default", "default", src), legacy=True)
    assert rebuilt["Sources"] == original["Sources"]


def test_legacy_intention_to_source_drops_permissions() -> None:
    ixn = normalize_legacy_intention(base_ixn(Permissions=[http_perm(PathExact="/")]))
    assert "Permissions" not in intention_to_source(ixn)
    assert intention_to_source(ixn, legacy=False)["Permissions"] == [http_perm(PathExact="/")]
    assert "LegacyMeta" not in intention_to_source(ixn, legacy=False)


def test_intention_sort_key_orders_by_precedence_then_names() -> None:
    ixns = [
        {"Precedence": 8, "SourceNS": "default", "SourceName": "*", "DestinationNS": "default", "DestinationName": "a"},
        {"Precedence": 9, "SourceNS": "default", "SourceName": "web", "DestinationNS": "default", "DestinationName": "b"},
        {"Precedence": 9, "SourceNS": "default", "SourceName": "api", "DestinationNS": "default", "DestinationName": "b"},
    ]
    assert [i["SourceName"] for i in sorted(ixns, key=intention_sort_key)] == ["api", "web", "*"]


# ---------------------------------------------------------------------------
# editing sources


def test_source_key_defaults() -> None:
    assert source_key({"Name": "web"}) == ("", "", "default", "default", "web")
    assert source_key({"Name": "web"}, "team", "p1") == ("", "", "p1", "team", "web")
    assert source_key({"Name": "web"}, "*", "p1") == ("", "", "p1", "default", "web")
    assert source_key({"Name": "web", "Peer": "dc2"}, "team", "p1") == ("dc2", "", "", "default", "web")


def test_upsert_creates_entry() -> None:
    src = {"Name": "web", "Action": "allow"}
    out = upsert_source(None, "api", "", "", src)
    assert out == {"Kind": "service-intentions", "Name": "api", "Namespace": "default", "Partition": "default",
                   "Sources": [src]}
    assert out["Sources"][0] is not src


def test_upsert_replaces_in_place_and_appends() -> None:
    stored = prepare_service_intentions(
        entry({"Name": "web", "Action": "allow"}, {"Name": "db", "Action": "allow"},
              {"Name": "web", "Peer": "dc2", "Action": "allow"}, Namespace="team")
    )
    before = copy.deepcopy(stored)
    out = upsert_source(stored, "api", "team", "default", {"Name": "db", "Action": "deny"})
    assert [(s["Name"], s.get("Peer"), s["Action"]) for s in out["Sources"]] == [
        ("web", None, "allow"), ("db", None, "deny"), ("web", "dc2", "allow")
    ]
    out = upsert_source(out, "api", "team", "default", {"Name": "cache", "Action": "deny"})
    assert [s["Name"] for s in out["Sources"]] == ["web", "db", "web", "cache"]
    assert stored == before


def test_remove_source() -> None:
    stored = prepare_service_intentions(
        entry({"Name": "web", "Action": "allow"}, {"Name": "web", "Peer": "dc2", "Action": "allow"})
    )
    out = remove_source(stored, source_key({"Name": "web"}))
    assert out is not None
    assert [(s["Name"], s.get("Peer")) for s in out["Sources"]] == [("web", "dc2")]
    assert len(stored["Sources"]) == 2
    assert remove_source(stored, ("", "", "default", "default", "nope")) == stored
    assert remove_source(out, source_key({"Name": "web", "Peer": "dc2"})) is None


# ---------------------------------------------------------------------------
# incremental preparation (PreparedSources): same entry, same first error


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except InvalidInput as exc:
        return "error", exc.message


def test_prepared_sources_give_the_same_entry_and_the_same_first_error() -> None:
    """Random read-modify-writes of one entry, as the intentions API makes them: preparing
    with the memo (sources of the last prepared entry are not re-checked one by one) must give
    exactly what a full normalize + validate gives, including which error comes first and the
    Sources[i] it names."""
    import random

    from gateway.configentries.service import prepare
    from gateway.intentions.validate import PreparedSources

    rng = random.Random(20240611)
    names = [f"s{i}" for i in range(12)] + ["*"]
    bad_sources: list[dict[str, Any]] = [
        {"Name": "we*b", "Action": "allow"},
        {"Name": "x", "Action": "maybe"},
        {"Name": "x", "Action": "allow", "SamenessGroup": "sg"},
        {"Name": "x", "Action": "allow", "Peer": "p*"},
        {"Name": "x", "Action": "allow", "Description": "d" * 600},
        {"Name": "x", "Action": "allow", "LegacyMeta": {"k": "v"}},
        {"Name": "", "Action": "allow"},
        {"Name": "x", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "no-slash"}}]},
        {"Name": "x", "Action": "allow", "Type": "other"},
    ]

    def random_source() -> dict[str, Any]:
        roll = rng.random()
        if roll < 0.15:
            return copy.deepcopy(rng.choice(bad_sources))
        src: dict[str, Any] = {"Name": rng.choice(names)}
        if rng.random() < 0.3:
            src["Namespace"] = rng.choice(["", "default", "ns1", "*"])
        if rng.random() < 0.1:
            src["Peer"] = "peer1"
        if rng.random() < 0.2:
            src["Permissions"] = [{"Action": "deny", "HTTP": {"PathPrefix": "/a", "Methods": ["get", "POST"]}}]
        else:
            src["Action"] = rng.choice(["allow", "deny"])
        return src

    memo = PreparedSources()
    for dest in ("db", "*"):
        stored: dict[str, Any] | None = None
        for step in range(300):
            if stored is None or rng.random() < 0.6:
                candidate = upsert_source(stored, dest, "default", "default", random_source())
            elif rng.random() < 0.5 and stored.get("Sources"):  # a stored source twice
                twin = rng.choice(stored["Sources"])
                if rng.random() < 0.7:  # spelled differently, else the very same object
                    twin = dict(twin)
                    twin.pop("Precedence", None)
                    if twin.get("Namespace") == "default" and rng.random() < 0.5:
                        del twin["Namespace"]
                sources = list(stored["Sources"])
                sources.insert(rng.randrange(len(sources) + 1), twin)
                candidate = {**stored, "Sources": sources}
            else:
                candidate = remove_source(stored, source_key(rng.choice(stored["Sources"]), "default", "default")) or stored
            with_memo = _outcome(lambda: prepare(candidate, canonical=True, memo=memo))
            without = _outcome(lambda: prepare(copy.deepcopy(candidate), canonical=True))
            assert with_memo == without, (dest, step)
            if with_memo[0] == "ok":
                stored = with_memo[1]


def test_prepared_sources_are_per_destination_and_flag() -> None:
    """A source prepared for one destination or flag is checked in full for another."""
    from gateway.configentries.service import prepare
    from gateway.intentions.validate import PreparedSources

    memo = PreparedSources()
    l7 = {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}
    stored = prepare({"Kind": "service-intentions", "Name": "db", "Sources": [l7]}, canonical=True, memo=memo)
    # the same (already prepared) source object under a wildcard destination is refused
    wild = {"Kind": "service-intentions", "Name": "*", "Sources": list(stored["Sources"])}
    with pytest.raises(InvalidInput, match="cannot be specified on intentions with wildcarded destinations"):
        prepare(wild, canonical=True, memo=memo)
    # and under the legacy flag its missing LegacyID is still reported
    with pytest.raises(InvalidInput, match="LegacyCreateTime must be set"):
        prepare({**stored}, legacy=True, canonical=True, memo=memo)
    memo.forget(("service-intentions", "default", "default", "db"))
    assert memo.get(("db", "default", "default", False)) == {}
