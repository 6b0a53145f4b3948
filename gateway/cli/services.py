"""`terminus services register|deregister FILE`: Consul service definitions, HCL or JSON."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import HttpAddr, Token, client, one_line_errors, read_file
from gateway.decode import parse_service_definitions

app = typer.Typer(help="Register and deregister services with the local agent.", no_args_is_help=True)


@app.command()
@one_line_errors
def register(file: str, http_addr: HttpAddr = None, token: Token = None) -> None:
    """Register every service defined in FILE (sidecar_service included)."""
    c = client(http_addr, token)
    for definition in parse_service_definitions(read_file(file)):
        c.put("/v1/agent/service/register", json=definition)
        print(f"Registered service: {definition['Name']}")


@app.command()
@one_line_errors
def deregister(
    file: Annotated[str | None, typer.Argument()] = None,
    service_id: Annotated[str | None, typer.Option("--id", help="Deregister this service ID instead of a file.")] = None,
    http_addr: HttpAddr = None, token: Token = None,
) -> None:
    """Deregister the services defined in FILE, or the one given with --id."""
    if not file and not service_id:
        raise CLIError("Must specify a file or --id")
    c = client(http_addr, token)
    ids = [service_id] if service_id else [d.get("ID") or d["Name"] for d in parse_service_definitions(read_file(file))]
    for sid in ids:
        c.put(f"/v1/agent/service/deregister/{sid}")
        print(f"Deregistered service: {sid}")
