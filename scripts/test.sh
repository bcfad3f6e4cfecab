#!/usr/bin/env bash
# The project's one test command, and what CI runs (.ci/run):
#   1. every unit, integration, interop and doc test (cargo test --workspace);
#   2. the Autobahn TestSuite (via kosoku) against the sync server and client (all 517
#      cases) and the tokio server and client (all but 12.*, the compression cases that
#      only vary message sizes through the same core code; 13.* still runs);
#   3. a short fuzzing run of every fuzz target (FUZZ_SECONDS each, default 10; 0 skips).
# It installs what it needs itself: a Python venv in target/venv (kosoku, websockets),
# Node's `ws` in scripts/interop/node/node_modules, cargo-fuzz, and for the browser test
# (crates/wsline-cli/tests/browser.rs) Debian's chromium and playwright-core in
# scripts/interop/browser/node_modules. Exit status 1 if anything failed; every step runs so
# one run reports all.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=target/venv
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
# Cases run at once by the Autobahn runs; the suite's peer is one Python process.
AUTOBAHN_JOBS="${AUTOBAHN_JOBS:-3}"

# (Re)create the venv unless it exists and its interpreter still runs.
if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null || [ ! -x "$VENV/bin/pip" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r scripts/requirements.txt

# The browser test drives Debian's Chromium with playwright-core (pinned in package.json; no
# lockfile, and Playwright downloads no browser). Without either it prints a note and passes.
if [ ! -x /usr/bin/chromium ]; then
    mkdir -p target
    if [ "$(id -u)" -eq 0 ] && { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >target/apt-chromium.log 2>&1; then
        echo "== installed $(/usr/bin/chromium --version 2>/dev/null)"
    else
        echo "note: could not install chromium (needs root and apt; see target/apt-chromium.log):"
        echo "      the browser test will be skipped"
    fi
fi
if ! (cd scripts/interop/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
    npm install --no-package-lock --no-audit --no-fund --silent); then
    echo "note: npm could not install playwright-core: the browser test will be skipped"
fi

# Node's `ws` for the Node interop tests (crates/wsline/tests/interop_node.rs), at the exact
# version scripts/interop/node/package.json pins; skipped when that version is installed.
# No lock file: it would name the registry.
NODE_PEERS=scripts/interop/node
if command -v node >/dev/null && command -v npm >/dev/null; then
    pinned_ws=$(node -p "require('./$NODE_PEERS/package.json').dependencies.ws")
    installed_ws=$(node -p "require('./$NODE_PEERS/node_modules/ws/package.json').version" \
        2>/dev/null || true)
    if [ "$installed_ws" != "$pinned_ws" ] && ! npm install --silent --no-audit --no-fund \
        --no-package-lock --prefix "$NODE_PEERS"; then
        echo "note: npm could not install ws: the Node interop tests will be skipped"
    fi
else
    echo "note: no node and npm: the Node interop tests will be skipped"
fi

status=0
step() {
    echo "== $*"
    "$@" || { echo "== FAILED: $*"; status=1; }
}

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

if [ "$FUZZ_SECONDS" -gt 0 ]; then
    if ! command -v cargo-fuzz >/dev/null; then
        cargo install --locked cargo-fuzz
    fi
    step scripts/fuzz_smoke.sh "$FUZZ_SECONDS"
fi

echo "== Autobahn summaries"
cat target/autobahn/{server,client,tokio-server,tokio-client}/summary.txt 2>/dev/null || true
exit "$status"
