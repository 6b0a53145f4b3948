"""Request-path normalization, as Envoy's HCM does it with the settings Consul should use
on every L7 listener (consul-semantics.md §3.6, SECVULN-41453):

``normalize_path: true`` + ``merge_slashes: true`` +
``path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT``.

Order is Envoy's (``ConnectionManagerUtility::maybeNormalizePath``):

1. escaped slashes: ``%2F`` / ``%5C`` (any case) are unescaped; if there were any, the
   request is answered with a redirect (307) to the fully normalized path;
2. ``normalize_path`` (Envoy's ``PathUtil::canonicalPath``, Chromium's path
   canonicalizer): percent-encoded *unreserved* characters are decoded (``%41`` -> ``A``,
   ``%2e`` -> ``.``), other escapes are kept as sent, ``\\`` becomes ``/``, characters
   that may not appear raw are percent-encoded, then dot segments are removed (RFC 3986
   §5.2.4; ``..`` above the root stays at the root);
3. ``merge_slashes``: runs of ``/`` become one.

Only the path is touched; the query string is kept byte for byte. A fragment is dropped
(Envoy strips it by default). A target that is not origin-form is invalid (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NormalizedPath", "PathError", "normalize_request_target"]

_ESCAPED_SLASH = re.compile(r"%(2[fF]|5[cC])")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters Chromium escapes in a path (besides controls, space and non-ASCII).
_ESCAPE_RAW = frozenset(b'"<>`{}')
_HEX = frozenset(b"0123456789abcdefABCDEF")


class PathError(ValueError):
    """The request target cannot be normalized: answer 400."""


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    path: str  # normalized path, no query
    query: str | None  # the raw query (without "?"), None if the target had no "?"
    redirect: bool  # escaped slashes were present: send 307 to ``target``

    @property
    def target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"


def _canonical_chars(raw: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # '%'
            if i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
                value = int(raw[i + 1: i + 3], 16)
                if value in _UNRESERVED:
                    out.append(value)
                else:
                    out += raw[i: i + 3]
                i += 3
                continue
            out.append(c)  # a lone '%' is kept, as Chromium does
        elif c == 0x5C:  # '\\'
            out.append(0x2F)
        elif c <= 0x20 or c >= 0x7F or c in _ESCAPE_RAW:
            out += b"%%%02X" % c
        else:
            out.append(c)
        i += 1
    return bytes(out)


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _merge_slashes(path: str) -> str:
    return re.sub(r"/{2,}", "/", path)


def normalize_request_target(target: str | bytes) -> NormalizedPath:
    """Normalize an HTTP/1.1 origin-form request target (``/path?query``)."""
    raw = target.encode("latin-1") if isinstance(target, str) else bytes(target)
    hash_at = raw.find(b"#")
    if hash_at != -1:
        raw = raw[:hash_at]
    path, sep, query = raw.partition(b"?")
    if not path.startswith(b"/"):
        raise PathError("the request target must be an absolute path")
    redirect = False
    text = path.decode("latin-1")
    if _ESCAPED_SLASH.search(text):
        redirect = True
        text = _ESCAPED_SLASH.sub(lambda m: "/" if m.group(1) in ("2f", "2F") else "\\", text)
    canon = _canonical_chars(text.encode("latin-1")).decode("ascii")
    canon = _merge_slashes(_remove_dot_segments(canon))
    return NormalizedPath(canon, query.decode("latin-1") if sep else None, redirect)
