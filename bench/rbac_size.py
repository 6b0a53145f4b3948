"""RBAC size and Envoy's time to apply it, beside Consul's AND-NOT algorithm.

    python bench/rbac_size.py [--json] [--counts 1000,10000]

For N intentions on one destination (a realistic mix: exact sources in several namespaces,
namespace wildcards, a few L7 sources, one `*/*` rule), prints:
- `rbac_bytes`: the serialized HTTP RBAC filter config terminus generates (xds/rbac.py);
- `consul_rbac_bytes`: the size of Consul's policy-based RBAC for the same intentions,
  computed by a reference of its algorithm (regex principal per source, AND-NOT
  distribution), in the same run;
- `envoy_apply_ms`: how long a real Envoy 1.40 takes to apply a listener update carrying
  that RBAC (file-based LDS: from the file swap to `listener_manager.lds.update_success`
  moving), beside `envoy_apply_ms_anchor`, the same update with an empty RBAC.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf import json_format  # noqa: E402

from gateway.intentions.engine import IntentionEngine, ServiceName  # noqa: E402
from gateway.intentions.validate import normalize_service_intentions  # noqa: E402
from tests.support.envoy import EnvoyProcess, free_port  # noqa: E402
from xds.rbac import compile_rbac, consul_rbac_size, rbac_size_bytes  # noqa: E402

TD = "11111111-2222-3333-4444-555555555555.consul"
DEST = ServiceName("api")


def intentions(count: int, seed: int = 1) -> list[Any]:
    rng = random.Random(seed)
    namespaces = [f"ns{i}" for i in range(20)]
    sources: dict[tuple[str, str], dict[str, Any]] = {}
    while len(sources) < count - 1:
        ns = rng.choice(namespaces)
        roll = rng.random()
        if roll < 0.03 and (ns, "*") not in sources:
            sources[(ns, "*")] = {"Name": "*", "Namespace": ns, "Action": rng.choice(["allow", "deny"])}
            continue
        name = f"svc{rng.randrange(count * 4)}"
        if roll < 0.10:
            sources[(ns, name)] = {"Name": name, "Namespace": ns, "Permissions": [
                {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}},
                {"Action": "allow", "HTTP": {"PathPrefix": "/", "Methods": ["GET", "HEAD"]}}]}
        else:
            sources[(ns, name)] = {"Name": name, "Namespace": ns, "Action": rng.choice(["allow", "deny"])}
    sources[("*", "*")] = {"Name": "*", "Namespace": "*", "Action": "deny"}
    engine = IntentionEngine(default_allow=False)
    engine.load([normalize_service_intentions({"Kind": "service-intentions", "Name": "api", "Sources": list(sources.values())})])
    return engine.for_destination(DEST)


def listener(port: int, rbac: Any) -> dict[str, Any]:
    return {"resources": [{
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "bench", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "bench",
            "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
            "http_filters": [
                {"name": "envoy.filters.http.rbac", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                    **json_format.MessageToDict(rbac, preserving_proto_field_name=True)}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
            ]}}]}],
    }]}


def apply_ms(envoy: EnvoyProcess, lds: Path, port: int, rbac: Any, repeats: int = 3) -> float:
    """Swap the LDS file and wait for Envoy to apply it; best of `repeats`."""
    best = float("inf")
    for i in range(repeats):
        before = envoy.stat("listener_manager.lds.update_success")
        tmp = lds.with_suffix(f".{i}.tmp")
        body = listener(port, rbac)
        body["resources"][0]["name"] = f"bench-{time.monotonic_ns()}"  # a real change every time
        tmp.write_text(json.dumps(body))
        start = time.perf_counter()
        os.replace(tmp, lds)  # an atomic move is what Envoy's file watch reacts to
        deadline = start + 60
        while envoy.stat("listener_manager.lds.update_success") <= before:
            if time.perf_counter() > deadline:
                raise SystemExit(f"Envoy did not apply the update:\n{envoy.log(30)}")
            time.sleep(0.002)
        best = min(best, (time.perf_counter() - start) * 1000)
    return round(best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--counts", default="1000,10000")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    result: dict[str, Any] = {"rbac_bytes": {}, "consul_rbac_bytes": {}, "envoy_apply_ms": {}, "envoy_apply_ms_anchor": None}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="terminus-rbac-") as tmp:
        lds = Path(tmp) / "lds.json"
        port = free_port()
        empty = compile_rbac([], destination=DEST, default_allow=False, trust_domain=TD, http=True, datacenters=("dc1",))
        lds.write_text(json.dumps(listener(port, empty)))
        config = {"node": {"id": "bench", "cluster": "bench"},
                  "dynamic_resources": {"lds_config": {"path_config_source": {"path": str(lds)}, "resource_api_version": "V3"}}}
        with EnvoyProcess(config) as envoy:
            envoy.wait_ready(30)
            result["envoy_apply_ms_anchor"] = apply_ms(envoy, lds, port, empty)
            for count in counts:
                ixns = intentions(count)
                rbac = compile_rbac(ixns, destination=DEST, default_allow=False, trust_domain=TD, http=True, datacenters=("dc1",))
                key = str(count)
                result["rbac_bytes"][key] = rbac_size_bytes(rbac)
                result["consul_rbac_bytes"][key] = consul_rbac_size(ixns, default_allow=False, trust_domain=TD, http=True)
                result["envoy_apply_ms"][key] = apply_ms(envoy, lds, port, rbac)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
