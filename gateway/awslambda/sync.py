"""Sync tagged AWS Lambda functions into the terminus catalog, as consul-lambda-registrator does.

consul-lambda-registrator (consul-semantics.md §4.3) is a Lambda function driven by EventBridge;
this is its full-sync path as a one-shot command, without EventBridge, SSM or mTLS material:

* a function tagged ``serverless.consul.hashicorp.com/v1alpha1/lambda/enabled = "true"`` becomes
  a service of the same name on the external node ``lambdas``, plus one service
  ``<function>-<alias>`` per alias in the ``.../aliases`` tag (``+``-separated), whose ARN is
  qualified by the alias;
* each service gets a ``service-defaults`` entry with ``Protocol = "http"`` and the serverless
  plugin's Meta keys (``enabled``, ``arn``, ``region`` (from the ARN), ``payload-passthrough``,
  ``invocation-mode``), the form terminus' Lambda patcher reads (§4.1);
* services this sync (or the registrator) created carry the catalog tag
  ``managed-by-lambda-registrator`` (what the registrator looks for) and the Meta marker
  ``external-source: lambda-sync``; one whose function is gone or no longer enabled is
  deregistered together with its ``service-defaults``; changed tags rewrite the ``service-defaults``.

Only services recorded for the synced region are ever deregistered, so syncing several regions
one after another does not make them remove each other's functions.

:func:`plan_sync` is pure; :func:`list_lambda_functions` reads AWS; :func:`apply_sync` writes
terminus through anything with ``get``/``put``/``delete`` like :class:`gateway.cli.client.Client`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from gateway.awslambda.config import META_ARN, META_ENABLED, META_INVOCATION, META_PASSTHROUGH, META_PREFIX, META_REGION

__all__ = [
    "LambdaService", "SyncPlan", "apply_sync", "list_lambda_functions", "plan_sync",
    "read_registered", "service_defaults_meta",
]

TAG_PREFIX = META_PREFIX  # the registrator's function tags use the same names as the Meta keys
ENABLED_TAG = TAG_PREFIX + "enabled"
PAYLOAD_PASSTHROUGH_TAG = TAG_PREFIX + "payload-passthrough"
INVOCATION_MODE_TAG = TAG_PREFIX + "invocation-mode"
DATACENTER_TAG = TAG_PREFIX + "datacenter"
NAMESPACE_TAG = TAG_PREFIX + "namespace"
PARTITION_TAG = TAG_PREFIX + "partition"
ALIASES_TAG = TAG_PREFIX + "aliases"
ALIAS_SEPARATOR = "+"  # `,` is not allowed in AWS tag values

# the service-defaults Meta keys are defined once, with their parser (config.py)
META_PAYLOAD_PASSTHROUGH = META_PASSTHROUGH
META_INVOCATION_MODE = META_INVOCATION
LAMBDA_META_KEYS = (META_ENABLED, META_ARN, META_REGION, META_PAYLOAD_PASSTHROUGH, META_INVOCATION_MODE)

MANAGED_TAG = "managed-by-lambda-registrator"  # the registrator's catalog tag
MARKER_KEY = "external-source"
MARKER_VALUE = "lambda-sync"
DEFAULT_NODE = "lambdas"
NODE_META = {"external-node": "true", "external-probe": "true"}
NODE_ADDRESS = "lambda.amazonaws.com"  # nothing dials it: the Lambda patcher replaces the cluster

_DEFAULT_TENANCY = ("", "default")


@dataclass(frozen=True)
class LambdaService:
    """One catalog service wanted for a function (or one alias of it)."""

    name: str
    function: str
    arn: str
    region: str
    payload_passthrough: bool = False
    invocation_mode: str = "SYNCHRONOUS"  # SYNCHRONOUS | ASYNCHRONOUS
    alias: str | None = None

    def meta(self) -> dict[str, str]:
        return service_defaults_meta(self)


@dataclass
class SyncPlan:
    register: list[LambdaService] = field(default_factory=list)
    update: list[LambdaService] = field(default_factory=list)
    deregister: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "function: why", nothing is done for them

    @property
    def empty(self) -> bool:
        return not (self.register or self.update or self.deregister)


def service_defaults_meta(svc: LambdaService) -> dict[str, str]:
    """The Meta the serverless patcher reads (its invocation mode check is the lowercase word)."""
    return {
        META_ENABLED: "true",
        META_ARN: svc.arn,
        META_REGION: svc.region,
        META_PAYLOAD_PASSTHROUGH: "true" if svc.payload_passthrough else "false",
        META_INVOCATION_MODE: svc.invocation_mode.lower(),
        MARKER_KEY: MARKER_VALUE,
    }


def _split_arn(arn: str) -> tuple[str, str]:
    """``arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`` → (unqualified ARN, region)."""
    parts = arn.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda" or parts[5] != "function" or not parts[3]:
        raise ValueError(f"not a Lambda function ARN: {arn!r}")
    return ":".join(parts[:7]), parts[3]


def _wanted(fn: dict[str, Any], datacenter: str | None) -> tuple[list[LambdaService], str | None]:
    """The services one function asks for, or ([], why it is skipped); ([], None) = not enabled."""
    name = fn["name"]
    tags: dict[str, str] = fn.get("tags") or {}
    if tags.get(ENABLED_TAG) != "true":
        return [], None
    dc = tags.get(DATACENTER_TAG, "")
    if dc and datacenter and dc != datacenter:
        return [], None  # another datacenter's function: not ours to register (nor to keep)
    if tags.get(NAMESPACE_TAG, "") not in _DEFAULT_TENANCY or tags.get(PARTITION_TAG, "") not in _DEFAULT_TENANCY:
        return [], f"{name}: namespaces and admin partitions are not supported by terminus"
    try:
        arn, region = _split_arn(fn["arn"])
    except ValueError as exc:
        return [], f"{name}: {exc}"
    mode = tags.get(INVOCATION_MODE_TAG, "SYNCHRONOUS").strip().upper()
    if mode not in ("SYNCHRONOUS", "ASYNCHRONOUS"):
        return [], f"{name}: invalid invocation mode {tags[INVOCATION_MODE_TAG]!r} (SYNCHRONOUS or ASYNCHRONOUS)"
    passthrough = tags.get(PAYLOAD_PASSTHROUGH_TAG, "").strip().lower() == "true"
    base = LambdaService(name, name, arn, region, passthrough, mode)
    out = [base]
    raw = tags.get(ALIASES_TAG, "")
    existing = fn.get("aliases")  # None: not looked up, trust the tag
    for alias in [a.strip() for a in raw.split(ALIAS_SEPARATOR) if a.strip()]:
        if existing is not None and alias not in existing:
            continue  # reported by plan_sync
        out.append(LambdaService(f"{name}-{alias}", name, f"{arn}:{alias}", region, passthrough, mode, alias))
    return out, None


def plan_sync(
    functions: list[dict[str, Any]],
    registered: dict[str, dict[str, Any]],
    *,
    region: str | None = None,
    datacenter: str | None = None,
) -> SyncPlan:
    """What to change so terminus matches the functions. Pure.

    ``functions``: ``{"name", "arn", "tags", "aliases"}`` as :func:`list_lambda_functions` gives
    (``aliases`` = the function's existing alias names, or ``None`` if unknown).
    ``registered``: the Lambda services terminus holds now, by name, each
    ``{"service": bool (in the catalog), "meta": service-defaults Meta or None}``
    (:func:`read_registered`). ``region``: the region the functions were listed from; managed
    services recorded for another region are left alone. ``datacenter``: terminus' datacenter;
    functions tagged for another one are ignored.
    """
    plan = SyncPlan()
    wanted: dict[str, LambdaService] = {}
    for fn in sorted(functions, key=lambda f: f["name"]):
        services, why = _wanted(fn, datacenter)
        if why:
            plan.skipped.append(why)
            continue
        existing = fn.get("aliases")
        if services and existing is not None:
            listed = [a.strip() for a in (fn.get("tags") or {}).get(ALIASES_TAG, "").split(ALIAS_SEPARATOR)]
            for alias in [a for a in listed if a and a not in existing]:
                plan.skipped.append(f"{fn['name']}: alias {alias!r} does not exist")
        for svc in services:
            if svc.name in wanted:
                other = wanted[svc.name]
                plan.skipped.append(f"{fn['name']}: service name {svc.name!r} already taken by "
                                    f"{other.arn}; {svc.arn} not registered")
                continue
            wanted[svc.name] = svc

    for name, svc in sorted(wanted.items()):
        current = registered.get(name)
        if current is None or not current.get("service") or current.get("meta") is None:
            plan.register.append(svc)
            continue
        meta = current["meta"] or {}
        want = svc.meta()
        if any(meta.get(k) != want[k] for k in LAMBDA_META_KEYS) or meta.get(MARKER_KEY) != MARKER_VALUE:
            plan.update.append(svc)

    for name, current in sorted(registered.items()):
        if name in wanted:
            continue
        recorded = (current.get("meta") or {}).get(META_REGION)
        if region and recorded and recorded != region:
            continue  # another region's function: a sync of that region owns it
        plan.deregister.append(name)
    return plan


# -- AWS ---------------------------------------------------------------------------------------

def list_lambda_functions(lambda_client: Any) -> list[dict[str, Any]]:
    """Every function in the client's region with its tags, and its aliases when it has the aliases tag."""
    out: list[dict[str, Any]] = []
    for page in lambda_client.get_paginator("list_functions").paginate():
        for fn in page.get("Functions", []):
            arn = fn["FunctionArn"]
            tags = lambda_client.list_tags(Resource=arn).get("Tags") or {}
            aliases: list[str] | None = None
            if tags.get(ENABLED_TAG) == "true" and tags.get(ALIASES_TAG):
                aliases = []
                for apage in lambda_client.get_paginator("list_aliases").paginate(FunctionName=fn["FunctionName"]):
                    aliases.extend(a["Name"] for a in apage.get("Aliases", []))
            out.append({"name": fn["FunctionName"], "arn": arn, "tags": tags, "aliases": aliases})
    return out


# -- terminus ----------------------------------------------------------------------------------

class ApiClient(Protocol):
    def get(self, path: str, **kw: Any) -> Any: ...
    def put(self, path: str, **kw: Any) -> Any: ...
    def delete(self, path: str, **kw: Any) -> Any: ...


def _q(name: str) -> str:
    return quote(name, safe="")


def read_registered(api: ApiClient) -> dict[str, dict[str, Any]]:
    """The Lambda services terminus holds: catalog services tagged ``managed-by-lambda-registrator``
    and ``service-defaults`` entries carrying the ``external-source: lambda-sync`` marker."""
    out: dict[str, dict[str, Any]] = {}
    for name, tags in (api.get("/v1/catalog/services") or {}).items():
        if MANAGED_TAG in (tags or ()):
            out[name] = {"service": True, "meta": None}
    for entry in api.get("/v1/config/service-defaults") or ():
        meta = entry.get("Meta") or {}
        name = entry["Name"]
        if name in out:
            out[name]["meta"] = meta
        elif meta.get(MARKER_KEY) == MARKER_VALUE:
            out[name] = {"service": False, "meta": meta}
    return out


def _ensure_node(api: ApiClient, node: str) -> None:
    if any(n.get("Node") == node for n in api.get("/v1/catalog/nodes") or ()):
        return
    api.put("/v1/catalog/register", json={"Node": node, "Address": NODE_ADDRESS, "NodeMeta": NODE_META})


def _write_defaults(api: ApiClient, svc: LambdaService) -> None:
    entry = api.get(f"/v1/config/service-defaults/{_q(svc.name)}", allow_404=True) or {}
    for key in ("CreateIndex", "ModifyIndex", "Hash"):
        entry.pop(key, None)
    meta = {k: v for k, v in (entry.get("Meta") or {}).items() if k not in LAMBDA_META_KEYS}
    entry.update({"Kind": "service-defaults", "Name": svc.name, "Protocol": "http", "Meta": {**meta, **svc.meta()}})
    api.put("/v1/config", json=entry)


def _register(api: ApiClient, svc: LambdaService, node: str) -> None:
    # service-defaults first (as the registrator does): the service never shows up unconfigured
    _write_defaults(api, svc)
    api.put("/v1/catalog/register", json={
        "Node": node, "SkipNodeUpdate": True, "NodeMeta": NODE_META,
        "Service": {"ID": svc.name, "Service": svc.name, "Tags": [MANAGED_TAG],
                    "Meta": {MARKER_KEY: MARKER_VALUE}},
    })


def _deregister(api: ApiClient, name: str) -> None:
    for inst in api.get(f"/v1/catalog/service/{_q(name)}", params={"tag": MANAGED_TAG}) or ():
        api.put("/v1/catalog/deregister", json={"Node": inst["Node"], "ServiceID": inst["ServiceID"]})
    if api.get(f"/v1/config/service-defaults/{_q(name)}", allow_404=True) is not None:
        api.delete(f"/v1/config/service-defaults/{_q(name)}")


def apply_sync(api_client: ApiClient, plan: SyncPlan, *, node: str = DEFAULT_NODE,
               report: Any = None) -> None:
    """Carry out ``plan``. ``report(action, name, svc_or_None)`` is called after each change."""
    if plan.register:
        _ensure_node(api_client, node)
    for svc in plan.register:
        _register(api_client, svc, node)
        if report:
            report("register", svc.name, svc)
    for svc in plan.update:
        _write_defaults(api_client, svc)
        if report:
            report("update", svc.name, svc)
    for name in plan.deregister:
        _deregister(api_client, name)
        if report:
            report("deregister", name, None)
