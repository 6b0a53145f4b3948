"""Data-plane throughput, CPU per request and added latency: native gateway vs Envoy, one run.

    python bench/dataplane.py [--json] [--duration 10] [--connections 32] [--keep]

Needs ``wrk`` on PATH (``apt-get install -y wrk``) and Envoy (as ``terminus demo`` does).

The stack is ``terminus demo``'s (``gateway.demo.stack``) with a different catalog:

* one local Lambda serving the demo echo function (``gateway.demo.function``), SigV4 checked;
* two Lambda services, ``fn-envoy`` and ``fn-native``, whose service-defaults Meta carry the
  *same* ARN, so both end in the same function. ``fn-envoy`` is linked only to the Envoy
  terminating gateway ``lambda-gateway`` (run with ``--concurrency 2``), ``fn-native`` only to
  the native gateway ``native-gateway``, run with one worker process per core
  (``terminus gateway --workers <os.cpu_count()>``, SO_REUSEPORT; ``--native-workers`` overrides;
  reported as ``native_processes``), with ``--no-access-log`` unless ``--native-access-log`` is
  given: the Envoy config terminus writes has no access log, so both sides log nothing per
  request (reported as ``native_access_log``);
* ``bench/floor_gateway.py``, one process on its own port, deciding for ``fn-native`` and
  presenting its leaf (an anchor for the latency loop only);
* a client service ``bench`` whose Envoy sidecar has two upstreams: ``fn-envoy`` on port A and
  ``fn-native`` on port B. The sidecar originates mTLS to exactly one gateway per port.

Keys:

* ``rps`` - ``wrk -t2 -c<connections> -d<duration>s`` (GET /) through the sidecar to each
  gateway in turn (after a 2 s warm-up), requests per second as wrk reports them.
* ``cpu_us_per_req`` - utime+stime of the gateway (all its threads; for the native gateway its
  supervisor and every worker process) over the wrk run, from ``/proc/<pid>/stat``, divided by
  the requests wrk completed.
* ``added_p50_ms`` / ``added_p99_ms`` - at 100 req/s (a paced, single-connection keep-alive
  loop), latency of a GET sent straight to the native gateway over mTLS (the ``bench``
  leaf, SNI of ``fn-native``; no sidecar) minus the latency of a SigV4-signed Invoke sent
  straight to the local Lambda with the payload the gateway would send. The two streams are
  interleaved (5 ms apart) so they see the same machine state; the percentiles of each stream
  are subtracted (p50 - p50, p99 - p99). Signing of the direct request happens before its
  timer starts; the gateway's own signing is inside its latency, as it should be.
* ``anchors`` - the straight-to-Lambda p50/p99 of that loop; ``envoy_added_p50_ms`` /
  ``envoy_added_p99_ms``, the same loop run next through the Envoy terminating gateway (SNI
  of ``fn-envoy``), against its own direct stream: what the reference data plane adds on
  this machine; ``floor_added_p50_ms`` / ``floor_added_p99_ms``, the same loop run last
  through ``bench/floor_gateway.py`` (the least gateway: mTLS, the engine's decision, the
  JSON envelope, SigV4 and the function result with the gateway's own code, nothing else;
  checked to answer the same body as the native gateway), against its own direct stream:
  what any Python gateway adds here, so the native gateway's figure minus this one is what
  its own structure costs; and ``wrk`` against the local Lambda alone (one replayed signed
  Invoke), which bounds what any gateway can reach.
* ``cpus`` - the machine's CPU count: wrk, both Envoys, the gateway and the Python Lambda
  all share those cores, so throughput here is a comparison, not a capacity figure.

Every process started is stopped by PID at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402

from gateway.awslambda.sigv4 import Credentials, Signer  # noqa: E402
from gateway.cli.client import CLIError  # noqa: E402
from gateway.dataplane.transform import jsonize_request  # noqa: E402
from gateway.demo import stack as demo  # noqa: E402
from gateway.identity.sni import service_sni  # noqa: E402
from gateway.loopback import free_port, is_listening  # noqa: E402

RATE = 100  # requests per second for the latency loop
LAT_SECONDS = 10
ENVOY_CONCURRENCY = 2
NATIVE_WORKERS = os.cpu_count() or 1  # one worker process per core


class BenchStack(demo.Stack):
    """`terminus demo` with fn-envoy / fn-native (same ARN) and a `bench` client with two upstreams."""

    def __init__(self, ports: demo.Ports, upstream_native: int, workdir: Path,
                 native_workers: int = NATIVE_WORKERS, native_access_log: bool = False) -> None:
        super().__init__(ports, workdir)
        self.upstream_envoy = ports.upstream
        self.upstream_native = upstream_native
        self.native_workers = native_workers
        self.floor_port = free_port()  # bench/floor_gateway.py: the least gateway, an anchor
        # like for like: the Envoy config terminus writes has no access log either
        self.native_args = ["--access-log" if native_access_log else "--no-access-log"]

    def pid(self, name: str) -> int:
        return next(proc.pid for n, proc in self.procs if n == name)

    def register(self) -> None:
        p = self.ports
        for fn in ("fn-envoy", "fn-native"):
            self.api("PUT", "/v1/catalog/register", {"Node": "lambdas", "Address": "127.0.0.1",
                                                      "NodeMeta": {"external-node": "true"},
                                                      "Service": {"Service": fn, "Port": 443}})
            self.api("PUT", "/v1/config", {"Kind": "service-defaults", "Name": fn, "Protocol": "http",
                                           "Meta": demo.LAMBDA_META})
            self.api("PUT", f"/v1/connect/intentions/exact?source=*&destination={fn}", {"Action": "allow"})
        for gw, port, fn in (("lambda-gateway", p.envoy_gateway, "fn-envoy"),
                             ("native-gateway", p.native_gateway, "fn-native")):
            self.api("PUT", "/v1/agent/service/register", {"Name": gw, "Kind": "terminating-gateway", "Port": port,
                                                            "Address": "127.0.0.1"})
            self.api("PUT", "/v1/config", {"Kind": "terminating-gateway", "Name": gw, "Services": [{"Name": fn}]})
        self.api("PUT", "/v1/agent/service/register", {
            "Name": "bench", "Port": 9090, "Address": "127.0.0.1",
            "Connect": {"SidecarService": {"Port": p.sidecar, "Proxy": {"Upstreams": [
                {"DestinationName": "fn-envoy", "LocalBindPort": self.upstream_envoy},
                {"DestinationName": "fn-native", "LocalBindPort": self.upstream_native}]}}}})

    def start(self) -> None:
        p = self.ports
        data = self.workdir / "data"
        self.spawn("server", "server", "--data-dir", str(data), "--http-addr", self.http,
                   "--grpc-addr", f"127.0.0.1:{p.grpc}")
        self.wait_for("the server", lambda: httpx.get(f"http://{self.http}/v1/status/leader", timeout=1).status_code == 200)
        self.spawn("lambda", "lambda", "local", "--function", "authentication=gateway.demo.function:handler",
                   "--listen", f"127.0.0.1:{p.lambda_}")
        self.register()
        self.spawn("native-gateway", "gateway", "--service", "native-gateway", "--listen", f"127.0.0.1:{p.native_gateway}",
                   "--metrics-listen", f"127.0.0.1:{p.metrics}", "--data-dir", str(data),
                   "--workers", str(self.native_workers), *self.native_args)
        self.start_process("floor-gateway", [sys.executable, str(Path(__file__).with_name("floor_gateway.py")),
                                             "--listen", str(self.floor_port), "--http-addr", self.http,
                                             "--lambda-port", str(p.lambda_)])
        self.spawn_envoy("envoy-gateway", "--gateway", "terminating", "--service", "lambda-gateway",
                         "--admin-bind", f"127.0.0.1:{p.admin_gateway}", "--http-addr", self.http,
                         envoy_args=("--concurrency", str(ENVOY_CONCURRENCY)))
        self.spawn_envoy("envoy-bench-sidecar", "--proxy-id", "bench-sidecar-proxy",
                         "--admin-bind", f"127.0.0.1:{p.admin_sidecar}", "--http-addr", self.http)
        self.wait_for("the floor gateway", lambda: is_listening(self.floor_port))
        for port in (self.upstream_envoy, self.upstream_native):
            url = f"http://127.0.0.1:{port}/"
            self.wait_for(f"a first answer through 127.0.0.1:{port}",
                          lambda url=url: httpx.get(url, timeout=3).status_code == 200)


# --- measurement helpers -------------------------------------------------------------------

def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def with_descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the native gateway's workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _wrk_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def wrk(url: str, duration: float, connections: int, threads: int = 2, script: Path | None = None) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise CLIError(f"wrk failed: {out.stderr.strip() or out.stdout.strip()}")
    text = out.stdout
    m_req = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    m_rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m_req or not m_rps:
        raise CLIError(f"could not parse wrk output: {text!r}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    return {
        "requests": int(m_req.group(1)),
        "rps": float(m_rps.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "p50_ms": _wrk_latency_ms(lat.get("50", "")),
        "p99_ms": _wrk_latency_ms(lat.get("99", "")),
    }


def wrk_with_cpu(url: str, pids: list[int], duration: float, connections: int) -> dict[str, Any]:
    wrk(url, 2, connections)  # warm-up: connections, TLS sessions, caches
    hz = os.sysconf("SC_CLK_TCK")
    before = sum(cpu_ticks(p) for p in pids)
    res = wrk(url, duration, connections)
    after = sum(cpu_ticks(p) for p in pids)
    if res["non_2xx"] or res["socket_errors"]:
        raise CLIError(f"wrk against {url}: {res['non_2xx']} non-2xx responses, {res['socket_errors']} socket errors")
    res["cpu_s"] = (after - before) / hz
    res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / max(res["requests"], 1)
    return res


class HTTPConn:
    """One keep-alive HTTP/1.1 connection on a blocking socket (plain or TLS); Content-Length bodies."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""
        self.last_body = b""

    def request(self, raw: bytes) -> int:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CLIError("connection closed before a response")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            elif name.strip().lower() == b"transfer-encoding":
                raise CLIError("chunked responses are not handled by this benchmark")
        if length is None:
            raise CLIError("response without Content-Length")
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CLIError("connection closed mid-body")
            rest += chunk
        self.buf = rest[length:]
        self.last_body = rest[:length]
        return status

    def close(self) -> None:
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def spiffe_uri(der: bytes) -> str:
    """The first URI SAN of a DER certificate: its SPIFFE ID."""
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)[0]


def gateway_headers(tls: ssl.SSLSocket, client_pem: str) -> list[tuple[str, str]]:
    """The headers the native gateway forwards for the bench's GET: the client's two, then
    the three it adds (a request id, the scheme, and XFCC with the leaf it presented, the
    client leaf's SHA-256 and the client's URI). The direct request carries the same
    envelope, so the two streams differ only by the gateway."""
    client_der = ssl.PEM_cert_to_DER_cert(client_pem)
    gateway_der = tls.getpeercert(binary_form=True)
    assert gateway_der is not None
    xfcc = (f"By={spiffe_uri(gateway_der)};Hash={hashlib.sha256(client_der).hexdigest()};"
            f"URI={spiffe_uri(client_der)}")
    return [("host", "fn-native"), ("user-agent", "terminus-bench"), ("x-request-id", str(uuid.uuid4())),
            ("x-forwarded-proto", "https"), ("x-forwarded-client-cert", xfcc)]


NATIVE_GET = b"GET / HTTP/1.1\r\nHost: fn-native\r\nUser-Agent: terminus-bench\r\n\r\n"
ENVOY_GET = NATIVE_GET.replace(b"fn-native", b"fn-envoy")


class LatencyClient:
    """What the latency loops send: GETs to a native gateway over mTLS with the ``bench`` leaf
    (SNI of ``fn-native``, no sidecar), and the SigV4-signed Invoke the gateway would send,
    straight to the local Lambda."""

    def __init__(self, stack: BenchStack, workdir: Path) -> None:
        http = f"http://{stack.http}"
        leaf = httpx.get(f"{http}/v1/agent/connect/ca/leaf/bench", timeout=10).json()
        roots = httpx.get(f"{http}/v1/agent/connect/ca/roots", timeout=10).json()
        (workdir / "bench.crt").write_text(leaf["CertPEM"])
        (workdir / "bench.key").write_text(leaf["PrivateKeyPEM"])
        dc = httpx.get(f"{http}/v1/agent/self", timeout=10).json().get("Config", {}).get("Datacenter") or "dc1"
        self.leaf_pem = leaf["CertPEM"]
        self.dc, self.trust_domain = dc, roots["TrustDomain"]
        self.ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                              cadata="".join(r["RootCert"] for r in roots["Roots"]))
        self.ctx.check_hostname = False  # the gateway presents a SPIFFE leaf (URI SAN); the CA check stays on
        self.ctx.load_cert_chain(workdir / "bench.crt", workdir / "bench.key")
        self.lambda_port = stack.ports.lambda_

    def gateway(self, port: int, service: str = "fn-native") -> HTTPConn:
        """An mTLS connection to the gateway on ``port``, with the SNI of ``service``."""
        sni = service_sni(service, None, "default", "default", self.dc, self.trust_domain)
        return HTTPConn(self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=sni))

    def lambda_conn(self) -> HTTPConn:
        return HTTPConn(socket.create_connection(("127.0.0.1", self.lambda_port)))

    def invoke(self, gateway: HTTPConn) -> Callable[[], bytes]:
        """The signed Invoke (signed afresh on each call, before any timer starts) carrying the
        envelope ``gateway`` forwards for :data:`NATIVE_GET`."""
        payload = jsonize_request("GET", "/", gateway_headers(gateway.sock, self.leaf_pem), b"")  # type: ignore[arg-type]
        host = f"127.0.0.1:{self.lambda_port}"
        url = f"http://{host}/2015-03-31/functions/{demo.ARN}/invocations"
        target = url.split(host, 1)[1]
        signer = Signer("lambda", "us-east-1")
        creds = Credentials(demo.DEMO_KEY, demo.DEMO_SECRET)

        def request() -> bytes:
            headers = [("Host", host), ("Content-Type", "application/json"),
                       ("X-Amz-Invocation-Type", "RequestResponse")]
            headers += signer.sign("POST", url, headers, payload, creds, datetime.now(UTC))
            head = "".join(f"{k}: {v}\r\n" for k, v in headers)
            return f"POST {target} HTTP/1.1\r\n{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload

        return request


def timed(conn: HTTPConn, raw: bytes) -> float:
    """One exchange on ``conn``, in ms; anything but 200 stops the run."""
    t = time.perf_counter()
    status = conn.request(raw)
    dt = (time.perf_counter() - t) * 1e3
    if status != 200:
        raise CLIError(f"latency loop: status {status}")
    return dt


def paced_pair(gateway: HTTPConn, gateway_req: bytes, direct: HTTPConn, direct_req: Callable[[], bytes],
               seconds: float) -> dict[str, Any]:
    """``RATE`` requests/s through ``gateway``, each followed half an interval later by one
    straight to the Lambda, so both streams see the same machine state."""
    for _ in range(100):  # warm-up
        timed(gateway, gateway_req)
        timed(direct, direct_req())
    n = int(seconds * RATE)
    interval = 1.0 / RATE
    lat_gateway: list[float] = []
    lat_direct: list[float] = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        due = t0 + i * interval
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        lat_gateway.append(timed(gateway, gateway_req))
        raw = direct_req()
        due += interval / 2
        while (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        lat_direct.append(timed(direct, raw))
    elapsed = time.perf_counter() - t0
    return {
        "n": n,
        "achieved_rate": round(n / elapsed, 1),
        "gateway_p50_ms": pct(lat_gateway, 50), "gateway_p99_ms": pct(lat_gateway, 99),
        "direct_p50_ms": pct(lat_direct, 50), "direct_p99_ms": pct(lat_direct, 99),
    }


def latency_loop(stack: BenchStack, workdir: Path, seconds: float) -> dict[str, Any]:
    """The native gateway's pair (the target), then the Envoy gateway's and the floor
    gateway's (its anchors), each against its own direct stream."""
    client = LatencyClient(stack, workdir)
    conns = [client.gateway(stack.ports.native_gateway), client.gateway(stack.ports.envoy_gateway, "fn-envoy"),
             client.gateway(stack.floor_port), client.lambda_conn()]
    native, envoy, floor, direct = conns
    try:
        # the direct request carries the native gateway's envelope; Envoy's differs by a few bytes
        direct_req = client.invoke(native)
        if (floor.request(NATIVE_GET), native.request(NATIVE_GET)) != (200, 200) or floor.last_body != native.last_body:
            raise CLIError("the floor gateway's answer differs from the native gateway's")
        return {"native": paced_pair(native, NATIVE_GET, direct, direct_req, seconds),
                "envoy": paced_pair(envoy, ENVOY_GET, direct, direct_req, seconds),
                "floor": paced_pair(floor, NATIVE_GET, direct, direct_req, seconds)}
    finally:
        for conn in conns:
            conn.close()


def lambda_alone_script(stack: BenchStack, workdir: Path) -> Path:
    """A wrk script replaying one signed Invoke (valid for the 5-minute skew window)."""
    p = stack.ports
    host = f"127.0.0.1:{p.lambda_}"
    url = f"http://{host}/2015-03-31/functions/{demo.ARN}/invocations"
    payload = jsonize_request("GET", "/", [("host", "fn-native"), ("user-agent", "wrk")], b"")
    headers = [("Host", host), ("Content-Type", "application/json"), ("X-Amz-Invocation-Type", "RequestResponse")]
    headers += Signer("lambda", "us-east-1").sign("POST", url, headers, payload,
                                                  Credentials(demo.DEMO_KEY, demo.DEMO_SECRET), datetime.now(UTC))
    lines = ['wrk.method = "POST"', f"wrk.path = [==[{url.split(host, 1)[1]}]==]",
             f"wrk.body = [==[{payload.decode()}]==]"]
    lines += [f'wrk.headers[ [==[{k}]==] ] = [==[{v}]==]' for k, v in headers]
    script = workdir / "lambda.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = demo.Ports(**{name: free_port() for name in vars(demo.Ports())})
    upstream_native = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="terminus-bench-dataplane-"))
    stack = BenchStack(ports, upstream_native, workdir, args.native_workers, args.native_access_log)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    log = (lambda msg: print(f"==> {msg}", file=sys.stderr, flush=True))
    try:
        log(f"starting server, local Lambda, Envoy gateway (--concurrency {ENVOY_CONCURRENCY}), native gateway "
            f"(--workers {args.native_workers}), bench sidecar")
        stack.start()
        d, c = args.duration, args.connections
        log(f"wrk -> local Lambda alone ({d:g}s)")
        lam = wrk(f"http://127.0.0.1:{ports.lambda_}", d, c, script=lambda_alone_script(stack, workdir))
        if lam["non_2xx"] or lam["socket_errors"]:
            raise CLIError(f"wrk against the local Lambda: {lam['non_2xx']} non-2xx, {lam['socket_errors']} socket errors")
        log(f"wrk -> sidecar -> Envoy gateway ({d:g}s)")
        env_res = wrk_with_cpu(f"http://127.0.0.1:{stack.upstream_envoy}/", [stack.pid("envoy-gateway")], d, c)
        log(f"wrk -> sidecar -> native gateway ({d:g}s)")
        native_pids = with_descendants(stack.pid("native-gateway"))
        if len(native_pids) != args.native_workers + (1 if args.native_workers > 1 else 0):
            raise CLIError(f"native gateway: expected {args.native_workers} worker(s), found processes {native_pids}")
        nat_res = wrk_with_cpu(f"http://127.0.0.1:{stack.upstream_native}/", native_pids, d, c)
        log(f"latency at {RATE} req/s: native gateway, then Envoy gateway, then the floor gateway (mTLS, no "
            "sidecar), each vs a signed Invoke straight to the Lambda")
        lat = latency_loop(stack, workdir, args.latency_seconds)
    finally:
        stack.stop()
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    r2 = lambda x: round(x, 2)  # noqa: E731
    r3 = lambda x: round(x, 3)  # noqa: E731
    cpu_ratio = nat_res["cpu_us_per_req"] / env_res["cpu_us_per_req"]
    nat, env, flo = lat["native"], lat["envoy"], lat["floor"]
    added_p50 = nat["gateway_p50_ms"] - nat["direct_p50_ms"]
    added_p99 = nat["gateway_p99_ms"] - nat["direct_p99_ms"]
    return {
        "rps": {"native": r2(nat_res["rps"]), "envoy": r2(env_res["rps"])},
        "cpu_us_per_req": {"native": r2(nat_res["cpu_us_per_req"]), "envoy": r2(env_res["cpu_us_per_req"])},
        "added_p50_ms": r3(added_p50),
        "added_p99_ms": r3(added_p99),
        "targets": {
            "cpu_ratio_native_over_envoy": r2(cpu_ratio), "cpu_ok": cpu_ratio <= 1.5,
            "rps_ok": nat_res["rps"] >= env_res["rps"],
            "added_p50_ok": added_p50 <= 1.0, "added_p99_ok": added_p99 <= 5.0,
        },
        "anchors": {
            "direct_lambda_p50_ms": r3(nat["direct_p50_ms"]), "direct_lambda_p99_ms": r3(nat["direct_p99_ms"]),
            "native_gateway_p50_ms": r3(nat["gateway_p50_ms"]), "native_gateway_p99_ms": r3(nat["gateway_p99_ms"]),
            "envoy_added_p50_ms": r3(env["gateway_p50_ms"] - env["direct_p50_ms"]),
            "envoy_added_p99_ms": r3(env["gateway_p99_ms"] - env["direct_p99_ms"]),
            "envoy_gateway_p50_ms": r3(env["gateway_p50_ms"]), "envoy_gateway_p99_ms": r3(env["gateway_p99_ms"]),
            "floor_added_p50_ms": r3(flo["gateway_p50_ms"] - flo["direct_p50_ms"]),
            "floor_added_p99_ms": r3(flo["gateway_p99_ms"] - flo["direct_p99_ms"]),
            "lambda_alone_rps": r2(lam["rps"]),
        },
        "under_load_latency_ms": {
            "native": {"p50": r2(nat_res["p50_ms"]), "p99": r2(nat_res["p99_ms"])},
            "envoy": {"p50": r2(env_res["p50_ms"]), "p99": r2(env_res["p99_ms"])},
            "lambda_alone": {"p50": r2(lam["p50_ms"]), "p99": r2(lam["p99_ms"])},
        },
        "requests": {"native": nat_res["requests"], "envoy": env_res["requests"], "lambda_alone": lam["requests"],
                     "latency_loop_each": nat["n"]},
        "latency_loop_rate": {"native": nat["achieved_rate"], "envoy": env["achieved_rate"], "floor": flo["achieved_rate"]},
        "envoy_concurrency": ENVOY_CONCURRENCY,
        "native_processes": args.native_workers,
        "native_access_log": args.native_access_log,
        "note": ("native gateway: one asyncio worker process per core (SO_REUSEPORT), CPU summed over the "
                 "workers and their supervisor; wrk, the client sidecar Envoy, both gateways and the Python local "
                 "Lambda share the same cores, so rps compares gateways, it is not capacity"),
        "wrk": f"-t2 -c{args.connections} -d{args.duration:g}s through the bench sidecar",
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--latency-seconds", type=float, default=LAT_SECONDS,
                    help=f"seconds of the {RATE} req/s latency loop (default {LAT_SECONDS})")
    ap.add_argument("--native-workers", type=int, default=NATIVE_WORKERS,
                    help=f"native gateway worker processes (default: one per core, {NATIVE_WORKERS})")
    ap.add_argument("--native-access-log", action="store_true",
                    help="run the native gateway with its access log on (off by default: Envoy's config has none)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if args.native_workers < 1:
        sys.exit("bench/dataplane.py: --native-workers must be >= 1")
    if shutil.which("wrk") is None:
        sys.exit("bench/dataplane.py needs wrk on PATH: install it (e.g. `apt-get install -y wrk`)")
    try:
        result = run(args)
    except CLIError as exc:
        sys.exit(f"bench/dataplane.py: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench/dataplane.py: interrupted")
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value)}")


if __name__ == "__main__":
    main()
