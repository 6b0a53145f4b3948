"""Durable, serialized writes and the change feed.

Every write runs `fn(txn)` inside one database transaction that first takes the index
counter's row lock (BEGIN IMMEDIATE on SQLite), so writers are serialized across threads
and across processes sharing one PostgreSQL. Only after COMMIT is the in-memory state
updated and waiters woken: an acknowledged write is on disk, and nobody reads a write
that could still roll back.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

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

    def row(self, key: Key, body: dict[str, Any], create_index: int, modify_index: int) -> models.Base:
        cols = dict(zip(self.key_columns, key))
        extra = _EXTRA_COLUMNS.get(self.model.__tablename__, lambda b: {})(body)
        if self.model is models.SystemKV:
            return models.SystemKV(**cols, value=body["Value"], modify_index=modify_index)
        stored = {k: v for k, v in body.items() if k not in ("CreateIndex", "ModifyIndex", "_SecretHash")}
        return self.model(**cols, **extra, body=stored, create_index=create_index, modify_index=modify_index)

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


class Txn:
    """A write in progress. Reads see the committed state plus this write's own changes."""

    def __init__(self, session: Session, state: State, index: int) -> None:
        self.session = session
        self.state = state
        self.index = index
        self.pending: dict[tuple[str, Key], dict[str, Any] | None] = {}

    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        if (table, key) in self.pending:
            return self.pending[(table, key)]
        return self.state.get(table, key)

    def put(self, table: str, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace; keeps CreateIndex of an existing object. Returns the stored record."""
        spec = TABLES[table]
        old = self.get(table, key)
        create_index = old["CreateIndex"] if old and "CreateIndex" in old else self.index
        record = copy.deepcopy(body)
        self.session.merge(spec.row(key, record, create_index, self.index))
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
        cond = [getattr(spec.model, c) == v for c, v in zip(spec.key_columns, key)]
        self.session.execute(delete(spec.model).where(*cond))
        self.pending[(table, key)] = None
        return True


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.state = State()
        self._lock = threading.RLock()
        self._commit_hooks: list[Callable[[], None]] = []
        self._writes = 0
        self._ensure_counter()
        self.reload()

    def close(self) -> None:
        self.engine.dispose()

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Called (from the writing thread) after each commit has been applied to the state."""
        self._commit_hooks.append(hook)

    def _ensure_counter(self) -> None:
        with Session(self.engine) as s, s.begin():
            if s.get(models.IndexCounter, 1) is None:
                s.add(models.IndexCounter(id=1, value=1))

    # -- loading and following ------------------------------------------------------------

    def reload(self) -> None:
        """Load every table: at start-up, or when the change feed no longer reaches back far enough."""
        with self._lock, Session(self.engine) as s:
            counter = s.get(models.IndexCounter, 1)
            fresh = State(listeners=self.state.listeners)
            for table, spec in TABLES.items():
                for row in s.scalars(select(spec.model)):
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
            fresh.index = counter.value if counter else 1
            self.state.__dict__.update(fresh.__dict__)
            for listener in self.state.listeners:
                listener("*", (), None, None)

    def catch_up(self, session: Session | None = None) -> None:
        """Apply changes other processes committed since our last index."""
        with self._lock:
            own = session is None
            s = session or Session(self.engine)
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
                    cond = [getattr(spec.model, c) == v for c, v in zip(spec.key_columns, key)]
                    row = s.scalars(select(spec.model).where(*cond)).first()
                    self.state.apply(idx, table, tuple(key), None if row is None else spec.record(row))
            finally:
                if own:
                    s.close()
        self._fire_hooks()

    # -- writing ---------------------------------------------------------------------------

    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run fn in one serialized transaction; raise to abort (nothing is written)."""
        with self._lock, Session(self.engine) as s:
            s.begin()
            try:
                index = s.execute(
                    update(models.IndexCounter).where(models.IndexCounter.id == 1)
                    .values(value=models.IndexCounter.value + 1).returning(models.IndexCounter.value)
                ).scalar_one()
                if index - 1 > self.state.index:
                    self.catch_up(s)
                txn = Txn(s, self.state, index)
                result = fn(txn)
                if not txn.pending:
                    s.rollback()
                    return result
                for table, key in txn.pending:
                    s.add(models.Change(index=index, table=table, key=list(key)))
                self._writes += 1
                if self._writes % 1000 == 0:
                    s.execute(delete(models.Change).where(models.Change.index < index - CHANGE_RETENTION))
                s.commit()
            except BaseException:
                s.rollback()
                raise
            # committed: now, and only now, the write becomes visible
            for (table, key), record in txn.pending.items():
                self.state.apply(index, table, key, record)
        self._fire_hooks()
        return result

    def _fire_hooks(self) -> None:
        for hook in self._commit_hooks:
            try:
                hook()
            except Exception:  # a waker must never fail a write that already committed
                log.exception("commit hook failed")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
