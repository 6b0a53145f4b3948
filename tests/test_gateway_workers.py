"""`terminus gateway --workers N`: N processes on one port (SO_REUSEPORT), all serving, and
none left behind after SIGTERM (or after a worker dies, or the parent is killed)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.awslambda.local import run_in_thread
from gateway.awslambda.sigv4 import Credentials
from gateway.cli.client import CLIError
from gateway.cli.gateway_cmd import parse_workers
from gateway.identity.sni import service_sni
from tests.support.envoy import free_port
from tests.support.pki import leaf_client_context

ROOT = Path(__file__).resolve().parent.parent
ARN = "arn:aws:lambda:us-east-1:123456789012:function:authentication"
META = "serverless.consul.hashicorp.com/v1alpha1/lambda/"


def echo(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"path": event.get("raw_path")})}


def test_parse_workers() -> None:
    cores = os.cpu_count() or 1
    assert parse_workers("1") == 1 and parse_workers("3") == 3
    assert parse_workers("0") == cores and parse_workers("auto") == cores and parse_workers(" AUTO ") == cores
    for bad in ("-1", "two", ""):
        with pytest.raises(CLIError):
            parse_workers(bad)


def _alive(pid: int) -> bool:
    """Running (a zombie or a missing /proc entry is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Gateway:
    """A `terminus gateway --workers N` process tree; output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "gateway", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def worker_pids(self, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                m = re.search(r"workers \(pids ([\d, ]+)\)", line)
                if m:
                    return [int(p) for p in m.group(1).split(", ")]
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"no worker pids announced:\n{self.output()}")

    def kill_tree(self, pids: list[int]) -> None:
        """Test cleanup only: whatever is still running, by PID."""
        for pid in [self.proc.pid, *pids]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.wait(10)


@pytest.fixture
def stack(start_server: Any, tmp_path: Path) -> Any:
    """A server with a Lambda service linked to terminating gateway `tgw`, a local Lambda, and
    everything a caller `api` needs to reach it over mTLS."""
    data = tmp_path / "d"
    server = start_server("--data-dir", str(data))
    api = httpx.Client(base_url=server.url)
    creds = Credentials("AKIDTERMINUS", "terminus-secret")
    with run_in_thread({"authentication": echo}, credentials=[creds]) as lam:
        assert api.put("/v1/catalog/register", json={"Node": "lambdas", "Address": "127.0.0.1",
                                                    "Service": {"Service": "authentication", "Port": 443}}).status_code == 200
        assert api.put("/v1/config", json={"Kind": "service-defaults", "Name": "authentication", "Protocol": "http",
                                           "Meta": {META + "enabled": "true", META + "arn": ARN}}).status_code == 200
        gw_port = free_port()
        api.put("/v1/agent/service/register", json={"Name": "tgw", "Kind": "terminating-gateway", "Port": gw_port})
        api.put("/v1/config", json={"Kind": "terminating-gateway", "Name": "tgw", "Services": [{"Name": "authentication"}]})
        api.put("/v1/connect/intentions/exact", params={"source": "api", "destination": "authentication"},
                json={"Action": "allow"})
        ctx, trust_domain = leaf_client_context(api, "api", tmp_path)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_LAMBDA": lam.endpoint_url}
        yield {
            "data": data, "port": gw_port, "ctx": ctx, "env": env, "lam": lam,
            "sni": service_sni("authentication", None, "default", "default", "dc1", trust_domain),
        }


def _call(stack: Any, path: str = "/hello") -> int:
    """One request on a new connection (so the kernel picks a worker each time)."""
    try:
        with httpx.Client(verify=stack["ctx"], timeout=5) as c:
            return c.get(f"https://127.0.0.1:{stack['port']}{path}", extensions={"sni_hostname": stack["sni"]}).status_code
    except httpx.HTTPError:
        return 0


def _served(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("terminus_gateway_requests_total{") and 'code="200"' in line)


@pytest.mark.slow
def test_two_workers_share_the_port_and_stop_cleanly(stack: Any) -> None:
    metrics = free_port()
    while True:  # worker i serves metrics on metrics + i: both must be free
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", metrics + 1))
            break
        except OSError:
            metrics = free_port()
    gw = Gateway(["--service", "tgw", "--listen", f"127.0.0.1:{stack['port']}", "--metrics-listen",
                  f"127.0.0.1:{metrics}", "--data-dir", str(stack["data"]), "--workers", "2"], stack["env"])
    pids: list[int] = []
    try:
        pids = gw.worker_pids()
        assert len(pids) == 2 and gw.proc.pid not in pids
        deadline = time.monotonic() + 30
        while _call(stack) != 200:
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.2)
        # both workers answer: every new connection lands on one of them, chosen by the kernel
        deadline = time.monotonic() + 30
        while True:
            codes = [_call(stack, f"/r{i}") for i in range(12)]
            assert codes == [200] * 12, (codes, gw.output())
            try:
                counts = [_served(metrics), _served(metrics + 1)]
            except httpx.HTTPError:
                counts = [0.0, 0.0]
            if all(c > 0 for c in counts):
                break
            assert time.monotonic() < deadline, (counts, gw.output())
        assert stack["lam"].invocations()["authentication"] >= 13

        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0, gw.output()
        for pid in pids:
            deadline = time.monotonic() + 5
            while _alive(pid):
                assert time.monotonic() < deadline, f"worker {pid} left behind"
                time.sleep(0.05)
        assert _call(stack) == 0  # nothing listens any more
    finally:
        gw.kill_tree(pids)


@pytest.mark.slow
def test_a_dead_worker_stops_the_rest_and_a_killed_parent_takes_its_workers(stack: Any) -> None:
    args = ["--service", "tgw", "--listen", f"127.0.0.1:{stack['port']}", "--metrics-listen", "127.0.0.1:0",
            "--data-dir", str(stack["data"]), "--workers", "2"]
    gw = Gateway(args, stack["env"])
    pids: list[int] = []
    try:
        pids = gw.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        assert gw.proc.wait(20) == 1, gw.output()
        assert "exited" in gw.output()
        assert not any(_alive(p) for p in pids), gw.output()
    finally:
        gw.kill_tree(pids)

    gw = Gateway(args, stack["env"])
    pids = []
    try:
        pids = gw.worker_pids()
        deadline = time.monotonic() + 30
        while _call(stack) != 200:
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.2)
        os.kill(gw.proc.pid, signal.SIGKILL)  # no chance to clean up: PR_SET_PDEATHSIG does it
        gw.proc.wait(10)
        for pid in pids:
            deadline = time.monotonic() + 15
            while _alive(pid):
                assert time.monotonic() < deadline, f"worker {pid} outlived its parent"
                time.sleep(0.05)
    finally:
        gw.kill_tree(pids)


def _wait_for_line(gw: Gateway, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gw.lines:
            if re.search(pattern, line):
                return line
        assert gw.proc.poll() is None, gw.output()
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r}:\n{gw.output()}")


@pytest.mark.slow
def test_each_request_is_logged_unless_switched_off(stack: Any) -> None:
    """A real `terminus gateway` process writes one access line per request to stderr (flushed
    within a second); --no-access-log silences those lines only; a bad level is one line."""
    base = ["--service", "tgw", "--listen", f"127.0.0.1:{stack['port']}", "--metrics-listen",
            f"127.0.0.1:{free_port()}", "--data-dir", str(stack["data"])]
    for access in (True, False):
        gw = Gateway([*base, "--access-log" if access else "--no-access-log"], stack["env"])
        try:
            deadline = time.monotonic() + 30
            while _call(stack, "/warm") != 200:
                assert time.monotonic() < deadline, gw.output()
                time.sleep(0.2)
            assert _call(stack, "/logged?x=1") == 200
            if access:
                line = _wait_for_line(gw, r"path=/logged")
                assert re.search(r"\[INFO\] terminus\.gateway\.access: caller=api dest=authentication method=GET "
                                 r"path=/logged\?x=1 decision=allow function=authentication status=200 latency_ms=[\d.]+$", line), line
            else:
                time.sleep(2.5)  # longer than the flush interval
                assert not any("terminus.gateway.access" in line for line in gw.lines), gw.output()
        finally:
            gw.proc.send_signal(signal.SIGTERM)
            gw.proc.wait(20)
    bad = subprocess.run([sys.executable, "-m", "gateway.cli.main", "gateway", *base, "--log-level", "loud"],
                         cwd=ROOT, env=stack["env"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "Error: --log-level must be one of trace, debug, info, warn, error, not 'loud'"], bad.stderr
