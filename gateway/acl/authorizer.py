"""Decide ACL permissions the way Consul's policyAuthorizer chained to a static default does.

Sources: `acl/policy_merger.go`, `acl/policy_authorizer.go`, `acl/static_authorizer.go`,
`acl/errors.go` in hashicorp/consul. Points worth knowing before changing anything here:

* Policies are merged per exact resource name (and separately per prefix) before any
  lookup: deny > write > list > read. `policy` and `intentions` of service rules are
  merged independently.
* Lookup: an exact rule beats every prefix rule; otherwise the longest matching prefix
  wins (`""` matches everything); with no match the default applies. No inheritance
  between levels: a prefix `deny` is not overridden by a shorter prefix `write`.
* An unset `intentions` becomes `read` when the service policy is read or write and
  `deny` otherwise, so `service_prefix "" { policy = "deny" }` also denies intentions
  even where default_allow would have allowed them.
* `mesh` and `peering` fall back to the `operator` rule, then to the default.
* `acl:read`/`acl:write` never follow default_allow: Consul's allow-all authorizer
  still refuses ACL management. Only `management()` (and an explicit `acl` rule) grant it.
"""

from __future__ import annotations

from typing import Iterable

from gateway.acl.rules import DENY, LIST, READ, WRITE, Rules, ServiceRule

ANONYMOUS_TOKEN_ID = "00000000-0000-0000-0000-000000000002"

# Levels double as merge ranks (Consul's takesPrecedenceOver): higher rank wins a merge.
_READ, _LIST, _WRITE, _DENY = 1, 2, 3, 4
_LEVEL = {READ: _READ, LIST: _LIST, WRITE: _WRITE, DENY: _DENY}

_ALLOW, _REFUSE, _DEFAULT = True, False, None


def _grants(level: int, required: int) -> bool:
    """Consul's enforce(): write grants all, list grants list+read, read grants read."""
    return level != _DENY and level >= required


class _Table:
    """Exact rules in a dict, prefixes probed longest-first: two dict hits per distinct length."""

    __slots__ = ("exact", "prefix", "lengths")

    def __init__(self, exact: dict[str, int], prefix: dict[str, int]) -> None:
        self.exact = exact
        self.prefix = prefix
        self.lengths = tuple(sorted({len(p) for p in prefix}, reverse=True))

    def lookup(self, name: str) -> int | None:
        level = self.exact.get(name)
        if level is not None:
            return level
        if self.prefix:
            size = len(name)
            for length in self.lengths:
                if length <= size:
                    level = self.prefix.get(name[:length])
                    if level is not None:
                        return level
        return None

    def decide(self, name: str, required: int) -> bool | None:
        level = self.lookup(name)
        return None if level is None else _grants(level, required)

    def any_allowed(self, required: int) -> bool | None:
        """Consul's anyAllowed: allowed if any rule at all grants `required`."""
        decision: bool | None = _DEFAULT
        if "" in self.prefix:
            decision = _grants(self.prefix[""], required)
            if decision:
                return _ALLOW
        for level in (*self.prefix.values(), *self.exact.values()):
            if _grants(level, required):
                return _ALLOW
        return decision

    def all_allowed(self, required: int) -> bool | None:
        """Consul's allAllowed: refused if any rule refuses; allowed only via a granting `""` prefix."""
        decision: bool | None = _DEFAULT
        if "" in self.prefix:
            decision = _grants(self.prefix[""], required)
            if not decision:
                return _REFUSE
        for level in (*self.prefix.values(), *self.exact.values()):
            if not _grants(level, required):
                return _REFUSE
        return decision


_EMPTY = _Table({}, {})


class Authorizer:
    """Immutable answer sheet for one token; build once per token and reuse per request."""

    __slots__ = ("_services", "_intentions", "_nodes", "_agents", "_keys",
                 "_acl", "_operator", "_mesh", "_peering", "_default", "_manage")

    def __init__(
        self,
        *,
        default_allow: bool,
        allow_manage: bool = False,
        services: _Table = _EMPTY,
        intentions: _Table = _EMPTY,
        nodes: _Table = _EMPTY,
        agents: _Table = _EMPTY,
        keys: _Table = _EMPTY,
        acl: int | None = None,
        operator: int | None = None,
        mesh: int | None = None,
        peering: int | None = None,
    ) -> None:
        self._services = services
        self._intentions = intentions
        self._nodes = nodes
        self._agents = agents
        self._keys = keys
        self._acl = acl
        self._operator = operator
        self._mesh = mesh
        self._peering = peering
        self._default = default_allow
        self._manage = allow_manage

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def management(cls) -> Authorizer:
        """Consul's manageAll: everything, ACL management included (also what ACLs-disabled means)."""
        return cls(default_allow=True, allow_manage=True)

    @classmethod
    def allow_all(cls) -> Authorizer:
        """Consul's allowAll (default_policy = allow): everything except acl:read/acl:write."""
        return cls(default_allow=True)

    @classmethod
    def deny_all(cls) -> Authorizer:
        return cls(default_allow=False)

    @classmethod
    def from_rules(cls, rules_list: Iterable[Rules], default_allow: bool) -> Authorizer:
        """Merge every policy of a token (token, role and identity policies alike), then compile."""
        services: dict[str, list[int]] = {}
        service_prefixes: dict[str, list[int]] = {}
        nodes: dict[str, int] = {}
        node_prefixes: dict[str, int] = {}
        agents: dict[str, int] = {}
        agent_prefixes: dict[str, int] = {}
        keys: dict[str, int] = {}
        key_prefixes: dict[str, int] = {}
        scalars = {"acl": 0, "operator": 0, "mesh": 0, "peering": 0}

        for rules in rules_list:
            _merge_services(services, rules.services)
            _merge_services(service_prefixes, rules.service_prefixes)
            for target, source in (
                (nodes, rules.nodes), (node_prefixes, rules.node_prefixes),
                (agents, rules.agents), (agent_prefixes, rules.agent_prefixes),
                (keys, rules.keys), (key_prefixes, rules.key_prefixes),
            ):
                for rule in source:
                    level = _LEVEL[rule.policy]
                    if level > target.get(rule.name, 0):
                        target[rule.name] = level
            for name in scalars:
                value = getattr(rules, name)
                if value and _LEVEL[value] > scalars[name]:
                    scalars[name] = _LEVEL[value]

        return cls(
            default_allow=default_allow,
            services=_Table(_policies(services), _policies(service_prefixes)),
            intentions=_Table(_intentions(services), _intentions(service_prefixes)),
            nodes=_Table(nodes, node_prefixes),
            agents=_Table(agents, agent_prefixes),
            keys=_Table(keys, key_prefixes),
            acl=scalars["acl"] or None,
            operator=scalars["operator"] or None,
            mesh=scalars["mesh"] or None,
            peering=scalars["peering"] or None,
        )

    # -- named resources ----------------------------------------------------------------

    def _named(self, table: _Table, name: str, required: int) -> bool:
        decision = table.decide(name, required)
        return self._default if decision is None else decision

    def service_read(self, name: str) -> bool:
        return self._named(self._services, name, _READ)

    def service_write(self, name: str) -> bool:
        return self._named(self._services, name, _WRITE)

    def intentions_read(self, name: str) -> bool:
        """`name` is the destination; `"*"` asks "may read some intention" (Consul's anyAllowed)."""
        if name == "*":
            return self._or_default(self._intentions.any_allowed(_READ))
        return self._named(self._intentions, name, _READ)

    def intentions_write(self, name: str) -> bool:
        """`name` is the destination; `"*"` needs write on every service (Consul's allAllowed)."""
        if name == "*":
            return self._or_default(self._intentions.all_allowed(_WRITE))
        return self._named(self._intentions, name, _WRITE)

    def node_read(self, name: str) -> bool:
        return self._named(self._nodes, name, _READ)

    def node_write(self, name: str) -> bool:
        return self._named(self._nodes, name, _WRITE)

    def agent_read(self, name: str) -> bool:
        return self._named(self._agents, name, _READ)

    def agent_write(self, name: str) -> bool:
        return self._named(self._agents, name, _WRITE)

    def key_read(self, key: str) -> bool:
        return self._named(self._keys, key, _READ)

    def key_list(self, key: str) -> bool:
        """`read` alone does not grant list; `list` and `write` do."""
        return self._named(self._keys, key, _LIST)

    def key_write(self, key: str) -> bool:
        return self._named(self._keys, key, _WRITE)

    # -- global resources ---------------------------------------------------------------

    def _or_default(self, decision: bool | None) -> bool:
        return self._default if decision is None else decision

    def _scalar(self, level: int | None, fallback: int | None, required: int) -> bool:
        if level is None:
            level = fallback
        if level is None:
            return self._default
        return _grants(level, required)

    def operator_read(self) -> bool:
        return self._scalar(self._operator, None, _READ)

    def operator_write(self) -> bool:
        return self._scalar(self._operator, None, _WRITE)

    def mesh_read(self) -> bool:
        return self._scalar(self._mesh, self._operator, _READ)

    def mesh_write(self) -> bool:
        return self._scalar(self._mesh, self._operator, _WRITE)

    def peering_read(self) -> bool:
        return self._scalar(self._peering, self._operator, _READ)

    def peering_write(self) -> bool:
        return self._scalar(self._peering, self._operator, _WRITE)

    def acl_read(self) -> bool:
        return self._manage if self._acl is None else _grants(self._acl, _READ)

    def acl_write(self) -> bool:
        return self._manage if self._acl is None else _grants(self._acl, _WRITE)


def _merge_services(target: dict[str, list[int]], rules: tuple[ServiceRule, ...]) -> None:
    # [policy rank, intentions rank (0 = unset)], each merged on its own like Consul.
    for rule in rules:
        policy = _LEVEL[rule.policy]
        intentions = _LEVEL[rule.intentions] if rule.intentions else 0
        current = target.get(rule.name)
        if current is None:
            target[rule.name] = [policy, intentions]
            continue
        if policy > current[0]:
            current[0] = policy
        if intentions > current[1]:
            current[1] = intentions


def _policies(merged: dict[str, list[int]]) -> dict[str, int]:
    return {name: levels[0] for name, levels in merged.items()}


def _intentions(merged: dict[str, list[int]]) -> dict[str, int]:
    # Derived after merging, as Consul's loadRules runs on the merged policy.
    return {
        name: intentions or (_READ if policy in (_READ, _WRITE) else _DENY)
        for name, (policy, intentions) in merged.items()
    }


def permission_denied_message(accessor_id: str, permission: str, resource: str | None) -> str:
    """Consul's PermissionDeniedError text, e.g. for permission "service:write" or "intention:read".

    Consul names the intentions resource `intention` (singular) in these messages.
    """
    anonymous = accessor_id == ANONYMOUS_TOKEN_ID
    who = "anonymous token" if anonymous else f"token with AccessorID '{accessor_id}'"
    message = f"Permission denied: {who} lacks permission '{permission}'"
    if resource:
        message += f' on "{resource}"'
    if anonymous:
        message += ". The anonymous token is used implicitly when a request does not specify a token."
    return message
