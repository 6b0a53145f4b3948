"""ACL rule parsing and authorization, checked against Consul's documented/implemented behaviour."""

from __future__ import annotations

import pytest

from gateway.acl.authorizer import ANONYMOUS_TOKEN_ID, Authorizer, permission_denied_message
from gateway.acl.rules import NamedRule, Rules, ServiceRule, parse_rules
from gateway.errors import InvalidInput

PREFIX = "Failed to parse ACL rules: "


def authz(*texts: str, default_allow: bool = False) -> Authorizer:
    return Authorizer.from_rules([parse_rules(t) for t in texts], default_allow=default_allow)


# -- parsing ---------------------------------------------------------------------------

HCL = """
service "web" { policy = "write" intentions = "read" }
service_prefix "" { policy = "read" }
node "n1" { policy = "write" }
node_prefix "" { policy = "read" }
agent "a1" { policy = "read" }
agent_prefix "" { policy = "deny" }
key "cfg/x" { policy = "write" }
key_prefix "cfg/" { policy = "list" }
mesh = "write"
operator = "read"
acl = "read"
peering = "deny"
"""

JSON = """
{
  "service": {"web": {"policy": "write", "intentions": "read"}},
  "service_prefix": {"": {"policy": "read"}},
  "node": {"n1": {"policy": "write"}},
  "node_prefix": {"": {"policy": "read"}},
  "agent": {"a1": {"policy": "read"}},
  "agent_prefix": {"": {"policy": "deny"}},
  "key": {"cfg/x": {"policy": "write"}},
  "key_prefix": {"cfg/": {"policy": "list"}},
  "mesh": "write",
  "operator": "read",
  "acl": "read",
  "peering": "deny"
}
"""


def test_hcl_and_json_forms_parse_to_equal_rules():
    from_hcl = parse_rules(HCL)
    assert from_hcl == parse_rules(JSON)
    assert from_hcl.services == (ServiceRule("web", "write", "read"),)
    assert from_hcl.service_prefixes == (ServiceRule("", "read", ""),)
    assert from_hcl.key_prefixes == (NamedRule("cfg/", "list"),)
    assert (from_hcl.mesh, from_hcl.operator, from_hcl.acl, from_hcl.peering) == ("write", "read", "read", "deny")


def test_every_repeated_block_is_kept_in_source_order():
    hcl = 'service "a" { policy = "read" }\nservice "b" { policy = "write" }\nservice "a" { policy = "deny" }'
    expected = (ServiceRule("a", "read"), ServiceRule("b", "write"), ServiceRule("a", "deny"))
    assert parse_rules(hcl).services == expected
    # JSON can carry the same repeats as a list of objects or a list of bodies per label.
    as_list = '{"service": [{"a": {"policy": "read"}}, {"b": {"policy": "write"}}, {"a": {"policy": "deny"}}]}'
    assert parse_rules(as_list).services == expected
    per_label = '{"service": {"a": [{"policy": "read"}, {"policy": "deny"}]}}'
    assert parse_rules(per_label).services == (ServiceRule("a", "read"), ServiceRule("a", "deny"))


def test_repeated_block_with_deny_first_still_denies():
    # Stock pyhcl would keep only the last block ("read") and silently grant access.
    a = authz('service "db" { policy = "deny" }\nservice "db" { policy = "read" }', default_allow=True)
    assert not a.service_read("db")


@pytest.mark.parametrize("text", ["", "   \n\t", "# just a comment\n", "{}"])
def test_empty_rules_are_valid_and_grant_nothing(text):
    assert parse_rules(text) == Rules()


def test_keys_are_case_insensitive_and_values_normalised():
    rules = parse_rules('Service "Web" { Policy = "WRITE" }\nOperator = "Read"')
    assert rules.services == (ServiceRule("Web", "write"),)  # labels keep their case
    assert rules.operator == "read"
    a = Authorizer.from_rules([rules], default_allow=False)
    assert a.intentions_read("Web")  # derived from policy, so the case of "WRITE" must not matter
    assert not a.service_read("web")


# -- invalid input ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('service "foo" { policy = "nope" }',
         'Invalid service policy: &acl.ServiceRule{Name:"foo", Policy:"nope", Intentions:"", '
         "EnterpriseRule:acl.EnterpriseRule{}}"),
        ('service_prefix "" { policy = "read" intentions = "list" }', "Invalid service_prefix intentions policy: "),
        ('service "a" { intentions = "write" }', "Invalid service policy: "),  # policy is mandatory
        ('service "a" {}', "Invalid service policy: "),
        ('node "n" { policy = "list" }', "Invalid node policy: "),  # list exists for keys only
        ('agent_prefix "" { policy = "own" }', 'Invalid agent_prefix policy: &acl.AgentRule{Node:"", Policy:"own"}'),
        ('key "k" { policy = "admin" }', "Invalid key policy: "),
        ('acl = "list"', 'Invalid acl policy: "list"'),
        ('mesh = "nope"', 'Invalid mesh policy: "nope"'),
        ('operator = "yes"', 'Invalid operator policy: "yes"'),
        ('peering = "nope"', 'Invalid peering policy: "nope"'),
        ('{"mesh": "nope"}', 'Invalid mesh policy: "nope"'),
        ('{"service": {"web": {"policy": true}}}', "Invalid service policy: "),
        ('servce "web" { policy = "read" }', 'Unknown key "servce"'),
        ('service "web" { policy = "read" intention = "write" }', 'Unknown key "intention" in service "web"'),
        ('service "a" { policy = "read" policy = "write" }', 'The argument "policy" was already set.'),
        ('operator = "read"\noperator = "write"', 'The argument "operator" was already set.'),
        ('service { policy = "read" }', "service: expected a block"),
        ('service "a" { policy = ["read"] }', 'service "a": policy: expected a string'),
    ],
)
def test_invalid_rules_raise_invalid_input(text, reason):
    with pytest.raises(InvalidInput) as info:
        parse_rules(text)
    assert info.value.message.startswith(PREFIX + reason)
    assert info.value.status_code == 400


@pytest.mark.parametrize("text", ["garbage text !!", "this is not hcl", 'service "a" {', '{"service": ', "= = ="])
def test_garbage_text_raises_invalid_input(text):
    with pytest.raises(InvalidInput) as info:
        parse_rules(text)
    assert info.value.message.startswith(PREFIX)
    assert len(info.value.message) > len(PREFIX)


def test_parser_recovers_after_a_syntax_error():
    with pytest.raises(InvalidInput):
        parse_rules('service "a" {')
    assert parse_rules('service "a" { policy = "read" }').services == (ServiceRule("a", "read"),)


# -- matching ----------------------------------------------------------------------------

def test_exact_rule_beats_any_prefix_rule():
    a = authz('service "web" { policy = "deny" }\nservice_prefix "we" { policy = "write" }')
    assert not a.service_read("web")
    assert a.service_write("webby")  # only the exact name is affected
    b = authz('service "web" { policy = "read" }\nservice_prefix "web" { policy = "deny" }')
    assert b.service_read("web")
    assert not b.service_write("web")
    assert not b.service_read("web-2")


def test_longest_matching_prefix_wins():
    a = authz(
        'service_prefix "" { policy = "write" }\n'
        'service_prefix "api" { policy = "deny" }\n'
        'service_prefix "api-public" { policy = "read" }'
    )
    assert a.service_write("billing")  # only "" matches
    assert not a.service_read("api-internal")  # "api" is longer than ""
    assert a.service_read("api-public-v2")  # "api-public" is longer still
    assert not a.service_write("api-public-v2")  # ...and grants read only, not "" 's write
    assert a.service_write("ap")  # "api" is longer than the name, so only "" matches


def test_default_applies_only_when_nothing_matches():
    rules = 'service "web" { policy = "read" }\nnode_prefix "edge-" { policy = "write" }'
    allow, deny = authz(rules, default_allow=True), authz(rules, default_allow=False)
    assert allow.service_write("db") and not deny.service_write("db")
    assert allow.node_read("core-1") and not deny.node_read("core-1")
    assert not allow.service_write("web")  # the matching read rule wins over default allow
    assert deny.node_write("edge-7")
    assert allow.key_write("any/key") and not deny.key_read("any/key")
    assert allow.operator_write() and not deny.operator_read()


def test_write_implies_read_but_read_does_not_imply_write():
    a = authz('node "n1" { policy = "write" }\nagent "a1" { policy = "read" }')
    assert a.node_read("n1") and a.node_write("n1")
    assert a.agent_read("a1") and not a.agent_write("a1")


def test_key_list_is_between_read_and_write():
    a = authz('key_prefix "app/" { policy = "list" }\nkey_prefix "ro/" { policy = "read" }\nkey "app/secret" { policy = "deny" }')
    assert a.key_list("app/x") and a.key_read("app/x") and not a.key_write("app/x")
    assert a.key_read("ro/x") and not a.key_list("ro/x")
    assert not a.key_read("app/secret")


# -- static authorizers --------------------------------------------------------------------

def test_static_authorizers():
    m, allow, deny = Authorizer.management(), Authorizer.allow_all(), Authorizer.deny_all()
    for name in ("service_write", "intentions_write", "node_write", "agent_write", "key_write"):
        assert getattr(m, name)("x") and getattr(allow, name)("x") and not getattr(deny, name)("x")
    for name in ("mesh_write", "operator_write", "peering_write"):
        assert getattr(m, name)() and getattr(allow, name)() and not getattr(deny, name)()
    assert m.acl_write() and m.acl_read()
    # Consul's allow-all default never grants ACL management.
    assert not allow.acl_read() and not allow.acl_write()
    assert not authz("", default_allow=True).acl_read()


def test_explicit_acl_rule():
    a = authz('acl = "read"')
    assert a.acl_read() and not a.acl_write()
    assert not authz('acl = "deny"', default_allow=True).acl_read()


# -- merging --------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [0, 1])
def test_deny_beats_write_when_merging_policies(order):
    texts = ['service "web" { policy = "write" }', 'service "web" { policy = "deny" }']
    if order:
        texts.reverse()
    a = authz(*texts, default_allow=True)
    assert not a.service_read("web") and not a.service_write("web")


def test_write_beats_read_when_merging_policies():
    a = authz('service_prefix "api" { policy = "read" }', 'service_prefix "api" { policy = "write" }')
    assert a.service_write("api-1")
    k = authz('key "k" { policy = "read" }', 'key "k" { policy = "list" }', 'key "k" { policy = "write" }')
    assert k.key_write("k")


def test_exact_and_prefix_rules_are_merged_separately():
    a = authz('service "web" { policy = "write" }', 'service_prefix "web" { policy = "deny" }')
    assert a.service_write("web")  # the prefix deny does not erase the exact grant
    assert not a.service_read("web2")


def test_scalars_merge_with_deny_first():
    a = authz('operator = "write"', 'operator = "deny"', 'mesh = "read"', 'mesh = "write"')
    assert not a.operator_read()
    assert a.mesh_write()


# -- intentions ----------------------------------------------------------------------------

def test_service_read_or_write_implies_intentions_read_only():
    a = authz('service "web" { policy = "read" }\nservice "api" { policy = "write" }')
    assert a.intentions_read("web") and a.intentions_read("api")
    assert not a.intentions_write("api")


def test_service_deny_denies_intentions_even_with_default_allow():
    a = authz('service_prefix "" { policy = "deny" }', default_allow=True)
    assert not a.intentions_read("web") and not a.intentions_write("web")
    b = authz('service "other" { policy = "read" }', default_allow=True)
    assert b.intentions_write("web")  # no rule matches "web": the default decides


def test_explicit_intentions_write_on_empty_service_prefix():
    a = authz('service_prefix "" { policy = "read" intentions = "write" }')
    assert a.intentions_write("web") and a.intentions_write("anything-else")
    assert a.intentions_read("db")
    assert not a.service_write("web")  # intentions grant nothing on the service itself


def test_explicit_intentions_can_be_narrower_than_policy():
    a = authz('service "web" { policy = "write" intentions = "deny" }', default_allow=True)
    assert a.service_write("web")
    assert not a.intentions_read("web")


def test_intentions_merge_independently_of_policy():
    a = authz('service "web" { policy = "write" }', 'service "web" { policy = "read" intentions = "write" }')
    assert a.service_write("web")
    assert a.intentions_write("web")
    b = authz('service "web" { policy = "deny" }', 'service "web" { policy = "read" intentions = "read" }')
    assert not b.service_read("web")
    assert b.intentions_read("web")  # Consul keeps the explicit intentions of the other policy


def test_wildcard_intention_destination():
    some = authz('service "web" { policy = "read" }\nservice "db" { policy = "write" intentions = "write" }')
    assert some.intentions_read("*")  # any rule granting read is enough
    assert not some.intentions_write("*")  # write on "*" needs the "" prefix to grant it
    everything = authz('service_prefix "" { policy = "write" intentions = "write" }')
    assert everything.intentions_write("*")
    holes = authz('service_prefix "" { policy = "write" intentions = "write" }\nservice "db" { policy = "read" }')
    assert not holes.intentions_write("*")  # "db" only derives intentions:read
    assert authz("", default_allow=True).intentions_write("*")
    assert not authz("", default_allow=False).intentions_read("*")


# -- mesh / peering fall back to operator -----------------------------------------------------

def test_mesh_and_peering_fall_back_to_operator():
    op_write = authz('operator = "write"')
    assert op_write.mesh_write() and op_write.peering_write()
    for default_allow in (False, True):  # read must come from operator, the refusal of write too
        op_read = authz('operator = "read"', default_allow=default_allow)
        assert op_read.mesh_read() and not op_read.mesh_write()
        assert op_read.peering_read() and not op_read.peering_write()


def test_explicit_mesh_overrides_operator():
    a = authz('operator = "write"\nmesh = "read"\npeering = "deny"')
    assert a.mesh_read() and not a.mesh_write()
    assert not a.peering_read()
    assert a.operator_write()
    b = authz('operator = "deny"\nmesh = "write"')
    assert b.mesh_write() and not b.operator_read()


def test_mesh_without_mesh_or_operator_uses_default():
    assert authz('service "x" { policy = "read" }', default_allow=True).mesh_write()
    assert not authz('service "x" { policy = "read" }', default_allow=False).mesh_read()


# -- error text ---------------------------------------------------------------------------------

def test_permission_denied_messages():
    assert permission_denied_message("a1b2", "service:write", "web") == (
        "Permission denied: token with AccessorID 'a1b2' lacks permission 'service:write' on \"web\""
    )
    assert permission_denied_message("a1b2", "operator:write", None) == (
        "Permission denied: token with AccessorID 'a1b2' lacks permission 'operator:write'"
    )
    assert permission_denied_message(ANONYMOUS_TOKEN_ID, "intention:read", "db") == (
        "Permission denied: anonymous token lacks permission 'intention:read' on \"db\". "
        "The anonymous token is used implicitly when a request does not specify a token."
    )
