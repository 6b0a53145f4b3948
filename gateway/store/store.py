"""Durable, serialized writes and the change feed.

Every write runs `fn(txn)` inside a database transaction that first takes the index
counter's row lock (BEGIN IMMEDIATE on SQLite), so writers are serialized across threads
and across processes sharing one PostgreSQL. Only after COMMIT is the in-memory state
updated and waiters woken: an acknowledged write is on disk, and nobody reads a write
that could still roll back.

Group commit: writers that arrive while a commit is in progress queue up, and the next
committer runs all of them in one transaction - each in its own SAVEPOINT with its own
index, so one failing write never takes its neighbours with it - and pays for one fsync.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store import models
from gateway.store.database import make_engine, upgrade
from gateway.store.state import Key, State

log = logging.getLogger(__name__)
T = TypeVar("T")

# How many change-feed rows to keep. A follower further behind than this reloads in full.
CHANGE_RETENTION = 10_000


@dataclass(frozen=True)
class _TableSpec:
    model: type[models.Base]
    key_columns: tuple[str, ...]

    def values(self, key: Key, body: dict[str, Any], create_index: int, modify_index: int) -> dict[str, Any]:
        cols = dict(zip(self.key_columns, key))
        if self.model is models.SystemKV:
            return {**cols, "value": body["Value"], "modify_index": modify_index}
        extra = _EXTRA_COLUMNS.get(self.model.__tablename__, lambda b: {})(body)
        stored = {k: v for k, v in body.items() if k not in ("CreateIndex", "ModifyIndex", "_SecretHash")}
        return {**cols, **extra, "body": stored, "create_index": create_index, "modify_index": modify_index}

    def where(self, key: Key) -> list[Any]:
        table = self.model.__table__
        return [table.c[c] == v for c, v in zip(self.key_columns, key)]

    def record(self, row: Any) -> dict[str, Any]:
        if self.model is models.SystemKV:
            return {"Value": row.value, "ModifyIndex": row.modify_index}
        rec = dict(row.body)
        rec["CreateIndex"] = row.create_index
        rec["ModifyIndex"] = row.modify_index
        if self.model is models.ACLToken:
            rec["_SecretHash"] = row.secret_hash
        return rec


_EXTRA_COLUMNS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "services": lambda b: {"name": b["Service"], "kind": b.get("Kind", "")},
    "checks": lambda b: {"service_id": b.get("ServiceID", ""), "status": b["Status"]},
    "acl_policies": lambda b: {"name": b["Name"]},
    "acl_tokens": lambda b: {"secret_hash": b["_SecretHash"]},
}

TABLES: dict[str, _TableSpec] = {
    "nodes": _TableSpec(models.Node, ("name",)),
    "services": _TableSpec(models.Service, ("node", "service_id")),
    "checks": _TableSpec(models.Check, ("node", "check_id")),
    "config": _TableSpec(models.ConfigEntry, ("kind", "partition", "namespace", "name")),
    "acl_policies": _TableSpec(models.ACLPolicy, ("id",)),
    "acl_tokens": _TableSpec(models.ACLToken, ("accessor_id",)),
    "system": _TableSpec(models.SystemKV, ("key",)),
}


class _Prepared:
    """A statement compiled once per dialect and run as driver SQL.

    The write path runs three statements per write; building and cache-keying them through
    SQLAlchemy's expression layer cost more than SQLite's own work, so they are compiled
    once and executed with exec_driver_sql (JSON values serialized here, as the JSON type would).
    """

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = build
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, frozenset[str], dict[str, Any]]] = {}

    def _compile(self, conn: Connection) -> tuple[str, tuple[str, ...] | None, frozenset[str], dict[str, Any]]:
        found = self._compiled.get(conn.dialect.name)
        if found is None:
            compiled = self._build(conn.dialect.name).compile(dialect=conn.dialect)
            positional = tuple(compiled.positiontup) if compiled.positional else None
            json_params = frozenset(name for name, bp in compiled.binds.items() if isinstance(bp.type, JSON))
            literals = {k: v for k, v in compiled.params.items() if v is not None}  # e.g. "WHERE id = 1"
            found = self._compiled[conn.dialect.name] = (compiled.string, positional, json_params, literals)
        return found

    def _params(self, conn: Connection, values: dict[str, Any]) -> Any:
        _, positional, json_params, literals = self._compile(conn)
        values = {**literals, **{k: (json.dumps(v) if k in json_params else v) for k, v in values.items()}}
        return values if positional is None else tuple(values[name] for name in positional)

    def execute(self, conn: Connection, values: dict[str, Any]) -> Any:
        return conn.exec_driver_sql(self._compile(conn)[0], self._params(conn, values))

    def execute_many(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.exec_driver_sql(self._compile(conn)[0], [self._params(conn, r) for r in rows])


def _upsert_builder(spec: _TableSpec) -> Callable[[str], Any]:
    def build(dialect_name: str) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE: one statement, on both SQLite and PostgreSQL."""
        table = spec.model.__table__
        stmt = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
        updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in spec.key_columns}
        return stmt.on_conflict_do_update(index_elements=list(spec.key_columns), set_=updates)

    return build


_COUNTER = models.IndexCounter.__table__
_CHANGES = models.Change.__table__
_BUMP_INDEX = _Prepared(lambda _: update(_COUNTER).where(_COUNTER.c.id == 1)
                        .values(value=_COUNTER.c.value + bindparam("n")).returning(_COUNTER.c.value))
_INSERT_CHANGE = _Prepared(lambda _: insert(_CHANGES).values(
    index=bindparam("index"), table=bindparam("table"), key=bindparam("key", type_=JSON)))
_UPSERTS: dict[str, _Prepared] = {}


def _upsert(conn: Connection, spec: _TableSpec, values: dict[str, Any]) -> None:
    prepared = _UPSERTS.get(spec.model.__tablename__)
    if prepared is None:
        prepared = _UPSERTS[spec.model.__tablename__] = _Prepared(_upsert_builder(spec))
    prepared.execute(conn, values)


class Txn:
    """A write in progress. Reads see the committed state plus this write's own changes.

    `put` takes ownership of the body it is given (it is stored and kept in memory as is):
    callers pass freshly built dicts and must not mutate them afterwards.
    """

    def __init__(
        self, conn: Connection, state: State, index: int,
        earlier: dict[tuple[str, Key], dict[str, Any] | None] | None = None,
    ) -> None:
        self.conn = conn
        self.state = state
        self.index = index
        self.pending: dict[tuple[str, Key], dict[str, Any] | None] = {}
        self._earlier = earlier or {}  # writes of the same commit batch that ran before this one

    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        for layer in (self.pending, self._earlier):
            if (table, key) in layer:
                return layer[(table, key)]
        return self.state.get(table, key)

    def put(self, table: str, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace; keeps CreateIndex of an existing object. Returns the stored record."""
        spec = TABLES[table]
        old = self.get(table, key)
        create_index = old["CreateIndex"] if old and "CreateIndex" in old else self.index
        record = dict(body)
        _upsert(self.conn, spec, spec.values(key, record, create_index, self.index))
        if table != "system":
            record["CreateIndex"] = create_index
        record["ModifyIndex"] = self.index
        self.pending[(table, key)] = record
        return record

    def put_system(self, key: str, value: dict[str, Any]) -> None:
        self.put("system", (key,), {"Value": value})

    def delete(self, table: str, key: Key) -> bool:
        if self.get(table, key) is None:
            return False
        spec = TABLES[table]
        self.conn.execute(delete(spec.model.__table__).where(*spec.where(key)))
        self.pending[(table, key)] = None
        return True


class _Write:
    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[Txn], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.state = State()
        self._lock = threading.RLock()  # held by the one committer (and by catch-up/reload)
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._commit_hooks: list[Callable[[], None]] = []
        self._writes = 0
        self.stats = {"commits": 0, "writes": 0}  # writes/commits = the group-commit batching factor
        self._ensure_counter()
        self.reload()

    def close(self) -> None:
        self.engine.dispose()

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Called (from the writing thread) after each commit has been applied to the state."""
        self._commit_hooks.append(hook)

    def _ensure_counter(self) -> None:
        counter = models.IndexCounter.__table__
        with self.engine.begin() as conn:
            if conn.execute(select(counter.c.value).where(counter.c.id == 1)).first() is None:
                conn.execute(insert(counter).values(id=1, value=1))

    # -- loading and following ------------------------------------------------------------

    def reload(self) -> None:
        """Load every table: at start-up, or when the change feed no longer reaches back far enough."""
        with self._lock, self.engine.connect() as s:
            counter = models.IndexCounter.__table__
            counter_value = s.execute(select(counter.c.value).where(counter.c.id == 1)).scalar()
            fresh = State(listeners=self.state.listeners)
            for table, spec in TABLES.items():
                for row in s.execute(select(spec.model.__table__)):
                    key = tuple(getattr(row, c) for c in spec.key_columns)
                    rec = spec.record(row)
                    fresh.tables[table][key] = rec
                    fresh._reindex(table, key, None, rec)
                    idx = rec["ModifyIndex"]
                    fresh.table_index[table] = max(fresh.table_index[table], idx)
                    if table == "config":
                        fresh.table_index[f"config:{key[0]}"] = max(fresh.table_index[f"config:{key[0]}"], idx)
            # Deletions leave no row behind; the feed still knows when each table last changed.
            for idx, table, key in s.execute(select(models.Change.index, models.Change.table, models.Change.key)):
                fresh.table_index[table] = max(fresh.table_index[table], idx)
                if table == "config":
                    fresh.table_index[f"config:{key[0]}"] = max(fresh.table_index[f"config:{key[0]}"], idx)
            fresh.index = counter_value or 1
            self.state.__dict__.update(fresh.__dict__)
            for listener in self.state.listeners:
                listener("*", (), None, None)

    def catch_up(self, conn: Connection | None = None) -> None:
        """Apply changes other processes committed since our last index."""
        with self._lock:
            own = conn is None
            s = conn or self.engine.connect()
            try:
                rows = s.execute(
                    select(models.Change.index, models.Change.table, models.Change.key)
                    .where(models.Change.index > self.state.index)
                    .order_by(models.Change.index, models.Change.id)
                ).all()
                if not rows:
                    return
                oldest = s.scalar(select(models.Change.index).order_by(models.Change.index).limit(1))
                if oldest is not None and oldest > self.state.index + 1 and self.state.index > 0:
                    self.reload()
                    return
                for idx, table, key in rows:
                    spec = TABLES[table]
                    row = s.execute(select(spec.model.__table__).where(*spec.where(tuple(key)))).first()
                    self.state.apply(idx, table, tuple(key), None if row is None else spec.record(row))
            finally:
                if own:
                    s.close()
        self._fire_hooks()

    # -- writing ---------------------------------------------------------------------------

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run fn in a serialized transaction and return once it is durable.

        Raise inside fn to abort: nothing it wrote is kept, and the exception reaches the
        caller. fn may run on another writer's thread (group commit), so it must not rely
        on thread-local state.
        """
        job = _Write(fn)
        with self._queue_lock:
            self._queue.append(job)
        with self._lock:
            if not job.done:  # nobody committed us while we waited: commit everything queued
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        self._fire_hooks()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Write]) -> None:
        changes = _CHANGES
        applied: list[tuple[int, dict[tuple[str, Key], dict[str, Any] | None]]] = []
        try:
            with self.engine.connect() as conn:
                conn.begin()
                try:
                    last = _BUMP_INDEX.execute(conn, {"n": len(batch)}).scalar_one()
                    first = last - len(batch) + 1
                    if first - 1 > self.state.index:
                        self.catch_up(conn)
                    earlier: dict[tuple[str, Key], dict[str, Any] | None] = {}
                    for offset, job in enumerate(batch):
                        txn = Txn(conn, self.state, first + offset, earlier)
                        savepoint = conn.begin_nested() if len(batch) > 1 else None
                        try:
                            job.result = job.fn(txn)
                        except BaseException as exc:  # this write only: roll back to its savepoint
                            if savepoint is None:
                                raise
                            savepoint.rollback()
                            job.error = exc
                            continue
                        if savepoint is not None:
                            savepoint.commit()
                        if txn.pending:
                            _INSERT_CHANGE.execute_many(
                                conn, [{"index": txn.index, "table": t, "key": list(k)} for t, k in txn.pending])
                            earlier.update(txn.pending)
                            applied.append((txn.index, txn.pending))
                    self._writes += len(applied)
                    if applied and self._writes % 1000 < len(applied):
                        conn.execute(delete(changes).where(changes.c.index < last - CHANGE_RETENTION))
                    if applied:
                        conn.commit()
                        self.stats["commits"] += 1
                        self.stats["writes"] += len(applied)
                    else:
                        conn.rollback()
                except BaseException:
                    conn.rollback()
                    raise
        except BaseException as exc:  # the transaction itself failed: no write of the batch happened
            for job in batch:
                if job.error is None:
                    job.error = exc
                job.done = True
            return
        # committed: now, and only now, the writes become visible, in index order
        for index, pending in applied:
            for (table, key), record in pending.items():
                self.state.apply(index, table, key, record)
        if applied:
            self.state.index = max(self.state.index, last)
        for job in batch:
            job.done = True

    def _fire_hooks(self) -> None:
        for hook in self._commit_hooks:
            try:
                hook()
            except Exception:  # a waker must never fail a write that already committed
                log.exception("commit hook failed")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
