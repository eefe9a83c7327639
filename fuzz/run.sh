#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions each (default 10,000,000), then prints per target
# the executions done, the time taken and whether it crashed. Exits 1 if any target crashed
# (or did not finish), 2 if the tools could not be set up.
#
# Usage: fuzz/run.sh [RUNS]
# Environment:
#   TARGETS="packet_decoder ws_frame"  only these targets (default: all)
#   JOBS=N          targets fuzzed at once (default 1)
#   NICE=N          niceness of the build and the runs (default 15: shared machines)
#   SANITIZER=name  cargo-fuzz sanitizer: none (default, ~6x faster) or address
#
# Seeds are generated from nano-core/tests/data/vectors.json into fuzz/corpus/<target>/ (kept
# between runs, never committed); crashes land in fuzz/artifacts/<target>/, logs in fuzz/logs/.
set -uo pipefail

RUNS="${1:-10000000}"
NICE="${NICE:-15}"
JOBS="${JOBS:-1}"
SANITIZER="${SANITIZER:-none}"
ALL="packet_decoder message_decoder handshake_server handshake_client ws_frame ws_source http_upgrade"
TARGETS="${TARGETS:-$ALL}"

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here" || exit 2

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "run.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    nice -n "$NICE" cargo install cargo-fuzz --locked || exit 2
fi
command -v python3 >/dev/null || { echo "run.sh: needs python3 (seeds.py)" >&2; exit 2; }

mkdir -p corpus logs artifacts
python3 seeds.py ../nano-core/tests/data/vectors.json corpus || exit 2

# -O: optimised, -a: debug assertions (overflow checks) on.
FLAGS=(-O -a -s "$SANITIZER")
echo "building the fuzz targets (cargo +nightly fuzz build ${FLAGS[*]})" >&2
nice -n "$NICE" cargo +nightly fuzz build "${FLAGS[@]}" >logs/build.log 2>&1 || {
    tail -30 logs/build.log >&2
    exit 2
}

# Inputs up to 1 KiB (the HTTP head: 2 KiB): enough for every state of the decoders (the
# limits tried include 0, 1, 5, 100 and 1000 bytes), and split runs cost a pass per byte.
max_len() {
    case "$1" in
        http_upgrade) echo 2048 ;;
        *) echo 1024 ;;
    esac
}

run_one() {
    local t="$1" log="logs/$1.log" start end rc
    rm -f "artifacts/$t"/crash-* "artifacts/$t"/leak-* "artifacts/$t"/timeout-* "artifacts/$t"/oom-*
    start=$(date +%s)
    nice -n "$NICE" cargo +nightly fuzz run "${FLAGS[@]}" "$t" "corpus/$t" -- \
        -runs="$RUNS" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -timeout=30 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    echo "$rc $((end - start))" >"logs/$t.result"
}

for t in $TARGETS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
        wait -n
    done
    echo "fuzzing $t: $RUNS runs (log: fuzz/logs/$t.log)" >&2
    run_one "$t" &
done
wait

failed=0
printf '%-18s %14s %8s  %s\n' target executions seconds result
for t in $TARGETS; do
    log="logs/$t.log"
    read -r rc secs <"logs/$t.result" 2>/dev/null || { rc=255; secs=0; }
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" 2>/dev/null |
        grep -o '[0-9]*$' | tail -1)
    artifact=$(ls "artifacts/$t"/crash-* "artifacts/$t"/leak-* "artifacts/$t"/timeout-* \
        "artifacts/$t"/oom-* 2>/dev/null | head -1)
    if [ "$rc" = 0 ] && [ -z "$artifact" ] && grep -q "^Done $RUNS runs" "$log"; then
        result=ok
    else
        result="CRASH (exit $rc) ${artifact:-see $log}"
        failed=1
    fi
    printf '%-18s %14s %8s  %s\n' "$t" "${execs:-?}" "$secs" "$result"
done
exit "$failed"
