"""The aws_lambda envelope's JSON, written and read with orjson, stays what json made it."""

from __future__ import annotations

import json
import random

import pytest

from gateway.dataplane.transform import (
    InvalidFunctionResponse,
    dejsonize_response,
    jsonize_request,
    query_string_parameters,
)

# the characters where JSON writers differ: escapes, controls, line separators, non-BMP, BOM
_CHARS = [chr(i) for i in range(0x100)] + ["\u2028", "\u2029", "\ufeff", "\ufffd", "\U0001f600", "\u00e9"]
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randrange(24)))


def _json_envelope(method: str, target: str, headers: dict[str, str], body: str, b64: bool) -> bytes:
    return _JSON.encode({"raw_path": target, "method": method, "headers": headers,
                         "query_string_parameters": query_string_parameters(target), "body": body, "is_base64_encoded": b64}).encode()


def test_envelope_bytes_are_json_dumps_bytes() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        target, value = "/" + _text(rng), _text(rng)
        body = _text(rng).encode("utf-8")
        got = jsonize_request("POST", target, [("x-v", value), ("content-type", "text/plain")], body)
        want = _json_envelope("POST", target, {"x-v": value, "content-type": "text/plain"},
                              body.decode("utf-8") if body else "", False)
        assert got == want


def _result(raw: bytes) -> tuple[int, bytes]:
    t = dejsonize_response([], raw)
    return t.status, t.body


@pytest.mark.parametrize("raw", [
    b'{"statusCode":201,"body":"x","extra":"\\ud800"}',  # a lone surrogate escape where nothing reads it
    b'{"statusCode":201,"body":"x","extra":NaN}',  # json's extension: accepted, as before
    b'{"statusCode":201,"body":"x","extra":1e400}',
    b'{"statusCode":201,"body":"x","extra":123456789012345678901234567890}',
    '{"statusCode":201,"body":"x"}'.encode("utf-16"),  # json.loads detects UTF-16
    b'{"statusCode":201,"body":"x","statusCode":201}',
])
def test_results_orjson_refuses_still_read_as_json_reads_them(raw: bytes) -> None:
    assert _result(raw) == (201, b"x")


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"statusCode":123456789012345678901234567890}', "status_code must be an integer"),
    (b'{"statusCode":1e3}', "status_code must be an integer"),
    (b'{"body":"\xff"}', "function result is not JSON"),
    (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "function result is not JSON"),
    (b'{"body":"x"} trailing', "function result is not JSON"),
    (b'{"headers":{"a":1}}', "headers must be an object of strings"),
])
def test_invalid_results_keep_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidFunctionResponse, match=reason):
        dejsonize_response([], raw)


def test_valid_results_read_the_same_as_json() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        body, name, value = _text(rng), _text(rng).strip() or "h", _text(rng)
        doc = {"statusCode": rng.choice([0, 200, 404, "302"]), "headers": {name: value},
               "cookies": [value], "body": body, "isBase64Encoded": False}
        t = dejsonize_response([], json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode())
        assert t.body == body.encode("utf-8")
        assert t.status == (int(doc["statusCode"]) or 200)
        assert ("set-cookie", value) in t.headers
