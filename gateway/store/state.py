"""The in-memory mirror of the database that every read is served from.

Like Consul's memdb: reads never touch the database, so a blocking query or an
intention decision costs a dictionary lookup. The mirror only changes by applying
committed writes (ours or, through the change feed, another process's).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, ...]
Listener = Callable[[str, Key, "dict[str, Any] | None", "dict[str, Any] | None"], None]

TABLES = ("nodes", "services", "checks", "config", "acl_policies", "acl_tokens", "system")


@dataclass
class State:
    index: int = 0
    tables: dict[str, dict[Key, dict[str, Any]]] = field(
        default_factory=lambda: {t: {} for t in TABLES}
    )
    # The index at which each table (and each config kind, as "config:<kind>") last changed:
    # what a blocking query on that table waits on and returns as X-Consul-Index.
    table_index: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    services_by_name: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    services_by_id: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    checks_by_node: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    config_by_kind: dict[str, dict[Key, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    token_by_hash: dict[str, str] = field(default_factory=dict)
    policy_by_name: dict[str, str] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)

    def get(self, table: str, key: Key) -> dict[str, Any] | None:
        return self.tables[table].get(key)

    def index_of(self, *names: str) -> int:
        """X-Consul-Index for a read spanning these tables: never 0 (clients treat 0 as suspect)."""
        return max([self.table_index[n] for n in names] + [1])

    def apply(self, index: int, table: str, key: Key, record: dict[str, Any] | None) -> None:
        old = self.tables[table].get(key)
        if record is None:
            self.tables[table].pop(key, None)
        else:
            self.tables[table][key] = record
        self._reindex(table, key, old, record)
        self.table_index[table] = max(self.table_index[table], index)
        if table == "config":
            kind = key[0]
            self.table_index[f"config:{kind}"] = max(self.table_index[f"config:{kind}"], index)
        self.index = max(self.index, index)
        for listener in self.listeners:
            listener(table, key, old, record)

    def _reindex(self, table: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if table == "services":
            if old is not None:
                for index, field_value in ((self.services_by_name, old["Service"]), (self.services_by_id, key[1])):
                    index[field_value].discard(key)
                    if not index[field_value]:
                        del index[field_value]
            if new is not None:
                self.services_by_name[new["Service"]].add(key)
                self.services_by_id[key[1]].add(key)
        elif table == "checks":
            if old is not None:
                self.checks_by_node[key[0]].discard(key)
                if not self.checks_by_node[key[0]]:
                    del self.checks_by_node[key[0]]
            if new is not None:
                self.checks_by_node[key[0]].add(key)
        elif table == "config":
            if new is None:
                self.config_by_kind[key[0]].pop(key, None)
            else:
                self.config_by_kind[key[0]][key] = new
        elif table == "acl_tokens":
            if old is not None:
                self.token_by_hash.pop(old["_SecretHash"], None)
            if new is not None:
                self.token_by_hash[new["_SecretHash"]] = key[0]
        elif table == "acl_policies":
            if old is not None:
                self.policy_by_name.pop(old["Name"], None)
            if new is not None:
                self.policy_by_name[new["Name"]] = key[0]

    # -- convenience reads -------------------------------------------------------------

    def config_entry(self, kind: str, name: str, namespace: str = "default", partition: str = "default") -> dict[str, Any] | None:
        return self.tables["config"].get((kind, partition or "default", namespace or "default", name))

    def config_entries(self, kind: str) -> Iterable[dict[str, Any]]:
        return self.config_by_kind.get(kind, {}).values()

    def node_checks(self, node: str) -> list[dict[str, Any]]:
        """A node's checks (node-level and its services'), in key order."""
        return [self.tables["checks"][k] for k in sorted(self.checks_by_node.get(node, ()))]

    def services_named(self, name: str) -> list[dict[str, Any]]:
        return [self.tables["services"][k] for k in sorted(self.services_by_name.get(name, ()))]

    def system(self, key: str) -> dict[str, Any] | None:
        rec = self.tables["system"].get((key,))
        return None if rec is None else rec["Value"]


def snapshot_copy(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy safe to hand to callers that may mutate it (responses are built from these)."""
    return None if record is None else copy.deepcopy(record)
