"""Config entry writes and reads (`/v1/config`), shared by the intentions API.

Every write path normalizes, validates and only then stores: a rejected entry changes
nothing. Intentions are config entries of kind service-intentions, as in Consul >= 1.9.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.acl.authorizer import permission_denied_message
from gateway.acl.resolver import Caller
from gateway.configentries import validate as kinds
from gateway.decode import canonical_config_entry
from gateway.errors import InvalidInput, NotFound, PermissionDenied
from gateway.intentions.validate import NOT_PREPARED, PreparedSources, prepare_service_intentions
from gateway.store.store import Store, Txn

READ_ONLY = ("CreateIndex", "ModifyIndex")


def entry_key(kind: str, name: str, namespace: str = "", partition: str = "") -> tuple[str, str, str, str]:
    return (kind, partition or "default", namespace or "default", name)


def prepare(
    raw: dict[str, Any], legacy: bool = False, canonical: bool = False, memo: PreparedSources | None = None,
) -> dict[str, Any]:
    """Canonical keys, defaults and validation: the entry exactly as it will be stored.

    `legacy` is set only by the UUID intentions API, whose writes keep LegacyID fields.
    `canonical` skips key canonicalization for entries terminus built itself (already
    canonical); validation always runs. With `memo`, the sources of service-intentions
    entries this function returned before are not normalized and checked one by one again
    (the result and the first error are the same), and this result's sources are remembered.
    """
    entry = dict(raw) if canonical else canonical_config_entry(raw)
    for field in READ_ONLY:
        entry.pop(field, None)
    kind = entry.get("Kind", "")
    if not entry.get("Name"):
        raise InvalidInput("Name is required")
    entry["Namespace"] = entry.get("Namespace") or "default"
    entry["Partition"] = entry.get("Partition") or "default"
    kinds.validate_meta(entry.get("Meta"))
    if kind == "service-intentions":
        dest = (entry["Name"], entry["Namespace"], entry["Partition"])
        memo_key = (*dest, legacy) if memo is not None and all(isinstance(v, str) for v in dest) else None
        prepared = memo.get(memo_key) if memo is not None and memo_key is not None else NOT_PREPARED
        record: dict[int, Any] | None = {} if memo_key is not None else None
        entry = prepare_service_intentions(entry, legacy=legacy, prepared=prepared, record=record)
        for src in entry.get("Sources") or ():
            if id(src) not in prepared and (src.get("JWT") or any(p.get("JWT") for p in src.get("Permissions") or ())):
                raise InvalidInput("JWT requirements in intentions are not supported by terminus")
        if entry.get("JWT"):
            raise InvalidInput("JWT requirements in intentions are not supported by terminus")
        if memo is not None and memo_key is not None and record is not None:
            memo.remember(memo_key, record)
    elif kind == "service-defaults":
        kinds.validate_service_defaults(entry)
    elif kind == "proxy-defaults":
        kinds.validate_proxy_defaults(entry)
    elif kind == "mesh":
        kinds.validate_mesh(entry)
    elif kind == "terminating-gateway":
        entry = kinds.normalize_terminating_gateway(entry)
        kinds.validate_terminating_gateway(entry)
    return entry


def can_read(caller: Caller, kind: str, name: str) -> bool:
    a = caller.authorizer
    if kind == "service-intentions":
        return a.intentions_read(name)
    if kind in ("service-defaults", "terminating-gateway"):
        return a.service_read(name)
    if kind == "mesh":
        return a.mesh_read()
    return True  # proxy-defaults is readable by every proxy, as in Consul


def require_write(caller: Caller, kind: str, name: str) -> None:
    a = caller.authorizer
    if kind == "service-intentions":
        ok, perm, res = a.intentions_write(name), "intention:write", name
    elif kind == "service-defaults":
        ok, perm, res = a.service_write(name), "service:write", name
    else:  # proxy-defaults, mesh, terminating-gateway
        ok, perm, res = a.mesh_write(), "mesh:write", None
    if not ok:
        raise PermissionDenied(permission_denied_message(caller.accessor_id, perm, res))


class ConfigEntryService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.state = store.state
        # sources of the service-intentions entries prepared last: an intention upsert
        # re-checks only the source it changes, not every source of its destination
        self._prepared = PreparedSources()

    def apply(self, caller: Caller, raw: dict[str, Any], cas: int | None = None) -> bool:
        """Upsert; with cas, only if ModifyIndex still equals it (0: only if absent). False = not applied."""
        entry = prepare(raw, memo=self._prepared)
        require_write(caller, entry["Kind"], entry["Name"])
        key = entry_key(entry["Kind"], entry["Name"], entry["Namespace"], entry["Partition"])

        def write(txn: Txn) -> bool:
            current = txn.get("config", key)
            if cas is not None:
                if (current["ModifyIndex"] if current else 0) != cas:
                    return False
            txn.put("config", key, entry)
            return True

        return self.store.write(write)

    def modify(
        self,
        key: tuple[str, str, str, str],
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        legacy: bool = False,
    ) -> None:
        """Read-modify-write of one entry under the write lock; change returns None to delete."""
        self.store.write(self.modify_txn(key, change, legacy))

    def modify_txn(
        self,
        key: tuple[str, str, str, str],
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        legacy: bool = False,
    ) -> Callable[[Txn], None]:
        """`modify` as a write to run (Store.write or Store.submit)."""

        def write(txn: Txn) -> None:
            updated = change(txn.get("config", key))
            if updated is None:
                txn.delete("config", key)
                self._prepared.forget(key)
            else:
                txn.put("config", key, prepare(updated, legacy=legacy, canonical=True, memo=self._prepared))

        return write

    def get(self, caller: Caller, kind: str, name: str, namespace: str = "", partition: str = "") -> dict[str, Any]:
        self.check_kind(kind)
        entry = self.state.get("config", entry_key(kind, name, namespace, partition))
        if entry is None or not can_read(caller, kind, name):
            raise NotFound(f'Config entry not found for "{kind}" / "{name}"')
        return entry

    def list(self, caller: Caller, kind: str) -> list[dict[str, Any]]:
        self.check_kind(kind)
        entries = [e for e in self.state.config_entries(kind) if can_read(caller, kind, e["Name"])]
        return sorted(entries, key=lambda e: (e.get("Partition", ""), e.get("Namespace", ""), e["Name"]))

    def delete(self, caller: Caller, kind: str, name: str, namespace: str = "", partition: str = "", cas: int | None = None) -> bool:
        self.check_kind(kind)
        require_write(caller, kind, name)
        key = entry_key(kind, name, namespace, partition)

        def write(txn: Txn) -> bool:
            current = txn.get("config", key)
            if cas is not None and (current["ModifyIndex"] if current else 0) != cas:
                return False
            txn.delete("config", key)
            self._prepared.forget(key)
            return True

        return self.store.write(write)

    @staticmethod
    def check_kind(kind: str) -> None:
        if kind not in kinds.KINDS:
            raise InvalidInput(f"invalid config entry kind: {kind}")
