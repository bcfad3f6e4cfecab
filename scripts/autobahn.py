#!/usr/bin/env python3
"""Run the Autobahn WebSocket conformance suite (via kosoku) against wsline.

Modes:
  server  start a server under test, drive it with `kosoku -m fuzzingclient`.
  client  start `kosoku -m fuzzingserver`, run a client under test against it.

With --http2-bridge the cases run over HTTP/2 (RFC 8441), which kosoku does not
speak: scripts/interop/node/h2_bridge.mjs sits between, turning each of kosoku's
HTTP/1.1 WebSockets into an extended CONNECT stream of one h2c connection to the
server under test (server mode), or each extended CONNECT of the client under
test into an HTTP/1.1 WebSocket to kosoku (client mode), and copying the bytes
unchanged. --compare DIR then fails every case that was OK in the report in DIR
(the same corpus over HTTP/1.1) and is not OK here.

The kosoku report (index.json plus per-case JSON/HTML) and the logs of every
process go to target/autobahn/{server,client}/. One summary line is printed,
then every failing case. Exit status: 0 when every case that ran passed, 1 on
a conformance failure, 2 when the harness itself could not complete a run.

A case fails when its `behavior` is not OK, NON-STRICT or INFORMATIONAL, or its
`behaviorClose` is not OK or INFORMATIONAL. UNIMPLEMENTED cases fail unless an
--allow-unimplemented pattern covers them. Cases removed with --exclude are
skipped on purpose and never fail the run; any other case missing from the
report does.

Run with the Python of the venv that has kosoku installed (target/venv).
"""

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Importing the case index puts kosoku's `autobahn` shim package on sys.path;
# this works because the harness runs as __main__, never as module `autobahn`.
from kosoku.cases import CASES

ROOT = Path(__file__).resolve().parent.parent
# Keepalive off: a ping from the server in the middle of a long case (12.2.16 runs for
# tens of seconds under --jobs) is not an echo, and the suite counts it against the case.
DEFAULT_SERVER_CMD = (
    "target/release/wsline serve --host 127.0.0.1 --port {port}"
    " --max-message-size 16777216 --ping-interval 0"
)
DEFAULT_CLIENT_CMD = "target/release/examples/autobahn_client ws://127.0.0.1:{port}"
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
PASSING_BEHAVIORS = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE_BEHAVIORS = {"OK", "INFORMATIONAL"}
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
REPORT_GRACE = 30.0
LOG_TAIL_LINES = 20


class HarnessError(Exception):
    """The harness could not complete a run (as opposed to a failing case)."""


@dataclass
class Summary:
    """Verdict counts and problem cases of one run."""

    counts: Counter = field(default_factory=Counter)
    close_failures: int = 0
    failed: list = field(default_factory=list)
    unimplemented: list = field(default_factory=list)
    excluded: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("server", "client"), required=True)
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER_CMD,
        help="server under test; {port} is replaced (default: %(default)s)",
    )
    parser.add_argument(
        "--client-cmd",
        default=DEFAULT_CLIENT_CMD,
        help="client under test; {port} is replaced (default: %(default)s)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERNS",
        help="comma-separated case ids or globs not to run, e.g. '12.*,13.*'",
    )
    parser.add_argument(
        "--allow-unimplemented",
        action="append",
        default=[],
        metavar="PATTERNS",
        help="comma-separated case ids or globs that may be UNIMPLEMENTED",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cases run at once: kosoku's -p in server mode, AUTOBAHN_JOBS for the "
        "client under test in client mode (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds allowed for the whole suite run (default: %(default)s)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        help="report directory (default: target/autobahn/MODE)",
    )
    parser.add_argument(
        "--http2-bridge",
        action="store_true",
        help="run the cases over HTTP/2 through scripts/interop/node/h2_bridge.mjs",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="fail cases that are OK in the report in DIR and not OK in this one",
    )
    args = parser.parse_args(argv)
    args.exclude = split_patterns(args.exclude)
    args.allow_unimplemented = split_patterns(args.allow_unimplemented)
    args.outdir = args.outdir or ROOT / "target" / "autobahn" / args.mode
    return args


def split_patterns(values: list) -> list:
    """Flatten repeated comma-separated pattern options into one list."""
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


def matches(case_id: str, patterns: list) -> bool:
    """Whether `case_id` matches any of the glob `patterns`."""
    return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


def case_sort_key(case_id: str) -> list:
    """Numeric ordering of case ids (1.2.10 after 1.2.9)."""
    return [int(part) for part in case_id.split(".")]


def kosoku_command() -> list:
    """The kosoku console script installed beside this Python interpreter."""
    beside = Path(sys.executable).parent / "kosoku"
    found = str(beside) if beside.exists() else shutil.which("kosoku")
    if not found:
        raise HarnessError("kosoku not found; run with the venv's python")
    return [found]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expand(command: str, port: int) -> list:
    """Split a command line and substitute its {port} placeholder."""
    return shlex.split(command.replace("{port}", str(port)))


def start(argv: list, log_path: Path, env: dict = None) -> subprocess.Popen:
    """Start `argv` in the repo root with stdout and stderr going to a log.

    `env` adds variables to the inherited environment.
    """
    shown = " ".join(f"{name}={value}" for name, value in (env or {}).items())
    print(f"+ {shown + ' ' if shown else ''}{shlex.join(argv)}  (log: {log_path})", flush=True)
    with open(log_path, "wb") as log:
        try:
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        except OSError as err:
            raise HarnessError(f"cannot start {argv[0]}: {err}") from err


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this harness started: SIGTERM, then SIGKILL, by PID."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)


def wait(proc: subprocess.Popen, timeout: float, what: str) -> int:
    """Wait for `proc` to exit; a HarnessError if it outlives `timeout`."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired as err:
        raise HarnessError(f"{what} still running after {timeout:.0f}s") from err


def wait_for_tcp(port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until 127.0.0.1:`port` accepts TCP while `proc` stays alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise HarnessError(f"server did not accept TCP on port {port} in {timeout:.0f}s")


def wait_for_listen_port(log_path: Path, proc: subprocess.Popen) -> int:
    """Read the port kosoku's fuzzingserver announces in its log."""
    pattern = re.compile(r"fuzzingserver listening on ws://[^\s:]+:(\d+)")
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = pattern.search(log_path.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            raise HarnessError(f"fuzzingserver exited with status {proc.returncode}")
        time.sleep(0.1)
    raise HarnessError(
        f"fuzzingserver did not announce its port in {STARTUP_TIMEOUT:.0f}s"
    )


def start_bridge(direction: str, target_port: int, outdir: Path):
    """Start the HTTP/1.1 <-> HTTP/2 bridge towards `target_port`; return it and its port."""
    node = shutil.which("node")
    if not node:
        raise HarnessError("--http2-bridge needs node")
    script = ROOT / "scripts" / "interop" / "node" / "h2_bridge.mjs"
    log_path = outdir / f"bridge-{direction}.log"
    print(f"+ node {script} {direction} {target_port}  (log: {log_path})", flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [node, str(script), direction, str(target_port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    # The port line, read in a thread so that a bridge that prints nothing cannot hang us.
    lines = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(STARTUP_TIMEOUT)
    line = lines[0].decode().strip() if lines else ""
    if not line.isdigit():
        stop(proc)
        raise HarnessError(f"h2_bridge.mjs did not print its port (got {line!r})")
    return proc, int(line)


def kosoku_selection(exclude: list) -> list:
    """kosoku options excluding the given case patterns."""
    return [arg for pattern in exclude for arg in ("-x", pattern)]


def run_server_mode(args: argparse.Namespace) -> list:
    """Start the server under test and drive it with kosoku's fuzzingclient.

    Returns the problems that fail the run even if every reported case passed.
    """
    port = free_port()
    server = start(expand(args.server_cmd, port), args.outdir / "server.log")
    bridge = None
    try:
        wait_for_tcp(port, server, STARTUP_TIMEOUT)
        if args.http2_bridge:
            bridge, port = start_bridge("to-h2", port, args.outdir)
        fuzzer = start(
            kosoku_command()
            + ["-m", "fuzzingclient", "-p", str(args.jobs), "-o", str(args.outdir)]
            + kosoku_selection(args.exclude)
            + [f"127.0.0.1:{port}"],
            args.outdir / "kosoku.log",
        )
        try:
            wait(fuzzer, args.timeout, "kosoku fuzzingclient")
        finally:
            stop(fuzzer)
        if server.poll() is not None:
            return [f"server exited during the run with status {server.returncode}"]
        if bridge and bridge.poll() is not None:
            return [f"h2_bridge.mjs exited during the run with status {bridge.returncode}"]
        return []
    finally:
        if bridge:
            stop(bridge)
        stop(server)


def run_client_mode(args: argparse.Namespace) -> list:
    """Start kosoku's fuzzingserver and run the client under test against it.

    Returns the problems that fail the run even if every reported case passed.
    """
    log_path = args.outdir / "kosoku.log"
    fuzzer = start(
        kosoku_command()
        + ["-m", "fuzzingserver", "-o", str(args.outdir)]
        + kosoku_selection(args.exclude)
        + ["127.0.0.1:0"],
        log_path,
    )
    bridge = None
    try:
        port = wait_for_listen_port(log_path, fuzzer)
        if args.http2_bridge:
            bridge, port = start_bridge("to-h1", port, args.outdir)
        client = start(
            expand(args.client_cmd, port),
            args.outdir / "client.log",
            {"AUTOBAHN_JOBS": str(args.jobs)},
        )
        try:
            status = wait(client, args.timeout, "client")
        finally:
            stop(client)
        # kosoku writes its report and exits once the client has opened
        # /updateReports; it waits forever for a client that never does.
        wait(fuzzer, REPORT_GRACE, "fuzzingserver (did the client update reports?)")
        return [f"client exited with status {status}"] if status else []
    finally:
        if bridge:
            stop(bridge)
        stop(fuzzer)


def read_report(outdir: Path) -> dict:
    """Return {case id: index entry} from kosoku's index.json."""
    index_path = outdir / "index.json"
    if not index_path.exists():
        raise HarnessError(f"no report at {index_path}")
    index = json.loads(index_path.read_text())
    if len(index) != 1:
        raise HarnessError(f"expected one agent in {index_path}, found {sorted(index)}")
    return next(iter(index.values()))


def case_failed(entry: dict) -> bool:
    """Whether an index entry is a failing (not merely unimplemented) verdict."""
    return (
        entry["behavior"] not in PASSING_BEHAVIORS | {"UNIMPLEMENTED"}
        or entry["behaviorClose"] not in PASSING_CLOSE_BEHAVIORS
    )


def summarize(results: dict, exclude: list) -> Summary:
    """Count verdicts and collect failing, unimplemented, skipped cases."""
    summary = Summary()
    for case_id in sorted(results, key=case_sort_key):
        entry = results[case_id]
        behavior = entry["behavior"]
        summary.counts[behavior if behavior in BEHAVIORS else "FAILED"] += 1
        if entry["behaviorClose"] not in PASSING_CLOSE_BEHAVIORS:
            summary.close_failures += 1
        if case_failed(entry):
            summary.failed.append(case_id)
        elif behavior == "UNIMPLEMENTED":
            summary.unimplemented.append(case_id)
    for case_id in CASES:
        if case_id not in results:
            target = summary.excluded if matches(case_id, exclude) else summary.missing
            target.append(case_id)
    return summary


def summary_line(mode: str, summary: Summary) -> str:
    """The one-line result of a run."""
    total = sum(summary.counts.values())
    counts = ", ".join(f"{name} {summary.counts[name]}" for name in BEHAVIORS)
    return (
        f"autobahn {mode}: {total} cases: {counts}; "
        f"behaviorClose failures {summary.close_failures}; "
        f"excluded {len(summary.excluded)}, missing {len(summary.missing)}"
    )


def case_detail(outdir: Path, case_id: str, entry: dict) -> str:
    """One line describing a failing case, with kosoku's explanation."""
    detail = json.loads((outdir / entry["reportfile"]).read_text())
    reasons = dict.fromkeys((detail["result"], detail["resultClose"]))
    return (
        f"  {case_id}: behavior={entry['behavior']}, "
        f"behaviorClose={entry['behaviorClose']} "
        f"(remote close {entry['remoteCloseCode']}): {' / '.join(reasons)}"
    )


def compare(results: dict, baseline: dict, baseline_dir: Path) -> list:
    """The cases OK in `baseline` (the report in `baseline_dir`) that are not OK here."""
    worse = [
        f"{case_id}: {results[case_id]['behavior']}/{results[case_id]['behaviorClose']}"
        if case_id in results
        else f"{case_id}: missing"
        for case_id in sorted(baseline, key=case_sort_key)
        if baseline[case_id]["behavior"] == "OK"
        and baseline[case_id]["behaviorClose"] == "OK"
        and (
            case_id not in results
            or results[case_id]["behavior"] != "OK"
            or results[case_id]["behaviorClose"] != "OK"
        )
    ]
    if not worse:
        ok = sum(1 for entry in baseline.values() if entry["behavior"] == "OK")
        print(f"  every case OK in {baseline_dir} ({ok}) is OK here")
        return []
    return [f"OK in {baseline_dir}, not here: {abbreviate(worse)}"]


def abbreviate(case_ids: list, limit: int = 20) -> str:
    """Join case ids, eliding all but the first `limit`."""
    more = len(case_ids) - limit
    shown = ", ".join(case_ids[:limit])
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def report(args: argparse.Namespace, problems: list) -> int:
    """Print the summary, failing cases and problems; return the exit status."""
    results = read_report(args.outdir)
    summary = summarize(results, args.exclude)
    disallowed = [
        c for c in summary.unimplemented if not matches(c, args.allow_unimplemented)
    ]
    label = f"{args.mode} over HTTP/2" if args.http2_bridge else args.mode
    print(summary_line(label, summary))
    for case_id in summary.failed:
        print(case_detail(args.outdir, case_id, results[case_id]))
    if disallowed:
        print(f"  UNIMPLEMENTED, not allowed: {abbreviate(disallowed)}")
    if summary.missing:
        print(f"  missing from the report: {abbreviate(summary.missing)}")
    if args.compare:
        problems = problems + compare(results, read_report(args.compare), args.compare)
    for problem in problems:
        print(f"  {problem}")
    print(f"report: {args.outdir / 'index.html'}")
    (args.outdir / "summary.txt").write_text(summary_line(label, summary) + "\n")
    return 1 if summary.failed or disallowed or summary.missing or problems else 0


def print_log_tails(outdir: Path) -> None:
    """Show the end of every process log, to explain a harness error."""
    for log_path in sorted(outdir.glob("*.log")):
        lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        if not lines:
            continue
        print(f"--- last lines of {log_path}")
        print("\n".join(lines))


def raise_system_exit(signum, _frame) -> None:
    """Turn SIGTERM into SystemExit so started processes are stopped."""
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    """Run one mode end to end; return the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_system_exit)
    shutil.rmtree(args.outdir, ignore_errors=True)
    args.outdir.mkdir(parents=True)
    started = time.monotonic()
    try:
        run = run_server_mode if args.mode == "server" else run_client_mode
        status = report(args, run(args))
    except HarnessError as err:
        print_log_tails(args.outdir)
        print(f"autobahn {args.mode}: harness error: {err}")
        return 2
    print(f"autobahn {args.mode}: finished in {time.monotonic() - started:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
