#!/usr/bin/env python3
"""Peer fan-out server: Python `websockets` (asyncio server) with
`websockets.broadcast`.

The room protocol of bench/README.md: the request path names the room; every
text or binary message a client sends goes to every OTHER client in that room,
unchanged (text stays text, binary stays binary). No compression.

Usage: python fanout_websockets.py --port PORT   (binds 127.0.0.1:PORT)
Needs `websockets` (scripts/requirements.txt; bench/run.py uses target/venv).
"""

import argparse
import asyncio
import sys

import websockets
from websockets.asyncio.server import serve

# room name (the request path) -> set of its connections
ROOMS = {}


async def handler(websocket):
    """Join the room the path names; broadcast every message to the others."""
    name = websocket.request.path
    room = ROOMS.setdefault(name, set())
    room.add(websocket)
    try:
        async for message in websocket:
            websockets.broadcast((c for c in room if c is not websocket), message)
    except websockets.ConnectionClosed:
        pass  # abrupt disconnects at the end of a run are expected
    finally:
        room.discard(websocket)
        if not room:
            ROOMS.pop(name, None)


async def main(port):
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=64 * 1024 * 1024,  # like the Rust peers
        backlog=4096,
    ) as server:
        print(
            f"fanout_websockets (websockets {websockets.__version__}, Python "
            f"{sys.version.split()[0]}) listening on 127.0.0.1:{port}",
            file=sys.stderr,
            flush=True,
        )
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    asyncio.run(main(ap.parse_args().port))
