"""`/v1/connect/ca/*`, `/v1/agent/connect/*`: roots, CA configuration, leaves, CSRs, authorize."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.acl.authorizer import permission_denied_message
from gateway.api.http import blocking, caller, consul_json, control, json_object, parse_index, run, wait_seconds
from gateway.errors import InvalidInput, PermissionDenied
from gateway.identity.spiffe import InvalidSpiffeID, ServiceID, parse_consul_id
from gateway.intentions.engine import ServiceName

router = APIRouter(tags=["connect"])
CA_TABLE = "system"


def _roots(request: Request, index: int) -> Response:
    roots = control(request).ca.roots_json()
    if request.query_params.get("pem", "").lower() in ("1", "true"):
        return Response("".join(r["RootCert"] for r in roots["Roots"]), media_type="application/pem-certificate-chain",
                        headers={"X-Consul-Index": str(index)})
    return consul_json(roots, index)


@router.get("/v1/connect/ca/roots")
async def ca_roots(request: Request) -> Response:
    return _roots(request, await blocking(request, CA_TABLE))


@router.get("/v1/agent/connect/ca/roots")
async def agent_ca_roots(request: Request) -> Response:
    return _roots(request, await blocking(request, CA_TABLE))


@router.get("/v1/connect/ca/configuration")
async def ca_configuration(request: Request) -> JSONResponse:
    who = caller(request)
    if not who.authorizer.operator_read():
        raise PermissionDenied(permission_denied_message(who.accessor_id, "operator:read", None))
    return consul_json(control(request).ca.configuration_json())


@router.put("/v1/connect/ca/configuration")
async def set_ca_configuration(request: Request) -> JSONResponse:
    who = caller(request)
    if not who.authorizer.operator_write():
        raise PermissionDenied(permission_denied_message(who.accessor_id, "operator:write", None))
    body = await json_object(request)
    await run(control(request).ca.set_configuration, body)
    return consul_json(None)


@router.get("/v1/agent/connect/ca/leaf/{service}")
async def leaf(request: Request, service: str) -> JSONResponse:
    """A leaf for `service` (service:write). Blocking: with ?index= it returns once a newer
    leaf exists - after a root rotation, or when the current one nears expiry."""
    cp = control(request)
    who = caller(request)
    if not who.authorizer.service_write(service):
        raise PermissionDenied(permission_denied_message(who.accessor_id, "service:write", service))
    ns = request.query_params.get("ns") or "default"
    partition = request.query_params.get("partition") or "default"
    current = await run(cp.ca.leaf, service, ns, partition)
    min_index = parse_index(request)
    if min_index and current.index <= min_index:
        wait = wait_seconds(request)
        until_renewal = (current.renew_at() - datetime.now(UTC)).total_seconds()
        ca_index = cp.state.index_of(CA_TABLE)
        await cp.hub.wait(lambda: cp.state.index_of(CA_TABLE), ca_index, max(0.0, min(wait, until_renewal)))
        current = await run(cp.ca.leaf, service, ns, partition)
    return consul_json(current.to_consul_json(), current.index)


@router.post("/v1/connect/ca/sign")
async def sign(request: Request) -> JSONResponse:
    """Sign a CSR, only for the SPIFFE ID the token may write (service:write on its service)."""
    cp = control(request)
    who = caller(request)
    body = await json_object(request)
    csr = body.get("CSR") or ""
    if not csr:
        raise InvalidInput("CSR is required")
    info = cp.ca.check_csr(csr)
    try:
        identity = parse_consul_id(info.spiffe_uri)
    except InvalidSpiffeID as exc:
        raise InvalidInput(f"CSR SAN is not a valid Connect identity: {exc}") from None
    if not isinstance(identity, ServiceID):
        raise InvalidInput("only service identities can be signed through this endpoint")
    if identity.trust_domain != cp.ca.trust_domain:
        raise InvalidInput(f"SPIFFE ID in CSR from a different trust domain: {identity.trust_domain}")
    if identity.datacenter != cp.config.datacenter:
        raise InvalidInput(f'SPIFFE ID in CSR from a different datacenter: "{identity.datacenter}"')
    if not who.authorizer.service_write(identity.service):
        raise PermissionDenied(permission_denied_message(who.accessor_id, "service:write", identity.service))
    cert_pem = await run(cp.ca.sign_csr, info)
    from gateway.identity import ca as calib

    parsed = calib.load_certificate(cert_pem)
    return consul_json({
        "SerialNumber": f"{parsed.serial_number:x}",
        "CertPEM": cert_pem,
        "Service": identity.service,
        "ServiceURI": identity.uri,
        "ValidAfter": parsed.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ValidBefore": parsed.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    })


@router.post("/v1/agent/connect/authorize")
async def authorize(request: Request) -> JSONResponse:
    """Consul's authorize: may ClientCertURI connect to Target? L7 intentions count as deny;
    the default policy is the one enforcement uses. Stricter than Consul: a URI from another
    trust domain is not authorized."""
    cp = control(request)
    who = caller(request)
    body = await json_object(request)
    target = body.get("Target") or ""
    if not target:
        raise InvalidInput("Target service must be specified")
    if not who.authorizer.service_write(target):
        raise PermissionDenied(permission_denied_message(who.accessor_id, "service:write", target))
    uri = body.get("ClientCertURI") or ""
    try:
        identity = parse_consul_id(uri)
    except InvalidSpiffeID:
        raise InvalidInput("ClientCertURI not a valid Connect identifier") from None
    if not isinstance(identity, ServiceID):
        raise InvalidInput("ClientCertURI not a valid Service identifier")
    if identity.trust_domain != cp.ca.trust_domain:
        return consul_json({"Authorized": False, "Reason": f"Client certificate from an untrusted trust domain: {identity.trust_domain}"})
    ns = body.get("Namespace") or request.query_params.get("ns") or "default"
    partition = body.get("Partition") or request.query_params.get("partition") or "default"
    decision = cp.engine.decide(
        ServiceName(identity.service, identity.namespace, identity.partition),
        ServiceName(target, ns, partition),
    )
    return consul_json({"Authorized": decision.allowed, "Reason": decision.reason})
