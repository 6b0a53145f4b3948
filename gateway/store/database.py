"""Opening the database: SQLite (embedded default) or PostgreSQL, schema by Alembic only."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def sqlite_url(data_dir: str | os.PathLike[str]) -> str:
    path = Path(data_dir) / "terminus.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


READ_ONLY = "terminus_read_only"  # execution option: this connection only reads (see _sqlite_engine)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_engine(url: str) -> Engine:
    # isolation_level=None hands transaction control to us, so that every write
    # transaction can start with BEGIN IMMEDIATE (take the write lock up front, no
    # deadlock-prone lock upgrade) - the recipe from SQLAlchemy's pysqlite docs.
    engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
        # and an acknowledged write must survive.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        # Readers (catch-up, reload, ping) must not take the write lock: a follower polling the
        # change feed would stall the server's writes, and the server's own catch-up runs while
        # its committer already holds the lock on another connection.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration; the only way tables are ever created."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
