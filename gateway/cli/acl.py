"""`terminus acl ...`: bootstrap, tokens and policies."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.common import Format, HttpAddr, Token, client, one_line_errors, read_file
from gateway.cli.output import emit

app = typer.Typer(help="Manage ACL tokens and policies.", no_args_is_help=True)
token_app = typer.Typer(help="ACL tokens.", no_args_is_help=True)
policy_app = typer.Typer(help="ACL policies.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(policy_app, name="policy")
TOKEN_COLUMNS = [("AccessorID", "AccessorID"), ("SecretID", "SecretID"), ("Description", "Description")]


@app.command()
@one_line_errors
def bootstrap(http_addr: HttpAddr = None, format: Format = "table") -> None:
    """Create the initial management token (once)."""
    emit(client(http_addr, None).put("/v1/acl/bootstrap"), format, TOKEN_COLUMNS)


@token_app.command("create")
@one_line_errors
def token_create(
    description: Annotated[str, typer.Option("--description")] = "",
    policy_name: Annotated[list[str] | None, typer.Option("--policy-name")] = None,
    policy_id: Annotated[list[str] | None, typer.Option("--policy-id")] = None,
    service_identity: Annotated[list[str] | None, typer.Option("--service-identity")] = None,
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """Create a token linked to policies and/or service identities."""
    body = {
        "Description": description,
        "Policies": [{"Name": n} for n in policy_name or ()] + [{"ID": i} for i in policy_id or ()],
        "ServiceIdentities": [{"ServiceName": s} for s in service_identity or ()],
    }
    emit(client(http_addr, token).put("/v1/acl/token", json=body), format, TOKEN_COLUMNS)


@policy_app.command("create")
@one_line_errors
def policy_create(
    name: Annotated[str, typer.Option("--name")],
    rules: Annotated[str, typer.Option("--rules", help="Rules text, or @FILE to read them from a file.")] = "",
    description: Annotated[str, typer.Option("--description")] = "",
    http_addr: HttpAddr = None, token: Token = None, format: Format = "table",
) -> None:
    """Create a policy from Consul's rule language (HCL or JSON)."""
    text = read_file(rules[1:]) if rules.startswith("@") else rules
    policy = client(http_addr, token).put("/v1/acl/policy", json={"Name": name, "Rules": text, "Description": description})
    emit(policy, format, [("ID", "ID"), ("Name", "Name"), ("Description", "Description")])
