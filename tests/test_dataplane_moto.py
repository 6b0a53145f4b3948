"""The native gateway's Lambda signer against moto in server mode with SigV4 (IAM) checks on.

moto runs in-process (``ThreadedMotoServer``) on 127.0.0.1 with the lambda-simple backend
(``POST /moto-api/config {"lambda": {"use_docker": false}}``), which answers an Invoke with
the request body unchanged (test-oracles.md §2.1). Auth is switched on with
``/moto-api/reset-auth`` after the IAM bootstrap calls (§2.2), so every Invoke the gateway
sends is verified by moto with botocore's own SigV4 code against the secret stored in IAM.

moto's auth switch is process-global: the fixture turns it back off and resets moto's state.
"""

from __future__ import annotations

import io
import json
import logging
import ssl
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from gateway.awslambda.sigv4 import Credentials
from gateway.dataplane import GatewayServer, LambdaTarget
from gateway.identity.ca import generate_leaf, generate_root
from gateway.identity.sni import service_sni
from gateway.identity.spiffe import ServiceID
from tests.test_dataplane import Client, _client_ctx, gateway_on_fixed_routes
from tests.support.moto import set_auth_counter, threaded_moto

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
DC = "dc1"
FUNCTION = "gw-echo"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"

INTENTIONS = [{
    "Kind": "service-intentions", "Name": "*",
    "Sources": [{"Name": "web", "Precedence": 8, "Action": "allow"}],
}]


# ------------------------------------------------------------------------------------ moto


@dataclass
class Moto:
    endpoint: str
    key: Credentials  # the IAM user's real access key


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with threaded_moto() as endpoint:
        set_auth_counter(endpoint, b"4")  # four unauthenticated calls to bootstrap IAM, then SigV4 on everything
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="gw")
        key = iam.create_access_key(UserName="gw")["AccessKey"]
        iam.put_user_policy(UserName="gw", PolicyName="invoke", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            # moto checks lambda:Invoke (botocore's operation name), not lambda:InvokeFunction (§2.2)
            "Statement": [{"Effect": "Allow", "Action": ["lambda:*", "iam:PassRole"], "Resource": "*"}]}))
        role = iam.create_role(RoleName="gw-fn-role", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        creds = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        # From here on every call is authenticated: creating the function proves the key works.
        lam = boto3.client("lambda", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("f.py", "def h(event, context):\n    return event\n")
        fn = lam.create_function(FunctionName=FUNCTION, Runtime="python3.12", Role=role, Handler="f.h",
                                 Code={"ZipFile": buf.getvalue()})
        assert fn["FunctionArn"] == ARN
        # auth really is on: the bootstrap identity (unknown to IAM) is now refused
        boot = boto3.client("lambda", endpoint_url=endpoint, region_name=REGION,
                            aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="bootstrap")
        with pytest.raises(Exception, match="InvalidClientTokenId|403"):
            boot.invoke(FunctionName=FUNCTION, Payload=b"{}")
        yield Moto(endpoint, creds)


# ------------------------------------------------------------------------------------ gateway


@dataclass
class Gateway:
    gw: GatewayServer
    td: str
    ctx: ssl.SSLContext  # caller "web"

    def sni(self, service: str) -> str:
        return service_sni(service, None, "default", "default", DC, self.td)

    async def call(self, service: str, method: str, target: str, body: bytes = b"",
                   headers: list[tuple[str, str]] | None = None) -> Any:
        async with Client(self.gw.port, self.sni(service), self.ctx) as c:
            return await c.request(method, target, body, headers)


async def _gateway(moto: Moto, creds: Credentials, tmp_path: Any) -> AsyncIterator[Gateway]:
    root, root_key = generate_root("11111111-2222-3333-4444-555555555555.consul")
    td = root.trust_domain

    def leaf(name: str) -> tuple[str, str]:
        return generate_leaf(root.root_cert_pem, root_key, ServiceID(td, "default", DC, name).uri)

    targets = {
        "fn-passthrough": LambdaTarget(ARN, REGION, moto.endpoint, payload_passthrough=True),
        "fn-envelope": LambdaTarget(ARN, REGION, moto.endpoint, payload_passthrough=False),
    }
    gw = gateway_on_fixed_routes(targets, root, root_key, INTENTIONS, credentials=creds, metrics_port=None,
                                 lambda_timeout=10.0)
    await gw.start()
    web_cert, web_key = leaf("web")
    try:
        yield Gateway(gw, td, _client_ctx(root.root_cert_pem, web_cert, web_key, tmp_path))
    finally:
        await gw.stop(grace=1.0)


@pytest.fixture
async def good_gw(moto: Moto, tmp_path: Any) -> AsyncIterator[Gateway]:
    async for g in _gateway(moto, moto.key, tmp_path):
        yield g


@pytest.fixture
async def bad_gw(moto: Moto, tmp_path: Any) -> AsyncIterator[Gateway]:
    async for g in _gateway(moto, Credentials(moto.key.access_key, moto.key.secret_key[::-1] + "x"), tmp_path):
        yield g


# ------------------------------------------------------------------------------------ tests


async def test_signed_passthrough_invoke_is_accepted_and_echoed(good_gw: Gateway) -> None:
    body = b'{"hello":"through the gateway","n":[1,2,3]}'
    r = await good_gw.call("fn-passthrough", "POST", "/anything?x=1", body, [("content-type", "application/json")])
    assert r.status == 200, r.body
    assert r.body == body  # lambda-simple echoes the payload; passthrough returns the result as is
    assert r.header("content-type") == "application/json"
    assert r.header("x-amzn-requestid")  # moto's own response headers came through: moto answered


async def test_signed_envelope_invoke_is_accepted_and_dejsonized(good_gw: Gateway) -> None:
    """Passthrough off: moto echoes the Envoy envelope, which the gateway reads as the function's result.

    The envelope has no status_code (-> 200), its ``headers`` are the request headers (they become
    response headers, as Envoy's dejsonizeResponse would do), and its ``body`` is the request body.
    """
    body = b'{"order":42}'
    r = await good_gw.call("fn-envelope", "POST", "/orders/42?x=1", body,
                           [("content-type", "application/json"), ("x-request-id", "req-moto-1"),
                            ("x-custom", "kept")])
    assert r.status == 200, r.body
    assert r.body == body
    assert r.header("content-type") == "application/json"
    assert r.header("x-custom") == "kept"
    assert r.header("x-request-id") == "req-moto-1"
    assert r.header("x-forwarded-proto") == "https"
    xfcc = r.header("x-forwarded-client-cert") or ""
    assert xfcc.endswith(f";URI=spiffe://{good_gw.td}/ns/default/dc/{DC}/svc/web"), xfcc
    assert r.header("content-length") == str(len(body))
    # a GET with no body: envelope body "" -> empty 200
    r = await good_gw.call("fn-envelope", "GET", "/status")
    assert (r.status, r.body) == (200, b"")


async def test_keep_alive_connection_reuses_signed_upstream(good_gw: Gateway) -> None:
    async with Client(good_gw.gw.port, good_gw.sni("fn-passthrough"), good_gw.ctx) as c:
        for i in range(3):
            payload = json.dumps({"i": i}).encode()
            r = await c.request("POST", "/", payload, [("content-type", "application/json")])
            assert (r.status, r.body) == (200, payload)


async def test_wrong_secret_is_rejected_with_a_clear_error(moto: Moto, bad_gw: Gateway,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="terminus.gateway.access")
    for service in ("fn-passthrough", "fn-envelope"):
        r = await bad_gw.call(service, "POST", "/x", b'{"secret":"wrong"}', [("content-type", "application/json")])
        assert r.status == 502, (service, r.status, r.body)
        assert r.header("content-type") == "application/json"
        assert json.loads(r.body) == {"message": "function invocation rejected by Lambda"}
        assert b"SignatureDoesNotMatch" not in r.body and b"ErrorResponse" not in r.body  # no upstream leak
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "terminus.gateway.access"]
    assert len(lines) == 2, lines
    assert all("status=502" in line and f"function={FUNCTION}" in line for line in lines), lines
    assert all("detail=" in line for line in lines), lines
    # What moto said to the gateway's own signer: a signature mismatch, not a policy or key problem.
    assert bad_gw.gw.lambda_client is not None
    result = await bad_gw.gw.lambda_client.invoke(LambdaTarget(ARN, REGION, moto.endpoint, True), b"{}")
    assert (result.outcome.value, result.status) == ("client_error", 403)
    assert b"<Code>SignatureDoesNotMatch</Code>" in result.body, result.body


async def test_wrong_secret_detail_names_the_signature_error(bad_gw: Gateway,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="terminus.gateway.access")
    r = await bad_gw.call("fn-passthrough", "POST", "/x", b"{}", [("content-type", "application/json")])
    assert r.status == 502
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "terminus.gateway.access"]
    assert any("SignatureDoesNotMatch" in line or "signature" in line.lower() for line in lines), lines


async def test_good_key_still_accepted_after_rejections(good_gw: Gateway, bad_gw: Gateway) -> None:
    """Both gateways side by side against the same moto: only the signature differs."""
    r = await bad_gw.call("fn-passthrough", "POST", "/", b'{"who":"bad"}', [("content-type", "application/json")])
    assert r.status == 502
    r = await good_gw.call("fn-passthrough", "POST", "/", b'{"who":"good"}', [("content-type", "application/json")])
    assert (r.status, r.body) == (200, b'{"who":"good"}')
