"""The CLI's HTTP client: Consul's environment variables, one-line errors."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_ADDR = "127.0.0.1:8500"


class CLIError(Exception):
    """Printed as one line; exit code 1."""


def resolve_addr(flag: str | None) -> str:
    addr = flag or os.environ.get("TERMINUS_HTTP_ADDR") or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


def resolve_token(flag: str | None) -> str | None:
    return flag or os.environ.get("TERMINUS_HTTP_TOKEN") or os.environ.get("CONSUL_HTTP_TOKEN") or None


class Client:
    def __init__(self, addr: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = resolve_addr(addr)
        headers = {}
        tok = resolve_token(token)
        if tok:
            headers["X-Consul-Token"] = tok
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None, allow_404: bool = False) -> Any:
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except httpx.HTTPError as exc:
            raise CLIError(f"Error connecting to terminus at {self.base}: {exc}") from None
        if resp.status_code == 404 and allow_404:
            return None
        if resp.status_code >= 400:
            message = resp.text.strip().replace("\n", " ") or resp.reason_phrase
            raise CLIError(f"Unexpected response code: {resp.status_code} ({message})")
        if not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)
