"""`terminus tls ca create`, `terminus tls cert create`: files for operators and tests,
named as `consul tls` names them."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cli.client import CLIError
from gateway.cli.common import one_line_errors

app = typer.Typer(help="TLS certificates for agents and servers.", no_args_is_help=True)
ca_app = typer.Typer(help="Certificate authority files.", no_args_is_help=True)
cert_app = typer.Typer(help="Certificate files.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(cert_app, name="cert")


def _write(path: Path, data: bytes, private: bool = False) -> None:
    if path.exists():
        raise CLIError(f"{path} already exists")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    print(f"==> Saved {path}")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@ca_app.command("create")
@one_line_errors
def ca_create(
    domain: Annotated[str, typer.Option("--domain")] = "consul",
    days: Annotated[int, typer.Option("--days")] = 1825,
    common_name: Annotated[str | None, typer.Option("--common-name")] = None,
) -> None:
    """Create `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem` in the current directory."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"Consul Agent CA {os.urandom(4).hex()}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(Path(f"{domain}-agent-ca.pem"), cert.public_bytes(serialization.Encoding.PEM))
    _write(Path(f"{domain}-agent-ca-key.pem"), _key_pem(key), private=True)


@cert_app.command("create")
@one_line_errors
def cert_create(
    server: Annotated[bool, typer.Option("--server")] = False,
    client_: Annotated[bool, typer.Option("--client")] = False,
    dc: Annotated[str, typer.Option("--dc")] = "dc1",
    domain: Annotated[str, typer.Option("--domain")] = "consul",
    ca: Annotated[str | None, typer.Option("--ca")] = None,
    key: Annotated[str | None, typer.Option("--key")] = None,
    days: Annotated[int, typer.Option("--days")] = 365,
    additional_dnsname: Annotated[list[str] | None, typer.Option("--additional-dnsname")] = None,
    additional_ipaddress: Annotated[list[str] | None, typer.Option("--additional-ipaddress")] = None,
) -> None:
    """Create `<dc>-server-<domain>-N.pem` (or `-client-`) signed by the agent CA."""
    if server == client_:
        raise CLIError("Please provide either --server or --client")
    ca_path = Path(ca or f"{domain}-agent-ca.pem")
    key_path = Path(key or f"{domain}-agent-ca-key.pem")
    if not ca_path.exists() or not key_path.exists():
        raise CLIError(f"CA files {ca_path} and {key_path} are needed: run `terminus tls ca create` first")
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    kind = "server" if server else "client"
    dns = [f"{kind}.{dc}.{domain}", "localhost", *(additional_dnsname or [])]
    ips = [ipaddress.ip_address("127.0.0.1"), *(ipaddress.ip_address(i) for i in additional_ipaddress or [])]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(ca_cert.subject).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName([*(x509.DNSName(d) for d in dns), *(x509.IPAddress(i) for i in ips)]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    n = 0
    while Path(f"{dc}-{kind}-{domain}-{n}.pem").exists():
        n += 1
    _write(Path(f"{dc}-{kind}-{domain}-{n}.pem"), cert.public_bytes(serialization.Encoding.PEM))
    _write(Path(f"{dc}-{kind}-{domain}-{n}-key.pem"), _key_pem(leaf_key), private=True)
