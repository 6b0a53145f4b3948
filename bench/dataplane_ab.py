"""Paired A/B of the native gateway's added latency: this checkout against another one, one stack.

    python bench/dataplane_ab.py [--base ../other-checkout] [--rounds 3] [--seconds 8] [--workers 2]

Small changes to the gateway (tens of µs) are lost in ``bench/dataplane.py``'s run-to-run
spread: this VM's speed moves by more than that between runs. Here both versions run at the
same time, so they see the same machine state:

* the stack of ``bench/dataplane.py`` (server, local Lambda, Envoys, and the native gateway
  from this checkout, "new");
* a second native gateway for the same service from ``--base`` (its own ``gateway`` package,
  started with that directory as the working directory), "base";
* three keep-alive streams at 100 requests/s each: GET over mTLS to each gateway, and the
  signed Invoke straight to the local Lambda with the envelope the gateway sends. Each 10 ms
  cycle sends new, base, direct, then the next cycle base, new, direct: each gateway is
  preceded as often by the other gateway as by the direct request. (A rotating order was
  biased by 60-90 µs: a request that follows a TLS request finds the client's TLS code warm.)

Prints one JSON line per round: each gateway's p50 minus the direct p50, in ms, and
``new_minus_base``. Two checkouts of the same commit give 0.00 +- 0.02 ms.

Without ``--base``, "base" is ``bench/floor_gateway.py`` (already in the stack): the least
gateway, so ``new_minus_base`` is what this checkout's gateway adds above the work no
gateway can skip.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataplane as D  # noqa: E402


def measure(stack: D.BenchStack, base_port: int, workdir: Path, rounds: int, seconds: float) -> list[dict[str, float]]:
    client = D.LatencyClient(stack, workdir)
    new, base = client.gateway(stack.ports.native_gateway), client.gateway(base_port)
    direct = client.lambda_conn()
    invoke = client.invoke(new)
    get, timed = D.NATIVE_GET, D.timed
    try:
        for _ in range(100):  # warm-up
            timed(new, get), timed(base, get), timed(direct, invoke())
        out = []
        for _ in range(rounds):
            lat: dict[str, list[float]] = {"new": [], "base": [], "direct": []}
            streams = [("new", new), ("base", base), ("direct", direct)]
            t0 = time.perf_counter() + 0.05
            for i in range(int(seconds * 100)):
                order = streams if i % 2 == 0 else [streams[1], streams[0], streams[2]]
                for k, (name, conn) in enumerate(order):
                    raw = invoke() if conn is direct else get
                    due = t0 + i * 0.01 + k * 0.01 / 3
                    while (delay := due - time.perf_counter()) > 0:
                        time.sleep(delay)
                    lat[name].append(timed(conn, raw))
            d = statistics.median(lat["direct"])
            row = {"new": round(statistics.median(lat["new"]) - d, 3), "base": round(statistics.median(lat["base"]) - d, 3),
                   "direct_p50": round(d, 3)}
            row["new_minus_base"] = round(row["new"] - row["base"], 3)
            print(json.dumps(row), flush=True)
            out.append(row)
        return out
    finally:
        for conn in (new, base, direct):
            conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path,
                    help="another checkout of terminus (its gateway package); without it, bench/floor_gateway.py")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="per round, at 100 requests/s per stream")
    ap.add_argument("--workers", type=int, default=D.NATIVE_WORKERS)
    args = ap.parse_args()
    if args.base is not None and not (args.base / "gateway" / "dataplane").is_dir():
        ap.error(f"{args.base} is not a terminus checkout")
    ports = D.demo.Ports(**{name: D.free_port() for name in vars(D.demo.Ports())})
    workdir = Path(tempfile.mkdtemp(prefix="terminus-bench-ab-"))
    stack = D.BenchStack(ports, D.free_port(), workdir, args.workers)
    base_port = D.free_port()
    try:
        stack.start()
        if args.base is None:
            measure(stack, stack.floor_port, workdir, args.rounds, args.seconds)
            return
        stack.start_process("base-gateway", [
            sys.executable, "-m", "gateway.cli.main", "gateway", "--service", "native-gateway",
            "--listen", f"127.0.0.1:{base_port}", "--metrics-listen", f"127.0.0.1:{D.free_port()}",
            "--data-dir", str(workdir / "data"), "--workers", str(args.workers), *stack.native_args,
        ], cwd=args.base.resolve())  # its own gateway package: `-m` looks in the working directory first
        stack.wait_for("the base gateway", lambda: D.is_listening(base_port))
        measure(stack, base_port, workdir, args.rounds, args.seconds)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

if __name__ == "__main__":
    main()
