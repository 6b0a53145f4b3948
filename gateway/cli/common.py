"""Options every client command takes, and the error wrapper that turns failures into one line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gateway.cli.client import CLIError, Client
from gateway.errors import TerminusError

F = TypeVar("F", bound=Callable[..., Any])

HttpAddr = Annotated[str | None, typer.Option("--http-addr", help="API address (env TERMINUS_HTTP_ADDR or CONSUL_HTTP_ADDR).")]
Token = Annotated[str | None, typer.Option("--token", help="ACL token (env TERMINUS_HTTP_TOKEN or CONSUL_HTTP_TOKEN).")]
Format = Annotated[str, typer.Option("--format", help="Output format: table or json.")]


def split_addr(addr: str, flag: str, default_host: str | None = None) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) of a listen flag; an empty HOST is ``default_host`` if given."""
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]") or (default_host or "")
    if not sep or not port.isdigit() or not host:
        raise CLIError(f"{flag} must be HOST:PORT, got {addr!r}")
    return host, int(port)


def client(http_addr: str | None, token: str | None) -> Client:
    return Client(http_addr, token)


def read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"Failed to read file {path!r}: no such file")
    return p.read_text()


def one_line_errors(fn: F) -> F:
    """Any failure: `Error: <why>` on stderr and exit code 1; nothing else is printed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CLIError, TerminusError) as exc:
            # one line, whatever the message (Consul's multi-error texts span several)
            print("Error: " + " ".join(str(exc).split()), file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
