"""moto in-process for tests: an AWS-compatible endpoint on 127.0.0.1 with Lambda's
lambda-simple backend (no Docker). moto's auth switch is process-global, so leaving always
turns it back off and clears state: one test's IAM enforcement never leaks into another's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def set_auth_counter(endpoint: str, value: bytes) -> None:
    """`value` more unauthenticated calls are allowed, then SigV4 is enforced (b"inf": never)."""
    r = httpx.post(f"{endpoint}/moto-api/reset-auth", content=value, headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 200, r.text


@contextmanager
def threaded_moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        httpx.post(f"{endpoint}/moto-api/config", json={"lambda": {"use_docker": False}}, timeout=10).raise_for_status()
        yield endpoint
    finally:
        try:
            set_auth_counter(endpoint, b"inf")
            httpx.post(f"{endpoint}/moto-api/reset", timeout=10)
        finally:
            server.stop()
