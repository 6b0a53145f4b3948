"""Process logging for `terminus gateway`: Consul's level names, and an access log that does
not cost a write per request.

Every request gets one line on the ``terminus.gateway.access`` logger (caller, decision,
function, status, latency). Lines go to stderr through a buffer flushed every second, or at
once when a warning or error comes, as Envoy's file access logs are flushed on an interval:
a write per request would be a system call per request on the hot path.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from collections.abc import Callable

__all__ = ["LEVELS", "configure", "parse_level"]

# Consul's -log-level names (trace is Consul's finest; Python has nothing below DEBUG)
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
FLUSH_INTERVAL = 1.0  # seconds an access-log line may wait in the buffer
BUFFER_RECORDS = 512
FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def parse_level(value: str) -> int:
    level = LEVELS.get(value.strip().lower())
    if level is None:
        raise ValueError(f"--log-level must be one of {', '.join(n for n in LEVELS if n != 'warning')}, not {value!r}")
    return level


def configure(level: int, access_log: bool = True) -> Callable[[], None]:
    """Send this process's logs to stderr at ``level``; ``access_log=False`` silences the
    per-request lines only. Returns a function that flushes and stops the buffer."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter(FORMAT))
    buffered = logging.handlers.MemoryHandler(BUFFER_RECORDS, flushLevel=logging.WARNING, target=stream)
    root = logging.getLogger()
    root.addHandler(buffered)
    root.setLevel(level)
    logging.getLogger("terminus.gateway.access").setLevel(logging.INFO if access_log and level <= logging.INFO
                                                          else logging.WARNING)
    stop = threading.Event()

    def flush_every_interval() -> None:
        while not stop.wait(FLUSH_INTERVAL):
            buffered.flush()

    threading.Thread(target=flush_every_interval, name="log-flush", daemon=True).start()

    def close() -> None:
        stop.set()
        buffered.flush()
        root.removeHandler(buffered)
        buffered.close()

    return close
