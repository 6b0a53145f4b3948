"""The durable schema. Alembic migrations create it; `tests/test_migrations.py` checks they agree.

Columns that are looked up or indexed are typed; the rest of each object is kept as the
Consul-shaped JSON `body`, so the API can return what it stored without re-assembling it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class IndexCounter(Base):
    """One row: the last modify index handed out. Locking it serializes writers across processes."""

    __tablename__ = "index_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Change(Base):
    """The change feed: every committed write appends one row per object it touched.

    A process that did not make the write (another server on the same PostgreSQL, or this
    one after a restart) replays rows past its own index and reloads the named objects.
    """

    __tablename__ = "changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    table: Mapped[str] = mapped_column(String(32), nullable=False)
    key: Mapped[list[Any]] = mapped_column(JSON, nullable=False)

    __table_args__ = (Index("ix_changes_index", "index"),)


class Node(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Service(Base):
    __tablename__ = "services"
    node: Mapped[str] = mapped_column(String(256), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (Index("ix_services_name", "name"),)


class Check(Base):
    __tablename__ = "checks"
    node: Mapped[str] = mapped_column(String(256), primary_key=True)
    check_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ConfigEntry(Base):
    __tablename__ = "config_entries"
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[str] = mapped_column(String(128), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ACLPolicy(Base):
    __tablename__ = "acl_policies"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ACLToken(Base):
    """Tokens are stored by accessor; the secret only as a SHA-256 digest."""

    __tablename__ = "acl_tokens"
    accessor_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    create_index: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SystemKV(Base):
    """Cluster-wide singletons: cluster ID, ACL bootstrap state, and later CA state."""

    __tablename__ = "system"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    modify_index: Mapped[int] = mapped_column(BigInteger, nullable=False)


__all__ = [
    "Base", "IndexCounter", "Change", "Node", "Service", "Check", "ConfigEntry",
    "ACLPolicy", "ACLToken", "SystemKV",
]
