"""From a request's secret to an Authorizer: the one place tokens are looked up.

Secrets are stored only as SHA-256 digests, so resolution hashes the presented secret and
looks the digest up in memory. The compiled Authorizer is cached per token and invalidated
by the ModifyIndex of the token and its policies, so a request does no parsing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.acl.authorizer import Authorizer
from gateway.acl.rules import parse_rules
from gateway.errors import PermissionDenied
from gateway.store.state import State

ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_POLICY_NAME = "global-management"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    accessor_id: str
    authorizer: Authorizer


def service_identity_rules(name: str) -> str:
    """What Consul grants a ServiceIdentity: write on the service and its sidecar, read on the catalog."""
    return (
        f'service "{name}" {{ policy = "write" }}\n'
        f'service "{name}-sidecar-proxy" {{ policy = "write" }}\n'
        'service_prefix "" { policy = "read" }\n'
        'node_prefix "" { policy = "read" }\n'
    )


class ACLResolver:
    def __init__(self, state: State, enabled: bool, default_policy: str) -> None:
        self.state = state
        self.enabled = enabled
        self.default_allow = default_policy == "allow"
        self._cache: dict[str, tuple[tuple[int, ...], Authorizer]] = {}
        self._open = Caller(ANONYMOUS_ACCESSOR, Authorizer.allow_all())

    def resolve(self, secret: str | None) -> Caller:
        if not self.enabled:
            return self._open
        if not secret or secret == "anonymous":
            accessor = ANONYMOUS_ACCESSOR
        else:
            found = self.state.token_by_hash.get(hash_secret(secret))
            if found is None:
                raise PermissionDenied("ACL not found")
            accessor = found
        token = self.state.get("acl_tokens", (accessor,))
        if token is None:  # anonymous token not created yet: default policy only
            return Caller(accessor, Authorizer.from_rules([], self.default_allow))
        return Caller(accessor, self._authorizer(token))

    def _authorizer(self, token: dict) -> Authorizer:
        policies = [self.state.get("acl_policies", (link["ID"],)) for link in token.get("Policies") or ()]
        policies = [p for p in policies if p is not None]
        stamp = (token["ModifyIndex"], *(p["ModifyIndex"] for p in policies))
        cached = self._cache.get(token["AccessorID"])
        if cached and cached[0] == stamp:
            return cached[1]
        if any(p["ID"] == GLOBAL_MANAGEMENT_POLICY_ID for p in policies):
            authz = Authorizer.management()
        else:
            texts = [p.get("Rules", "") for p in policies]
            texts += [service_identity_rules(i["ServiceName"]) for i in token.get("ServiceIdentities") or ()]
            authz = Authorizer.from_rules([parse_rules(t) for t in texts], self.default_allow)
        self._cache[token["AccessorID"]] = (stamp, authz)
        return authz
