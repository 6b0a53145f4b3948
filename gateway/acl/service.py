"""ACL bootstrap, tokens and policies (`/v1/acl/...`).

Departure from Consul, on purpose: secrets are stored only as SHA-256 digests, so a
token's SecretID is returned once, when it is created, and never again.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from gateway.acl.authorizer import permission_denied_message
from gateway.acl.resolver import (
    ANONYMOUS_ACCESSOR, GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, ACLResolver, Caller, hash_secret,
)
from gateway.acl.rules import parse_rules
from gateway.errors import InvalidInput, NotFound, PermissionDenied, TerminusError
from gateway.store.store import Store, Txn

POLICY_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
BOOTSTRAP_KEY = "acl_bootstrap"


class ACLDisabled(TerminusError):
    status_code = 401


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ACLService:
    def __init__(self, store: Store, resolver: ACLResolver) -> None:
        self.store = store
        self.state = store.state
        self.resolver = resolver

    def _require(self, caller: Caller, write: bool) -> None:
        if not self.resolver.enabled:
            raise ACLDisabled("ACL support disabled")
        ok = caller.authorizer.acl_write() if write else caller.authorizer.acl_read()
        if not ok:
            raise PermissionDenied(permission_denied_message(caller.accessor_id, "acl:write" if write else "acl:read", None))

    # -- start-up and bootstrap -----------------------------------------------------------------

    def ensure_builtins(self, initial_management: str | None) -> None:
        """The global-management policy and anonymous token exist whenever ACLs are on."""

        def write(txn: Txn) -> None:
            if txn.get("acl_policies", (GLOBAL_MANAGEMENT_POLICY_ID,)) is None:
                txn.put("acl_policies", (GLOBAL_MANAGEMENT_POLICY_ID,), {
                    "ID": GLOBAL_MANAGEMENT_POLICY_ID, "Name": GLOBAL_MANAGEMENT_POLICY_NAME,
                    "Description": "Builtin Policy that grants unlimited access", "Rules": "", "Datacenters": [],
                })
            if txn.get("acl_tokens", (ANONYMOUS_ACCESSOR,)) is None:
                txn.put("acl_tokens", (ANONYMOUS_ACCESSOR,), self._token_body(
                    ANONYMOUS_ACCESSOR, "anonymous", "Anonymous Token", [], []))
            if initial_management and hash_secret(initial_management) not in self.state.token_by_hash:
                accessor = str(uuid.uuid4())
                txn.put("acl_tokens", (accessor,), self._token_body(
                    accessor, initial_management, "Initial Management Token",
                    [{"ID": GLOBAL_MANAGEMENT_POLICY_ID, "Name": GLOBAL_MANAGEMENT_POLICY_NAME}], []))

        self.store.write(write)

    def bootstrap(self) -> dict[str, Any]:
        if not self.resolver.enabled:
            raise ACLDisabled("ACL support disabled")
        accessor, secret = str(uuid.uuid4()), str(uuid.uuid4())

        def write(txn: Txn) -> dict[str, Any]:
            done = txn.state.system(BOOTSTRAP_KEY)
            if done is not None:
                raise PermissionDenied(
                    f"Permission denied: ACL bootstrap no longer allowed (reset index: {done['ResetIndex']})")
            txn.put_system(BOOTSTRAP_KEY, {"ResetIndex": txn.index})
            return txn.put("acl_tokens", (accessor,), self._token_body(
                accessor, secret, "Bootstrap Token (Global Management)",
                [{"ID": GLOBAL_MANAGEMENT_POLICY_ID, "Name": GLOBAL_MANAGEMENT_POLICY_NAME}], []))

        return {**public_token(self.store.write(write)), "SecretID": secret}

    # -- tokens ----------------------------------------------------------------------------------

    def _token_body(self, accessor: str, secret: str, description: str, policies: list[dict[str, str]],
                    service_identities: list[dict[str, Any]], local: bool = False) -> dict[str, Any]:
        return {
            "AccessorID": accessor, "Description": description, "Policies": policies,
            "ServiceIdentities": service_identities, "Local": local, "CreateTime": _now(),
            "_SecretHash": hash_secret(secret),
        }

    def _policy_links(self, links: list[dict[str, Any]] | None) -> list[dict[str, str]]:
        out = []
        for link in links or ():
            pid = link.get("ID") or self.state.policy_by_name.get(link.get("Name", ""))
            policy = self.state.get("acl_policies", (pid,)) if pid else None
            if policy is None:
                raise InvalidInput(f"cannot find policy {link.get('ID') or link.get('Name')!r}")
            out.append({"ID": policy["ID"], "Name": policy["Name"]})
        return out

    def create_token(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        self._require(caller, write=True)
        accessor = body.get("AccessorID") or str(uuid.uuid4())
        secret = body.get("SecretID") or str(uuid.uuid4())
        for value, what in ((accessor, "AccessorID"), (secret, "SecretID")):
            try:
                uuid.UUID(value)
            except ValueError:
                raise InvalidInput(f"Invalid Token: {what} is not a valid UUID") from None
        if hash_secret(secret) in self.state.token_by_hash or self.state.get("acl_tokens", (accessor,)):
            raise InvalidInput("Invalid Token: AccessorID or SecretID is already in use")
        identities = self._service_identities(body.get("ServiceIdentities"))
        token = self._token_body(accessor, secret, body.get("Description", ""), self._policy_links(body.get("Policies")),
                                 identities, bool(body.get("Local")))
        stored = self.store.write(lambda txn: txn.put("acl_tokens", (accessor,), token))
        return {**public_token(stored), "SecretID": secret}

    @staticmethod
    def _service_identities(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        out = []
        for item in items or ():
            name = item.get("ServiceName", "")
            if not re.fullmatch(r"[a-z0-9]([a-z0-9\-_]*[a-z0-9])?", name):
                raise InvalidInput(f"Service identity {name!r} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed")
            out.append({"ServiceName": name, **({"Datacenters": item["Datacenters"]} if item.get("Datacenters") else {})})
        return out

    def update_token(self, caller: Caller, accessor: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require(caller, write=True)
        current = self.state.get("acl_tokens", (accessor,))
        if current is None:
            raise NotFound("Cannot find token to update")
        updated = {
            **current,
            "Description": body.get("Description", current.get("Description", "")),
            "Policies": self._policy_links(body.get("Policies")) if "Policies" in body else current["Policies"],
            "ServiceIdentities": self._service_identities(body.get("ServiceIdentities"))
            if "ServiceIdentities" in body else current.get("ServiceIdentities", []),
        }
        return public_token(self.store.write(lambda txn: txn.put("acl_tokens", (accessor,), updated)))

    def read_token(self, caller: Caller, accessor: str) -> dict[str, Any]:
        self._require(caller, write=False)
        token = self.state.get("acl_tokens", (accessor,))
        if token is None:
            raise NotFound("ACL not found")
        return public_token(token)

    def self_token(self, caller: Caller) -> dict[str, Any]:
        if not self.resolver.enabled:
            raise ACLDisabled("ACL support disabled")
        return public_token(self.state.get("acl_tokens", (caller.accessor_id,)) or {"AccessorID": caller.accessor_id})

    def list_tokens(self, caller: Caller) -> list[dict[str, Any]]:
        self._require(caller, write=False)
        return [public_token(t) for _, t in sorted(self.state.tables["acl_tokens"].items())]

    def delete_token(self, caller: Caller, accessor: str) -> None:
        self._require(caller, write=True)
        if accessor == ANONYMOUS_ACCESSOR:
            raise InvalidInput("Delete operation not permitted on the anonymous token")
        self.store.write(lambda txn: txn.delete("acl_tokens", (accessor,)))

    # -- policies ------------------------------------------------------------------------------

    def _policy_body(self, body: dict[str, Any], policy_id: str) -> dict[str, Any]:
        name = body.get("Name", "")
        if not POLICY_NAME.match(name):
            raise InvalidInput(f"Invalid Policy: invalid Name {name!r}")
        parse_rules(body.get("Rules", ""))  # reject what does not parse, before storing
        other = self.state.policy_by_name.get(name)
        if other is not None and other != policy_id:
            raise InvalidInput(f"Invalid Policy: A Policy with Name {name!r} already exists")
        return {"ID": policy_id, "Name": name, "Description": body.get("Description", ""),
                "Rules": body.get("Rules", ""), "Datacenters": body.get("Datacenters") or []}

    def create_policy(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        self._require(caller, write=True)
        policy = self._policy_body(body, str(uuid.uuid4()))
        return self.store.write(lambda txn: txn.put("acl_policies", (policy["ID"],), policy))

    def update_policy(self, caller: Caller, policy_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require(caller, write=True)
        if self.state.get("acl_policies", (policy_id,)) is None:
            raise NotFound("Cannot find policy to update")
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise InvalidInput("Changing the Rules for the builtin global-management policy is not permitted")
        policy = self._policy_body(body, policy_id)
        return self.store.write(lambda txn: txn.put("acl_policies", (policy_id,), policy))

    def read_policy(self, caller: Caller, policy_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        self._require(caller, write=False)
        pid = policy_id or self.state.policy_by_name.get(name or "")
        policy = self.state.get("acl_policies", (pid,)) if pid else None
        if policy is None:
            raise NotFound("ACL not found")
        return policy

    def list_policies(self, caller: Caller) -> list[dict[str, Any]]:
        self._require(caller, write=False)
        return [p for _, p in sorted(self.state.tables["acl_policies"].items())]

    def delete_policy(self, caller: Caller, policy_id: str) -> None:
        self._require(caller, write=True)
        if policy_id == GLOBAL_MANAGEMENT_POLICY_ID:
            raise InvalidInput("Delete operation not permitted on the builtin global-management policy")
        self.store.write(lambda txn: txn.delete("acl_policies", (policy_id,)))


def public_token(token: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in token.items() if not k.startswith("_")}
