"""Consul `?filter=` expressions behave like go-bexpr: grammar, coercion, missing fields, errors."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.filter import ERROR_PREFIX, compile_filter
from gateway.errors import InvalidInput

SERVICE: dict[str, Any] = {
    "ID": "web-1",
    "Service": "web",
    "Tags": ["v1", "primary", "canary"],
    "Meta": {"env": "prod", "team": "edge", "my-key": "dashed", "empty": ""},
    "Port": 8080,
    "EnableTagOverride": False,
    "Connect": True,
    "Weights": {"Passing": 1.5, "Warning": 1},
    "Address": "",
    "Namespace": None,
    "Checks": [{"Name": "http", "Status": "passing"}, {"Name": "tcp", "Status": "critical"}],
    "Path": "/api/v1",
    "Ports": [80, 443],
}


def matches(expression: str, item: Any = SERVICE) -> bool:
    return compile_filter(expression)(item)


def error_of(expression: str, allowed: frozenset[str] | None = None) -> str:
    with pytest.raises(InvalidInput) as exc:
        compile_filter(expression, allowed)
    assert exc.value.status_code == 400
    return exc.value.message


# ------------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Service == web", True),
        ('Service == "web"', True),
        ("Service == `web`", True),
        ("Service==web", True),
        ("Service == api", False),
        ("Service != api", True),
        ("Service != web", False),
        ('ID == "web-1"', True),
        ('Path == "/api/v1"', True),
        ("Address == ``", True),
    ],
)
def test_string_equality(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Port == 8080", True),
        ('Port == "8080"', True),
        ("Port == 80", False),
        ("Port != 80", True),
        ("Port == 8080.0", False),  # ParseInt rejects a float spelling
        ("Port == abc", False),
        ("Port != abc", True),
        ('Port == "0x1F90"', True),  # strconv.ParseInt base 0
        ('Port == "017620"', True),  # a leading 0 is octal in Go
        ('Port == " 8080"', False),
        ("Weights.Passing == 1.5", True),
        ("Weights.Passing == 1.50", True),
        ("Weights.Warning == 1", True),
    ],
)
def test_numbers_are_coerced_to_the_field_type(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Connect == true", True),
        ("Connect == True", True),
        ('Connect == "true"', True),
        ("Connect == 1", True),
        ("Connect == false", False),
        ("Connect != false", True),
        ("EnableTagOverride == false", True),
        ("EnableTagOverride == 0", True),
        ("EnableTagOverride == yes", False),
    ],
)
def test_bools_are_coerced_like_strconv_parsebool(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


def test_bool_field_is_not_confused_with_int() -> None:
    """Python bools are ints; `Connect == 2` must not match just because True == 1."""
    assert not matches("Connect == 2")
    assert not matches("Port == true", {"Port": 1})


def test_negative_numbers() -> None:
    assert matches("Offset == -5", {"Offset": -5})
    assert matches("Offset == -0.5", {"Offset": -0.5})


# ------------------------------------------------------------------- in / contains


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("v1 in Tags", True),
        ('"primary" in Tags', True),
        ("`canary` in Tags", True),
        ("v2 in Tags", False),
        ("v2 not in Tags", True),
        ("v1 not in Tags", False),
        ("Tags contains v1", True),
        ('Tags contains "prim"', False),  # lists compare whole elements
        ("Tags not contains v2", True),
        ("Tags not contains canary", False),
        ("443 in Ports", True),
        ("Ports contains 80", True),
        ("Ports contains 81", False),
    ],
)
def test_list_membership_is_element_equality(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("env in Meta", True),
        ("Meta contains team", True),
        ("prod in Meta", False),  # keys, not values
        ('"my-key" in Meta', True),
        ("owner not in Meta", True),
        ("Meta not contains env", False),
    ],
)
def test_map_membership_is_key_presence(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Service contains eb", True),
        ('"we" in Service', True),
        ("Service contains xyz", False),
        ("Service not contains xyz", True),
        ('Path contains "/v1"', True),
    ],
)
def test_string_membership_is_substring(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


def test_membership_on_scalars_never_matches() -> None:
    assert not matches("8 in Port")
    assert matches("8 not in Port")


def test_mixed_list_skips_elements_that_do_not_coerce() -> None:
    item = {"Values": ["a", 1, True, None, {"k": 1}]}
    assert matches("a in Values", item)
    assert matches("1 in Values", item)
    assert matches("true in Values", item)
    assert not matches("k in Values", item)


# ------------------------------------------------------------------------ emptiness


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Address is empty", True),
        ("Service is empty", False),
        ("Service is not empty", True),
        ("Tags is not empty", True),
        ("Meta is empty", False),
        ("Meta.empty is empty", True),
        ("Namespace is empty", True),  # JSON null
        ("Missing is empty", True),
        ("Missing is not empty", False),
        ("Meta.nope is empty", True),
    ],
)
def test_is_empty(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


def test_is_empty_on_empty_collections() -> None:
    assert matches("Tags is empty and Meta is empty", {"Tags": [], "Meta": {}})


# -------------------------------------------------------------------------- matches


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('Service matches "^w"', True),
        ('Service matches "eb"', True),  # search, not fullmatch: Go's MatchString
        ('Service matches "^eb"', False),
        ("Service matches `^w.b$`", True),
        ('Service not matches "^api"', True),
        ('Service not matches "web"', False),
        ('Meta.env matches "^(prod|staging)$"', True),
        (r'ID matches "^web-\\d+$"', True),
        (r"ID matches `^web-\d+$`", True),
        ('Port matches "80"', False),  # only strings match
        ('Missing matches ".*"', False),
    ],
)
def test_matches_uses_regex_search(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


def test_invalid_regex_is_rejected_at_compile_time() -> None:
    message = error_of('Service matches "(unclosed"')
    assert message.startswith(ERROR_PREFIX + 'Failed to compile regular expression "(unclosed"')


# ------------------------------------------------------------------------ selectors


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Meta.env == prod", True),
        ("Meta.env == dev", False),
        ('Meta["env"] == prod', True),
        ('Meta[ "my-key" ] == dashed', True),
        ("Meta[`my-key`] == dashed", True),
        ("Checks.0.Name == http", True),
        ("Checks.1.Status == critical", True),
        ('Checks.1["Status"] == critical', True),
        ("Tags.2 == canary", True),
        ("Tags.9 == canary", False),
        ('"/Meta/env" == prod', True),
        ('"/Checks/1/Name" == tcp', True),
        ('edge in "/Meta/team"', True),
    ],
)
def test_selectors(expression: str, expected: bool) -> None:
    assert matches(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Meta.owner == alice", False),
        ("Meta.owner != alice", True),
        ("Nope == x", False),
        ("Nope != x", True),
        ("Service.Name == web", False),  # a string has no fields
        ("Tags.x == v1", False),
        ("Namespace.Name == default", False),
        ("x in Nope", False),
        ("x not in Nope", True),
        ("Nope contains x", False),
    ],
)
def test_missing_fields_never_match_and_never_raise(expression: str, expected: bool) -> None:
    """Negated operators stay the exact negation, so `a != b` is always `not a == b`."""
    assert matches(expression) is expected
    assert matches(expression, {}) is expected
    assert matches(expression, None) is expected


def test_non_dict_items_are_safe() -> None:
    predicate = compile_filter("Meta.env == prod")
    for item in ([1, 2], "text", 3, True, None):
        assert predicate(item) is False


# ------------------------------------------------------------------- logic & grouping


def test_and_or_not() -> None:
    assert matches("Service == web and Port == 8080")
    assert not matches("Service == web and Port == 1")
    assert matches("Service == api or Port == 8080")
    assert not matches("Service == api or Port == 1")
    assert matches("not Service == api")
    assert not matches("not Service == web")
    assert matches("not not Service == web")


def test_precedence_and_binds_tighter_than_or() -> None:
    # true or (false and false) = true; (true or false) and false would be false
    assert matches("Service == web or Port == 1 and Meta.env == dev")
    # (false and true) or true
    assert matches("Service == api and Port == 8080 or Meta.env == prod")
    assert not matches("Service == api and (Port == 8080 or Meta.env == prod)")


def test_precedence_not_binds_tighter_than_and() -> None:
    # (not false) and true
    assert matches("not Service == api and Port == 8080")
    # not (true and false) would be true; (not true) and false is false
    assert not matches("not Service == web and Port == 1")
    assert matches("not (Service == web and Port == 1)")


def test_parentheses() -> None:
    assert matches("(Service == web)")
    assert matches("((Service == web))")
    assert matches("( Service == web or Service == api ) and (v1 in Tags)")
    assert not matches("(Service == web or Service == api) and (v9 in Tags)")
    assert matches("not (Service == api or Port == 1)")
    assert matches("not(Service == api)")


def test_whitespace_is_flexible() -> None:
    assert matches("  Service == web\n and\tPort == 8080  ")
    assert matches("Meta.env==prod and Port!=80")


def test_keywords_need_word_boundaries() -> None:
    """`notes`, `order` and `index` are selectors, not `not`/`or`/`in` keywords."""
    item = {"notes": "x", "order": "y", "index": ["z"], "android": "q"}
    assert matches("notes == x and order == y", item)
    assert matches("z in index", item)
    assert matches("android == q", item)


def test_many_clauses_chain() -> None:
    expression = " or ".join(f"Port == {n}" for n in range(200)) + " or Port == 8080"
    assert matches(expression)


# -------------------------------------------------------------------- string literals


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r'"tab\tnew\nline"', "tab\tnew\nline"),
        (r'"back\\slash"', "back\\slash"),
        (r'"\x41\u00e9\U0001F600"', "Aé\U0001f600"),
        (r'"\xc3\xa9"', "é"),  # \x escapes are bytes, as in Go
        (r'"\101"', "A"),
        (r"`raw \n stays`", "raw \\n stays"),
        ('"unicode é ✓"', "unicode é ✓"),
        ('"and or not in"', "and or not in"),
        ('""', ""),
    ],
)
def test_string_escapes(literal: str, value: str) -> None:
    assert compile_filter(f"Field == {literal}")({"Field": value})


def test_bare_word_values_may_be_dotted_or_slashed() -> None:
    """go-bexpr identifiers start with a letter and may contain `/`; a leading `/` needs quotes."""
    assert matches("Version == v1.2", {"Version": "v1.2"})
    assert matches("Path == api/v1", {"Path": "api/v1"})
    assert "expected: a value" in error_of("Path == /api/v1")


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "expected: an expression"),
        ("   ", "expected: an expression"),
        ("Service", "expected: an operator"),
        ("Service ==", "expected: a value"),
        ("Service = web", "expected: an operator"),
        ("Service === web", "expected: a value"),
        ("(Service == web", "Unmatched parentheses"),
        ("((Service == web)", "Unmatched parentheses"),
        ("Service == web)", "Unmatched parentheses"),
        ("Service == web Port == 1", 'expected: "and", "or" or end of input'),
        ("Service == web and", "expected: a selector"),
        ("or Service == web", "expected: an operator"),
        ("not", "expected: a selector"),
        ('Service == "abc', "Unterminated string literal"),
        ("Service == `abc", "Unterminated string literal"),
        (r'Service == "a\q"', "invalid escape sequence"),
        (r'Service == "\x4"', "invalid escape sequence"),
        ("Port == 80a", "Invalid number literal"),
        ("Port == 007", "Invalid number literal"),
        ("Port == 1.", "Invalid number literal"),
        ('"x" in "y"', "Invalid selector"),
        ("x in 5", "Invalid selector"),
        ('"web" == Service', "Invalid selector"),
        ("5 == Port", "Invalid selector"),
        ("Meta. == x", "Invalid selector"),
        ("Meta[env] == x", "Invalid index"),
        ('Meta["env" == x', "Unclosed index expression"),
        ("Service is", "expected: whitespace"),
        ("Service is full", 'expected: "empty"'),
        ("Service is not", "expected: whitespace"),
        ("Service not == web", "expected: an operator"),
        ("Service == web and ()", "expected: a selector"),
    ],
)
def test_syntax_errors(expression: str, reason: str) -> None:
    message = error_of(expression)
    assert message.startswith(ERROR_PREFIX)
    assert reason in message


def test_error_prefix_is_consuls() -> None:
    assert ERROR_PREFIX == "Failed to create boolean expression evaluator: "


def test_error_reports_position() -> None:
    assert error_of("Service == web and\nPort = 1") == (
        ERROR_PREFIX + '2:6 (24): unexpected "=", expected: an operator '
        '("==", "!=", "in", "not in", "contains", "not contains", "matches", "not matches", '
        '"is empty", "is not empty")'
    )


# -------------------------------------------------------------------- allowed selectors

INTENTION_FIELDS = frozenset({"Action", "Meta", "SourceName", "DestinationName", "Precedence"})


@pytest.mark.parametrize(
    "expression",
    [
        "SourceName == web",
        "Meta.env == prod",
        'Meta["team"] == edge',
        "prod in Meta",
        "Action == allow and not Precedence == 9",
        '"/Meta/env" == prod',
        "SourceName == Foo",  # bare-word values are not selectors
        "Foo in Meta",
    ],
)
def test_allowed_selectors_accept(expression: str) -> None:
    compile_filter(expression, INTENTION_FIELDS)


@pytest.mark.parametrize(
    ("expression", "shown"),
    [
        ("Foo == 1", "Foo"),
        ("Foo.bar == 1", "Foo.bar"),
        ("SourceName == web or Foo is empty", "Foo"),
        ("x in Tags", "Tags"),
        ('"/Foo/bar" == 1', "/Foo/bar"),
        ("meta.env == prod", "meta.env"),  # case matters, as with Go struct fields
    ],
)
def test_allowed_selectors_reject(expression: str, shown: str) -> None:
    assert error_of(expression, INTENTION_FIELDS) == f'{ERROR_PREFIX}Selector "{shown}" is not valid'


def test_syntax_errors_win_over_selector_errors() -> None:
    assert "Unmatched parentheses" in error_of("(Foo == 1", INTENTION_FIELDS)


def test_no_allowed_set_means_any_selector() -> None:
    assert compile_filter("Anything.at.all == 1")({"Anything": {"at": {"all": 1}}})


# -------------------------------------------------------------------------- reuse


def test_compiled_predicate_is_reusable_across_items() -> None:
    items = [
        {"Service": "web", "Meta": {"env": "prod"}},
        {"Service": "api", "Meta": {"env": "prod"}},
        {"Service": "web", "Meta": {}},
        {"Service": "web"},
    ]
    predicate = compile_filter('Meta.env == prod and Service matches "^w"')
    assert [predicate(item) for item in items] == [True, False, False, False]
    assert compile_filter("Meta.env == prod") is compile_filter("Meta.env == prod")


def test_errors_are_not_cached_as_successes() -> None:
    for _ in range(2):
        error_of("Service ==")
