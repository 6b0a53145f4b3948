"""Consul's `?filter=` boolean expressions (hashicorp/go-bexpr), compiled to Python predicates.

The grammar follows go-bexpr's `grammar.peg`: `or` < `and` < `not` < parentheses < match,
where a match is `<selector> ==|!=|contains|not contains|matches|not matches <value>`,
`<selector> is [not] empty` or `<value> [not] in <selector>`.

Values are raw text coerced to the type of the field they meet, as go-bexpr does: a bool field
compares to `true`/`false`, an int field to a parsed integer, a string field to the text itself.
The expression is parsed once into closures so that filtering a long listing stays cheap.

Evaluation never raises. Where go-bexpr would fail at run time (a missing map key, a value that
does not coerce, `matches` on a non-string) the positive operator is False and its negated twin
(`!=`, `not in`, `not contains`, `not matches`, `is not empty`) is the exact negation, so that
`a != b` always equals `not a == b`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, NoReturn

from gateway.errors import InvalidInput

Predicate = Callable[[Any], bool]

ERROR_PREFIX = "Failed to create boolean expression evaluator: "

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789_/")
_DIGITS = frozenset("0123456789")
_WS = frozenset(" \t\r\n")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_POINTER = re.compile(r'"((?:/[\w\-.~:|]+)*)"')
_GO_OCTAL = re.compile(r"[+-]?0[0-7_]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
}


class _Missing:
    """Sentinel for a selector that names nothing: distinct from a JSON null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


def compile_filter(expression: str, allowed: frozenset[str] | None = None) -> Predicate:
    """Parse `expression` once and return a predicate over one JSON-like item.

    `allowed`, when given, lists the top-level fields an endpoint exposes; a selector starting
    anywhere else is rejected up front, as Consul rejects fields its struct does not have.
    Compiled predicates are pure, so identical requests share one from a small cache.
    """
    return _compile_cached(expression, allowed)


@functools.lru_cache(maxsize=256)
def _compile_cached(expression: str, allowed: frozenset[str] | None) -> Predicate:
    parser = _Parser(expression)
    predicate = parser.parse()
    if allowed is not None:
        for path, shown in parser.selectors:
            if not path or path[0] not in allowed:
                raise InvalidInput(f'{ERROR_PREFIX}Selector "{shown}" is not valid')
    return predicate


# ----------------------------------------------------------------------------- coercion


def _coerce_bool(raw: str) -> bool | None:
    """Go's strconv.ParseBool: the spellings a bool field accepts."""
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    return None


def _coerce_int(raw: str) -> int | None:
    """Go's strconv.ParseInt(raw, 0, 64): decimal, 0x/0o/0b prefixes and leading-0 octal."""
    if not raw or raw != raw.strip():
        return None
    try:
        value = int(raw, 8) if _GO_OCTAL.fullmatch(raw) else int(raw, 0)
    except ValueError:
        return None
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _coerce_float(raw: str) -> float | None:
    """Go's strconv.ParseFloat, close enough: Python's float() minus its whitespace tolerance."""
    if not raw or raw != raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def _equality(raw: str) -> Callable[[Any], bool]:
    """`value == raw`, with raw coerced to the value's type once, at compile time."""
    as_bool, as_int, as_float = _coerce_bool(raw), _coerce_int(raw), _coerce_float(raw)

    def equals(value: Any) -> bool:
        if value.__class__ is str:
            return value == raw
        if isinstance(value, bool):
            return as_bool is not None and value is as_bool
        if isinstance(value, int):
            return as_int is not None and value == as_int
        if isinstance(value, float):
            return as_float is not None and value == as_float
        if isinstance(value, str):
            return value == raw
        return False

    return equals


def _membership(raw: str) -> Callable[[Any], bool]:
    """go-bexpr's `in`: key of a map, equal element of a list, substring of a string."""
    equals = _equality(raw)

    def contains(container: Any) -> bool:
        if isinstance(container, dict):
            return raw in container
        if isinstance(container, list):
            return any(equals(item) for item in container)
        if isinstance(container, str):
            return raw in container
        return False

    return contains


def _is_empty(value: Any) -> bool:
    """Missing and null count as empty, like a Go zero value; scalars are never empty."""
    if value is MISSING or value is None:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    return False


def _getter(path: tuple[str, ...]) -> Callable[[Any], Any]:
    """Walk dict keys and list indexes; anything unreachable is MISSING rather than an error."""

    def get(datum: Any) -> Any:
        current = datum
        for segment in path:
            if isinstance(current, dict):
                current = current.get(segment, MISSING)
                if current is MISSING:
                    return MISSING
            elif isinstance(current, list) and segment.isascii() and segment.isdigit():
                index = int(segment)
                if index >= len(current):
                    return MISSING
                current = current[index]
            else:
                return MISSING
        return current

    return get


def _regex(raw: str) -> re.Pattern[str]:
    """Go's regexp syntax is RE2; Python's `re` agrees on everything filters use in practice."""
    try:
        return re.compile(raw)
    except re.error as exc:
        raise InvalidInput(f"{ERROR_PREFIX}Failed to compile regular expression {_go_quote(raw)}: {exc}") from None


def _go_quote(text: str) -> str:
    """Roughly Go's %q, so messages look like Consul's."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _match(op: str, path: tuple[str, ...], raw: str | None) -> Predicate:
    """One comparison; the negated operators are built as `not positive` on purpose."""
    get = _getter(path)
    test: Callable[[Any], bool]
    if op in ("==", "!="):
        assert raw is not None
        test = _equality(raw)
    elif op in ("in", "not in"):
        assert raw is not None
        test = _membership(raw)
    elif op in ("matches", "not matches"):
        assert raw is not None
        search = _regex(raw).search
        test = lambda value: isinstance(value, str) and search(value) is not None  # noqa: E731
    else:
        test = _is_empty

    if op in ("!=", "not in", "not matches", "is not empty"):
        return lambda datum: not test(get(datum))
    return lambda datum: test(get(datum))


def _any(left: Predicate, right: Predicate) -> Predicate:
    return lambda datum: left(datum) or right(datum)


def _all(left: Predicate, right: Predicate) -> Predicate:
    return lambda datum: left(datum) and right(datum)


def _negate(inner: Predicate) -> Predicate:
    return lambda datum: not inner(datum)


# ------------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over go-bexpr's PEG, building closures instead of an AST."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.selectors: list[tuple[tuple[str, ...], str]] = []

    # -- helpers

    def fail(self, reason: str, pos: int | None = None) -> NoReturn:
        """Prefix a pigeon-style `line:col (offset)` so the position is easy to find."""
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        col = at - (self.text.rfind("\n", 0, at) + 1) + 1
        raise InvalidInput(f"{ERROR_PREFIX}{line}:{col} ({at}): {reason}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos > start

    def at_keyword(self, word: str) -> bool:
        """`word` at the cursor as a whole word, so `notes` is not `not` and `index` not `in`."""
        end = self.pos + len(word)
        return self.text.startswith(word, self.pos) and (end >= len(self.text) or self.text[end] not in _IDENT_CHARS)

    def take_keyword(self, word: str) -> bool:
        if self.at_keyword(word):
            self.pos += len(word)
            return True
        return False

    def describe_here(self) -> str:
        return f"unexpected {_go_quote(self.peek())}" if self.peek() else "unexpected end of input"

    # -- expressions

    def parse(self) -> Predicate:
        self.skip_ws()
        if not self.peek():
            self.fail("no match found, expected: an expression")
        predicate = self.parse_or()
        self.skip_ws()
        if self.peek() == ")":
            self.fail("Unmatched parentheses")
        if self.peek():
            self.fail(f'{self.describe_here()}, expected: "and", "or" or end of input')
        return predicate

    def parse_or(self) -> Predicate:
        result = self.parse_and()
        while True:
            save = self.pos
            self.skip_ws()
            if not self.take_keyword("or"):
                self.pos = save
                return result
            result = _any(result, self.parse_and())

    def parse_and(self) -> Predicate:
        result = self.parse_not()
        while True:
            save = self.pos
            self.skip_ws()
            if not self.take_keyword("and"):
                self.pos = save
                return result
            result = _all(result, self.parse_not())

    def parse_not(self) -> Predicate:
        self.skip_ws()
        if self.take_keyword("not"):
            return _negate(self.parse_not())
        return self.parse_group()

    def parse_group(self) -> Predicate:
        self.skip_ws()
        if self.peek() != "(":
            return self.parse_match()
        start = self.pos
        self.pos += 1
        inner = self.parse_or()
        self.skip_ws()
        if self.peek() != ")":
            self.fail("Unmatched parentheses", start)
        self.pos += 1
        return inner

    def parse_match(self) -> Predicate:
        """Both match shapes start with something selector-or-value-like; the operator decides."""
        start = self.pos
        char = self.peek()
        path: tuple[str, ...] | None = None  # a bexpr selector, also usable as a bare-word value
        literal: str | None = None  # a quoted string or number: only usable as a value
        if char in _IDENT_START and char:
            path = self.parse_selector_path()
        elif char in ('"', "`"):
            literal = self.parse_string()
        elif char == "-" or char in _DIGITS and char:
            literal = self.parse_number()
        else:
            self.fail(f"{self.describe_here()}, expected: a selector, a value or \"(\"")
        lhs_end = self.pos
        spaced = self.skip_ws()
        op_pos = self.pos

        if self.text.startswith(("==", "!="), self.pos):
            op = self.text[self.pos : self.pos + 2]
            self.pos += 2
            return self.selector_first(op, path, literal, start, lhs_end)
        if spaced and self.take_keyword("is"):
            self.require_ws('"empty" or "not empty"')
            op = "is not empty" if self.take_keyword("not") else "is empty"
            if op == "is not empty":
                self.require_ws('"empty"')
            if not self.take_keyword("empty"):
                self.fail(f'{self.describe_here()}, expected: "empty"')
            return self.selector_first(op, path, literal, start, lhs_end)
        if spaced:
            negated = False
            if self.take_keyword("not"):
                self.require_ws('"in", "contains" or "matches"')
                negated = True
            for word, op in (("contains", "in"), ("matches", "matches"), ("in", "in")):
                if self.take_keyword(word):
                    full = f"not {op}" if negated else op
                    if word == "in":
                        return self.value_first(full, path, literal)
                    return self.selector_first(full, path, literal, start, lhs_end)
        self.pos = op_pos
        self.fail(
            f"{self.describe_here()}, expected: an operator "
            '("==", "!=", "in", "not in", "contains", "not contains", "matches", "not matches", "is empty", "is not empty")'
        )

    def require_ws(self, then: str) -> None:
        """Keywords are separated by whitespace, as in go-bexpr (`is empty`, not `isempty`)."""
        if not self.skip_ws():
            self.fail(f"{self.describe_here()}, expected: whitespace then {then}")

    def selector_first(
        self, op: str, path: tuple[str, ...] | None, literal: str | None, start: int, lhs_end: int
    ) -> Predicate:
        """`<selector> op [value]`; a double-quoted left side is a JSON pointer (`"/Meta/env"`)."""
        if path is None:
            pointer = _POINTER.fullmatch(self.text, start, lhs_end)
            if pointer is None:
                self.fail("Invalid selector", start)
            path = tuple(seg.replace("~1", "/").replace("~0", "~") for seg in pointer.group(1).split("/")[1:])
            self.selectors.append((path, pointer.group(1)))
        else:
            self.selectors.append((path, ".".join(path)))
        raw = None if op in ("is empty", "is not empty") else self.parse_value()
        return _match(op, path, raw)

    def value_first(self, op: str, path: tuple[str, ...] | None, literal: str | None) -> Predicate:
        """`<value> [not] in <selector>`: a bare-word left side is the text of the word."""
        raw = ".".join(path) if path is not None else literal
        assert raw is not None
        self.skip_ws()
        if not (self.peek() in _IDENT_START and self.peek()):
            if self.peek() == '"':
                start = self.pos
                self.parse_string()
                pointer = _POINTER.fullmatch(self.text, start, self.pos)
                if pointer is not None:
                    segs = tuple(s.replace("~1", "/").replace("~0", "~") for s in pointer.group(1).split("/")[1:])
                    self.selectors.append((segs, pointer.group(1)))
                    return _match(op, segs, raw)
                self.pos = start
            self.fail("Invalid selector")
        selector = self.parse_selector_path()
        self.selectors.append((selector, ".".join(selector)))
        return _match(op, selector, raw)

    # -- lexemes

    def parse_value(self) -> str:
        """A value is a bare selector-like word, a number or a string; all become raw text."""
        self.skip_ws()
        char = self.peek()
        if char and char in _IDENT_START:
            return ".".join(self.parse_selector_path())
        if char and (char == "-" or char in _DIGITS):
            return self.parse_number()
        if char in ('"', "`") and char:
            return self.parse_string()
        self.fail(f"{self.describe_here()}, expected: a value")

    def parse_identifier(self) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] in _IDENT_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def parse_selector_path(self) -> tuple[str, ...]:
        """`Ident ( "." Ident | "." digits | "[" string "]" )*`, e.g. `Meta["k"]`, `Tags.0`."""
        path = [self.parse_identifier()]
        while True:
            char = self.peek()
            if char == ".":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt and nxt in _IDENT_START:
                    self.pos += 1
                    path.append(self.parse_identifier())
                elif nxt and nxt in _DIGITS:
                    self.pos += 1
                    start = self.pos
                    while self.peek() and self.peek() in _DIGITS:
                        self.pos += 1
                    path.append(self.text[start : self.pos])
                else:
                    self.fail("Invalid selector", self.pos + 1)
            elif char == "[":
                self.pos += 1
                self.skip_ws()
                if self.peek() not in ('"', "`") or not self.peek():
                    self.fail("Invalid index")
                path.append(self.parse_string())
                self.skip_ws()
                if self.peek() != "]":
                    self.fail("Unclosed index expression")
                self.pos += 1
            else:
                return tuple(path)

    def parse_number(self) -> str:
        found = _NUMBER.match(self.text, self.pos)
        if found is None:
            self.fail("Invalid number literal")
        end = found.end()
        if end < len(self.text) and self.text[end] not in _WS and self.text[end] != ")":
            self.fail("Invalid number literal")
        self.pos = end
        return found.group()

    def parse_string(self) -> str:
        """Backtick strings are raw; double-quoted ones take Go's escapes (and `\\"`)."""
        start = self.pos
        quote = self.text[self.pos]
        if quote == "`":
            end = self.text.find("`", start + 1)
            if end < 0:
                self.fail("Unterminated string literal", start)
            self.pos = end + 1
            return self.text[start + 1 : end].replace("\r", "")
        out = bytearray()
        i = start + 1
        text = self.text
        while True:
            if i >= len(text):
                self.fail("Unterminated string literal", start)
            char = text[i]
            if char == '"':
                self.pos = i + 1
                return out.decode("utf-8", errors="replace")
            if char != "\\":
                out += char.encode("utf-8", errors="surrogatepass")
                i += 1
                continue
            esc = text[i + 1 : i + 2]
            if esc in _SIMPLE_ESCAPES:
                out += _SIMPLE_ESCAPES[esc].encode()
                i += 2
            elif esc in ("x", "u", "U"):
                width = {"x": 2, "u": 4, "U": 8}[esc]
                digits = text[i + 2 : i + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    self.fail("invalid escape sequence in string literal", i)
                code = int(digits, 16)
                if esc == "x":
                    out.append(code)
                elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    self.fail("invalid escape sequence in string literal", i)
                else:
                    out += chr(code).encode()
                i += 2 + width
            elif esc and esc in "01234567":
                digits = text[i + 1 : i + 4]
                if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(digits, 8) > 255:
                    self.fail("invalid escape sequence in string literal", i)
                out.append(int(digits, 8))
                i += 4
            else:
                self.fail("invalid escape sequence in string literal", i)
