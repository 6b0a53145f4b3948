"""`terminus gateway`: the native data plane for a terminating gateway.

It opens the same database as the server and follows its change feed (the design that lets
several processes share one store), so intentions, certificates and links written through
the server's API reach the gateway within the poll interval, without a restart.

``--workers N`` runs N worker processes that listen on the same address with SO_REUSEPORT
(the kernel spreads connections across them), each following the change feed on its own.
The parent only supervises: SIGTERM or SIGINT stops every worker (SIGTERM by PID, SIGKILL
for any still running after the grace period); a worker that dies makes the parent stop the
others and exit with an error; workers get SIGTERM if the parent itself is killed
(PR_SET_PDEATHSIG). Worker ``i`` serves metrics on the ``--metrics-listen`` port plus ``i``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.client import CLIError
from gateway.cli.common import one_line_errors, split_addr

if TYPE_CHECKING:
    from gateway.agentconfig import AgentConfig

FOLLOW_INTERVAL = 0.25  # seconds between change-feed polls
STOP_GRACE = 10.0  # seconds the workers get to finish in-flight requests on SIGTERM
WORKER_ENV = "TERMINUS_GATEWAY_WORKER"  # set in workers: "<index>:<parent pid>"


def parse_workers(value: str) -> int:
    """``--workers``: a count >= 1, or 0 / ``auto`` for one per CPU core."""
    text = value.strip().lower()
    if text == "auto":
        return os.cpu_count() or 1
    try:
        n = int(text)
    except ValueError:
        raise CLIError(f"--workers must be a number or 'auto', not {value!r}") from None
    if n < 0:
        raise CLIError(f"--workers must be >= 0, not {n}")
    return n or (os.cpu_count() or 1)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@one_line_errors
def gateway(
    service: Annotated[str, typer.Option("--service", help="The terminating gateway's service name.")],
    listen: Annotated[str, typer.Option("--listen", help="mTLS HOST:PORT.")] = "127.0.0.1:8443",
    metrics_listen: Annotated[str, typer.Option("--metrics-listen", help="Prometheus /metrics HOST:PORT (worker i: PORT+i).")] = "127.0.0.1:9102",
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="The server's data directory (SQLite).")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="The server's database URL.")] = None,
    config_file: Annotated[str | None, typer.Option("--config-file", help="The server's agent config (HCL or JSON).")] = None,
    workers: Annotated[str, typer.Option("--workers", help="Worker processes sharing the port (SO_REUSEPORT); 0 or 'auto': one per CPU core.")] = "1",
    log_level: Annotated[str, typer.Option("--log-level", help="trace, debug, info, warn or error (stderr).")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="One line per request at info level.")] = True,
) -> None:
    """Serve the linked services of terminating gateway SERVICE: mTLS in, intentions enforced
    per request, Lambda invoked with SigV4 (or plain HTTP upstreams)."""
    from gateway.agentconfig import AgentConfig, load_agent_config

    from gateway.dataplane.logs import parse_level

    cfg = load_agent_config(config_file) if config_file else AgentConfig()
    if not (data_dir or cfg.data_dir) and not database_url:
        raise CLIError("Specify the server's --data-dir or --database-url")
    try:
        logs = (parse_level(log_level), access_log)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    worker = os.environ.get(WORKER_ENV)
    if worker is not None:
        _become_worker(worker)
        _serve(service, listen, metrics_listen, data_dir, database_url, cfg, reuse_port=True,
               label=f"worker {worker.split(':', 1)[0]}", logs=logs)
        return
    n = parse_workers(workers)
    split_addr(listen, "--listen", "127.0.0.1")
    split_addr(metrics_listen, "--metrics-listen", "127.0.0.1")
    if n == 1:
        print(f"==> terminus gateway for {service!r}: mTLS on {listen}, metrics on http://{metrics_listen}/metrics",
              flush=True)
        _serve(service, listen, metrics_listen, data_dir, database_url, cfg, reuse_port=False, label="", logs=logs)
        return
    extra = ["--log-level", log_level, "--access-log" if access_log else "--no-access-log"]
    _supervise(n, service, listen, metrics_listen, data_dir, database_url, config_file, extra)


def _serve(service: str, listen: str, metrics_listen: str, data_dir: str | None, database_url: str | None,
           cfg: AgentConfig, *, reuse_port: bool, label: str, logs: tuple[int, bool]) -> None:
    """One gateway process: the control plane (following the change feed) and the data plane."""
    from gateway.dataplane.logs import configure
    from gateway.cli.main import ca_secret
    from gateway.control import ControlPlane
    from gateway.dataplane.server import GatewayServer, run_gateway
    from gateway.store.database import sqlite_url

    data_dir = data_dir or cfg.data_dir
    url = database_url or sqlite_url(data_dir)  # type: ignore[arg-type]
    cp = ControlPlane(cfg, url, node_name=f"{socket.gethostname()}-gateway-{service}", ca_secret=ca_secret(data_dir))
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(FOLLOW_INTERVAL):
            try:
                cp.store.catch_up()
            except Exception:  # the database may be briefly busy; try again next tick
                pass

    def started(server: GatewayServer) -> None:
        import gc

        gc.freeze()  # the control plane's state is long-lived: keep it out of every collection
        if label:
            print(f"==> {label} (pid {os.getpid()}): mTLS on {_join(server.host, server.port)}, metrics on "
                  f"http://{_join(server.metrics_host, server.metrics_port or 0)}/metrics", flush=True)

    close_logs = configure(*logs)
    threading.Thread(target=follow, name="change-feed", daemon=True).start()
    try:
        run_gateway(cp, service, listen, metrics_listen=metrics_listen, reuse_port=reuse_port, started=started)
    finally:
        stop.set()
        cp.close()
        close_logs()


def _become_worker(spec: str) -> None:
    """Die with the parent: SIGTERM when it goes (Linux), and exit if it is already gone."""
    _, _, parent = spec.partition(":")
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent still stops workers by PID
        pass
    if parent.isdigit() and os.getppid() != int(parent):
        raise CLIError("the gateway's parent process is gone")


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) the address with SO_REUSEPORT: port 0 gets a real port, and the port
    stays ours while the workers bind it too. Only listening sockets receive connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except (OSError, AttributeError) as exc:
        sock.close()
        raise CLIError(f"cannot bind {_join(host, port)} with SO_REUSEPORT: {exc}") from None
    return sock


def _supervise(n: int, service: str, listen: str, metrics_listen: str, data_dir: str | None,
               database_url: str | None, config_file: str | None, extra: list[str]) -> None:
    host, port = split_addr(listen, "--listen", "127.0.0.1")
    mhost, mport = split_addr(metrics_listen, "--metrics-listen", "127.0.0.1")
    reserved = _reserve(host, port)
    port = reserved.getsockname()[1]
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen[bytes]] = []
    failed: subprocess.Popen[bytes] | None = None
    try:
        for i in range(n):
            args = [sys.executable, "-m", "gateway.cli.main", "gateway", "--service", service,
                    "--listen", _join(host, port), "--metrics-listen", _join(mhost, mport + i if mport else 0),
                    "--workers", "1", *extra]
            for flag, value in (("--data-dir", data_dir), ("--database-url", database_url),
                                ("--config-file", config_file)):
                if value:
                    args += [flag, value]
            env = {**os.environ, WORKER_ENV: f"{i}:{os.getpid()}"}
            children.append(subprocess.Popen(args, env=env))
            if stopping.is_set():
                break
        pids = ", ".join(str(c.pid) for c in children)
        print(f"==> terminus gateway for {service!r}: mTLS on {_join(host, port)}, {n} workers (pids {pids}), "
              f"metrics on http://{_join(mhost, mport)}/metrics and the next {n - 1} ports", flush=True)
        while not stopping.is_set():
            for child in children:
                if child.poll() is not None:
                    failed = child
                    break
            if failed is not None:
                break
            stopping.wait(0.2)
        if failed is not None and not stopping.is_set():
            print(f"Error: gateway worker {failed.pid} exited with code {failed.returncode}; stopping the others",
                  file=sys.stderr, flush=True)
    finally:
        _stop_children(children)
        reserved.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is not None and not received:
        raise SystemExit(1)


def _stop_children(children: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """SIGTERM each live worker by PID, wait up to ``grace``, SIGKILL what is left, reap all."""
    for child in children:
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        if child.poll() is None:
            try:
                child.kill()
            except ProcessLookupError:
                pass
            child.wait()
