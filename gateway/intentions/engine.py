"""The one place intention decisions are made.

The REST check/authorize endpoints, the native gateway and the Envoy RBAC compiler all
ask this engine, so they cannot disagree (Consul's PR #23868 bug: /check and Envoy used
different default policies).

Why it is fast: for a (source, destination) pair only nine intentions can ever apply,
one per precedence level - destination {exact, ns/*, */*} x source {exact, ns/*, */*} -
and Consul's precedence order is exactly that nesting. So a decision is at most nine
dictionary lookups in precedence order, never a scan, whatever the number of intentions.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

from gateway.intentions.request import HTTPRequest

WILDCARD = "*"
DEFAULT = "default"
_SEP = "\x1f"  # cannot appear in a valid name, so keys never collide


class ServiceName:
    """A service identity as intentions see it; keys are computed once, not per decision."""

    # The six index keys are plain slots, not two tuples: at 100k intentions each object a
    # decision touches is likely a cache miss, and a tuple is one more object (bench/intentions.py).
    __slots__ = ("name", "namespace", "partition", "peer", "_hash",
                 "src_exact", "src_ns_any", "src_any", "dst_exact", "dst_ns_any", "dst_any", "resolved_view")

    def __init__(self, name: str, namespace: str = DEFAULT, partition: str = DEFAULT, peer: str = "") -> None:
        self.name = name
        self.namespace = namespace or DEFAULT
        self.partition = "" if peer else (partition or DEFAULT)
        self.peer = peer
        origin = f"peer:{peer}" if peer else f"ap:{self.partition}"
        # Interned, so an index lookup compares keys by identity and never reads the
        # stored key's characters: at 100k intentions that saves a cache miss per probe.
        intern = sys.intern
        self.src_exact = intern(_SEP.join((origin, self.namespace, name)))
        self.src_ns_any = intern(_SEP.join((origin, self.namespace, WILDCARD)))
        self.src_any = intern(_SEP.join((origin, WILDCARD, WILDCARD)))
        dp = partition or DEFAULT
        self.dst_exact = intern(_SEP.join((dp, self.namespace, name)))
        self.dst_ns_any = intern(_SEP.join((dp, self.namespace, WILDCARD)))
        self.dst_any = intern(_SEP.join((dp, WILDCARD, WILDCARD)))
        self._hash = hash((name, self.namespace, self.partition, peer))
        # (engine epoch, view) as a destination: the engine's resolution of this name to its
        # view, kept on the object a data plane holds anyway (see IntentionEngine._view_for)
        self.resolved_view: tuple[object, dict[str, Any] | None] | None = None

    @property
    def source_keys(self) -> tuple[str, str, str]:
        """Index keys of this service as a source: exact, namespace wildcard, all wildcard."""
        return self.src_exact, self.src_ns_any, self.src_any

    @property
    def dest_keys(self) -> tuple[str, str, str]:
        """Index keys of this service as a destination, most specific first."""
        return self.dst_exact, self.dst_ns_any, self.dst_any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceName) and (
            (self.name, self.namespace, self.partition, self.peer)
            == (other.name, other.namespace, other.partition, other.peer)
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"ServiceName({self!s})"

    def __str__(self) -> str:
        prefix = f"{self.peer}:" if self.peer else ""
        return f"{prefix}{self.namespace}/{self.name}" if self.namespace != DEFAULT else f"{prefix}{self.name}"


class _HeaderCheck:
    """One `Header` clause, evaluated exactly as Envoy's HeaderUtility::matchHeaders."""

    __slots__ = ("name", "kind", "value", "regex", "invert")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.name = spec["Name"].lower()
        self.invert = bool(spec.get("Invert"))
        self.regex = None
        self.value = ""
        if spec.get("Present"):
            self.kind = "present"
        elif spec.get("Exact", "") != "":
            self.kind, self.value = "exact", spec["Exact"]
        elif spec.get("Prefix", "") != "":
            self.kind, self.value = "prefix", spec["Prefix"]
        elif spec.get("Suffix", "") != "":
            self.kind, self.value = "suffix", spec["Suffix"]
        elif spec.get("Regex", "") != "":
            self.kind, self.regex = "regex", re2.compile(spec["Regex"])
        else:  # validation forbids this; Envoy treats a matcher with no specifier as "present"
            self.kind = "present"

    def matches(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        if value is None:
            # Envoy: a missing header matches nothing, except an inverted presence check.
            return self.invert and self.kind == "present"
        if self.kind == "present":
            hit = True
        elif self.kind == "exact":
            hit = value == self.value
        elif self.kind == "prefix":
            hit = value.startswith(self.value)
        elif self.kind == "suffix":
            hit = value.endswith(self.value)
        else:
            hit = self.regex.fullmatch(value) is not None  # type: ignore[union-attr]
        return hit != self.invert


class CompiledPermission:
    __slots__ = ("allow", "path_exact", "path_prefix", "path_regex", "methods", "headers", "spec")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        self.allow = spec["Action"] == "allow"
        http = spec.get("HTTP") or {}
        self.path_exact: str | None = http.get("PathExact") or None
        self.path_prefix: str | None = http.get("PathPrefix") or None
        self.path_regex = re2.compile(http["PathRegex"]) if http.get("PathRegex") else None
        methods = http.get("Methods") or ()
        self.methods = frozenset(m.upper() for m in methods) or None
        self.headers = tuple(_HeaderCheck(h) for h in http.get("Header") or ())

    def matches(self, req: HTTPRequest) -> bool:
        if self.path_exact is not None or self.path_prefix is not None or self.path_regex is not None:
            path = req.url_path
            if self.path_exact is not None and path != self.path_exact:
                return False
            if self.path_prefix is not None and not path.startswith(self.path_prefix):
                return False
            if self.path_regex is not None and self.path_regex.fullmatch(path) is None:
                return False
        if self.methods is not None and req.method not in self.methods:
            return False
        for check in self.headers:
            if not check.matches(req.headers):
                return False
        return True


class CompiledIntention:
    """One source of a service-intentions entry, ready to decide with."""

    __slots__ = (
        "id", "source", "destination", "action", "permissions", "precedence", "description",
        "l4_decision", "permission_decisions", "unmatched_decision", "spec",
    )

    def __init__(self, entry: Mapping[str, Any], src: Mapping[str, Any], destination: ServiceName) -> None:
        self.spec = src  # what it was compiled from: an unchanged source is not recompiled
        self.id: str = src.get("LegacyID") or ""
        self.destination = destination
        self.source = ServiceName(src["Name"], src.get("Namespace") or DEFAULT, src.get("Partition") or DEFAULT, src.get("Peer") or "")
        self.action: str | None = src.get("Action") or None
        self.permissions = tuple(CompiledPermission(p) for p in src.get("Permissions") or ())
        self.precedence: int = src.get("Precedence", 0)
        self.description: str = src.get("Description", "")
        self.l4_decision: Decision
        self.permission_decisions: tuple[Decision, ...] = ()
        self.unmatched_decision: Decision

    def prepare_decisions(self, default_allow: bool, default_reason: str) -> None:
        """Decisions are immutable, so each possible outcome is built once, at compile time:
        a decision then costs the lookups and nothing else (no allocation, no formatting)."""
        if not self.permissions:
            self.l4_decision = Decision(self.action == "allow", f"Matched L4 intention: {self}", self)
            return
        self.l4_decision = Decision(False, f"Matched L7 intention: {self}", self)
        self.permission_decisions = tuple(
            Decision(p.allow, f"Matched L7 intention: {self}, permission {i} ({'allow' if p.allow else 'deny'})", self, i)
            for i, p in enumerate(self.permissions)
        )
        self.unmatched_decision = Decision(
            default_allow, f"Matched L7 intention: {self}, no permission matched; {default_reason.lower()}", self,
            by_default=True,
        )

    @property
    def is_l7(self) -> bool:
        return bool(self.permissions)

    def __str__(self) -> str:
        """Consul's Intention.String(), used verbatim in authorize reasons."""
        id_part = f"ID: {self.id}, " if self.id else ""
        detail = f"Permissions: {len(self.permissions)}" if self.permissions else f"Action: {(self.action or '').upper()}"
        return f"{self.source} => {self.destination} ({id_part}Precedence: {self.precedence}, {detail})"

    def summary(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "SourceNS": self.source.namespace,
            "SourceName": self.source.name,
            "SourcePartition": self.source.partition,
            "SourcePeer": self.source.peer,
            "DestinationNS": self.destination.namespace,
            "DestinationName": self.destination.name,
            "DestinationPartition": self.destination.partition,
            "Precedence": self.precedence,
            "Action": self.action or "",
            "Permissions": len(self.permissions),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    intention: CompiledIntention | None = None
    permission_index: int | None = None  # which Permissions[i] decided; None for L4 or default
    by_default: bool = False

    def explain(self) -> dict[str, Any]:
        """The explanation Consul's /check does not give: what matched and why."""
        return {
            "Allowed": self.allowed,
            "Reason": self.reason,
            "Default": self.by_default,
            "MatchedIntention": None if self.intention is None else self.intention.summary(),
            "PermissionIndex": self.permission_index,
        }


DEFAULT_INTENTION_POLICY = "Default intention policy"
DEFAULT_BY_ACLS = "Default behavior configured by ACLs"


class IntentionEngine:
    """Compiled intentions, indexed for decisions that never scan.

    `_by_dest` holds each destination entry's sources by source key, as written. `_views`
    merges, for every destination key, its own sources with those of the wildcard
    destinations that cover it (ns/* then */*), keeping per source key the intention of
    highest precedence. A decision is then one view lookup (exact, else ns/*, else */*)
    and three source-key lookups, whatever the number of intentions.

    A view is *resolved*: under each source key it holds the winner for a source that has
    that key as its most specific one (the key's own intention, or a wildcard source of
    higher precedence), so the first key found is the answer, with no precedence compared
    at decision time. An L4 winner is stored as its prebuilt allow/deny :class:`Decision`
    (``Decision.intention`` leads back), an L7 winner as the intention. A decision is then
    one view and one to three source-key lookups, and where the index no longer fits the
    CPU caches, each object not touched is a memory access saved.

    Which view a destination uses is cached on the destination's :class:`ServiceName`
    (``resolved_view``), tagged with the engine's epoch, a token replaced after every change:
    a stale resolution is never used, and a data plane that holds its destinations' names
    skips the view lookup.
    """

    def __init__(self, default_allow: bool = True, default_reason: str = DEFAULT_BY_ACLS) -> None:
        self.default_allow = default_allow
        self.default_reason = default_reason
        self._by_dest: dict[str, dict[str, CompiledIntention]] = {}
        self._views: dict[str, dict[str, CompiledIntention | Decision]] = {}
        self._entry_dest: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._epoch = object()  # replaced after every change, once the new views are published
        self._default = Decision(default_allow, default_reason, by_default=True)

    @classmethod
    def from_policy(cls, default_intention_policy: str, acl_enabled: bool, acl_default_policy: str) -> IntentionEngine:
        """Consul's chain: default_intention_policy, else the ACL default, else allow (ACLs off)."""
        if default_intention_policy:
            return cls(default_intention_policy == "allow", DEFAULT_INTENTION_POLICY)
        return cls((not acl_enabled) or acl_default_policy == "allow", DEFAULT_BY_ACLS)

    # -- updates -----------------------------------------------------------------------------

    def load(self, entries: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self._by_dest.clear()
            self._entry_dest.clear()
            for entry in entries:
                self._put(entry)
            self._views = {}
            for dkey in self._by_dest:
                self._rebuild_view(dkey)
            for dkey in list(self._by_dest):
                self._ensure_wildcard_views(dkey)
            self._changed()

    def update_entry(self, entry_key: tuple[str, str, str], entry: Mapping[str, Any] | None) -> None:
        """Incremental: recompile one destination; only views that include it are rebuilt."""
        with self._lock:
            old = self._entry_dest.pop(entry_key, None)
            previous = self._by_dest.pop(old, None) if old is not None else None
            new = self._put(entry, previous) if entry is not None else None
            for dkey in {k for k in (old, new) if k is not None}:
                for affected in self._affected_views(dkey):
                    self._rebuild_view(affected)
                self._ensure_wildcard_views(dkey)
            self._changed()

    def _changed(self) -> None:
        self._epoch = object()  # after the views: a reader that saw the old epoch re-resolves

    def _put(self, entry: Mapping[str, Any], previous: Mapping[str, CompiledIntention] | None = None) -> str | None:
        sources = entry.get("Sources") or ()
        if not sources:
            return None
        dest = ServiceName(entry["Name"], entry.get("Namespace") or DEFAULT, entry.get("Partition") or DEFAULT)
        compiled = []
        # An unchanged source keeps its compiled form: a write that adds one source to a
        # destination with many compiles one intention, not all of them. The store hands back
        # the very source objects it was given (stored bodies are never mutated), so most are
        # found by identity; an equal copy is found by its key.
        same = {id(ci.spec): ci for ci in previous.values()} if previous else {}
        for src in sources:
            ci = same.get(id(src))
            if ci is None or ci.spec is not src:
                ci = None
                if previous:
                    origin = f"peer:{src['Peer']}" if src.get("Peer") else f"ap:{src.get('Partition') or DEFAULT}"
                    ci = previous.get(_SEP.join((origin, src.get("Namespace") or DEFAULT, src["Name"])))
                if ci is None or ci.spec != src:
                    ci = CompiledIntention(entry, src, dest)
                    ci.prepare_decisions(self.default_allow, self.default_reason)
            compiled.append(ci)
        dkey = dest.dst_exact
        self._by_dest[dkey] = {ci.source.src_exact: ci for ci in compiled}
        self._entry_dest[(dest.partition, dest.namespace, dest.name)] = dkey
        return dkey

    @staticmethod
    def _chain(dkey: str) -> tuple[str, ...]:
        """The destination keys whose intentions apply to dkey, most specific first."""
        partition, namespace, name = dkey.split(_SEP)
        all_wild = sys.intern(_SEP.join((partition, WILDCARD, WILDCARD)))
        if namespace == WILDCARD:
            return (all_wild,)
        ns_wild = sys.intern(_SEP.join((partition, namespace, WILDCARD)))
        if name == WILDCARD:
            return (ns_wild, all_wild)
        return (dkey, ns_wild, all_wild)

    def _rebuild_view(self, dkey: str) -> None:
        merged: dict[str, CompiledIntention] = {}
        for level in reversed(self._chain(dkey)):  # least specific first; more specific overrides
            merged.update(self._by_dest.get(level) or {})
        view: dict[str, CompiledIntention | Decision] = {}
        for key, ci in merged.items():
            best = ci
            for wider in (ci.source.src_ns_any, ci.source.src_any):
                other = merged.get(wider)
                if other is not None and other.precedence > best.precedence:
                    best = other
            view[key] = best if best.permissions else best.l4_decision
        if view:
            self._views[dkey] = view  # published with one assignment: readers see old or new
        else:
            self._views.pop(dkey, None)

    def _ensure_wildcard_views(self, dkey: str) -> None:
        """A wildcard entry also needs views at its own level, for destinations with no entry."""
        for level in self._chain(dkey)[1:]:
            self._rebuild_view(level)

    def _affected_views(self, dkey: str) -> list[str]:
        partition, namespace, name = dkey.split(_SEP)
        if name != WILDCARD:
            return [dkey]
        out = [dkey]
        for other in list(self._views) + list(self._by_dest):
            p, ns, _ = other.split(_SEP)
            if p == partition and (namespace == WILDCARD or ns == namespace):
                out.append(other)
        return out

    # -- decisions ----------------------------------------------------------------------------

    def match(self, source: ServiceName, destination: ServiceName) -> CompiledIntention | None:
        """The single intention that governs this pair, by precedence; None = default applies."""
        found = self._lookup(source, destination)
        return found.intention if type(found) is Decision else found

    def _lookup(self, source: ServiceName, destination: ServiceName) -> CompiledIntention | Decision | None:
        view = self._view_for(destination)
        if view is None:
            return None
        found = view.get(source.src_exact)  # resolved views: the first key found is the answer
        if found is None:
            found = view.get(source.src_ns_any)
            if found is None:
                found = view.get(source.src_any)
        return found

    def _view_for(self, destination: ServiceName) -> dict[str, CompiledIntention | Decision] | None:
        epoch = self._epoch  # read before the views: see _changed
        cached = destination.resolved_view
        if cached is not None and cached[0] is epoch:
            return cached[1]
        views = self._views
        view = views.get(destination.dst_exact) or views.get(destination.dst_ns_any) or views.get(destination.dst_any)
        destination.resolved_view = (epoch, view)  # one assignment: readers see a whole pair
        return view

    def decide(self, source: ServiceName, destination: ServiceName, request: HTTPRequest | None = None) -> Decision:
        """With no request, an L7 intention counts as deny (Consul's /check and authorize).

        ``_lookup`` written out: this is the per-request path, and two Python calls fewer
        is a tenth of a decision."""
        epoch = self._epoch
        cached = destination.resolved_view
        view = cached[1] if cached is not None and cached[0] is epoch else self._view_for(destination)
        if view is None:
            return self._default
        ci = view.get(source.src_exact)
        if ci is None:
            ci = view.get(source.src_ns_any)
            if ci is None:
                ci = view.get(source.src_any)
                if ci is None:
                    return self._default
        if type(ci) is Decision:
            return ci
        if request is None or not ci.permissions:
            return ci.l4_decision
        for perm, decision in zip(ci.permissions, ci.permission_decisions):
            if perm.matches(request):
                return decision
        return ci.unmatched_decision

    # -- listings ---------------------------------------------------------------------------

    def for_destination(self, destination: ServiceName) -> list[CompiledIntention]:
        """Every intention that can apply to traffic into `destination`, in evaluation order."""
        out: list[CompiledIntention] = []
        for dkey in destination.dest_keys:
            sources = self._by_dest.get(dkey)
            if sources:
                out.extend(sources.values())
        out.sort(key=_evaluation_order)
        return out

    def all(self) -> list[CompiledIntention]:
        out = [ci for sources in self._by_dest.values() for ci in sources.values()]
        out.sort(key=_evaluation_order)
        return out

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_dest.values())


def _evaluation_order(ci: CompiledIntention) -> tuple[Any, ...]:
    """Consul's IntentionPrecedenceSorter: precedence high to low, then a stable name order."""
    return (-ci.precedence, ci.source.namespace, ci.source.name, ci.destination.namespace, ci.destination.name)
