"""Catalog and agent registrations, and the health views built from them.

Records are stored in Consul's own shapes (Node, NodeService, HealthCheck) so the API
returns them as stored. `health_connect` is where sidecars and the xDS layer learn that a
service linked to a terminating gateway is reached through that gateway.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from gateway.acl.authorizer import permission_denied_message
from gateway.acl.resolver import Caller
from gateway.errors import InvalidInput, NotFound, PermissionDenied
from gateway.store.store import Store, Txn

KINDS = ("", "connect-proxy", "terminating-gateway", "mesh-gateway", "ingress-gateway", "api-gateway")
STATUSES = ("passing", "warning", "critical", "maintenance")
SIDECAR_PORT_RANGE = range(21000, 21256)
SERVICE_FIELDS = (
    "ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port", "Weights",
    "EnableTagOverride", "Kind", "Proxy", "Connect", "Namespace", "Partition",
)


def _deny(caller: Caller, perm: str, resource: str) -> PermissionDenied:
    return PermissionDenied(permission_denied_message(caller.accessor_id, perm, resource))


def normalize_service(svc: dict[str, Any]) -> dict[str, Any]:
    """A NodeService with Consul's defaults filled in, validated."""
    name = svc.get("Service") or ""
    if not name:
        raise InvalidInput("Must provide service name (Service.Service) with ID")
    kind = svc.get("Kind") or ""
    if kind == "typical":
        kind = ""
    if kind not in KINDS:
        raise InvalidInput(f'Invalid service kind: "{kind}"')
    port = svc.get("Port") or 0
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidInput(f"Invalid service port: {port!r}")
    out = {
        "ID": svc.get("ID") or name,
        "Service": name,
        "Tags": list(svc.get("Tags") or []),
        "Address": svc.get("Address") or "",
        "TaggedAddresses": svc.get("TaggedAddresses") or {},
        "Meta": svc.get("Meta") or {},
        "Port": port,
        "Weights": svc.get("Weights") or {"Passing": 1, "Warning": 1},
        "EnableTagOverride": bool(svc.get("EnableTagOverride")),
        "Kind": kind,
        "Proxy": copy.deepcopy(svc.get("Proxy") or {}),
        "Connect": copy.deepcopy(svc.get("Connect") or {}),
        "Namespace": svc.get("Namespace") or "default",
        "Partition": svc.get("Partition") or "default",
    }
    if kind == "connect-proxy" and not out["Proxy"].get("DestinationServiceName"):
        raise InvalidInput("Proxy.DestinationServiceName must be set for connect-proxy services")
    for up in out["Proxy"].get("Upstreams") or ():
        if not up.get("DestinationName"):
            raise InvalidInput("upstream destination name must be set")
        bind_port = up.get("LocalBindPort") or 0
        if not up.get("LocalBindSocketPath") and not (isinstance(bind_port, int) and 0 < bind_port <= 65535):
            raise InvalidInput(f"upstream {up['DestinationName']!r}: LocalBindPort must be set to a port between 1 and 65535")
    return out


def normalize_check(chk: dict[str, Any], node: str, default_status: str) -> dict[str, Any]:
    status = chk.get("Status") or default_status
    if status not in STATUSES:
        raise InvalidInput(f'Invalid check status: "{status}"')
    check_id = chk.get("CheckID") or chk.get("ID") or chk.get("Name") or ""
    if not check_id:
        raise InvalidInput("Must provide a CheckID or Name for each check")
    return {
        "Node": node,
        "CheckID": check_id,
        "Name": chk.get("Name") or check_id,
        "Status": status,
        "Notes": chk.get("Notes", ""),
        "Output": chk.get("Output", ""),
        "ServiceID": chk.get("ServiceID", ""),
        "ServiceName": chk.get("ServiceName", ""),
        "ServiceTags": chk.get("ServiceTags") or [],
        "Type": chk.get("Type", ""),
        "Definition": chk.get("Definition") or {},
        "Namespace": chk.get("Namespace") or "default",
        "Partition": chk.get("Partition") or "default",
    }


class CatalogService:
    def __init__(self, store: Store, datacenter: str, node_name: str, node_address: str) -> None:
        self.store = store
        self.state = store.state
        self.datacenter = datacenter
        self.node_name = node_name
        self.node_address = node_address

    # -- writes --------------------------------------------------------------------------------

    def ensure_agent_node(self) -> None:
        """The node this server runs as, with a passing serfHealth check, as a Consul agent has."""
        if self.state.get("nodes", (self.node_name,)) is not None:
            return

        def write(txn: Txn) -> None:
            txn.put("nodes", (self.node_name,), self._node_body({"Node": self.node_name, "Address": self.node_address}))
            txn.put("checks", (self.node_name, "serfHealth"), normalize_check(
                {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                 "Output": "Agent alive and reachable", "Type": ""}, self.node_name, "passing"))

        self.store.write(write)

    def _node_body(self, reg: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "ID": reg.get("ID") or (existing or {}).get("ID") or str(uuid.uuid4()),
            "Node": reg["Node"],
            "Address": reg.get("Address") or (existing or {}).get("Address", ""),
            "Datacenter": reg.get("Datacenter") or self.datacenter,
            "TaggedAddresses": reg.get("TaggedAddresses") or (existing or {}).get("TaggedAddresses") or {},
            "Meta": reg.get("NodeMeta") or reg.get("Meta") or (existing or {}).get("Meta") or {},
        }

    def register(self, caller: Caller, reg: dict[str, Any]) -> None:
        """PUT /v1/catalog/register."""
        node = reg.get("Node") or ""
        if not node:
            raise InvalidInput("Must provide node")
        if not reg.get("SkipNodeUpdate") and not reg.get("Address"):
            raise InvalidInput("Must provide address if SkipNodeUpdate is not set")
        dc = reg.get("Datacenter") or self.datacenter
        if dc != self.datacenter:
            raise InvalidInput(f"No path to datacenter: {dc!r} is not this server's datacenter ({self.datacenter!r})")
        service = normalize_service(reg["Service"]) if reg.get("Service") else None
        checks = [c for c in [reg.get("Check")] + list(reg.get("Checks") or []) if c]
        normalized_checks = [normalize_check(c, node, "critical") for c in checks]
        if not reg.get("SkipNodeUpdate") and not caller.authorizer.node_write(node):
            raise _deny(caller, "node:write", node)
        if service is not None and not caller.authorizer.service_write(service["Service"]):
            raise _deny(caller, "service:write", service["Service"])

        def write(txn: Txn) -> None:
            existing = txn.get("nodes", (node,))
            if existing is None and reg.get("SkipNodeUpdate"):
                raise InvalidInput(f"Node {node!r} does not exist; cannot use SkipNodeUpdate")
            if not reg.get("SkipNodeUpdate"):
                txn.put("nodes", (node,), self._node_body(reg, existing))
            if service is not None:
                txn.put("services", (node, service["ID"]), {**service, "Node": node})
            for chk in normalized_checks:
                if chk["ServiceID"] and txn.get("services", (node, chk["ServiceID"])) is None:
                    raise InvalidInput(f"Unknown service ID {chk['ServiceID']!r} for check")
                if chk["ServiceID"]:
                    chk["ServiceName"] = txn.get("services", (node, chk["ServiceID"]))["Service"]
                txn.put("checks", (node, chk["CheckID"]), chk)

        self.store.write(write)

    def deregister(self, caller: Caller, body: dict[str, Any]) -> None:
        """PUT /v1/catalog/deregister: a whole node, one service, or one check."""
        node = body.get("Node") or ""
        if not node:
            raise InvalidInput("Must provide node")
        service_id, check_id = body.get("ServiceID"), body.get("CheckID")

        def write(txn: Txn) -> None:
            if service_id:
                svc = txn.get("services", (node, service_id))
                if svc is None:
                    return
                if not caller.authorizer.service_write(svc["Service"]):
                    raise _deny(caller, "service:write", svc["Service"])
                self._delete_service(txn, node, service_id)
            elif check_id:
                if not caller.authorizer.node_write(node):
                    raise _deny(caller, "node:write", node)
                txn.delete("checks", (node, check_id))
            else:
                if not caller.authorizer.node_write(node):
                    raise _deny(caller, "node:write", node)
                for (n, sid) in [k for k in self.state.tables["services"] if k[0] == node]:
                    self._delete_service(txn, n, sid)
                for key in sorted(self.state.checks_by_node.get(node, ())):
                    txn.delete("checks", key)
                txn.delete("nodes", (node,))

        self.store.write(write)

    def _delete_service(self, txn: Txn, node: str, service_id: str) -> None:
        txn.delete("services", (node, service_id))
        for chk in self.state.node_checks(node):
            if chk.get("ServiceID") == service_id:
                txn.delete("checks", (node, chk["CheckID"]))

    def agent_register(self, caller: Caller, reg: dict[str, Any]) -> None:
        """PUT /v1/agent/service/register, including Consul's sidecar_service expansion."""
        if not reg.get("Name"):
            raise InvalidInput("Missing service name")
        service = normalize_service({**reg, "Service": reg["Name"]})
        if not caller.authorizer.service_write(service["Service"]):
            raise _deny(caller, "service:write", service["Service"])
        sidecar_spec = (service["Connect"] or {}).pop("SidecarService", None)
        checks = [c for c in [reg.get("Check")] + list(reg.get("Checks") or []) if c]
        normalized_checks = [
            normalize_check({**c, "ServiceID": service["ID"], "ServiceName": service["Service"]}, self.node_name, "critical")
            for c in checks
        ]
        self.ensure_agent_node()

        def write(txn: Txn) -> None:
            txn.put("services", (self.node_name, service["ID"]), {**service, "Node": self.node_name})
            for chk in normalized_checks:
                txn.put("checks", (self.node_name, chk["CheckID"]), chk)
            if sidecar_spec is not None:
                sidecar = self._sidecar(service, sidecar_spec, txn)
                if not caller.authorizer.service_write(sidecar["Service"]):
                    raise _deny(caller, "service:write", sidecar["Service"])
                txn.put("services", (self.node_name, sidecar["ID"]), {**sidecar, "Node": self.node_name})

        self.store.write(write)

    def _sidecar(self, parent: dict[str, Any], spec: dict[str, Any], txn: Txn) -> dict[str, Any]:
        """Consul's sidecarServiceFromNodeService: `<id>-sidecar-proxy`, port from 21000-21255."""
        sid = spec.get("ID") or f"{parent['ID']}-sidecar-proxy"
        proxy = copy.deepcopy(spec.get("Proxy") or {})
        proxy.setdefault("DestinationServiceName", parent["Service"])
        proxy.setdefault("DestinationServiceID", parent["ID"])
        proxy.setdefault("LocalServiceAddress", "127.0.0.1")
        if parent["Port"]:
            proxy.setdefault("LocalServicePort", parent["Port"])
        port = spec.get("Port") or 0
        if not port:
            existing = txn.get("services", (self.node_name, sid))
            port = existing["Port"] if existing else self._free_sidecar_port(sid)
        return normalize_service({
            **spec,
            "ID": sid,
            "Service": spec.get("Name") or f"{parent['Service']}-sidecar-proxy",
            "Kind": "connect-proxy",
            "Port": port,
            "Address": spec.get("Address") or parent["Address"],
            "Tags": spec.get("Tags") if spec.get("Tags") is not None else parent["Tags"],
            "Meta": spec.get("Meta") if spec.get("Meta") is not None else parent["Meta"],
            "Proxy": proxy,
            "Namespace": parent["Namespace"],
            "Partition": parent["Partition"],
        })

    def _free_sidecar_port(self, sid: str) -> int:
        used = {
            s["Port"] for (node, other), s in self.state.tables["services"].items()
            if node == self.node_name and other != sid and s.get("Kind") == "connect-proxy"
        }
        for port in SIDECAR_PORT_RANGE:
            if port not in used:
                return port
        raise InvalidInput("No sidecar port available in the range 21000-21255")

    def agent_deregister(self, caller: Caller, service_id: str) -> None:
        svc = self.state.get("services", (self.node_name, service_id))
        if svc is None:
            raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.')
        if not caller.authorizer.service_write(svc["Service"]):
            raise _deny(caller, "service:write", svc["Service"])

        def write(txn: Txn) -> None:
            self._delete_service(txn, self.node_name, service_id)
            sidecar = txn.get("services", (self.node_name, f"{service_id}-sidecar-proxy"))
            if sidecar is not None and sidecar.get("Proxy", {}).get("DestinationServiceID") == service_id:
                self._delete_service(txn, self.node_name, sidecar["ID"])

        self.store.write(write)

    # -- reads -----------------------------------------------------------------------------------

    def service_by_id(self, caller: Caller, service_id: str) -> dict[str, Any]:
        """The agent's own registration first, then any node's (proxies registered through
        the catalog are configured too)."""
        keys = [(self.node_name, service_id)] + sorted(self.state.services_by_id.get(service_id, ()))
        for key in keys:
            svc = self.state.get("services", key)
            if svc is not None:
                if not caller.authorizer.service_read(svc["Service"]):
                    raise _deny(caller, "service:read", svc["Service"])
                return service_json(svc)
        raise NotFound(f'unknown service ID: {service_id}')

    def services(self, caller: Caller) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for svc in self.state.tables["services"].values():
            if caller.authorizer.service_read(svc["Service"]):
                out.setdefault(svc["Service"], set()).update(svc.get("Tags") or ())
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    def nodes(self, caller: Caller) -> list[dict[str, Any]]:
        return [n for _, n in sorted(self.state.tables["nodes"].items()) if caller.authorizer.node_read(n["Node"])]

    def catalog_service(self, caller: Caller, name: str, tag: str | None = None) -> list[dict[str, Any]]:
        if not caller.authorizer.service_read(name):
            return []
        out = []
        for svc in self.state.services_named(name):
            if tag and tag not in (svc.get("Tags") or ()):
                continue
            node = self.state.get("nodes", (svc["Node"],)) or {}
            if not caller.authorizer.node_read(svc["Node"]):
                continue
            out.append(catalog_service_json(node, svc))
        return out

    def health_service(self, caller: Caller, name: str, passing: bool = False, connect: bool = False, tag: str | None = None) -> list[dict[str, Any]]:
        if not caller.authorizer.service_read(name):
            return []
        instances = self.connect_instances(name) if connect else self.state.services_named(name)
        out = []
        for svc in instances:
            if tag and tag not in (svc.get("Tags") or ()):
                continue
            if not caller.authorizer.node_read(svc["Node"]):
                continue
            entry = self.health_entry(svc)
            if passing and any(c["Status"] != "passing" for c in entry["Checks"]):
                continue
            out.append(entry)
        return out

    def health_entry(self, svc: dict[str, Any]) -> dict[str, Any]:
        node = self.state.get("nodes", (svc["Node"],)) or {"Node": svc["Node"]}
        checks = [c for c in self.state.node_checks(svc["Node"]) if c.get("ServiceID") in ("", svc["ID"])]
        return {"Node": node, "Service": service_json(svc), "Checks": checks}

    def connect_instances(self, name: str) -> list[dict[str, Any]]:
        """What a sidecar dials to reach `name`: its proxies, native instances, and the
        terminating gateways that front it (appended, as Consul's checkServiceNodesTxn does)."""
        out = []
        for svc in self.state.tables["services"].values():
            if svc.get("Kind") == "connect-proxy" and svc["Proxy"].get("DestinationServiceName") == name:
                out.append(svc)
            elif svc["Service"] == name and (svc.get("Connect") or {}).get("Native"):
                out.append(svc)
        for gateway in self.gateways_for(name):
            out.extend(s for s in self.state.services_named(gateway) if s.get("Kind") == "terminating-gateway")
        return sorted(out, key=lambda s: (s["Node"], s["ID"]))

    def gateways_for(self, service: str, namespace: str = "default") -> list[str]:
        """Names of terminating gateways whose config entry links `service` (or `*`)."""
        names = []
        target = self.state.services_named(service)
        is_connect = any(s.get("Kind") or (s.get("Connect") or {}).get("Native") for s in target)
        for entry in self.state.config_entries("terminating-gateway"):
            for link in entry.get("Services") or ():
                if link.get("Namespace", "default") != namespace:
                    continue
                if link["Name"] == service or (link["Name"] == "*" and target and not is_connect):
                    names.append(entry["Name"])
                    break
        return sorted(names)

    def linked_services(self, gateway: str) -> list[dict[str, Any]]:
        """The gateway-services mapping: one record per service a terminating gateway fronts."""
        entry = self.state.config_entry("terminating-gateway", gateway)
        if entry is None:
            return []
        out: dict[str, dict[str, Any]] = {}
        for link in entry.get("Services") or ():
            if link["Name"] == "*":
                for name in sorted(self.state.services_by_name):
                    svcs = self.state.services_named(name)
                    if all(not s.get("Kind") and not (s.get("Connect") or {}).get("Native") for s in svcs):
                        out.setdefault(name, {**link, "Service": name, "FromWildcard": True})
            else:
                out[link["Name"]] = {**link, "Service": link["Name"], "FromWildcard": False}
        return [out[k] for k in sorted(out)]


def service_json(svc: dict[str, Any]) -> dict[str, Any]:
    return {k: svc[k] for k in (*SERVICE_FIELDS, "CreateIndex", "ModifyIndex") if k in svc}


def catalog_service_json(node: dict[str, Any], svc: dict[str, Any]) -> dict[str, Any]:
    return {
        "ID": node.get("ID", ""),
        "Node": svc["Node"],
        "Address": node.get("Address", ""),
        "Datacenter": node.get("Datacenter", ""),
        "TaggedAddresses": node.get("TaggedAddresses") or {},
        "NodeMeta": node.get("Meta") or {},
        "ServiceKind": svc.get("Kind", ""),
        "ServiceID": svc["ID"],
        "ServiceName": svc["Service"],
        "ServiceTags": svc.get("Tags") or [],
        "ServiceAddress": svc.get("Address", ""),
        "ServiceTaggedAddresses": svc.get("TaggedAddresses") or {},
        "ServiceWeights": svc.get("Weights") or {},
        "ServiceMeta": svc.get("Meta") or {},
        "ServicePort": svc.get("Port", 0),
        "ServiceEnableTagOverride": svc.get("EnableTagOverride", False),
        "ServiceProxy": svc.get("Proxy") or {},
        "ServiceConnect": svc.get("Connect") or {},
        "Namespace": svc.get("Namespace", "default"),
        "Partition": svc.get("Partition", "default"),
        "CreateIndex": svc["CreateIndex"],
        "ModifyIndex": svc["ModifyIndex"],
    }
