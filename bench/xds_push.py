"""Fan-out latency of one intention change to N connected sidecars over ADS (SotW).

    python bench/xds_push.py [--json] [--ns 100,1000[,5000]] [--rounds 5]

For each N it starts a real `terminus server` (its own temporary data dir), registers N
services `svc-i`, each with a sidecar `svc-i-sidecar-proxy` on its own port, makes them all
HTTP (proxy-defaults global protocol http, so their RBAC rides on the RDS route
`public_listener`) and writes ONE destination-wildcard intention (`web` -> `*`), which
every sidecar's RBAC then depends on. N simulated Envoys (grpc.aio, one process, a few
HTTP/2 connections) open SotW ADS streams with node.id = the sidecar's service ID and
subscribe as Envoy does: CDS and LDS by wildcard, then the RDS/SDS/EDS names the
listeners and clusters reference; every response is ACKed (version_info + nonce echoed).

Each round flips that intention allow <-> deny with `PUT /v1/connect/intentions/exact`;
t0 is when the HTTP call returns. A client's latency is the time from t0 to its ACK of the
last response in the round that carried a new version (of whatever type changed: the
script reports which). `push_p50_ms` / `push_p99_ms` are over all clients of all rounds,
`push_max_ms` is the worst, `round_all_acked_ms` is per round when the last client ACKed.
`server_mb` is the server's VmRSS once all N streams are synced. The anchor
`anchor_one_client_push_ms` is the same flip with one sidecar (median of the rounds): the
fixed cost of one push (debounce, rebuild, write, ACK) without fan-out.

The client shares the machine with the server, so its own CPU time during the rounds and
its event-loop lag are reported too (`client_cpu_share` near 1.0 would mean the client,
not the server, is the bottleneck), beside the server's CPU per round.
`first/last_tenth_by_node_id_p50_ms` compare the proxies that come first and last in
sorted node-id order (the order a rebuild pass walks them in).

Setup is not measured: streams are opened 100 at a time with at most ~300 waiting for a
first response (gRPC's server cancels calls beyond its pending-call backlog, default 1000),
and a stream the server ends before answering is reopened after a backoff, as Envoy
would (`stream_retries`). A client that never sees the new version counts at the time the
round gave up, and `clients_not_updated` says how many. Every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Servers are started (fork) while this process has gRPC channels open: no fork handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import httpx  # noqa: E402
from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2  # noqa: E402
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

from xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET  # noqa: E402
from gateway.loopback import free_port  # noqa: E402

_PREFIX = "type.googleapis.com/"
HCM = _PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
DOWNSTREAM_TLS = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
NAMED = (ENDPOINT, SECRET, ROUTE)

APP_PORT_BASE = 10000  # svc-i listens (nominally) on APP_PORT_BASE + i
SIDECAR_PORT_BASE = 30000  # and its sidecar on SIDECAR_PORT_BASE + i: explicit, so no 21000-21255 limit
SOURCE = "web"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------- the server process


def _die_with_parent() -> None:
    """In the child: SIGTERM it if this benchmark dies without cleaning up (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; stop() still kills by PID
        pass


class Server:
    """A `terminus server --dev` subprocess on free ports; stopped by PID."""

    def __init__(self, tmp: str) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_addr = f"127.0.0.1:{self.grpc_port}"
        self.log_path = Path(tmp) / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "server", "--dev", "--data-dir", str(Path(tmp) / "data"),
             "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", self.grpc_addr],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            # --dev also makes a temp dir of its own, which a SIGTERMed server leaves behind: keep it in ours
            env={**{k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}, "TMPDIR": tmp},
            preexec_fn=_die_with_parent,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/status/leader", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> dict[str, int]:
        """VmRSS / VmHWM in kB from /proc."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            self._log.close()


# ---------------------------------------------------------------------- one simulated Envoy


def _sds_names(common: tls_pb2.CommonTlsContext) -> set[str]:
    names = {c.name for c in common.tls_certificate_sds_secret_configs}
    if common.HasField("validation_context_sds_secret_config"):
        names.add(common.validation_context_sds_secret_config.name)
    if common.HasField("combined_validation_context"):
        cvc = common.combined_validation_context
        if cvc.HasField("validation_context_sds_secret_config"):
            names.add(cvc.validation_context_sds_secret_config.name)
    return names


def _socket_sds(ts: Any) -> set[str]:
    if not ts.HasField("typed_config"):
        return set()
    if ts.typed_config.type_url == DOWNSTREAM_TLS:
        ctx = tls_pb2.DownstreamTlsContext()
    elif ts.typed_config.type_url == UPSTREAM_TLS:
        ctx = tls_pb2.UpstreamTlsContext()
    else:
        return set()
    ts.typed_config.Unpack(ctx)
    return _sds_names(ctx.common_tls_context)


def referenced(resp: discovery_pb2.DiscoveryResponse) -> dict[str, set[str]]:
    """The EDS/SDS/RDS names a full-state CDS or LDS response makes Envoy ask for."""
    out: dict[str, set[str]] = {}
    if resp.type_url == CLUSTER:
        eds, sds = set(), set()
        for any_ in resp.resources:
            c = cluster_pb2.Cluster()
            any_.Unpack(c)
            if c.type == cluster_pb2.Cluster.EDS:
                eds.add(c.eds_cluster_config.service_name or c.name)
            if c.HasField("transport_socket"):
                sds |= _socket_sds(c.transport_socket)
        out = {ENDPOINT: eds, SECRET: sds}
    elif resp.type_url == LISTENER:
        rds, sds = set(), set()
        for any_ in resp.resources:
            lst = listener_pb2.Listener()
            any_.Unpack(lst)
            for chain in lst.filter_chains:
                if chain.HasField("transport_socket"):
                    sds |= _socket_sds(chain.transport_socket)
                for flt in chain.filters:
                    if flt.typed_config.type_url == HCM:
                        hcm = hcm_pb2.HttpConnectionManager()
                        flt.typed_config.Unpack(hcm)
                        if hcm.HasField("rds"):
                            rds.add(hcm.rds.route_config_name)
        out = {ROUTE: rds, SECRET: sds}
    return out


class Client:
    """One SotW ADS stream playing Envoy: wildcard CDS/LDS, named EDS/SDS/RDS, ACK everything."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node_id: str, bench: Bench) -> None:
        self.stub = stub
        self.node_id = node_id
        self.bench = bench
        self.call: Any = None
        self._reset()
        self.responses = 0
        self.retries = 0
        self.error: str | None = None
        self.done = False
        # per round
        self.base: dict[str, str] | None = None
        self.changes: list[tuple[str, str, float]] = []

    def _reset(self) -> None:
        """A new stream starts from nothing, as a reconnecting Envoy's SotW state does."""
        # SDS names come from both CDS and LDS: keep each source's share.
        self.refs: dict[str, dict[str, set[str]]] = {CLUSTER: {}, LISTENER: {}}
        self.names: dict[str, set[str]] = {t: set() for t in NAMED}
        self.nonce: dict[str, str] = {}
        self.acked: dict[str, str] = {}
        self.counts: dict[str, int] = {}  # resources in the last response per type
        self.stream_responses = 0

    def synced(self) -> bool:
        if CLUSTER not in self.acked or LISTENER not in self.acked:
            return False
        for t, names in self.names.items():
            if names and (t not in self.acked or self.counts.get(t, 0) < len(names)):
                return False
        return True

    async def _send(self, type_url: str, *, first: bool = False) -> None:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, version_info=self.acked.get(type_url, ""), response_nonce=self.nonce.get(type_url, ""),
            resource_names=sorted(self.names.get(type_url, ())),
        )
        if first:
            req.node.id = self.node_id
            req.node.cluster = self.node_id.removesuffix("-sidecar-proxy")
        await self.call.write(req)

    async def run(self, attempts: int = 4) -> None:
        """The stream; one that the server ends before its first response (e.g. gRPC's
        pending-call backlog rejecting it while the server is busy) is opened again after a
        short backoff, as Envoy would, and counted in `retries`."""
        for attempt in range(attempts):
            self._reset()
            error = await self._stream()
            if error is None or self.done:
                return
            if self.stream_responses or attempt == attempts - 1:
                self.error = error
                return
            self.retries += 1
            self.bench.retry_errors[error.split(" (")[0]] = self.bench.retry_errors.get(error.split(" (")[0], 0) + 1
            await asyncio.sleep(0.25 * (attempt + 1))

    async def _stream(self) -> str | None:
        try:
            self.call = self.stub.StreamAggregatedResources()
            await self._send(CLUSTER, first=True)
            await self._send(LISTENER)
            while True:
                resp = await self.call.read()
                if resp is grpc.aio.EOF:
                    return "stream ended"
                await self._on_response(resp)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()} ({exc.debug_error_string()}) after {self.stream_responses} responses"
        except Exception as exc:  # noqa: BLE001 - reported, never hangs the run
            return repr(exc)

    async def _on_response(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        t = resp.type_url
        self.responses += 1
        self.stream_responses += 1
        self.bench.responses += 1
        self.nonce[t] = resp.nonce
        new_refs = referenced(resp) if t in self.refs else None
        # ACK: echo version and nonce with the current subscription.
        self.acked[t] = resp.version_info
        self.counts[t] = len(resp.resources)
        await self._send(t)
        now = time.perf_counter()
        if self.base is not None and resp.version_info != self.base.get(t):
            self.changes.append((t, resp.version_info, now))
            self.bench.last_change = now
        if new_refs is not None:
            self.refs[t] = new_refs
            for nt in NAMED:
                want = set().union(*(r.get(nt, set()) for r in self.refs.values()))
                if want != self.names[nt]:
                    self.names[nt] = want
                    await self._send(nt)  # new subscription (no nonce) or a names update on the latest nonce


# ---------------------------------------------------------------------- one N


class Bench:
    def __init__(self) -> None:
        self.responses = 0
        self.last_change = 0.0
        self.retry_errors: dict[str, int] = {}


async def _loop_lag(samples: list[float], stop: asyncio.Event, period: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(period)
        samples.append(loop.time() - t - period)


async def _setup(api: httpx.AsyncClient, n: int, concurrency: int = 8) -> None:
    async def put(path: str, **kw: Any) -> None:
        r = await api.put(path, **kw)
        if r.status_code != 200:
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")

    await put("/v1/config", json={"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http"}})
    await put("/v1/connect/intentions/exact", params={"source": SOURCE, "destination": "*"}, json={"Action": "allow"})
    sem = asyncio.Semaphore(concurrency)

    async def register(i: int) -> None:
        async with sem:
            await put("/v1/agent/service/register", json={
                "Name": f"svc-{i}", "Port": APP_PORT_BASE + i, "Address": "127.0.0.1",
                "Connect": {"SidecarService": {"Port": SIDECAR_PORT_BASE + i}}})

    await asyncio.gather(*(register(i) for i in range(n)))


async def run_one(n: int, rounds: int, per_channel: int, settle: float, log: Any) -> dict[str, Any]:
    if SIDECAR_PORT_BASE + n > 65535:
        raise SystemExit(f"N={n} is too large for the port plan")
    out: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="terminus-xds-push-") as tmp:
        server = Server(tmp)
        channels: list[grpc.aio.Channel] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(server.wait_ready)
            out["server_pid"] = server.pid
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as api:
                t = time.perf_counter()
                await _setup(api, n)
                out["register_s"] = round(time.perf_counter() - t, 2)
                log(f"N={n}: registered {n} services + sidecars in {out['register_s']} s")

                # --- connect N streams over a few HTTP/2 connections
                bench = Bench()
                n_channels = max(1, math.ceil(n / per_channel))
                opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
                channels = [grpc.aio.insecure_channel(server.grpc_addr, options=opts) for _ in range(n_channels)]
                stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
                clients = [Client(stubs[i % n_channels], f"svc-{i}-sidecar-proxy", bench) for i in range(n)]
                t = time.perf_counter()
                sync_deadline = t + 60 + 0.2 * n
                for start in range(0, n, 100):  # open in batches, as proxies would trickle in
                    tasks += [asyncio.create_task(c.run()) for c in clients[start:start + 100]]
                    await asyncio.sleep(0.01)
                    # at most ~300 streams waiting for their first response: the setup is not
                    # the measurement (gRPC cancels calls beyond its pending backlog)
                    while (sum(1 for c in clients[:start + 100] if not c.responses and not c.error) > 300
                           and time.perf_counter() < sync_deadline):
                        await asyncio.sleep(0.02)
                while True:
                    bad = [c for c in clients if c.error]
                    if bad:
                        raise RuntimeError(f"{len(bad)} streams failed, e.g. {bad[0].node_id}: {bad[0].error}")
                    synced = sum(c.synced() for c in clients)
                    if synced == n:
                        break
                    if time.perf_counter() > sync_deadline:
                        raise RuntimeError(f"only {synced}/{n} streams synced in {sync_deadline - t:.0f} s")
                    await asyncio.sleep(0.05)
                # quiet: no response for `settle` seconds
                await _quiet(bench, settle, time.perf_counter() + 30)
                out["sync_s"] = round(time.perf_counter() - t, 2)
                out["channels"] = n_channels
                out["stream_retries"] = sum(c.retries for c in clients)  # streams the server ended before answering
                out["stream_retry_errors"] = dict(bench.retry_errors)
                st = server.status()
                out["server_mb"] = round(st["VmRSS"] / 1024, 1)
                out["server_peak_mb"] = round(st["VmHWM"] / 1024, 1)
                out["server_threads"] = st["Threads"]
                out["subscribed"] = {SHORT[t_]: sorted(clients[0].names[t_]) for t_ in NAMED if clients[0].names[t_]}
                log(f"N={n}: {n} streams synced on {n_channels} connections in {out['sync_s']} s; "
                    f"server RSS {out['server_mb']} MB")

                # --- rounds
                latencies: list[float] = []
                round_all: list[float] = []
                changed_types: dict[str, int] = {}
                versions: list[str] = []
                missing = 0
                round_cpu: list[float] = []
                # the order a full rebuild pass walks the nodes in (sorted ids): does latency follow it?
                by_node_id = sorted(clients, key=lambda c: c.node_id)
                by_rank: list[list[float]] = [[] for _ in clients]
                lag: list[float] = []
                stop = asyncio.Event()
                lag_task = asyncio.create_task(_loop_lag(lag, stop))
                cpu_client0, cpu_server0, wall0 = time.process_time(), server.cpu_seconds(), time.perf_counter()
                action = "allow"
                for r in range(rounds):
                    action = "deny" if action == "allow" else "allow"
                    for c in clients:
                        c.base, c.changes = dict(c.acked), []
                    cpu_round0 = server.cpu_seconds()
                    resp = await api.put("/v1/connect/intentions/exact", params={"source": SOURCE, "destination": "*"},
                                         json={"Action": action})
                    t0 = time.perf_counter()
                    if resp.status_code != 200:
                        raise RuntimeError(f"flip {r}: {resp.status_code} {resp.text}")
                    deadline = t0 + 30 + 0.02 * n
                    while sum(1 for c in clients if c.changes) < n and time.perf_counter() < deadline:
                        if any(c.error for c in clients):
                            break
                        await asyncio.sleep(0.002)
                    await _quiet(bench, settle, deadline)  # catch trailing pushes of other types
                    round_cpu.append(server.cpu_seconds() - cpu_round0)
                    per_client = []
                    timed_out_ms = (time.perf_counter() - t0) * 1000
                    for rank, c in enumerate(by_node_id):
                        for t_, _, _ in c.changes:
                            changed_types[SHORT.get(t_, t_)] = changed_types.get(SHORT.get(t_, t_), 0) + 1
                        if c.changes:
                            ms = (max(at for _, _, at in c.changes) - t0) * 1000
                        else:  # never updated: counted at the time we gave up (a lower bound)
                            ms = timed_out_ms
                            missing += 1
                        per_client.append(ms)
                        by_rank[rank].append(ms)
                    rds = [v for t_, v, _ in clients[0].changes if t_ == ROUTE]
                    versions.append(rds[-1] if rds else "")
                    latencies += per_client
                    round_all.append(max(per_client))
                    for c in clients:
                        c.base = None
                    log(f"N={n}: round {r + 1}/{rounds} ({action}): p50 {statistics.median(per_client):.0f} ms, "
                        f"last ACK {round_all[-1]:.0f} ms, {n - sum(not c.changes for c in clients)}/{n} clients updated")
                    bad = [c for c in clients if c.error]
                    if bad:
                        raise RuntimeError(f"{len(bad)} streams failed, e.g. {bad[0].node_id}: {bad[0].error}")
                    await asyncio.sleep(0.2)
                wall = time.perf_counter() - wall0
                cpu_client = time.process_time() - cpu_client0
                cpu_server = server.cpu_seconds() - cpu_server0
                stop.set()
                await lag_task

                out.update(
                    push_p50_ms=round(percentile(latencies, 50), 1),
                    push_p99_ms=round(percentile(latencies, 99), 1),
                    push_max_ms=round(max(latencies), 1),
                    round_all_acked_ms=[round(x, 1) for x in round_all],
                    clients_not_updated=missing,
                    changed_types=changed_types,
                    # content-hash versions: allow/deny/allow... must alternate between two values
                    rds_versions_alternate=all(versions) and len(set(versions[0::2])) == 1
                    and len(set(versions[1::2])) <= 1 and (len(versions) < 2 or versions[0] != versions[1]),
                    rounds_wall_s=round(wall, 2),
                    client_cpu_s=round(cpu_client, 2),
                    client_cpu_share=round(cpu_client / wall, 2),
                    server_cpu_s=round(cpu_server, 2),
                    server_cpu_share=round(cpu_server / wall, 2),
                    server_cpu_s_per_round=[round(x, 2) for x in round_cpu],
                    server_cpu_ms_per_proxy_push=round(statistics.median(round_cpu) / n * 1000, 2),
                    # median latency of the first / last tenth of the nodes in sorted-id order
                    first_tenth_by_node_id_p50_ms=_tenth(by_rank[: max(1, n // 10)]),
                    last_tenth_by_node_id_p50_ms=_tenth(by_rank[-max(1, n // 10):]),
                    client_loop_lag_max_ms=round(max(lag) * 1000, 1) if lag else None,
                    server_mb_after_rounds=round(server.status()["VmRSS"] / 1024, 1),
                )
                for c in clients:
                    c.done = True
        except BaseException:
            log(f"N={n}: failed; server log (last lines):\n{server.log_tail()}")
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ch in channels:
                await ch.close()
            server.stop()
    return out


def _tenth(rows: list[list[float]]) -> float | None:
    values = [v for row in rows for v in row]
    return round(statistics.median(values), 1) if values else None


async def _quiet(bench: Bench, settle: float, deadline: float) -> None:
    """Until no response arrived for `settle` seconds (bounded by `deadline`)."""
    seen, since = bench.responses, time.perf_counter()
    while time.perf_counter() < deadline:
        await asyncio.sleep(min(0.05, settle))
        if bench.responses != seen:
            seen, since = bench.responses, time.perf_counter()
        elif time.perf_counter() - since >= settle:
            return


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ns", default="100,1000", help="comma-separated stream counts (default 100,1000)")
    parser.add_argument("--rounds", type=int, default=5, help="intention flips per N (default 5)")
    parser.add_argument("--streams-per-channel", type=int, default=50,
                        help="ADS streams multiplexed on one HTTP/2 connection (default 50)")
    parser.add_argument("--settle", type=float, default=0.5, help="quiet seconds that end a round (default 0.5)")
    parser.add_argument("--no-anchor", action="store_true", help="skip the N=1 anchor")
    args = parser.parse_args()
    ns = [int(x) for x in args.ns.split(",") if x.strip()]
    if not ns or min(ns) < 1 or not 1 <= args.rounds <= 100:
        raise SystemExit("--ns needs positive counts and --rounds 1..100")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    async def all_runs() -> dict[str, Any]:
        results: dict[str, Any] = {}
        if not args.no_anchor:
            results["anchor"] = await run_one(1, max(args.rounds, 5), args.streams_per_channel, args.settle, log)
        for n in ns:
            results[str(n)] = await run_one(n, args.rounds, args.streams_per_channel, args.settle, log)
        return results

    def _terminated(*_: Any) -> None:
        raise KeyboardInterrupt  # unwinds through run_one's cleanup, which stops the server

    signal.signal(signal.SIGTERM, _terminated)
    runs = asyncio.run(all_runs())
    anchor = runs.pop("anchor", None)
    result: dict[str, Any] = {
        "push_p50_ms": {n: r["push_p50_ms"] for n, r in runs.items()},
        "push_p99_ms": {n: r["push_p99_ms"] for n, r in runs.items()},
        "push_max_ms": {n: r["push_max_ms"] for n, r in runs.items()},
        "server_mb": {n: r["server_mb"] for n, r in runs.items()},
        "client_cpu_share": {n: r["client_cpu_share"] for n, r in runs.items()},
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "details": dict(runs),
    }
    if anchor is not None:
        result["anchor_one_client_push_ms"] = round(statistics.median(anchor["round_all_acked_ms"]), 1)
        result["details"]["anchor_n1"] = anchor
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'N':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'server MB':>10} {'srv CPU':>8} {'cli CPU':>8}  changed")
    for n, r in runs.items():
        print(f"{n:>6} {r['push_p50_ms']:>8} {r['push_p99_ms']:>8} {r['push_max_ms']:>8} {r['server_mb']:>10} "
              f"{r['server_cpu_share']:>8} {r['client_cpu_share']:>8}  {r['changed_types']}")
    if anchor is not None:
        print(f"anchor: one client, same flip: {result['anchor_one_client_push_ms']} ms (median of {len(anchor['round_all_acked_ms'])})")


if __name__ == "__main__":
    main()
