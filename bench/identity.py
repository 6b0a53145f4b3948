"""SVID verification and leaf signing speed, each beside its floor measured in the same run.

    python bench/identity.py [--json]

The chain is what a mesh peer presents after a CA rotation: a leaf plus one intermediate,
EC P-256 throughout, all made with terminus's own CA library (``gateway.identity.ca``).
Root A is the trust bundle; root B, cross-signed by A (``ca.cross_sign``), is the
intermediate; every leaf is issued by B (``ca.generate_leaf``), so OpenSSL builds
leaf -> cross-signed B -> A and checks two ECDSA signatures.

Keys (medians of per-call ``time.perf_counter_ns`` timings, best of 3 passes, gc off):

* ``verify_us_uncached`` - ``Verifier.verify`` of a chain it has never seen: 300
  distinct leaves are generated beforehand and each pass walks them with a new
  ``Verifier``, so the result cache never hits. The verifier is warmed with one other
  chain first: the intermediate is the same for every leaf, as in steady state (a mesh
  has a handful of issuing paths and many leaves), so the path above the leaf has been
  validated by OpenSSL once and each new leaf gets the leaf step
  (``gateway/identity/issuers.py``): leaf parse, SPIFFE leaf rules, name chaining, the
  issuer's signature, validity window, cache insert.
* ``verify_us_new_issuer`` - the first chain through an issuing path: 300 chains, each
  with its own cross-signed intermediate, so every one is OpenSSL's full validation
  (both signatures, OpenSSL's parse of the leaf) plus recording the issuer.
* ``verify_us_cached`` - the same chain (the same tuple of DER bytes) verified again.
* ``anchor_openssl_verify_us`` - the floor under ``verify_us_new_issuer``: only the two
  ECDSA verifications the chain needs (``public_key.verify`` of the leaf's and the
  intermediate's signature, keys and certificates parsed beforehand), through the same
  OpenSSL that pyOpenSSL and cryptography use.
* ``anchor_one_signature_us`` - the floor under ``verify_us_uncached``: the leaf's
  signature check alone.
* ``anchor_dict_lookup_us`` - the floor under ``verify_us_cached``: one ``dict`` lookup
  keyed by the same tuple of DER bytes.
* ``leaf_sign_ms`` - ``ca.sign_leaf`` for a public key generated beforehand (CA
  certificate and key passed as parsed objects, as a hot path should).
* ``leaf_issue_ms`` - ``ca.generate_leaf``: EC P-256 key generation, the same signing,
  and the key's PEM.

Every timing includes one ``perf_counter_ns`` pair (~0.05-0.1 us); that matters only
next to the sub-microsecond cached numbers, and both cached keys carry it alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

from gateway.identity import ca, keys  # noqa: E402
from gateway.identity.verify import TrustBundle, Verifier  # noqa: E402

TRUST_DOMAIN = "11111111-2222-3333-4444-555555555555.consul"
SPIFFE = f"spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/"
CHAINS = 300
PASSES = 3
CACHED_CALLS = 3000
SIGN_CALLS = 200

T = TypeVar("T")


def timed(fn: Callable[[T], object], items: Sequence[T]) -> float:
    """Median ns of ``fn(item)`` over ``items``, gc disabled."""
    clock = time.perf_counter_ns
    out = []
    gc.collect()
    gc.disable()
    try:
        for item in items:
            start = clock()
            fn(item)
            out.append(clock() - start)
    finally:
        gc.enable()
    return statistics.median(out)


def best_of(passes: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(passes))


def build() -> dict[str, Any]:
    root_a, key_a_pem = ca.generate_root(TRUST_DOMAIN)
    root_b, key_b_pem = ca.generate_root(TRUST_DOMAIN, primary=False)
    cross_pem = ca.cross_sign(root_b.root_cert_pem, key_a_pem, root_a.root_cert_pem, ttl=ca.DEFAULT_ROOT_TTL)
    signer_cert = ca.load_certificate(root_b.root_cert_pem)
    signer_key = ca.load_private_key(key_b_pem)
    inter_der = ca.load_certificate(cross_pem).public_bytes(Encoding.DER)

    def leaf_der(i: int) -> bytes:
        pem, _ = ca.generate_leaf(signer_cert, signer_key, SPIFFE + f"svc-{i}")
        return ca.load_certificate(pem).public_bytes(Encoding.DER)

    chains = [(leaf_der(i), inter_der) for i in range(CHAINS + 1)]

    def new_path(i: int) -> tuple[bytes, bytes]:
        root_i, key_i_pem = ca.generate_root(TRUST_DOMAIN, primary=False)
        cross_i = ca.load_certificate(ca.cross_sign(root_i.root_cert_pem, key_a_pem, root_a.root_cert_pem, ttl=ca.DEFAULT_ROOT_TTL))
        pem, _ = ca.generate_leaf(ca.load_certificate(root_i.root_cert_pem), ca.load_private_key(key_i_pem), SPIFFE + f"new-{i}")
        return ca.load_certificate(pem).public_bytes(Encoding.DER), cross_i.public_bytes(Encoding.DER)
    return {
        "bundle": TrustBundle.from_pem(TRUST_DOMAIN, root_a.root_cert_pem),
        "root_cert": ca.load_certificate(root_a.root_cert_pem),
        "signer_cert": signer_cert,
        "signer_key": signer_key,
        "warm": chains[0],
        "chains": chains[1:],
        "new_paths": [new_path(i) for i in range(CHAINS)],
    }


def measure() -> dict[str, float]:
    env = build()
    bundle, warm, chains = env["bundle"], env["warm"], env["chains"]

    # -- verification, uncached: a new verifier per pass, warmed on a chain outside the set
    def uncached() -> float:
        v = Verifier([bundle])
        v.verify(warm)
        ns = timed(v.verify, chains)
        assert v.cache_len() == len(chains) + 1, "a timed chain hit the cache or failed"
        return ns

    verify_uncached = best_of(PASSES, uncached)

    def new_issuer() -> float:
        v = Verifier([bundle])
        v.verify(warm)
        ns = timed(v.verify, env["new_paths"])
        assert v.leaf_steps == 0 and v.cache_len() == len(env["new_paths"]) + 1, "a new path took a shortcut or failed"
        return ns

    verify_new_issuer = best_of(PASSES, new_issuer)

    # -- verification, cached
    v = Verifier([bundle])
    hit = chains[0]
    first = v.verify(hit)
    assert v.verify(hit) is first
    verify_cached = best_of(PASSES, lambda: timed(v.verify, [hit] * CACHED_CALLS))

    # -- floors: the two ECDSA verifications, and a dict lookup on the same key
    inter = x509.load_der_x509_certificate(chains[0][1])
    inter_pub, root_pub = inter.public_key(), env["root_cert"].public_key()
    inter_sig, inter_tbs = inter.signature, inter.tbs_certificate_bytes
    assert isinstance(inter_pub, ec.EllipticCurvePublicKey) and isinstance(root_pub, ec.EllipticCurvePublicKey)
    ecdsa = ec.ECDSA(hashes.SHA256())
    leaves = [x509.load_der_x509_certificate(c[0]) for c in chains]
    signed = [(leaf.signature, leaf.tbs_certificate_bytes) for leaf in leaves]

    def two_signatures(item: tuple[bytes, bytes]) -> None:
        inter_pub.verify(item[0], item[1], ecdsa)
        root_pub.verify(inter_sig, inter_tbs, ecdsa)

    anchor_verify = best_of(PASSES, lambda: timed(two_signatures, signed))
    anchor_one = best_of(PASSES, lambda: timed(lambda item: inter_pub.verify(item[0], item[1], ecdsa), signed))
    table = {hit: first}
    anchor_lookup = best_of(PASSES, lambda: timed(table.__getitem__, [hit] * CACHED_CALLS))

    # -- signing
    signer_cert, signer_key = env["signer_cert"], env["signer_key"]
    pubs = [keys.generate_key("ec", 256).public_key() for _ in range(SIGN_CALLS)]

    def sign(pub: Any) -> None:
        ca.sign_leaf(signer_cert, signer_key, spiffe_uri=SPIFFE + "web", public_key=pub)

    def issue(_: int) -> None:
        ca.generate_leaf(signer_cert, signer_key, SPIFFE + "web")

    leaf_sign = best_of(PASSES, lambda: timed(sign, pubs))
    leaf_issue = best_of(PASSES, lambda: timed(issue, range(SIGN_CALLS)))

    return {
        "verify_us_uncached": round(verify_uncached / 1e3, 1),
        "verify_us_cached": round(verify_cached / 1e3, 3),
        "verify_us_new_issuer": round(verify_new_issuer / 1e3, 1),
        "anchor_one_signature_us": round(anchor_one / 1e3, 1),
        "anchor_openssl_verify_us": round(anchor_verify / 1e3, 1),
        "anchor_dict_lookup_us": round(anchor_lookup / 1e3, 3),
        "leaf_sign_ms": round(leaf_sign / 1e6, 3),
        "leaf_issue_ms": round(leaf_issue / 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    result = measure()
    if not args.json:
        u, o = result["verify_us_uncached"], result["anchor_one_signature_us"]
        n, a = result["verify_us_new_issuer"], result["anchor_openssl_verify_us"]
        c, d = result["verify_us_cached"], result["anchor_dict_lookup_us"]
        print(f"verify, uncached (new leaf, known path): {u:7.1f} us   floor, 1x ECDSA P-256 verify: {o:7.1f} us  ({u / o:.2f}x)")
        print(f"verify, first leaf of a new path:       {n:8.1f} us   floor, 2x ECDSA P-256 verify: {a:7.1f} us  ({n / a:.2f}x)")
        print(f"verify, cached:                         {c:8.3f} us   floor, dict lookup:          {d:7.3f} us")
        print(f"sign a leaf (given key):                {result['leaf_sign_ms']:8.3f} ms")
        print(f"issue a leaf (with EC key generation):  {result['leaf_issue_ms']:8.3f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
