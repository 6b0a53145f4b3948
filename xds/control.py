"""From committed state changes to what each proxy should have (the cache).

After each commit the changed keys are inspected: an intention change marks only the
proxies whose inbound or linked services it targets (a wildcard destination marks all);
anything else that proxies read (catalog, other config entries, the CA) marks all. Marked
proxies are rebuilt after a short quiet period (debounce) - at most once per period, and
never later than the maximum delay - and `SnapshotCache.set` pushes only what changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from gateway.control import ControlPlane
from gateway.store.state import Key
from xds.builder import build_snapshot, intention_gated_upstreams, refresh_intentions
from xds.cache import SnapshotCache
from xds.resources import build_resources, rebuild_intention_resources
from xds.snapshot import ProxySnapshot

log = logging.getLogger(__name__)
# Test-only hook (never set in production): with TERMINUS_XDS_TEST_HOOKS=1, a service-defaults
# entry whose Meta has "terminus-test/reject-cluster": "true" gets a cluster Envoy must
# reject (negative connect_timeout), to prove NACK handling against a real Envoy.
TEST_HOOKS = os.environ.get("TERMINUS_XDS_TEST_HOOKS") == "1"
QUIET = 0.02  # seconds without changes before rebuilding
MAX_DELAY = 0.2  # a steady stream of changes still rebuilds this often


class XDSControl:
    def __init__(self, cp: ControlPlane, cache: SnapshotCache) -> None:
        self.cp = cp
        self.cache = cache
        self._lock = threading.Lock()
        self._known: dict[str, frozenset[str]] = {}  # node id -> destination services it enforces
        self._dirty: set[str] = set()  # need a full rebuild
        self._intent_dirty: set[str] = set()  # only their intentions changed
        self._all_dirty = False
        # node id -> (snapshot, resources as set, intention-gated upstreams): what an
        # intention-only change starts from. Only the worker pass touches it.
        self._built: dict[str, tuple[ProxySnapshot, dict[str, Any], bool]] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rebuilds = 0
        cp.state.listeners.append(self._on_state_change)
        cache.on_missing = self.ensure

    # -- building ---------------------------------------------------------------------------

    def ensure(self, node_id: str) -> None:
        """A proxy connected that the cache does not know yet: build it soon, off the event
        loop (this is called on it), through the same debounce as every other change."""
        with self._lock:
            self._known.setdefault(node_id, frozenset())
            self._dirty.add(node_id)
        self._signal()

    def _rebuild(self, node_id: str) -> ProxySnapshot | None:
        self._built.pop(node_id, None)  # a failed build leaves nothing to refresh from
        try:
            snap = build_snapshot(self.cp, node_id)
        except Exception:  # never let one proxy's bad config stop the others
            log.exception("building the snapshot of %s failed", node_id)
            return None
        gated = False
        if snap is not None:
            try:
                gated = intention_gated_upstreams(self.cp, node_id)
            except Exception:
                log.exception("inspecting the upstreams of %s failed", node_id)
                gated = True
        with self._lock:
            if snap is None:
                self._known.pop(node_id, None)
            else:
                targets = {snap.inbound.service.name} if snap.inbound else set()
                targets |= {ls.inbound.service.name for ls in snap.linked}
                # direct Lambda upstreams exist only while intentions allow them (source-side gating)
                targets |= {up.name for up in snap.upstreams if up.lambda_ is not None}
                self._known[node_id] = frozenset(targets)
        if snap is None:
            self.cache.set(node_id, {})
            return None
        resources = build_resources(snap)
        if TEST_HOOKS:
            self._apply_test_hooks(resources)
        self.cache.set(node_id, resources)
        self._built[node_id] = (snap, resources, gated)
        self.rebuilds += 1
        return snap

    def _rebuild_intentions(self, node_id: str) -> None:
        """Only intentions changed since the node's last full build (any other change marks a
        full rebuild): refresh them in its snapshot and rebuild only what carries them - the
        routes (HTTP inbound RBAC) and, for TCP inbound, the listeners. Clusters, endpoints and
        secrets are the very objects set before, which the cache does not pack again."""
        built = self._built.get(node_id)
        if built is None or built[2]:
            self._rebuild(node_id)
            return
        prev_snap, prev_resources, _ = built
        try:
            snap = refresh_intentions(self.cp, prev_snap)
            resources = rebuild_intention_resources(snap, prev_resources)
        except Exception:
            log.exception("refreshing the intentions of %s failed", node_id)
            self._rebuild(node_id)
            return
        self.cache.set(node_id, resources)
        self._built[node_id] = (snap, resources, False)
        self.rebuilds += 1

    def _apply_test_hooks(self, resources: dict[str, Any]) -> None:
        from gateway.identity.sni import service_sni
        from xds.resources.common import CLUSTER

        for entry in self.cp.state.config_entries("service-defaults"):
            if (entry.get("Meta") or {}).get("terminus-test/reject-cluster") == "true":
                sni = service_sni(entry["Name"], None, "default", "default", self.cp.config.datacenter, self.cp.ca.trust_domain)
                cluster = resources.get(CLUSTER, {}).get(sni)
                if cluster is not None:
                    bad = type(cluster)()
                    bad.CopyFrom(cluster)
                    bad.connect_timeout.seconds = -1
                    resources[CLUSTER][sni] = bad

    # -- change tracking -----------------------------------------------------------------------

    def _on_state_change(self, table: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if table in ("acl_tokens", "acl_policies"):
            return
        with self._lock:
            if table == "config" and key and key[0] == "service-intentions":
                name = key[3]
                before = len(self._intent_dirty)
                if name == "*":
                    self._intent_dirty.update(self._known)
                else:
                    self._intent_dirty.update(n for n, targets in self._known.items() if name in targets)
                if len(self._intent_dirty) == before:  # no proxy enforces it, or all are marked already
                    return
            elif table == "system" and key and key[0] not in ("ca",):
                return
            else:
                self._all_dirty = True
        self._signal()

    def tick(self) -> None:
        """Periodic: rebuild everything; leaves renewed by the CA reach proxies before expiry
        (unchanged snapshots cost a hash comparison and push nothing)."""
        with self._lock:
            self._all_dirty = True
        self._signal()

    def _signal(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """The debounce loop; runs on the server's event loop for its lifetime."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            started = self._loop.time()
            while True:  # wait for a quiet period, but no longer than MAX_DELAY in total
                self._wake.clear()
                remaining = MAX_DELAY - (self._loop.time() - started)
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), min(QUIET, remaining))
                except TimeoutError:
                    break
            self._wake.clear()
            full, intent = self._take()
            # One worker pass for the whole batch: each proxy's snapshot is pushed as soon as it
            # is built (cache.set wakes its stream), with no event-loop round trip in between.
            await asyncio.to_thread(self._run_batch, full, intent)

    def _take(self) -> tuple[list[str], list[str]]:
        """The marked nodes, split into full rebuilds and intention-only refreshes."""
        with self._lock:
            known = set(self._known)
            full = known if self._all_dirty else self._dirty & known
            intent = (self._intent_dirty & known) - full
            self._dirty.clear()
            self._intent_dirty.clear()
            self._all_dirty = False
        return sorted(full), sorted(intent)

    def _run_batch(self, full: list[str], intent: list[str] | None = None) -> None:
        # intention-only refreshes first: cheap, and usually what an operator waits for
        for node_id in intent or ():
            self._rebuild_intentions(node_id)
        self._rebuild_many(full)

    def _rebuild_many(self, nodes: list[str]) -> None:
        for node_id in nodes:
            self._rebuild(node_id)
