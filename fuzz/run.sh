#!/usr/bin/env bash
# Runs ringway's fuzz targets one after another with cargo-fuzz (libFuzzer, nightly).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 600 seconds, all targets)
#
# Each target runs for SECONDS_PER_TARGET (-max_total_time). Its corpus grows in
# fuzz/corpus/TARGET (kept between runs), seeded from fuzz/seeds/TARGET; a crashing
# input is written to fuzz/artifacts/TARGET/, libFuzzer's output to
# fuzz/target/logs/TARGET.log. One summary line per target at the end; the exit
# status is 1 when any target crashed or failed to run.
#
# Environment: SANITIZER (address, default, or none: about twice the executions; the
# library has no unsafe code), FUZZ_ARGS (more libFuzzer flags, e.g. "-max_len=65536").
# Builds are release with debug assertions and overflow checks (-O -a).
set -euo pipefail

FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$FUZZ_DIR")
ALL_TARGETS=(request_parser response_scanner chunked_decoder h2_translation)

SECONDS_PER_TARGET=${1:-600}
[ $# -gt 0 ] && shift
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
    if [[ " ${ALL_TARGETS[*]} " != *" $t "* ]]; then
        echo "unknown target $t (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

BUILD_FLAGS=(-O -a --sanitizer "${SANITIZER:-address}" --fuzz-dir "$FUZZ_DIR")
cd "$ROOT"
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"

mkdir -p "$FUZZ_DIR/target/logs"
summary=()
failed=0
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$t"
    log="$FUZZ_DIR/target/logs/$t.log"
    mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$t"
    echo "== $t: ${SECONDS_PER_TARGET}s, log $log" >&2
    start=$(date +%s)
    status=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" "$FUZZ_DIR/seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    elapsed=$(( $(date +%s) - start ))
    # libFuzzer's final count: the stats line, else "Done N runs in S second(s)".
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    artifacts=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | paste -sd, -)
    if [ "$status" -eq 0 ]; then
        result="crash=no"
    elif [ -n "$artifacts" ]; then
        result="crash=YES exit=$status artifacts=$artifacts"
        failed=1
    else
        result="crash=FAILED exit=$status (no artifact: see the log)"
        failed=1
    fi
    tail -n 3 "$log" >&2
    summary+=("$(printf '%-17s seconds=%-5s execs=%-11s %s' "$t" "$elapsed" "${execs:-?}" "$result")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
