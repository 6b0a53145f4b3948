"""`terminus lambda sync` against moto's Lambda (server mode) and a real terminus server process;
`terminus lambda local` as a real foreground process; unit tests for the pure `plan_sync`.

The CLI runs in a subprocess as `python -c "from gateway.cli.lambda_cmd import app; app()"` so the
test does not depend on the `lambda` group being wired into `gateway.cli.main`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from gateway.awslambda.sync import (
    ALIASES_TAG, ENABLED_TAG, INVOCATION_MODE_TAG, MANAGED_TAG, MARKER_KEY, MARKER_VALUE, META_ARN,
    META_ENABLED, META_INVOCATION_MODE, META_PAYLOAD_PASSTHROUGH, META_REGION, NAMESPACE_TAG,
    PAYLOAD_PASSTHROUGH_TAG, DATACENTER_TAG, LambdaService, list_lambda_functions, plan_sync,
    service_defaults_meta,
)
from tests.conftest import ROOT, free_port
from tests.support.moto import threaded_moto

REGION = "us-east-1"
ACCOUNT = "123456789012"
CLI = ["-c", "from gateway.cli.lambda_cmd import app; app()"]


def arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"


# -- moto and AWS helpers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with threaded_moto() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    """Fresh moto state; the env the CLI subprocess gets; boto3 clients for the test itself."""
    httpx.post(f"{moto_endpoint}/moto-api/reset").raise_for_status()
    httpx.post(f"{moto_endpoint}/moto-api/config", json={"lambda": {"use_docker": False}}).raise_for_status()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CONSUL_HTTP", "TERMINUS_HTTP"))}
    env.update({
        "AWS_ENDPOINT_URL_LAMBDA": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    })
    kw = dict(endpoint_url=moto_endpoint, region_name=REGION, aws_access_key_id="testing",
              aws_secret_access_key="testing")
    iam, lam = boto3.client("iam", **kw), boto3.client("lambda", **kw)
    role = iam.create_role(RoleName="lambda-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    yield {"env": env, "lambda": lam, "role": role, "endpoint": moto_endpoint}


def create_function(aws: dict[str, Any], name: str, tags: dict[str, str] | None = None) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return event\n")
    kw: dict[str, Any] = {"Tags": tags} if tags else {}
    fn = aws["lambda"].create_function(FunctionName=name, Runtime="python3.12", Role=aws["role"],
                                       Handler="lambda_function.lambda_handler",
                                       Code={"ZipFile": buf.getvalue()}, **kw)
    return fn["FunctionArn"]


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *CLI, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def sync(aws: dict[str, Any], server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli(aws["env"], "sync", "--http-addr", server.addr, *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def services(server: Any) -> dict[str, list[str]]:
    return httpx.get(f"{server.url}/v1/catalog/services").json()


def defaults(server: Any, name: str) -> dict[str, Any] | None:
    r = httpx.get(f"{server.url}/v1/config/service-defaults/{name}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def lambda_services(server: Any) -> set[str]:
    return {name for name, tags in services(server).items() if MANAGED_TAG in tags}


# -- end to end: moto → CLI → terminus -----------------------------------------------------------

def test_sync_registers_tagged_functions_with_service_defaults(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    create_function(aws, "plain")
    create_function(aws, "disabled", {ENABLED_TAG: "false"})
    create_function(aws, "orders", {ENABLED_TAG: "true"})
    create_function(aws, "events", {ENABLED_TAG: "true", PAYLOAD_PASSTHROUGH_TAG: "true",
                                    INVOCATION_MODE_TAG: "ASYNCHRONOUS"})

    out = sync(aws, server).stdout.splitlines()
    assert out == [
        f"Registered Lambda service: events {arn('events')} (payload-passthrough=true, invocation-mode=ASYNCHRONOUS)",
        f"Registered Lambda service: orders {arn('orders')} (payload-passthrough=false, invocation-mode=SYNCHRONOUS)",
    ]
    assert lambda_services(server) == {"events", "orders"}
    assert "plain" not in services(server) and "disabled" not in services(server)

    entry = defaults(server, "events")
    assert entry is not None and entry["Protocol"] == "http"
    assert entry["Meta"] == {
        META_ENABLED: "true", META_ARN: arn("events"), META_REGION: REGION,
        META_PAYLOAD_PASSTHROUGH: "true", META_INVOCATION_MODE: "asynchronous", MARKER_KEY: MARKER_VALUE,
    }
    orders = defaults(server, "orders")
    assert orders is not None
    assert orders["Meta"][META_PAYLOAD_PASSTHROUGH] == "false"
    assert orders["Meta"][META_INVOCATION_MODE] == "synchronous"

    [inst] = httpx.get(f"{server.url}/v1/catalog/service/orders").json()
    assert inst["Node"] == "lambdas" and inst["ServiceID"] == "orders"
    assert inst["NodeMeta"] == {"external-node": "true", "external-probe": "true"}
    assert inst["ServiceMeta"] == {MARKER_KEY: MARKER_VALUE}

    again = sync(aws, server)  # idempotent: nothing to do the second time
    assert again.stdout.splitlines() == [f"Lambda services in sync (4 function(s) in {REGION})"]


def test_retag_updates_and_untag_or_delete_deregisters(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    a = create_function(aws, "fn-a", {ENABLED_TAG: "true"})
    create_function(aws, "fn-b", {ENABLED_TAG: "true"})
    create_function(aws, "fn-c", {ENABLED_TAG: "true"})
    # a service and service-defaults that are not the sync's: never touched
    httpx.put(f"{server.url}/v1/catalog/register", json={
        "Node": "web-node", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}}).raise_for_status()
    httpx.put(f"{server.url}/v1/config", json={"Kind": "service-defaults", "Name": "web",
                                              "Protocol": "http"}).raise_for_status()
    sync(aws, server)
    assert lambda_services(server) == {"fn-a", "fn-b", "fn-c"}

    aws["lambda"].tag_resource(Resource=a, Tags={PAYLOAD_PASSTHROUGH_TAG: "true"})
    aws["lambda"].untag_resource(Resource=arn("fn-b"), TagKeys=[ENABLED_TAG])
    aws["lambda"].delete_function(FunctionName="fn-c")
    out = sync(aws, server).stdout.splitlines()
    assert out == [
        f"Updated Lambda service: fn-a {arn('fn-a')} (payload-passthrough=true, invocation-mode=SYNCHRONOUS)",
        "Deregistered Lambda service: fn-b",
        "Deregistered Lambda service: fn-c",
    ]
    entry = defaults(server, "fn-a")
    assert entry is not None and entry["Meta"][META_PAYLOAD_PASSTHROUGH] == "true"
    assert lambda_services(server) == {"fn-a"}
    assert defaults(server, "fn-b") is None and defaults(server, "fn-c") is None
    assert "web" in services(server) and defaults(server, "web") is not None

    # retag to disabled ("false" is not "true"): deregistered too
    aws["lambda"].tag_resource(Resource=a, Tags={ENABLED_TAG: "false"})
    assert sync(aws, server).stdout.splitlines() == ["Deregistered Lambda service: fn-a"]
    assert lambda_services(server) == set() and defaults(server, "fn-a") is None
    assert "web" in services(server)


def test_aliases_register_one_service_each(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    lam = aws["lambda"]
    create_function(aws, "api")
    version = lam.publish_version(FunctionName="api")["Version"]
    for alias in ("dev", "prod"):
        lam.create_alias(FunctionName="api", Name=alias, FunctionVersion=version)
    lam.tag_resource(Resource=arn("api"), Tags={ENABLED_TAG: "true", ALIASES_TAG: "dev+prod+ghost"})

    proc = sync(aws, server)
    assert [line.split(" (")[0] for line in proc.stdout.splitlines()] == [
        f"Registered Lambda service: api {arn('api')}",
        f"Registered Lambda service: api-dev {arn('api')}:dev",
        f"Registered Lambda service: api-prod {arn('api')}:prod",
    ]
    assert "Warning: skipped api: alias 'ghost' does not exist" in proc.stderr
    assert lambda_services(server) == {"api", "api-dev", "api-prod"}
    prod = defaults(server, "api-prod")
    assert prod is not None and prod["Meta"][META_ARN] == f"{arn('api')}:prod"
    assert prod["Meta"][META_REGION] == REGION

    lam.tag_resource(Resource=arn("api"), Tags={ALIASES_TAG: "dev"})
    assert sync(aws, server).stdout.splitlines() == ["Deregistered Lambda service: api-prod"]
    assert lambda_services(server) == {"api", "api-dev"}


def test_dry_run_changes_nothing(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    create_function(aws, "keep", {ENABLED_TAG: "true"})
    create_function(aws, "drop", {ENABLED_TAG: "true"})

    dry = sync(aws, server, "--dry-run").stdout.splitlines()
    assert [line.split(" arn:")[0] for line in dry] == [
        "Would register Lambda service: drop", "Would register Lambda service: keep"]
    assert lambda_services(server) == set() and defaults(server, "keep") is None
    assert "lambdas" not in {n["Node"] for n in httpx.get(f"{server.url}/v1/catalog/nodes").json()}

    sync(aws, server)
    aws["lambda"].delete_function(FunctionName="drop")
    aws["lambda"].tag_resource(Resource=arn("keep"), Tags={INVOCATION_MODE_TAG: "ASYNCHRONOUS"})
    dry = sync(aws, server, "--dry-run").stdout.splitlines()
    assert dry == [
        f"Would update Lambda service: keep {arn('keep')} (payload-passthrough=false, invocation-mode=ASYNCHRONOUS)",
        "Would deregister Lambda service: drop",
    ]
    assert lambda_services(server) == {"keep", "drop"}
    keep = defaults(server, "keep")
    assert keep is not None and keep["Meta"][META_INVOCATION_MODE] == "synchronous"


def test_invalid_tags_are_skipped_with_a_warning(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    create_function(aws, "bad-mode", {ENABLED_TAG: "true", INVOCATION_MODE_TAG: "sometimes"})
    create_function(aws, "tenant", {ENABLED_TAG: "true", NAMESPACE_TAG: "team-a"})
    create_function(aws, "elsewhere", {ENABLED_TAG: "true", DATACENTER_TAG: "dc9"})
    create_function(aws, "here", {ENABLED_TAG: "true", DATACENTER_TAG: "dc1"})
    proc = sync(aws, server)
    assert "Warning: skipped bad-mode: invalid invocation mode 'sometimes'" in proc.stderr
    assert "Warning: skipped tenant: namespaces and admin partitions are not supported" in proc.stderr
    assert lambda_services(server) == {"here"}


def test_cli_errors_are_one_line(aws: dict[str, Any], start_server: Any) -> None:
    server = start_server("--dev")
    create_function(aws, "fn", {ENABLED_TAG: "true"})

    dead = f"127.0.0.1:{free_port()}"
    proc = run_cli(aws["env"], "sync", "--http-addr", dead)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"Error: Error connecting to terminus at http://{dead}")
    assert proc.stderr.count("\n") == 1

    env = {**aws["env"], "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{free_port()}"}
    proc = run_cli(env, "sync", "--http-addr", server.addr)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("Error: AWS Lambda: ") and proc.stderr.count("\n") == 1

    env = {k: v for k, v in aws["env"].items() if k != "AWS_REGION"}
    proc = run_cli(env, "sync", "--http-addr", server.addr)
    assert proc.returncode == 1 and proc.stderr == "Error: No AWS region: pass --region or set AWS_REGION\n"

    # the generic AWS_ENDPOINT_URL works as well as the Lambda-specific one
    env = {k: v for k, v in aws["env"].items() if k != "AWS_ENDPOINT_URL_LAMBDA"}
    env["AWS_ENDPOINT_URL"] = aws["endpoint"]
    proc = run_cli(env, "sync", "--http-addr", server.addr, "--region", REGION)
    assert proc.returncode == 0, proc.stderr
    assert lambda_services(server) == {"fn"}


def test_list_lambda_functions_reads_tags_and_aliases(aws: dict[str, Any]) -> None:
    lam = aws["lambda"]
    for i in range(3):
        create_function(aws, f"f{i}", {ENABLED_TAG: "true"} if i else None)
    v = lam.publish_version(FunctionName="f2")["Version"]
    lam.create_alias(FunctionName="f2", Name="live", FunctionVersion=v)
    lam.tag_resource(Resource=arn("f2"), Tags={ALIASES_TAG: "live"})
    got = sorted(list_lambda_functions(lam), key=lambda f: f["name"])
    assert [(f["name"], f["arn"], f["aliases"]) for f in got] == [
        ("f0", arn("f0"), None), ("f1", arn("f1"), None), ("f2", arn("f2"), ["live"])]
    assert got[0]["tags"] == {} and got[1]["tags"] == {ENABLED_TAG: "true"}


# -- terminus lambda local -----------------------------------------------------------------------

def test_local_runs_in_foreground_until_interrupted(tmp_path: Path) -> None:
    (tmp_path / "sync_test_handlers.py").write_text(textwrap.dedent("""
        def hello(event, context):
            return {"hello": event.get("name"), "fn": context.function_name}
    """))
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "AWS_ACCESS_KEY_ID": "AKIDSYNCTEST", "AWS_SECRET_ACCESS_KEY": "s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
         "from gateway.cli.lambda_cmd import app; app()",
         "local", "--function", "greet=sync_test_handlers:hello", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"terminus lambda local exited: {proc.stderr.read() if proc.stderr else ''}")
        assert line.startswith(f"==> local Lambda listening on http://127.0.0.1:{port}"), line
        lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                           aws_access_key_id="AKIDSYNCTEST", aws_secret_access_key="s3cret")
        r = lam.invoke(FunctionName="greet", Payload=json.dumps({"name": "terminus"}).encode())
        assert json.loads(r["Payload"].read()) == {"hello": "terminus", "fn": "greet"}
        bad = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                           aws_access_key_id="AKIDSYNCTEST", aws_secret_access_key="wrong")
        with pytest.raises(bad.exceptions.ClientError):
            bad.invoke(FunctionName="greet", Payload=b"{}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "==> local Lambda stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--function", "f=os:getcwd", "--listen", "0.0.0.0:9"], {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
     "Error: Cannot listen on 0.0.0.0:9: the local Lambda only binds loopback addresses, not '0.0.0.0'"),
    (["--function", "f=os:getcwd"], {}, "Error: No credentials: pass --access-key and --secret-key or set "
     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    (["--function", "nohandler", "--access-key", "a", "--secret-key", "b"], {},
     "Error: --function must be NAME=module:handler, got 'nohandler'"),
    (["--function", "f=no_such_module_xyz:h", "--access-key", "a", "--secret-key", "b"], {},
     "Error: Cannot load handler: No module named 'no_such_module_xyz'"),
])
def test_local_errors_are_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = run_cli({**base, **env}, "local", *args, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == message + "\n"


# -- plan_sync (pure) ----------------------------------------------------------------------------

def fn(name: str, tags: dict[str, str] | None = None, aliases: list[str] | None = None,
       region: str = REGION) -> dict[str, Any]:
    return {"name": name, "arn": arn(name, region), "tags": tags or {}, "aliases": aliases}


def reg(svc: LambdaService) -> dict[str, Any]:
    return {"service": True, "meta": service_defaults_meta(svc)}


ON = {ENABLED_TAG: "true"}


def test_plan_registers_only_enabled_functions() -> None:
    plan = plan_sync([fn("a", ON), fn("b"), fn("c", {ENABLED_TAG: "True"}), fn("d", {ENABLED_TAG: "false"})], {})
    assert plan.register == [LambdaService("a", "a", arn("a"), REGION)]
    assert plan.update == [] and plan.deregister == [] and plan.skipped == []


def test_plan_tags_map_to_service_settings() -> None:
    tags = {**ON, PAYLOAD_PASSTHROUGH_TAG: "true", INVOCATION_MODE_TAG: "asynchronous"}
    [svc] = plan_sync([fn("x", tags, region="eu-west-1")], {}).register
    assert (svc.region, svc.payload_passthrough, svc.invocation_mode) == ("eu-west-1", True, "ASYNCHRONOUS")
    assert svc.meta()[META_INVOCATION_MODE] == "asynchronous" and svc.meta()[META_REGION] == "eu-west-1"


def test_plan_qualified_arn_is_normalized() -> None:
    f = {"name": "q", "arn": arn("q") + ":$LATEST", "tags": ON, "aliases": None}
    assert plan_sync([f], {}).register[0].arn == arn("q")


def test_plan_in_sync_is_empty() -> None:
    svc = LambdaService("a", "a", arn("a"), REGION)
    plan = plan_sync([fn("a", ON)], {"a": reg(svc)})
    assert plan.empty and plan.register == plan.update == plan.deregister == []


def test_plan_changed_tags_update() -> None:
    old = LambdaService("a", "a", arn("a"), REGION)
    plan = plan_sync([fn("a", {**ON, PAYLOAD_PASSTHROUGH_TAG: "true"})], {"a": reg(old)})
    assert [s.name for s in plan.update] == ["a"] and plan.update[0].payload_passthrough
    assert plan.register == [] and plan.deregister == []


def test_plan_missing_half_is_re_registered() -> None:
    svc = LambdaService("a", "a", arn("a"), REGION)
    assert [s.name for s in plan_sync([fn("a", ON)], {"a": {"service": True, "meta": None}}).register] == ["a"]
    assert [s.name for s in plan_sync([fn("a", ON)], {"a": {"service": False, "meta": reg(svc)["meta"]}}).register] == ["a"]


def test_plan_gone_or_untagged_deregisters() -> None:
    a, b = LambdaService("a", "a", arn("a"), REGION), LambdaService("b", "b", arn("b"), REGION)
    plan = plan_sync([fn("a")], {"a": reg(a), "b": reg(b)})
    assert plan.deregister == ["a", "b"] and plan.register == [] and plan.update == []


def test_plan_other_region_services_are_left_alone() -> None:
    west = LambdaService("w", "w", arn("w", "us-west-2"), "us-west-2")
    assert plan_sync([], {"w": reg(west)}, region=REGION).deregister == []
    assert plan_sync([], {"w": reg(west)}, region="us-west-2").deregister == ["w"]
    assert plan_sync([], {"w": {"service": True, "meta": None}}, region=REGION).deregister == ["w"]


def test_plan_aliases() -> None:
    plan = plan_sync([fn("api", {**ON, ALIASES_TAG: "dev+prod"})], {})
    assert [(s.name, s.arn, s.alias) for s in plan.register] == [
        ("api", arn("api"), None), ("api-dev", arn("api") + ":dev", "dev"), ("api-prod", arn("api") + ":prod", "prod")]
    # with the alias list known, a listed alias that does not exist is skipped and reported
    plan = plan_sync([fn("api", {**ON, ALIASES_TAG: "dev+gone"}, aliases=["dev"])], {})
    assert [s.name for s in plan.register] == ["api", "api-dev"]
    assert plan.skipped == ["api: alias 'gone' does not exist"]
    # aliases of a disabled function register nothing
    assert plan_sync([fn("api", {ALIASES_TAG: "dev"})], {}).register == []


def test_plan_name_collision_first_wins() -> None:
    plan = plan_sync([fn("a", {**ON, ALIASES_TAG: "b"}), fn("a-b", ON)], {})
    assert [(s.name, s.arn) for s in plan.register] == [("a", arn("a")), ("a-b", arn("a") + ":b")]
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith("a-b: service name 'a-b' already taken")


def test_plan_invalid_tags_and_datacenter() -> None:
    plan = plan_sync([
        fn("m", {**ON, INVOCATION_MODE_TAG: "maybe"}),
        fn("n", {**ON, NAMESPACE_TAG: "team"}),
        fn("n2", {**ON, NAMESPACE_TAG: "default"}),
        fn("other-dc", {**ON, DATACENTER_TAG: "dc2"}),
        fn("this-dc", {**ON, DATACENTER_TAG: "dc1"}),
    ], {}, datacenter="dc1")
    assert [s.name for s in plan.register] == ["n2", "this-dc"]
    assert [s.split(":")[0] for s in plan.skipped] == ["m", "n"]
    # a managed service whose function moved to another datacenter is deregistered here
    svc = LambdaService("this-dc", "this-dc", arn("this-dc"), REGION)
    assert plan_sync([fn("this-dc", {**ON, DATACENTER_TAG: "dc2"})], {"this-dc": reg(svc)},
                     datacenter="dc1").deregister == ["this-dc"]
