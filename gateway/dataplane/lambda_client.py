"""Lambda Invoke over a pooled async HTTP client, signed with SigV4.

* one lean HTTP/1.1 keep-alive pool (``gateway.dataplane.http1``, h11 on asyncio streams)
  for every function; an ``httpx.AsyncClient`` (``LambdaClient.http``) serves plain HTTP
  upstreams, and the Lambda calls too when a custom httpx ``transport`` is given;
* credentials never fetched on the request path: a provider resolves them (boto3's
  default chain runs in a worker thread) and refreshes them in the background before
  they expire; a request only reads the cached frozen value;
* the SigV4 signing key is derived once per (secret, day, region, service) by
  ``gateway.awslambda.sigv4`` (``derive_signing_key`` is cached);
* outcomes are classified for the gateway: OK / function error / throttled / Lambda
  error / timeout / unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from gateway.awslambda.sigv4 import Credentials, Signer
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
            if n.lower() == lname:
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

    @property
    def http(self) -> httpx.AsyncClient:
        return self._client

    def _signer(self, region: str) -> Signer:
        signer = self._signers.get(region)
        if signer is None:
            signer = self._signers[region] = Signer("lambda", region)
        return signer

    async def invoke(self, target: LambdaTarget, payload: bytes) -> InvokeResult:
        url = target.invoke_url
        host = urlsplit(url).netloc
        if host.endswith(":443") and url.startswith("https:"):
            host = host[:-4]
        elif host.endswith(":80") and url.startswith("http:"):
            host = host[:-3]
        headers = [
            ("Host", host),
            ("Content-Type", "application/json"),
            ("X-Amz-Invocation-Type", "Event" if target.asynchronous else "RequestResponse"),
        ]
        try:
            creds = self.credentials.current()
        except Exception as exc:  # noqa: BLE001
            return InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"no AWS credentials: {exc}")
        headers += self._signer(target.region).sign("POST", url, headers, payload, creds, datetime.now(UTC))
        if self._transport is not None:
            return await self._invoke_httpx(url, headers, payload)
        try:
            resp = await self._pool.request(b"POST", url, [(n.encode("latin-1"), v.encode("latin-1"))
                                                           for n, v in headers], payload)
        except http1.HTTPTimeout as exc:
            return InvokeResult(InvokeOutcome.TIMEOUT, detail=f"{type(exc).__name__}")
        except http1.HTTPError as exc:
            return InvokeResult(InvokeOutcome.UNREACHABLE, detail=f"{type(exc).__name__}: {exc}")
        return _classify(InvokeResult(InvokeOutcome.OK, resp.status, resp.headers, resp.body))

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
