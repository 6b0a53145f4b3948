"""The least gateway: only the work the native gateway cannot skip (a benchmark anchor).

    python bench/floor_gateway.py --listen PORT --http-addr HOST:PORT --lambda-port PORT

``bench/dataplane.py`` runs it beside the real gateways and times it in the same 100 req/s
loop. Per connection it requires a client certificate from the mesh CA and reads the caller's
SPIFFE URI once. Per request it does what the issue asks of every allowed request in the
benchmark's shape, with the gateway's own code for each required step:

* read the request head (a split on CRLF, no validation);
* decide with the intention engine (loaded once from the server's service-intentions);
* write Envoy's JSON envelope (``jsonize_request``) and sign the Invoke with the gateway's
  pre-signed template (``_InvokePlan.head``), then one write on a kept-alive plain connection;
* read the Lambda's answer (Content-Length only), turn the function result into the HTTP
  response (``dejsonize_response``) and write it.

It skips what the real gateway adds for correctness and operations: h11's grammar checks,
path normalization, route lookup by SNI, the identity verifier, metrics, error mapping,
pooling, flow control and timeouts. What the real gateway adds above this anchor is the cost
of those; what this anchor adds above a straight call is a floor for a gateway in Python
on this machine. Not a product: bad input here is not handled.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import uvloop  # noqa: E402

from dataplane import spiffe_uri  # noqa: E402 - bench/dataplane.py, beside this file
from gateway.awslambda.sigv4 import Credentials  # noqa: E402
from gateway.dataplane.http1 import split_head  # noqa: E402
from gateway.dataplane.lambda_client import LambdaClient, LambdaTarget, StaticCredentialProvider  # noqa: E402
from gateway.dataplane.server import _RequestIds  # noqa: E402
from gateway.dataplane.transform import dejsonize_response, jsonize_request  # noqa: E402
from gateway.demo import stack as demo  # noqa: E402
from gateway.intentions.engine import IntentionEngine, ServiceName  # noqa: E402
from gateway.intentions.request import HTTPRequest  # noqa: E402

DESTINATION = "fn-native"  # the service whose intentions decide; its leaf is presented
MAX_HEAD = 65536


def read_head(buf: bytearray) -> tuple[int, str, list[tuple[str, str]]] | None:
    """(where the head ends, its first line, its headers with lower-case names), once the
    whole head is in ``buf``. No validation: the floor trusts its peers."""
    head = split_head(buf, MAX_HEAD)
    if type(head) is not tuple:
        return None
    end, lines = head
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("ascii").lower(), value.strip().decode("latin-1")))
    return end, lines[0].decode("latin-1"), headers


class HeadReader(asyncio.Protocol):
    """Buffers bytes until a whole head is in, then calls ``on_head``."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buf = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head = read_head(self.buf)
        if head is not None:
            self.on_head(*head)

    def on_head(self, end: int, first: str, headers: list[tuple[str, str]]) -> None:
        raise NotImplementedError


class Upstream(HeadReader):
    """The one kept-alive connection to the Lambda; one request at a time."""

    waiter: Downstream | None = None

    def on_head(self, end: int, first: str, headers: list[tuple[str, str]]) -> None:
        length = next((int(v) for n, v in headers if n == "content-length"), 0)
        buf = self.buf
        stop = end + 4 + length
        if len(buf) < stop:
            return  # read again when the rest of the body is in
        body = bytes(buf[end + 4:stop])
        del buf[:stop]
        waiter, self.waiter = self.waiter, None
        assert waiter is not None
        waiter.answer(dejsonize_response(headers, body))


class Downstream(HeadReader):
    def __init__(self, gw: FloorGateway) -> None:
        super().__init__()
        self.gw = gw
        self.caller: ServiceName | None = None
        self.xfcc = ""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        uri = spiffe_uri(der)
        self.caller = ServiceName(uri.rsplit("/svc/", 1)[1])
        self.xfcc = f"By={self.gw.own_uri};Hash={hashlib.sha256(der).hexdigest()};URI={uri}"

    def on_head(self, end: int, first: str, headers: list[tuple[str, str]]) -> None:
        del self.buf[:end + 4]  # GETs only: no body
        method, path, _ = first.split(" ")
        gw = self.gw
        joined = {":authority": headers[0][1], ":method": method, ":path": path, ":scheme": "https", **dict(headers)}
        assert self.caller is not None
        if not gw.engine.decide(self.caller, gw.destination, HTTPRequest(method, path, joined)).allowed:
            self.transport.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            return
        headers += [("x-request-id", gw.ids.next()), ("x-forwarded-proto", "https"),
                    ("x-forwarded-client-cert", self.xfcc)]
        payload = jsonize_request(method, path, headers, b"")
        head = gw.plan.head(gw.creds, payload)
        assert head is not None
        gw.upstream.waiter = self
        gw.upstream.transport.write(head + payload)

    def answer(self, t: Any) -> None:
        out = [b"HTTP/1.1 %d OK\r\n" % t.status]
        out += [b"%s: %s\r\n" % (n.encode("latin-1"), v.encode("latin-1")) for n, v in t.headers]
        out.append(b"content-length: %d\r\n\r\n" % len(t.body))
        out.append(t.body)
        self.transport.write(b"".join(out))


class FloorGateway:
    def __init__(self, args: argparse.Namespace) -> None:
        http = f"http://{args.http_addr}"
        self.engine = IntentionEngine(default_allow=False)
        self.engine.load(httpx.get(f"{http}/v1/config/service-intentions", timeout=10).json())
        self.destination = ServiceName(DESTINATION)
        leaf = httpx.get(f"{http}/v1/agent/connect/ca/leaf/{DESTINATION}", timeout=10).json()
        roots = httpx.get(f"{http}/v1/agent/connect/ca/roots", timeout=10).json()
        self.own_uri = spiffe_uri(ssl.PEM_cert_to_DER_cert(leaf["CertPEM"]))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata="".join(r["RootCert"] for r in roots["Roots"]))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "leaf.pem").write_text(leaf["PrivateKeyPEM"].rstrip("\n") + "\n" + leaf["CertPEM"])
            ctx.load_cert_chain(Path(d) / "leaf.pem")
        ctx.options |= ssl.OP_NO_TICKET
        self.ctx = ctx
        self.creds = Credentials(demo.DEMO_KEY, demo.DEMO_SECRET)
        target = LambdaTarget(demo.ARN, "us-east-1", f"http://127.0.0.1:{args.lambda_port}")
        self.plan = LambdaClient(StaticCredentialProvider(self.creds))._plan(target)
        self.ids = _RequestIds()
        self.upstream = Upstream()
        self.args = args

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self.upstream, "127.0.0.1", self.args.lambda_port)
        server = await loop.create_server(lambda: Downstream(self), "127.0.0.1", self.args.listen, ssl=self.ctx)
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--http-addr", required=True, help="terminus server HTTP address")
    ap.add_argument("--lambda-port", type=int, required=True, help="local Lambda port on 127.0.0.1")
    gw = FloorGateway(ap.parse_args())
    uvloop.run(gw.serve())


if __name__ == "__main__":
    main()
