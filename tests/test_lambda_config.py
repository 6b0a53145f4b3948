"""Lambda configuration on service-defaults: both of Consul's forms, validation over the HTTP
API (400, nothing written), the Invoke endpoint override, and what the xDS builder makes of it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.awslambda.config import LambdaConfig, lambda_config, lambda_endpoint, validate_lambda
from gateway.errors import InvalidInput

META = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"


def meta_entry(**meta: str) -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": "authentication", "Protocol": "http",
            "Meta": {META + k.replace("_", "-"): v for k, v in meta.items()}}


def ext_entry(**args: Any) -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": "authentication",
            "EnvoyExtensions": [{"Name": "builtin/aws/lambda", "Arguments": args}]}


# -- parsing ---------------------------------------------------------------------------------------


def test_meta_form() -> None:
    cfg = lambda_config(meta_entry(enabled="true", arn=ARN, region="us-east-1", payload_passthrough="true",
                                   invocation_mode="asynchronous"))
    assert cfg == LambdaConfig(ARN, "us-east-1", True, "ASYNCHRONOUS", "echo", None)


def test_meta_form_region_from_arn_and_defaults() -> None:
    cfg = lambda_config(meta_entry(enabled="true", arn=ARN + ":live"))
    assert cfg == LambdaConfig(ARN + ":live", "us-east-1", False, "SYNCHRONOUS", "echo", "live")


@pytest.mark.parametrize("enabled", ["false", "True", "yes", ""])
def test_meta_form_needs_exactly_true(enabled: str) -> None:
    assert lambda_config(meta_entry(enabled=enabled, arn=ARN)) is None
    assert lambda_config(meta_entry(enabled=enabled, arn="garbage")) is None  # not enabled: not validated


def test_extension_form_case_insensitive_arguments() -> None:
    cfg = lambda_config(ext_entry(arn="arn:aws-cn:lambda:cn-north-1:123456789012:function:f:$LATEST",
                                  payloadPassthrough=True, INVOCATIONMODE="Asynchronous"))
    assert cfg == LambdaConfig("arn:aws-cn:lambda:cn-north-1:123456789012:function:f:$LATEST", "cn-north-1",
                               True, "ASYNCHRONOUS", "f", "$LATEST")
    assert lambda_config(ext_entry(ARN=ARN)) == LambdaConfig(ARN, "us-east-1", False, "SYNCHRONOUS", "echo", None)


def test_not_a_lambda() -> None:
    assert lambda_config(None) is None
    assert lambda_config({"Kind": "service-defaults", "Name": "x", "Protocol": "http"}) is None
    assert lambda_config({"Kind": "service-defaults", "Name": "x",
                          "EnvoyExtensions": [{"Name": "builtin/lua", "Arguments": {}}]}) is None


# -- validation over the HTTP API ------------------------------------------------------------------

BAD = [
    (meta_entry(enabled="true"), "no ARN is set"),
    (meta_entry(enabled="true", arn="arn:aws:lambda:us-east-1:123:function:echo"), "invalid Lambda ARN"),
    (meta_entry(enabled="true", arn="arn:aws:s3:us-east-1:123456789012:function:echo"), "invalid Lambda ARN"),
    (meta_entry(enabled="true", arn="arn:aws:lambda:us-east-1:123456789012:layer:echo"), "invalid Lambda ARN"),
    (meta_entry(enabled="true", arn="echo"), "invalid Lambda ARN"),
    (meta_entry(enabled="true", arn=ARN, invocation_mode="fire-and-forget"), "invalid Lambda invocation mode"),
    (meta_entry(enabled="true", arn=ARN, region="eu-west-1"), "does not match the region"),
    (ext_entry(), "no ARN is set"),
    (ext_entry(ARN="arn:aws:lambda:us-east-1:123456789012:function:"), "invalid Lambda ARN"),
    (ext_entry(ARN=ARN, InvocationMode="event"), "invalid Lambda invocation mode"),
    (ext_entry(ARN=ARN, Region="eu-west-1"), "does not match the region"),
]


@pytest.mark.parametrize("entry,message", BAD, ids=[f"{i}-{m}" for i, (_, m) in enumerate(BAD)])
def test_invalid_lambda_config_is_rejected_and_nothing_written(api: Any, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_lambda(entry)
    resp = api.put("/v1/config", json=entry)
    assert resp.status_code == 400, resp.text
    assert message in resp.text
    assert api.get("/v1/config/service-defaults/authentication").status_code == 404


def test_invalid_update_keeps_the_previous_entry(api: Any) -> None:
    assert api.put("/v1/config", json=meta_entry(enabled="true", arn=ARN)).json() is True
    assert api.put("/v1/config", json=meta_entry(enabled="true", arn=ARN, invocation_mode="nope")).status_code == 400
    stored = api.get("/v1/config/service-defaults/authentication").json()
    assert META + "invocation-mode" not in stored["Meta"]


def test_valid_entries_are_stored(api: Any) -> None:
    assert api.put("/v1/config", json=meta_entry(enabled="true", arn=ARN, region="us-east-1",
                                                 invocation_mode="ASYNCHRONOUS")).json() is True
    assert api.put("/v1/config", json={**ext_entry(arn=ARN, payload_passthrough=True), "Name": "other"}).status_code == 200
    stored = api.get("/v1/config/service-defaults/other").json()
    assert lambda_config(stored) is not None  # Arguments survive storage with their keys


# -- endpoint --------------------------------------------------------------------------------------


def test_lambda_endpoint() -> None:
    assert tuple(lambda_endpoint("eu-west-1", environ={})) == (
        "lambda.eu-west-1.amazonaws.com", 443, True, "lambda.eu-west-1.amazonaws.com")
    env = {"AWS_ENDPOINT_URL": "https://lambda.example.com:8443", "AWS_ENDPOINT_URL_LAMBDA": "http://127.0.0.1:9001"}
    assert tuple(lambda_endpoint("us-east-1", environ=env)) == ("127.0.0.1", 9001, False, "")
    assert tuple(lambda_endpoint("us-east-1", environ={"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]})) == (
        "lambda.example.com", 8443, True, "lambda.example.com")
    assert tuple(lambda_endpoint("us-east-1", {"us-east-1": "http://localhost"}, environ=env)) == ("localhost", 80, False, "")


# -- what the xDS builder makes of it -----------------------------------------------------------------


def _mesh(api: Any) -> None:
    assert api.put("/v1/catalog/register", json={"Node": "lambdas", "Address": "lambdas.invalid",
                                                 "Service": {"Service": "authentication"}}).status_code == 200
    assert api.put("/v1/config", json=meta_entry(enabled="true", arn=ARN)).json() is True
    assert api.put("/v1/agent/service/register", json={
        "Name": "api", "Port": 9999, "Address": "127.0.0.1",
        "Connect": {"SidecarService": {"Port": 21000, "Proxy": {"Upstreams": [
            {"DestinationName": "authentication", "LocalBindPort": 2345}]}}}}).status_code == 200


def test_direct_from_sidecar_only_when_intentions_allow(api: Any, cp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from xds.builder import build_snapshot

    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:9001")
    _mesh(api)
    api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "authentication"},
            json={"Action": "deny"})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    assert snap is not None and snap.upstreams == ()  # denied: no listener, no cluster

    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
            json={"Action": "allow"})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    assert snap is not None and len(snap.upstreams) == 1
    lam = snap.upstreams[0].lambda_
    assert lam is not None and (lam.arn, lam.host, lam.port, lam.tls) == (ARN, "127.0.0.1", 9001, False)

    api.put("/v1/config", json={"Kind": "service-intentions", "Name": "authentication", "Sources": [
        {"Name": "api", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/x"}}]}]})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    assert snap is not None and snap.upstreams[0].lambda_ is not None  # an L7 intention is present

    api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
            json={"Action": "deny"})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    assert snap is not None and snap.upstreams == ()


def test_linked_to_a_gateway_the_sidecar_goes_through_it(api: Any, cp: Any) -> None:
    from xds.builder import build_snapshot

    _mesh(api)
    assert api.put("/v1/agent/service/register", json={
        "Name": "tgw", "Kind": "terminating-gateway", "Port": 8443, "Address": "127.0.0.1"}).status_code == 200
    assert api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw",
                                       "Services": [{"Name": "authentication"}]}).json() is True
    api.put("/v1/config", json={**meta_entry(enabled="true", arn=ARN), "Protocol": "tcp"})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    api.put("/v1/connect/intentions/exact", params={"source": "*", "destination": "authentication"},
            json={"Action": "deny"})
    snap = build_snapshot(cp, "api-sidecar-proxy")
    assert snap is not None and len(snap.upstreams) == 1  # even when denied: the gateway enforces
    up = snap.upstreams[0]
    assert up.lambda_ is None and up.protocol == "http" and up.endpoints  # to the gateway, over HTTP
    tgw = build_snapshot(cp, "tgw")
    assert tgw is not None and tgw.linked[0].lambda_ is not None
    assert tgw.linked[0].inbound.protocol == "http"  # HTTP whatever the service's protocol
    assert tgw.linked[0].lambda_.host == "lambda.us-east-1.amazonaws.com"
