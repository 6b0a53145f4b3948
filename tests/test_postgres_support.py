"""The throwaway PostgreSQL helper: data survives a restart, close() leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.postgres import PostgresCluster, _pid_alive, find_pg_bin, throwaway_postgres

pytestmark = pytest.mark.postgres


def test_find_pg_bin_has_server_binaries() -> None:
    """The binaries this suite relies on are present (fail, never skip, when they are not)."""
    bin_dir = find_pg_bin()
    assert bin_dir is not None, "no PostgreSQL server binaries found; set TERMINUS_PG_BIN"
    assert (Path(bin_dir) / "initdb").is_file()
    assert (Path(bin_dir) / "pg_ctl").is_file()


def test_missing_binaries_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bin dir without initdb is a hard error, not a skip."""
    monkeypatch.setenv("TERMINUS_PG_BIN", str(tmp_path))
    with pytest.raises(RuntimeError, match="initdb"):
        PostgresCluster()


def test_restart_keeps_data_and_close_cleans_up() -> None:
    """Rows survive stop()/start() on the same port; close() kills the postmaster and the dir."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        url, port = cluster.url, cluster.port
        engine = sa.create_engine(url)
        meta = sa.MetaData()
        items = sa.Table(
            "items", meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(items.insert().values(id=1, name="kept"))
        engine.dispose()

        first_pid = cluster.pid
        assert first_pid is not None and _pid_alive(first_pid)
        cluster.stop()
        assert not _pid_alive(first_pid)
        cluster.start()
        assert cluster.port == port and cluster.url == url

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.select(items.c.name)).scalars().all() == ["kept"]
        engine.dispose()

        pid, root = cluster.pid, cluster.root
        assert pid is not None and _pid_alive(pid)
    finally:
        cluster.close()
    assert not _pid_alive(pid)
    assert not root.exists()


def test_throwaway_postgres_context() -> None:
    """The context manager yields a working URL and tears the cluster down on exit."""
    with throwaway_postgres() as url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar() == "terminus"
            pid = conn.execute(sa.text("select pg_backend_pid()")).scalar()
        engine.dispose()
    assert isinstance(pid, int)
    assert not any(
        p.name.isdigit() and _pid_alive(int(p.name)) and "postgres" in _cmdline(p)
        and url.rsplit(":", 1)[1].split("/")[0] in _cmdline(p)
        for p in Path("/proc").iterdir()
    )


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
