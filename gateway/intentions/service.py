"""The intentions API's operations, over service-intentions config entries.

Exact and legacy (UUID) writes are translated into a change of one destination's entry,
then go through the same normalize/validate/store path as `PUT /v1/config`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.acl.authorizer import permission_denied_message
from gateway.acl.resolver import Caller
from gateway.configentries.service import ConfigEntryService, entry_key
from gateway.errors import InvalidInput, NotFound, PermissionDenied
from gateway.intentions.convert import entry_to_intentions, intention_to_source, remove_source, source_key, upsert_source
from gateway.intentions.engine import Decision, IntentionEngine, ServiceName
from gateway.intentions.request import HTTPRequest
from gateway.intentions.validate import check_legacy_apply_allowed, normalize_legacy_intention, validate_legacy_intention
from gateway.store.state import State
from gateway.store.store import Txn

KIND = "service-intentions"
INTENTION_NOT_FOUND = "Intention not found"


def parse_name(value: str, what: str) -> tuple[str, str, str]:
    """`name`, `ns/name` or `partition/ns/name` -> (partition, namespace, name)."""
    parts = value.split("/")
    if not value or len(parts) > 3 or not all(parts):
        raise InvalidInput(f"{what} {value!r} is invalid: expected name, ns/name or partition/ns/name")
    if len(parts) == 1:
        return "default", "default", parts[0]
    if len(parts) == 2:
        return "default", parts[0], parts[1]
    return parts[0], parts[1], parts[2]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IntentionService:
    def __init__(self, config_entries: ConfigEntryService, engine: IntentionEngine) -> None:
        self.config_entries = config_entries
        self.state: State = config_entries.state
        self.engine = engine

    # -- authorization helpers ---------------------------------------------------------------

    @staticmethod
    def _require_write(caller: Caller, destination: str) -> None:
        if not caller.authorizer.intentions_write(destination):
            raise PermissionDenied(permission_denied_message(caller.accessor_id, "intention:write", destination))

    @staticmethod
    def _require_read(caller: Caller, destination: str) -> None:
        if not caller.authorizer.intentions_read(destination):
            raise PermissionDenied(permission_denied_message(caller.accessor_id, "intention:read", destination))

    # -- exact API ---------------------------------------------------------------------------

    def upsert_exact(self, caller: Caller, source: str, destination: str, body: dict[str, Any]) -> None:
        self.config_entries.store.write(self.upsert_exact_txn(caller, source, destination, body))

    def upsert_exact_txn(self, caller: Caller, source: str, destination: str, body: dict[str, Any]) -> Callable[[Txn], None]:
        """`upsert_exact`'s checks, now; returns the write to run (Store.write or Store.submit)."""
        sp, sns, sname = parse_name(source, "source")
        dp, dns, dname = parse_name(destination, "destination")
        self._require_write(caller, dname)
        key = entry_key(KIND, dname, dns, dp)
        ixn = {
            **body,
            "SourceName": sname, "SourceNS": sns, "SourcePartition": sp,
            "DestinationName": dname, "DestinationNS": dns, "DestinationPartition": dp,
        }
        ixn = normalize_legacy_intention(ixn)
        validate_legacy_intention(ixn, op="upsert", existing_entry=self.state.get("config", key))
        src = intention_to_source(ixn, legacy=False)
        return self.config_entries.modify_txn(key, lambda entry: upsert_source(entry, dname, dns, dp, src))

    def delete_exact(self, caller: Caller, source: str, destination: str) -> None:
        fn = self.delete_exact_txn(caller, source, destination)
        if fn is not None:
            self.config_entries.store.write(fn)

    def delete_exact_txn(self, caller: Caller, source: str, destination: str) -> Callable[[Txn], None] | None:
        """`delete_exact`'s checks, now; returns the write to run, or None when there is nothing
        to delete (no entry for the destination: no write at all)."""
        sp, sns, sname = parse_name(source, "source")
        dp, dns, dname = parse_name(destination, "destination")
        self._require_write(caller, dname)
        key = entry_key(KIND, dname, dns, dp)
        if self.state.get("config", key) is None:
            return None
        wanted = source_key({"Name": sname, "Namespace": sns, "Partition": sp})
        return self.config_entries.modify_txn(key, lambda entry: None if entry is None else remove_source(entry, wanted))

    def get_exact(self, caller: Caller, source: str, destination: str) -> dict[str, Any]:
        sp, sns, sname = parse_name(source, "source")
        dp, dns, dname = parse_name(destination, "destination")
        self._require_read(caller, dname)
        entry = self.state.get("config", entry_key(KIND, dname, dns, dp))
        if entry is not None:
            for ixn in entry_to_intentions(entry):
                if (ixn["SourceName"], ixn.get("SourceNS", "default"), ixn.get("SourcePartition", "default"), ixn.get("SourcePeer", "")) == (sname, sns, sp, ""):
                    return ixn
        raise NotFound(INTENTION_NOT_FOUND)

    # -- reads ---------------------------------------------------------------------------------

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        """Every intention the caller may read, in evaluation (precedence) order."""
        out: list[dict[str, Any]] = []
        for entry in self.state.config_entries(KIND):
            if caller.authorizer.intentions_read(entry["Name"]):
                out.extend(entry_to_intentions(entry))
        out.sort(key=lambda i: (-i["Precedence"], i.get("SourceNS", ""), i["SourceName"], i.get("DestinationNS", ""), i["DestinationName"]))
        return out

    def match(self, caller: Caller, by: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        if by not in ("source", "destination"):
            raise InvalidInput("'by' parameter must be one of 'source' or 'destination'")
        result: dict[str, list[dict[str, Any]]] = {}
        everything = self.list(caller)
        for raw in names:
            part, ns, name = parse_name(raw, "name")
            side = "Source" if by == "source" else "Destination"
            result[raw] = [
                ixn for ixn in everything
                if ixn.get(f"{side}Partition", "default") in (part, "")
                and ixn.get(f"{side}NS", "default") in (ns, "*")
                and ixn[f"{side}Name"] in (name, "*")
                and not (by == "source" and ixn.get("SourcePeer"))
            ]
        return result

    def check(self, caller: Caller, source: str, destination: str, request: HTTPRequest | None = None) -> Decision:
        """The engine's decision, with the same default policy enforcement uses."""
        sp, sns, sname = parse_name(source, "source")
        dp, dns, dname = parse_name(destination, "destination")
        if not caller.authorizer.service_read(dname):
            raise PermissionDenied(permission_denied_message(caller.accessor_id, "service:read", dname))
        return self.engine.decide(ServiceName(sname, sns, sp), ServiceName(dname, dns, dp), request)

    # -- legacy (UUID) API ---------------------------------------------------------------------

    def _find_by_id(self, ixn_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            uuid.UUID(ixn_id)
        except ValueError:
            raise InvalidInput(f"invalid intention ID: {ixn_id!r}") from None
        for entry in self.state.config_entries(KIND):
            for src in entry.get("Sources") or ():
                if src.get("LegacyID") == ixn_id:
                    return entry, src
        raise NotFound(INTENTION_NOT_FOUND)

    def get_by_id(self, caller: Caller, ixn_id: str) -> dict[str, Any]:
        entry, src = self._find_by_id(ixn_id)
        self._require_read(caller, entry["Name"])
        for ixn in entry_to_intentions(entry):
            if ixn.get("ID") == ixn_id:
                return ixn
        raise NotFound(INTENTION_NOT_FOUND)

    def create_legacy(self, caller: Caller, body: dict[str, Any]) -> str:
        ixn = normalize_legacy_intention(body)
        validate_legacy_intention(ixn, op="create")
        self._require_write(caller, ixn["DestinationName"])
        new_id = str(uuid.uuid4())
        stamp = _now()
        src = intention_to_source({**ixn, "ID": new_id, "CreatedAt": stamp, "UpdatedAt": stamp})
        dname, dns, dp = ixn["DestinationName"], ixn["DestinationNS"], ixn["DestinationPartition"]

        def change(entry: dict[str, Any] | None) -> dict[str, Any]:
            check_legacy_apply_allowed(entry)
            if entry is not None and any(source_key(s) == source_key(src) for s in entry.get("Sources") or ()):
                raise InvalidInput(
                    f"duplicate intention found: {ixn['SourceNS']}/{ixn['SourceName']} => {dns}/{dname}"
                )
            return upsert_source(entry, dname, dns, dp, src)

        self.config_entries.modify(entry_key(KIND, dname, dns, dp), change, legacy=True)
        return new_id

    def update_by_id(self, caller: Caller, ixn_id: str, body: dict[str, Any]) -> None:
        entry, old = self._find_by_id(ixn_id)
        ixn = normalize_legacy_intention({**body, "ID": ixn_id})
        validate_legacy_intention(ixn, op="update")
        if (ixn["DestinationName"], ixn["DestinationNS"]) != (entry["Name"], entry.get("Namespace", "default")):
            raise InvalidInput("Cannot modify DestinationNS or DestinationName for an intention once it exists.")
        self._require_write(caller, entry["Name"])
        src = intention_to_source({**ixn, "CreatedAt": old.get("LegacyCreateTime") or _now(), "UpdatedAt": _now()})
        key = entry_key(KIND, entry["Name"], entry.get("Namespace"), entry.get("Partition"))

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if current is None:
                raise NotFound(INTENTION_NOT_FOUND)
            check_legacy_apply_allowed(current)
            kept = {**current, "Sources": [s for s in current.get("Sources") or () if s.get("LegacyID") != ixn_id]}
            return upsert_source(kept, entry["Name"], entry.get("Namespace", "default"), entry.get("Partition", "default"), src)

        self.config_entries.modify(key, change, legacy=True)

    def delete_by_id(self, caller: Caller, ixn_id: str) -> None:
        entry, _ = self._find_by_id(ixn_id)
        self._require_write(caller, entry["Name"])
        key = entry_key(KIND, entry["Name"], entry.get("Namespace"), entry.get("Partition"))

        def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if current is None:
                return None
            check_legacy_apply_allowed(current)
            sources = [s for s in current.get("Sources") or () if s.get("LegacyID") != ixn_id]
            return {**current, "Sources": sources} if sources else None

        self.config_entries.modify(key, change, legacy=True)
