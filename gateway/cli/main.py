"""The `terminus` command: the server, and Consul-style client commands."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from typing import Annotated

import typer

from gateway.cli import acl, config, connect, gateway_cmd, intention, lambda_cmd, services, tls
from gateway.cli.client import CLIError
from gateway.cli.common import one_line_errors, split_addr

app = typer.Typer(help="terminus: terminating-gateway control service with Consul-compatible intentions.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(intention.app, name="intention")
app.add_typer(config.app, name="config")
app.add_typer(services.app, name="services")
app.add_typer(acl.app, name="acl")
app.add_typer(connect.app, name="connect")
app.add_typer(tls.app, name="tls")
app.command("gateway")(gateway_cmd.gateway)
app.add_typer(lambda_cmd.app, name="lambda")


def ca_secret(data_dir: str | None) -> bytes:
    """The key that encrypts CA private keys: TERMINUS_CA_SECRET, else a random one kept in
    `<data-dir>/ca.secret` (mode 0600). Never stored in the database it protects."""
    import os
    from pathlib import Path

    env = os.environ.get("TERMINUS_CA_SECRET")
    if env:
        return env.encode()
    if not data_dir:
        raise CLIError("Set TERMINUS_CA_SECRET (it encrypts the CA keys) when there is no --data-dir")
    path = Path(data_dir) / "ca.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
    return path.read_text().strip().encode()


@app.command()
@one_line_errors
def server(
    dev: Annotated[bool, typer.Option("--dev", help="In-memory-style dev mode: SQLite in a temp dir, ACLs off, loopback.")] = False,
    http_addr: Annotated[str | None, typer.Option("--http-addr", help="HTTP API HOST:PORT (default 127.0.0.1:8500).")] = None,
    grpc_addr: Annotated[str | None, typer.Option("--grpc-addr", help="xDS gRPC HOST:PORT (default 127.0.0.1:8502).")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Directory for the embedded SQLite database.")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="e.g. postgresql+psycopg://user@host/db")] = None,
    datacenter: Annotated[str | None, typer.Option("--datacenter", help="Datacenter name (default dc1).")] = None,
    config_file: Annotated[str | None, typer.Option("--config-file", help="Consul agent config file (HCL or JSON).")] = None,
    node_name: Annotated[str | None, typer.Option("--node", help="This server's node name (default: hostname).")] = None,
    grpc_tls_cert: Annotated[str | None, typer.Option("--grpc-tls-cert", help="Serve xDS over TLS with this certificate (PEM).")] = None,
    grpc_tls_key: Annotated[str | None, typer.Option("--grpc-tls-key", help="The key for --grpc-tls-cert (PEM).")] = None,
) -> None:
    """Run the control service."""
    import uvicorn

    from gateway.agentconfig import AgentConfig, load_agent_config
    from gateway.api.app import create_app
    from gateway.control import ControlPlane
    from gateway.store.database import sqlite_url

    cfg = load_agent_config(config_file) if config_file else AgentConfig()
    if datacenter:
        cfg = dataclasses.replace(cfg, datacenter=datacenter)
    temp_dir = None
    if dev:
        temp_dir = tempfile.mkdtemp(prefix="terminus-dev-")
        cfg = dataclasses.replace(cfg, acl_enabled=False, bind_addr="127.0.0.1")
        data_dir = data_dir or temp_dir
    data_dir = data_dir or cfg.data_dir
    if not database_url and not data_dir:
        raise CLIError("Must specify --data-dir, --database-url or a config file with data_dir (or use --dev)")
    host, port = split_addr(http_addr or f"{cfg.bind_addr}:{cfg.http_port}", "--http-addr")
    ghost, gport = split_addr(grpc_addr or f"{cfg.bind_addr}:{cfg.grpc_port}", "--grpc-addr")
    url = database_url or sqlite_url(data_dir)  # type: ignore[arg-type]
    xds_tls = None
    if grpc_tls_cert or grpc_tls_key:
        import grpc
        from pathlib import Path

        if not (grpc_tls_cert and grpc_tls_key):
            raise CLIError("--grpc-tls-cert and --grpc-tls-key go together")
        xds_tls = grpc.ssl_server_credentials([(Path(grpc_tls_key).read_bytes(), Path(grpc_tls_cert).read_bytes())])
    cp = ControlPlane(cfg, url, node_name, ca_secret=ca_secret(data_dir))
    print(f"==> terminus server running (datacenter {cfg.datacenter}, storage {'PostgreSQL' if url.startswith('postgres') else 'SQLite in ' + str(data_dir)})")
    print(f"    HTTP API: http://{host}:{port}   OpenAPI docs: http://{host}:{port}/docs")
    print(f"    xDS (gRPC ADS for Envoy): {ghost}:{gport}{' (TLS)' if xds_tls else ''}")
    print(f"    ACLs: {'enabled, default policy ' + cfg.acl_default_policy if cfg.acl_enabled else 'disabled'}")
    print(f"    Try:  terminus intention create --deny --http-addr {host}:{port} web db && "
          f"terminus intention check --http-addr {host}:{port} web db", flush=True)
    def cleanup() -> None:
        cp.close()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)

    try:
        # access_log=False: at log level warning uvicorn prints no access lines anyway, but it
        # still formats each line's arguments unless the access log is off
        uvicorn.run(create_app(cp, xds_addr=f"{ghost}:{gport}", xds_tls=xds_tls, on_shutdown=cleanup),
                    host=host, port=port, log_level="warning", loop="auto", access_log=False)
    finally:
        cleanup()  # when uvicorn returns normally; idempotent


@app.command()
@one_line_errors
def demo(
    http_port: Annotated[int, typer.Option("--http-port")] = 8500,
    grpc_port: Annotated[int, typer.Option("--grpc-port")] = 8502,
    upstream_port: Annotated[int, typer.Option("--upstream-port", help="Where `api` reaches the function.")] = 2345,
    base_port: Annotated[int, typer.Option("--base-port", help="First of the other ports (sidecar, gateways, Lambda, admin).")] = 0,
    keep_logs: Annotated[bool, typer.Option("--keep-logs")] = False,
) -> None:
    """Run the whole local stack (what `make run` starts): server, local Lambda, Envoy and native
    terminating gateways, and an `api` sidecar whose upstream listens on localhost:2345."""
    from gateway.demo.stack import Ports, run

    ports = Ports(http=http_port, grpc=grpc_port, upstream=upstream_port)
    if base_port:
        ports.sidecar, ports.envoy_gateway, ports.native_gateway, ports.lambda_, ports.admin_sidecar, ports.admin_gateway, ports.metrics = range(base_port, base_port + 7)
    run(ports, keep=keep_logs)


if __name__ == "__main__":  # pragma: no cover
    app()
