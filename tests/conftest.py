"""Shared fixtures: a control plane on real SQLite, the API in-process, and real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.agentconfig import AgentConfig
from gateway.api.app import create_app
from gateway.control import ControlPlane
from gateway.store.database import sqlite_url
from gateway.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_CA_SECRET = b"terminus-test-ca-secret-0123456789abcdef"


@pytest.fixture
def make_cp(tmp_path: Path) -> Iterator[Callable[..., ControlPlane]]:
    made: list[ControlPlane] = []

    def factory(url: str | None = None, **config: object) -> ControlPlane:
        cfg = replace(AgentConfig(), **config)  # type: ignore[arg-type]
        cp = ControlPlane(cfg, url or sqlite_url(tmp_path / "data"), node_name="test-node", ca_secret=TEST_CA_SECRET)
        made.append(cp)
        return cp

    yield factory
    for cp in made:
        cp.close()


@pytest.fixture
def cp(make_cp: Callable[..., ControlPlane]) -> ControlPlane:
    return make_cp()


@pytest.fixture
def api(cp: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(cp)) as client:
        yield client


@pytest.fixture
def make_api(make_cp: Callable[..., ControlPlane]) -> Iterator[Callable[..., tuple[ControlPlane, TestClient]]]:
    clients: list[TestClient] = []

    def factory(**config: object) -> tuple[ControlPlane, TestClient]:
        cp = make_cp(**config)
        client = TestClient(create_app(cp))
        client.__enter__()
        clients.append(client)
        return cp, client

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster: a missing server is a failure, never a skip."""
    from tests.support.postgres import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def fresh_postgres_db(postgres_url: str) -> str:
    """A new empty database in the session's cluster, so tests do not see each other's rows."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


class ServerProcess:
    def __init__(self, args: list[str], http_port: int, env: dict[str, str] | None = None) -> None:
        self.addr = f"127.0.0.1:{http_port}"
        self.url = f"http://{self.addr}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "server", "--http-addr", self.addr, *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                if httpx.get(f"{self.url}/v1/status/leader", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start within 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(list(args), free_port(), env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
