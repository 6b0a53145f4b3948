"""Golden files for every proxy kind, as Consul's agent/xds/testdata: the resources built
from a fixed snapshot, as deterministic JSON, reviewed like code.

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/test_xds_golden.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.configentries.service import prepare
from gateway.intentions.engine import IntentionEngine, ServiceName
from xds.resources import build_resources, resource_dicts
from xds.snapshot import (
    HTTP, TCP, AccessLogs, Endpoint, Inbound, LambdaTarget, Leaf, LinkedService, ProxySnapshot, Upstream,
)

GOLDEN = Path(__file__).parent / "golden" / "xds"
TD = "11111111-2222-3333-4444-555555555555.consul"


def _intentions(dest: str, *sources: dict) -> tuple:
    engine = IntentionEngine(default_allow=False)
    engine.load([prepare({"Kind": "service-intentions", "Name": dest, "Sources": list(sources)})])
    return tuple(engine.for_destination(ServiceName(dest)))


def _leaf(svc: str) -> Leaf:
    return Leaf(svc, "default", f"<leaf certificate of {svc}>\n", f"<leaf key of {svc}>\n")


def _inbound(svc: str, protocol: str, *sources: dict) -> Inbound:
    return Inbound(ServiceName(svc), protocol, _intentions(svc, *sources), _leaf(svc))


LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"
AWS_LAMBDA = LambdaTarget(LAMBDA_ARN, False, "SYNCHRONOUS", "lambda.us-east-1.amazonaws.com", 443, True,
                          "lambda.us-east-1.amazonaws.com", "/etc/ssl/certs/ca-certificates.crt")
LOCAL_LAMBDA = LambdaTarget(LAMBDA_ARN + ":live", True, "ASYNCHRONOUS", "127.0.0.1", 9001, False, "")

COMMON = dict(namespace="default", datacenter="dc1", trust_domain=TD, roots_pem="<root certificate>\n",
              default_allow=False, datacenters=("dc1",), listen_address="127.0.0.1")

SNAPSHOTS = {
    "connect-proxy-http": ProxySnapshot(
        node_id="api-sidecar-proxy", kind="connect-proxy", proxy_service="api-sidecar-proxy", listen_port=21000,
        inbound=_inbound("api", HTTP, {"Name": "web", "Permissions": [
            {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
            {"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET"]}}]}, {"Name": "*", "Action": "deny"}),
        local_app_port=9090,
        upstreams=(
            Upstream("authentication", "default", "dc1", "127.0.0.1", 2345, HTTP,
                     f"authentication.default.dc1.internal.{TD}", (Endpoint("127.0.0.1", 8443),)),
            Upstream("db", "default", "dc1", "127.0.0.1", 5432, TCP, f"db.default.dc1.internal.{TD}",
                     (Endpoint("10.0.0.5", 21000), Endpoint("10.0.0.6", 21000, healthy=False))),
        ),
        **COMMON,
    ),
    "connect-proxy-tcp": ProxySnapshot(
        node_id="db-sidecar-proxy", kind="connect-proxy", proxy_service="db-sidecar-proxy", listen_port=21001,
        inbound=_inbound("db", TCP, {"Name": "api", "Action": "allow"}), local_app_port=5432, **COMMON,
    ),
    "terminating-gateway": ProxySnapshot(
        node_id="tgw", kind="terminating-gateway", proxy_service="tgw", listen_port=8443,
        linked=(
            LinkedService(_inbound("billing", HTTP, {"Name": "api", "Action": "allow"}),
                          f"billing.default.dc1.internal.{TD}", (Endpoint("10.1.0.1", 443),), (),
                          {"CAFile": "/etc/ca.pem", "SNI": "billing.example.com"}),
            LinkedService(_inbound("legacy-db", TCP, {"Name": "api", "Action": "allow"}, {"Name": "web", "Action": "deny"}),
                          f"legacy-db.default.dc1.internal.{TD}", (), ("db.example.com:5432", "db2.example.com:5432")),
        ),
        **COMMON,
    ),
    # authentication is an AWS Lambda (service-defaults Meta keys or builtin/aws/lambda): HTTP chain
    # with aws_lambda before the router, strip_any_host_port, no auto_host_rewrite, and a cluster to
    # AWS's regional endpoint carrying the com.amazonaws.lambda metadata
    "terminating-gateway-lambda": ProxySnapshot(
        node_id="tgw", kind="terminating-gateway", proxy_service="tgw", listen_port=8443,
        linked=(
            LinkedService(_inbound("authentication", HTTP, {"Name": "api", "Action": "allow"}),
                          f"authentication.default.dc1.internal.{TD}", (), (), lambda_=AWS_LAMBDA),
            LinkedService(_inbound("billing", HTTP, {"Name": "api", "Action": "allow"}),
                          f"billing.default.dc1.internal.{TD}", (Endpoint("10.1.0.1", 443),), ()),
        ),
        **COMMON,
    ),
    # a sidecar allowed by intentions to invoke a Lambda that no gateway fronts: direct, plain
    # HTTP to an endpoint override (AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9001)
    "connect-proxy-lambda-direct": ProxySnapshot(
        node_id="api-sidecar-proxy", kind="connect-proxy", proxy_service="api-sidecar-proxy", listen_port=21000,
        inbound=_inbound("api", TCP, {"Name": "web", "Action": "allow"}), local_app_port=9090,
        upstreams=(Upstream("authentication", "default", "dc1", "127.0.0.1", 2345, HTTP,
                            f"authentication.default.dc1.internal.{TD}", (), lambda_=LOCAL_LAMBDA),),
        **COMMON,
    ),
}
# proxy-defaults AccessLogs: Consul's default JSON to stdout on every filter and listener, and
# a text format to a file without the listener logs
SNAPSHOTS["terminating-gateway-access-logs"] = replace(SNAPSHOTS["terminating-gateway"], access_logs=AccessLogs())
SNAPSHOTS["connect-proxy-http-access-logs"] = replace(
    SNAPSHOTS["connect-proxy-http"],
    access_logs=AccessLogs(disable_listener_logs=True, type="file", path="/var/log/envoy/access.log",
                           text_format="%REQ(:PATH)% %RESPONSE_CODE%"),
)


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_golden(name: str) -> None:
    snap = SNAPSHOTS[name]
    rendered = json.dumps(resource_dicts(snap), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(), f"{name} differs from {path} (UPDATE_GOLDEN=1 to regenerate, then review)"
    # every resource is a valid proto of its type, and building twice gives identical bytes
    first, second = build_resources(snap), build_resources(snap)
    for type_url, items in first.items():
        for key, msg in items.items():
            assert msg.SerializeToString(deterministic=True) == second[type_url][key].SerializeToString(deterministic=True)


def test_golden_configs_pass_envoy_validate(tmp_path: Path) -> None:
    """The generated resources, placed in a static config, are accepted by Envoy 1.40 itself."""
    from tests.support.envoy import validate_config
    from tests.support.pki import make_ca, make_leaf
    from xds.resources.common import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

    ca = make_ca(TD)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    for name, snap in SNAPSHOTS.items():
        dicts = json.loads(json.dumps(resource_dicts(snap)).replace("/etc/ca.pem", str(tmp_path / "ca.pem"))
                           .replace("/var/log/envoy/access.log", str(tmp_path / "access.log")).replace("<root certificate>\\n", ca.cert_pem.decode().replace("\n", "\\n")))
        leaf = make_leaf(ca, uri_sans=[f"spiffe://{TD}/ns/default/dc/dc1/svc/x"])
        text = json.dumps(dicts)
        for svc in ("api", "db", "billing", "legacy-db", "authentication"):
            text = text.replace(f"<leaf certificate of {svc}>\\n", leaf.cert_pem.decode().replace("\n", "\\n"))
            text = text.replace(f"<leaf key of {svc}>\\n", leaf.key_pem.decode().replace("\n", "\\n"))
        dicts = json.loads(text)
        eds = {a["cluster_name"]: a for a in dicts[ENDPOINT]}
        clusters = []
        for c in dicts[CLUSTER]:  # static validation has no EDS: inline the assignment
            if c.get("type") == "EDS":
                c = {k: v for k, v in c.items() if k != "eds_cluster_config"}
                c["type"] = "STATIC"
                c["load_assignment"] = eds[c["name"]]
            clusters.append(c)
        routes = {r["name"]: r for r in dicts[ROUTE]}
        listeners = json.loads(json.dumps(dicts[LISTENER]))
        for listener in listeners:  # static validation has no RDS/SDS: inline them
            for chain in listener["filter_chains"]:
                for f in chain["filters"]:
                    tc = f.get("typed_config", {})
                    if "rds" in tc:
                        tc["route_config"] = routes[tc.pop("rds")["route_config_name"]]
        # static secrets are referenced by name alone (no sds_config)
        static = json.loads(json.dumps({"clusters": clusters, "listeners": listeners}).replace(
            ', "sds_config": {"ads": {}, "resource_api_version": "V3"}', ""))
        config = {"node": {"id": snap.node_id, "cluster": snap.proxy_service},
                  "static_resources": {**static, "secrets": dicts[SECRET]}}
        ok, output = validate_config(config)
        assert ok, f"{name}: {output}"
