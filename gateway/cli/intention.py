"""`terminus intention ...`: Consul's intention commands over the HTTP API."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import Format, HttpAddr, Token, client, one_line_errors, read_file
from gateway.cli.output import emit

app = typer.Typer(help="Create, inspect and check intentions.", no_args_is_help=True)
COLUMNS = [("Source", "SourceName"), ("Destination", "DestinationName"), ("Action", "Action"),
           ("Precedence", "Precedence"), ("ID", "ID")]


def _action(ixn: dict) -> str:
    return ixn.get("Action") or ("L7" if ixn.get("Permissions") else "")


@app.command()
@one_line_errors
def create(
    source: Annotated[str | None, typer.Argument()] = None,
    destination: Annotated[str | None, typer.Argument()] = None,
    allow: Annotated[bool, typer.Option("--allow", help="Allow traffic (the default).")] = False,
    deny: Annotated[bool, typer.Option("--deny", help="Deny traffic.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing intention for the pair.")] = False,
    description: Annotated[str, typer.Option("--description")] = "",
    file: Annotated[list[str] | None, typer.Option("--file", help="Read intentions (JSON) from files.")] = None,
    http_addr: HttpAddr = None,
    token: Token = None,
) -> None:
    """Create an intention from SOURCE to DESTINATION (allow unless --deny)."""
    if allow and deny:
        raise CLIError("Only one of --allow or --deny may be specified")
    c = client(http_addr, token)
    intentions = []
    if file:
        for path in file:
            try:
                data = json.loads(read_file(path))
            except json.JSONDecodeError as exc:
                raise CLIError(f"Error parsing {path}: {exc}") from None
            intentions.extend(data if isinstance(data, list) else [data])
    else:
        if not source or not destination:
            raise CLIError("Must specify two arguments: source and destination")
        intentions.append({"SourceName": source, "DestinationName": destination,
                           "Action": "deny" if deny else "allow", "Description": description})
    for ixn in intentions:
        src = ixn.get("SourceName", "")
        dst = ixn.get("DestinationName", "")
        if ixn.get("SourceNS") and ixn["SourceNS"] != "default":
            src = f"{ixn['SourceNS']}/{src}"
        if ixn.get("DestinationNS") and ixn["DestinationNS"] != "default":
            dst = f"{ixn['DestinationNS']}/{dst}"
        params = {"source": src, "destination": dst}
        if not replace and c.get("/v1/connect/intentions/exact", params=params, allow_404=True) is not None:
            raise CLIError(f'Intention with source "{src}" and destination "{dst}" already exists')
        body = {k: v for k, v in ixn.items() if k in ("Action", "Permissions", "Description") and v}
        body["SourceType"] = ixn.get("SourceType") or "consul"
        c.put("/v1/connect/intentions/exact", params=params, json=body)
        print(f'Created: {src} => {dst} ({_action(body) or "allow"})')


def _target(c, source: str, destination: str | None) -> dict:
    if destination is None:  # a single argument is a legacy intention ID
        return c.get(f"/v1/connect/intentions/{source}")
    ixn = c.get("/v1/connect/intentions/exact", params={"source": source, "destination": destination}, allow_404=True)
    if ixn is None:
        raise CLIError(f"Intention with source {source!r} and destination {destination!r} not found.")
    return ixn


@app.command()
@one_line_errors
def get(
    source: str,
    destination: Annotated[str | None, typer.Argument()] = None,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """Show one intention, by SOURCE DESTINATION or by ID."""
    ixn = _target(client(http_addr, token), source, destination)
    emit(ixn, format, COLUMNS + [("Created At", "CreatedAt")])


@app.command()
@one_line_errors
def delete(
    source: str,
    destination: Annotated[str | None, typer.Argument()] = None,
    http_addr: HttpAddr = None, token: Token = None,
) -> None:
    """Delete an intention, by SOURCE DESTINATION or by ID."""
    c = client(http_addr, token)
    if destination is None:
        c.delete(f"/v1/connect/intentions/{source}")
    else:
        _target(c, source, destination)
        c.delete("/v1/connect/intentions/exact", params={"source": source, "destination": destination})
    print("Intention deleted.")


@app.command("list")
@one_line_errors
def list_(
    filter: Annotated[str | None, typer.Option("--filter", help="A Consul filter expression.")] = None,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """List every intention, in evaluation order."""
    params = {"filter": filter} if filter else None
    items = client(http_addr, token).get("/v1/connect/intentions", params=params)
    for ixn in items:
        ixn.setdefault("Action", _action(ixn))
    emit(items, format, COLUMNS)


@app.command()
@one_line_errors
def check(
    source: str,
    destination: str,
    path: Annotated[str | None, typer.Option("--path", help="L7 what-if: request path.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="L7 what-if: request method.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", help="L7 what-if: name:value (repeatable).")] = None,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """Would SOURCE be allowed to reach DESTINATION? Exit 0 allowed, 2 denied (as Consul)."""
    params: dict = {"source": source, "destination": destination}
    if path:
        params["path"] = path
    if method:
        params["method"] = method
    if header:
        params["header"] = header
    result = client(http_addr, token).get("/v1/connect/intentions/check", params=params)
    if format == "json":
        emit(result, "json")
    else:
        print("Allowed" if result["Allowed"] else "Denied")
        if result.get("Reason"):
            print(f"  {result['Reason']}")
    raise typer.Exit(0 if result["Allowed"] else 2)


@app.command()
@one_line_errors
def match(
    name: str,
    source: Annotated[bool, typer.Option("--source", help="Match NAME as the source.")] = False,
    destination: Annotated[bool, typer.Option("--destination", help="Match NAME as the destination (default).")] = False,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """Intentions that apply to NAME, in the order they are evaluated."""
    if source and destination:
        raise CLIError("Only one of --source or --destination may be specified")
    by = "source" if source else "destination"
    result = client(http_addr, token).get("/v1/connect/intentions/match", params={"by": by, "name": name})
    items = result.get(name, [])
    for ixn in items:
        ixn.setdefault("Action", _action(ixn))
    emit(items, format, COLUMNS)
