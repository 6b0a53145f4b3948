"""The `terminus` CLI as an operator uses it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def run(server: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_HTTP_TOKEN")}
    full_env.update({"CONSUL_HTTP_ADDR": server.addr, **(env or {})})
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True, env=full_env, timeout=60)


def test_intention_commands(start_server: Any, tmp_path: Path) -> None:
    server = start_server("--dev")
    assert run(server, "intention", "create", "web", "db").returncode == 0
    dup = run(server, "intention", "create", "--deny", "web", "db")
    assert dup.returncode == 1 and dup.stderr.strip() == 'Error: Intention with source "web" and destination "db" already exists'
    assert run(server, "intention", "create", "--deny", "--replace", "web", "db").returncode == 0
    denied = run(server, "intention", "check", "web", "db")
    assert denied.returncode == 2 and denied.stdout.startswith("Denied")
    allowed = run(server, "intention", "check", "api", "db")
    assert allowed.returncode == 0 and allowed.stdout.startswith("Allowed")
    listed = json.loads(run(server, "intention", "list", "--format", "json").stdout)
    assert [(i["SourceName"], i["Action"]) for i in listed] == [("web", "deny")]
    got = json.loads(run(server, "intention", "get", "web", "db", "--format", "json").stdout)
    assert got["Precedence"] == 9
    assert "web" in run(server, "intention", "match", "db").stdout
    assert run(server, "intention", "delete", "web", "db").stdout.strip() == "Intention deleted."
    missing = run(server, "intention", "get", "web", "db")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_config_and_services_from_hcl_files(start_server: Any, tmp_path: Path) -> None:
    server = start_server("--dev")
    entry = tmp_path / "intentions.hcl"
    entry.write_text('Kind = "service-intentions"\nName = "authentication"\nSources = [\n  {\n    Name = "api"\n    Action = "allow"\n  }\n]\n')
    w = run(server, "config", "write", str(entry))
    assert w.returncode == 0 and w.stdout.strip() == "Config entry written: service-intentions/authentication"
    read = json.loads(run(server, "config", "read", "--kind", "service-intentions", "--name", "authentication").stdout)
    assert read["Sources"][0]["Precedence"] == 9
    assert run(server, "config", "list", "--kind", "service-intentions").stdout.split() == ["authentication"]
    assert run(server, "intention", "check", "api", "authentication").returncode == 0

    bad = tmp_path / "bad.hcl"
    bad.write_text('Kind = "service-intentions"\nName = "x"\nSources = [{ Name = "a*", Action = "allow" }]\n')
    r = run(server, "config", "write", str(bad))
    assert r.returncode == 1 and "wildcard character '*' cannot be used with partial values" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert run(server, "config", "list", "--kind", "service-intentions").stdout.split() == ["authentication"]

    svc = tmp_path / "api.hcl"
    svc.write_text('service {\n  name = "api"\n  port = 9090\n  connect { sidecar_service { proxy { upstreams { destination_name = "authentication" local_bind_port = 2345 } } } }\n}\n')
    assert run(server, "services", "register", str(svc)).stdout.strip() == "Registered service: api"
    import httpx

    sidecar = httpx.get(f"{server.url}/v1/catalog/service/api-sidecar-proxy").json()[0]
    assert sidecar["ServiceProxy"]["Upstreams"][0]["LocalBindPort"] == 2345
    assert run(server, "services", "deregister", str(svc)).returncode == 0
    assert httpx.get(f"{server.url}/v1/catalog/service/api").json() == []
    assert run(server, "config", "delete", "--kind", "service-intentions", "--name", "authentication").returncode == 0


def test_unreachable_server_is_one_line_and_exit_1() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway.cli.main", "intention", "list", "--http-addr", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("Error: Error connecting to terminus") and len(r.stderr.strip().splitlines()) == 1


def test_acl_bootstrap_and_tokens(start_server: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.hcl"
    cfg.write_text('datacenter = "dc1"\nacl {\n  enabled = true\n  default_policy = "deny"\n}\n')
    server = start_server("--data-dir", str(tmp_path / "data"), "--config-file", str(cfg))
    boot = run(server, "acl", "bootstrap", "--format", "json")
    assert boot.returncode == 0, boot.stderr
    secret = json.loads(boot.stdout)["SecretID"]
    assert run(server, "acl", "bootstrap").returncode == 1
    assert run(server, "intention", "create", "web", "db").returncode == 1  # anonymous, default deny
    env = {"CONSUL_HTTP_TOKEN": secret}
    rules = tmp_path / "rules.hcl"
    rules.write_text('service "db" {\n  policy = "read"\n  intentions = "write"\n}\n')
    assert run(server, "acl", "policy", "create", "--name", "db-int", "--rules", f"@{rules}", env=env).returncode == 0
    tok = json.loads(run(server, "acl", "token", "create", "--policy-name", "db-int", "--format", "json", env=env).stdout)["SecretID"]
    assert run(server, "intention", "create", "web", "db", env={"TERMINUS_HTTP_TOKEN": tok}).returncode == 0
    assert run(server, "intention", "create", "web", "other", env={"TERMINUS_HTTP_TOKEN": tok}).returncode == 1


def test_connect_ca_and_tls_commands(start_server: Any, tmp_path: Path) -> None:
    server = start_server("--dev")
    roots = run(server, "connect", "ca", "roots", "--format", "json")
    assert roots.returncode == 0
    td = json.loads(roots.stdout)["TrustDomain"]
    assert td.endswith(".consul")
    assert run(server, "connect", "ca", "roots", "--pem").stdout.startswith("-----BEGIN CERTIFICATE-----")
    cfg = json.loads(run(server, "connect", "ca", "get-config").stdout)
    assert cfg["Config"]["PrivateKeyType"] == "ec" and "PrivateKey" not in cfg["Config"] and "PRIVATE KEY" not in json.dumps(cfg)
    new = tmp_path / "ca.json"
    new.write_text(json.dumps({"Provider": "consul", "Config": {"LeafCertTTL": "24h"}}))
    assert run(server, "connect", "ca", "set-config", "--config-file", str(new)).stdout.strip() == "Configuration updated!"
    assert json.loads(run(server, "connect", "ca", "get-config").stdout)["Config"]["LeafCertTTL"] == "24h"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Provider": "consul", "Config": {"PrivateKeyType": "rsa", "PrivateKeyBits": 1024}}))
    r = run(server, "connect", "ca", "set-config", "--config-file", str(bad))
    assert r.returncode == 1 and "invalid key_bits 1024" in r.stderr

    import os

    env = {k: v for k, v in os.environ.items()}
    cwd = tmp_path / "tls"
    cwd.mkdir()
    for args in (["tls", "ca", "create"], ["tls", "cert", "create", "--server", "--dc", "dc1"]):
        r = subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True, cwd=cwd, env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}, timeout=60)
        assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["consul-agent-ca-key.pem", "consul-agent-ca.pem", "dc1-server-consul-0-key.pem", "dc1-server-consul-0.pem"]
    assert oct((cwd / "consul-agent-ca-key.pem").stat().st_mode & 0o777) == "0o600"
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((cwd / "dc1-server-consul-0.pem").read_bytes())
    assert "server.dc1.consul" in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
