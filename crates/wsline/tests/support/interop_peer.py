#!/usr/bin/env python3
"""Python `websockets` peers for wsline's sync interop tests (tests/interop_python.rs).

client URL [--no-compression] [--expect-deflate] [--cafile PEM]
    Talks to the wsline server at URL: echoes of text, binary, 1 MiB and empty messages,
    a ping, a close with 4001, then a connection to URL + "close" that the server ends
    with 4003 "server bye". Checks that permessage-deflate was negotiated exactly when
    --expect-deflate is given. For wss:// URLs, trusts the certificates in --cafile (with
    Python's ssl module, OpenSSL). Prints OK.

server [--no-compression] [--tls-cert PEM --tls-key PEM]
    Prints its port, then for each connection: answers "extensions?" with the negotiated
    Sec-WebSocket-Extensions (or "none"), closes on "close CODE REASON" with that code and
    reason, and echoes everything else. With a certificate, it serves wss://.
"""

import argparse
import asyncio
import os
import ssl

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MAX_SIZE = 16 << 20


def compression(args):
    return None if args.no_compression else "deflate"


def client_tls(args):
    return ssl.create_default_context(cafile=args.cafile) if args.cafile else None


async def run_client(args):
    async with connect(
        args.url,
        compression=compression(args),
        max_size=MAX_SIZE,
        ping_interval=None,
        ssl=client_tls(args),
    ) as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        deflate = "permessage-deflate" in negotiated
        assert deflate == args.expect_deflate, f"negotiated {negotiated!r}"
        messages = [
            "héllo wörld",
            b"\x00\x01\xff",
            os.urandom(1 << 20),
            "compressible " * 80_000,
            "",
            b"",
        ]
        for message in messages:
            await ws.send(message)
            echo = await ws.recv()
            assert echo == message, f"{len(echo)}-byte echo of a {len(message)}-byte message"
        latency = await (await ws.ping(b"interop"))
        assert latency < 10, latency
        await ws.close(4001, "client bye")
    assert ws.close_code == 4001, ws.close_code
    async with connect(
        args.url + "close", compression=compression(args), ssl=client_tls(args)
    ) as ws:
        try:
            await ws.recv()
            raise AssertionError("the server did not close")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, closed
            assert (closed.rcvd.code, closed.rcvd.reason) == (4003, "server bye"), closed
    print("OK", flush=True)


async def answer(ws):
    try:
        async for message in ws:
            if message == "extensions?":
                negotiated = ws.response.headers.get("Sec-WebSocket-Extensions", "none")
                await ws.send(negotiated)
            elif isinstance(message, str) and message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                await ws.close(int(code), reason)
                return
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass


async def run_server(args):
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    async with serve(
        answer,
        "127.0.0.1",
        0,
        compression=compression(args),
        max_size=MAX_SIZE,
        ping_interval=None,
        ssl=tls,
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    client = modes.add_parser("client")
    client.add_argument("url")
    client.add_argument("--no-compression", action="store_true")
    client.add_argument("--expect-deflate", action="store_true")
    client.add_argument("--cafile")
    server = modes.add_parser("server")
    server.add_argument("--no-compression", action="store_true")
    server.add_argument("--tls-cert")
    server.add_argument("--tls-key")
    args = parser.parse_args()
    asyncio.run(run_client(args) if args.mode == "client" else run_server(args))


if __name__ == "__main__":
    main()
