"""The two terminating-gateway data planes agree on Lambda: Envoy 1.40's ``aws_lambda`` filter
(`terminus connect envoy --gateway terminating`) and the native gateway (`terminus gateway`).

One server (--data-dir), one local Lambda (real SigV4), two Lambda services -- `fn-plain`
(payload passthrough off) and `fn-pass` (passthrough on) -- each linked to BOTH terminating
gateways `tgw-envoy` (an Envoy) and `tgw-native` (the native process).

Both gateways are reached the same way, by one mesh caller: mTLS with the `api` leaf and the
service's SNI, the exact handshake a sidecar upstream performs. Not through an `api` sidecar:
a service linked to two gateways gets the endpoints of both in the sidecar's EDS (Consul's
checkServiceNodes appends every linked gateway), so a sidecar upstream would round-robin between
the two paths and a comparison through it would not know which path answered. A direct client
also sends byte-identical requests to both, so every difference is the gateway's.

For each request the test compares what the caller gets (status, headers, body bytes) and
what the function receives (the Envoy envelope fields, or the raw passthrough payload). Known
differences that are acceptable are listed below with their reason; anything else fails.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.awslambda.local import run_in_thread
from gateway.awslambda.sigv4 import Credentials
from gateway.identity.sni import service_sni
from tests.support.envoy import EnvoyProcess, free_port
from tests.test_xds_e2e import bootstrap, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

AKID, SECRET = "AKIDTERMINUSPATHS", "terminus-paths-secret-key"
META = "serverless.consul.hashicorp.com/v1alpha1/lambda/"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
SERVICES = {"fn-plain": ("plain", False), "fn-pass": ("pass", True)}  # service -> (function, passthrough)
GATEWAYS = ("tgw-envoy", "tgw-native")

# Differences observed with Envoy 1.40 that are acceptable. Anything not listed here fails.
# Request headers the function sees (the envelope's "headers"):
ACCEPTED_EVENT_HEADER_DIFFS = {
    "x-request-id": "a fresh UUID per request on both paths",
    "x-forwarded-client-cert": "Envoy (forward_client_cert_details) sends By;Hash;Cert;Chain;Subject;URI, "
                               "the native gateway By;Hash;URI: same By, Hash and URI, fewer elements",
}
# Response headers the caller gets:
ACCEPTED_RESPONSE_HEADER_DIFFS = {
    "server": "Envoy adds `server: envoy`; the native gateway sends none",
    "x-envoy-upstream-service-time": "Envoy's router timing header",
    "x-amzn-requestid": "the Lambda request id: a fresh UUID per invocation",
    "date": "the clock moves between the two calls (when either side sends one)",
}

EVENTS: dict[str, list[Any]] = {"plain": [], "pass": []}
_lock = threading.Lock()


def _record(fn: str, event: Any) -> None:
    with _lock:
        EVENTS[fn].append(event)


def plain(event: Any, context: Any) -> Any:
    """Passthrough off: Envoy's envelope in, a response envelope out, derived only from fields
    both paths must present identically."""
    _record("plain", event)
    seen = {k: event.get(k) for k in ("method", "raw_path", "query_string_parameters", "body", "is_base64_encoded")}
    if event.get("is_base64_encoded"):  # binary in, the same bytes back (base64 both ways)
        return {"statusCode": 201, "headers": {"x-from": "lambda", "content-type": "application/octet-stream",
                                               "x-seen": json.dumps({k: v for k, v in seen.items() if k != "body"})},
                "body": event["body"], "isBase64Encoded": True, "cookies": ["a=1"]}
    return {"statusCode": 201, "headers": {"x-from": "lambda", "content-type": "application/json"},
            "body": json.dumps(seen, sort_keys=True), "cookies": ["a=1"]}


def passthrough(event: Any, context: Any) -> Any:
    _record("pass", event)
    return {"passthrough": event, "fn": context.function_name}


BINARY = bytes(range(256)) + b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"
# (name, method, target, headers, body)
REQUESTS: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("get-repeated-query", "GET", "/foo/bar?x=1&x=2&y=3", {}, b""),
    ("get-encoded-query", "GET", "/q?name=a%20b&x=1&x=2&flag&empty=&y=%2F", {}, b""),
    ("post-json", "POST", "/items?x=1&x=2&y=3", {"content-type": "application/json"}, b'{"a":1,"b":[1,2]}'),
    ("post-json-charset", "POST", "/c", {"content-type": "application/json; charset=utf-8"}, b'{"a":1}'),
    ("post-binary", "POST", "/upload?x=1&x=2", {"content-type": "application/octet-stream"}, BINARY),
    ("post-text", "POST", "/t", {"content-type": "text/plain; charset=utf-8"}, "héllo wörld".encode()),
    ("put-no-content-type", "PUT", "/raw", {}, b'{"k":"v"}'),
    ("head", "HEAD", "/h?x=1&x=2", {}, b""),
]


def _defaults(service: str) -> dict[str, Any]:
    fn, passthrough_on = SERVICES[service]
    return {"Kind": "service-defaults", "Name": service, "Protocol": "http", "Meta": {
        META + "enabled": "true", META + "arn": ARN + fn, META + "region": "us-east-1",
        META + "payload-passthrough": "true" if passthrough_on else "false", META + "invocation-mode": "synchronous"}}


def _other_ca_client_cert(tmp_path: Path, trust_domain: str) -> tuple[Path, Path]:
    """A leaf for spiffe://<td>/.../svc/api that a *different* CA signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    uri = f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/api"
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _diff(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, tuple[list[str], list[str]]]:
    return {k: (a.get(k, []), b.get(k, [])) for k in sorted(set(a) | set(b)) if a.get(k, []) != b.get(k, [])}


def _multi(resp: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in resp.headers.multi_items():
        out.setdefault(name.lower(), []).append(value)
    return out


def test_envoy_and_native_gateways_agree_on_lambda(start_server: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials(AKID, SECRET)
    with run_in_thread({"plain": plain, "pass": passthrough}, credentials=[creds]) as lam:
        for events in EVENTS.values():
            events.clear()
        data = tmp_path / "data"
        grpc_port = free_port()
        server = start_server("--data-dir", str(data), "--grpc-addr", f"127.0.0.1:{grpc_port}",
                              env={"AWS_ENDPOINT_URL_LAMBDA": lam.endpoint_url})
        api = httpx.Client(base_url=server.url, timeout=10)
        ports = {"tgw-envoy": free_port(), "tgw-native": free_port()}
        for service in SERVICES:
            assert api.put("/v1/catalog/register", json={
                "Node": "lambdas", "Address": "lambdas.invalid",
                "NodeMeta": {"external-node": "true", "external-probe": "true"},
                "Service": {"Service": service}}).status_code == 200
            assert api.put("/v1/config", json=_defaults(service)).json() is True
        for gw, port in ports.items():
            assert api.put("/v1/agent/service/register", json={
                "Name": gw, "Kind": "terminating-gateway", "Port": port, "Address": "127.0.0.1"}).status_code == 200
            assert api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": gw,
                                               "Services": [{"Name": s} for s in SERVICES]}).json() is True
        for service in SERVICES:
            assert api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": service},
                           json={"Action": "allow"}).status_code == 200

        leaf = api.get("/v1/agent/connect/ca/leaf/api").json()
        roots = api.get("/v1/connect/ca/roots").json()
        td = roots["TrustDomain"]
        (tmp_path / "leaf.pem").write_text(leaf["CertPEM"])
        (tmp_path / "key.pem").write_text(leaf["PrivateKeyPEM"])
        roots_pem = "".join(r["RootCert"] for r in roots["Roots"])

        def context(cert: Path, key: Path) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cadata=roots_pem)
            ctx.check_hostname = False
            ctx.load_cert_chain(cert, key)
            return ctx

        good = context(tmp_path / "leaf.pem", tmp_path / "key.pem")
        sni = {s: service_sni(s, None, "default", "default", "dc1", td) for s in SERVICES}

        def call(gw: str, service: str, method: str = "GET", target: str = "/ping",
                 headers: dict[str, str] | None = None, body: bytes = b"",
                 ctx: ssl.SSLContext | None = None) -> httpx.Response:
            with httpx.Client(verify=ctx or good, timeout=5) as c:
                return c.request(method, f"https://127.0.0.1:{ports[gw]}{target}", content=body,
                                 headers={"user-agent": "paths-agree/1", "x-custom": "one", **(headers or {})},
                                 extensions={"sni_hostname": sni[service]})

        def status(gw: str, service: str) -> int:
            try:
                return call(gw, service).status_code
            except httpx.HTTPError:
                return 0

        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            monkeypatch.delenv(name, raising=False)
        aws_env = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true"}
        with monkeypatch.context() as m:  # EnvoyProcess inherits this process's environment
            for k, v in aws_env.items():
                m.setenv(k, v)
            envoy = EnvoyProcess(bootstrap(server, grpc_port, "delta", "--gateway", "terminating",
                                           "--service", "tgw-envoy")).start()
        native_log = open(tmp_path / "native.log", "wb")  # noqa: SIM115 - closed in finally
        native = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "gateway", "--service", "tgw-native",
             "--listen", f"127.0.0.1:{ports['tgw-native']}", "--metrics-listen", f"127.0.0.1:{free_port()}",
             "--data-dir", str(data)],
            cwd=ROOT, env={**os.environ, **aws_env, "AWS_ENDPOINT_URL_LAMBDA": lam.endpoint_url},
            stdout=native_log, stderr=subprocess.STDOUT)
        try:
            envoy.wait_admin(30)
            for gw in GATEWAYS:
                for service in SERVICES:
                    wait_until(lambda: status(gw, service) == (201 if service == "fn-plain" else 200), 30,
                               f"{gw} -> {service}\n{envoy.log(30)}\n"
                               f"{(tmp_path / 'native.log').read_text()[-3000:]}")

            # -- the same requests through both paths --------------------------------------------
            report: list[str] = []
            failures: list[str] = []
            accepted_seen: dict[str, Any] = {}
            for service, (fn, passthrough_on) in SERVICES.items():
                for name, method, target, headers, body in REQUESTS:
                    got: dict[str, tuple[httpx.Response, list[Any]]] = {}
                    for gw in GATEWAYS:
                        EVENTS[fn].clear()
                        before = lam.invocations()[fn]
                        resp = call(gw, service, method, target, headers, body)
                        got[gw] = (resp, list(EVENTS[fn]))
                        assert lam.invocations()[fn] - before == len(EVENTS[fn])
                    (er, ee), (nr, ne) = got["tgw-envoy"], got["tgw-native"]
                    case = f"{service} {name}"
                    report.append(f"{case}: envoy {er.status_code} {er.content[:60]!r} | "
                                  f"native {nr.status_code} {nr.content[:60]!r}")
                    if er.status_code != nr.status_code:
                        failures.append(f"{case}: status envoy={er.status_code} native={nr.status_code}")
                    if er.content != nr.content:
                        failures.append(f"{case}: body\n  envoy ={er.content!r}\n  native={nr.content!r}")
                    hdiff = _diff(_multi(er), _multi(nr))
                    accepted_seen.update({f"response {k}": v for k, v in hdiff.items() if k in ACCEPTED_RESPONSE_HEADER_DIFFS})
                    hdiff = {k: v for k, v in hdiff.items() if k not in ACCEPTED_RESPONSE_HEADER_DIFFS}
                    if hdiff:
                        failures.append(f"{case}: response headers (envoy, native) {hdiff}")
                    if len(ee) != len(ne):
                        failures.append(f"{case}: invocations envoy={len(ee)} native={len(ne)}")
                        continue
                    for ev_e, ev_n in zip(ee, ne):
                        if passthrough_on:
                            if ev_e != ev_n:
                                failures.append(f"{case}: payload envoy={ev_e!r} native={ev_n!r}")
                            continue
                        for k in ("method", "raw_path", "query_string_parameters", "body", "is_base64_encoded"):
                            if ev_e.get(k) != ev_n.get(k):
                                failures.append(f"{case}: event[{k}] envoy={ev_e.get(k)!r} native={ev_n.get(k)!r}")
                        he = {k: [v] for k, v in ev_e["headers"].items()}
                        hn = {k: [v] for k, v in ev_n["headers"].items()}
                        ediff = _diff(he, hn)
                        accepted_seen.update({f"event {k}": v for k, v in ediff.items() if k in ACCEPTED_EVENT_HEADER_DIFFS})
                        ediff = {k: v for k, v in ediff.items() if k not in ACCEPTED_EVENT_HEADER_DIFFS}
                        if ediff:
                            failures.append(f"{case}: event headers (envoy, native) {ediff}")

                    # what both paths must present, stated positively (not only "they agree")
                    if not passthrough_on and nr.status_code == 201:
                        assert nr.headers["x-from"] == "lambda", case
                        assert nr.headers.get_list("set-cookie") == ["a=1"], case
                        ev = ne[0]
                        assert ev["method"] == method and ev["raw_path"] == target, case
                        if name == "get-repeated-query":
                            assert ev["query_string_parameters"] == {"x": "1", "y": "3"}  # first value wins
                        if name == "post-binary":
                            assert ev["is_base64_encoded"] is True
                            assert base64.b64decode(ev["body"]) == BINARY
                            assert nr.content == BINARY
                            assert nr.headers["content-type"] == "application/octet-stream"
                        if name == "post-json":
                            assert ev["body"] == body.decode() and ev["is_base64_encoded"] is False
            print("\n" + "\n".join(report))
            print("accepted differences seen:", json.dumps(accepted_seen, indent=1, sort_keys=True))

            # -- intentions flip both paths, without a restart ------------------------------------
            for service in SERVICES:
                api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": service},
                        json={"Action": "deny"})
            for gw in GATEWAYS:
                for service in SERVICES:
                    wait_until(lambda: status(gw, service) == 403, 10, f"deny on {gw} -> {service}")
            counts = lam.invocations()
            for gw in GATEWAYS:
                for service in SERVICES:
                    for _ in range(2):
                        resp = call(gw, service, "POST", "/x?x=1&x=2", {"content-type": "application/json"}, b"{}")
                        assert resp.status_code == 403, (gw, service, resp.content)
                        assert "x-amzn-errortype" not in resp.headers  # the gateway's decision, not Lambda's
            assert lam.invocations() == counts  # a denied caller never reaches the function
            for service in SERVICES:
                api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": service},
                        json={"Action": "allow"})
            for gw in GATEWAYS:
                for service in SERVICES:
                    ok = 201 if service == "fn-plain" else 200
                    wait_until(lambda: status(gw, service) == ok, 10, f"allow again on {gw} -> {service}")

            # -- a client certificate from another CA never reaches the function ---------------------
            rogue_cert, rogue_key = _other_ca_client_cert(tmp_path, td)
            rogue = context(rogue_cert, rogue_key)
            counts = lam.invocations()
            for gw in GATEWAYS:
                for service in SERVICES:
                    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                        call(gw, service, "POST", "/x", {"content-type": "application/json"}, b"{}", ctx=rogue)
            assert lam.invocations() == counts
            assert native.poll() is None
            assert not [n for n in api.get("/v1/internal/xds/proxies").json().values() if n["nacks"]]
            assert not failures, "the paths disagree:\n" + "\n".join(failures)
        finally:
            envoy.stop()
            native.terminate()
            try:
                native.wait(10)
            except subprocess.TimeoutExpired:
                native.kill()
                native.wait(5)
            native_log.close()
