"""`terminus config ...`: config entries, from HCL or JSON files as `consul config` takes them."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import Format, HttpAddr, Token, client, one_line_errors, read_file
from gateway.cli.output import emit
from gateway.decode import canonical_config_entry, parse_hcl_or_json

app = typer.Typer(help="Write, read, list and delete config entries.", no_args_is_help=True)
Kind = Annotated[str, typer.Option("--kind", help="Config entry kind, e.g. service-intentions.")]
Name = Annotated[str, typer.Option("--name", help="Config entry name.")]


@app.command()
@one_line_errors
def write(
    file: str,
    cas: Annotated[bool, typer.Option("--cas", help="Check-and-set against --modify-index.")] = False,
    modify_index: Annotated[int, typer.Option("--modify-index")] = 0,
    http_addr: HttpAddr = None, token: Token = None,
) -> None:
    """Write the config entry in FILE (HCL or JSON; - for stdin)."""
    entry = canonical_config_entry(parse_hcl_or_json(read_file(file)))
    params = {"cas": str(modify_index)} if cas else None
    ok = client(http_addr, token).put("/v1/config", params=params, json=entry)
    if ok is False:
        raise CLIError(f"Config entry not updated: {entry.get('Kind')}/{entry.get('Name')} (cas failed)")
    print(f"Config entry written: {entry.get('Kind')}/{entry.get('Name')}")


@app.command()
@one_line_errors
def read(kind: Kind, name: Name, http_addr: HttpAddr = None, token: Token = None) -> None:
    """Print one config entry as JSON."""
    entry = client(http_addr, token).get(f"/v1/config/{kind}/{name}", allow_404=True)
    if entry is None:
        raise CLIError(f'Config entry not found for "{kind}" / "{name}"')
    emit(entry, "json")


@app.command("list")
@one_line_errors
def list_(kind: Kind, http_addr: HttpAddr = None, token: Token = None, format: Format = "table") -> None:
    """List the config entries of one kind."""
    entries = client(http_addr, token).get(f"/v1/config/{kind}")
    if format == "json":
        emit(entries, "json")
    else:
        for entry in entries:
            print(entry["Name"])


@app.command()
@one_line_errors
def delete(kind: Kind, name: Name, http_addr: HttpAddr = None, token: Token = None) -> None:
    """Delete one config entry."""
    client(http_addr, token).delete(f"/v1/config/{kind}/{name}")
    print(f"Config entry deleted: {kind}/{name}")
