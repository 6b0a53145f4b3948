"""SigV4 signer and verifier against the aws-c-auth v4 suite and botocore, byte for byte.

The suite is read in place from /work/shared/oracles/sigv4 (or $TERMINUS_SIGV4_SUITE) and is
never copied into the repository; without it these tests fail, they do not skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials

from gateway.awslambda import sigv4
from gateway.awslambda.sigv4 import Credentials, Signer, verify

SUITE_ENV = "TERMINUS_SIGV4_SUITE"


def suite_root() -> Path:
    """The suite directory, in place: $TERMINUS_SIGV4_SUITE, else <repo>/../shared/oracles/sigv4."""
    env = os.environ.get(SUITE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "oracles" / "sigv4"


SUITE = suite_root()
MISSING_MESSAGE = (
    f"SigV4 test suite not found at {SUITE} (expected v4/<case>/context.json etc.). "
    f"Point ${SUITE_ENV} at the aws-c-auth suite directory; these tests do not skip without it."
)

# The 29 cases the suite's README lists as applying to a non-S3 signer such as Lambda.
LAMBDA_CASES = frozenset("""
get-header-key-duplicate get-header-value-multiline get-header-value-order get-header-value-trim
get-relative-normalized get-relative-relative-normalized get-slash-dot-slash-normalized
get-slash-normalized get-slash-pointless-dot-normalized get-slashes-normalized get-space-normalized
get-unreserved get-utf8 get-vanilla get-vanilla-empty-query-key get-vanilla-query
get-vanilla-query-order-encoded get-vanilla-query-order-key-case get-vanilla-query-unreserved
get-vanilla-utf8-query get-vanilla-with-session-token post-header-key-case post-header-key-sort
post-header-value-case post-sts-header-after post-sts-header-before post-vanilla
post-vanilla-empty-query-value post-vanilla-query
""".split())


def all_cases() -> list[str]:
    v4 = SUITE / "v4"
    if not v4.is_dir():
        return ["<suite-missing>"]
    return sorted(p.name for p in v4.iterdir() if (p / "context.json").is_file())


def require_suite() -> Path:
    if not (SUITE / "v4").is_dir():
        pytest.fail(MISSING_MESSAGE, pytrace=False)
    return SUITE / "v4"


@dataclass
class Case:
    name: str
    context: dict[str, Any]
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    creq: str
    sts: str
    signature: str
    request_text: str
    signed_request_text: str

    @property
    def credentials(self) -> Credentials:
        c = self.context["credentials"]
        return Credentials(c["access_key_id"], c["secret_access_key"], c.get("token"))

    @property
    def now(self) -> datetime:
        return datetime.strptime(self.context["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    @property
    def url(self) -> str:
        host = next(v for k, v in self.headers if k.lower() == "host")
        return f"https://{host}{self.target}"

    def signer(self) -> Signer:
        ctx = self.context
        return Signer(
            ctx["service"], ctx["region"],
            normalize_path=ctx["normalize"],
            content_sha256_header=ctx["sign_body"],
            omit_session_token=ctx.get("omit_session_token", False),
        )


def parse_request(text: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """request.txt as the suite's README defines it.

    First line ``METHOD <path>[?query] HTTP/1.1`` (the path may contain raw spaces); then
    ``Name:value`` lines split at the first colon, a line starting with whitespace continues the
    previous value (kept with its line break, which canonicalisation folds); duplicates are
    kept in order; the body starts after the first empty line.
    """
    lines = text.split("\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.rpartition(" ")
    assert version.startswith("HTTP/"), lines[0]
    headers: list[tuple[str, str]] = []
    i = 1
    while i < len(lines) and lines[i] != "":
        line = lines[i]
        if line[0] in " \t":
            name, value = headers[-1]
            headers[-1] = (name, f"{value}\n{line}")
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
        i += 1
    body = "\n".join(lines[i + 1:]).encode() if i < len(lines) else b""
    return method, target, headers, body


def load_case(name: str) -> Case:
    d = require_suite() / name
    request_text = (d / "request.txt").read_text(encoding="utf-8")
    method, target, headers, body = parse_request(request_text)
    return Case(
        name=name,
        context=json.loads((d / "context.json").read_text()),
        method=method, target=target, headers=headers, body=body,
        creq=(d / "header-canonical-request.txt").read_text(encoding="utf-8"),
        sts=(d / "header-string-to-sign.txt").read_text(encoding="utf-8"),
        signature=(d / "header-signature.txt").read_text().strip(),
        request_text=request_text,
        signed_request_text=(d / "header-signed-request.txt").read_text(encoding="utf-8"),
    )


def applies_to_lambda(ctx: dict[str, Any]) -> bool:
    return bool(ctx["normalize"]) and not ctx["sign_body"]


# ---------------------------------------------------------------------------------------------
# The aws-c-auth suite
# ---------------------------------------------------------------------------------------------


def test_suite_present_and_lambda_subset_matches_readme() -> None:
    v4 = require_suite()
    assert (SUITE / "README.md").is_file(), MISSING_MESSAGE
    chosen = {n for n in all_cases() if applies_to_lambda(json.loads((v4 / n / "context.json").read_text()))}
    assert chosen == LAMBDA_CASES
    assert len(all_cases()) == 38


@pytest.mark.parametrize("name", sorted(LAMBDA_CASES))
def test_lambda_case_byte_for_byte(name: str) -> None:
    case = load_case(name)
    assert case.context["service"] == "service" and case.context["region"] == "us-east-1"
    signer = Signer(case.context["service"], case.context["region"],
                    omit_session_token=case.context.get("omit_session_token", False))
    result = signer.sign_details(case.method, case.url, case.headers, case.body, case.credentials, case.now)

    assert result.canonical_request == case.creq
    assert result.string_to_sign == case.sts
    assert result.signature == case.signature

    expected_authz = next(
        line.partition(":")[2] for line in case.signed_request_text.split("\n") if line.startswith("Authorization:")
    )
    assert result.authorization == expected_authz
    # The added headers are exactly the lines header-signed-request.txt has beyond request.txt.
    added_lines = sorted(set(case.signed_request_text.split("\n")) - set(case.request_text.split("\n")))
    assert sorted(f"{k}:{v}" for k, v in result.headers) == added_lines
    # The short API returns the same headers.
    assert signer.sign(case.method, case.url, case.headers, case.body, case.credentials, case.now) == result.headers
    assert signer.canonical_request(case.method, case.url, case.headers, case.body, case.credentials, case.now) == case.creq
    assert signer.string_to_sign(case.method, case.url, case.headers, case.body, case.credentials, case.now) == case.sts


@pytest.mark.parametrize("name", all_cases())
def test_every_case_with_its_own_flags(name: str) -> None:
    """Beyond Lambda: S3-style unnormalized paths and signed bodies match too with the flags set."""
    case = load_case(name)
    result = case.signer().sign_details(case.method, case.url, case.headers, case.body, case.credentials, case.now)
    assert (result.canonical_request, result.string_to_sign, result.signature) == (case.creq, case.sts, case.signature)


@pytest.mark.parametrize("name", sorted(LAMBDA_CASES))
def test_verify_accepts_suite_requests(name: str) -> None:
    """The verifier recomputes each suite request's signature from the signed request alone."""
    case = load_case(name)
    ctx = case.context
    signed = case.signer().sign(case.method, case.url, case.headers, case.body, case.credentials, case.now)
    err = verify(
        case.method, case.target, case.headers + signed, case.body, {case.credentials.access_key: case.credentials},
        service=ctx["service"], region=ctx["region"], now=case.now + timedelta(minutes=1),
    )
    assert err is None, (err, getattr(err, "message", ""))


# ---------------------------------------------------------------------------------------------
# Cross-check with botocore's SigV4Auth
# ---------------------------------------------------------------------------------------------

FUNCTION_CHARS = string.ascii_letters + string.digits + "-_"
HEADER_VALUE_CHARS = string.ascii_letters + string.digits + " \t-_.,;:/=+()'\"!?*&%$#@"


def botocore_authorization(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes, creds: Credentials,
    region: str, now: datetime,
) -> tuple[str, str]:
    req = AWSRequest(method=method, url=url, data=body)
    for k, v in headers:
        req.headers[k] = v
    auth = SigV4Auth(BotoCredentials(creds.access_key, creds.secret_key, creds.token), "lambda", region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now.replace(tzinfo=None)):
        auth.add_auth(req)
        authz = req.headers["Authorization"]
        del req.headers["Authorization"]  # as it was while botocore signed
        creq = auth.canonical_request(req)
    return authz, creq


def random_invoke(rng: random.Random) -> tuple[str, list[tuple[str, str]], bytes, str]:
    region = rng.choice(["us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2"])
    name = "".join(rng.choice(FUNCTION_CHARS) for _ in range(rng.randint(1, 64)))
    if rng.random() < 0.3:  # boto3 percent-encodes ARNs in the path; the signer encodes them again
        name = f"arn:aws:lambda:{region}:{rng.randint(10**11, 10**12 - 1)}:function:{name}"
    path_name = quote(name, safe="")
    query = ""
    if rng.random() < 0.4:
        qualifier = rng.choice(["$LATEST", "prod", "1", "v2-blue", "a b"])
        query = "?Qualifier=" + quote(qualifier, safe="")
    scheme, host = rng.choice([("https", f"lambda.{region}.amazonaws.com"), ("http", "127.0.0.1:9001")])
    url = f"{scheme}://{host}/2015-03-31/functions/{path_name}/invocations{query}"
    headers = [("X-Amz-Invocation-Type", rng.choice(["RequestResponse", "Event", "DryRun"]))]
    if rng.random() < 0.5:
        headers.append(("Content-Type", rng.choice(["application/json", "application/octet-stream"])))
    if rng.random() < 0.5:
        headers.append(("X-Amz-Log-Type", "Tail"))
    if rng.random() < 0.3:
        headers.append(("User-Agent", "Boto3/1.x Python/3.11"))  # never signed, by either signer
    for i in range(rng.randint(0, 3)):
        value = "".join(rng.choice(HEADER_VALUE_CHARS) for _ in range(rng.randint(0, 30)))
        headers.append((rng.choice([f"X-Custom-{i}", f"x-custom-{i}", f"X-CUSTOM-{i}"]), value))
    body = rng.choice([
        b"",
        json.dumps({"n": rng.randint(0, 10**9), "s": "é ✓"}).encode(),
        bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
    ])
    return url, headers, body, region


def test_random_invoke_requests_match_botocore() -> None:
    rng = random.Random(20260101)
    for i in range(400):
        url, headers, body, region = random_invoke(rng)
        creds = Credentials(
            "AKIA" + "".join(rng.choice(string.ascii_uppercase) for _ in range(16)),
            "".join(rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(40)),
            rng.choice([None, "FwoGZXIvYXdzE" + "".join(rng.choice(string.ascii_letters) for _ in range(40))]),
        )
        now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 400 * 86400))
        ours = Signer("lambda", region).sign_details("POST", url, headers, body, creds, now)
        theirs, their_creq = botocore_authorization("POST", url, headers, body, creds, region, now)
        assert ours.canonical_request == their_creq, (i, url, headers)
        assert ours.authorization == theirs, (i, url, headers)


def test_real_boto3_invoke_requests_reproduced() -> None:
    """boto3's own Invoke requests (captured before sending) re-signed by terminus: identical."""
    captured: list[Any] = []

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield b'{"ok": true}'

    def capture(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, _Raw())

    for region, token in (("us-east-1", None), ("eu-west-1", "SESSIONTOKEN/with+chars==")):
        client = boto3.client(
            "lambda", region_name=region, aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", aws_session_token=token,
            config=Config(retries={"total_max_attempts": 1}),
        )
        client.meta.events.register("before-send.lambda", capture)
        client.invoke(FunctionName="fn", Payload=b'{"a": 1}')
        client.invoke(FunctionName=f"arn:aws:lambda:{region}:123456789012:function:fn", Qualifier="prod",
                      InvocationType="Event", Payload=bytes(range(256)))
        client.invoke(FunctionName="fn:live", ClientContext="eyJhIjoxfQ==", LogType="Tail")
        client.invoke(FunctionName="fn")  # no payload

    assert len(captured) == 8
    for req in captured:
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in req.headers.items()]
        h = {k.lower(): v for k, v in headers}
        creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", h.get("x-amz-security-token"))
        now = datetime.strptime(h["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        region = h["authorization"].split("/")[2]
        body = req.body or b""
        if hasattr(body, "read"):
            body = body.read()
        # botocore signs before it adds amz-sdk-* and Content-Length, so a re-signer must sign
        # exactly the headers the Authorization names (what a verifier does too).
        named = set(h["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";"))
        to_sign = [(k, v) for k, v in headers if k.lower() in named]
        ours = Signer("lambda", region).sign("POST", req.url, to_sign, body, creds, now)
        assert dict(ours)["Authorization"] == h["authorization"], req.url
        # And the verifier accepts exactly what boto3 sent (the HTTP layer adds Host).
        host, _, target = req.url.removeprefix("https://").partition("/")
        assert verify("POST", "/" + target, [("Host", host), *headers], body, {"AKIDEXAMPLE": creds},
                      service="lambda", region=region, now=now) is None


# ---------------------------------------------------------------------------------------------
# Canonicalisation details and the signing-key cache
# ---------------------------------------------------------------------------------------------


def test_path_double_encoding_and_envoy_raw_arn() -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert sigv4.canonical_uri(f"/2015-03-31/functions/{quote(arn, safe='')}/invocations") == (
        "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A123456789012%253Afunction%253Afn/invocations"
    )
    # Envoy sends the ARN unencoded and signs it with a single encoding (test-oracles.md §2.3).
    assert sigv4.canonical_uri(f"/2015-03-31/functions/{arn}/invocations") == (
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Afn/invocations"
    )
    assert sigv4.canonical_uri(b"/a/./b/../c//d/") == "/a/c/d/"
    assert sigv4.canonical_uri("") == "/"


def test_query_and_header_canonicalisation() -> None:
    assert sigv4.canonical_query_string("b=2&a=3&a=1&c&&d=x%20y+z&%24k=%7e") == "%24k=~&a=1&a=3&b=2&c=&d=x%20y%2Bz"
    block, signed = sigv4.canonical_headers([
        ("X-A", "  one   two  "), ("x-a", "three"), ("Host", "h"), ("X-B", "line1\n   line2\tx"),
    ])
    assert block == "host:h\nx-a:one two,three\nx-b:line1 line2 x\n"
    assert signed == "host;x-a;x-b"


def test_host_from_url_and_content_sha256_header() -> None:
    creds = Credentials("AK", "SK")
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    for url, host in [
        ("https://Lambda.us-east-1.amazonaws.com:443/x", "lambda.us-east-1.amazonaws.com"),
        ("http://127.0.0.1:80/x", "127.0.0.1"),
        ("http://127.0.0.1:9001/x", "127.0.0.1:9001"),
        ("http://user:pw@[::1]:9001/x", "[::1]:9001"),
    ]:
        creq = Signer("lambda", "us-east-1").canonical_request("POST", url, {}, b"", creds, now)
        assert f"\nhost:{host}\n" in creq
    body = b'{"a":1}'
    res = Signer("lambda", "us-east-1", content_sha256_header=True).sign_details(
        "POST", "https://h/x", {"Content-Type": "application/json"}, body, creds, now)
    assert ("X-Amz-Content-Sha256", hashlib.sha256(body).hexdigest()) in res.headers
    assert res.signed_headers == "content-type;host;x-amz-content-sha256;x-amz-date"


def test_signing_key_cached_per_day() -> None:
    sigv4.derive_signing_key.cache_clear()
    signer = Signer("lambda", "us-east-1")
    creds = Credentials("AK", "cache-test-secret")
    day = datetime(2026, 5, 5, 0, 0, 1, tzinfo=UTC)
    for minute in range(100):
        signer.sign("POST", "https://h/x", {}, b"{}", creds, day + timedelta(minutes=minute))
    info = sigv4.derive_signing_key.cache_info()
    assert (info.misses, info.hits) == (1, 99)
    signer.sign("POST", "https://h/x", {}, b"{}", creds, day + timedelta(days=1))
    assert sigv4.derive_signing_key.cache_info().misses == 2


def test_signing_is_fast() -> None:
    """A generous bound (the real figure is tens of microseconds) to catch accidental slow paths."""
    signer = Signer("lambda", "us-east-1")
    creds = Credentials("AK", "SK", "TOKEN")
    url = "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Afn/invocations"
    headers = [("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse")]
    now = datetime(2026, 5, 5, tzinfo=UTC)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        signer.sign("POST", url, headers, b'{"hello":"world"}', creds, now)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 1e-3, per_call


# ---------------------------------------------------------------------------------------------
# verify()
# ---------------------------------------------------------------------------------------------

VCREDS = Credentials("AKIDTERMINUS", "terminus/secret+key")
NOW = datetime(2026, 6, 1, 8, 30, 0, tzinfo=UTC)
TARGET = "/2015-03-31/functions/fn/invocations?Qualifier=%24LATEST"
URL = "http://127.0.0.1:9001" + TARGET


def signed_request(creds: Credentials = VCREDS, *, region: str = "us-east-1", service: str = "lambda",
                   now: datetime = NOW, body: bytes = b'{"a":1}') -> list[tuple[str, str]]:
    base = [("Host", "127.0.0.1:9001"), ("Content-Type", "application/json")]
    return base + Signer(service, region).sign("POST", URL, base, body, creds, now)


def check(headers: list[tuple[str, str]], body: bytes = b'{"a":1}', *, now: datetime = NOW,
          creds: dict[str, Credentials] | None = None, target: str = TARGET) -> sigv4.VerifyError | None:
    return verify("POST", target, headers, body, creds if creds is not None else {VCREDS.access_key: VCREDS},
                  service="lambda", region="us-east-1", now=now)


def test_verify_accepts_valid_and_rejects_tampering() -> None:
    headers = signed_request()
    assert check(headers) is None
    assert check([(k.lower(), v) for k, v in headers]) is None  # header case does not matter
    assert check(headers, b'{"a":2}').reason == "mismatch"
    assert check(headers, target=TARGET.replace("fn", "fm")).reason == "mismatch"
    assert check([(k, "text/plain" if k == "Content-Type" else v) for k, v in headers]).reason == "mismatch"
    wrong = check(signed_request(Credentials(VCREDS.access_key, "wrong")))
    assert wrong == "InvalidSignatureException" and wrong.reason == "mismatch"
    assert wrong.message.startswith("The request signature we calculated does not match")


def test_verify_error_codes() -> None:
    no_auth = [(k, v) for k, v in signed_request() if k != "Authorization"]
    assert check(no_auth) == "MissingAuthenticationTokenException"
    garbled = [(k, "AWS4-HMAC-SHA256 Credential=x") if k == "Authorization" else (k, v) for k, v in signed_request()]
    assert check(garbled) == "IncompleteSignatureException"
    no_date = [(k, v) for k, v in signed_request() if k != "X-Amz-Date"]
    assert check(no_date) == "IncompleteSignatureException"
    unknown = check(signed_request(Credentials("AKIDUNKNOWN", "x")))
    assert unknown == "UnrecognizedClientException" and unknown.reason == "unknown_key"
    assert check(signed_request(region="us-west-2")).reason == "scope"
    assert check(signed_request(service="s3")).reason == "scope"
    expired = check(signed_request(), now=NOW + timedelta(minutes=6))
    assert expired == "InvalidSignatureException" and expired.reason == "expired"
    assert "Signature expired" in expired.message
    assert check(signed_request(), now=NOW - timedelta(minutes=6)).reason == "expired"
    assert check(signed_request(), now=NOW + timedelta(minutes=4)) is None
    bad_hash = signed_request() + [("X-Amz-Content-Sha256", "0" * 64)]
    assert check(bad_hash).reason == "payload_hash"


def test_verify_session_tokens() -> None:
    temp = Credentials("ASIATEMP", "tempsecret", "token-1")
    lookup = {temp.access_key: temp}
    assert check(signed_request(temp), creds=lookup) is None
    assert check(signed_request(Credentials("ASIATEMP", "tempsecret", "token-2")), creds=lookup).reason == "bad_token"
    assert check(signed_request(Credentials("ASIATEMP", "tempsecret")), creds=lookup).reason == "bad_token"
    # A token sent unsigned (added after signing) is still checked against the key's token.
    after = Signer("lambda", "us-east-1", omit_session_token=True)
    base = [("Host", "127.0.0.1:9001")]
    assert check(base + after.sign("POST", URL, base, b'{"a":1}', temp, NOW), creds=lookup) is None


def test_verify_accepts_botocore_signatures() -> None:
    url = "http://127.0.0.1:9001/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Afn/invocations"
    authz, _ = botocore_authorization(
        "POST", url, [("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "Event")], b"{}",
        VCREDS, "us-east-1", NOW)
    headers = [("Host", "127.0.0.1:9001"), ("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "Event"),
               ("X-Amz-Date", "20260601T083000Z"), ("Authorization", authz), ("User-Agent", "anything")]
    assert check(headers, b"{}", target=url.split("9001", 1)[1]) is None
