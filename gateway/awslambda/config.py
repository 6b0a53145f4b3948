"""Which services are AWS Lambda functions, and where their Invoke endpoint is.

A service is a Lambda when its ``service-defaults`` entry says so, in either of Consul's forms
(consul-semantics.md §4.1):

* Meta keys (Consul 1.12-1.14 "serverless plugin")::

      serverless.consul.hashicorp.com/v1alpha1/lambda/enabled              "true" (exactly)
      serverless.consul.hashicorp.com/v1alpha1/lambda/arn                  required
      serverless.consul.hashicorp.com/v1alpha1/lambda/region               optional here (Consul
                                                                           required it); must match the ARN
      serverless.consul.hashicorp.com/v1alpha1/lambda/payload-passthrough  "true" turns it on
      serverless.consul.hashicorp.com/v1alpha1/lambda/invocation-mode      synchronous|asynchronous

* ``EnvoyExtensions: [{"Name": "builtin/aws/lambda", "Arguments": {"ARN", "PayloadPassthrough",
  "InvocationMode"}}]`` (current Consul; argument keys matched case-insensitively, the region
  is always the ARN's).

Unlike Consul, which silently patches nothing (or defaults to SYNCHRONOUS) on bad input,
terminus rejects a malformed Lambda configuration when the entry is written
(:func:`validate_lambda`, HTTP 400), so what is stored is always usable.

Endpoint: :func:`lambda_endpoint` follows boto3's override order - ``AWS_ENDPOINT_URL_LAMBDA``,
then ``AWS_ENDPOINT_URL`` - after an explicit per-region override, and otherwise AWS's regional
endpoint ``lambda.<region>.amazonaws.com:443``. For AWS the TLS SNI is that regional host name
(not Consul's literal ``*.amazonaws.com``): AWS serves the right certificate for it, and it lets
Envoy check the certificate's DNS SAN, which a wildcard SNI cannot name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import InvalidInput

META_PREFIX = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
META_ENABLED = META_PREFIX + "enabled"
META_ARN = META_PREFIX + "arn"
META_REGION = META_PREFIX + "region"
META_PASSTHROUGH = META_PREFIX + "payload-passthrough"
META_INVOCATION = META_PREFIX + "invocation-mode"
EXTENSION_NAME = "builtin/aws/lambda"

SYNCHRONOUS, ASYNCHRONOUS = "SYNCHRONOUS", "ASYNCHRONOUS"
INVOCATION_MODES = ("synchronous", "asynchronous")

# arn:<partition>:lambda:<region>:<12-digit account>:function:<name>[:<qualifier>]
ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):(?P<account>\d{12}):"
    r"function:(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?$"
)
ARN_FORMAT = "arn:<partition>:lambda:<region>:<12-digit account>:function:<name>[:<qualifier>]"
AWS_SNI_WILDCARD = "*.amazonaws.com"  # what Consul sends; see the module docstring


@dataclass(frozen=True)
class LambdaConfig:
    arn: str
    region: str
    payload_passthrough: bool
    invocation_mode: str  # "SYNCHRONOUS" | "ASYNCHRONOUS"
    function_name: str
    qualifier: str | None


@dataclass(frozen=True)
class LambdaEndpoint:
    host: str
    port: int
    tls: bool
    sni: str  # "" for plain HTTP

    def __iter__(self):  # type: ignore[no-untyped-def]  # (host, port, tls, sni) unpacking
        return iter((self.host, self.port, self.tls, self.sni))


def parse_arn(arn: str) -> re.Match[str]:
    match = ARN_RE.match(arn or "")
    if match is None:
        raise InvalidInput(f"invalid Lambda ARN {arn!r}: must be {ARN_FORMAT}")
    return match


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _mode(value: Any) -> str:
    if value in (None, ""):
        return SYNCHRONOUS
    mode = str(value).strip().lower()
    if mode not in INVOCATION_MODES:
        raise InvalidInput(f"invalid Lambda invocation mode {value!r}: must be one of synchronous, asynchronous")
    return mode.upper()


def _extension(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The builtin/aws/lambda extension's Arguments with lower-cased keys, if present."""
    for ext in entry.get("EnvoyExtensions") or ():
        if isinstance(ext, Mapping) and ext.get("Name") == EXTENSION_NAME:
            args = ext.get("Arguments") or {}
            if not isinstance(args, Mapping):
                raise InvalidInput(f"{EXTENSION_NAME}: Arguments must be an object")
            return {str(k).lower(): v for k, v in args.items()}
    return None


def _build(arn: str, region: str | None, passthrough: Any, mode: Any) -> LambdaConfig:
    if not arn:
        raise InvalidInput("Lambda is enabled but no ARN is set: the ARN is required")
    match = parse_arn(arn)
    if region and region != match["region"]:
        raise InvalidInput(f"Lambda region {region!r} does not match the region {match['region']!r} of ARN {arn!r}")
    return LambdaConfig(
        arn=arn, region=match["region"], payload_passthrough=_bool(passthrough), invocation_mode=_mode(mode),
        function_name=match["name"], qualifier=match["qualifier"],
    )


def validate_lambda(entry: Mapping[str, Any]) -> LambdaConfig | None:
    """Raise InvalidInput for a malformed Lambda configuration; the parsed config (or None)."""
    args = _extension(entry)
    meta = entry.get("Meta") or {}
    from_meta: LambdaConfig | None = None
    if meta.get(META_ENABLED) == "true":
        from_meta = _build(str(meta.get(META_ARN) or ""), meta.get(META_REGION) or None,
                           meta.get(META_PASSTHROUGH, ""), meta.get(META_INVOCATION))
    if args is None:
        return from_meta
    arn = args.get("arn")
    if arn is not None and not isinstance(arn, str):
        raise InvalidInput(f"{EXTENSION_NAME}: ARN must be a string")
    if "region" in args and args["region"] and not isinstance(args["region"], str):
        raise InvalidInput(f"{EXTENSION_NAME}: Region must be a string")
    from_ext = _build(arn or "", args.get("region") or None, args.get("payloadpassthrough", False),
                      args.get("invocationmode"))
    if from_meta is not None and from_meta != from_ext:
        raise InvalidInput("the Lambda Meta keys and the builtin/aws/lambda extension disagree; use one form")
    return from_ext


def lambda_config(service_defaults_entry: Mapping[str, Any] | None) -> LambdaConfig | None:
    """The entry's Lambda configuration; None if it is not a Lambda (or, for entries written
    before validation existed, if its configuration is unusable)."""
    if not service_defaults_entry:
        return None
    try:
        return validate_lambda(service_defaults_entry)
    except InvalidInput:
        return None


def _from_url(url: str) -> LambdaEndpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid Lambda endpoint URL {url!r}: must be http(s)://host[:port]")
    tls = parts.scheme == "https"
    return LambdaEndpoint(parts.hostname, parts.port or (443 if tls else 80), tls, parts.hostname if tls else "")


def lambda_endpoint(region: str, overrides: Mapping[str, str] | None = None,
                    environ: Mapping[str, str] | None = None) -> LambdaEndpoint:
    """(host, port, tls, sni) of the Invoke endpoint for ``region``.

    Order: ``overrides[region]`` (per-region configuration), ``AWS_ENDPOINT_URL_LAMBDA``,
    ``AWS_ENDPOINT_URL`` (boto3's names), then ``lambda.<region>.amazonaws.com:443`` with TLS.
    An ``http://`` override is plain TCP (local runs and tests).
    """
    env = os.environ if environ is None else environ
    for url in ((overrides or {}).get(region), env.get("AWS_ENDPOINT_URL_LAMBDA"), env.get("AWS_ENDPOINT_URL")):
        if url:
            return _from_url(url)
    host = f"lambda.{region}.amazonaws.com"
    return LambdaEndpoint(host, 443, True, host)
