#!/usr/bin/env bash
# Runs every fuzz target (`cargo fuzz list`, or FUZZ_TARGETS) for
# FUZZ_SECONDS (default 60) each, on the committed seeds plus what earlier
# runs found, and prints a table of executions, exec/s and corpus size;
# exits non-zero if a target found a crash (its input is saved under
# fuzz/artifacts/<target>/). `make fuzz` runs it for long, `make test`
# briefly (20 s a target).
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this project
# builds with the stable toolchain, so RUSTC_BOOTSTRAP=1 lets stable rustc
# accept them. Seeds live in fuzz/seeds/<target> (committed); what the
# fuzzer learns goes to fuzz/corpus/<target> (not committed).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# Every target of fuzz/Cargo.toml unless told otherwise: a new target is
# fuzzed without editing this script.
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
if [ -z "$targets" ]; then
    echo "fuzz: no fuzz targets found (cargo fuzz list)" >&2
    exit 1
fi

echo "== building fuzz targets"
cargo fuzz build -O --debug-assertions

mkdir -p target/logs
failed=0
summary=()
for target in $targets; do
    mkdir -p "corpus/$target" "seeds/$target"
    log="target/logs/$target.log"
    echo "== fuzzing $target for ${seconds}s (log: fuzz/$log)"
    status=ok
    if ! cargo fuzz run -O --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        status=CRASH
        failed=1
        grep -E "^(==[0-9]+==|thread '|SUMMARY|artifact_prefix|Test unit written)" "$log" | head -20 || true
    fi
    # A target that crashed at once printed no stats: its figures are "?".
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
    units=$(find "corpus/$target" -type f | wc -l)
    summary+=("$(printf '%-12s %-6s %12s %10s %8s %8s' "$target" "$status" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$units")")
done

echo
printf '%-12s %-6s %12s %10s %8s %8s\n' target result executions exec/s edges corpus
printf '%s\n' "${summary[@]}"
exit "$failed"
