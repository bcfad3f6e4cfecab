#!/usr/bin/env bash
# The project's one test command, and what CI runs (.ci/run):
#   1. every unit, integration, interop and doc test (cargo test --workspace);
#   2. the Autobahn TestSuite (via kosoku) against the sync server and client (all 517
#      cases) and the tokio server and client (all but 12.*, the compression cases that
#      only vary message sizes through the same core code; 13.* still runs);
#   3. a short fuzzing run of every fuzz target (FUZZ_SECONDS each, default 10; 0 skips).
# It installs what it needs itself: a Python venv in target/venv (kosoku, websockets) and
# cargo-fuzz. Exit status 1 if anything failed; every step runs so one run reports all.
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
