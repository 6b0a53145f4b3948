"""Lambda Invoke over a pooled async HTTP client, signed with SigV4.

* one lean HTTP/1.1 keep-alive pool (``gateway.dataplane.http1``, h11 on asyncio streams)
  for every function; an ``httpx.AsyncClient`` (``LambdaClient.http``) serves plain HTTP
  upstreams, and the Lambda calls too when a custom httpx ``transport`` is given;
* credentials never fetched on the request path: a provider resolves them (boto3's
  default chain runs in a worker thread) and refreshes them in the background before
  they expire; a request only reads the cached frozen value;
* the SigV4 signing key is derived once per (secret, day, region, service) by
  ``gateway.awslambda.sigv4`` (``derive_signing_key`` is cached); per target, the canonical
  request and the request head are pre-built around the two parts that change (the time
  and the payload hash), and checked once against :class:`Signer` before use, so a request
  costs two SHA-256 and one HMAC over short strings (:class:`_InvokePlan`);
* outcomes are classified for the gateway: OK / function error / throttled / Lambda
  error / timeout / unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from gateway.awslambda.sigv4 import ALGORITHM, EMPTY_SHA256, Credentials, Signer, derive_signing_key
from gateway.dataplane import http1

__all__ = [
    "Boto3CredentialProvider",
    "CredentialProvider",
    "HTTPUpstream",
    "InvokeOutcome",
    "InvokeResult",
    "LambdaClient",
    "LambdaTarget",
    "StaticCredentialProvider",
    "lambda_endpoint",
    "region_from_arn",
]

log = logging.getLogger(__name__)

INVOKE_PATH = "/2015-03-31/functions/{arn}/invocations"


def region_from_arn(arn: str) -> str | None:
    parts = arn.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "lambda" and parts[3]:
        return parts[3]
    return None


def lambda_endpoint(region: str, env: Mapping[str, str] | None = None) -> str:
    """AWS_ENDPOINT_URL_LAMBDA, else AWS_ENDPOINT_URL, else the regional endpoint."""
    env = os.environ if env is None else env
    url = env.get("AWS_ENDPOINT_URL_LAMBDA") or env.get("AWS_ENDPOINT_URL")
    if url:
        return url.rstrip("/")
    return f"https://lambda.{region}.amazonaws.com"


@dataclass(frozen=True, slots=True)
class LambdaTarget:
    arn: str
    region: str
    endpoint_url: str
    payload_passthrough: bool = False
    asynchronous: bool = False

    @property
    def function(self) -> str:
        """The function name (with qualifier), for logs and metric labels."""
        parts = self.arn.split(":")
        return ":".join(parts[6:]) if len(parts) >= 7 else self.arn

    @property
    def invoke_url(self) -> str:
        # The ARN goes unencoded in the path, as Envoy sends it; ':' is legal in a path.
        return self.endpoint_url + INVOKE_PATH.format(arn=self.arn)


@dataclass(frozen=True, slots=True)
class HTTPUpstream:
    """A plain HTTP service behind the gateway (non-Lambda linked service)."""

    url: str  # http://host:port


# ---------------------------------------------------------------------------------------
# credentials
# ---------------------------------------------------------------------------------------


class CredentialProvider(Protocol):
    async def start(self) -> None: ...
    def current(self) -> Credentials: ...
    async def close(self) -> None: ...


class StaticCredentialProvider:
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def start(self) -> None:
        return None

    def current(self) -> Credentials:
        return self._credentials

    async def close(self) -> None:
        return None


class NoCredentialsError(RuntimeError):
    pass


class Boto3CredentialProvider:
    """boto3's default chain (env, shared file, web identity, IMDS/ECS, ...), off the event loop.

    ``start()`` resolves once in a worker thread; a background task refreshes the frozen
    copy ``refresh_margin`` seconds before expiry (every ``static_recheck`` seconds for
    credentials without expiry, so a rotated shared file is picked up). ``current()``
    never blocks.
    """

    def __init__(self, *, refresh_margin: float = 300.0, static_recheck: float = 900.0, profile: str | None = None) -> None:
        self.refresh_margin = refresh_margin
        self.static_recheck = static_recheck
        self.profile = profile
        self._source: Any = None
        self._frozen: Credentials | None = None
        self._expiry: float | None = None
        self._task: asyncio.Task[None] | None = None

    def _resolve(self) -> tuple[Credentials, float | None]:
        import botocore.session  # imported lazily: the data plane may run without AWS targets

        if self._source is None:
            session = botocore.session.Session(profile=self.profile)
            self._source = session.get_credentials()
            if self._source is None:
                raise NoCredentialsError("no AWS credentials found by the default chain")
        frozen = self._source.get_frozen_credentials()  # may refresh (blocking): we are in a thread
        expiry = getattr(self._source, "_expiry_time", None)
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token), (
            expiry.timestamp() if expiry is not None else None
        )

    async def _refresh(self) -> None:
        creds, expiry = await asyncio.to_thread(self._resolve)
        self._frozen, self._expiry = creds, expiry

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._loop(), name="aws-credentials-refresh")

    async def _loop(self) -> None:
        while True:
            if self._expiry is None:
                delay = self.static_recheck
            else:
                delay = max(5.0, self._expiry - time.time() - self.refresh_margin)
            await asyncio.sleep(delay)
            try:
                await self._refresh()
            except Exception:  # noqa: BLE001 - keep the last good credentials, retry soon
                log.exception("refreshing AWS credentials failed; retrying in 30 s")
                await asyncio.sleep(30.0)

    def current(self) -> Credentials:
        if self._frozen is None:
            raise NoCredentialsError("AWS credentials are not resolved yet")
        return self._frozen

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# ---------------------------------------------------------------------------------------
# invocation
# ---------------------------------------------------------------------------------------


class InvokeOutcome(enum.Enum):
    OK = "ok"  # 2xx without X-Amz-Function-Error
    FUNCTION_ERROR = "function_error"  # X-Amz-Function-Error
    THROTTLED = "throttled"  # 429
    CLIENT_ERROR = "client_error"  # other 4xx from the Lambda API (payload, auth, not found)
    SERVER_ERROR = "server_error"  # 5xx from the Lambda API
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # connect error, reset, credentials missing


@dataclass
class InvokeResult:
    outcome: InvokeOutcome
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    detail: str = ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for n, v in self.headers:
            if n == lname or n.lower() == lname:
                return v
        return None


class LambdaClient:
    """Invokes functions; one pooled client, one signer per region."""

    def __init__(
        self,
        credentials: CredentialProvider,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64, keepalive_expiry=30.0),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )
        # The Lambda path: same limits and timeouts, same default headers as the httpx client.
        self._transport = transport
        self._pool = http1.HTTP1Pool(
            timeout=timeout, connect_timeout=connect_timeout, max_connections=max_connections,
            max_keepalive=64, keepalive_expiry=30.0,
            default_headers=[(n.encode("ascii"), v.encode("ascii")) for n, v in self._client.headers.items()],
        )
        self._signers: dict[str, Signer] = {}
        self._plans: dict[LambdaTarget, _InvokePlan] = {}

    @property
    def http(self) -> httpx.AsyncClient:
        return self._client

    def _signer(self, region: str) -> Signer:
        signer = self._signers.get(region)
        if signer is None:
            signer = self._signers[region] = Signer("lambda", region)
        return signer

    def _plan(self, target: LambdaTarget) -> _InvokePlan:
        plan = self._plans.get(target)
        if plan is None:
            if len(self._plans) > 1024:
                self._plans.clear()
            plan = self._plans[target] = _InvokePlan(target, self._signer(target.region), self._pool)
        return plan

    async def invoke(self, target: LambdaTarget, payload: bytes) -> InvokeResult:
        plan = self._plans.get(target) or self._plan(target)
        try:
            creds = self.credentials.current()
        except Exception as exc:  # noqa: BLE001
            return InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"no AWS credentials: {exc}")
        head = None if self._transport is not None else plan.head(creds, payload)
        if head is None:  # httpx transport (tests), or a value the fast path does not vouch for
            headers = plan.headers + self._signer(target.region).sign("POST", plan.url, plan.headers, payload, creds,
                                                                      datetime.now(UTC))
            if self._transport is not None:
                return await self._invoke_httpx(plan.url, headers, payload)
            request = self._pool.request(b"POST", plan.url, [(n.encode("latin-1"), v.encode("latin-1"))
                                                             for n, v in headers], payload)
        else:
            request = self._pool.send(plan.key, head, payload)  # type: ignore[arg-type]
        try:
            resp = await request
        except http1.HTTPTimeout as exc:
            return InvokeResult(InvokeOutcome.TIMEOUT, detail=f"{type(exc).__name__}")
        except http1.HTTPError as exc:
            return InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"{type(exc).__name__}: {exc}")
        return _classify(InvokeResult(InvokeOutcome.OK, resp.status, resp.headers, resp.body))

    def invoke_nowait(self, target: LambdaTarget, payload: bytes, done: Callable[[InvokeResult], None]) -> bool:
        """:meth:`invoke` driven by callbacks, when an idle pooled connection is free (no task,
        no coroutine chain on the common path); ``done`` gets the same InvokeResult. Returns
        False, having sent nothing, when it cannot: the caller awaits :meth:`invoke` instead."""
        if self._transport is not None:
            return False
        plan = self._plans.get(target) or self._plan(target)
        try:
            creds = self.credentials.current()
        except Exception:  # noqa: BLE001 - invoke() reports it
            return False
        head = plan.head(creds, payload)
        if head is None:
            return False

        def on_response(resp: http1.Response | http1.HTTPError) -> None:
            if isinstance(resp, http1.HTTPTimeout):
                done(InvokeResult(InvokeOutcome.TIMEOUT, detail=f"{type(resp).__name__}"))
            elif isinstance(resp, http1.HTTPError):
                done(InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"{type(resp).__name__}: {resp}"))
            else:
                done(_classify(InvokeResult(InvokeOutcome.OK, resp.status, resp.headers, resp.body)))

        return self._pool.send_nowait(plan.key, head, payload, b"POST", on_response)

    async def _invoke_httpx(self, url: str, headers: list[tuple[str, str]], payload: bytes) -> InvokeResult:
        try:
            resp = await self._client.post(url, content=payload, headers=headers)
        except httpx.TimeoutException as exc:
            return InvokeResult(InvokeOutcome.TIMEOUT, detail=f"{type(exc).__name__}")
        except httpx.HTTPError as exc:
            return InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"{type(exc).__name__}: {exc}")
        return _classify(InvokeResult(InvokeOutcome.OK, resp.status_code, list(resp.headers.multi_items()),
                                      resp.content))

    async def aclose(self) -> None:
        try:
            await self._pool.aclose()
        finally:
            await self._client.aclose()


try:  # CPython's own SHA-256: for a few hundred bytes it beats OpenSSL 3's EVP machinery, above
    from _sha256 import sha256 as _sha256  # all when the CPU caches are cold (a quiet gateway)
except ImportError:  # pragma: no cover - other interpreters
    _sha256 = hashlib.sha256


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 inner and outer states for ``key`` (RFC 2104), to be copied per message."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return _sha256(bytes(b ^ 0x36 for b in key)), _sha256(bytes(b ^ 0x5C for b in key))


def _hmac_hex(pads: tuple[Any, Any], msg: bytes) -> str:
    inner = pads[0].copy()
    inner.update(msg)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


_HEADER_VALUE = re.compile(rb"([^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")  # h11's field_value


def _clean_value(value: str) -> bool:
    """True if h11 would send this header value unchanged (ASCII, its field-value grammar)."""
    try:
        return _HEADER_VALUE.fullmatch(value.encode("ascii")) is not None
    except UnicodeEncodeError:
        return False


class _Stamp:
    """X-Amz-Date for the current second (what ``amz_date(datetime.now(UTC))`` gives)."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.value = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
            cls.second = t
        return cls.value


class _InvokePlan:
    """Everything about invoking one target that does not change between requests.

    ``headers`` are the unsigned request headers (as the generic path sends them). ``head()``
    returns the complete request head (request line, headers in the order h11 writes them,
    signed) for the current second, or None when the fast path cannot vouch for the result
    (non-ASCII or unusual values, a Signer whose output does not have the expected shape):
    the caller then signs with :class:`Signer` and builds the request with h11.

    The per-(credentials, day) template is derived from :meth:`Signer.sign_details` itself:
    its canonical request is split around the date and the payload hash, and the template's
    Authorization for that probe must equal the Signer's, or the fast path stays off.
    """

    __slots__ = ("url", "key", "target", "host", "headers", "signer", "region", "ok", "_prefix", "_tpl")

    def __init__(self, target: LambdaTarget, signer: Signer, pool: http1.HTTP1Pool) -> None:
        self.url = url = target.invoke_url
        host = urlsplit(url).netloc
        if host.endswith(":443") and url.startswith("https:"):
            host = host[:-4]
        elif host.endswith(":80") and url.startswith("http:"):
            host = host[:-3]
        self.host = host
        self.headers = [
            ("Host", host),
            ("Content-Type", "application/json"),
            ("X-Amz-Invocation-Type", "Event" if target.asynchronous else "RequestResponse"),
        ]
        self.signer = signer
        self.region = target.region
        self._tpl: tuple[Any, ...] | None = None
        try:
            self.key, self.target = pool.split(url)
        except http1.HTTPError:
            self.ok = False  # the generic path reports it (ConnectError) exactly as before
            return
        self.ok = all(_clean_value(v) for _, v in self.headers) and all(
            _clean_value(v.decode("latin-1")) for _, v in pool.default_headers)
        # h11 writes Host first, then the others in order
        lines = [b"POST %s HTTP/1.1\r\n" % self.target, b"Host: %s\r\n" % host.encode("ascii", "replace")]
        lines += [b"%s: %s\r\n" % (n, v) for n, v in pool.default_headers if n.lower() != b"host"]
        lines += [f"{n}: {v}\r\n".encode("ascii", "replace") for n, v in self.headers[1:]]
        self._prefix = b"".join(lines)

    def _template(self, creds: Credentials, stamp: str) -> tuple[Any, ...] | None:
        datestamp = stamp[:8]
        probe_stamp = datestamp + "T000000Z"
        probe_now = datetime(int(datestamp[:4]), int(datestamp[4:6]), int(datestamp[6:8]), tzinfo=UTC)
        try:
            sd = self.signer.sign_details("POST", self.url, self.headers, b"", creds, probe_now)
        except Exception:  # noqa: BLE001 - the generic path raises it where it always did
            return None
        names = [n for n, _ in sd.headers]
        expected = ["X-Amz-Date", "X-Amz-Security-Token", "Authorization"] if creds.token else ["X-Amz-Date", "Authorization"]
        creq = sd.canonical_request
        if names != expected or not creq.endswith("\n" + EMPTY_SHA256) or not creds.access_key:
            return None
        parts = creq[: -len(EMPTY_SHA256)].split(probe_stamp)
        if len(parts) != 2 or any(not _clean_value(v) for _, v in sd.headers):
            return None
        pre, mid = parts
        key = derive_signing_key(creds.secret_key, datestamp, self.signer.region, self.signer.service)
        authz_prefix = f"{ALGORITHM} Credential={creds.access_key}/{sd.credential_scope}, " \
                       f"SignedHeaders={sd.signed_headers}, Signature="
        token_line = f"X-Amz-Security-Token: {creds.token}\r\n".encode("ascii") if creds.token else b""
        tpl = (creds, datestamp, pre, mid, f"\n{sd.credential_scope}\n", _hmac_pads(key),
               self._prefix + b"X-Amz-Date: ", b"\r\n" + token_line + b"Authorization: " + authz_prefix.encode("ascii"))
        if authz_prefix + self._signature(tpl, probe_stamp, EMPTY_SHA256) != sd.authorization:
            return None
        return tpl

    @staticmethod
    def _signature(tpl: tuple[Any, ...], stamp: str, payload_hash: str) -> str:
        creq = f"{tpl[2]}{stamp}{tpl[3]}{payload_hash}"
        sts = f"{ALGORITHM}\n{stamp}{tpl[4]}{_sha256(creq.encode('utf-8', 'surrogateescape')).hexdigest()}"
        return _hmac_hex(tpl[5], sts.encode("utf-8", "surrogateescape"))

    def head(self, creds: Credentials, payload: bytes) -> bytes | None:
        if not self.ok:
            return None
        stamp = _Stamp.now()
        tpl = self._tpl
        if tpl is None or tpl[0] is not creds or tpl[1] != stamp[:8]:
            tpl = self._template(creds, stamp)
            if tpl is None:
                return None
            self._tpl = tpl
        payload_hash = _sha256(payload).hexdigest() if payload else EMPTY_SHA256
        signature = self._signature(tpl, stamp, payload_hash)
        return b"".join((tpl[6], stamp.encode("ascii"), tpl[7], signature.encode("ascii"),
                         b"\r\nContent-Length: ", str(len(payload)).encode("ascii"), b"\r\n\r\n"))


def _classify(result: InvokeResult) -> InvokeResult:
    if result.status == 429:
        result.outcome = InvokeOutcome.THROTTLED
    elif result.status >= 500:
        result.outcome = InvokeOutcome.SERVER_ERROR
    elif result.status >= 300:
        result.outcome = InvokeOutcome.CLIENT_ERROR
    elif result.header("x-amz-function-error") is not None:
        result.outcome = InvokeOutcome.FUNCTION_ERROR
    if result.outcome is not InvokeOutcome.OK:
        result.detail = _error_detail(result)
    return result


def _error_detail(result: InvokeResult) -> str:
    """A short description from Lambda's error JSON (type and message), never a stack trace."""
    try:
        doc = json.loads(result.body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        kind = doc.get("errorType") or doc.get("Type") or doc.get("__type") or result.header("x-amzn-errortype") or ""
        msg = doc.get("errorMessage") or doc.get("message") or doc.get("Message") or ""
        return f"{kind}: {msg}"[:300].strip(": ")
    # AWS-compatible endpoints that answer in XML (moto's IAM errors): <Code> and <Message>
    text = result.body[:4096].decode("utf-8", "replace")
    code, message = _xml_field(text, "Code"), _xml_field(text, "Message")
    if code or message:
        return f"{code}: {message}"[:300].strip(": ")
    return (result.header("x-amzn-errortype") or f"HTTP {result.status}")[:300]


def _xml_field(text: str, tag: str) -> str:
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>", start)
    return text[start + len(tag) + 2:end].strip() if start != -1 and end != -1 else ""
