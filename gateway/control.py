"""The control service assembled: store, intention engine, ACLs and the domain services.

Built once per process and shared by the HTTP API (and, later, the xDS server). Nothing
here speaks a wire protocol.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

from gateway.acl.resolver import ACLResolver
from gateway.acl.service import ACLService
from gateway.agentconfig import AgentConfig
from gateway.catalog.service import CatalogService
from gateway.configentries.service import ConfigEntryService
from gateway.identity.authority import ConnectCA
from gateway.intentions.engine import IntentionEngine
from gateway.intentions.service import IntentionService
from gateway.store.state import Key
from gateway.store.store import Store
from gateway.store.watch import WatchHub

CLUSTER_KEY = "cluster"


class ControlPlane:
    def __init__(
        self, config: AgentConfig, database_url: str, node_name: str | None = None, ca_secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.store = Store(database_url)
        self.state = self.store.state
        self.engine = IntentionEngine.from_policy(
            config.default_intention_policy, config.acl_enabled, config.acl_default_policy
        )
        self.engine.load(self.state.config_entries("service-intentions"))
        self.state.listeners.append(self._on_change)
        self.hub = WatchHub()
        self.store.on_commit(self.hub.notify)
        self.acl_resolver = ACLResolver(self.state, config.acl_enabled, config.acl_default_policy)
        self.config_entries = ConfigEntryService(self.store)
        self.intentions = IntentionService(self.config_entries, self.engine)
        self.catalog = CatalogService(self.store, config.datacenter, node_name or socket.gethostname(), config.bind_addr)
        self.acl = ACLService(self.store, self.acl_resolver)
        if ca_secret is None:
            raise ValueError("a CA secret is required (it encrypts the CA's private keys)")
        self.ca = ConnectCA(self.store, ca_secret, config.datacenter)
        self.store.on_commit(self.ca.on_change)
        self._bootstrap()

    def _bootstrap(self) -> None:
        if self.state.system(CLUSTER_KEY) is None:
            self.store.write(lambda txn: txn.put_system(CLUSTER_KEY, {"ClusterID": str(uuid.uuid4())}))
        if self.config.acl_enabled:
            self.acl.ensure_builtins(self.config.initial_management_token)
        self.catalog.ensure_agent_node()
        self.ca.initialize(self.cluster_id)

    @property
    def cluster_id(self) -> str:
        return self.state.system(CLUSTER_KEY)["ClusterID"]  # type: ignore[index]

    def _on_change(self, table: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Keep the compiled intention index in step with every committed change."""
        if table == "*":
            self.engine.load(self.state.config_entries("service-intentions"))
        elif table == "config" and key[0] == "service-intentions":
            self.engine.update_entry(key[1:], new)  # type: ignore[arg-type]

    def close(self) -> None:
        self.store.close()
