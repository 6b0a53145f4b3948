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
import operator
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import takewhile
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, Dialect, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store import models
from gateway.store.database import READ_ONLY, make_engine, upgrade
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
    """A statement compiled once per dialect and run as driver SQL on the DBAPI cursor.

    The write path runs a few statements per write; building and cache-keying them through
    SQLAlchemy's expression layer cost more than SQLite's own work, so they are compiled once
    and executed by the driver (JSON values serialized here, as the JSON type would).
    """

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = build
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, frozenset[str], dict[str, Any]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, frozenset[str], dict[str, Any]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._build(dialect.name).compile(dialect=dialect)
            positional = tuple(compiled.positiontup) if compiled.positional else None
            json_params = frozenset(name for name, bp in compiled.binds.items() if isinstance(bp.type, JSON))
            literals = {k: v for k, v in compiled.params.items() if v is not None}  # e.g. "WHERE id = 1"
            found = self._compiled[dialect.name] = (compiled.string, positional, json_params, literals)
        return found

    def params(self, dialect: Dialect, values: dict[str, Any]) -> Any:
        _, positional, json_params, literals = self.compiled(dialect)
        values = {**literals, **{k: (_to_json(v) if k in json_params else v) for k, v in values.items()}}
        return values if positional is None else tuple(values[name] for name in positional)


class _Encoded:
    """A JSON parameter already serialized (by `_BodyJSON`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _to_json(value: Any) -> str:
    return value.text if type(value) is _Encoded else json.dumps(value)


_json_str = json.encoder.encode_basestring_ascii  # what json.dumps does for a str, minus the call overhead


def _key_json(key: Key) -> _Encoded | list[Any]:
    """A change-feed key as json.dumps(list(key)) writes it, for the usual all-strings key."""
    if all(type(part) is str for part in key):
        return _Encoded(f"[{', '.join(map(_json_str, key))}]")
    return list(key)


class _BodyJSON:
    """`json.dumps(body)` of stored bodies, byte for byte, reusing the text of list elements.

    An intention upsert rewrites its destination's whole entry, and every source in it but the
    one written is the very object the stored entry already holds (stored objects are shared,
    never mutated). So for each stored object this keeps its long lists as last written, with
    the JSON text of each element; the next body's list is matched against it by identity from
    both ends (a replaced, inserted or removed element leaves the rest aligned), and only what
    does not match is encoded. A write then costs the JSON of what changed, not of the entry.
    Pure serialization: a rolled-back write leaves only texts that are still right.
    """

    MIN_LIST = 16  # shorter lists: one json.dumps of the body is cheaper than the bookkeeping

    def __init__(self) -> None:
        self._lists: dict[tuple[str, Key], dict[str, tuple[tuple[Any, ...], list[str]]]] = {}

    def encode(self, table: str, key: Key, body: dict[str, Any]) -> _Encoded:
        seen = self._lists.get((table, key)) or {}
        lists: dict[str, tuple[tuple[Any, ...], list[str]]] = {}
        pieces = []
        for name, value in body.items():
            if type(name) is not str:  # json.dumps would convert the key: let it
                self._lists.pop((table, key), None)
                return _Encoded(json.dumps(body))
            if type(value) is list and len(value) >= self.MIN_LIST:
                texts = _list_texts(value, *seen.get(name, ((), ())))
                lists[name] = (tuple(value), texts)  # a copy: the elements held are those encoded
                pieces.append(f"{_json_str(name)}: [{', '.join(texts)}]")
            else:
                pieces.append(f"{_json_str(name)}: {_json_str(value) if type(value) is str else json.dumps(value)}")
        if lists:
            self._lists[(table, key)] = lists
        else:
            self._lists.pop((table, key), None)
        return _Encoded("{" + ", ".join(pieces) + "}")

    def forget(self, table: str, key: Key) -> None:
        self._lists.pop((table, key), None)


def _list_texts(items: list[Any], old_items: tuple[Any, ...], old_texts: list[str] | tuple[()]) -> list[str]:
    """The JSON text of each element of items, taken from old_texts where the element is the
    very object at the matching place of old_items (matched from the front and from the back,
    in C-level loops), json.dumps for the rest."""
    front = len(list(takewhile(bool, map(operator.is_, items, old_items))))
    room = min(len(items), len(old_items)) - front
    back = min(room, len(list(takewhile(bool, map(operator.is_, reversed(items), reversed(old_items))))))
    middle = [json.dumps(item) for item in items[front:len(items) - back]]
    return [*old_texts[:front], *middle, *(old_texts[len(old_texts) - back:] if back else ())]


class _WriteConn:
    """The write transaction's connection: the driver's own connection and one cursor.

    Statements, savepoints and COMMIT go straight to the DBAPI (what SQLAlchemy's Connection
    would send, without its per-statement bookkeeping). Only `Store._commit` opens one.
    """

    __slots__ = ("dialect", "dbapi", "cursor", "body_json", "_savepoints")

    def __init__(self, dialect: Dialect, dbapi: Any, body_json: _BodyJSON) -> None:
        self.dialect = dialect
        self.dbapi = dbapi
        self.body_json = body_json
        self.cursor = dbapi.cursor()
        self._savepoints = 0

    def execute(self, statement: _Prepared, values: dict[str, Any]) -> Any:
        self.cursor.execute(statement.compiled(self.dialect)[0], statement.params(self.dialect, values))
        return self.cursor

    def execute_many(self, statement: _Prepared, rows: list[dict[str, Any]]) -> None:
        self.cursor.executemany(statement.compiled(self.dialect)[0], [statement.params(self.dialect, r) for r in rows])

    def savepoint(self) -> str:
        self._savepoints += 1
        name = f"sp_{self._savepoints}"
        self.cursor.execute(f"SAVEPOINT {name}")
        return name

    def release(self, name: str) -> None:
        self.cursor.execute(f"RELEASE SAVEPOINT {name}")

    def rollback_to(self, name: str) -> None:
        self.cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")


def _upsert_builder(spec: _TableSpec) -> Callable[[str], Any]:
    def build(dialect_name: str) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE: one statement, on both SQLite and PostgreSQL."""
        table = spec.model.__table__
        stmt = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
        updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in spec.key_columns}
        return stmt.on_conflict_do_update(index_elements=list(spec.key_columns), set_=updates)

    return build


def _delete_builder(spec: _TableSpec) -> Callable[[str], Any]:
    table = spec.model.__table__
    return lambda _: delete(table).where(*(table.c[c] == bindparam(c) for c in spec.key_columns))


_COUNTER = models.IndexCounter.__table__
_CHANGES = models.Change.__table__
_BUMP_INDEX = _Prepared(lambda _: update(_COUNTER).where(_COUNTER.c.id == 1)
                        .values(value=_COUNTER.c.value + bindparam("n")).returning(_COUNTER.c.value))
_INSERT_CHANGE = _Prepared(lambda _: insert(_CHANGES).values(
    index=bindparam("index"), table=bindparam("table"), key=bindparam("key", type_=JSON)))
_TRIM_CHANGES = _Prepared(lambda _: delete(_CHANGES).where(_CHANGES.c.index < bindparam("before")))
_UPSERTS = {name: _Prepared(_upsert_builder(spec)) for name, spec in TABLES.items()}
_DELETES = {name: _Prepared(_delete_builder(spec)) for name, spec in TABLES.items()}


class Txn:
    """A write in progress. Reads see the committed state plus this write's own changes.

    `put` takes ownership of the body it is given (it is stored and kept in memory as is):
    callers pass freshly built dicts and must not mutate them afterwards.
    """

    def __init__(
        self, conn: _WriteConn, state: State, index: int,
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
        values = spec.values(key, record, create_index, self.index)
        if table == "config":  # where bodies are large and rewritten in full (intention upserts)
            values["body"] = self.conn.body_json.encode(table, key, values["body"])
        self.conn.execute(_UPSERTS[table], values)
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
        self.conn.execute(_DELETES[table], dict(zip(TABLES[table].key_columns, key)))
        self.conn.body_json.forget(table, key)
        self.pending[(table, key)] = None
        return True


class _Write:
    """One queued write: its function, then its outcome (result or error) once done."""

    __slots__ = ("fn", "result", "error", "done", "on_done")

    def __init__(self, fn: Callable[[Txn], Any], on_done: Callable[[_Write], None] | None = None) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.on_done = on_done  # set for Store.submit: who to tell, since nobody waits in write()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.state = State()
        self._lock = threading.RLock()  # held by the one committer (and by catch-up/reload)
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._queued = threading.Condition(self._queue_lock)  # wakes the committer thread (submit)
        self._committer: threading.Thread | None = None
        self._closed = False
        self._commit_hooks: list[Callable[[], None]] = []
        self._writes = 0
        self._sqlite = self.engine.dialect.name == "sqlite"
        self._writer: Any = None  # SQLite: the committer's own pooled connection (see _write_connection)
        self._body_json = _BodyJSON()
        self.stats = {"commits": 0, "writes": 0}  # writes/commits = the group-commit batching factor
        self._ensure_counter()
        self.reload()

    def close(self) -> None:
        with self._queue_lock:  # the committer finishes what was submitted, then stops
            self._closed = True
            self._queued.notify()
            committer = self._committer
        if committer is not None and committer is not threading.current_thread():
            committer.join()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
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

    def _reader(self) -> Connection:
        """A connection that only reads (on SQLite, BEGIN without taking the write lock)."""
        return self.engine.connect().execution_options(**{READ_ONLY: True})

    def reload(self) -> None:
        """Load every table: at start-up, or when the change feed no longer reaches back far enough."""
        with self._lock, self._reader() as s:
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
            s = conn or self._reader()
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
        batch: list[_Write] = []
        with self._lock:
            if not job.done:  # nobody committed us while we waited: commit everything queued
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        self._fire_hooks()
        self._report(batch)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def submit(self, fn: Callable[[Txn], Any], on_done: Callable[[_Write], None]) -> None:
        """Queue fn for the next group commit and return at once (for an event loop, which
        must not block on the disk). When the write is durable and applied to the state, or
        has failed, `on_done(job)` is called with `job.result` or `job.error` set, on the thread
        that committed it, after the commit hooks. fn runs exactly as in `write`.

        The committer is one thread of the store's own; a `write` that happens to hold the lock
        commits submitted writes too (and then reports them). Either way one commit takes
        everything queued while the previous one was on the disk.
        """
        job = _Write(fn, on_done)
        with self._queue_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append(job)
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_loop, name="terminus-committer", daemon=True)
                self._committer.start()
            self._queued.notify()

    def _commit_loop(self) -> None:
        while True:
            with self._queue_lock:
                while not self._queue and not self._closed:
                    self._queued.wait()
                if not self._queue:  # closed, and nothing left to write
                    return
            batch: list[_Write] = []
            with self._lock:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    if batch:  # empty if a Store.write took the queue first
                        self._commit(batch)
                except Exception as exc:  # e.g. a state listener failed: fail the batch, keep committing
                    log.exception("commit failed")
                    for job in batch:
                        if not job.done:
                            job.error = job.error or exc
                            job.done = True
            self._fire_hooks()
            self._report(batch)

    @staticmethod
    def _report(batch: list[_Write]) -> None:
        for job in batch:
            if job.on_done is not None:
                try:
                    job.on_done(job)
                except Exception:  # pragma: no cover - a waiter that went away must not stop the committer
                    log.exception("reporting a write failed")

    @contextmanager
    def _write_connection(self) -> Iterator[Any]:
        """The DBAPI connection a commit runs on. SQLite keeps one for the committer (there is
        one writer at a time anyway, and checking a connection out and back in per commit cost
        more than the statements); PostgreSQL checks one out of the pool per commit, so that
        pre-ping replaces a connection the server dropped."""
        if not self._sqlite:
            fairy = self.engine.raw_connection()
            try:
                yield fairy.dbapi_connection
            finally:
                fairy.close()
            return
        if self._writer is None:
            self._writer = self.engine.raw_connection()
        try:
            yield self._writer.dbapi_connection
        except BaseException:
            if self._writer.dbapi_connection is not None and self._writer.dbapi_connection.in_transaction:
                self._writer.invalidate()  # could not even roll back: never reuse it
                self._writer = None
            raise

    def _commit(self, batch: list[_Write]) -> None:
        applied: list[tuple[int, dict[tuple[str, Key], dict[str, Any] | None]]] = []
        try:
            with self._write_connection() as dbapi:
                conn = _WriteConn(self.engine.dialect, dbapi, self._body_json)
                try:
                    if self._sqlite:  # take the write lock up front (see database.py)
                        conn.cursor.execute("BEGIN IMMEDIATE")
                    last = conn.execute(_BUMP_INDEX, {"n": len(batch)}).fetchone()[0]
                    first = last - len(batch) + 1
                    if first - 1 > self.state.index:
                        # another process committed since our last write: we hold the write lock
                        # (SQLite) or the counter's row lock (PostgreSQL), so a fresh connection
                        # reads exactly what was committed before us
                        self.catch_up()
                    earlier: dict[tuple[str, Key], dict[str, Any] | None] = {}
                    for offset, job in enumerate(batch):
                        txn = Txn(conn, self.state, first + offset, earlier)
                        savepoint = conn.savepoint() if len(batch) > 1 else None
                        try:
                            job.result = job.fn(txn)
                        except BaseException as exc:  # this write only: roll back to its savepoint
                            if savepoint is None:
                                raise
                            conn.rollback_to(savepoint)
                            job.error = exc
                            continue
                        if savepoint is not None:
                            conn.release(savepoint)
                        if txn.pending:
                            conn.execute_many(
                                _INSERT_CHANGE, [{"index": txn.index, "table": t, "key": _key_json(k)} for t, k in txn.pending])
                            earlier.update(txn.pending)
                            applied.append((txn.index, txn.pending))
                    self._writes += len(applied)
                    if applied and self._writes % 1000 < len(applied):
                        conn.execute(_TRIM_CHANGES, {"before": last - CHANGE_RETENTION})
                    if applied:
                        dbapi.commit()  # durable (synchronous=FULL) before anyone is told
                        self.stats["commits"] += 1
                        self.stats["writes"] += len(applied)
                    else:
                        dbapi.rollback()
                except BaseException:
                    dbapi.rollback()
                    raise
                finally:
                    conn.cursor.close()
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
        with self._reader() as conn:
            conn.execute(text("SELECT 1"))
