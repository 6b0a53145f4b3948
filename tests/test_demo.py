"""`make run`'s stack (`terminus demo`): up, the function answers through localhost, a deny
through the CLI is enforced, and Ctrl-C/SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.envoy import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,pgid="], capture_output=True, text=True).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    found, frontier = set(), {pid}
    while frontier:
        nxt = {p for p, pp, _ in rows if pp in frontier} - found
        found |= nxt
        frontier = nxt
    return found


def test_demo_stack(tmp_path: Path) -> None:
    http, grpc, up = free_port(), free_port(), free_port()
    base = 24000 + os.getpid() % 1000 * 10
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "demo", "--http-port", str(http), "--grpc-port", str(grpc),
                             "--upstream-port", str(up), "--base-port", str(base)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        assert "==> ready" in text, text
        assert f"curl -s http://localhost:{up}/hello" in text
        children = _children(proc.pid)
        assert len(children) >= 5  # server, lambda, native gateway, two Envoys
        statuses = [httpx.post(f"http://localhost:{up}/hello", content=b'{"name": "mesh"}', timeout=5).status_code for _ in range(6)]
        assert statuses == [200] * 6  # both terminating gateways answer
        answer = httpx.post(f"http://localhost:{up}/hello", content=b"{}", timeout=5).json()
        assert answer["message"] == "hello from authentication" and answer["caller"].endswith("/svc/api")
        deny = subprocess.run([sys.executable, "-m", "gateway.cli.main", "intention", "create", "--deny", "--http-addr",
                               f"127.0.0.1:{http}", "api", "authentication"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert deny.returncode == 0, deny.stderr
        # Envoy (xDS push) and the native gateway (change feed) converge independently: wait
        # until six answers in a row, which the sidecar spreads over both, are denials.
        deadline = time.monotonic() + 10
        statuses = []
        while statuses[-6:] != [403] * 6:
            assert time.monotonic() < deadline, f"the deny was not enforced everywhere: {statuses[-12:]}"
            statuses.append(httpx.get(f"http://localhost:{up}/hello", timeout=5).status_code)
            assert statuses[-1] in (200, 403), statuses
            if statuses[-1] != 403:
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    time.sleep(0.5)
    alive = [p for p in children if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert not alive, f"processes left behind: {alive}"
