"""Acceptance: a real Envoy enforcing compiled RBAC decides exactly as the intention engine.

Hundreds of random intention sets for one destination (``api``, namespace default) go into
ONE Envoy as filter chains of one mTLS listener, selected by SNI (one per set), each with
the HCM's RBAC HTTP filter and a direct_response 200 (or, for TCP sets, the network RBAC
filter in front of the HCM). Random requests from pre-issued client certificates (other
namespaces, a second known datacenter, an unknown datacenter, a partition) are compared
with ``engine.decide``: every single one must agree.

One process and keep-alive connections per (set, caller) keep this well under 90 s.
"""

from __future__ import annotations

import json
import random
import socket
import ssl
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from gateway.configentries.service import prepare
from gateway.identity import ca as terminus_ca
from gateway.intentions.engine import Decision, IntentionEngine, ServiceName
from gateway.intentions.request import HTTPRequest
from tests.support.envoy import EnvoyProcess, free_port
from xds.rbac import compile_rbac, spiffe_service_id

pytestmark = pytest.mark.slow

TD = "5e1f4c2a-7b3d-4c8e-9a6f-0123456789ab.consul"
DATACENTERS = ("dc1", "dc2")  # the federation as the compiler knows it
SEED = 20261125
HTTP_SETS = 240
TCP_SETS = 40
REQUESTS_PER_SET = 36
API = ServiceName("api")


@dataclass(frozen=True)
class Caller:
    name: str
    namespace: str = "default"
    partition: str = "default"
    dc: str = "dc1"

    @property
    def service(self) -> ServiceName:
        return ServiceName(self.name, self.namespace, self.partition)

    @property
    def uri(self) -> str:
        return spiffe_service_id(TD, self.name, self.namespace, self.dc, self.partition)

    def __str__(self) -> str:
        part = "" if self.partition == "default" else f"{self.partition}/"
        return f"{part}{self.namespace}/{self.name}@{self.dc}"


CALLERS = (
    Caller("web"),
    Caller("db"),
    Caller("cache", dc="dc2"),          # the other known datacenter
    Caller("web", dc="dc9"),            # a datacenter the compiler was not told about
    Caller("web", "ns1"),
    Caller("billing", "ns1"),
    Caller("web", "ns2"),
    Caller("web", partition="p1"),      # same name and namespace, other partition
    Caller("db", "ns1", partition="p1", dc="dc7"),
)

# ----------------------------------------------------------------------------- generators

NAMES = ("web", "db", "cache", "billing")
NAMESPACES = ("default", "ns1", "ns2")
PARTITIONS = ("default", "default", "default", "p1")
PATH_EXACT = ("/", "/api", "/api/v1", "/admin", "/api/v1/users")
PATH_PREFIX = ("/api", "/admin", "/api/v1", "/v1", "/a")
PATH_REGEX = ("/api/.*", "/admin(/.*)?", ".*secret.*", "/api/v[0-9]+/.*", "/[a-z]+", ".*=.*", ".*1")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
HEADER_NAMES = ("x-a", "x-b")
HEADER_VALUES = ("1", "2", "abc", "abx", "xbc", "1,2", "")
PATHS = ("/", "/api", "/api/v1", "/api/v1/users", "/api/v2/x", "/apix", "/admin", "/admin/secret",
         "/v1/admin", "/a", "/b1")
QUERIES = ("", "", "", "?x=1", "?path=/admin", "?", "?a=/api/v1", "?secret=1")


def random_source(rng: random.Random) -> dict[str, Any]:
    partition = rng.choice(PARTITIONS)
    kind = rng.random()
    if kind < 0.55:
        return {"Name": rng.choice(NAMES), "Namespace": rng.choice(NAMESPACES), "Partition": partition}
    if kind < 0.85:
        return {"Name": "*", "Namespace": rng.choice(NAMESPACES), "Partition": partition}
    return {"Name": "*", "Namespace": "*", "Partition": partition}


def random_header(rng: random.Random) -> dict[str, Any]:
    hdr: dict[str, Any] = {"Name": rng.choice(HEADER_NAMES)}
    kind = rng.choice(("Exact", "Prefix", "Suffix", "Regex", "Present"))
    hdr[kind] = {
        "Exact": lambda: rng.choice(("1", "2", "abc", "1,2")),
        "Prefix": lambda: rng.choice(("ab", "1", "x")),
        "Suffix": lambda: rng.choice(("bc", "2", "x")),
        "Regex": lambda: rng.choice(("[0-9]+", "a.*", "1,2", ".*")),
        "Present": lambda: True,
    }[kind]()
    if rng.random() < 0.4:
        hdr["Invert"] = True
    return hdr


def random_permission(rng: random.Random) -> dict[str, Any]:
    http: dict[str, Any] = {}
    while not http:
        path_kind = rng.choice(("PathExact", "PathPrefix", "PathRegex", None, None))
        if path_kind:
            http[path_kind] = rng.choice({"PathExact": PATH_EXACT, "PathPrefix": PATH_PREFIX,
                                          "PathRegex": PATH_REGEX}[path_kind])
        if rng.random() < 0.4:
            http["Methods"] = rng.sample(METHODS, rng.randint(1, 3))
        if rng.random() < 0.4:
            headers = [random_header(rng) for _ in range(rng.randint(1, 2))]
            http["Header"] = headers
    return {"Action": rng.choice(("allow", "deny")), "HTTP": http}


def random_entries(rng: random.Random) -> list[dict[str, Any]]:
    """Entries for api, default/* and */* (and sometimes an unrelated destination)."""
    entries = []
    dests = [("api", "default"), ("*", "default"), ("*", "*"), ("db", "default")]
    for name, ns in dests:
        if rng.random() < (0.9 if name == "api" else 0.45):
            sources: dict[tuple[str, str, str], dict[str, Any]] = {}
            for _ in range(rng.randint(1, 7)):
                src = random_source(rng)
                key = (src["Partition"], src["Namespace"], src["Name"])
                if key in sources:
                    continue
                if name != "*" and rng.random() < 0.35:
                    src["Permissions"] = [random_permission(rng) for _ in range(rng.randint(1, 4))]
                else:
                    src["Action"] = rng.choice(("allow", "deny"))
                sources[key] = src
            entries.append(prepare({"Kind": "service-intentions", "Name": name, "Namespace": ns,
                                    "Sources": list(sources.values())}))
    return entries


def random_request(rng: random.Random) -> tuple[str, str, list[tuple[str, str]]]:
    path = rng.choice(PATHS) + rng.choice(QUERIES)
    pairs: list[tuple[str, str]] = []
    for name in HEADER_NAMES:
        for _ in range(rng.choice((0, 0, 1, 1, 2))):  # 2 = a repeated header, joined with ","
            pairs.append((name, rng.choice(HEADER_VALUES)))
    rng.shuffle(pairs)
    return rng.choice(METHODS), path, pairs


@dataclass
class Case:
    index: int
    http: bool
    default_allow: bool
    entries: list[dict[str, Any]]
    engine: IntentionEngine
    rbac: dict[str, Any]

    @property
    def sni(self) -> str:
        return f"set-{self.index}.rbac.test"

    def describe(self) -> str:
        mode = "HTTP" if self.http else "TCP"
        default = "allow" if self.default_allow else "deny"
        sources = [
            {"dest": f"{e['Namespace']}/{e['Name']}", **{k: s[k] for k in ("Partition", "Namespace", "Name", "Action",
                                                                            "Permissions", "Precedence") if k in s}}
            for e in self.entries for s in e["Sources"]
        ]
        return f"set {self.index} ({mode}, default {default}); intentions:\n" + "\n".join(
            "    " + json.dumps(s, sort_keys=True) for s in sources)


def make_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases = []
    for i in range(HTTP_SETS + TCP_SETS):
        http = i < HTTP_SETS
        default_allow = rng.random() < 0.5
        entries = random_entries(rng)
        engine = IntentionEngine(default_allow=default_allow)
        engine.load(entries)
        msg = compile_rbac(engine.for_destination(API), destination=API, default_allow=default_allow,
                           trust_domain=TD, http=http, datacenters=DATACENTERS)
        rbac = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        kind = "http" if http else "network"
        rbac["@type"] = f"type.googleapis.com/envoy.extensions.filters.{kind}.rbac.v3.RBAC"
        cases.append(Case(i, http, default_allow, entries, engine, rbac))
    return cases


# ----------------------------------------------------------------------------- Envoy


@dataclass
class PKI:
    root_pem: str
    server: tuple[str, str]
    contexts: dict[Caller, ssl.SSLContext]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp: Path = tmp_path_factory.mktemp("rbac-pki")
    root, root_key = terminus_ca.generate_root(TD)
    server = terminus_ca.generate_leaf(root, root_key, spiffe_service_id(TD, "api"))
    contexts = {}
    for i, caller in enumerate(CALLERS):
        cert, key = terminus_ca.generate_leaf(root, root_key, caller.uri)
        (tmp / f"{i}.pem").write_text(cert)
        (tmp / f"{i}.key").write_text(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the server is not under test; the client cert is
        ctx.load_cert_chain(tmp / f"{i}.pem", tmp / f"{i}.key")
        contexts[caller] = ctx
    return PKI(root.root_cert_pem, server, contexts)


def _filter_chain(case: Case, pki: PKI) -> dict[str, Any]:
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"inline_string": pki.server[0]},
                                  "private_key": {"inline_string": pki.server[1]}}],
            "validation_context": {"custom_validator_config": {
                "name": "envoy.tls.cert_validator.spiffe",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                    "trust_domains": [{"name": TD, "trust_bundle": {"inline_string": pki.root_pem}}],
                },
            }},
        },
    }
    http_filters = [{"name": "envoy.filters.http.router",
                     "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    if case.http:
        http_filters.insert(0, {"name": "envoy.filters.http.rbac", "typed_config": case.rbac})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"set{case.index}",
        "route_config": {"virtual_hosts": [{"name": "api", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        "http_filters": http_filters,
    }
    filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    if not case.http:
        filters.insert(0, {"name": "envoy.filters.network.rbac", "typed_config": case.rbac})
    return {
        "name": case.sni,
        "filter_chain_match": {"server_names": [case.sni]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "filters": filters,
    }


def envoy_config(cases: list[Case], pki: PKI, port: int) -> dict[str, Any]:
    return {"static_resources": {"listeners": [{
        "name": "rbac-differential",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [_filter_chain(c, pki) for c in cases],
    }]}}


# ----------------------------------------------------------------------------- client


class Connection:
    """HTTP/1.1 keep-alive over one mTLS connection (the caller identity is per connection)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, sni: str) -> None:
        self.port, self.ctx, self.sni = port, ctx, sni
        self.sock: ssl.SSLSocket | None = None
        self.buf = b""

    def _open(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=self.sni)
        self.buf = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        return chunk

    def request(self, method: str, path: str, pairs: list[tuple[str, str]]) -> int | str:
        """The status code, or a string describing how the connection failed."""
        head = [f"{method} {path} HTTP/1.1", "host: api"] + [f"{k}: {v}" for k, v in pairs]
        data = ("\r\n".join(head) + "\r\n\r\n").encode()
        for attempt in (0, 1):  # a kept-alive connection may have been closed by Envoy
            fresh = self.sock is None
            try:
                sock = self.sock or self._open()
                sock.sendall(data)
                return self._read_response(method)
            except (OSError, ConnectionError, ssl.SSLError) as exc:
                self.close()
                if fresh or attempt:
                    return f"{type(exc).__name__}: {exc}"
        raise AssertionError("unreachable")

    def _read_response(self, method: str) -> int:
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:] if ":" in h)}
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self.buf += self._recv()
        self.buf = self.buf[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status


@dataclass
class Probe:
    case: Case
    caller: Caller
    method: str
    path: str
    pairs: list[tuple[str, str]]


def run_probes(port: int, pki: PKI, case: Case, probes: list[Probe]) -> list[tuple[Probe, int | str]]:
    by_caller: dict[Caller, list[Probe]] = defaultdict(list)
    for p in probes:
        by_caller[p.caller].append(p)
    out = []
    for caller, group in by_caller.items():
        conn = Connection(port, pki.contexts[caller], case.sni)
        try:
            if not case.http:  # network RBAC decides per connection: one request each
                out.append((group[0], conn.request("GET", "/", [])))
                continue
            for p in group:
                out.append((p, conn.request(p.method, p.path, p.pairs)))
        finally:
            conn.close()
    return out


def decide(probe: Probe) -> Decision:
    if not probe.case.http:
        return probe.case.engine.decide(probe.caller.service, API)  # L7 counts as deny
    return probe.case.engine.decide(probe.caller.service, API, HTTPRequest.from_pairs(probe.method, probe.path, probe.pairs))


def coverage_kind(probe: Probe, d: Decision) -> str:
    """Which part of the compiled tree must have decided (to show every part is exercised)."""
    ci = d.intention
    if ci is None:
        return "default policy"
    exact = ci.source.name != "*"
    where = "exact source" if exact else "wildcard source"
    if exact and probe.caller.dc not in DATACENTERS:
        where = "exact source, unknown datacenter"
    if not ci.permissions:
        return f"L4 {where}"
    if not probe.case.http:
        return "L7 on TCP"
    return f"L7 {where}, " + ("permission" if d.permission_index is not None else "no permission matched")


def verdict(result: int | str, http: bool) -> bool | None:
    """True = allowed, False = denied (403 or, for TCP, a closed connection), None = broken."""
    if result == 200:
        return True
    if http:
        return False if result == 403 else None
    return False if isinstance(result, str) else None


# ----------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return make_cases()


@pytest.fixture(scope="module")
def envoy(cases: list[Case], pki: PKI) -> Iterator[tuple[EnvoyProcess, int]]:
    port = free_port()
    with EnvoyProcess(envoy_config(cases, pki, port), concurrency=2) as proc:
        proc.wait_ready(timeout=60)
        yield proc, port
    assert not proc.running()


def test_envoy_decides_exactly_as_the_engine(cases: list[Case], envoy: tuple[EnvoyProcess, int], pki: PKI) -> None:
    proc, port = envoy
    rng = random.Random(SEED + 1)
    plan: list[tuple[Case, list[Probe]]] = []
    for case in cases:
        probes = []
        for _ in range(REQUESTS_PER_SET if case.http else len(CALLERS)):
            method, path, pairs = random_request(rng)
            probes.append(Probe(case, rng.choice(CALLERS), method, path, pairs))
        if not case.http:  # every caller once
            probes = [Probe(case, c, "GET", "/", []) for c in CALLERS]
        plan.append((case, probes))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for batch in pool.map(lambda cp: run_probes(port, pki, *cp), plan) for r in batch]
    elapsed = time.monotonic() - started

    failures = []
    allowed = denied = 0
    kinds: Counter[str] = Counter()
    for probe, result in results:
        d = decide(probe)
        want, reason = d.allowed, d.reason
        kinds[coverage_kind(probe, d)] += 1
        got = verdict(result, probe.case.http)
        allowed += want
        denied += not want
        if got is not want:
            failures.append((probe, result, want, reason))
    print(f"\n{len(results)} requests over {len(cases)} intention sets in {elapsed:.1f}s: "
          f"{allowed} allowed, {denied} denied, {len(failures)} disagreements")
    print("\n".join(f"  {n:>5}  {k}" for k, n in sorted(kinds.items())))
    assert allowed > len(results) // 5 and denied > len(results) // 5, "the generator should exercise both outcomes"
    for kind in ("default policy", "L4 exact source", "L4 wildcard source", "L4 exact source, unknown datacenter",
                 "L7 exact source, permission", "L7 exact source, no permission matched",
                 "L7 wildcard source, permission", "L7 wildcard source, no permission matched",
                 "L7 exact source, unknown datacenter, permission", "L7 on TCP"):
        assert kinds[kind] >= 10, f"too few probes for {kind!r}: {kinds}"
    if failures:
        lines = []
        for probe, result, want, reason in failures[:8]:
            lines.append(
                f"\n{probe.case.describe()}\n  caller {probe.caller} ({probe.caller.uri})\n"
                f"  request {probe.method} {probe.path} headers={probe.pairs}\n"
                f"  engine: {'ALLOW' if want else 'DENY'} ({reason})\n  envoy:  {result}"
            )
        pytest.fail(f"{len(failures)} of {len(results)} requests disagree:" + "".join(lines))
