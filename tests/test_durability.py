"""No acknowledged write is lost: a server killed with SIGKILL restarts with all of them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


def write_and_kill(server: Any, count: int) -> list[dict]:
    acknowledged = []
    with httpx.Client(base_url=server.url) as c:
        for i in range(count):
            r = c.put("/v1/connect/intentions/exact", params={"source": f"web{i}", "destination": f"db{i % 3}"},
                      json={"Action": "allow" if i % 2 else "deny"})
            assert r.status_code == 200
        assert c.put("/v1/config", json={"Kind": "service-defaults", "Name": "db0", "Protocol": "http"}).json() is True
        acknowledged = c.get("/v1/connect/intentions").json()
    server.proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
    server.proc.wait()
    return acknowledged


def compare(server: Any, acknowledged: list[dict]) -> None:
    with httpx.Client(base_url=server.url) as c:
        after = c.get("/v1/connect/intentions").json()
        assert after == acknowledged
        assert c.get("/v1/config/service-defaults/db0").json()["Protocol"] == "http"
        assert c.get("/v1/connect/intentions/check", params={"source": "web4", "destination": "db1"}).json()["Allowed"] is False


def test_sqlite_server_killed_keeps_acknowledged_writes(start_server: Any, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    acknowledged = write_and_kill(start_server("--data-dir", data), 60)
    compare(start_server("--data-dir", data), acknowledged)


@pytest.mark.postgres
def test_postgres_server_killed_keeps_acknowledged_writes(start_server: Any, fresh_postgres_db: str) -> None:
    env = {"TERMINUS_CA_SECRET": "durability-test-secret"}  # no data dir: the CA secret comes from the environment
    acknowledged = write_and_kill(start_server("--database-url", fresh_postgres_db, env=env), 60)
    compare(start_server("--database-url", fresh_postgres_db, env=env), acknowledged)
