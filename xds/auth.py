"""Who may fetch a proxy's config: its token needs service:write on the proxied service
(for a terminating gateway: on the gateway), as a Consul proxy's token does. The token
comes from gRPC metadata `x-consul-token` (what `terminus connect envoy --token` sets)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.control import ControlPlane
from gateway.errors import PermissionDenied
from xds.builder import find_proxy


def xds_authorizer(cp: ControlPlane) -> Callable[[Any, Sequence[tuple[str, Any]]], None]:
    def authorize(node: Any, metadata: Sequence[tuple[str, Any]]) -> None:
        token = next((str(v) for k, v in metadata or () if k == "x-consul-token"), None)
        if token is None and node is not None and node.metadata is not None:
            field = node.metadata.fields.get("x-consul-token") if node.metadata.fields else None
            token = field.string_value if field is not None else None
        try:
            caller = cp.acl_resolver.resolve(token)
        except PermissionDenied as exc:
            raise PermissionError(exc.message) from None
        svc = find_proxy(cp, node.id)
        if svc is None:
            return  # unknown proxy: it gets an empty config, nothing to protect
        target = svc["Service"] if svc.get("Kind") == "terminating-gateway" else svc["Proxy"]["DestinationServiceName"]
        if not caller.authorizer.service_write(target):
            raise PermissionError(f"token lacks service:write on {target!r}")

    return authorize
