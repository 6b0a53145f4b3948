"""The Connect CA over Consul's API: roots, configuration, leaves, CSRs, authorize, rotation."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from fastapi.testclient import TestClient
from OpenSSL import crypto
from sqlalchemy import text

from gateway.control import ControlPlane
from gateway.identity.verify import VerificationError

MGMT = "11111111-2222-3333-4444-555555555555"


def pem_chain_der(pem: str) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem.encode())]


def csr_for(uris: list[str]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_roots_and_trust_domain(cp: ControlPlane, api: TestClient) -> None:
    roots = api.get("/v1/connect/ca/roots")
    assert roots.status_code == 200 and int(roots.headers["X-Consul-Index"]) >= 1
    body = roots.json()
    assert body["TrustDomain"] == f"{cp.cluster_id}.consul"
    (root,) = body["Roots"]
    assert root["Active"] and root["ID"] == body["ActiveRootID"]
    cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [f"spiffe://{body['TrustDomain']}"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert api.get("/v1/agent/connect/ca/roots").json()["ActiveRootID"] == body["ActiveRootID"]
    assert api.get("/v1/connect/ca/roots", params={"pem": "true"}).text == root["RootCert"]


def test_keys_are_encrypted_and_never_returned(cp: ControlPlane, api: TestClient) -> None:
    cfg = api.get("/v1/connect/ca/configuration").json()
    assert cfg["Provider"] == "consul" and cfg["Config"]["PrivateKeyType"] == "ec"
    for path in ("/v1/connect/ca/configuration", "/v1/connect/ca/roots"):
        assert "PRIVATE KEY" not in api.get(path).text
    with cp.store.engine.connect() as conn:
        dump = " ".join(conn.execute(text("SELECT CAST(value AS TEXT) FROM system")).scalars())
    assert "PRIVATE KEY" not in dump
    assert '"EncryptedKey": "v1:' in dump  # only the AES-GCM blob is stored


def test_leaf_certificate_properties(cp: ControlPlane, api: TestClient) -> None:
    r = api.get("/v1/agent/connect/ca/leaf/web")
    assert r.status_code == 200
    leaf = r.json()
    assert set(leaf) >= {"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter", "ValidBefore", "CreateIndex", "ModifyIndex"}
    assert leaf["Service"] == "web"
    assert leaf["ServiceURI"] == f"spiffe://{cp.ca.trust_domain}/ns/default/dc/dc1/svc/web"
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [leaf["ServiceURI"]]
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    assert set(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= timedelta(hours=72)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=72, minutes=2)
    identity = cp.ca.verifier.verify(pem_chain_der(leaf["CertPEM"]))
    assert identity.uri == leaf["ServiceURI"]
    # cached: the same leaf again
    assert api.get("/v1/agent/connect/ca/leaf/web").json()["SerialNumber"] == leaf["SerialNumber"]


def test_leaf_blocking_query_times_out_then_wakes_on_rotation(cp: ControlPlane, api: TestClient) -> None:
    first = api.get("/v1/agent/connect/ca/leaf/web")
    index = first.headers["X-Consul-Index"]
    start = time.monotonic()
    same = api.get("/v1/agent/connect/ca/leaf/web", params={"index": index, "wait": "300ms"})
    assert time.monotonic() - start >= 0.3 and same.json()["SerialNumber"] == first.json()["SerialNumber"]
    rotate = threading.Timer(0.3, lambda: api.put("/v1/connect/ca/configuration", json={"Provider": "consul", "Config": {"PrivateKeyType": "ec", "PrivateKeyBits": 384}}))
    rotate.start()
    start = time.monotonic()
    fresh = api.get("/v1/agent/connect/ca/leaf/web", params={"index": index, "wait": "20s"})
    rotate.join()
    assert time.monotonic() - start < 10
    assert fresh.json()["SerialNumber"] != first.json()["SerialNumber"]
    assert int(fresh.headers["X-Consul-Index"]) > int(index)


def test_leaf_and_sign_need_service_write(make_api: Any) -> None:
    cp, api = make_api(acl_enabled=True, acl_default_policy="deny", initial_management_token=MGMT)
    mgmt = {"X-Consul-Token": MGMT}
    api.put("/v1/acl/policy", headers=mgmt, json={"Name": "web", "Rules": 'service "web" { policy = "write" }'})
    tok = api.put("/v1/acl/token", headers=mgmt, json={"Policies": [{"Name": "web"}]}).json()["SecretID"]
    h = {"X-Consul-Token": tok}
    assert api.get("/v1/agent/connect/ca/leaf/web", headers=h).status_code == 200
    denied = api.get("/v1/agent/connect/ca/leaf/db", headers=h)
    assert denied.status_code == 403 and "service:write" in denied.text
    td = cp.ca.trust_domain
    ok = api.post("/v1/connect/ca/sign", headers=h, json={"CSR": csr_for([f"spiffe://{td}/ns/default/dc/dc1/svc/web"])})
    assert ok.status_code == 200, ok.text
    assert cp.ca.verifier.verify(pem_chain_der(ok.json()["CertPEM"])).service.service == "web"
    assert api.post("/v1/connect/ca/sign", headers=h, json={"CSR": csr_for([f"spiffe://{td}/ns/default/dc/dc1/svc/db"])}).status_code == 403
    other_td = api.post("/v1/connect/ca/sign", headers=h, json={"CSR": csr_for(["spiffe://other.consul/ns/default/dc/dc1/svc/web"])})
    assert other_td.status_code == 400 and "different trust domain" in other_td.text
    two = api.post("/v1/connect/ca/sign", headers=h, json={"CSR": csr_for([f"spiffe://{td}/ns/default/dc/dc1/svc/web", f"spiffe://{td}/ns/default/dc/dc1/svc/x"])})
    assert two.status_code == 400
    assert api.get("/v1/connect/ca/configuration", headers=h).status_code == 403  # operator:read


def test_authorize_uses_the_engine(cp: ControlPlane, api: TestClient) -> None:
    td = cp.ca.trust_domain
    uri = f"spiffe://{td}/ns/default/dc/dc1/svc/web"
    body = {"Target": "db", "ClientCertURI": uri, "ClientCertSerial": "01"}
    r = api.post("/v1/agent/connect/authorize", json=body).json()
    assert r == {"Authorized": True, "Reason": "Default behavior configured by ACLs"}
    api.put("/v1/connect/intentions/exact", params={"source": "web", "destination": "db"}, json={"Action": "deny"})
    r = api.post("/v1/agent/connect/authorize", json=body).json()
    assert r["Authorized"] is False and r["Reason"].startswith("Matched L4 intention: web => db")
    api.put("/v1/config", json={"Kind": "service-intentions", "Name": "db", "Sources": [
        {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]})
    r = api.post("/v1/agent/connect/authorize", json=body).json()
    assert r["Authorized"] is False and r["Reason"].startswith("Matched L7 intention")
    foreign = api.post("/v1/agent/connect/authorize", json={**body, "ClientCertURI": "spiffe://evil.consul/ns/default/dc/dc1/svc/web"}).json()
    assert foreign["Authorized"] is False
    bad = api.post("/v1/agent/connect/authorize", json={**body, "ClientCertURI": "spiffe://UPPER.consul/ns/default/dc/dc1/svc/web"})
    assert (bad.status_code, bad.text) == (400, "ClientCertURI not a valid Connect identifier")
    assert api.post("/v1/agent/connect/authorize", json={"ClientCertURI": uri}).status_code == 400


def test_rotation_before_during_after(cp: ControlPlane, api: TestClient) -> None:
    old_leaf = api.get("/v1/agent/connect/ca/leaf/web").json()
    old_root = api.get("/v1/connect/ca/roots").json()["Roots"][0]
    assert cp.ca.verifier.verify(pem_chain_der(old_leaf["CertPEM"])).service.service == "web"

    r = api.put("/v1/connect/ca/configuration", json={"Provider": "consul", "Config": {"PrivateKeyType": "rsa", "PrivateKeyBits": 2048}})
    assert r.status_code == 200, r.text
    during = api.get("/v1/connect/ca/roots").json()
    assert len(during["Roots"]) == 2 and during["ActiveRootID"] != old_root["ID"]
    new_root = next(x for x in during["Roots"] if x["Active"])
    assert len(new_root["IntermediateCerts"]) == 1  # the cross-signed certificate
    new_leaf = api.get("/v1/agent/connect/ca/leaf/web").json()
    assert new_leaf["SerialNumber"] != old_leaf["SerialNumber"]
    # both leaves verify against the published bundle
    assert cp.ca.verifier.verify(pem_chain_der(old_leaf["CertPEM"])).service.service == "web"
    assert cp.ca.verifier.verify(pem_chain_der(new_leaf["CertPEM"])).service.service == "web"
    # a proxy that still trusts only the old root accepts the new leaf via the cross-signed cert
    store = crypto.X509Store()
    store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, old_root["RootCert"].encode()))
    chain = [crypto.load_certificate(crypto.FILETYPE_ASN1, d) for d in pem_chain_der(new_leaf["CertPEM"])]
    crypto.X509StoreContext(store, chain[0], chain=chain[1:]).verify_certificate()

    # after: once the last old leaf has expired, the old root leaves the bundle
    later = datetime.now(UTC) + timedelta(hours=73)
    assert [r.id for r in cp.ca.published_roots(now=later)] == [new_root["ID"]]
    assert {r.id for r in cp.ca.published_roots()} == {old_root["ID"], new_root["ID"]}


def test_ca_survives_restart_with_same_secret(make_cp: Any, tmp_path: Any) -> None:
    from gateway.store.database import sqlite_url
    from tests.conftest import TEST_CA_SECRET

    url = sqlite_url(tmp_path / "restart")
    first = make_cp(url)
    roots = first.ca.roots_json()
    leaf = first.ca.leaf("web")
    first.close()
    again = make_cp(url)
    assert again.ca.roots_json()["Roots"][0]["ID"] == roots["Roots"][0]["ID"]
    assert again.ca.verifier.verify(pem_chain_der(leaf.cert_pem)).service.service == "web"
    assert again.ca.leaf("api").uri.endswith("/svc/api")  # the decrypted key still signs
    import pytest

    from gateway.identity.keys import KeyDecryptionError

    wrong = ControlPlane(again.config, url, node_name="x", ca_secret=b"not-the-secret")
    with pytest.raises(KeyDecryptionError):
        wrong.ca.leaf("web")
    wrong.close()
    assert TEST_CA_SECRET  # the fixture's secret is what made the keys readable


def test_verifier_rejects_unknown_ca(cp: ControlPlane) -> None:
    from tests.support.pki import make_ca, make_leaf

    rogue = make_ca(cp.ca.trust_domain)
    fake = make_leaf(rogue, uri_sans=[f"spiffe://{cp.ca.trust_domain}/ns/default/dc/dc1/svc/web"])
    try:
        cp.ca.verifier.verify([fake.der])
    except VerificationError as exc:
        assert "issuer" in exc.reason or "unable" in exc.reason
    else:
        raise AssertionError("a leaf from another CA with our trust domain must be rejected")
