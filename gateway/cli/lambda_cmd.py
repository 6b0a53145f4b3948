"""`terminus lambda sync|local`: tagged AWS Lambda functions into the catalog, and a local Lambda."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import HttpAddr, Token, client, one_line_errors

app = typer.Typer(help="AWS Lambda: sync tagged functions into the catalog; run a local Lambda endpoint.",
                  no_args_is_help=True)


def _aws_error(exc: Exception) -> CLIError:
    return CLIError(f"AWS Lambda: {exc}")


def _describe(svc: Any) -> str:
    return (f"{svc.arn} (payload-passthrough={'true' if svc.payload_passthrough else 'false'}, "
            f"invocation-mode={svc.invocation_mode})")


@app.command()
@one_line_errors
def sync(
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / AWS config).")] = None,
    node: Annotated[str, typer.Option("--node", help="External node the Lambda services are registered on.")] = "lambdas",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; change nothing.")] = False,
    http_addr: HttpAddr = None,
    token: Token = None,
) -> None:
    """Register functions tagged serverless.consul.hashicorp.com/v1alpha1/lambda/enabled=true (and their
    aliases), update changed ones, deregister the ones whose function or tag is gone.

    AWS credentials come from boto3's default chain; AWS_ENDPOINT_URL_LAMBDA / AWS_ENDPOINT_URL are honoured."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from gateway.awslambda.sync import apply_sync, list_lambda_functions, plan_sync, read_registered

    try:
        # AWS_REGION is what the other SDKs and the Lambda runtime use; botocore reads only
        # AWS_DEFAULT_REGION and the config file
        session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION") or None)
        if not session.region_name:
            raise CLIError("No AWS region: pass --region or set AWS_REGION")
        lam = session.client("lambda")
        functions = list_lambda_functions(lam)
    except (BotoCoreError, ClientError) as exc:
        raise _aws_error(exc) from None

    api = client(http_addr, token)
    datacenter = None
    try:  # agent:read may be denied to a registrator-style token; the datacenter filter is then off
        datacenter = ((api.get("/v1/agent/self") or {}).get("Config") or {}).get("Datacenter")
    except CLIError:
        pass
    plan = plan_sync(functions, read_registered(api), region=session.region_name, datacenter=datacenter)
    for why in plan.skipped:
        print(f"Warning: skipped {why}", file=sys.stderr)

    if dry_run:
        for svc in plan.register:
            print(f"Would register Lambda service: {svc.name} {_describe(svc)}")
        for svc in plan.update:
            print(f"Would update Lambda service: {svc.name} {_describe(svc)}")
        for name in plan.deregister:
            print(f"Would deregister Lambda service: {name}")
    else:
        def report(action: str, name: str, svc: Any) -> None:
            if action == "register":
                print(f"Registered Lambda service: {name} {_describe(svc)}", flush=True)
            elif action == "update":
                print(f"Updated Lambda service: {name} {_describe(svc)}", flush=True)
            else:
                print(f"Deregistered Lambda service: {name}", flush=True)

        apply_sync(api, plan, node=node, report=report)
    if plan.empty:
        print(f"Lambda services in sync ({len(functions)} function(s) in {session.region_name})")


def _parse_functions(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, handler = spec.partition("=")
        if not sep or not name or not handler:
            raise CLIError(f"--function must be NAME=module:handler, got {spec!r}")
        if name in out:
            raise CLIError(f"--function {name!r} given twice")
        out[name] = handler
    return out


@app.command()
@one_line_errors
def local(
    function: Annotated[list[str], typer.Option("--function", help="NAME=module:handler (repeatable).")],
    listen: Annotated[str, typer.Option("--listen", help="Loopback HOST:PORT to serve the Invoke API on.")] = "127.0.0.1:9001",
    access_key: Annotated[str | None, typer.Option("--access-key", help="Accepted SigV4 access key (env AWS_ACCESS_KEY_ID).")] = None,
    secret_key: Annotated[str | None, typer.Option("--secret-key", help="Its secret key (env AWS_SECRET_ACCESS_KEY).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="Region in ARNs and signatures (default AWS_REGION or us-east-1).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-invocation timeout in seconds.")] = 30.0,
) -> None:
    """Serve the Lambda Invoke API locally for the given Python handlers until Ctrl-C.

    Requests must be SigV4-signed with the given key pair (flags, else AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN). Point clients at it with AWS_ENDPOINT_URL_LAMBDA."""
    import asyncio
    import signal

    from gateway.awslambda.local import LocalLambda
    from gateway.awslambda.sigv4 import Credentials
    from gateway.cli.common import split_addr

    functions = _parse_functions(function)
    host, port = split_addr(listen, "--listen")
    if bool(access_key) != bool(secret_key):
        raise CLIError("--access-key and --secret-key go together")
    if access_key:
        creds = Credentials(access_key, secret_key)  # type: ignore[arg-type]
    elif os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                            os.environ.get("AWS_SESSION_TOKEN") or None)
    else:
        raise CLIError("No credentials: pass --access-key and --secret-key or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    if os.getcwd() not in sys.path:  # handlers in the current directory import as with `python -m`
        sys.path.insert(0, os.getcwd())
    try:
        lam = LocalLambda(functions, credentials=[creds], region=region, timeout=timeout)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise CLIError(f"Cannot load handler: {exc}") from None

    async def serve() -> None:
        try:
            await lam.start(host, port)
        except (ValueError, OSError) as exc:
            raise CLIError(f"Cannot listen on {listen}: {exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"==> local Lambda listening on {lam.endpoint_url} (region {region}, access key {creds.access_key})")
        for name, handler in sorted(functions.items()):
            print(f"    {name}: {handler}  ARN {lam.function_arn(name)}")
        print(f"    Try:  AWS_ENDPOINT_URL_LAMBDA={lam.endpoint_url} aws lambda invoke --function-name "
              f"{min(functions)} out.json   (Ctrl-C to stop)", flush=True)
        try:
            await stop.wait()
        finally:
            await lam.stop()
            print("==> local Lambda stopped", flush=True)

    asyncio.run(serve())
