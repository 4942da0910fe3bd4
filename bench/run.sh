#!/usr/bin/env bash
# `make bench`: the load benchmarks of bench/README.md on this machine.
#
# Installs oha (the load generator) with cargo if it is not on PATH, builds
# sidecar-bench, sse-upstream and the probe wasm filters (bench/wasm-probe), then runs
# bench/gateway_bench.py with .venv's Python (`make setup` has built the
# filter and the sidecar and created .venv). Writes
# bench/results.json and bench/results.md and prints the table. Exits non-zero
# when a run errored; a missed target is only marked in the table.
# Knobs (BENCH_DURATION, BENCH_ROUNDS, ...): see bench/gateway_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
    echo "bench: installing oha (cargo install oha --locked; a few minutes, once)"
    start=$(date +%s)
    cargo install oha --locked
    echo "bench: oha installed in $(( $(date +%s) - start )) s"
fi

# sidecar-bench and sse-upstream (the LLM stream rows' upstream).
cargo build --release --locked -p tollgate-bench
# The probe filters of the wasm_noop, wasm_mimic and wasm_floor rows (their own small crate).
cargo build --release --locked --target wasm32-wasip1 \
    --manifest-path bench/wasm-probe/Cargo.toml --target-dir target/bench-wasm-probe
# The no-op dynamic module of the native_module_noop row (its own small crate).
cargo build --release --locked --manifest-path bench/native-probe/Cargo.toml \
    --target-dir target/bench-native-probe
.venv/bin/python bench/gateway_bench.py
# What fleet-scoped replay protection adds per request (bench/results-replay.json).
.venv/bin/python bench/replay_scope.py
