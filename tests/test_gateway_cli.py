"""`terminus gateway` as its own process beside the server: it follows the server's change
feed, so an intention written through the API flips the outcome without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.awslambda.local import run_in_thread
from gateway.awslambda.sigv4 import Credentials
from gateway.identity.sni import service_sni
from tests.support.envoy import free_port
from tests.support.pki import leaf_client_context

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def echo(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"path": event.get("raw_path"), "fn": context.function_name})}


def test_native_gateway_process_follows_the_servers_changes(start_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "d"
    server = start_server("--data-dir", str(data))
    api = httpx.Client(base_url=server.url)
    creds = Credentials("AKIDTERMINUS", "terminus-secret")
    with run_in_thread({"authentication": echo}, credentials=[creds]) as lam:
        meta = {"serverless.consul.hashicorp.com/v1alpha1/lambda/enabled": "true",
                "serverless.consul.hashicorp.com/v1alpha1/lambda/arn": "arn:aws:lambda:us-east-1:123456789012:function:authentication",
                "serverless.consul.hashicorp.com/v1alpha1/lambda/region": "us-east-1"}
        assert api.put("/v1/catalog/register", json={"Node": "lambdas", "Address": "127.0.0.1",
                                                    "Service": {"Service": "authentication", "Port": 443}}).status_code == 200
        assert api.put("/v1/config", json={"Kind": "service-defaults", "Name": "authentication", "Protocol": "http", "Meta": meta}).status_code == 200
        gw_port = free_port()
        api.put("/v1/agent/service/register", json={"Name": "tgw", "Kind": "terminating-gateway", "Port": gw_port})
        api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "authentication"}]})
        api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"}, json={"Action": "allow"})

        env = {**os.environ, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_LAMBDA": lam.endpoint_url}
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "gateway", "--service", "tgw",
                                 "--listen", f"127.0.0.1:{gw_port}", "--metrics-listen", f"127.0.0.1:{free_port()}",
                                 "--data-dir", str(data)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            ctx, trust_domain = leaf_client_context(api, "api", tmp_path)
            sni = service_sni("authentication", None, "default", "default", "dc1", trust_domain)

            def call() -> int:
                try:
                    with httpx.Client(verify=ctx, timeout=3) as c:
                        r = c.get(f"https://127.0.0.1:{gw_port}/hello?x=1", extensions={"sni_hostname": sni})
                        return r.status_code
                except httpx.HTTPError:
                    return 0

            deadline = time.monotonic() + 30
            while call() != 200:
                assert time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "gateway never served"
                time.sleep(0.2)
            api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"}, json={"Action": "deny"})
            start = time.monotonic()
            while call() != 403:
                assert time.monotonic() - start < 5, "the deny written through the server never reached the gateway"
                time.sleep(0.1)
            assert time.monotonic() - start < 2  # change feed poll (0.25 s) plus the rebuild
            before = lam.invocations().get("authentication", 0)
            assert [call() for _ in range(3)] == [403, 403, 403]
            assert lam.invocations().get("authentication", 0) == before  # a denied caller never reaches the function
        finally:
            proc.terminate()
            proc.wait(10)
