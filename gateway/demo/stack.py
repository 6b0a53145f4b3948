"""`terminus demo` (what `make run` starts): the whole local stack, in the foreground.

server -> local Lambda (a demo function, SigV4 checked) <- Envoy terminating gateway and
terminus's native gateway (both linked to `authentication`) <- the `api` sidecar (Envoy),
whose upstream listens on localhost:2345. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.cli.client import CLIError

DEMO_KEY, DEMO_SECRET = "AKIDTERMINUSDEMO", "terminus-demo-secret"  # only the local Lambda accepts these
ARN = "arn:aws:lambda:us-east-1:123456789012:function:authentication"
LAMBDA_META = {
    "serverless.consul.hashicorp.com/v1alpha1/lambda/enabled": "true",
    "serverless.consul.hashicorp.com/v1alpha1/lambda/arn": ARN,
    "serverless.consul.hashicorp.com/v1alpha1/lambda/payload-passthrough": "false",
}


@dataclass
class Ports:
    http: int = 8500
    grpc: int = 8502
    upstream: int = 2345
    sidecar: int = 21000
    envoy_gateway: int = 8443
    native_gateway: int = 8444
    lambda_: int = 9001
    admin_sidecar: int = 19000
    admin_gateway: int = 19001
    metrics: int = 9102

    def check_free(self) -> None:
        for name, port in vars(self).items():
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise CLIError(f"port {port} ({name.rstrip('_')}) is in use on 127.0.0.1; stop what uses it or pick other ports") from None


class Stack:
    def __init__(self, ports: Ports, workdir: Path) -> None:
        self.ports = ports
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.http = f"127.0.0.1:{ports.http}"
        self.env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": DEMO_KEY, "AWS_SECRET_ACCESS_KEY": DEMO_SECRET, "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{ports.lambda_}",
            "CONSUL_HTTP_ADDR": self.http,
        }
        self.env.pop("AWS_SESSION_TOKEN", None)

    def start_process(self, name: str, argv: list[str], cwd: Path | None = None) -> None:
        """Run ``argv`` in its own process group (stop() ends it), output to ``<name>.log``."""
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))

    def spawn(self, name: str, *args: str) -> None:
        self.start_process(name, [sys.executable, "-m", "gateway.cli.main", *args])

    def spawn_envoy(self, name: str, *args: str, envoy_args: tuple[str, ...] = ()) -> None:
        out = subprocess.run([sys.executable, "-m", "gateway.cli.main", "connect", "envoy", "--bootstrap",
                              "--grpc-addr", f"127.0.0.1:{self.ports.grpc}", *args],
                             env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise CLIError(f"{name}: {out.stderr.strip()}")
        from xds.envoy import envoy_binary

        self.start_process(name, [envoy_binary(), "--config-yaml", out.stdout, "--disable-hot-restart",
                                  "--base-id", str(os.getpid() % 10000 * 10 + len(self.procs)), "-l", "warning",
                                  *envoy_args])

    def wait_for(self, what: str, check: object, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise CLIError(f"{name} exited; see {self.workdir / (name + '.log')}")
            try:
                if check():  # type: ignore[operator]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise CLIError(f"timed out waiting for {what}; logs are in {self.workdir}")

    def api(self, method: str, path: str, body: object = None) -> object:
        r = httpx.request(method, f"http://{self.http}{path}", json=body, timeout=10)
        if r.status_code >= 400:
            raise CLIError(f"{method} {path}: {r.status_code} {r.text.strip()}")
        return r.json() if r.content else None

    def register(self) -> None:
        p = self.ports
        self.api("PUT", "/v1/catalog/register", {"Node": "lambdas", "Address": "127.0.0.1",
                                                  "NodeMeta": {"external-node": "true"},
                                                  "Service": {"Service": "authentication", "Port": 443}})
        self.api("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "authentication", "Protocol": "http", "Meta": LAMBDA_META})
        for name, port in (("lambda-gateway", p.envoy_gateway), ("native-gateway", p.native_gateway)):
            self.api("PUT", "/v1/agent/service/register", {"Name": name, "Kind": "terminating-gateway", "Port": port, "Address": "127.0.0.1"})
            self.api("PUT", "/v1/config", {"Kind": "terminating-gateway", "Name": name, "Services": [{"Name": "authentication"}]})
        self.api("PUT", "/v1/agent/service/register", {
            "Name": "api", "Port": 9090, "Address": "127.0.0.1",
            "Connect": {"SidecarService": {"Port": p.sidecar, "Proxy": {"Upstreams": [
                {"DestinationName": "authentication", "LocalBindPort": p.upstream}]}}}})
        # a wildcard allow: `terminus intention create --deny api authentication` then outranks it
        self.api("PUT", "/v1/connect/intentions/exact?source=*&destination=authentication", {"Action": "allow"})

    def start(self) -> None:
        p = self.ports
        data = self.workdir / "data"
        self.spawn("server", "server", "--data-dir", str(data), "--http-addr", self.http, "--grpc-addr", f"127.0.0.1:{p.grpc}")
        self.wait_for("the server", lambda: httpx.get(f"http://{self.http}/v1/status/leader", timeout=1).status_code == 200)
        self.spawn("lambda", "lambda", "local", "--function", "authentication=gateway.demo.function:handler",
                   "--listen", f"127.0.0.1:{p.lambda_}")
        self.register()
        self.spawn("native-gateway", "gateway", "--service", "native-gateway", "--listen", f"127.0.0.1:{p.native_gateway}",
                   "--metrics-listen", f"127.0.0.1:{p.metrics}", "--data-dir", str(data))
        self.spawn_envoy("envoy-gateway", "--gateway", "terminating", "--service", "lambda-gateway",
                         "--admin-bind", f"127.0.0.1:{p.admin_gateway}", "--http-addr", self.http)
        self.spawn_envoy("envoy-api-sidecar", "--proxy-id", "api-sidecar-proxy",
                         "--admin-bind", f"127.0.0.1:{p.admin_sidecar}", "--http-addr", self.http)
        url = f"http://localhost:{p.upstream}/hello"
        # ready = both gateways answer: the sidecar round-robins, so ask several times in a row
        self.wait_for("answers through localhost", lambda: all(
            httpx.post(url, content=b'{"name": "mesh"}', timeout=3).status_code == 200 for _ in range(6)))

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _terminus() -> str:
    """The command to paste: the venv's `terminus` script (what `make run` installed)."""
    script = Path(sys.executable).parent / "terminus"
    return str(script) if script.exists() else f"{sys.executable} -m gateway.cli.main"


def run(ports: Ports, keep: bool = False) -> None:
    ports.check_free()
    workdir = Path(tempfile.mkdtemp(prefix="terminus-demo-"))
    stack = Stack(ports, workdir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("==> starting the server, a local Lambda, an Envoy terminating gateway, terminus's gateway "
              "and the api sidecar ...", flush=True)
        stack.start()
        up = f"localhost:{ports.upstream}"
        print(f"""
==> ready. The api service's sidecar listens on {up}; the `authentication` Lambda answers behind
    two terminating gateways (Envoy on :{ports.envoy_gateway}, terminus's native gateway on :{ports.native_gateway}).
    HTTP API: http://{stack.http} (export CONSUL_HTTP_ADDR={stack.http}); logs: {workdir}

  Call the function through the mesh:
    curl -s http://{up}/hello -d '{{"name": "mesh"}}'

  Deny api -> authentication, then call again (403):
    {_terminus()} intention create --deny --http-addr {stack.http} api authentication && curl -s -i http://{up}/hello

Ctrl-C stops everything.""", flush=True)
        while not stopping:
            for name, proc in stack.procs:
                if proc.poll() is not None:
                    raise CLIError(f"{name} exited; see {workdir / (name + '.log')}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        print("==> stopped", flush=True)


def main_json(ports: Ports) -> str:  # pragma: no cover - convenience for scripts
    return json.dumps(vars(ports))
