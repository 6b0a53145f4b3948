"""Loopback ports for local stacks (tests, benchmarks): free ones, picked where no outgoing
connection can take them first, and whether one is listening yet.

The usual trick, ``bind(0)`` and close, hands out a port from the kernel's ephemeral range.
Between that close and the moment a server binds the port, any outgoing connection on the
machine may get that very port as its source port, and the server then fails with
EADDRINUSE (Envoy exits when its admin port is taken). A stack that starts a dozen processes
makes many such connections while it starts: the likely cause of the benchmark runs that
stopped at start-up with "envoy-bench-sidecar exited". Ports below the ephemeral range are
never given to outgoing connections.
"""

from __future__ import annotations

import random
import socket
import threading

__all__ = ["free_port", "is_listening"]

_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_LINUX_DEFAULT = (32768, 60999)
_LOWEST = 10000  # below this, well-known services of the machine
_given: set[int] = set()  # never the same port twice in one process
_lock = threading.Lock()
_rng = random.SystemRandom()  # forked test workers must not draw the same sequence


def ephemeral_range() -> tuple[int, int]:
    try:
        with open(_RANGE_FILE) as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return _LINUX_DEFAULT
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on, outside the ephemeral range."""
    low, high = ephemeral_range()
    choices = range(_LOWEST, low) if low - _LOWEST >= 1000 else range(high + 1, 65536)
    with _lock:
        for _ in range(200 if choices else 0):
            port = _rng.choice(choices)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    with socket.socket() as s:  # nothing free outside the range: the kernel's choice
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True
