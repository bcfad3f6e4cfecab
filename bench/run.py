#!/usr/bin/env python3
"""Echo load benchmark driver for wsline and peer WebSocket servers.

Builds the bench crate in release mode, then for every server x scenario:
starts a fresh server pinned to one core (`taskset -c 0`), runs `loadgen`
(or `loadgen-h2` for the HTTP/2 scenarios, only against servers that speak
HTTP/2) pinned to another core (`taskset -c 1`, with `--server-pid`), collects
its JSON line, stops the server (by its PID only) and finally prints a
Markdown table with throughput, latency and server CPU per message, plus
ratios against the baseline server (fastwebsockets), and a second table
comparing each server's HTTP/2 cells with its matching HTTP/1.1 cells.

Fan-out scenarios (`fanout-*`) run `loadgen-fanout` (1 publisher, N
subscribers in one room) against the fan-out servers (FANOUT_SERVERS) and
print a "Fan-out" table with ratios against the best peer of each scenario.
Echo servers skip fan-out scenarios and fan-out servers skip echo scenarios.

Usage (from anywhere):
    python3 bench/run.py                       # all servers, all scenarios, 10 s windows
    python3 bench/run.py --quick               # 2 s windows, shorter warm-up
    python3 bench/run.py --servers fastwebsockets,wsline-sync --scenarios 100x20B-text
    python3 bench/run.py --servers wsline-tokio,sockudo-ws --scenarios 100x20B-text,h2-100x20B-text-1conn
    python3 bench/run.py --json results.json   # also keep the raw loadgen output
    python3 bench/run.py --scenarios fanout-1000x20B,fanout-10000x20B --servers sockudo-ws-pubsub,node-ws

Only the Python 3 standard library is used.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

# Directory of this script (bench/); commands below are relative to it.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# name -> server command; "{port}" is replaced by the chosen port. Servers
# whose executable does not exist are skipped with a note.
SERVERS = {
    "fastwebsockets": "target/release/echo-fastwebsockets --port {port}",
    "tokio-tungstenite": "target/release/echo-tokio-tungstenite --port {port}",
    "tungstenite": "target/release/echo-tungstenite --port {port}",
    "tokio-websockets": "target/release/echo-tokio-websockets --port {port}",
    "sockudo-ws": "target/release/echo-sockudo-ws --port {port}",
    "wsline-sync": "../target/release/wsline serve --host 127.0.0.1 --port {port}"
    " --no-compression --max-message-size 16777216",
    "wsline-tokio": "../target/release/wsline serve --host 127.0.0.1 --port {port}"
    " --no-compression --max-message-size 16777216 --tokio",
    # Fan-out (room) servers: the path names the room, every message goes to
    # every other client in it (bench/README.md, "Fan-out").
    "sockudo-ws-pubsub": "target/release/fanout-sockudo-ws --port {port}",
    "node-ws": "node peers/fanout_ws.mjs --port {port}",
    "python-websockets": "{python} peers/fanout_websockets.py --port {port}",
    "wsline-sync-rooms": "../target/release/wsline serve --host 127.0.0.1 --port {port}"
    " --rooms --no-compression --max-message-size 16777216",
    "wsline-tokio-rooms": "../target/release/wsline serve --host 127.0.0.1 --port {port}"
    " --rooms --no-compression --max-message-size 16777216 --tokio",
}

# Servers that speak the fan-out room protocol; only they run fanout-*
# scenarios, and they run nothing else.
FANOUT_SERVERS = {"sockudo-ws-pubsub", "node-ws", "python-websockets", "wsline-sync-rooms", "wsline-tokio-rooms"}

# Fan-out ratios are against the best of these in each scenario (msgs/s).
FANOUT_PEERS = ["sockudo-ws-pubsub", "node-ws", "python-websockets"]

# Python with `websockets` for the python-websockets server: the repository's
# test venv (scripts/test.sh creates it from scripts/requirements.txt) unless
# --python says otherwise.
DEFAULT_PYTHON = os.path.join(BENCH_DIR, "..", "target", "venv", "bin", "python")

# Servers that also serve WebSockets over HTTP/2 (RFC 8441, h2c with prior
# knowledge) on the same port; the HTTP/2 scenarios run only against these.
HTTP2_SERVERS = {"wsline-tokio", "sockudo-ws"}

# Ratios in the table are relative to this server.
BASELINE = "fastwebsockets"

# name -> (label, loadgen arguments)
SCENARIOS = {
    "100x20B-text": (
        "100 conns × 20 B text (in-flight 1)",
        dict(connections=100, size=20, type="text", in_flight=1),
    ),
    "10x16KiB-binary": (
        "10 conns × 16 KiB binary (in-flight 4)",
        dict(connections=10, size=16384, type="binary", in_flight=4),
    ),
    "1x1MiB-binary": (
        "1 conn × 1 MiB binary (in-flight 1)",
        dict(connections=1, size=1 << 20, type="binary", in_flight=1),
    ),
    "1000x20B-text": (
        "1000 conns × 20 B text (in-flight 1)",
        dict(connections=1000, size=20, type="text", in_flight=1),
    ),
    # HTTP/2 (loadgen-h2): `streams` WebSockets per connection; `http1` names
    # the HTTP/1.1 scenario with the same WebSockets, sizes and in-flight.
    "h2-100x20B-text-1conn": (
        "HTTP/2: 1 conn × 100 streams × 20 B text (in-flight 1)",
        dict(connections=1, streams=100, size=20, type="text", in_flight=1, http1="100x20B-text"),
    ),
    "h2-100x20B-text-100conn": (
        "HTTP/2: 100 conns × 1 stream × 20 B text (in-flight 1)",
        dict(connections=100, streams=1, size=20, type="text", in_flight=1, http1="100x20B-text"),
    ),
    "h2-10x16KiB-binary-1conn": (
        "HTTP/2: 1 conn × 10 streams × 16 KiB binary (in-flight 4)",
        dict(connections=1, streams=10, size=16384, type="binary", in_flight=4, http1="10x16KiB-binary"),
    ),
    "h2-10x16KiB-binary-10conn": (
        "HTTP/2: 10 conns × 1 stream × 16 KiB binary (in-flight 4)",
        dict(connections=10, streams=1, size=16384, type="binary", in_flight=4, http1="10x16KiB-binary"),
    ),
    # Fan-out (loadgen-fanout): 1 publisher + `subscribers` in room /bench, text
    # messages, at most `window` messages in flight (a message leaves the window
    # once every subscriber has it). `connections` counts all sockets (for
    # RLIMIT_NOFILE). The windows are the sweep's choice in bench/README.md.
    "fanout-1000x20B": (
        "fan-out: 1 → 1,000 subscribers × 20 B text (window 64)",
        dict(fanout=True, subscribers=1000, connections=1001, size=20, type="text", window=64),
    ),
    "fanout-1000x1KiB": (
        "fan-out: 1 → 1,000 subscribers × 1 KiB text (window 64)",
        dict(fanout=True, subscribers=1000, connections=1001, size=1024, type="text", window=64),
    ),
    "fanout-10000x20B": (
        "fan-out: 1 → 10,000 subscribers × 20 B text (window 64)",
        dict(fanout=True, subscribers=10000, connections=10001, size=20, type="text", window=64),
    ),
    "fanout-10000x1KiB": (
        "fan-out: 1 → 10,000 subscribers × 1 KiB text (window 32)",
        dict(fanout=True, subscribers=10000, connections=10001, size=1024, type="text", window=32),
    ),
}

LOADGEN = "target/release/loadgen"
LOADGEN_H2 = "target/release/loadgen-h2"
LOADGEN_FANOUT = "target/release/loadgen-fanout"
PEERS_DIR = os.path.join(BENCH_DIR, "peers")
SERVER_CORE = "0"
LOADGEN_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    """Progress output goes to stderr so stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


def machine_info():
    """nproc, CPU model and kernel, for the report header."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def raise_nofile(need):
    """Raise the soft RLIMIT_NOFILE (inherited by server and loadgen)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def free_port():
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, port, timeout=10.0):
    """Wait until the server accepts TCP connections; False if it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc):
    """Stop a server we started: SIGTERM to its PID, SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cpu_busy_ticks():
    """Busy clock ticks of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return sum(fields[:3]) + sum(fields[5:8])


def proc_ticks(pid):
    """utime+stime of a process in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


def background_load(seconds=1.0):
    """CPU cores' worth of busy time over `seconds` (nothing of ours runs then)."""
    t0, b0 = time.monotonic(), cpu_busy_ticks()
    time.sleep(seconds)
    return (cpu_busy_ticks() - b0) / CLK_TCK / (time.monotonic() - t0)


def wait_quiet(limit, max_wait):
    """Wait up to max_wait s for the machine's background load to drop below limit cores."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load > limit and time.monotonic() < deadline:
        log(f"  waiting: background load {load:.2f} cores > {limit}")
        time.sleep(4)
        load = background_load()
    return load


def pin(core, argv, pinning):
    """Prefix argv with taskset when pinning (taskset execs, so the Popen PID is the program's)."""
    return ["taskset", "-c", core] + argv if pinning else argv


def applies(server, scen_name):
    """Whether a server runs a scenario: fan-out servers run only the fan-out
    scenarios, HTTP/2 scenarios need an HTTP/2 server; returns (bool, why not)."""
    scen = SCENARIOS[scen_name][1]
    if scen.get("fanout"):
        return (server in FANOUT_SERVERS, "not a fan-out server")
    if server in FANOUT_SERVERS:
        return (False, "fan-out server, not an echo server")
    if "streams" in scen and server not in HTTP2_SERVERS:
        return (False, "no HTTP/2")
    return (True, "")


def npm_install_peers():
    """`npm install` in bench/peers when `ws` is missing (no lock file: it
    would name the registry). Returns an error note or None."""
    if os.path.exists(os.path.join(PEERS_DIR, "node_modules", "ws", "package.json")):
        return None
    if shutil.which("npm") is None:
        return "npm not found (install Node.js 20+ with npm)"
    log("installing bench/peers node modules (npm install)…")
    r = subprocess.run(
        ["npm", "install", "--no-package-lock", "--no-audit", "--no-fund", "--silent"],
        cwd=PEERS_DIR, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if r.returncode != 0:
        return "npm install in bench/peers failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return None


def unavailable(server, cmd, args):
    """Why a server cannot run here (a note for the table), or None."""
    argv = shlex.split(cmd.format(port=0, python=args.python))
    prog = argv[0]
    if server == "node-ws":
        if shutil.which(prog) is None:
            return "skipped: node not found (install Node.js 20+)"
        why = npm_install_peers()
        return f"skipped: {why}" if why else None
    if server == "python-websockets":
        try:
            r = subprocess.run([prog, "-c", "import websockets"], capture_output=True, timeout=30)
        except OSError:
            r = None
        if r is None or r.returncode != 0:
            return (f"skipped: {prog} cannot import websockets (make target/venv: "
                    "python3 -m venv target/venv && target/venv/bin/pip install -r "
                    "scripts/requirements.txt, or pass --python)")
        return None
    exe = os.path.normpath(os.path.join(BENCH_DIR, prog))
    if not os.access(exe, os.X_OK):
        return f"skipped: {os.path.relpath(exe, BENCH_DIR)} not built"
    if "--rooms" in argv:
        # `wsline serve --rooms` is newer than the binary may be.
        try:
            r = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=10)
            helptext = r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired):
            helptext = ""
        if "--rooms" not in helptext:
            return f"skipped: {os.path.relpath(exe, BENCH_DIR)} serve has no --rooms yet"
    return None


def loadgen_argv(scen, port, pid, args):
    """The load generator's command line for a scenario."""
    common = ["--warmup", str(args.warmup), "--duration", str(args.duration), "--server-pid", str(pid)]
    if scen.get("fanout"):
        window = args.fanout_window or scen["window"]
        return [
            os.path.join(BENCH_DIR, LOADGEN_FANOUT),
            "--port", str(port), "--room", "bench",
            "--subscribers", str(scen["subscribers"]),
            "--size", str(scen["size"]),
            "--" + scen["type"],
            "--window", str(window),
        ] + common
    http2 = "streams" in scen
    return [
        os.path.join(BENCH_DIR, LOADGEN_H2 if http2 else LOADGEN),
        "--url", f"ws://127.0.0.1:{port}/",
        "--connections", str(scen["connections"]),
    ] + (["--streams-per-connection", str(scen["streams"])] if http2 else []) + [
        "--size", str(scen["size"]),
        "--" + scen["type"],
        "--in-flight", str(scen["in_flight"]),
    ] + common


def run_one(server, cmd, scen_name, scen, args, pinning, log_dir):
    """Run one server x scenario; returns a result dict (with "error" on failure)."""
    port = free_port()
    argv = shlex.split(cmd.format(port=port, python=args.python))
    log_path = os.path.join(log_dir, f"{server}-{scen_name}.log")
    with open(log_path, "wb") as server_log:
        proc = subprocess.Popen(
            pin(SERVER_CORE, argv, pinning),
            cwd=BENCH_DIR,
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            if not wait_listening(proc, port):
                rc = proc.poll()
                return {"error": f"server did not start listening (exit code {rc}); see {log_path}"}
            lg = loadgen_argv(scen, port, proc.pid, args)
            # Fan-out adds connecting 10,000 sockets, the settle and the drain.
            timeout = args.warmup + args.duration + (300 if scen.get("fanout") else 60)
            t0, busy0, srv0 = time.monotonic(), cpu_busy_ticks(), proc_ticks(proc.pid)
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                out = subprocess.run(
                    pin(LOADGEN_CORE, lg, pinning),
                    cwd=BENCH_DIR,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                return {"error": f"loadgen exceeded {timeout:.0f} s"}
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ours = (proc_ticks(proc.pid) - srv0) / CLK_TCK + (
                kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
            )
            elapsed = time.monotonic() - t0
            # Busy CPU time on the machine that was neither the server nor loadgen
            # (e.g. someone else compiling), in cores, over warm-up + window.
            bg = max(0.0, (cpu_busy_ticks() - busy0) / CLK_TCK - ours) / elapsed
            if out.returncode != 0:
                msg = (out.stderr.strip() or out.stdout.strip()).splitlines()
                return {"error": (msg[-1] if msg else f"loadgen exit {out.returncode}")}
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if not lines:
                return {"error": "loadgen printed no JSON"}
            res = json.loads(lines[-1])
            res["background_cores"] = round(bg, 3)
            if proc.poll() is not None:
                res["note"] = f"server exited during the run (code {proc.returncode})"
            return res
        finally:
            stop(proc)


def fmt_num(v, digits=0):
    """Thousands-separated number, or an em dash for missing values."""
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def fmt_ratio(v, base):
    """v / base as '0.87×', or an em dash."""
    if v is None or not base:
        return "—"
    return f"{v / base:.2f}×"


def table(results, servers, scenarios):
    """Markdown table of results, grouped by scenario."""
    rows = [
        "| Scenario | Server | msgs/s | p50 µs | p99 µs | server CPU µs/msg "
        f"| CPU/msg vs {BASELINE} | msgs/s vs {BASELINE} | server CPU | loadgen CPU | other load |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scen in scenarios:
        if SCENARIOS[scen][1].get("fanout"):
            continue  # in the fan-out table
        label = SCENARIOS[scen][0]
        base = results.get((BASELINE, scen)) or {}
        for server in servers:
            r = results.get((server, scen))
            if r is None:
                continue
            if "error" in r or "skipped" in r:
                why = r.get("error") or r.get("skipped")
                rows.append(f"| {label} | {server} | {why} | | | | | | | | |")
                continue
            lat = r["latency_us"]
            cpu = r.get("server_cpu_us_per_msg")
            util = r.get("server_cpu_util")
            rows.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    label,
                    server,
                    fmt_num(r["msgs_per_sec"]),
                    fmt_num(lat["p50"], 1),
                    fmt_num(lat["p99"], 1),
                    fmt_num(cpu, 2),
                    fmt_ratio(cpu, base.get("server_cpu_us_per_msg") if "error" not in base else None),
                    fmt_ratio(r["msgs_per_sec"], base.get("msgs_per_sec") if "error" not in base else None),
                    "—" if util is None else f"{util * 100:.0f}%",
                    f"{r['client_cpu_util'] * 100:.0f}%",
                    f"{r.get('background_cores', 0) * 100:.0f}%",
                )
            )
    return "\n".join(rows)


def http2_table(results, servers, scenarios):
    """Markdown table: each server's HTTP/2 cells against its HTTP/1.1 cell of
    the matching scenario (same run), and against sockudo-ws over HTTP/2; empty
    if no HTTP/2 cell has its HTTP/1.1 counterpart."""
    rows = [
        "| HTTP/2 scenario | Server | HTTP/1.1 CPU µs/msg | HTTP/2 CPU µs/msg "
        "| CPU/msg h2 vs HTTP/1.1 | CPU/msg h2 vs sockudo-ws h2 | HTTP/1.1 msgs/s | HTTP/2 msgs/s "
        "| msgs/s h2 vs HTTP/1.1 | HTTP/2 p99 µs | other load (h1 / h2) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def ok(r):
        return r is not None and "msgs_per_sec" in r

    for scen in scenarios:
        h1 = SCENARIOS[scen][1].get("http1")
        if h1 is None:
            continue
        peer = results.get(("sockudo-ws", scen))
        for server in servers:
            r2, r1 = results.get((server, scen)), results.get((server, h1))
            if not (ok(r2) and ok(r1)):
                continue
            cpu1, cpu2 = r1.get("server_cpu_us_per_msg"), r2.get("server_cpu_us_per_msg")
            rows.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0f}% / {:.0f}% |".format(
                    SCENARIOS[scen][0],
                    server,
                    fmt_num(cpu1, 2),
                    fmt_num(cpu2, 2),
                    fmt_ratio(cpu2, cpu1),
                    fmt_ratio(cpu2, peer.get("server_cpu_us_per_msg") if ok(peer) else None),
                    fmt_num(r1["msgs_per_sec"]),
                    fmt_num(r2["msgs_per_sec"]),
                    fmt_ratio(r2["msgs_per_sec"], r1["msgs_per_sec"]),
                    fmt_num(r2["latency_us"]["p99"], 1),
                    r1.get("background_cores", 0) * 100,
                    r2.get("background_cores", 0) * 100,
                )
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def delivery_note(r):
    """'ok', or the lost/duplicate/out-of-order counts of a fan-out cell, flagged."""
    if r.get("delivery_ok"):
        return "ok"
    return "⚠ lost {} / dup {} / reordered {}".format(
        r.get("lost", "?"), r.get("duplicates", "?"), r.get("out_of_order", "?")
    )


def fanout_table(results, servers, scenarios):
    """Markdown table of the fan-out scenarios: delivered msgs/s, latency and
    server CPU per delivered message, each with its ratio against the best
    peer (FANOUT_PEERS, highest delivered msgs/s with clean delivery) of the
    same scenario; empty if no fan-out scenario ran."""
    rows = [
        "| Scenario | Server | delivered msgs/s | msgs/s vs best peer | publishes/s | p50 ms | p99 ms "
        "| server CPU µs/delivered msg | CPU/msg vs best peer | delivery | server CPU | loadgen CPU | other load |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]

    def ok(r):
        return r is not None and "msgs_per_sec" in r

    for scen in scenarios:
        if not SCENARIOS[scen][1].get("fanout"):
            continue
        label = SCENARIOS[scen][0]
        peers = [results.get((p, scen)) for p in FANOUT_PEERS]
        peers = [r for r in peers if ok(r) and r.get("delivery_ok")]
        best = max(peers, key=lambda r: r["msgs_per_sec"]) if peers else None
        best_rate = best["msgs_per_sec"] if best else None
        best_cpu = best.get("server_cpu_us_per_msg") if best else None
        for server in servers:
            r = results.get((server, scen))
            if r is None:
                continue
            if not ok(r):
                why = r.get("error") or r.get("skipped")
                rows.append(f"| {label} | {server} | {why} | | | | | | | | | | |")
                continue
            lat = r["latency_us"]
            cpu = r.get("server_cpu_us_per_msg")
            util = r.get("server_cpu_util")
            rows.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    label + ("" if r.get("window") == SCENARIOS[scen][1]["window"] else f" [window {r.get('window')}]"),
                    server + (" (best peer)" if r is best else ""),
                    fmt_num(r["msgs_per_sec"]),
                    fmt_ratio(r["msgs_per_sec"], best_rate),
                    fmt_num(r.get("publishes_per_sec")),
                    fmt_num(lat["p50"] / 1000, 1),
                    fmt_num(lat["p99"] / 1000, 1),
                    fmt_num(cpu, 3),
                    fmt_ratio(cpu, best_cpu),
                    delivery_note(r),
                    "—" if util is None else f"{util * 100:.0f}%",
                    f"{r['client_cpu_util'] * 100:.0f}%",
                    f"{r.get('background_cores', 0) * 100:.0f}%",
                )
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def print_tables(results, servers, scenarios):
    """The main (echo) table, the HTTP/2 vs HTTP/1.1 table if there is one,
    then the fan-out table if there is one."""
    echo = [c for c in scenarios if not SCENARIOS[c][1].get("fanout")]
    if echo:
        print(table(results, servers, echo))
    h2 = http2_table(results, servers, echo)
    if h2:
        print("\nHTTP/2 vs HTTP/1.1 (same server, same run):\n")
        print(h2)
    fan = fanout_table(results, servers, scenarios)
    if fan:
        print(("\n" if echo else "") + "Fan-out (1 publisher, N subscribers, one room; ratios against the best peer):\n")
        print(fan)


def pick(names, table_, what):
    """Validate a comma-separated selection against a table's keys."""
    if not names:
        return list(table_)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in chosen if n not in table_]
    if bad:
        sys.exit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(table_)})")
    return chosen


def _interrupt(signum, _frame):
    """Turn SIGTERM/SIGHUP (e.g. from `timeout`) into an exception so the
    `finally` in run_one stops the server instead of orphaning it."""
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", help="comma-separated subset of: " + ", ".join(SERVERS))
    ap.add_argument("--scenarios", help="comma-separated subset of: " + ", ".join(SCENARIOS))
    ap.add_argument("--duration", type=float, help="measured window in seconds (default 10, --quick 2)")
    ap.add_argument("--warmup", type=float, help="warm-up in seconds (default 2, --quick 0.5)")
    ap.add_argument("--quick", action="store_true", help="short windows for a smoke run")
    ap.add_argument("--no-build", action="store_true", help="skip `cargo build --release`")
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument(
        "--quiet-limit", type=float, default=0.15,
        help="before each run, wait until other processes use less than this many cores (default 0.15)",
    )
    ap.add_argument("--quiet-wait", type=float, default=30, help="max seconds to wait for that (default 30)")
    ap.add_argument(
        "--retries", type=int, default=1,
        help="re-run a cell whose 'other load' exceeded --quiet-limit up to this many times, keeping the quietest (default 1)",
    )
    ap.add_argument(
        "--python", default=DEFAULT_PYTHON if os.access(DEFAULT_PYTHON, os.X_OK) else sys.executable,
        help="Python with `websockets` for python-websockets (default: target/venv/bin/python if it exists, else this Python)",
    )
    ap.add_argument(
        "--fanout-window", type=int, metavar="K",
        help="override every fan-out scenario's window (messages in flight; for sweeps)",
    )
    ap.add_argument("--json", metavar="PATH", help="write raw results (and machine info) as JSON")
    ap.add_argument("--report", metavar="PATH", help="only print the table for JSON file(s) written by --json (comma-separated: merged, quietest cell wins)")
    args = ap.parse_args()
    if args.report:
        res = {}
        for path in args.report.split(","):
            with open(path) as f:
                saved = json.load(f)
            for r in saved["results"]:
                key, old = (r["server"], r["scenario"]), res.get((r["server"], r["scenario"]))
                # Merge several runs: keep the cell least disturbed by other load.
                if old is None or "msgs_per_sec" not in old or (
                    "msgs_per_sec" in r and r["background_cores"] < old["background_cores"]
                ):
                    res[key] = r
        srv = [s for s in SERVERS if any(k[0] == s for k in res)]
        scn = [c for c in SCENARIOS if any(k[1] == c for k in res)]
        print_tables(res, srv, scn)
        return 0
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0

    servers = pick(args.servers, SERVERS, "server")
    scenarios = pick(args.scenarios, SCENARIOS, "scenario")

    info = machine_info()
    pinning = not args.no_pin
    if pinning and (shutil.which("taskset") is None or (info["nproc"] or 1) < 2):
        log("note: taskset missing or fewer than 2 CPUs; running unpinned")
        pinning = False

    max_conns = max(SCENARIOS[s][1]["connections"] for s in scenarios)
    nofile = raise_nofile(max(4096, 4 * max_conns + 256))
    # The limit is per process: the server and the load generator each hold
    # max_conns sockets (and inherit this limit).
    if nofile < max_conns + 64:
        log(f"warning: RLIMIT_NOFILE is {nofile}; {max_conns} connections may fail")

    if not args.no_build:
        log("building bench (release)…")
        subprocess.run(
            ["cargo", "build", "--release", "--manifest-path", os.path.join(BENCH_DIR, "Cargo.toml"), "--bins"],
            check=True,
        )

    log_dir = os.path.join(BENCH_DIR, "target", "bench-logs")
    os.makedirs(log_dir, exist_ok=True)
    log(f"machine: {info['nproc']} CPUs, {info['cpu_model']}, kernel {info['kernel']}, loadavg {' '.join(info['loadavg'])}")
    log(
        (f"window {args.duration} s after {args.warmup} s warm-up; "
         + (f"server on CPU {SERVER_CORE}, loadgen on CPU {LOADGEN_CORE}" if pinning else "unpinned")
        )
    )

    results = {}

    def save():
        """Write the raw results so far (called after every cell)."""
        if not args.json:
            return
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                    "pinned": pinning,
                    "results": [{"server": s, "scenario": c, **r} for (s, c), r in results.items()],
                },
                f,
                indent=1,
            )

    for server in servers:
        cmd = SERVERS[server]
        mine = [c for c in scenarios if applies(server, c)[0]]
        others = [c for c in scenarios if c not in mine]
        for scen in others:
            if applies(server, scen)[1] == "no HTTP/2":
                log(f"{server:18} {scen:16} skipped: no HTTP/2")
        if any(applies(server, c)[1] != "no HTTP/2" for c in others):
            log(f"{server:18} skips the {'echo' if server in FANOUT_SERVERS else 'fan-out'} scenarios")
        if not mine:
            continue
        why = unavailable(server, cmd, args)
        if why:
            log(f"{server:18} {why}")
            for scen in mine:
                results[(server, scen)] = {"skipped": why}
            continue
        for scen in mine:
            r = None
            for attempt in range(1 + args.retries):
                log(f"{server:18} {scen:16} …" + (f" (retry {attempt}: other load was high)" if attempt else ""))
                load = wait_quiet(args.quiet_limit, args.quiet_wait)
                if load > args.quiet_limit:
                    log(f"  warning: machine still busy ({load:.2f} cores), measuring anyway")
                new = run_one(server, cmd, scen, SCENARIOS[scen][1], args, pinning, log_dir)
                # Keep the attempt least disturbed by other processes.
                if r is None or "error" in r or (
                    "error" not in new and new["background_cores"] < r["background_cores"]
                ):
                    r = new
                if "error" in r or r["background_cores"] <= args.quiet_limit:
                    break
            results[(server, scen)] = r
            save()
            if "error" in r:
                log(f"  error: {r['error']}")
            else:
                log(
                    "  {:,.0f} msgs/s  p50 {:.1f} µs  p99 {:.1f} µs  server {} µs/msg".format(
                        r["msgs_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"],
                        fmt_num(r.get("server_cpu_us_per_msg"), 2),
                    ) + ("" if r.get("delivery_ok", True) else "  " + delivery_note(r))
                )

    print_tables(results, servers, scenarios)
    save()
    failed = any("error" in r for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
