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
