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


def test_sqlite_server_killed_during_concurrent_writes_keeps_every_acknowledged_one(start_server: Any, tmp_path: Path) -> None:
    """Eight clients write at once (group commits through the store's committer thread); the
    server is killed mid-burst. Every write that was answered 200 is there after the restart."""
    import threading

    data = str(tmp_path / "data")
    server = start_server("--data-dir", data)
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(t: int) -> None:
        with httpx.Client(base_url=server.url) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                source, action = f"w{t}-{i}", "allow" if (t + i) % 2 else "deny"
                try:
                    r = c.put("/v1/connect/intentions/exact", params={"source": source, "destination": f"db{i % 5}"},
                              json={"Action": action})
                except httpx.HTTPError:
                    return  # the server is gone: this write was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acknowledged[f"{source}>db{i % 5}"] = action

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    while True:
        with lock:
            if len(acknowledged) >= 300:
                break
        threading.Event().wait(0.01)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    with httpx.Client(base_url=start_server("--data-dir", data).url) as c:
        stored = {f"{i['SourceName']}>{i['DestinationName']}": i["Action"] for i in c.get("/v1/connect/intentions").json()}
    missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {list(missing.items())[:3]}"
