"""Intention upserts per second through the HTTP API, on SQLite with durable commits.

    python bench/api_upserts.py [--json] [--count 2000] [--threads 8]

Starts a real `terminus server` on a temporary data dir (SQLite, WAL, synchronous=FULL)
and sends `PUT /v1/connect/intentions/exact` for distinct source names (50 destinations, so
each write rewrites an entry of up to count*2/50 sources), first from one keep-alive client,
then from several threads. The anchor, measured in the same run, is `GET /v1/status/leader`:
the same HTTP stack doing no store work, i.e. the ceiling.

`upserts_per_s` (the headline) is the concurrent figure: an API server is loaded by several
clients, whose writes share each fsync (group commit). The sequential figure is one client
waiting for each of its writes to be on disk before sending the next, so it is bounded by
one fsync per write (about 1.1 ms on the reference VM) plus the request's CPU. Server CPU
per upsert (user+system, from /proc on Linux) is printed for both phases: it is far less
sensitive to other load on the machine than the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import http.client

import httpx
from gateway.loopback import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # xDS on a free port too: the default 8502 may belong to another server on this machine
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "server", "--data-dir", data_dir,
                             "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", f"127.0.0.1:{free_port()}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/v1/status/leader", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU of a process so far (all its threads), or None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_upsert_ms(before: float | None, after: float | None, count: int) -> float | None:
    return None if before is None or after is None else round((after - before) / count * 1e3, 3)


def rate(fn, items: list) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="terminus-bench-") as tmp:
        proc, url = start_server(tmp)
        try:
            host, port = url.removeprefix("http://").split(":")

            def connection() -> http.client.HTTPConnection:
                # the stdlib client: light enough that the server, not the client, is measured
                return http.client.HTTPConnection(host, int(port), timeout=30)

            def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> None:
                conn.request(method, path, body=body)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise SystemExit(f"{method} {path}: {resp.status}")

            def upsert(conn: http.client.HTTPConnection, prefix: str, i: int) -> None:
                action = b'{"Action": "allow"}' if i % 2 else b'{"Action": "deny"}'
                call(conn, "PUT", f"/v1/connect/intentions/exact?source={prefix}-{i}&destination=db-{i % 50}", action)

            def store_counts() -> tuple[int, int]:
                counters = {c["Name"]: c["Count"] for c in httpx.get(f"{url}/v1/agent/metrics").json()["Counters"]}
                return counters["terminus.store.writes"], counters["terminus.store.commits"]

            seq = connection()
            leader = rate(lambda i: call(seq, "GET", "/v1/status/leader"), list(range(args.count)))
            cpu_start = cpu_seconds(proc.pid)
            sequential = rate(lambda i: upsert(seq, "seq", i), list(range(args.count)))
            cpu_sequential = cpu_seconds(proc.pid)
            seq.close()
            writes_before, commits_before = store_counts()
            cpu_before = cpu_seconds(proc.pid)

            def worker(t: int) -> None:
                conn = connection()
                for i in range(t, args.count, args.threads):
                    upsert(conn, "par", i)
                conn.close()

            start = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(worker, range(args.threads)))
            concurrent = args.count / (time.perf_counter() - start)
            cpu_concurrent = cpu_seconds(proc.pid)
            writes, commits = store_counts()
            stored = len(httpx.get(f"{url}/v1/connect/intentions").json())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    result = {
        "upserts_per_s": round(concurrent),  # the headline: the concurrent figure (see the docstring)
        "upserts_per_s_sequential": round(sequential),
        f"upserts_per_s_{args.threads}_threads": round(concurrent),
        "anchor_leader_get_per_s": round(leader),
        "server_cpu_ms_per_upsert_sequential": per_upsert_ms(cpu_start, cpu_sequential, args.count),
        f"server_cpu_ms_per_upsert_{args.threads}_threads": per_upsert_ms(cpu_before, cpu_concurrent, args.count),
        "intentions_stored": stored,
        "writes_per_commit": round(writes / max(1, commits), 2),
        f"writes_per_commit_{args.threads}_threads": round((writes - writes_before) / max(1, commits - commits_before), 2),
        "storage": "sqlite (WAL, synchronous=FULL)",
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
