"""AWS Signature Version 4 (header form) for Lambda: a signer and a server-side verifier.

Terminus signs every Lambda Invoke it forwards, and the local Lambda verifies them, so both
sides share one canonicalisation. The rules are those of a standard (non-S3) service, checked
byte for byte against the aws-c-auth v4 suite and against botocore's ``SigV4Auth``:

* **Path**: dot segments and repeated slashes are removed (``normalize``), then the path *as it
  appears in the URL* is URI-encoded once more. A path already percent-encoded on the wire
  (``/functions/arn%3Aaws%3A...``) is therefore encoded twice (``%253A``), as AWS expects for
  every service except S3; a raw path (``/example space``) is encoded once.
* **Query**: each ``key=value`` is percent-decoded and re-encoded with the strict unreserved set
  (``A-Z a-z 0-9 - _ . ~``), then sorted by key and, for repeated keys, by value. ``+`` is a
  literal plus (``%2B``), never a space.
* **Headers**: names lower-cased; values trimmed, runs of ASCII whitespace (including the line
  breaks of folded, multi-line values) collapsed to one space; repeated names joined with ``,``
  in order. Hop-by-hop and tracing headers (botocore's list, notably ``user-agent``) are never
  signed, because proxies rewrite them and moto rejects signatures that cover them.
* **Payload**: SHA-256 of the body. ``X-Amz-Content-Sha256`` is only sent when asked for (S3
  style, and what Envoy's aws_lambda filter does); when present its value is what gets signed.

The derived signing key (four chained HMACs) is cached per (secret, date, region, service), so
a steady stream of requests costs one HMAC plus two SHA-256 each.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_HEADERS",
    "UNSIGNED_PAYLOAD",
    "Credentials",
    "SignedRequest",
    "Signer",
    "VerifyError",
    "amz_date",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "derive_signing_key",
    "parse_authorization",
    "string_to_sign",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

#: Never signed: hop-by-hop, tracing and client-identification headers that proxies and HTTP
#: clients add or rewrite after signing (botocore's ``SIGNED_HEADERS_BLACKLIST`` plus the
#: ``authorization`` header itself). moto recomputes with botocore and rejects signatures
#: covering ``user-agent`` (test-oracles.md §2.2).
UNSIGNED_HEADERS: frozenset[str] = frozenset({
    "authorization",
    "baggage",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
})

HeadersInput = Sequence[tuple[str, str]] | Mapping[str, str]

_UNRESERVED_PATH = re.compile(r"[A-Za-z0-9\-._~/]*")
_NOT_UNRESERVED_PATH = re.compile(r"[^A-Za-z0-9\-._~/]+")
_NEEDS_NORMALIZE = re.compile(r"//|/\.\.?(?:/|$)")
_WS_RUN = re.compile(r"[ \t\r\n\v\f]+")
_WS_CHARS = " \t\r\n\v\f"
_WS_HINT = re.compile(r"[\t\r\n\v\f]| {2}")
_SURROGATE = "surrogateescape"


@dataclass(frozen=True)
class Credentials:
    """An access key pair, with the STS session token for temporary credentials."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never print the secret or the token in logs or test output
        return f"Credentials(access_key={self.access_key!r}, secret_key='***', token={'***' if self.token else None})"


@dataclass(frozen=True)
class SignedRequest:
    """Every intermediate product of one signing, for tests and debugging."""

    canonical_request: str
    string_to_sign: str
    signature: str
    signed_headers: str
    credential_scope: str
    authorization: str
    headers: list[tuple[str, str]]  # the headers to add to the request


# ---------------------------------------------------------------------------------------------
# Canonical request pieces
# ---------------------------------------------------------------------------------------------


def _normalize_path(path: str) -> str:
    """RFC 3986 dot-segment removal plus collapsing of empty segments, exactly as botocore."""
    if not path:
        return "/"
    if not _NEEDS_NORMALIZE.search(path):
        return path
    out: list[str] = []
    for seg in path.split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
        else:
            out.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", _SURROGATE))


@lru_cache(maxsize=4096)  # a gateway signs the same few function paths over and over
def canonical_uri(path: str | bytes, *, normalize: bool = True) -> str:
    """The CanonicalURI line: the path as it appears in the URL, normalized, URI-encoded once more."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", _SURROGATE)
    if normalize:
        path = _normalize_path(path)
    elif not path:
        path = "/"
    return _NOT_UNRESERVED_PATH.sub(_percent_encode, path)


def _encode_component(raw: str | bytes) -> str:
    """Percent-decode one query component, then encode it with the strict unreserved set."""
    if not raw:
        return ""
    if isinstance(raw, str) and raw.isascii() and _UNRESERVED_PATH.fullmatch(raw) and "/" not in raw:
        return raw
    data = unquote_to_bytes(raw.encode("utf-8", _SURROGATE) if isinstance(raw, str) else raw)
    return quote_from_bytes(data, safe="-_.~")


@lru_cache(maxsize=4096)
def canonical_query_string(query: str | bytes) -> str:
    """The CanonicalQueryString line: encoded ``k=v`` pairs sorted by key, then by value."""
    if not query:
        return ""
    if isinstance(query, bytes):
        query = query.decode("utf-8", _SURROGATE)
    pairs: list[tuple[str, str]] = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_encode_component(key), _encode_component(value)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def _trim(value: str) -> str:
    """Trimall: strip, and turn every run of whitespace (folded lines included) into one space."""
    if _WS_HINT.search(value):
        return _WS_RUN.sub(" ", value).strip(" ")
    return value.strip(_WS_CHARS)


def _header_items(headers: HeadersInput | None) -> Iterable[tuple[str, str]]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def _as_str(value: str | bytes) -> str:
    return value.decode("utf-8", _SURROGATE) if isinstance(value, bytes) else value


def canonical_headers(
    headers: Iterable[tuple[str, str]],
    *,
    include: Callable[[str], bool] | None = None,
) -> tuple[str, str]:
    """CanonicalHeaders (with the trailing newline) and SignedHeaders for the headers ``include`` keeps."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.strip().lower()
        if include is not None and not include(lname):
            continue
        values = grouped.get(lname)
        if values is None:
            grouped[lname] = [_trim(value)]
        else:
            values.append(_trim(value))
    names = sorted(grouped)
    block = "".join(f"{n}:{','.join(grouped[n])}\n" for n in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str | bytes,
    query: str | bytes,
    headers_block: str,
    signed_headers: str,
    payload_hash: str,
    *,
    normalize: bool = True,
) -> str:
    """Join the six canonical-request lines (headers_block already ends with a newline)."""
    return "\n".join((
        method.upper(),
        canonical_uri(path, normalize=normalize),
        canonical_query_string(query),
        headers_block,
        signed_headers,
        payload_hash,
    ))


def string_to_sign(amz_datetime: str, scope: str, creq: str) -> str:
    """The StringToSign: algorithm, request time, credential scope, hex SHA-256 of the canonical request."""
    digest = hashlib.sha256(creq.encode("utf-8", _SURROGATE)).hexdigest()
    return f"{ALGORITHM}\n{amz_datetime}\n{scope}\n{digest}"


@lru_cache(maxsize=512)
def derive_signing_key(secret_key: str, datestamp: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over date, region, service, "aws4_request"; cached for the day."""
    k = hmac.digest(("AWS4" + secret_key).encode("utf-8"), datestamp.encode("ascii"), "sha256")
    k = hmac.digest(k, region.encode("utf-8"), "sha256")
    k = hmac.digest(k, service.encode("utf-8"), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


def _signature(secret_key: str, datestamp: str, region: str, service: str, sts: str) -> str:
    key = derive_signing_key(secret_key, datestamp, region, service)
    return hmac.digest(key, sts.encode("utf-8", _SURROGATE), "sha256").hex()


def amz_date(now: datetime) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC; a naive datetime is taken to be UTC already."""
    if now.tzinfo is not None and now.utcoffset():
        now = now.astimezone(UTC)
    return f"{now.year:04d}{now.month:02d}{now.day:02d}T{now.hour:02d}{now.minute:02d}{now.second:02d}Z"


@lru_cache(maxsize=4096)
def _split_url(url: str) -> tuple[str, str, str, str]:
    """(scheme, host header value, path, query) without re-encoding anything.

    Host follows botocore/httpx: lower-cased, userinfo dropped, default port dropped.
    A bare ``/path?query`` target gives an empty scheme and host.
    """
    scheme = netloc = ""
    rest = url
    sep = url.find("://")
    if sep != -1 and "/" not in url[:sep]:
        scheme = url[:sep].lower()
        rest = url[sep + 3:]
        end = len(rest)
        for ch in "/?#":
            i = rest.find(ch)
            if i != -1 and i < end:
                end = i
        netloc, rest = rest[:end], rest[end:]
    rest = rest.split("#", 1)[0]
    path, _, query = rest.partition("?")
    host = netloc.rpartition("@")[2].lower()
    if host.startswith("["):
        close = host.find("]")
        hostname, port = host[: close + 1], host[close + 2:] if host[close + 1: close + 2] == ":" else ""
    else:
        hostname, _, port = host.partition(":")
    if port and {"http": "80", "https": "443"}.get(scheme) == port.lstrip("0"):
        port = ""
    return scheme, f"{hostname}:{port}" if port else hostname, path, query


# ---------------------------------------------------------------------------------------------
# Signer
# ---------------------------------------------------------------------------------------------


class Signer:
    """SigV4 header signer for one (service, region), e.g. ``Signer("lambda", "us-east-1")``.

    ``normalize_path`` and ``content_sha256_header`` default to the non-S3 rules.
    ``omit_session_token`` adds ``X-Amz-Security-Token`` after signing instead of signing it
    (a few STS-era services need that; Lambda accepts the usual signed form).
    """

    __slots__ = ("service", "region", "normalize_path", "content_sha256_header", "omit_session_token", "_unsigned")

    def __init__(
        self,
        service: str,
        region: str,
        *,
        normalize_path: bool = True,
        content_sha256_header: bool = False,
        omit_session_token: bool = False,
        unsigned_headers: Iterable[str] = UNSIGNED_HEADERS,
    ) -> None:
        self.service = service
        self.region = region
        self.normalize_path = normalize_path
        self.content_sha256_header = content_sha256_header
        self.omit_session_token = omit_session_token
        self._unsigned = frozenset(h.lower() for h in unsigned_headers) | {
            "authorization", "x-amz-date", "x-amz-security-token", "host",
        }

    def scope(self, datestamp: str) -> str:
        return f"{datestamp}/{self.region}/{self.service}/aws4_request"

    def sign(
        self,
        method: str,
        url: str,
        headers: HeadersInput | None,
        body: bytes,
        credentials: Credentials,
        now: datetime,
    ) -> list[tuple[str, str]]:
        """The headers to add: X-Amz-Date, [X-Amz-Content-Sha256,] [X-Amz-Security-Token,] Authorization.

        ``url`` is the URL exactly as it will be sent (already percent-encoded where the HTTP
        client will not encode again). Host comes from the headers if given, else from the URL.
        Existing Authorization / X-Amz-Date / X-Amz-Security-Token headers are replaced, so
        the caller must drop them from the request before adding these.
        """
        return self.sign_details(method, url, headers, body, credentials, now).headers

    def sign_details(
        self,
        method: str,
        url: str,
        headers: HeadersInput | None,
        body: bytes,
        credentials: Credentials,
        now: datetime,
    ) -> SignedRequest:
        """Like :meth:`sign`, returning the canonical request, string to sign and signature too."""
        scheme, url_host, path, query = _split_url(url)
        stamp = amz_date(now)
        datestamp = stamp[:8]

        unsigned = self._unsigned
        to_sign: list[tuple[str, str]] = []
        host: str | None = None
        payload_hash: str | None = None
        for name, value in _header_items(headers):
            lname = name.lower()
            if lname == "host":
                to_sign.append(("host", value))
                host = value
            elif lname == "x-amz-content-sha256":
                if payload_hash is None:
                    payload_hash = value.strip()
                to_sign.append((lname, value))
            elif lname not in unsigned:
                to_sign.append((lname, value))
        if host is None:
            if not url_host:
                raise ValueError(f"no Host header and no host in URL {url!r}")
            to_sign.append(("host", url_host))

        added: list[tuple[str, str]] = [("X-Amz-Date", stamp)]
        to_sign.append(("x-amz-date", stamp))
        if payload_hash is None:
            payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
            if self.content_sha256_header:
                added.append(("X-Amz-Content-Sha256", payload_hash))
                to_sign.append(("x-amz-content-sha256", payload_hash))
        if credentials.token:
            added.append(("X-Amz-Security-Token", credentials.token))
            if not self.omit_session_token:
                to_sign.append(("x-amz-security-token", credentials.token))

        block, signed = canonical_headers(to_sign)
        creq = canonical_request(method, path, query, block, signed, payload_hash, normalize=self.normalize_path)
        scope = self.scope(datestamp)
        sts = string_to_sign(stamp, scope, creq)
        sig = _signature(credentials.secret_key, datestamp, self.region, self.service, sts)
        authz = f"{ALGORITHM} Credential={credentials.access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
        added.append(("Authorization", authz))
        return SignedRequest(creq, sts, sig, signed, scope, authz, added)

    def canonical_request(
        self, method: str, url: str, headers: HeadersInput | None, body: bytes, credentials: Credentials, now: datetime
    ) -> str:
        """The canonical request :meth:`sign` would hash (compare with a suite's expected file)."""
        return self.sign_details(method, url, headers, body, credentials, now).canonical_request

    def string_to_sign(
        self, method: str, url: str, headers: HeadersInput | None, body: bytes, credentials: Credentials, now: datetime
    ) -> str:
        """The string to sign :meth:`sign` would HMAC."""
        return self.sign_details(method, url, headers, body, credentials, now).string_to_sign


# ---------------------------------------------------------------------------------------------
# Verifier (server side)
# ---------------------------------------------------------------------------------------------


class VerifyError(str):
    """A verification failure: the string value is AWS's error type (``x-amzn-ErrorType``).

    ``reason`` is a stable short tag for tests and metrics (``missing``, ``incomplete``,
    ``unknown_key``, ``bad_token``, ``scope``, ``expired``, ``payload_hash``, ``mismatch``);
    ``message`` is the AWS-style text for the response body.
    """

    reason: str
    message: str

    def __new__(cls, code: str, reason: str, message: str) -> VerifyError:
        obj = super().__new__(cls, code)
        obj.reason = reason
        obj.message = message
        return obj

    @property
    def code(self) -> str:
        return str(self)


MISSING_TOKEN = "MissingAuthenticationTokenException"
INCOMPLETE_SIGNATURE = "IncompleteSignatureException"
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"
INVALID_SIGNATURE = "InvalidSignatureException"

MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."

_AUTH_PARAM = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,\s]*)\s*")


def parse_authorization(value: str) -> dict[str, str] | None:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` → dict, or None."""
    algo, _, rest = value.strip().partition(" ")
    if algo != ALGORITHM:
        return None
    params: dict[str, str] = {}
    for part in rest.split(","):
        m = _AUTH_PARAM.fullmatch(part)
        if not m:
            return None
        params[m.group(1)] = m.group(2)
    return params


def _first(headers: Sequence[tuple[str, str]], lname: str) -> str | None:
    for n, v in headers:
        if n == lname:
            return v
    return None


def verify(
    method: str,
    target: str | bytes,
    headers: HeadersInput | Sequence[tuple[bytes, bytes]],
    body: bytes,
    lookup: Callable[[str], Credentials | None] | Mapping[str, Credentials],
    *,
    service: str,
    region: str,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
    normalize_path: bool = True,
    allow_unsigned_payload: bool = False,
) -> VerifyError | None:
    """Recompute the signature of a received request; ``None`` if it is valid, else the error.

    ``target`` is the request target as received (``/path?query``, still percent-encoded) or
    a full URL. ``lookup`` maps an access key ID to its credentials. The signature is compared
    in constant time. The credential scope must name this ``service`` and ``region`` and the
    day of ``X-Amz-Date``, which must lie within ``max_skew`` of ``now``, as AWS enforces.
    """
    items = [(_as_str(n).strip().lower(), _as_str(v)) for n, v in _header_items(headers)]  # type: ignore[arg-type]
    authz = _first(items, "authorization")
    if authz is None:
        return VerifyError(MISSING_TOKEN, "missing", "Missing Authentication Token")
    params = parse_authorization(authz)
    if params is None or not {"Credential", "SignedHeaders", "Signature"} <= params.keys():
        return VerifyError(
            INCOMPLETE_SIGNATURE, "incomplete",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters "
            f"and the {ALGORITHM} algorithm. Authorization={authz}",
        )
    cred = params["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request" or not cred[0]:
        return VerifyError(
            INCOMPLETE_SIGNATURE, "incomplete",
            f"Credential should have 5 parts <key>/<date>/<region>/<service>/aws4_request: {params['Credential']}",
        )
    access_key, datestamp, cred_region, cred_service, _ = cred
    signed_names = [n.strip().lower() for n in params["SignedHeaders"].split(";") if n.strip()]
    if "host" not in signed_names:
        return VerifyError(
            INCOMPLETE_SIGNATURE, "incomplete",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        )
    stamp = _first(items, "x-amz-date")
    if stamp is None:
        return VerifyError(
            INCOMPLETE_SIGNATURE, "incomplete",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    stamp = stamp.strip()
    try:
        if len(stamp) != 16 or stamp[8] != "T" or stamp[15] != "Z" or not (stamp[:8] + stamp[9:15]).isdigit():
            raise ValueError(stamp)
        when = datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]),
                        int(stamp[9:11]), int(stamp[11:13]), int(stamp[13:15]), tzinfo=UTC)
    except ValueError:
        return VerifyError(INCOMPLETE_SIGNATURE, "incomplete", f"Invalid X-Amz-Date '{stamp}'.")
    if datestamp != stamp[:8]:
        return VerifyError(
            INVALID_SIGNATURE, "scope",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{datestamp}' != '{stamp[:8]}', from '{stamp}'.",
        )
    if cred_region != region:
        return VerifyError(
            INVALID_SIGNATURE, "scope", f"Credential should be scoped to a valid region, not '{cred_region}'."
        )
    if cred_service != service:
        return VerifyError(INVALID_SIGNATURE, "scope", f"Credential should be scoped to correct service: '{service}'.")

    current = (now or datetime.now(UTC))
    current = current.replace(tzinfo=UTC) if current.tzinfo is None else current.astimezone(UTC)
    fmt = "%Y%m%dT%H%M%SZ"
    if when < current - max_skew:
        return VerifyError(
            INVALID_SIGNATURE, "expired",
            f"Signature expired: {stamp} is now earlier than {(current - max_skew).strftime(fmt)} "
            f"({current.strftime(fmt)} - {max_skew.total_seconds() / 60:g} min.)",
        )
    if when > current + max_skew:
        return VerifyError(
            INVALID_SIGNATURE, "expired",
            f"Signature not yet current: {stamp} is still later than {(current + max_skew).strftime(fmt)} "
            f"({current.strftime(fmt)} + {max_skew.total_seconds() / 60:g} min.)",
        )

    creds = lookup.get(access_key) if isinstance(lookup, Mapping) else lookup(access_key)
    if creds is None:
        return VerifyError(UNRECOGNIZED_CLIENT, "unknown_key", INVALID_TOKEN_MESSAGE)
    token = _first(items, "x-amz-security-token")
    if creds.token or token is not None:
        if token is None or not creds.token or not hmac.compare_digest(token.strip().encode(), creds.token.encode()):
            return VerifyError(UNRECOGNIZED_CLIENT, "bad_token", INVALID_TOKEN_MESSAGE)

    actual_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    claimed = _first(items, "x-amz-content-sha256")
    payload_hash = actual_hash
    if claimed is not None:
        claimed = claimed.strip()
        if claimed == UNSIGNED_PAYLOAD and allow_unsigned_payload:
            payload_hash = claimed
        elif claimed != actual_hash:
            return VerifyError(
                INVALID_SIGNATURE, "payload_hash",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

    wanted = set(signed_names)
    present = {n for n, _ in items}
    if not wanted <= present:
        return VerifyError(INVALID_SIGNATURE, "mismatch", MISMATCH_MESSAGE)
    block, signed = canonical_headers(items, include=wanted.__contains__)
    _, _, path, query = _split_url(_as_str(target))
    creq = canonical_request(method, path, query, block, signed, payload_hash, normalize=normalize_path)
    scope = f"{datestamp}/{cred_region}/{cred_service}/aws4_request"
    expected = _signature(creds.secret_key, datestamp, cred_region, cred_service, string_to_sign(stamp, scope, creq))
    if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
        return VerifyError(INVALID_SIGNATURE, "mismatch", MISMATCH_MESSAGE)
    return None
