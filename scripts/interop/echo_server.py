#!/usr/bin/env python3
"""WebSocket echo server built on the Python `websockets` package.

An interop peer for wsline and a stand-in server under test for
`scripts/autobahn.py --mode server`: every text or binary message received
is sent back unchanged until the client closes.

Usage: echo_server.py [--host HOST] [--port PORT] [--no-compression]
"""

import argparse
import asyncio
import os
import signal

# websockets caps a message at 4096 fragments by default (read from this
# variable at import time); Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=9001, help="port to bind")
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="do not negotiate permessage-deflate",
    )
    return parser.parse_args()


async def echo(connection: ServerConnection) -> None:
    """Send every message received on `connection` back to the client."""
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass


async def main() -> None:
    """Serve until SIGINT or SIGTERM."""
    args = parse_args()
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.cancel)
    async with serve(
        echo,
        args.host,
        args.port,
        compression=None if args.no_compression else "deflate",
        max_size=MAX_MESSAGE_SIZE,
        ping_interval=None,
    ):
        print(f"echo server listening on ws://{args.host}:{args.port}", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
