"""The store on real SQLite and real PostgreSQL: schema by migrations only, durability, change feed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from gateway.agentconfig import AgentConfig
from gateway.control import ControlPlane
from gateway.intentions.engine import ServiceName
from gateway.store.database import make_engine, sqlite_url, upgrade
from gateway.store.models import Base
from gateway.store.store import Store
from tests.conftest import TEST_CA_SECRET


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "data")
    return request.getfixturevalue("fresh_postgres_db")


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models and migrations drifted: {diff}"
    assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    engine.dispose()


def test_restart_keeps_every_acknowledged_write(db_url: str) -> None:
    cfg = AgentConfig()
    cp = ControlPlane(cfg, db_url, node_name="n1", ca_secret=TEST_CA_SECRET)
    from gateway.acl.resolver import Caller
    from gateway.acl.authorizer import Authorizer

    root = Caller("root", Authorizer.management())
    for i in range(20):
        cp.intentions.upsert_exact(root, f"web{i}", "db", {"Action": "allow" if i % 2 else "deny"})
    cp.config_entries.apply(root, {"Kind": "service-defaults", "Name": "db", "Protocol": "http"})
    cp.catalog.register(root, {"Node": "ext", "Address": "10.1.1.1", "Service": {"Service": "billing", "Port": 443}})
    cp.intentions.delete_exact(root, "web3", "db")
    index, cluster = cp.state.index, cp.cluster_id
    tables = {t: dict(v) for t, v in cp.state.tables.items()}
    cp.close()

    again = ControlPlane(cfg, db_url, node_name="n1", ca_secret=TEST_CA_SECRET)
    try:
        assert again.state.index == index
        assert again.cluster_id == cluster
        assert {t: dict(v) for t, v in again.state.tables.items()} == tables
        assert len(again.engine) == 19
        assert again.engine.decide(ServiceName("web4"), ServiceName("db")).allowed is False
        assert again.engine.decide(ServiceName("web5"), ServiceName("db")).allowed is True
        assert again.engine.decide(ServiceName("web3"), ServiceName("db")).by_default
        assert again.state.index_of("config:service-intentions") == tables["config"][("service-intentions", "default", "default", "db")]["ModifyIndex"]
    finally:
        again.close()


def test_a_failed_write_changes_nothing(db_url: str) -> None:
    store = Store(db_url)
    store.write(lambda txn: txn.put("system", ("k",), {"Value": {"v": 1}}))
    before = store.state.index

    def boom(txn: Any) -> None:
        txn.put("system", ("k",), {"Value": {"v": 2}})
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        store.write(boom)
    assert store.state.system("k") == {"v": 1} and store.state.index == before
    store.close()
    reopened = Store(db_url)
    assert reopened.state.system("k") == {"v": 1}
    reopened.close()


def test_change_feed_lets_a_second_process_catch_up(db_url: str) -> None:
    """Two stores on one database (as two servers on one PostgreSQL): each sees the other's writes."""
    a, b = Store(db_url), Store(db_url)
    a.write(lambda txn: txn.put("nodes", ("n1",), {"Node": "n1", "Address": "1.1.1.1"}))
    b.catch_up()
    assert b.state.get("nodes", ("n1",))["Address"] == "1.1.1.1"
    # b writes next: it first catches up under the lock, so its index follows a's
    b.write(lambda txn: txn.delete("nodes", ("n1",)))
    a.catch_up()
    assert a.state.get("nodes", ("n1",)) is None
    assert a.state.index == b.state.index
    a.close()
    b.close()
