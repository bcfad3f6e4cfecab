#!/usr/bin/env bash
# The project's one test command, and what CI runs (.ci/run):
#   1. the gates: cargo fmt --check, cargo clippy -D warnings on every target and feature,
#      and the library's rustdoc (cargo doc -p wsline) with warnings denied;
#   2. every unit, integration, interop and doc test (cargo test --workspace), with
#      WSLINE_REQUIRE_INTEROP=1 so that an interop test whose peer is missing fails instead
#      of passing with a skip note;
#   3. the Autobahn TestSuite (via kosoku) against the sync server and client (all 517
#      cases) and the tokio server and client (all but 12.*, the compression cases that
#      only vary message sizes through the same core code; 13.* still runs), those over
#      HTTP/1.1 and again over HTTP/2 (RFC 8441) through a Node bridge;
#   4. a short fuzzing run of every fuzz target (FUZZ_SECONDS each, default 10; 0 skips).
# It installs the peers itself: a Python venv in target/venv (kosoku, websockets), Node's
# `ws` in scripts/interop/node/node_modules, cargo-fuzz, and for the browser test
# (crates/wsline-cli/tests/browser.rs) Debian's chromium (apt-get, as root) and
# playwright-core in scripts/interop/browser/node_modules, and for the brokers' tests
# (crates/wsline/tests/topics_brokers.rs) Debian's redis-server and nats-server (apt-get).
# An install that fails is reported as a failed step, and the interop tests that need it
# then fail too. Exit status 1 if anything failed; every step runs so one run reports all.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=target/venv
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
# Cases run at once by the Autobahn runs; the suite's peer is one Python process.
AUTOBAHN_JOBS="${AUTOBAHN_JOBS:-3}"
# Interop tests fail rather than skip when their peer is missing (tests/support/process.rs).
export WSLINE_REQUIRE_INTEROP=1

status=0
step() {
    echo "== $*"
    "$@" || { echo "== FAILED: $*"; status=1; }
}

# The venv with the Autobahn driver and Python `websockets`, at scripts/requirements.txt's
# pins; (re)created unless it exists and its interpreter still runs.
install_python_peers() {
    if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null || [ ! -x "$VENV/bin/pip" ]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV" || return 1
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r scripts/requirements.txt
}

# Debian's Chromium for the browser test, installed with apt-get when missing; needs root.
install_chromium() {
    [ -x /usr/bin/chromium ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "/usr/bin/chromium is missing and installing it needs root (apt-get install chromium)"
        return 1
    fi
    mkdir -p target
    if ! { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >target/apt-chromium.log 2>&1; then
        echo "apt-get could not install chromium; the end of target/apt-chromium.log:"
        tail -n 20 target/apt-chromium.log
        return 1
    fi
    echo "installed $(/usr/bin/chromium --version 2>/dev/null)"
}

# Debian's redis-server and nats-server for the brokers' tests
# (crates/wsline/tests/topics_brokers.rs), installed with apt-get when missing; needs root.
install_brokers() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v nats-server >/dev/null || missing+=(nats-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "${missing[*]} missing and installing needs root (apt-get install ${missing[*]})"
        return 1
    fi
    mkdir -p target
    if ! { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >target/apt-brokers.log 2>&1; then
        echo "apt-get could not install ${missing[*]}; the end of target/apt-brokers.log:"
        tail -n 20 target/apt-brokers.log
        return 1
    fi
    echo "installed $(redis-server --version | cut -d' ' -f1-3), $(nats-server --version)"
}

# playwright-core for the browser test (pinned in package.json; no lockfile, and Playwright
# downloads no browser: it drives Debian's Chromium).
install_playwright() {
    (cd scripts/interop/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
        npm install --no-package-lock --no-audit --no-fund --silent)
}

# Node's `ws` for the Node interop tests (crates/wsline/tests/interop_node.rs), at the exact
# version scripts/interop/node/package.json pins; nothing to do when that version is
# installed. No lock file: it would name the registry.
install_node_ws() {
    local peers=scripts/interop/node pinned_ws installed_ws
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "no node and npm: install Node.js (20 or later) with npm"
        return 1
    fi
    pinned_ws=$(node -p "require('./$peers/package.json').dependencies.ws")
    installed_ws=$(node -p "require('./$peers/node_modules/ws/package.json').version" \
        2>/dev/null || true)
    [ "$installed_ws" = "$pinned_ws" ] && return 0
    npm install --silent --no-audit --no-fund --no-package-lock --prefix "$peers"
}

step install_python_peers
step install_chromium
step install_brokers
step install_playwright
step install_node_ws

step cargo fmt --all --check
step cargo clippy --workspace --all-targets --all-features -- -D warnings
step env RUSTDOCFLAGS=-Dwarnings cargo doc -p wsline --all-features --no-deps
step cargo test --workspace --all-features

cargo build --release -p wsline-cli
cargo build --release -p wsline --all-features \
    --example autobahn_client --example tokio_autobahn_client

autobahn() {
    "$VENV/bin/python" scripts/autobahn.py --jobs "$AUTOBAHN_JOBS" "$@"
}
server_cmd="target/release/wsline serve --host 127.0.0.1 --port {port}"
server_cmd+=" --max-message-size 16777216 --ping-interval 0"
step autobahn --mode server --outdir target/autobahn/server \
    --server-cmd "$server_cmd"
step autobahn --mode client --outdir target/autobahn/client \
    --client-cmd "target/release/examples/autobahn_client ws://127.0.0.1:{port}"
step autobahn --mode server --outdir target/autobahn/tokio-server --exclude '12.*' \
    --server-cmd "$server_cmd --tokio"
step autobahn --mode client --outdir target/autobahn/tokio-client --exclude '12.*' \
    --client-cmd "target/release/examples/tokio_autobahn_client ws://127.0.0.1:{port}"
# The same corpus over HTTP/2 (RFC 8441), through scripts/interop/node/h2_bridge.mjs: every
# case OK over HTTP/1.1 above must be OK over HTTP/2.
step autobahn --mode server --http2-bridge --outdir target/autobahn/tokio-server-h2 \
    --exclude '12.*' --compare target/autobahn/tokio-server --server-cmd "$server_cmd --tokio"
step autobahn --mode client --http2-bridge --outdir target/autobahn/tokio-client-h2 \
    --exclude '12.*' --compare target/autobahn/tokio-client \
    --client-cmd "target/release/examples/tokio_autobahn_client ws://127.0.0.1:{port} --http2"

if [ "$FUZZ_SECONDS" -gt 0 ]; then
    if ! command -v cargo-fuzz >/dev/null; then
        cargo install --locked cargo-fuzz
    fi
    step scripts/fuzz_smoke.sh "$FUZZ_SECONDS"
fi

echo "== Autobahn summaries"
cat target/autobahn/{server,client,tokio-server,tokio-client,tokio-server-h2,tokio-client-h2}/summary.txt \
    2>/dev/null || true
exit "$status"
