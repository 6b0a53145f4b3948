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


def test_a_write_catches_up_inside_its_own_commit(db_url: str) -> None:
    """b writes right after a, without having followed a's feed: b's commit reads a's write
    while b holds the write lock (a reader on SQLite must not ask for that lock itself), and a
    follower polling the feed does not block writers."""
    a, b = Store(db_url), Store(db_url)
    a.write(lambda txn: txn.put("nodes", ("n1",), {"Node": "n1", "Address": "1.1.1.1"}))
    b.write(lambda txn: txn.put("nodes", ("n2",), {"Node": "n2", "Address": "2.2.2.2"}))
    assert b.state.get("nodes", ("n1",))["Address"] == "1.1.1.1"
    done: list[Any] = []
    b.submit(lambda txn: txn.put("nodes", ("n3",), {"Node": "n3", "Address": "3.3.3.3"}), done.append)
    a.write(lambda txn: txn.put("nodes", ("n4",), {"Node": "n4", "Address": "4.4.4.4"}))
    _wait_for(lambda: bool(done))
    assert done[0].error is None
    a.catch_up()
    assert {k[0] for k in a.state.tables["nodes"]} == {"n1", "n2", "n3", "n4"}
    a.close()
    b.close()


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_submitted_writes_commit_together_are_applied_before_reported_and_fail_alone(db_url: str) -> None:
    """Store.submit (what the HTTP API's writes use): one commit takes everything queued, a
    failing write (here: SQL refuses it) rolls back alone, and each is reported only once it is
    durable and visible in the state."""
    import threading

    store = Store(db_url)
    store.write(lambda txn: txn.put("acl_policies", ("p0",), {"ID": "p0", "Name": "taken"}))
    commits_before = store.stats["commits"]
    reports: list[tuple[str, Any, BaseException | None, bool]] = []

    def report(name: str) -> Any:
        def on_done(job: Any) -> None:
            visible = store.state.get("acl_policies", (name,)) is not None
            reports.append((name, job.result, job.error, visible))
        return on_done

    def put(name: str, policy_name: str) -> Any:
        def fn(txn: Any) -> str:
            txn.put("acl_policies", (name,), {"ID": name, "Name": policy_name})
            return name.upper()
        return fn

    with store._lock:  # the committer waits: all four queue up for one commit
        store.submit(put("p1", "one"), report("p1"))
        store.submit(put("p2", "taken"), report("p2"))  # unique name: the database refuses it
        store.submit(put("p3", "three"), report("p3"))
        sync_result: list[str] = []
        writer = threading.Thread(target=lambda: sync_result.append(store.write(put("p4", "four"))))
        writer.start()
        _wait_for(lambda: len(store._queue) == 4)
    writer.join(10)
    _wait_for(lambda: len(reports) == 3)
    assert sync_result == ["P4"]
    by_name = {name: (result, error, visible) for name, result, error, visible in reports}
    assert by_name["p1"] == ("P1", None, True) and by_name["p3"] == ("P3", None, True)
    assert by_name["p2"][1] is not None and by_name["p2"][2] is False
    assert store.stats["commits"] == commits_before + 1
    assert store.state.get("acl_policies", ("p2",)) is None
    store.write(put("p5", "five"))  # the write connection is fine after the refused statement
    store.close()
    reopened = Store(db_url)
    assert {k[0] for k in reopened.state.tables["acl_policies"]} == {"p0", "p1", "p3", "p4", "p5"}
    reopened.close()


def test_close_finishes_submitted_writes(db_url: str) -> None:
    store = Store(db_url)
    reported: list[Any] = []
    for i in range(20):
        store.submit(lambda txn, i=i: txn.put_system(f"k{i}", {"v": i}), reported.append)
    store.close()
    assert len(reported) == 20 and all(job.error is None for job in reported)
    with pytest.raises(RuntimeError, match="closed"):
        store.submit(lambda txn: None, reported.append)
    reopened = Store(db_url)
    assert [reopened.state.system(f"k{i}") for i in range(20)] == [{"v": i} for i in range(20)]
    reopened.close()


def test_large_entries_are_stored_as_json_dumps_writes_them(db_url: str) -> None:
    """Config bodies are encoded reusing the JSON of list elements written before (_BodyJSON):
    what reaches the database is still exactly json.dumps of the body."""
    import json

    from sqlalchemy import text as sql

    store = Store(db_url)
    key = ("service-intentions", "default", "default", "db")
    sources = [{"Name": f"s{i}", "Action": "allow", "Description": "é\"\\\u2028", "Precedence": 9} for i in range(40)]

    def put(body: dict[str, Any]) -> None:
        store.write(lambda txn: txn.put("config", key, body))

    put({"Kind": "service-intentions", "Name": "db", "Sources": sources, "Meta": {"a": 1.5}})
    sources = sources[:10] + [{"Name": "new", "Action": "deny"}] + sources[11:]  # one replaced, the rest shared
    put({"Kind": "service-intentions", "Name": "db", "Sources": sources, "Meta": {"a": 1.5}})
    sources = sources + [{"Name": "last", "Action": "deny", "Permissions": [{"HTTP": {"PathPrefix": "/"}}]}]
    put({"Kind": "service-intentions", "Name": "db", "Sources": sources})
    expected = {"Kind": "service-intentions", "Name": "db", "Sources": sources}
    with store.engine.connect() as conn:
        raw = conn.execute(sql("SELECT body FROM config_entries WHERE name = 'db'")).scalar_one()
    if isinstance(raw, str):  # SQLite keeps the text itself
        assert raw == json.dumps(expected)
    else:
        assert raw == expected
    store.close()
    reopened = Store(db_url)
    body = dict(reopened.state.get("config", key) or {})
    body.pop("CreateIndex"), body.pop("ModifyIndex")
    assert body == expected
    reopened.close()


def test_body_json_is_byte_for_byte_json_dumps() -> None:
    """Random edits of a long list (replace, insert, delete, shuffle, repeats, appends) keep
    the reused-text encoding equal to json.dumps."""
    import json
    import random

    from gateway.store.store import _BodyJSON

    rng = random.Random(5)
    encoder = _BodyJSON()
    pool = [{"Name": f"s{i}", "F": rng.random(), "U": "é\u2028\"x"} for i in range(60)]
    items: list[Any] = pool[:30]
    for step in range(2000):
        items = list(items)
        roll = rng.random()
        if roll < 0.3 and items:
            items[rng.randrange(len(items))] = {"Name": "changed", "Step": step}
        elif roll < 0.5:
            items.insert(rng.randrange(len(items) + 1), rng.choice(pool))
        elif roll < 0.7 and items:
            del items[rng.randrange(len(items))]
        elif roll < 0.8:
            rng.shuffle(items)
        else:
            items.append(rng.choice(items) if items else pool[0])
        body = {"Kind": "service-intentions", "Sources": items, "Also": list(reversed(items)), "N": step}
        assert encoder.encode("config", ("k",), body).text == json.dumps(body), step
    assert encoder.encode("config", ("k",), {1: "non-str key"}).text == json.dumps({1: "non-str key"})


def test_a_failing_state_listener_fails_the_submitted_write_but_not_the_committer(db_url: str) -> None:
    store = Store(db_url)
    broken = [True]

    def listener(table: str, key: Any, old: Any, new: Any) -> None:
        if broken[0] and table == "system":
            raise RuntimeError("listener broke")

    store.state.listeners.append(listener)
    reports: list[Any] = []
    store.submit(lambda txn: txn.put_system("a", {"v": 1}), reports.append)
    _wait_for(lambda: len(reports) == 1)
    assert isinstance(reports[0].error, RuntimeError)
    broken[0] = False
    store.submit(lambda txn: txn.put_system("b", {"v": 2}), reports.append)  # the committer still runs
    _wait_for(lambda: len(reports) == 2)
    assert reports[1].error is None and store.state.system("b") == {"v": 2}
    store.close()
