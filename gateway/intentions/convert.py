"""Conversions between service-intentions entries and Consul's flattened Intention.

Mirrors ServiceIntentionsConfigEntry.ToIntention(s), Intention.ToSourceIntention,
UpsertSourceByName / DeleteSourceByName (agent/structs/config_entry_intentions.go,
agent/structs/intention.go).

The flattened JSON follows what Consul's HTTP server actually writes, i.e. the
`structs.Intention` JSON tags and its MarshalJSON, not the Go client's
`api.Intention` (which decodes zero times as 0001-01-01T00:00:00Z client-side):
* `ID`, `Description`, `Source/DestinationPartition`, `SourcePeer`,
  `SourceSamenessGroup`, `Action`, `Permissions`, `JWT`, `Meta`, `Hash` are
  omitempty; `CreatedAt`/`UpdatedAt` are omitted when zero.
* Field order is Go's encoding order: the MarshalJSON wrapper puts CreatedAt and
  UpdatedAt first, then the struct fields, then CreateIndex/ModifyIndex.
* Partitions: CE's PartitionOrEmpty() is always "", so CE never prints them. We
  print a partition only when it is not "default" (Enterprise-only data anyway).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import struct
from datetime import datetime, timezone
from typing import Any, Mapping

from gateway.intentions.validate import DEFAULT, SERVICE_INTENTIONS, WILDCARD

SourceKey = tuple[str, str, str, str, str]

_ZERO_TIMES = {"0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"}


# ---------------------------------------------------------------------------
# JSON shaping helpers


def go_time_json(value: Any) -> str | None:
    """A time as Go's time.Time JSON (RFC3339Nano), or None when zero/absent.

    Strings are assumed to be RFC3339 already (they come from storage) and are
    passed through; datetimes are formatted (naive ones are taken as UTC).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return None if value in _ZERO_TIMES else value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        offset = value.utcoffset()
        if not offset:
            return text + "Z"
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        minutes = abs(minutes)
        return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    raise TypeError(f"unsupported time value {value!r}")


def _jwt_json(jwt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """IntentionJWTRequirement with Go's omitempty tags applied."""
    if jwt is None:
        return None
    out: dict[str, Any] = {}
    providers = []
    for provider in jwt.get("Providers") or []:
        p: dict[str, Any] = {}
        if provider.get("Name"):
            p["Name"] = provider["Name"]
        claims = []
        for claim in provider.get("VerifyClaims") or []:
            c: dict[str, Any] = {}
            if claim.get("Path"):
                c["Path"] = list(claim["Path"])
            if claim.get("Value"):
                c["Value"] = claim["Value"]
            claims.append(c)
        if claims:
            p["VerifyClaims"] = claims
        providers.append(p)
    if providers:
        out["Providers"] = providers
    return out


def permission_json(perm: Mapping[str, Any]) -> dict[str, Any]:
    """IntentionPermission as Consul encodes it (field order and omitempty)."""
    out: dict[str, Any] = {"Action": perm.get("Action") or ""}
    http = perm.get("HTTP")
    if http is not None:
        h: dict[str, Any] = {}
        for field in ("PathExact", "PathPrefix", "PathRegex"):
            if http.get(field):
                h[field] = http[field]
        headers = []
        for hdr in http.get("Header") or []:
            item: dict[str, Any] = {"Name": hdr.get("Name") or ""}
            if hdr.get("Present"):
                item["Present"] = True
            for field in ("Exact", "Prefix", "Suffix", "Regex"):
                if hdr.get(field):
                    item[field] = hdr[field]
            if hdr.get("Invert"):
                item["Invert"] = True
            headers.append(item)
        if headers:
            h["Header"] = headers
        if http.get("Methods"):
            h["Methods"] = list(http["Methods"])
        out["HTTP"] = h
    jwt = _jwt_json(perm.get("JWT"))
    if jwt is not None:
        out["JWT"] = jwt
    return out


def legacy_hash(ixn: Mapping[str, Any]) -> str:
    """Intention.SetHash(): blake2b-256 over the user fields, base64 like Go []byte JSON.

    Consul only sets it for intentions with a LegacyID (pre-1.9 replication).
    """
    h = hashlib.blake2b(digest_size=32)
    for field in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName",
                  "SourceType", "Action"):
        h.update((ixn.get(field) or "").encode("utf-8"))
    h.update(struct.pack("<Q", int(ixn.get("Precedence") or 0)))
    meta = ixn.get("Meta") or {}
    for key in sorted(meta):
        h.update(key.encode("utf-8"))
        h.update(meta[key].encode("utf-8"))
    return base64.b64encode(h.digest()).decode("ascii")


def _partition_or_empty(partition: str | None) -> str:
    return "" if not partition or partition == DEFAULT else partition


# ---------------------------------------------------------------------------
# entry -> flattened intentions


def source_to_intention(entry: Mapping[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    """ToIntention(src): one flattened intention for one source of a normalized entry."""
    legacy_id = src.get("LegacyID") or ""
    meta = src.get("LegacyMeta") if legacy_id else entry.get("Meta")

    fields: dict[str, Any] = {
        "ID": legacy_id,
        "Description": src.get("Description") or "",
        "SourceNS": src.get("Namespace") or DEFAULT,
        "SourceName": src.get("Name") or "",
        "DestinationNS": entry.get("Namespace") or DEFAULT,
        "DestinationName": entry.get("Name") or "",
        "SourcePartition": _partition_or_empty(src.get("Partition")),
        "DestinationPartition": _partition_or_empty(entry.get("Partition")),
        "SourcePeer": src.get("Peer") or "",
        "SourceSamenessGroup": src.get("SamenessGroup") or "",
        "SourceType": src.get("Type") or "",
        "Action": src.get("Action") or "",
        "Permissions": [permission_json(p) for p in src.get("Permissions") or []],
        "JWT": _jwt_json(entry.get("JWT")),
        "Meta": dict(meta or {}),
        "Precedence": int(src.get("Precedence") or 0),
    }

    out: dict[str, Any] = {}
    created = go_time_json(src.get("LegacyCreateTime"))
    updated = go_time_json(src.get("LegacyUpdateTime"))
    if created is not None:
        out["CreatedAt"] = created
    if updated is not None:
        out["UpdatedAt"] = updated
    for key, value in fields.items():
        # JWT is a pointer: any non-nil requirement is emitted, even {}.
        if key in _ALWAYS or (value is not None if key == "JWT" else value):
            out[key] = value
    if legacy_id:
        out["Hash"] = legacy_hash(fields)
    out["CreateIndex"] = int(entry.get("CreateIndex") or 0)
    out["ModifyIndex"] = int(entry.get("ModifyIndex") or 0)
    return out


_ALWAYS = frozenset({"SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourceType", "Precedence"})


def entry_to_intentions(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ToIntentions(): one flattened intention per source, in the entry's order
    (a normalized entry is already precedence-sorted)."""
    return [source_to_intention(entry, src) for src in entry.get("Sources") or []]


def intention_sort_key(ixn: Mapping[str, Any]) -> tuple[Any, ...]:
    """IntentionPrecedenceSorter: precedence desc, then the lexicographic tuple
    (SourceSamenessGroup, SourcePeer, SourcePartition, SourceNS, SourceName,
    DestinationPartition, DestinationNS, DestinationName) for determinism."""
    return (
        -int(ixn.get("Precedence") or 0),
        ixn.get("SourceSamenessGroup") or "",
        ixn.get("SourcePeer") or "",
        ixn.get("SourcePartition") or "",
        ixn.get("SourceNS") or "",
        ixn.get("SourceName") or "",
        ixn.get("DestinationPartition") or "",
        ixn.get("DestinationNS") or "",
        ixn.get("DestinationName") or "",
    )


# ---------------------------------------------------------------------------
# flattened intention -> source


def intention_to_source(ixn: Mapping[str, Any], *, legacy: bool = True) -> dict[str, Any]:
    """Intention.ToSourceIntention(legacy).

    legacy=True (ID-based API): carries ID/Meta/CreatedAt/UpdatedAt as
    LegacyID/LegacyMeta/LegacyCreateTime/LegacyUpdateTime and, like Consul, drops
    Permissions ("explicitly not symmetric with the old APIs").
    legacy=False (PUT .../exact): carries Permissions; the legacy fields are left
    out because the non-legacy normalize() would clear them anyway, and Meta has
    already been refused or discarded by validate_legacy_intention(op="upsert").
    Precedence is not copied: normalize() recomputes it.
    """
    src: dict[str, Any] = {"Name": ixn.get("SourceName") or ""}
    for src_field, ixn_field in (
        ("Namespace", "SourceNS"),
        ("Partition", "SourcePartition"),
        ("Peer", "SourcePeer"),
        ("SamenessGroup", "SourceSamenessGroup"),
        ("Action", "Action"),
        ("Type", "SourceType"),
        ("Description", "Description"),
    ):
        if ixn.get(ixn_field):
            src[src_field] = ixn[ixn_field]
    if legacy:
        if ixn.get("ID"):
            src["LegacyID"] = ixn["ID"]
        src["LegacyMeta"] = dict(ixn.get("Meta") or {})
        for src_field, ixn_field in (("LegacyCreateTime", "CreatedAt"), ("LegacyUpdateTime", "UpdatedAt")):
            if ixn.get(ixn_field) is not None:
                src[src_field] = ixn[ixn_field]
    elif ixn.get("Permissions"):
        src["Permissions"] = copy.deepcopy(list(ixn["Permissions"]))
    return src


# ---------------------------------------------------------------------------
# editing an entry's sources


def source_key(source: Mapping[str, Any], dest_ns: str = "", dest_partition: str = "") -> SourceKey:
    """(Peer, SamenessGroup, Partition, Namespace, Name) with normalize()'s defaults.

    A non-peer source with no namespace/partition inherits the destination's
    (pass dest_ns/dest_partition; a wildcard is never inherited), else "default".
    Peer and sameness-group sources have no partition.
    """
    peer = source.get("Peer") or ""
    sameness_group = source.get("SamenessGroup") or ""
    ns = source.get("Namespace") or ""
    partition = source.get("Partition") or ""
    if peer or sameness_group:
        ns = ns or DEFAULT
    else:
        if not ns and dest_ns != WILDCARD:
            ns = dest_ns
        if not partition and dest_partition != WILDCARD:
            partition = dest_partition
        ns = ns or DEFAULT
        partition = partition or DEFAULT
    return (peer, sameness_group, partition, ns, source.get("Name") or "")


def _entry_key(entry: Mapping[str, Any], source: Mapping[str, Any]) -> SourceKey:
    return source_key(source, entry.get("Namespace") or DEFAULT, entry.get("Partition") or DEFAULT)


def upsert_source(
    entry: Mapping[str, Any] | None,
    dest_name: str,
    dest_ns: str,
    dest_partition: str,
    source: Mapping[str, Any],
) -> dict[str, Any]:
    """UpsertSourceByName: a new entry where `source` replaces the source with the
    same key in place, or is appended; creates the entry when `entry` is None.

    Does not normalize or validate: run normalize + validate afterwards, exactly as
    Consul's state store does after every intention mutation.
    """
    if entry is None:
        new: dict[str, Any] = {
            "Kind": SERVICE_INTENTIONS,
            "Name": dest_name,
            "Namespace": dest_ns or DEFAULT,
            "Partition": dest_partition or DEFAULT,
            "Sources": [],
        }
    else:
        # shallow: stored entries are immutable, and normalization copies what it changes
        new = dict(entry)
        new["Sources"] = list(new.get("Sources") or [])
    incoming = copy.deepcopy(dict(source))
    key = _entry_key(new, incoming)
    name = key[-1]
    for i, existing in enumerate(new["Sources"]):
        # the name is the key's last part: comparing it first skips building most keys
        if (existing.get("Name") or "") == name and _entry_key(new, existing) == key:
            new["Sources"][i] = incoming
            break
    else:
        new["Sources"].append(incoming)
    return new


def remove_source(entry: Mapping[str, Any], key: SourceKey) -> dict[str, Any] | None:
    """DeleteSourceByName: a new entry without the source whose key is `key`.

    Returns None when no source remains (Consul then deletes the whole entry).
    When nothing matches, returns an equal copy: by-name deletes are idempotent.
    """
    new = dict(entry)  # shallow: stored entries are immutable
    sources = [s for s in new.get("Sources") or [] if _entry_key(new, s) != tuple(key)]
    if not sources:
        return None
    new["Sources"] = sources
    return new
