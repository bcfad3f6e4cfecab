#!/usr/bin/env python3
"""Autobahn TestSuite client built on the Python `websockets` package.

An interop peer for wsline and a stand-in client under test for
`scripts/autobahn.py --mode client`. It speaks the standard Autobahn client
protocol against a fuzzing server at BASEURL (e.g. ws://127.0.0.1:9001):

1. GET BASEURL/getCaseCount, whose single text message is the case count N;
2. for each case 1..N, open BASEURL/runCase?case=I&agent=AGENT and echo
   every message until the fuzzing server closes the connection;
3. open BASEURL/updateReports?agent=AGENT so the server writes its reports.

Usage: autobahn_client.py BASEURL [--agent AGENT] [--no-compression]
"""

import argparse
import asyncio
import os
from urllib.parse import urlencode

# websockets caps a message at 4096 fragments by default (read from this
# variable at import time); Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments.
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, WebSocketException  # noqa: E402

MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseurl", help="fuzzing server URL, e.g. ws://127.0.0.1:9001")
    parser.add_argument("--agent", default="wsline", help="agent name for the reports")
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="do not offer permessage-deflate",
    )
    return parser.parse_args()


def open_connection(url: str, compression: bool):
    """Return a `websockets` connect() context for `url` with our limits."""
    return connect(
        url,
        compression="deflate" if compression else None,
        max_size=MAX_MESSAGE_SIZE,
        ping_interval=None,
        proxy=None,
    )


async def get_case_count(baseurl: str, compression: bool) -> int:
    """Ask the fuzzing server how many cases it will serve."""
    async with open_connection(f"{baseurl}/getCaseCount", compression) as ws:
        return int(await ws.recv())


async def run_case(baseurl: str, case: int, agent: str, compression: bool) -> None:
    """Run one case: echo every message until the server closes."""
    query = urlencode({"case": case, "agent": agent})
    try:
        async with open_connection(f"{baseurl}/runCase?{query}", compression) as ws:
            async for message in ws:
                await ws.send(message)
    except (ConnectionClosed, WebSocketException, OSError):
        # The fuzzing server fails connections on purpose; it records the
        # verdict, so the client only has to move on to the next case.
        pass


async def update_reports(baseurl: str, agent: str, compression: bool) -> None:
    """Tell the fuzzing server that this agent has run every case."""
    query = urlencode({"agent": agent})
    async with open_connection(f"{baseurl}/updateReports?{query}", compression):
        pass


async def main() -> None:
    """Drive every case the fuzzing server offers, then update its reports."""
    args = parse_args()
    baseurl = args.baseurl.rstrip("/")
    compression = not args.no_compression
    count = await get_case_count(baseurl, compression)
    print(f"running {count} cases against {baseurl}", flush=True)
    for case in range(1, count + 1):
        await run_case(baseurl, case, args.agent, compression)
    await update_reports(baseurl, args.agent, compression)


if __name__ == "__main__":
    asyncio.run(main())
