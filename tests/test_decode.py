"""Consul HCL/JSON inputs decode to Consul's canonical API shapes, with Consul's errors."""

from __future__ import annotations

import json

import pytest

from gateway.agentconfig import AgentConfig, load_agent_config, parse_agent_config
from gateway.decode import canonical_config_entry, parse_hcl_or_json, parse_service_definitions
from gateway.errors import InvalidInput


def entry(text: str) -> dict:
    return canonical_config_entry(parse_hcl_or_json(text))


# --------------------------------------------------------------------- parse_hcl_or_json


def test_json_and_hcl_are_both_accepted():
    assert parse_hcl_or_json('{"Kind": "mesh"}') == {"Kind": "mesh"}
    assert parse_hcl_or_json('Kind = "mesh"') == {"Kind": "mesh"}
    assert parse_hcl_or_json("") == {}
    assert parse_hcl_or_json("  \n ") == {}


@pytest.mark.parametrize("text", ['{"Kind": "mesh",}', 'Kind = "mesh" Name', "foo = {\n bar = \n}"])
def test_syntax_errors_are_one_line_with_consul_prefix(text):
    with pytest.raises(InvalidInput) as exc:
        parse_hcl_or_json(text)
    assert exc.value.message.startswith("Failed to decode config entry input: ")
    assert "\n" not in exc.value.message


def test_syntax_error_prefix_is_configurable():
    with pytest.raises(InvalidInput, match=r"^failed to parse web\.hcl: "):
        parse_hcl_or_json("service {", error_prefix="failed to parse web.hcl")


# --------------------------------------------------------------------- service-intentions

INTENTIONS_HCL = """
Kind = "service-intentions"
Name = "api"
Meta {
  path_prefix = "kept verbatim"
}
Sources = [
  {
    name = "web"
    permissions = [
      {
        action = "allow"
        http {
          path_prefix = "/v1/"
          methods     = ["GET", "POST"]
          header = [
            { name = "X-Env", exact = "prod" },
            { name = "X-Debug", present = true, invert = true },
          ]
        }
      },
      {
        Action = "deny"
        HTTP { path_regex = "/admin.*" }
      }
    ]
  },
  {
    Name           = "billing"
    Action         = "deny"
    sameness_group = "sg1"
    legacy_id      = "6c4c9c7e-0b3c-4ee5-a5d7-62b2f1a3fd7e"
    legacy_meta    = { Some_Key = "v" }
    Description    = "legacy"
  }
]
"""

INTENTIONS_JSON = {
    "Kind": "service-intentions",
    "Name": "api",
    "Meta": {"path_prefix": "kept verbatim"},
    "Sources": [
        {
            "Name": "web",
            "Permissions": [
                {
                    "Action": "allow",
                    "HTTP": {
                        "PathPrefix": "/v1/",
                        "Methods": ["GET", "POST"],
                        "Header": [
                            {"Name": "X-Env", "Exact": "prod"},
                            {"Name": "X-Debug", "Present": True, "Invert": True},
                        ],
                    },
                },
                {"Action": "deny", "HTTP": {"PathRegex": "/admin.*"}},
            ],
        },
        {
            "Name": "billing",
            "Action": "deny",
            "SamenessGroup": "sg1",
            "LegacyID": "6c4c9c7e-0b3c-4ee5-a5d7-62b2f1a3fd7e",
            "LegacyMeta": {"Some_Key": "v"},
            "Description": "legacy",
        },
    ],
    "CreateIndex": 12,
    "ModifyIndex": 14,
}


def test_intentions_hcl_and_json_canonicalize_equally():
    from_hcl = entry(INTENTIONS_HCL)
    from_json = entry(json.dumps(INTENTIONS_JSON))
    assert from_hcl == from_json
    expected = {k: v for k, v in INTENTIONS_JSON.items() if k not in ("CreateIndex", "ModifyIndex")}
    assert from_json == expected  # raft indexes are read-only: accepted and dropped
    assert canonical_config_entry(from_json) == from_json  # canonical input is a fixed point


def test_single_hcl_blocks_become_lists():
    got = entry(
        """
        Kind = "service-intentions"
        Name = "api"
        Sources {
          Name = "web"
          Permissions {
            Action = "allow"
            HTTP {
              PathExact = "/"
              Header { Name = "X-A" Prefix = "b" }
            }
          }
        }
        """
    )
    assert got["Sources"] == [
        {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathExact": "/", "Header": [{"Name": "X-A", "Prefix": "b"}]}}]}
    ]


def test_intention_jwt_and_weak_typing():
    got = canonical_config_entry(
        {
            "kind": "service-intentions",
            "name": "api",
            "jwt": {"providers": [{"name": "okta", "verify_claims": [{"path": ["perms", "role"], "value": "admin"}]}]},
            "sources": [{"name": "web", "action": "allow", "precedence": "9", "description": None}],
        }
    )
    assert got["JWT"] == {"Providers": [{"Name": "okta", "VerifyClaims": [{"Path": ["perms", "role"], "Value": "admin"}]}]}
    # WeaklyTypedInput turns "9" into 9, as Consul does; null is treated as absent.
    assert got["Sources"] == [{"Name": "web", "Action": "allow", "Precedence": 9}]


# ------------------------------------------------------------------- terminating-gateway


def test_terminating_gateway_aliases():
    hcl_form = entry(
        """
        Kind = "terminating-gateway"
        Name = "tgw"
        Services = [
          { Name = "billing", ca_file = "/etc/ca.pem", cert_file = "/etc/c.pem", key_file = "/etc/k.pem", sni = "billing.example.com" },
          { name = "*" },
        ]
        Meta { Owner = "team-a" }
        """
    )
    json_form = entry(
        json.dumps(
            {
                "Kind": "terminating-gateway",
                "Name": "tgw",
                "Services": [
                    {"Name": "billing", "CAFile": "/etc/ca.pem", "CertFile": "/etc/c.pem", "KeyFile": "/etc/k.pem", "SNI": "billing.example.com"},
                    {"Name": "*"},
                ],
                "Meta": {"Owner": "team-a"},
            }
        )
    )
    assert hcl_form == json_form == {
        "Kind": "terminating-gateway",
        "Name": "tgw",
        "Services": [
            {"Name": "billing", "CAFile": "/etc/ca.pem", "CertFile": "/etc/c.pem", "KeyFile": "/etc/k.pem", "SNI": "billing.example.com"},
            {"Name": "*"},
        ],
        "Meta": {"Owner": "team-a"},
    }


def test_terminating_gateway_single_service_block():
    got = entry('Kind = "terminating-gateway"\nName = "tgw"\nServices { Name = "lambda" DisableAutoHostRewrite = true }')
    assert got["Services"] == [{"Name": "lambda", "DisableAutoHostRewrite": True}]


# ------------------------------------------------------- service-defaults, proxy-defaults, mesh


def test_service_defaults_keeps_extension_arguments_verbatim():
    got = entry(
        """
        Kind     = "service-defaults"
        Name     = "lambda-fn"
        protocol = "http"
        mesh_gateway { mode = "local" }
        transparent_proxy { dialed_directly = true }
        max_inbound_connections = 10
        destination { addresses = ["example.com"], port = 443 }
        upstream_config {
          defaults { connect_timeout_ms = 500, passive_health_check { interval = "10s", max_failures = 3 } }
        }
        EnvoyExtensions = [
          {
            Name      = "builtin/aws/lambda"
            Required  = true
            Arguments = { ARN = "arn:aws:lambda:us-east-1:1:function:f", payload_passthrough = true, InvocationMode = "asynchronous" }
          }
        ]
        Meta = { "serverless.consul.hashicorp.com/v1alpha1/lambda/enabled" = "true" }
        """
    )
    assert got == {
        "Kind": "service-defaults",
        "Name": "lambda-fn",
        "Protocol": "http",
        "MeshGateway": {"Mode": "local"},
        "TransparentProxy": {"DialedDirectly": True},
        "MaxInboundConnections": 10,
        "Destination": {"Addresses": ["example.com"], "Port": 443},
        "UpstreamConfig": {"Defaults": {"ConnectTimeoutMs": 500, "PassiveHealthCheck": {"Interval": "10s", "MaxFailures": 3}}},
        "EnvoyExtensions": [
            {
                "Name": "builtin/aws/lambda",
                "Required": True,
                "Arguments": {
                    "ARN": "arn:aws:lambda:us-east-1:1:function:f",
                    "payload_passthrough": True,
                    "InvocationMode": "asynchronous",
                },
            }
        ],
        "Meta": {"serverless.consul.hashicorp.com/v1alpha1/lambda/enabled": "true"},
    }


def test_proxy_defaults_name_is_global_and_config_is_free_form():
    got = entry('Kind = "proxy-defaults"\nconfig { protocol = "http", envoy_dns_discovery_type = "STRICT_DNS" }\naccess_logs { enabled = true }')
    assert got == {
        "Kind": "proxy-defaults",
        "Name": "global",
        "Config": {"protocol": "http", "envoy_dns_discovery_type": "STRICT_DNS"},
        "AccessLogs": {"Enabled": True},
    }
    with pytest.raises(InvalidInput, match=r'^invalid name \("web"\), only "global" is supported$'):
        entry('Kind = "proxy-defaults"\nName = "web"')


def test_mesh_entry():
    got = entry(
        """
        Kind = "mesh"
        transparent_proxy { mesh_destinations_only = true }
        allow_enabling_permissive_mutual_tls = true
        TLS { Outgoing { tls_min_version = "TLSv1_2", cipher_suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] } }
        http { sanitize_x_forwarded_client_cert = true }
        peering { peer_through_mesh_gateways = true }
        """
    )
    assert got == {
        "Kind": "mesh",
        "Name": "mesh",
        "TransparentProxy": {"MeshDestinationsOnly": True},
        "AllowEnablingPermissiveMutualTLS": True,
        "TLS": {"Outgoing": {"TLSMinVersion": "TLSv1_2", "CipherSuites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}},
        "HTTP": {"SanitizeXForwardedClientCert": True},
        "Peering": {"PeerThroughMeshGateways": True},
    }


# ------------------------------------------------------------------------- entry errors


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"Kind": "foo", "Name": "x"}, "invalid config entry kind: foo"),
        ({"Name": "x"}, "Payload does not contain a kind/Kind key at the top level"),
        ({"Kind": 3}, "Kind value in payload is not a string"),
        ({"Kind": "service-router", "Name": "x"}, 'config entry kind "service-router" is not supported by terminus'),
        ({"Kind": "service-defaults", "Name": "x", "Foo": 1}, 'invalid config key "Foo"'),
        (
            {"Kind": "service-intentions", "Name": "x", "Sources": [{"Name": "a", "Permissions": [{"HTTP": {"PathPrefx": "/"}}]}]},
            'invalid config key "Sources[0].Permissions[0].HTTP.PathPrefx"',
        ),
        (
            {"Kind": "service-intentions", "Name": "x", "Sources": [{"Name": "a", "Action": "allow", "Precedence": "high"}]},
            "cannot parse 'Sources[0].Precedence' as int: strconv.ParseInt: parsing \"high\": invalid syntax",
        ),
        (
            {"Kind": "terminating-gateway", "Name": "x", "Services": [{"Name": ["a"]}]},
            "'Services[0].Name' expected type 'string', got unconvertible type '[]interface {}', value: '[\"a\"]'",
        ),
    ],
)
def test_config_entry_errors(raw, message):
    with pytest.raises(InvalidInput) as exc:
        canonical_config_entry(raw)
    assert exc.value.message == message
    assert exc.value.status_code == 400


def test_two_spellings_of_one_field_is_an_error():
    with pytest.raises(InvalidInput, match=r'^invalid config key "Sources\[0\]\.Permissions\[0\]\.HTTP\.path_prefix"$'):
        canonical_config_entry(
            {"Kind": "service-intentions", "Name": "x", "Sources": [{"Name": "a", "Permissions": [{"HTTP": {"PathPrefix": "/", "path_prefix": "/x"}}]}]}
        )


# ------------------------------------------------------------------ service definitions

SIDECAR_HCL = """
service {
  name = "api"
  port = 9090
  connect { sidecar_service { proxy { upstreams { destination_name = "authentication" local_bind_port = 2345 } } } }
}
"""


def test_service_with_sidecar_upstream():
    assert parse_service_definitions(SIDECAR_HCL) == [
        {
            "Name": "api",
            "Port": 9090,
            "Connect": {
                "SidecarService": {
                    "Proxy": {"Upstreams": [{"DestinationName": "authentication", "LocalBindPort": 2345}]}
                }
            },
        }
    ]


def test_service_json_and_camel_case_match_hcl():
    as_json = json.dumps(
        {
            "Service": {
                "Name": "api",
                "Port": 9090,
                "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "authentication", "LocalBindPort": 2345}]}}},
            }
        }
    )
    assert parse_service_definitions(as_json) == parse_service_definitions(SIDECAR_HCL)


def test_empty_sidecar_service_and_checks():
    got = parse_service_definitions(
        """
        service {
          id   = "web-1"
          name = "web"
          tags = ["v1"]
          meta = { Version = "1" }
          tagged_addresses { lan { address = "10.0.0.1", port = 80 } }
          enable_tag_override = true
          weights { passing = 3, warning = 1 }
          connect { sidecar_service {} }
          check { id = "web-http", http = "http://localhost/health", interval = "10s", timeout = "1s" }
          checks = [
            { name = "script", args = ["/bin/check"], interval = "30s" },
            { CheckID = "ttl", TTL = "15s", Status = "passing", notes = "n", service_id = "ignored" },
          ]
          token = "svc-token"
        }
        datacenter = "dc1"
        log_level  = "INFO"
        """
    )
    assert got == [
        {
            "ID": "web-1",
            "Name": "web",
            "Tags": ["v1"],
            "Meta": {"Version": "1"},
            "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
            "EnableTagOverride": True,
            "Weights": {"Passing": 3, "Warning": 1},
            "Connect": {"SidecarService": {}},
            "Check": {"CheckID": "web-http", "HTTP": "http://localhost/health", "Interval": "10s", "Timeout": "1s"},
            "Checks": [
                {"Name": "script", "ScriptArgs": ["/bin/check"], "Interval": "30s"},
                {"CheckID": "ttl", "TTL": "15s", "Status": "passing", "Notes": "n"},
            ],
            "Token": "svc-token",
        }
    ]


def test_terminating_gateway_service_definition():
    got = parse_service_definitions(
        """
        services = [
          {
            name = "tgw"
            kind = "terminating-gateway"
            port = 8443
            proxy {
              config { envoy_gateway_no_default_bind = true, connect_timeout_ms = 5000 }
            }
          },
          {
            name = "billing-proxy"
            kind = "connect-proxy"
            port = 21000
            proxy {
              destination_service_name = "billing"
              destination_service_id   = "billing-1"
              local_service_address    = "127.0.0.1"
              local_service_port       = 8080
              mode = "transparent"
              mesh_gateway { mode = "local" }
              upstreams = [
                { destination_name = "db", destination_type = "service", datacenter = "dc2", local_bind_address = "127.0.0.1", local_bind_port = 5432, config = { connect_timeout_ms = 1000 } },
                { destination_name = "cache", destination_peer = "other", local_bind_socket_path = "/tmp/c.sock" },
              ]
              expose { checks = true }
            }
          }
        ]
        """
    )
    assert got == [
        {
            "Name": "tgw",
            "Kind": "terminating-gateway",
            "Port": 8443,
            "Proxy": {"Config": {"envoy_gateway_no_default_bind": True, "connect_timeout_ms": 5000}},
        },
        {
            "Name": "billing-proxy",
            "Kind": "connect-proxy",
            "Port": 21000,
            "Proxy": {
                "DestinationServiceName": "billing",
                "DestinationServiceID": "billing-1",
                "LocalServiceAddress": "127.0.0.1",
                "LocalServicePort": 8080,
                "Mode": "transparent",
                "MeshGateway": {"Mode": "local"},
                "Upstreams": [
                    {
                        "DestinationName": "db",
                        "DestinationType": "service",
                        "Datacenter": "dc2",
                        "LocalBindAddress": "127.0.0.1",
                        "LocalBindPort": 5432,
                        "Config": {"connect_timeout_ms": 1000},
                    },
                    {"DestinationName": "cache", "DestinationPeer": "other", "LocalBindSocketPath": "/tmp/c.sock"},
                ],
                "Expose": {"Checks": True},
            },
        },
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('service { port = 80 }', "Missing service name"),
        ('services = [{ name = "a" }, { port = 1 }]', "services[1]: Missing service name"),
        ('service { name = "a"\n prot = 80 }', "failed to parse service definition: invalid config key service.prot"),
        (
            'service { name = "a"\n connect { sidecar_service { proxy { upstreams { destination = "x" } } } } }',
            "failed to parse service definition: invalid config key service.connect.sidecar_service.proxy.upstreams[0].destination",
        ),
        ('servic { name = "a" }', "failed to parse service definition: invalid config key servic"),
        (
            '{"service": {"name": "a", "port": "80"}}',
            "failed to parse service definition: 'service.port' expected type 'int', got unconvertible type 'string', value: '80'",
        ),
    ],
)
def test_service_definition_errors(text, message):
    with pytest.raises(InvalidInput) as exc:
        parse_service_definitions(text)
    assert exc.value.message == message


def test_unknown_service_kind_is_rejected():
    with pytest.raises(InvalidInput, match=r'^service: invalid service kind "terminating_gateway"'):
        parse_service_definitions('service { name = "t"\n kind = "terminating_gateway" }')


def test_file_without_services_yields_nothing():
    assert parse_service_definitions('datacenter = "dc1"') == []


# -------------------------------------------------------------------------- agent config

AGENT_HCL = """
datacenter         = "DC2"
primary_datacenter = "dc1"
data_dir           = "/var/lib/terminus"
bind_addr          = "10.0.0.5"
node_name          = "ignored-but-valid"
ports {
  http = 18500
  grpc = 18502
  dns  = -1
}
acl {
  enabled        = true
  default_policy = "deny"
  down_policy    = "extend-cache"
  tokens { initial_management = "root-secret" }
}
default_intention_policy = "allow"
telemetry { prometheus_retention_time = "24h" }
"""


def test_agent_config_hcl_and_json_agree():
    from_hcl = parse_agent_config(AGENT_HCL)
    from_json = parse_agent_config(
        json.dumps(
            {
                "datacenter": "DC2",
                "primary_datacenter": "dc1",
                "data_dir": "/var/lib/terminus",
                "bind_addr": "10.0.0.5",
                "node_name": "ignored-but-valid",
                "ports": {"http": 18500, "grpc": 18502, "dns": -1},
                "acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache", "tokens": {"initial_management": "root-secret"}},
                "default_intention_policy": "allow",
                "telemetry": {"prometheus_retention_time": "24h"},
            }
        )
    )
    assert from_hcl == from_json == AgentConfig(
        datacenter="dc2",  # Consul lower-cases the datacenter
        primary_datacenter="dc1",
        data_dir="/var/lib/terminus",
        bind_addr="10.0.0.5",
        http_port=18500,
        grpc_port=18502,
        acl_enabled=True,
        acl_default_policy="deny",
        initial_management_token="root-secret",
        default_intention_policy="allow",
    )


def test_agent_config_defaults():
    assert parse_agent_config("") == AgentConfig()
    assert AgentConfig() == AgentConfig(
        datacenter="dc1",
        primary_datacenter=None,
        data_dir=None,
        bind_addr="127.0.0.1",
        http_port=8500,
        grpc_port=8502,
        acl_enabled=False,
        acl_default_policy="allow",
        initial_management_token=None,
        default_intention_policy="",
    )


def test_agent_config_deprecated_spellings():
    cfg = parse_agent_config('acl_datacenter = "dc9"\nacl_master_token = "old"\nacl_default_policy = "deny"')
    assert (cfg.primary_datacenter, cfg.acl_enabled, cfg.initial_management_token, cfg.acl_default_policy) == (
        "dc9",
        True,
        "old",
        "deny",
    )
    assert parse_agent_config('acl { tokens { master = "m" } }').initial_management_token == "m"
    assert parse_agent_config('acl { tokens { master = "m", initial_management = "n" } }').initial_management_token == "n"


def test_agent_config_disabled_port():
    assert parse_agent_config("ports { http = -1 }").http_port == -1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('datacenter = "dc 1"', 'datacenter can only contain lowercase alphanumeric, - or _ characters. received: "dc 1"'),
        ('datacenter = ""', "datacenter cannot be empty"),
        ('primary_datacenter = "dc.1"', 'primary_datacenter can only contain lowercase alphanumeric, - or _ characters. received: "dc.1"'),
        ('acl { default_policy = "maybe" }', "Unsupported default ACL policy: maybe"),
        ('default_intention_policy = "block"', 'default_intention_policy must be "allow" or "deny", received: "block"'),
        ("ports { http = 70000 }", "ports.http: invalid port: 70000"),
        (
            'ports { http = "8500" }',
            "failed to parse agent config: 'ports.http' expected type 'int', got unconvertible type 'string', value: '8500'",
        ),
        (
            'acl { enabled = "yes" }',
            "failed to parse agent config: 'acl.enabled' expected type 'bool', got unconvertible type 'string', value: 'yes'",
        ),
        ('datacentre = "dc1"', "failed to parse agent config: invalid config key datacentre"),
        ("acl { tokens { root = 1 } }", "failed to parse agent config: invalid config key acl.tokens.root"),
        ('bind_addr = "my-host"', "bind_addr must be an ip address"),
    ],
)
def test_agent_config_errors(text, message):
    with pytest.raises(InvalidInput) as exc:
        parse_agent_config(text)
    assert exc.value.message == message


def test_load_agent_config_file_and_directory(tmp_path):
    (tmp_path / "a.hcl").write_text('datacenter = "east"\nacl { enabled = true }\n')
    (tmp_path / "b.json").write_text('{"acl": {"default_policy": "deny"}, "ports": {"http": 9500}}')
    (tmp_path / "notes.txt").write_text("not config")
    cfg = load_agent_config(tmp_path)
    assert (cfg.datacenter, cfg.acl_enabled, cfg.acl_default_policy, cfg.http_port) == ("east", True, "deny", 9500)
    assert load_agent_config(tmp_path / "a.hcl").acl_default_policy == "allow"

    (tmp_path / "c.hcl").write_text("bogus_key = 1\n")
    with pytest.raises(InvalidInput, match=r"^failed to parse .*c\.hcl: invalid config key bogus_key$"):
        load_agent_config(tmp_path)


@pytest.mark.parametrize(
    ("intention_policy", "acl_enabled", "acl_default", "allow"),
    [
        ("", False, "allow", True),
        ("", False, "deny", True),  # ACLs off: the default policy is not consulted
        ("", True, "allow", True),
        ("", True, "deny", False),
        ("allow", True, "deny", True),  # an explicit intention default wins
        ("deny", False, "allow", False),
        ("deny", True, "allow", False),
    ],
)
def test_intention_default_allow(intention_policy, acl_enabled, acl_default, allow):
    cfg = AgentConfig(acl_enabled=acl_enabled, acl_default_policy=acl_default, default_intention_policy=intention_policy)
    assert cfg.intention_default_allow() is allow
