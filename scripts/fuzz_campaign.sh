#!/usr/bin/env bash
# A fuzzing campaign: every fuzz target (or the ones named) for SECONDS each (default 3600,
# the hour per target that fuzz/README.md asks for before a release), JOBS targets at a time,
# growing fuzz/corpus/<target> from it and fuzz/seeds/<target>. Then, unless --no-coverage,
# the source-based line coverage that each target's corpus reaches in
# crates/wsline/src/proto/ and in the whole crate, and the union over all targets
# (`cargo fuzz coverage`, which needs llvm-profdata and llvm-cov of rustc's LLVM version:
# the llvm-tools rustup component, or Debian's llvm-<major> package).
#
# Writes fuzz/campaign/<UTC time>/report.md (and each target's log beside it) and prints
# the report. A crash stops nothing: it is reported, and its input is in
# fuzz/artifacts/<target>/; the script then exits 1.
#
# Usage: scripts/fuzz_campaign.sh [--jobs N] [--no-coverage] [SECONDS] [TARGET...]
set -euo pipefail

jobs=1
coverage=1
while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) jobs="$2"; shift 2 ;;
        --no-coverage) coverage=0; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
seconds="${1:-3600}"
shift || true
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ && "$jobs" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz_campaign: SECONDS and --jobs must be positive integers (got '$seconds', '$jobs')" >&2
    sed -n '2,14p' "$0" >&2
    exit 2
fi
cd "$(dirname "$0")/../fuzz"

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz_campaign: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1

# The LLVM tools that read rustc's coverage format: the same major version as rustc's LLVM.
llvm_bin=""
if [ "$coverage" = 1 ]; then
    major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    sysroot_bin="$(rustc --print target-libdir)/../bin"
    for dir in "$sysroot_bin" "/usr/lib/llvm-$major/bin"; do
        if [ -x "$dir/llvm-profdata" ] && [ -x "$dir/llvm-cov" ]; then
            llvm_bin="$(cd "$dir" && pwd)"
            break
        fi
    done
    if [ -z "$llvm_bin" ]; then
        echo "fuzz_campaign: no llvm-profdata/llvm-cov of LLVM $major (rustup component add" \
            "llvm-tools, or apt-get install llvm-$major); use --no-coverage to skip" >&2
        exit 1
    fi
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
out="campaign/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
# What the fuzzers run: the tree as it is now (coverage is built from the tree at the end).
fuzzed="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- ../crates || echo ' (modified)')"
cargo fuzz build

run_target() {
    local target="$1"
    mkdir -p "corpus/$target"
    local before
    before="$(find "corpus/$target" -type f | wc -l)"
    local status=0
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        >"$out/$target.log" 2>&1 || status=$?
    local after
    after="$(find "corpus/$target" -type f | wc -l)"
    stat() { grep -o "stat::$1: *[0-9]*" "$out/$target.log" | grep -o '[0-9]*$' || echo '?'; }
    local last
    last="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$out/$target.log" | tail -n 1 || true)"
    local outcome="ok"
    [ "$status" = 0 ] || outcome="**CRASH** (exit $status; input in fuzz/artifacts/$target/)"
    printf '| %s | %s | %s | %s | %s | %s → %s | %s MB | %s |\n' \
        "$target" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "$(echo "$last" | awk '{print $2}')" "$(echo "$last" | awk '{print $4}')" \
        "$before" "$after" "$(stat peak_rss_mb)" "$outcome" >"$out/$target.row"
    return "$status"
}

echo "fuzz_campaign: ${#targets[@]} targets × ${seconds}s, $jobs at a time; logs in fuzz/$out"
failed=0
running=0
for target in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
    echo "fuzz_campaign: $target"
    run_target "$target" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done

{
    echo "# Fuzz campaign $(basename "$out")"
    echo
    built=""
    [ "$coverage" = 1 ] && built=" (coverage built at $(git rev-parse --short HEAD))"
    echo "$seconds s per target, $jobs at a time, on $(nproc) CPUs; wsline at $fuzzed$built."
    echo
    echo "| target | executions | exec/s | libFuzzer cov | ft | corpus files | peak RSS | outcome |"
    echo "|---|--:|--:|--:|--:|--:|--:|---|"
    for target in "${targets[@]}"; do cat "$out/$target.row"; done
} >"$out/report.md"

if [ "$coverage" = 1 ]; then
    triple="$(rustc -vV | sed -n 's/^host: //p')"
    objects=()
    profiles=()
    covered=()
    for target in "${targets[@]}"; do
        echo "fuzz_campaign: coverage of $target"
        # A corpus input that crashes fails the coverage run: report it, go on.
        if ! cargo fuzz coverage --llvm-path "$llvm_bin" "$target" "corpus/$target" \
            "seeds/$target" >"$out/$target.coverage.log" 2>&1; then
            echo "fuzz_campaign: coverage of $target failed; see fuzz/$out/$target.coverage.log" >&2
            failed=1
            continue
        fi
        covered+=("$target")
        objects+=("target/$triple/coverage/$triple/release/$target")
        profiles+=("coverage/$target/coverage.profdata")
    done
    if [ ${#profiles[@]} -gt 0 ]; then
        "$llvm_bin/llvm-profdata" merge -sparse "${profiles[@]}" -o "$out/all.profdata"
    fi
    summarize() { # NAME PROFILE OBJECT...
        local name="$1" profile="$2"
        shift 2
        local args=("$1")
        shift
        for object in "$@"; do args+=(-object "$object"); done
        "$llvm_bin/llvm-cov" export -summary-only -instr-profile="$profile" "${args[@]}" |
            python3 -c '
import json, sys
name = sys.argv[1]
files = json.load(sys.stdin)["data"][0]["files"]
def lines(part):
    chosen = [f["summary"]["lines"] for f in files if part in f["filename"]]
    count = sum(s["count"] for s in chosen)
    covered = sum(s["covered"] for s in chosen)
    return f"{covered}/{count} ({100 * covered / max(count, 1):.1f} %)"
proto, crate = lines("/crates/wsline/src/proto/"), lines("/crates/wsline/src/")
print(f"| {name} | {proto} | {crate} |")
' "$name"
    }
    {
        echo
        echo "Line coverage reached by each corpus (\`cargo fuzz coverage\`, LLVM $("$llvm_bin/llvm-cov" --version | sed -n 's/.*LLVM version \([0-9.]*\).*/\1/p')):"
        echo
        echo "| target | crates/wsline/src/proto/ | crates/wsline/src/ |"
        echo "|---|--:|--:|"
        for i in "${!covered[@]}"; do
            summarize "${covered[$i]}" "${profiles[$i]}" "${objects[$i]}"
        done
        if [ ${#profiles[@]} -gt 0 ]; then
            summarize "all targets" "$out/all.profdata" "${objects[@]}"
        fi
    } >>"$out/report.md"
fi

cat "$out/report.md"
exit "$failed"
