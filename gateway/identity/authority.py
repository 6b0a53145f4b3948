"""The Connect CA as a service: roots and keys in the store, leaves for services, rotation.

CA state lives in one system record, "ca": the provider config, and every root with its
private key encrypted (AES-GCM, key from the CA secret, which never enters the database).
Keys are never returned by any API and never logged. Leaves are issued on demand and
cached in memory per service, renewed before expiry; a blocking leaf query returns the
renewed leaf. The verifier the gateway uses is rebuilt whenever the published roots change.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.duration import parse_duration
from gateway.errors import InvalidInput
from gateway.identity import ca as calib
from gateway.identity import keys as keylib
from gateway.identity.spiffe import ServiceID
from gateway.identity.verify import TrustBundle, Verifier
from gateway.store.store import Store, Txn

CA_KEY = "ca"
DEFAULT_CONFIG: dict[str, Any] = {
    "LeafCertTTL": "72h",
    "RotationPeriod": "2160h",
    "IntermediateCertTTL": "8760h",
    "RootCertTTL": "87600h",
    "PrivateKeyType": "ec",
    "PrivateKeyBits": 256,
}
RENEW_AT = 0.6  # of a leaf's lifetime: a fresh leaf is issued from then on (Consul: 60-90%)


def parse_ttl(value: Any, field: str) -> timedelta:
    """Consul durations in CA config: "72h", "30m", "1h30m"."""
    try:
        seconds = parse_duration(str(value))
    except InvalidInput:
        raise InvalidInput(f"Invalid {field}: {value!r}") from None
    if seconds <= 0:
        raise InvalidInput(f"Invalid {field}: must be positive")
    return timedelta(seconds=seconds)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass
class Leaf:
    service: str
    namespace: str
    partition: str
    serial: str
    cert_pem: str
    key_pem: str
    uri: str
    valid_after: datetime
    valid_before: datetime
    root_id: str
    index: int

    def renew_at(self) -> datetime:
        return self.valid_after + (self.valid_before - self.valid_after) * RENEW_AT

    def to_consul_json(self) -> dict[str, Any]:
        return {
            "SerialNumber": self.serial,
            "CertPEM": self.cert_pem,
            "PrivateKeyPEM": self.key_pem,
            "Service": self.service,
            "ServiceURI": self.uri,
            "ValidAfter": self.valid_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ValidBefore": self.valid_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
        }


class ConnectCA:
    def __init__(self, store: Store, secret: bytes, datacenter: str) -> None:
        self.store = store
        self.secret = secret
        self.datacenter = datacenter
        self._lock = threading.Lock()
        self._leaves: dict[tuple[str, str, str], Leaf] = {}
        self._leaf_index = 0
        self._signer: tuple[str, Any, Any] | None = None  # (root id, cert, key): parsed once
        self.verifier = Verifier()
        self._verifier_stamp: Any = None
        self._seen_index = -1

    # -- state -------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        rec = self.store.state.system(CA_KEY)
        if rec is None:
            raise RuntimeError("the CA is not initialized")
        return rec

    @property
    def trust_domain(self) -> str:
        return self._record()["TrustDomain"]

    @property
    def cluster_id(self) -> str:
        return self._record()["ClusterID"]

    def config(self) -> dict[str, Any]:
        return dict(self._record()["Config"])

    def _roots(self, rec: dict[str, Any] | None = None) -> list[tuple[calib.CARoot, str]]:
        out = []
        for item in (rec or self._record())["Roots"]:
            fields = dict(item["Root"])
            for name in ("not_before", "not_after", "rotated_out_at"):
                fields[name] = _dt(fields[name])
            out.append((calib.CARoot(**fields), item["EncryptedKey"]))
        return out

    @staticmethod
    def _root_item(root: calib.CARoot, encrypted_key: str) -> dict[str, Any]:
        fields = asdict(root)
        for name in ("not_before", "not_after", "rotated_out_at"):
            fields[name] = _iso(fields[name])
        return {"Root": fields, "EncryptedKey": encrypted_key}

    def initialize(self, cluster_id: str) -> None:
        """First start of the primary datacenter: trust domain `<cluster-id>.consul` and a root."""
        if self.store.state.system(CA_KEY) is not None:
            self._refresh_verifier()
            return
        trust_domain = f"{cluster_id.lower()}.consul"
        config = dict(DEFAULT_CONFIG)
        root, key_pem = calib.generate_root(
            trust_domain, key_type=config["PrivateKeyType"], key_bits=config["PrivateKeyBits"],
            ttl=parse_ttl(config["RootCertTTL"], "RootCertTTL"),
        )
        record = {
            "ClusterID": cluster_id.lower(), "TrustDomain": trust_domain, "Config": config,
            "Roots": [self._root_item(root, keylib.encrypt_key_pem(key_pem, self.secret))],
        }

        def write(txn: Txn) -> None:
            if txn.state.system(CA_KEY) is None:  # another process may have won the race
                txn.put_system(CA_KEY, record)

        self.store.write(write)
        self._refresh_verifier()

    def active(self) -> tuple[calib.CARoot, Any, Any]:
        """The active root with its certificate and key parsed once (RSA key parsing is slow)."""
        roots = self._roots()
        for root, enc in roots:
            if root.active:
                if self._signer is None or self._signer[0] != root.id:
                    key = keylib.private_key_from_pem(keylib.decrypt_key_pem(enc, self.secret), trusted=True)
                    self._signer = (root.id, root.certificate(), key)
                return root, self._signer[1], self._signer[2]
        raise RuntimeError("no active CA root")

    def published_roots(self, now: datetime | None = None) -> list[calib.CARoot]:
        leaf_ttl = parse_ttl(self.config()["LeafCertTTL"], "LeafCertTTL")
        return calib.roots_to_publish([r for r, _ in self._roots()], now or datetime.now(UTC), max_leaf_ttl=leaf_ttl)

    def _refresh_verifier(self) -> None:
        rec = self.store.state.system(CA_KEY)
        if rec is None:
            return
        roots = self.published_roots()
        stamp = tuple(r.id for r in roots)
        if stamp != self._verifier_stamp:
            pems = [r.root_cert_pem for r in roots]
            self.verifier.set_bundles([TrustBundle.from_pem(rec["TrustDomain"], "".join(pems))])
            self._verifier_stamp = stamp

    def on_change(self) -> None:
        """Called after every commit; does work only when the CA record itself changed."""
        entry = self.store.state.get("system", (CA_KEY,))
        if entry is not None and entry["ModifyIndex"] != self._seen_index:
            self._seen_index = entry["ModifyIndex"]
            self._refresh_verifier()

    def tick(self) -> None:
        """Periodic: a rotated-out root leaves the bundle once its last leaf expired."""
        if self.store.state.system(CA_KEY) is not None:
            self._refresh_verifier()

    # -- API views -----------------------------------------------------------------------------

    def roots_json(self) -> dict[str, Any]:
        rec_index = self.store.state.get("system", (CA_KEY,))
        index = rec_index["ModifyIndex"] if rec_index else 0
        roots = self.published_roots()
        active = next((r.id for r in roots if r.active), "")
        return {
            "ActiveRootID": active,
            "TrustDomain": self.trust_domain,
            "Roots": [r.to_consul_json(index, index) for r in roots],
        }

    def configuration_json(self) -> dict[str, Any]:
        entry = self.store.state.get("system", (CA_KEY,))
        index = entry["ModifyIndex"] if entry else 0
        return {
            "Provider": "consul",
            "Config": self.config(),
            "State": None,
            "ForceWithoutCrossSigning": False,
            "ClusterID": self.cluster_id,
            "CreateIndex": index,
            "ModifyIndex": index,
        }

    # -- configuration and rotation ------------------------------------------------------------

    def set_configuration(self, body: dict[str, Any], now: datetime | None = None) -> None:
        """PUT /v1/connect/ca/configuration. A new key type/size, or an operator-supplied
        RootCert and PrivateKey, rotates the root; the new root is cross-signed by the old
        key (unless ForceWithoutCrossSigning) so existing leaves keep verifying."""
        provider = body.get("Provider") or "consul"
        if provider != "consul":
            raise InvalidInput(f'CA provider "{provider}" is not supported by terminus; use "consul"')
        incoming = dict(body.get("Config") or {})
        supplied_key = incoming.pop("PrivateKey", None)
        supplied_root = incoming.pop("RootCert", None)
        unknown = set(incoming) - set(DEFAULT_CONFIG)
        if unknown:
            raise InvalidInput(f"Unknown CA config keys: {', '.join(sorted(unknown))}")
        config = {**self.config(), **incoming}
        try:
            config["PrivateKeyBits"] = int(config["PrivateKeyBits"])
            keylib.validate_key_params(config["PrivateKeyType"], config["PrivateKeyBits"])
        except (ValueError, TypeError) as exc:
            raise InvalidInput(str(exc)) from None
        leaf_ttl = parse_ttl(config["LeafCertTTL"], "LeafCertTTL")
        if not timedelta(hours=1) <= leaf_ttl <= timedelta(days=365):
            raise InvalidInput("LeafCertTTL must be between 1h0m0s and 8760h0m0s")
        for field in ("RotationPeriod", "IntermediateCertTTL", "RootCertTTL"):
            parse_ttl(config[field], field)
        if bool(supplied_key) != bool(supplied_root):
            raise InvalidInput("RootCert and PrivateKey must be provided together")
        current = self.config()
        rotate = bool(supplied_key) or (
            config["PrivateKeyType"], config["PrivateKeyBits"]) != (current["PrivateKeyType"], current["PrivateKeyBits"])
        cross = not body.get("ForceWithoutCrossSigning")
        rec = self._record()
        items = list(rec["Roots"])
        if rotate:
            at = now or datetime.now(UTC)
            if supplied_key:
                try:
                    new_root = calib.CARoot.from_pem(supplied_root, external_trust_domain=rec["ClusterID"])
                    new_key_pem = keylib.private_key_to_pem(keylib.private_key_from_pem(supplied_key))
                except ValueError as exc:
                    raise InvalidInput(f"Invalid RootCert or PrivateKey: {exc}") from None
                if new_root.trust_domain != rec["TrustDomain"]:
                    raise InvalidInput(f"RootCert must carry the URI SAN spiffe://{rec['TrustDomain']}")
            else:
                new_root, new_key_pem = calib.generate_root(
                    rec["TrustDomain"], key_type=config["PrivateKeyType"], key_bits=config["PrivateKeyBits"],
                    ttl=parse_ttl(config["RootCertTTL"], "RootCertTTL"), now=at,
                )
            old_root, _, old_key = self.active()
            if cross:
                old_out, new_in = calib.rotate_root(old_root, old_key, new_root, now=at)
            else:
                old_out, new_in = replace(old_root, active=False, rotated_out_at=at), replace(new_root, active=True)
            items = [self._root_item(old_out, enc) if root.id == old_root.id else self._root_item(root, enc)
                     for root, enc in self._roots(rec)]
            items.append(self._root_item(new_in, keylib.encrypt_key_pem(new_key_pem, self.secret)))
            # drop roots whose leaves have all expired
            keep = {r.id for r in calib.roots_to_publish([r for r, _ in self._roots({"Roots": items})], at, max_leaf_ttl=leaf_ttl)}
            items = [i for i in items if i["Root"]["id"] in keep]
        record = {**rec, "Config": config, "Roots": items}
        self.store.write(lambda txn: txn.put_system(CA_KEY, record))
        if rotate:
            with self._lock:
                self._leaves.clear()  # every service gets a leaf from the new root
        self._refresh_verifier()

    # -- leaves ---------------------------------------------------------------------------------

    def leaf(self, service: str, namespace: str = "default", partition: str = "default",
             now: datetime | None = None) -> Leaf:
        """The cached leaf for a service, or a fresh one if none, near expiry, or from an old root."""
        at = now or datetime.now(UTC)
        key = (service, namespace, partition)
        root, cert, ca_key = self.active()
        with self._lock:
            cached = self._leaves.get(key)
            if cached is not None and cached.root_id == root.id and at < cached.renew_at():
                return cached
            uri = ServiceID(self.trust_domain, namespace, self.datacenter, service, partition).uri
            ttl = parse_ttl(self.config()["LeafCertTTL"], "LeafCertTTL")
            leaf_pem, key_pem = calib.generate_leaf(cert, ca_key, uri, ttl=ttl, now=at)
            parsed = calib.load_certificate(leaf_pem)
            self._leaf_index = max(self._leaf_index + 1, self.store.state.index)
            leaf = Leaf(
                service=service, namespace=namespace, partition=partition,
                serial=keylib.hex_string(parsed.serial_number.to_bytes(16, "big").lstrip(b"\0") or b"\0"),
                cert_pem=calib.chain_pem(leaf_pem, root), key_pem=key_pem, uri=uri,
                valid_after=parsed.not_valid_before_utc, valid_before=parsed.not_valid_after_utc,
                root_id=root.id, index=self._leaf_index,
            )
            self._leaves[key] = leaf
            return leaf

    @staticmethod
    def check_csr(csr_pem: str) -> calib.CSRInfo:
        """Parse a CSR and check its signature and SANs; the caller then authorizes its SPIFFE ID."""
        try:
            return calib.parse_csr(csr_pem)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    def sign_csr(self, info: calib.CSRInfo) -> str:
        root, cert, ca_key = self.active()
        ttl = parse_ttl(self.config()["LeafCertTTL"], "LeafCertTTL")
        try:
            leaf_pem, _ = calib.sign_csr(cert, ca_key, info, ttl=ttl)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return calib.chain_pem(leaf_pem, root)
