"""Intentions -> Envoy RBAC, deciding exactly as :class:`IntentionEngine` does, in linear size.

Why not Consul's construction (consul-semantics.md §3.5): Consul flattens precedence into
one allow- or deny-list by AND-NOT-ing more specific sources out of wildcard rules and
every earlier permission out of every later one. Envoy then tests regex principals one
by one (a ``*/*`` rule carries one NOT-regex per more specific source), the permissions
of an L7 intention grow quadratically, and nothing says which intention decided.

The engine needs none of that. For one destination at most three intentions can apply to
a caller (partition p, namespace n, name s): ``view[p/n/s]``, ``view[p/n/*]`` and
``view[p/*/*]`` (``view``: the destination's intentions merged over its destination
wildcards, highest precedence per source key); the governing one is the highest-precedence
of the three. That is a DECISION TABLE keyed by caller identity, which matcher-based RBAC
(``matcher``: an ``xds.type.matcher.v3.Matcher`` on the client certificate's URI SAN,
``UriSanInput``) looks up instead of scanning:

``root``     exact_match_map keyed by the caller's SPIFFE ID
             ``spiffe://<td>[/ap/<p>]/ns/<n>/dc/<dc>/svc/<s>``, per known datacenter, for
             each exact source whose own intention governs it -> that decision (hash);
  on_no_match: ``W`` prefix_match_map, one key per source partition (``spiffe://<td>/ns/``
             or ``spiffe://<td>/ap/<p>/ns/``) -> ``P(p)``; on_no_match: the default policy.
    ``P(p)``   prefix_match_map, one key per namespace ``.../ns/<n>/dc/`` -> ``NS(p,n)``;
             on_no_match: the decision of ``p/*/*``, else the default.
      ``NS(p,n)`` the decision of ``p/n/*`` (or of ``p/*/*`` where that outranks it),
             preceded, where the namespace has listed exact sources, by the
             datacenter-wildcard path below.
The trust domain is pinned in every key. An exact source is not listed when a wildcard
intention outranks it, or when its verdict is the same plain allow/deny the namespace path
gives (Consul likewise drops intentions equal to the default): both decide the same.

Datacenters. Consul ignores the caller's datacenter (``/dc/[^/]+/``) and so does the
engine, but an exact_match_map cannot wildcard a middle segment. So the hash path is keyed
by every datacenter in ``datacenters`` (the federation; usually one), and callers from any
other datacenter are still decided exactly: ``NS(p,n)`` is a prefix map on the known
datacenters (``.../dc/<dc>/`` -> the namespace decision, no scan) whose on_no_match is a
short matcher_list of RE2 alternations ``spiffe://<td>/ns/<n>/dc/[^/]+/svc/(?:a|b|...)``
(one per verdict, in chunks of REGEX_CHUNK names; one per L7 source) and then the
namespace decision. An unknown datacenter costs a few automaton matches instead of a
hash lookup, never a different decision; listed names cost their length a second time,
L7 trees of exact sources are stored D+1 times. Size: O((D+1) x (#exact + #permissions)
+ #wildcards) for D known datacenters, linear in the intentions.

Fall-through. Every subtree is complete (has an on_no_match) except one: where ``p/*/*`` is
an L7 intention and a namespace needs an ``NS`` list, that list has no on_no_match, so a
miss falls back to ``P(p)``'s on_no_match (xDS: "a nested matcher that does not match and
has no on_no_match makes the enclosing match fail"; verified on Envoy 1.40), and callers of
known datacenters take that list too. Copying the L7 tree into every such namespace would
cost #namespaces x #permissions. No prefix map has
keys that are prefixes of each other (the known-datacenter keys sit in their own nested
map), so decisions never depend on prefix_match_map retrying shorter prefixes.

L7 (``http=True``): the permissions as a matcher_list in order (first match wins, Consul's
ordering); on_no_match is the DEFAULT policy, never a lower intention. Inputs:
* ``PathExact`` / ``PathPrefix``: the engine compares the path WITHOUT query or fragment,
  Envoy's ``:path`` has them. For P without ``?``/``#`` that is exactly
  ``:path`` ~ ``P(?:[?#].*)?`` (RE2 full match) and ``:path`` startswith P; a P containing
  ``?``/``#`` can never match the engine's path, so that permission is left out.
* ``PathRegex``: a regex on ``:path`` cannot ignore the query exactly (``.*`` would run
  into it), so it is the CEL matcher on Envoy's own query-free path:
  ``request.url_path.matches('^(?:R)$')``.
* ``Methods``: ``:method`` exact, or an RE2 alternation for several.
* ``Header``: ``HttpRequestHeaderMatchInput`` (repeated headers joined with ",", as the
  engine's HTTPRequest does) with Envoy's HeaderMatcher semantics: a missing header
  matches nothing except an inverted presence check, so an inverted value check is
  ``present AND NOT value``.
On a non-HTTP listener (``http=False``: network RBAC, stat_prefix connect_authz) an L7
intention denies in full.

Out of scope: peered sources (no peer trust bundles here: skipped), JWT. Assumed: callers
present well-formed service SVIDs (terminus's CA issues nothing else) and names contain
no ``/``; other IDs of the trust domain (agents, gateways) match no key and get the
default. RBAC sees ``:path`` after the HCM's normalisation; ask the engine with that path.
Action names (Envoy's effective policy id) name the deciding source: ``ns/name``,
``ns/name #i`` (permission i), ``ns/name #default``, ``default``.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Union

from cel.expr import syntax_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.matching.common_inputs.ssl.v3 import ssl_inputs_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from envoy.type.matcher.v3 import path_pb2 as envoy_path_pb2
from envoy.type.matcher.v3 import regex_pb2 as envoy_regex_pb2
from envoy.type.matcher.v3 import string_pb2 as envoy_string_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from gateway.intentions.engine import CompiledIntention, CompiledPermission, ServiceName
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import cel_pb2 as cel_matcher_pb2
from xds.type.matcher.v3 import http_inputs_pb2 as xds_http_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2, regex_pb2, string_pb2
from xds.type.v3 import cel_pb2

__all__ = [
    "NETWORK_STAT_PREFIX",
    "compile_rbac",
    "consul_rbac",
    "consul_rbac_size",
    "rbac_size_bytes",
    "spiffe_service_id",
]

NETWORK_STAT_PREFIX = "connect_authz"
WILDCARD = "*"
DEFAULT = "default"
#: Names per RE2 alternation in the datacenter-wildcard lists. Envoy 1.40 sets no RE2
#: program-size limit by default; an operator who sets ``re2.max_program_size.error_level``
#: low must keep this small enough.
REGEX_CHUNK = 32

Matcher = matcher_pb2.Matcher
OnMatch = matcher_pb2.Matcher.OnMatch
Predicate = matcher_pb2.Matcher.MatcherList.Predicate
RBACConfig = Union[http_rbac_pb2.RBAC, network_rbac_pb2.RBAC]
_Key = tuple[str, str, str]  # (partition, namespace, name) of a source


# --------------------------------------------------------------------------- identities


def spiffe_service_id(trust_domain: str, name: str, namespace: str = DEFAULT, datacenter: str = "dc1",
                      partition: str = DEFAULT) -> str:
    """Consul's service SPIFFE ID: ``/ap/<p>`` only for a non-default partition."""
    return f"spiffe://{trust_domain}{_partition_path(partition)}/ns/{namespace}/dc/{datacenter}/svc/{name}"


def _partition_path(partition: str) -> str:
    return "" if partition in ("", DEFAULT) else f"/ap/{partition}"


def _label(ci: CompiledIntention) -> str:
    """The source as it appears in action names (Envoy's enforced_effective_policy_id)."""
    s = ci.source
    prefix = "" if s.partition == DEFAULT else f"{s.partition}/"
    return f"{prefix}{s.namespace}/{s.name}"


_RE2_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def _re2_escape(text: str) -> str:
    return _RE2_META.sub(r"\\\1", text)


# --------------------------------------------------------------------------- proto helpers


def _typed(name: str, msg: Message) -> extension_pb2.TypedExtensionConfig:
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=packed)


def _action(name: str, allow: bool) -> OnMatch:
    act = rbac_pb2.Action(name=name, action=rbac_pb2.RBAC.ALLOW if allow else rbac_pb2.RBAC.DENY)
    return OnMatch(action=_typed("allow" if allow else "deny", act))


_URI_SAN = _typed("uri", ssl_inputs_pb2.UriSanInput())
_CEL_INPUT = _typed("http", xds_http_inputs_pb2.HttpAttributesCelMatchInput())


def _header_input(name: str) -> extension_pb2.TypedExtensionConfig:
    return _typed("hdr", http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=name))


def _single(inp: extension_pb2.TypedExtensionConfig, **value_match: object) -> Predicate:
    return Predicate(single_predicate=Predicate.SinglePredicate(
        input=inp, value_match=string_pb2.StringMatcher(**value_match)))  # type: ignore[arg-type]


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=pattern)


def _all_of(preds: list[Predicate]) -> Predicate:
    return preds[0] if len(preds) == 1 else Predicate(and_matcher=Predicate.PredicateList(predicate=preds))


def _not(pred: Predicate) -> Predicate:
    return Predicate(not_matcher=pred)


def _url_path_matches(pattern: str) -> Predicate:
    """CEL ``request.url_path.matches('^(?:R)$')``: a full match on the query-free path."""
    anchored = f"^(?:{pattern})$"
    E = syntax_pb2.Expr
    expr = E(id=1, call_expr=E.Call(
        target=E(id=2, select_expr=E.Select(operand=E(id=3, ident_expr=E.Ident(name="request")), field="url_path")),
        function="matches",
        args=[E(id=4, const_expr=syntax_pb2.Constant(string_value=anchored))],
    ))
    cel = cel_matcher_pb2.CelMatcher(
        expr_match=cel_pb2.CelExpression(cel_expr_parsed=syntax_pb2.ParsedExpr(expr=expr)),
        description=f"request.url_path.matches({anchored!r})",
    )
    return Predicate(single_predicate=Predicate.SinglePredicate(input=_CEL_INPUT, custom_match=_typed("cel", cel)))


# --------------------------------------------------------------------------- L7 permissions

_ALWAYS = object()  # a permission with no condition
_NEVER = object()   # a permission no request can match


def _permission_predicate(perm: CompiledPermission) -> Predicate | object:
    """The engine's CompiledPermission.matches as one predicate (conditions AND-ed).

    Uses the engine's parsed fields, so both read the Consul spec identically."""
    parts: list[Predicate] = []
    path = _header_input(":path")
    if perm.path_exact is not None:
        p = perm.path_exact
        if "?" in p or "#" in p:
            return _NEVER
        # one regex, not three string matchers: a third of the bytes, the same set of paths
        parts.append(_single(path, safe_regex=_regex(f"(?s){_re2_escape(p)}(?:[?#].*)?")))
    if perm.path_prefix is not None:
        p = perm.path_prefix
        if "?" in p or "#" in p:
            return _NEVER
        parts.append(_single(path, prefix=p))
    if perm.path_regex is not None:
        parts.append(_url_path_matches(perm.path_regex.pattern))
    if perm.methods is not None:
        method = _header_input(":method")
        methods = sorted(perm.methods)
        if len(methods) == 1:
            parts.append(_single(method, exact=methods[0]))
        else:
            parts.append(_single(method, safe_regex=_regex("|".join(_re2_escape(m) for m in methods))))
    for check in perm.headers:
        hdr = _header_input(check.name)
        present = _single(hdr, safe_regex=_regex("(?s).*"))
        if check.kind == "present":
            parts.append(_not(present) if check.invert else present)
            continue
        if check.kind == "regex":
            value = _single(hdr, safe_regex=_regex(check.regex.pattern))  # type: ignore[union-attr]
        else:
            value = _single(hdr, **{check.kind: check.value})
        # Envoy: a missing header matches nothing, inverted or not.
        parts.append(_all_of([present, _not(value)]) if check.invert else value)
    if not parts:
        return _ALWAYS
    return _all_of(parts)


# --------------------------------------------------------------------------- decisions


@dataclass
class _Decisions:
    """Builds (once) and hands out copies of each decision subtree."""

    http: bool
    default_allow: bool
    _cache: dict[int, OnMatch] = field(default_factory=dict)

    @property
    def default(self) -> OnMatch:
        return _action("default", self.default_allow)

    def is_l7(self, ci: CompiledIntention | None) -> bool:
        return ci is not None and self.http and bool(ci.permissions)

    def allows(self, ci: CompiledIntention | None) -> bool:
        """The verdict of a decision that does not look at the request (not is_l7)."""
        if ci is None:
            return self.default_allow
        return not ci.permissions and ci.action == "allow"

    def of(self, ci: CompiledIntention | None) -> OnMatch:
        if ci is None:
            return self.default
        cached = self._cache.get(id(ci))
        if cached is None:
            cached = self._cache[id(ci)] = self._build(ci)
        out = OnMatch()
        out.CopyFrom(cached)
        return out

    def _build(self, ci: CompiledIntention) -> OnMatch:
        label = _label(ci)
        if not ci.permissions:
            return _action(label, ci.action == "allow")
        if not self.http:
            return _action(f"{label} (L7 on TCP)", False)
        m = Matcher()
        fallback: OnMatch | None = None
        for i, perm in enumerate(ci.permissions):
            pred = _permission_predicate(perm)
            if pred is _NEVER:
                continue
            act = _action(f"{label} #{i}", perm.allow)
            if pred is _ALWAYS:  # later permissions are unreachable
                fallback = act
                break
            fm = m.matcher_list.matchers.add()
            fm.predicate.CopyFrom(pred)  # type: ignore[arg-type]
            fm.on_match.CopyFrom(act)
        if fallback is None:
            fallback = _action(f"{label} #default", self.default_allow)
        if not m.matcher_list.matchers:
            return fallback
        m.on_no_match.CopyFrom(fallback)
        return OnMatch(matcher=m)


def _best(a: CompiledIntention | None, b: CompiledIntention | None) -> CompiledIntention | None:
    """Engine.match's step: keep `a` unless `b` strictly outranks it."""
    if a is None:
        return b
    if b is not None and b.precedence > a.precedence:
        return b
    return a


def _view(intentions: Iterable[CompiledIntention], destination: ServiceName) -> dict[_Key, CompiledIntention]:
    """The engine's merged view for `destination`: highest precedence per source key."""
    covers = set(destination.dest_keys)
    view: dict[_Key, CompiledIntention] = {}
    for ci in intentions:
        if ci.source.peer:  # out of scope: no peer trust bundles here
            continue
        if ci.destination.dest_keys[0] not in covers:
            continue
        key = (ci.source.partition, ci.source.namespace, ci.source.name)
        cur = view.get(key)
        if cur is None or ci.precedence > cur.precedence:
            view[key] = ci
    return view


# --------------------------------------------------------------------------- compiler


def compile_rbac(
    intentions: Sequence[CompiledIntention],
    *,
    destination: ServiceName,
    default_allow: bool,
    trust_domain: str,
    http: bool,
    datacenters: Sequence[str],
) -> RBACConfig:
    """The RBAC filter config for traffic into `destination` (see the module docstring).

    `intentions`: ``engine.for_destination(destination)``. Returns an HTTP filter config
    (``http=True``) or a network filter config (stat_prefix ``connect_authz``).
    """
    dcs = sorted(set(datacenters))
    for dc in dcs:
        if not dc or "/" in dc:
            raise ValueError(f"invalid datacenter name {dc!r}")
    view = _view(intentions, destination)
    decide = _Decisions(http=http, default_allow=default_allow)
    base = f"spiffe://{trust_domain}"

    by_ns: dict[tuple[str, str], list[str]] = defaultdict(list)
    partitions: set[str] = set()
    for (p, n, s) in view:
        partitions.add(p)
        if n != WILDCARD:
            by_ns[(p, n)].append(s)

    exact_map: dict[str, OnMatch] = {}
    partition_entries: dict[str, OnMatch] = {}
    for p in sorted(partitions):
        pp = f"{base}{_partition_path(p)}/ns/"
        all_wild = view.get((p, WILDCARD, WILDCARD))
        ns_entries: dict[str, OnMatch] = {}
        for _, n in sorted(k for k in by_ns if k[0] == p):
            ns_wild = view.get((p, n, WILDCARD))
            fallback = _best(ns_wild, all_wild)
            # Exact sources whose own intention governs them and changes their verdict: an
            # exact source shadowed by a wildcard, or with the same plain verdict as the
            # namespace path, is decided identically without an entry (as Consul drops
            # intentions equal to the default).
            simple_fallback = not decide.is_l7(fallback)
            governed: list[tuple[str, CompiledIntention]] = []
            for s in sorted(x for x in by_ns[(p, n)] if x != WILDCARD):
                own = view[(p, n, s)]
                if _best(_best(own, ns_wild), all_wild) is not own:
                    continue
                if simple_fallback and not decide.is_l7(own) and decide.allows(own) == decide.allows(fallback):
                    continue
                governed.append((s, own))
            for s, own in governed:
                for dc in dcs:
                    exact_map[f"{pp}{n}/dc/{dc}/svc/{s}"] = decide.of(own)
            if not governed:
                if fallback is not None and fallback is not all_wild:
                    ns_entries[f"{pp}{n}/dc/"] = decide.of(fallback)
                continue
            # Namespace fallback: copy it unless it is an L7 p/*/* (then fall through to P(p)).
            copy_fallback = not (fallback is not None and fallback is all_wild and decide.is_l7(all_wild))
            ns_entries[f"{pp}{n}/dc/"] = _namespace_matcher(
                decide, f"{pp}{n}/dc/", n if p == DEFAULT else f"{p}/{n}", governed, fallback, copy_fallback, dcs)
        if ns_entries:
            inner = Matcher()
            for key in sorted(ns_entries):
                inner.matcher_tree.prefix_match_map.map[key].CopyFrom(ns_entries[key])
            inner.matcher_tree.input.CopyFrom(_URI_SAN)
            inner.on_no_match.CopyFrom(decide.of(all_wild))
            partition_entries[pp] = OnMatch(matcher=inner)
        elif all_wild is not None:
            partition_entries[pp] = decide.of(all_wild)

    wild = Matcher()
    if partition_entries:
        wild.matcher_tree.input.CopyFrom(_URI_SAN)
        for key in sorted(partition_entries):
            wild.matcher_tree.prefix_match_map.map[key].CopyFrom(partition_entries[key])
    wild.on_no_match.CopyFrom(decide.default)

    if exact_map:
        root = Matcher()
        root.matcher_tree.input.CopyFrom(_URI_SAN)
        for key in sorted(exact_map):
            root.matcher_tree.exact_match_map.map[key].CopyFrom(exact_map[key])
        root.on_no_match.matcher.CopyFrom(wild)
    else:
        root = wild

    if http:
        return http_rbac_pb2.RBAC(matcher=root)
    return network_rbac_pb2.RBAC(stat_prefix=NETWORK_STAT_PREFIX, matcher=root)


def _namespace_matcher(
    decide: _Decisions,
    prefix: str,
    ns_label: str,
    governed: list[tuple[str, CompiledIntention]],
    fallback: CompiledIntention | None,
    copy_fallback: bool,
    dcs: list[str],
) -> OnMatch:
    """NS(p,n): known datacenters -> the namespace decision; any other datacenter -> the
    exact sources by RE2 alternation (datacenter wildcarded), then the namespace decision."""
    allow: list[str] = []
    deny: list[str] = []
    l7: list[tuple[str, CompiledIntention]] = []
    for s, ci in governed:
        if decide.is_l7(ci):
            l7.append((s, ci))
        elif ci.permissions:  # L7 on TCP: deny
            deny.append(s)
        else:
            (allow if ci.action == "allow" else deny).append(s)
    rx_prefix = _re2_escape(prefix) + "[^/]+/svc/"
    unknown_dc = Matcher()
    for names, allowed in ((allow, True), (deny, False)):
        for i in range(0, len(names), REGEX_CHUNK):
            chunk = names[i : i + REGEX_CHUNK]
            fm = unknown_dc.matcher_list.matchers.add()
            alternation = "|".join(_re2_escape(x) for x in chunk)
            fm.predicate.CopyFrom(_single(_URI_SAN, safe_regex=_regex(f"{rx_prefix}(?:{alternation})")))
            fm.on_match.CopyFrom(_action(f"{ns_label}/<exact>", allowed))  # one action per chunk
    for s, ci in l7:
        fm = unknown_dc.matcher_list.matchers.add()
        fm.predicate.CopyFrom(_single(_URI_SAN, safe_regex=_regex(f"{rx_prefix}{_re2_escape(s)}")))
        fm.on_match.CopyFrom(decide.of(ci))
    if copy_fallback:
        unknown_dc.on_no_match.CopyFrom(decide.of(fallback))
    if not copy_fallback or not dcs:
        return OnMatch(matcher=unknown_dc)
    ns = Matcher()
    ns.matcher_tree.input.CopyFrom(_URI_SAN)
    for dc in dcs:
        ns.matcher_tree.prefix_match_map.map[f"{prefix}{dc}/"].CopyFrom(decide.of(fallback))
    ns.on_no_match.matcher.CopyFrom(unknown_dc)
    return OnMatch(matcher=ns)


def rbac_size_bytes(msg: Message) -> int:
    """Serialized size (deterministic map order): what an LDS update carries."""
    return len(msg.SerializeToString(deterministic=True))


# --------------------------------------------------------------------------- Consul reference


@dataclass
class _CIxn:
    source: ServiceName
    action: str  # "allow" | "deny" | "l7"
    permissions: list[tuple[bool, rbac_pb2.Permission]]
    not_sources: list[ServiceName] = field(default_factory=list)
    skip: bool = False


def _count_wild(s: ServiceName) -> int:
    return 2 if s.namespace == WILDCARD else 1 if s.name == WILDCARD else 0


def _consul_principal(s: ServiceName, trust_domain: str) -> rbac_pb2.Principal:
    ns = "[^/]+" if s.namespace == WILDCARD else s.namespace
    name = "[^/]+" if s.name == WILDCARD else s.name
    pattern = f"^spiffe://{trust_domain}{_partition_path(s.partition)}/ns/{ns}/dc/[^/]+/svc/{name}$"
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=envoy_string_pb2.StringMatcher(safe_regex=envoy_regex_pb2.RegexMatcher(regex=pattern))))


def _consul_permission(perm: CompiledPermission) -> rbac_pb2.Permission:
    """Consul's convertPermission (url_path, header matchers, ``:method`` regex), AND-ed."""
    http = perm.spec.get("HTTP") or {}
    parts: list[rbac_pb2.Permission] = []

    def url_path(**kw: object) -> rbac_pb2.Permission:
        return rbac_pb2.Permission(url_path=envoy_path_pb2.PathMatcher(
            path=envoy_string_pb2.StringMatcher(**kw)))  # type: ignore[arg-type]

    if http.get("PathExact"):
        parts.append(url_path(exact=http["PathExact"]))
    elif http.get("PathPrefix"):
        parts.append(url_path(prefix=http["PathPrefix"]))
    elif http.get("PathRegex"):
        parts.append(url_path(safe_regex=envoy_regex_pb2.RegexMatcher(regex=http["PathRegex"])))
    for hdr in http.get("Header") or ():
        hm = route_components_pb2.HeaderMatcher(name=hdr["Name"], invert_match=bool(hdr.get("Invert")))
        if hdr.get("Exact"):
            hm.exact_match = hdr["Exact"]
        elif hdr.get("Regex"):
            hm.safe_regex_match.regex = hdr["Regex"]
        elif hdr.get("Prefix"):
            hm.prefix_match = hdr["Prefix"]
        elif hdr.get("Suffix"):
            hm.suffix_match = hdr["Suffix"]
        elif hdr.get("Present"):
            hm.present_match = True
        else:
            continue
        parts.append(rbac_pb2.Permission(header=hm))
    if http.get("Methods"):
        hm = route_components_pb2.HeaderMatcher(name=":method")
        hm.safe_regex_match.regex = "|".join(http["Methods"])
        parts.append(rbac_pb2.Permission(header=hm))
    return _and_permissions(parts)


def _and_permissions(parts: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not parts:
        return rbac_pb2.Permission(any=True)
    if len(parts) == 1:
        return parts[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def consul_rbac(
    intentions: Sequence[CompiledIntention],
    *,
    default_allow: bool,
    trust_domain: str,
    http: bool,
) -> RBACConfig:
    """Consul's makeRBACRules (agent/xds/rbac.go), for size comparisons only.

    Policy-based rules: regex principals with AND NOT(more specific sources), one L4
    policy, one policy per L7 intention with AND NOT(earlier permissions)."""
    ordered = sorted(intentions, key=lambda ci: -ci.precedence)  # stable: keeps evaluation order
    seen: set[tuple[str, str, str, str]] = set()
    rixns: list[_CIxn] = []
    for ci in ordered:  # removeSameSourceIntentions
        if ci.source.peer:
            continue
        key = (ci.source.partition, ci.source.namespace, ci.source.name, ci.source.peer)
        if key in seen:
            continue
        seen.add(key)
        if ci.permissions and http:
            perms = [(p.allow, _consul_permission(p)) for p in ci.permissions]
            rixns.append(_CIxn(ci.source, "l7", perms))
        elif ci.permissions:
            rixns.append(_CIxn(ci.source, "deny", []))
        else:
            rixns.append(_CIxn(ci.source, "allow" if ci.action == "allow" else "deny", []))
    default_action = "allow" if default_allow else "deny"
    # removeSourcePrecedence. Consul walks all pairs (i before j); only sources in j's
    # partition and namespace can match, so index them: same output, not O(n^2) time.
    exact_in_ns: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    narrower_in_partition: dict[tuple[str, str], list[int]] = defaultdict(list)
    for idx, r in enumerate(rixns):
        wild = _count_wild(r.source)
        if wild == 0:
            exact_in_ns[(r.source.partition, r.source.peer, r.source.namespace)].append(idx)
        if wild < 2:
            narrower_in_partition[(r.source.partition, r.source.peer)].append(idx)
    for j, r in enumerate(rixns):
        if r.action == default_action:
            r.skip = True
            continue
        wild = _count_wild(r.source)
        if wild == 0:
            continue
        if wild == 1:
            candidates = exact_in_ns.get((r.source.partition, r.source.peer, r.source.namespace), [])
        else:
            candidates = narrower_in_partition.get((r.source.partition, r.source.peer), [])
        earlier = candidates[: bisect.bisect_left(candidates, j)]
        r.not_sources = [rixns[i].source for i in reversed(earlier)]  # Consul appends i = j-1 .. 0

    policies: dict[str, rbac_pb2.Policy] = {}
    l4: list[rbac_pb2.Principal] = []
    kept = [r for r in rixns if not r.skip]
    for idx, r in enumerate(kept):
        principal = _consul_flatten_principal(r, trust_domain)
        if r.action != "l7":
            l4.append(principal)
            continue
        # removePermissionPrecedence: permission j gets AND NOT every earlier permission.
        computed: list[rbac_pb2.Permission] = []
        for j, (allow, perm) in enumerate(r.permissions):
            if allow == default_allow:
                continue
            nots = [rbac_pb2.Permission(not_rule=r.permissions[k][1]) for k in range(j)]
            computed.append(_and_permissions([perm, *nots]) if nots else perm)
        if computed:
            policies[f"consul-intentions-layer7-{idx}"] = rbac_pb2.Policy(principals=[principal], permissions=computed)
    if l4:
        policies["consul-intentions-layer4"] = rbac_pb2.Policy(
            principals=l4, permissions=[rbac_pb2.Permission(any=True)])
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY if default_allow else rbac_pb2.RBAC.ALLOW)
    for name in sorted(policies):
        rules.policies[name].CopyFrom(policies[name])
    if http:
        return http_rbac_pb2.RBAC(rules=rules)
    return network_rbac_pb2.RBAC(stat_prefix=NETWORK_STAT_PREFIX, rules=rules)


def _consul_flatten_principal(r: _CIxn, trust_domain: str) -> rbac_pb2.Principal:
    nots = r.not_sources
    if len(nots) > 1:  # simplifyNotSourceSlice: drop NOTs covered by a wilder NOT (stable order)
        nots = sorted(nots, key=_count_wild)
        present = {(s.partition, s.peer, s.namespace, s.name) for s in nots}

        def covered(s: ServiceName) -> bool:
            wild = _count_wild(s)
            return (wild == 0 and (s.partition, s.peer, s.namespace, WILDCARD) in present) or (
                wild < 2 and (s.partition, s.peer, WILDCARD, WILDCARD) in present)

        nots = [s for s in nots if not covered(s)]
    principal = _consul_principal(r.source, trust_domain)
    if not nots:
        return principal
    ids = [principal] + [rbac_pb2.Principal(not_id=_consul_principal(s, trust_domain)) for s in nots]
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def consul_rbac_size(
    intentions: Sequence[CompiledIntention],
    *,
    default_allow: bool,
    trust_domain: str,
    http: bool = True,
) -> int:
    """Bytes of Consul's policy-based RBAC for the same intentions (benchmark reference)."""
    return rbac_size_bytes(consul_rbac(intentions, default_allow=default_allow, trust_domain=trust_domain, http=http))
