#!/usr/bin/env bash
# A bounded fuzzing run for CI: every fuzz target (or the ones named) for N seconds each
# (default 20), starting from its committed seed corpus in fuzz/seeds/<target>. New corpus
# entries go to fuzz/corpus/<target> (not committed); a crash stops the run and leaves the
# input in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz_smoke.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable through RUSTC_BOOTSTRAP=1.
set -euo pipefail

seconds="${1:-20}"
shift || true
cd "$(dirname "$0")/../fuzz"

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz_smoke: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    echo "fuzz_smoke: $target for ${seconds}s"
    if ! cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz_smoke: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    summary+=("$target: $runs executions in ${seconds}s")
    rm -f "$log"
done
printf 'fuzz_smoke: %s\n' "${summary[@]}"
