"""Throwaway PostgreSQL clusters for tests: real server binaries, a temp dir, a free port."""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from gateway.loopback import free_port

DB_USER = "terminus"
DB_NAME = "terminus"
OS_USER = "postgres"
PG_TIMEOUT = 60

_live: set[PostgresCluster] = set()


def find_pg_bin() -> str | None:
    """Return the PostgreSQL server bin dir: $TERMINUS_PG_BIN, pg_config, or newest /usr/lib/postgresql."""
    env = os.environ.get("TERMINUS_PG_BIN")
    if env:
        return env
    try:
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    if out and (Path(out) / "initdb").is_file():
        return out

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()]
    if candidates:
        return str(max(candidates, key=version))
    return None


def _pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _traversable_by_others(path: Path) -> bool:
    """True if every ancestor of `path` (inclusive) is o+x, so another user can reach it."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresCluster:
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1 at a fixed free port."""

    def __init__(self, pg_bin: str | None = None) -> None:
        """Create the temp dir and run initdb (as `postgres` when running as root)."""
        bin_dir = pg_bin or find_pg_bin()
        if not bin_dir:
            raise RuntimeError(
                "PostgreSQL server binaries not found: set TERMINUS_PG_BIN to a dir containing "
                "initdb/pg_ctl, or install the postgresql server package"
            )
        self.bin = Path(bin_dir)
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (self.bin / tool).is_file():
                raise RuntimeError(f"PostgreSQL binary {tool!r} missing from {self.bin}")
        self._as_root = os.geteuid() == 0
        self._uid = self._gid = -1
        if self._as_root:
            try:
                pw = pwd.getpwnam(OS_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root but no {OS_USER!r} OS user exists to run initdb/pg_ctl"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root but `runuser` is not available")

        base = Path(tempfile.gettempdir())
        if self._as_root and not _traversable_by_others(base):
            base = Path("/tmp")
        self.root = Path(tempfile.mkdtemp(prefix="terminus-pg-", dir=base))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self._pid: int | None = None
        self._db_created = False
        self._closed = False
        _live.add(self)
        try:
            if self._as_root:
                os.chown(self.root, self._uid, self._gid)
            self._run(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", DB_USER,
                "-E", "UTF8", "--locale=C", "--no-sync",
            )
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `terminus` database."""
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def pid(self) -> int | None:
        """PID of the running postmaster, if any."""
        return self._pid

    def _run(self, tool: str, *args: str, timeout: float = PG_TIMEOUT + 30) -> str:
        """Run a PostgreSQL binary (via runuser as root); raise RuntimeError with output on failure."""
        cmd = [str(self.bin / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(
                cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{tool} timed out after {timeout}s: {cmd}") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {' '.join(cmd)}\n"
                f"{proc.stdout}{proc.stderr}{self._log_tail()}"
            )
        return proc.stdout

    def _log_tail(self) -> str:
        try:
            return "\n--- server log ---\n" + "\n".join(self.logfile.read_text().splitlines()[-30:])
        except OSError:
            return ""

    def _read_pidfile(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        """Start the server (idempotent); creates the `terminus` database on first start."""
        if self._closed:
            raise RuntimeError("cluster is closed")
        if self._pid is not None and _pid_alive(self._pid):
            return
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
            "-c fsync=on -c shared_buffers=32MB -c max_connections=50"
        )
        attempts = 1 if self._db_created else 3  # the port may only change before any client saw it
        for attempt in range(attempts):
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.logfile),
                    "-w", "-t", str(PG_TIMEOUT), "-o", opts, "start",
                )
                break
            except RuntimeError as exc:
                self._kill_from_pidfile()
                if attempt + 1 < attempts and "could not bind" in str(exc):
                    self.port = free_port()
                    opts = re.sub(r"-p \d+", f"-p {self.port}", opts)
                    continue
                raise
        self._pid = self._read_pidfile()
        if not self._db_created:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres", autocommit=True
            ) as conn:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            self._db_created = True

    def stop(self) -> None:
        """Fast-stop the server; fall back to signalling the postmaster from postmaster.pid."""
        pid = self._read_pidfile() or self._pid
        if pid is None:
            self._pid = None
            return
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(PG_TIMEOUT), "stop")
        except RuntimeError:
            pass
        if _pid_alive(pid):
            self._kill(pid)
        self._pid = None

    def _kill_from_pidfile(self) -> None:
        pid = self._read_pidfile()
        if pid is not None and _pid_alive(pid):
            self._kill(pid)

    @staticmethod
    def _kill(pid: int) -> None:
        """SIGQUIT (immediate shutdown), then SIGKILL if it lingers."""
        for sig, wait in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _pid_alive(pid):
                    return
                time.sleep(0.05)

    def close(self) -> None:
        """Stop the server and delete the temp dir (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _live.discard(self)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh cluster, yield its SQLAlchemy URL, and always tear it down."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@atexit.register
def _close_all() -> None:
    """Stop any cluster an interrupted run left behind."""
    for cluster in list(_live):
        try:
            cluster.close()
        except Exception:
            pass
