"""Intention upserts per second through the HTTP API, on SQLite with durable commits.

    python bench/api_upserts.py [--json] [--count 2000] [--threads 8]

Starts a real `terminus server` on a temporary data dir (SQLite, WAL, synchronous=FULL)
and sends `PUT /v1/connect/intentions/exact` for distinct source names, first from one
keep-alive client, then from several threads. The anchor, measured in the same run, is
`GET /v1/status/leader`: the same HTTP stack doing no store work, i.e. the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import http.client

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "server", "--data-dir", data_dir,
                             "--http-addr", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/v1/status/leader", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


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

            seq = connection()
            leader = rate(lambda i: call(seq, "GET", "/v1/status/leader"), list(range(args.count)))
            sequential = rate(lambda i: upsert(seq, "seq", i), list(range(args.count)))
            seq.close()

            def worker(t: int) -> None:
                conn = connection()
                for i in range(t, args.count, args.threads):
                    upsert(conn, "par", i)
                conn.close()

            start = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(worker, range(args.threads)))
            concurrent = args.count / (time.perf_counter() - start)
            stored = len(httpx.get(f"{url}/v1/connect/intentions").json())
            metrics = {c["Name"]: c["Count"] for c in httpx.get(f"{url}/v1/agent/metrics").json()["Counters"]}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    result = {
        "upserts_per_s_sequential": round(sequential),
        f"upserts_per_s_{args.threads}_threads": round(concurrent),
        "anchor_leader_get_per_s": round(leader),
        "intentions_stored": stored,
        "writes_per_commit": round(metrics["terminus.store.writes"] / max(1, metrics["terminus.store.commits"]), 2),
        "storage": "sqlite (WAL, synchronous=FULL)",
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
