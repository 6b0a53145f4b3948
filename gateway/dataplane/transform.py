"""Envoy ``aws_lambda`` request/response transformation, byte for byte where it matters.

Source of truth: ``source/extensions/filters/http/aws_lambda/aws_lambda_filter.cc``
(``jsonizeRequest`` / ``dejsonizeResponse``) and xds-protocol.md §5.1 (verified with
Envoy 1.40).

Request (``payload_passthrough: false``): a JSON object with the proto field names

    {"raw_path": ..., "method": ..., "headers": {...}, "query_string_parameters": {...},
     "body": ..., "is_base64_encoded": bool}

* ``raw_path`` is the (normalized) ``:path`` including the query string;
* ``headers``: every request header except pseudo-headers (in HTTP/1.1 the ``Host``
  header is ``:authority``, so it is not there), lower-case names, repeated names
  joined with ``,`` in arrival order;
* ``query_string_parameters``: parsed from the path without percent-decoding; for a
  repeated key the **first** value wins (``kv_pair.second[0]``); a key without ``=``
  has the value ``""``;
* ``body``: the raw body as text when ``content-type`` is exactly ``application/json``,
  ``application/javascript``, ``application/xml`` or starts with ``text/`` and the
  transfer encoding (if any) is ``identity``; otherwise base64 with
  ``is_base64_encoded: true``. Primitive fields are always printed (an empty body is
  ``"body": ""``).

Response (the function's result, read with protobuf's JSON parser, so both
``status_code`` and ``statusCode`` spellings are accepted, as are unknown fields):

    {"status_code": int, "headers": {...}, "cookies": [...], "body": str, "is_base64_encoded": bool}

* the Lambda response headers are kept, ``content-type`` defaults to
  ``application/json`` and each function header replaces the one of the same name
  (pseudo-headers ignored); each cookie becomes a ``set-cookie`` header;
* a ``status_code`` of 0/absent keeps 200; the body is base64-decoded when flagged;
* JSON that does not parse into that shape gives 500 (Envoy's ``server_error``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "InvalidFunctionResponse",
    "TransformedResponse",
    "is_textual",
    "jsonize_request",
    "dejsonize_response",
    "query_string_parameters",
]

_TEXTUAL_EXACT = frozenset({"application/json", "application/javascript", "application/xml"})

# Response headers from the Lambda service that make no sense downstream (framing).
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
    "content-length",
})


class InvalidFunctionResponse(ValueError):
    """The function's result does not parse as Envoy's Response message."""


def is_textual(headers: Iterable[tuple[str, str]]) -> bool:
    """Envoy's ``isContentTypeTextual``: exact content-type values, compared lower-cased."""
    content_type: str | None = None
    transfer_encoding: str | None = None
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type" and content_type is None:
            content_type = value
        elif lname == "transfer-encoding" and transfer_encoding is None:
            transfer_encoding = value
    return _textual(content_type, transfer_encoding)


def query_string_parameters(target: str) -> dict[str, str]:
    """``QueryParamsMulti::parseQueryString`` then first value per key; no percent-decoding."""
    _, sep, query = target.partition("?")
    out: dict[str, str] = {}
    if not sep:
        return out
    query = query.split("#", 1)[0]
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if key not in out:
            out[key] = value if eq else ""
    return out


HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te")
_HOP = frozenset(HOP_BY_HOP)


def jsonize_request(method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
    """The Envoy JSON envelope for one request (``target`` = normalized path + query)."""
    items = [(name.lower(), value) for name, value in headers]
    # hop-by-hop headers (and any the Connection header names) end at this hop, as in Envoy's
    # HTTP/1 codec: the function never sees them
    hop: frozenset[str] | set[str] = _HOP
    content_type: str | None = None
    transfer_encoding: str | None = None
    for lname, value in items:
        if lname == "connection":
            hop = set(hop)
            hop.update(token.strip().lower() for token in value.split(","))
        elif lname == "content-type":
            if content_type is None:
                content_type = value
        elif lname == "transfer-encoding" and transfer_encoding is None:
            transfer_encoding = value
    joined: dict[str, str] = {}
    for lname, value in items:
        if lname[:1] == ":" or lname == "host" or lname in hop:
            continue
        joined[lname] = f"{joined[lname]},{value}" if lname in joined else value
    if not body:  # Envoy sets no body at all when there is none: never "base64 of nothing"
        text, b64 = "", False
    elif _textual(content_type, transfer_encoding):
        text, b64 = body.decode("utf-8", "replace"), False
    else:
        text, b64 = base64.b64encode(body).decode("ascii"), True
    doc = {
        "raw_path": target,
        "method": method,
        "headers": joined,
        "query_string_parameters": query_string_parameters(target) if "?" in target else {},
        "body": text,
        "is_base64_encoded": b64,
    }
    # orjson writes the bytes of json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    # .encode() for a document of strings, booleans and objects (tests/test_lambda_transform.py
    # compares them), at a third of the cost when the caches are cold: the gateway's case
    return orjson.dumps(doc)


def _textual(content_type: str | None, transfer_encoding: str | None) -> bool:
    """is_textual on the first content-type and transfer-encoding values."""
    if transfer_encoding is not None and transfer_encoding.lower() != "identity":
        return False
    if content_type is None:
        return False
    ct = content_type.lower()
    return ct in _TEXTUAL_EXACT or ct.startswith("text/")


@dataclass
class TransformedResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _field(doc: dict[str, Any], snake: str, camel: str) -> Any:
    # protobuf's JSON parser accepts both the proto name and the lowerCamel json_name.
    if snake in doc:
        return doc[snake]
    return doc.get(camel)


def _loads(payload: bytes) -> Any:
    """json.loads(payload), with orjson reading what it reads the same way.

    orjson gives json's result for every UTF-8 object it accepts (integers past 64 bits come
    back as floats, which no field here accepts either way); what it refuses (lone
    surrogates, NaN, huge exponents, invalid UTF-8, deep nesting) goes to json, whose
    reading or error stands."""
    if payload[:1] == b"{":
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
    # json.loads(bytes) detects the encoding first; a body that starts with "{" and a
    # non-NUL byte is UTF-8 to it, decoded with "surrogatepass" exactly as here
    if payload[:1] == b"{" and payload[1:2] != b"\x00":
        return json.loads(payload.decode("utf-8", "surrogatepass"))
    return json.loads(payload)


def dejsonize_response(upstream_headers: Iterable[tuple[str, str]], payload: bytes) -> TransformedResponse:
    """Envoy's ``dejsonizeResponse`` on a 200 without ``x-amz-function-error``."""
    try:
        doc = _loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidFunctionResponse(f"function result is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidFunctionResponse("function result is not a JSON object")
    # _field(doc, snake, camel), inlined: the proto name first, then the lowerCamel json_name
    status = doc["status_code"] if "status_code" in doc else doc.get("statusCode")
    fheaders = doc.get("headers")
    cookies = doc.get("cookies")
    body = doc.get("body")
    b64 = doc["is_base64_encoded"] if "is_base64_encoded" in doc else doc.get("isBase64Encoded")
    if status is None:
        status = 0
    if isinstance(status, str) and status.strip().lstrip("-").isdigit():
        status = int(status)  # protobuf JSON accepts numbers as strings
    if isinstance(status, bool) or not isinstance(status, int) or not (0 <= status <= 0xFFFFFFFF):
        raise InvalidFunctionResponse("status_code must be an integer")
    if status and not (100 <= status <= 999):
        raise InvalidFunctionResponse(f"status_code {status} is not an HTTP status")
    if fheaders is None:
        fheaders = {}
    if not isinstance(fheaders, dict) or not all(isinstance(v, str) for v in fheaders.values()):
        raise InvalidFunctionResponse("headers must be an object of strings")
    if cookies is None:
        cookies = []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise InvalidFunctionResponse("cookies must be a list of strings")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise InvalidFunctionResponse("body must be a string")
    if b64 is None:
        b64 = False
    if not isinstance(b64, bool):
        raise InvalidFunctionResponse("is_base64_encoded must be a boolean")

    headers: dict[str, list[str]] = {}
    for name, value in upstream_headers:
        lname = name.lower()
        if lname not in _HOP_BY_HOP:
            values = headers.get(lname)
            if values is None:
                headers[lname] = [value]
            else:
                values.append(value)
    headers["content-type"] = ["application/json"]
    for name, value in fheaders.items():
        if not name or name[0] == ":":
            continue
        headers[name.lower()] = [value]
    out = [(n, v) for n, values in headers.items() for v in values]
    if cookies:
        out.extend(("set-cookie", c) for c in cookies)
    if b64 and body:
        try:
            data = base64.b64decode(body)
        except (binascii.Error, ValueError):
            data = b""  # Envoy's Base64::decode yields "" on invalid input
    else:
        data = body.encode("utf-8")
    return TransformedResponse(status or 200, out, data)
