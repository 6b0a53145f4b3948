"""The local Lambda, driven by boto3's real Lambda client, raw HTTP, and cross-checked with moto.

Handlers live in a module written to a temporary directory and loaded as ``module:function``,
the way ``terminus lambda local`` will load user code.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.awslambda.local import LocalLambda, run_in_thread
from gateway.awslambda.sigv4 import UNSIGNED_HEADERS, Credentials, Signer
from tests.support.moto import set_auth_counter, threaded_moto

REGION = "us-east-1"
ACCOUNT = "123456789012"
GOOD = Credentials("AKIDLOCALTEST", "local/secret+key")
TEMP = Credentials("ASIALOCALTEMP", "temp-secret", "session-token-1")
HANDLER_MODULE = "terminus_local_lambda_test_handlers"

HANDLERS_SOURCE = '''
import base64, threading, time

EVENTS = []
LOCK = threading.Lock()

def echo(event, context):
    return {
        "event": event,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "client_context": None if context.client_context is None else context.client_context.custom,
    }

def fail(event, context):
    raise ValueError(f"bad input: {event.get('x')}")

def envelope(event, context):
    """Envoy aws_lambda (payload_passthrough: false) style: base64 body in, reversed body out."""
    raw = base64.b64decode(event["body"]) if event["is_base64_encoded"] else event["body"].encode()
    return {"status_code": 201, "headers": {"x-len": str(len(raw))},
            "body": base64.b64encode(raw[::-1]).decode(), "is_base64_encoded": True}

def slow(event, context):
    time.sleep(event.get("sleep", 0.5))
    return {"slept": event.get("sleep", 0.5), "thread": threading.current_thread().name}

def record(event, context):
    with LOCK:
        EVENTS.append(event)

def unmarshalable(event, context):
    return b"raw bytes"
'''

FUNCTIONS = {
    "echo": f"{HANDLER_MODULE}:echo",
    "fail": f"{HANDLER_MODULE}:fail",
    "envelope": f"{HANDLER_MODULE}:envelope",
    "slow": f"{HANDLER_MODULE}:slow",
    "record": f"{HANDLER_MODULE}:record",
    "unmarshalable": f"{HANDLER_MODULE}:unmarshalable",
}


@pytest.fixture(scope="module")
def handlers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("handlers")
    (directory / f"{HANDLER_MODULE}.py").write_text(textwrap.dedent(HANDLERS_SOURCE))
    sys.path.insert(0, str(directory))
    try:
        yield __import__(HANDLER_MODULE)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(HANDLER_MODULE, None)


@pytest.fixture(scope="module")
def lam(handlers: Any) -> Iterator[LocalLambda]:
    with run_in_thread(FUNCTIONS, credentials=[GOOD, TEMP], region=REGION, account_id=ACCOUNT) as server:
        yield server


def client(lam: LocalLambda, creds: Credentials = GOOD, region: str = REGION) -> Any:
    return boto3.client(
        "lambda", endpoint_url=lam.endpoint_url, region_name=region,
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30, connect_timeout=5),
    )


def counters(lam: LocalLambda) -> dict[str, int]:
    r = httpx.get(f"{lam.endpoint_url}/_terminus/invocations", timeout=5)
    assert r.status_code == 200
    return r.json()


def signed_post(
    lam: LocalLambda, path: str, body: bytes, *, creds: Credentials = GOOD, now: datetime | None = None,
    headers: list[tuple[str, str]] | None = None, signer: Signer | None = None, region: str = REGION,
) -> httpx.Response:
    """POST signed by terminus's own signer, sent with httpx (as the gateway will do)."""
    url = f"{lam.endpoint_url}{path}"
    base = headers or [("Content-Type", "application/json")]
    auth = (signer or Signer("lambda", region)).sign("POST", url, base, body, creds, now or datetime.now(UTC))
    return httpx.post(url, headers=base + auth, content=body, timeout=10)


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    resp = exc.value.response
    return resp["Error"]["Code"], resp["Error"]["Message"], resp["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------------------------------------
# Happy paths through boto3
# ---------------------------------------------------------------------------------------------


def test_request_response_returns_handler_json(lam: LocalLambda) -> None:
    r = client(lam).invoke(FunctionName="echo", Payload=json.dumps({"hello": "world"}).encode())
    assert r["StatusCode"] == 200
    assert r["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in r
    out = json.loads(r["Payload"].read())
    assert out["event"] == {"hello": "world"}
    assert out["function_name"] == "echo"
    assert out["arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo"
    assert out["request_id"] == r["ResponseMetadata"]["RequestId"]
    assert 0 < out["remaining"] <= 30_000
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/json"


def test_names_arns_and_qualifiers(lam: LocalLambda) -> None:
    c = client(lam)
    cases = {
        "echo": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo",
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo",
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo:live": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo:live",
        f"{ACCOUNT}:function:echo": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo",
        "echo:blue": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo:blue",
    }
    for name, arn in cases.items():
        out = json.loads(c.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
        assert out["arn"] == arn, name
    out = json.loads(c.invoke(FunctionName="echo", Qualifier="$LATEST", Payload=b"{}")["Payload"].read())
    assert out["arn"].endswith(":function:echo:$LATEST")


def test_session_token_credentials(lam: LocalLambda) -> None:
    r = client(lam, TEMP).invoke(FunctionName="echo", Payload=b'{"t": 1}')
    assert json.loads(r["Payload"].read())["event"] == {"t": 1}
    before = counters(lam)
    with pytest.raises(ClientError) as exc:
        client(lam, Credentials(TEMP.access_key, TEMP.secret_key, "stolen-token")).invoke(FunctionName="echo")
    assert error_of(exc)[0] == "UnrecognizedClientException"
    assert counters(lam) == before


def test_empty_payload_and_client_context(lam: LocalLambda) -> None:
    ctx = base64.b64encode(json.dumps({"custom": {"k": "v"}, "client": {}, "env": {}}).encode()).decode()
    out = json.loads(client(lam).invoke(FunctionName="echo", ClientContext=ctx)["Payload"].read())
    assert out["event"] == {}
    assert out["client_context"] == {"k": "v"}


def test_binary_body_in_json_envelope(lam: LocalLambda) -> None:
    raw = bytes(range(256)) * 4
    event = {"raw_path": "/upload?x=1", "method": "POST", "headers": {"content-type": "application/octet-stream"},
             "query_string_parameters": {"x": "1"}, "body": base64.b64encode(raw).decode(), "is_base64_encoded": True}
    out = json.loads(client(lam).invoke(FunctionName="envelope", Payload=json.dumps(event).encode())["Payload"].read())
    assert out["status_code"] == 201 and out["is_base64_encoded"] is True
    assert base64.b64decode(out["body"]) == raw[::-1]
    assert out["headers"] == {"x-len": "1024"}


def test_large_unicode_json_payload(lam: LocalLambda) -> None:
    event = {"text": "héllo ✓ " * 50_000, "n": list(range(1000))}
    out = json.loads(client(lam).invoke(FunctionName="echo", Payload=json.dumps(event).encode())["Payload"].read())
    assert out["event"] == event


def test_event_invocation_is_202_and_runs_in_background(lam: LocalLambda, handlers: Any) -> None:
    before = counters(lam)["record"]
    r = client(lam).invoke(FunctionName="record", InvocationType="Event", Payload=b'{"async": 1}')
    assert r["StatusCode"] == 202
    assert r["Payload"].read() == b""
    deadline = time.monotonic() + 5
    while {"async": 1} not in handlers.EVENTS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {"async": 1} in handlers.EVENTS
    assert counters(lam)["record"] == before + 1


def test_dry_run_is_204_and_never_calls_the_function(lam: LocalLambda) -> None:
    before = counters(lam)
    assert client(lam).invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    assert counters(lam) == before


# ---------------------------------------------------------------------------------------------
# Function errors
# ---------------------------------------------------------------------------------------------


def test_handler_exception_is_unhandled_function_error(lam: LocalLambda) -> None:
    r = client(lam).invoke(FunctionName="fail", Payload=b'{"x": 42}')
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    body = json.loads(r["Payload"].read())
    assert body["errorMessage"] == "bad input: 42"
    assert body["errorType"] == "ValueError"
    assert body["requestId"] == r["ResponseMetadata"]["RequestId"]
    assert any("in fail" in frame and "raise ValueError" in frame for frame in body["stackTrace"])
    assert not any("_call_handler" in frame for frame in body["stackTrace"])


def test_unserializable_result_is_marshal_error(lam: LocalLambda) -> None:
    r = client(lam).invoke(FunctionName="unmarshalable", Payload=b"{}")
    assert r["FunctionError"] == "Unhandled"
    body = json.loads(r["Payload"].read())
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"].startswith("Unable to marshal response:")


def test_timeout_is_unhandled_task_timed_out(handlers: Any) -> None:
    with run_in_thread({"slow": f"{HANDLER_MODULE}:slow"}, credentials=[GOOD], timeout=0.3) as small:
        start = time.monotonic()
        r = client(small).invoke(FunctionName="slow", Payload=b'{"sleep": 1.0}')
        assert time.monotonic() - start < 0.9
        assert r["FunctionError"] == "Unhandled"
        assert "Task timed out after 0.30 seconds" in json.loads(r["Payload"].read())["errorMessage"]


# ---------------------------------------------------------------------------------------------
# Rejections, proven never to reach the function
# ---------------------------------------------------------------------------------------------


def test_wrong_secret_is_invalid_signature_and_never_invokes(lam: LocalLambda) -> None:
    before = counters(lam)
    with pytest.raises(ClientError) as exc:
        client(lam, Credentials(GOOD.access_key, "not-the-secret")).invoke(FunctionName="echo", Payload=b'{"a": 1}')
    code, message, status = error_of(exc)
    assert (code, status) == ("InvalidSignatureException", 403)
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "InvalidSignatureException"
    assert counters(lam) == before


def test_raw_error_bodies_match_aws_shapes(lam: LocalLambda) -> None:
    r = signed_post(lam, "/2015-03-31/functions/echo/invocations", b"{}", creds=Credentials(GOOD.access_key, "nope"))
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert r.json()["Type"] == "User"
    assert r.json()["message"].startswith("The request signature we calculated does not match")
    r = signed_post(lam, "/2015-03-31/functions/ghost/invocations", b"{}")
    assert r.status_code == 404
    assert r.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert r.json() == {"Type": "User", "Message": f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:ghost"}


def test_unknown_access_key_and_missing_auth(lam: LocalLambda) -> None:
    before = counters(lam)
    with pytest.raises(ClientError) as exc:
        client(lam, Credentials("AKIDUNKNOWN", "x")).invoke(FunctionName="echo")
    assert error_of(exc)[:1] == ("UnrecognizedClientException",)
    r = httpx.post(f"{lam.endpoint_url}/2015-03-31/functions/echo/invocations", content=b"{}", timeout=5)
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert r.json()["message"] == "Missing Authentication Token"
    assert counters(lam) == before


def test_expired_wrong_region_and_tampered_requests(lam: LocalLambda) -> None:
    before = counters(lam)
    path = "/2015-03-31/functions/echo/invocations"
    old = signed_post(lam, path, b"{}", now=datetime.now(UTC) - timedelta(minutes=10))
    assert old.status_code == 403 and old.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert old.json()["message"].startswith("Signature expired:")
    with pytest.raises(ClientError) as exc:
        client(lam, region="us-west-2").invoke(FunctionName="echo")  # moto would accept this (§2.1 caveat 3)
    code, message, _ = error_of(exc)
    assert code == "InvalidSignatureException" and "us-west-2" in message
    # Signed one body, sent another.
    url = f"{lam.endpoint_url}{path}"
    auth = Signer("lambda", REGION).sign("POST", url, [], b'{"a":1}', GOOD, datetime.now(UTC))
    r = httpx.post(url, headers=auth, content=b'{"a":2}', timeout=5)
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert counters(lam) == before


def test_unknown_function_is_resource_not_found(lam: LocalLambda) -> None:
    before = counters(lam)
    c = client(lam)
    with pytest.raises(c.exceptions.ResourceNotFoundException) as exc:
        c.invoke(FunctionName="does-not-exist", Payload=b"{}")
    code, message, status = error_of(exc)
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert message == f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:does-not-exist"
    with pytest.raises(c.exceptions.ResourceNotFoundException) as exc:
        c.invoke(FunctionName=f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:echo")  # right name, other region
    assert "eu-west-1" in error_of(exc)[1]
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.invoke(FunctionName="210987654321:function:echo")  # right name, other account
    assert counters(lam) == before


def test_non_json_payload_is_invalid_request_content(lam: LocalLambda) -> None:
    before = counters(lam)
    c = client(lam)
    for payload in (b"\x00\x01\xff binary", b"not json"):
        with pytest.raises(c.exceptions.InvalidRequestContentException) as exc:
            c.invoke(FunctionName="echo", Payload=payload)
        assert error_of(exc)[2] == 400
    assert counters(lam) == before


def test_oversized_payload_is_refused_before_the_body(lam: LocalLambda) -> None:
    """With Expect: 100-continue the client learns of the 413 without sending 6 MB."""
    url = f"{lam.endpoint_url}/2015-03-31/functions/echo/invocations"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(7 * 1024 * 1024))]
    auth = Signer("lambda", REGION).sign("POST", url, headers, b"", GOOD, datetime.now(UTC))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers + auth)
    with socket.create_connection(("127.0.0.1", lam.port), timeout=5) as s:
        s.sendall(f"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1:{lam.port}\r\n"
                  f"Expect: 100-continue\r\n{head}\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"RequestTooLargeException" in reply


# ---------------------------------------------------------------------------------------------
# Gateway-style signing (terminus's signer, Envoy's header set) and the event loop
# ---------------------------------------------------------------------------------------------


def test_envoy_style_request_signed_by_terminus(lam: LocalLambda) -> None:
    """Raw ARN in the path, x-amz-content-sha256, user-agent signed: all verified."""
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:echo"
    signer = Signer("lambda", REGION, content_sha256_header=True, unsigned_headers=UNSIGNED_HEADERS - {"user-agent"})
    headers = [("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse"),
               ("User-Agent", "envoy"), ("X-Request-Id", "abc   def")]
    r = signed_post(lam, f"/2015-03-31/functions/{arn}/invocations", b'{"envoy": true}', headers=headers, signer=signer)
    assert r.status_code == 200, r.text
    assert r.json()["event"] == {"envoy": True}
    assert r.headers["X-Amz-Executed-Version"] == "$LATEST"


def test_slow_handlers_do_not_block_the_loop(lam: LocalLambda) -> None:
    results: list[Any] = []

    def call() -> None:
        r = client(lam).invoke(FunctionName="slow", Payload=b'{"sleep": 2.0}')
        results.append(json.loads(r["Payload"].read()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    counters(lam)  # answered while four handlers are still sleeping...
    assert len(results) == 0  # ...which the order of events shows, with no timing threshold
    for t in threads:
        t.join(10)
    assert len(results) == 4
    assert len({r["thread"] for r in results}) == 4  # they ran side by side, each on its own worker


def test_unknown_route_and_counter_endpoint(lam: LocalLambda) -> None:
    r = httpx.get(f"{lam.endpoint_url}/2015-03-31/functions", timeout=5)
    assert r.status_code == 404 and r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert set(counters(lam)) == set(FUNCTIONS)


def test_without_credentials_verification_is_off(handlers: Any) -> None:
    """Development mode: no credentials configured, unsigned requests are served."""
    with run_in_thread({"echo": f"{HANDLER_MODULE}:echo"}) as open_lambda:
        r = httpx.post(f"{open_lambda.endpoint_url}/2015-03-31/functions/echo/invocations", content=b'{"x":1}', timeout=5)
        assert r.status_code == 200 and r.json()["event"] == {"x": 1}
        assert open_lambda.invocations() == {"echo": 1}


def test_handler_specs_fail_early(handlers: Any) -> None:
    with pytest.raises(ModuleNotFoundError):
        LocalLambda({"x": "no_such_module_terminus:fn"})
    with pytest.raises(AttributeError):
        LocalLambda({"x": f"{HANDLER_MODULE}:missing"})
    with pytest.raises(ValueError):
        LocalLambda({"x": "nocolon"})


async def test_async_start_stop_and_loopback_only(handlers: Any) -> None:
    lam = LocalLambda(FUNCTIONS, credentials=[GOOD])
    with pytest.raises(ValueError, match="loopback"):
        await lam.start("0.0.0.0", 0)
    await lam.start("127.0.0.1", 0)
    try:
        url = f"{lam.endpoint_url}/2015-03-31/functions/echo/invocations"
        auth = Signer("lambda", REGION).sign("POST", url, [], b'{"async": true}', GOOD, datetime.now(UTC))
        async with httpx.AsyncClient() as http:
            r = await http.post(url, headers=auth, content=b'{"async": true}')
        assert r.status_code == 200 and r.json()["event"] == {"async": True}
        assert lam.invocations()["echo"] == 1
    finally:
        await lam.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lam.port), timeout=1).close()


# ---------------------------------------------------------------------------------------------
# moto cross-check: terminus's signatures against botocore-based verification (§2.2)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with threaded_moto() as endpoint:
        yield endpoint


def test_moto_iam_auth_accepts_terminus_signatures(moto_endpoint: str) -> None:
    ep = moto_endpoint
    set_auth_counter(ep, b"3")
    iam = boto3.client("iam", endpoint_url=ep, region_name=REGION,
                       aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="gw")
    key = iam.create_access_key(UserName="gw")["AccessKey"]
    iam.put_user_policy(UserName="gw", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["lambda:*"], "Resource": "*"}]}))
    good = Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    def send(path: str, body: bytes, creds: Credentials, signer: Signer | None = None) -> httpx.Response:
        url = f"{ep}{path}"
        headers = [("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse")]
        auth = (signer or Signer("lambda", REGION)).sign("POST", url, headers, body, creds, datetime.now(UTC))
        return httpx.post(url, headers=headers + auth, content=body, timeout=10)

    r = send("/2015-03-31/functions/fn/invocations", b'{"via":"terminus"}', good)
    assert (r.status_code, r.text) == (200, '{"via":"terminus"}')
    arn_path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Afn/invocations"
    r = send(arn_path, b'{"arn":true}', good)  # percent-encoded ARN: the double-encoding rule
    assert (r.status_code, r.text) == (200, '{"arn":true}')
    r = send("/2015-03-31/functions/fn/invocations?Qualifier=%24LATEST", b'{"q":1}', good,
             Signer("lambda", REGION, content_sha256_header=True))
    assert (r.status_code, r.text) == (200, '{"q":1}')
    r = send("/2015-03-31/functions/fn/invocations", b'{"via":"terminus"}', Credentials(good.access_key, "wrong"))
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text
    r = send("/2015-03-31/functions/fn/invocations", b"{}", Credentials("AKIANOTINMOTO0000000", "x"))
    assert r.status_code == 403 and "InvalidClientTokenId" in r.text
