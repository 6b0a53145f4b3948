"""`terminus gateway`: the native data plane for a terminating gateway.

It opens the same database as the server and follows its change feed (the design that lets
several processes share one store), so intentions, certificates and links written through
the server's API reach the gateway within the poll interval, without a restart.
"""

from __future__ import annotations

import socket
import threading
from typing import Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import one_line_errors

FOLLOW_INTERVAL = 0.25  # seconds between change-feed polls


@one_line_errors
def gateway(
    service: Annotated[str, typer.Option("--service", help="The terminating gateway's service name.")],
    listen: Annotated[str, typer.Option("--listen", help="mTLS HOST:PORT.")] = "127.0.0.1:8443",
    metrics_listen: Annotated[str, typer.Option("--metrics-listen", help="Prometheus /metrics HOST:PORT.")] = "127.0.0.1:9102",
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="The server's data directory (SQLite).")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="The server's database URL.")] = None,
    config_file: Annotated[str | None, typer.Option("--config-file", help="The server's agent config (HCL or JSON).")] = None,
) -> None:
    """Serve the linked services of terminating gateway SERVICE: mTLS in, intentions enforced
    per request, Lambda invoked with SigV4 (or plain HTTP upstreams)."""
    from gateway.agentconfig import AgentConfig, load_agent_config
    from gateway.cli.main import ca_secret
    from gateway.control import ControlPlane
    from gateway.dataplane.server import run_gateway
    from gateway.store.database import sqlite_url

    cfg = load_agent_config(config_file) if config_file else AgentConfig()
    data_dir = data_dir or cfg.data_dir
    if not data_dir and not database_url:
        raise CLIError("Specify the server's --data-dir or --database-url")
    url = database_url or sqlite_url(data_dir)  # type: ignore[arg-type]
    cp = ControlPlane(cfg, url, node_name=f"{socket.gethostname()}-gateway-{service}", ca_secret=ca_secret(data_dir))
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(FOLLOW_INTERVAL):
            try:
                cp.store.catch_up()
            except Exception:  # the database may be briefly busy; try again next tick
                pass

    threading.Thread(target=follow, name="change-feed", daemon=True).start()
    print(f"==> terminus gateway for {service!r}: mTLS on {listen}, metrics on http://{metrics_listen}/metrics", flush=True)
    try:
        run_gateway(cp, service, listen, metrics_listen=metrics_listen)
    finally:
        stop.set()
        cp.close()
