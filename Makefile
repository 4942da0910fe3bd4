# tollgate: `make run` starts the whole stack, `make test` runs every test.
SHELL := /bin/bash
export TOLLGATE_TEST_MYSQL_URL ?= mysql://root@127.0.0.1:3306/tollgate_test
PYTHON := .venv/bin/python
# Runs a command with MariaDB at TOLLGATE_TEST_MYSQL_URL: the one there, or a
# throwaway mariadbd it starts when nothing answers (tollgate_tooling.with_mariadb).
WITH_MARIADB := $(PYTHON) -m tollgate_tooling.with_mariadb

.PHONY: run fleet test setup build lint test-rust test-e2e test-fuzz bench soak fuzz oci clean

## run: build everything, start sidecar (SQLite unless DATABASE_URL), ai-server and Envoy on :8001 (TOLLGATE_FILTER=native: the dynamic-module build of the filter)
run: setup
	$(PYTHON) -m tollgate_tooling.stack run

## fleet: ENVOYS (3) Envoys and SIDECARS (2) sidecars on free loopback ports over one MariaDB database, one ai-server (tollgate_tooling.fleet)
fleet: setup
	$(WITH_MARIADB) $(PYTHON) -m tollgate_tooling.fleet run --envoys $(or $(ENVOYS),3) --sidecars $(or $(SIDECARS),2)

## test: every test: Rust unit/HTTP tests (SQLite and MariaDB), ai-server and llm-upstream tests, end-to-end tests, each fuzz target briefly
# One MariaDB for both halves: a throwaway server, if one is started, serves
# the Rust and the end-to-end tests alike.
test: setup
	$(WITH_MARIADB) $(MAKE) --no-print-directory test-rust test-e2e
	$(MAKE) --no-print-directory test-fuzz

setup:
	scripts/setup.sh

build: setup

test-rust:
	$(WITH_MARIADB) cargo test --workspace --locked

# llm-upstream's tests run apart: both suites import helpers from their own
# conftest.py, and one pytest session would hand them one module of that name.
test-e2e:
	$(WITH_MARIADB) $(PYTHON) -m pytest -q ai-server/tests tests
	$(PYTHON) -m pytest -q llm-upstream/tests

## lint: what CI checks besides the tests (needs rustup's rustfmt and clippy components)
lint:
	scripts/setup.sh --toolchain
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy -p tollgate-filter --target wasm32-wasip1 --locked -- -D warnings

## bench: load benchmarks (see bench/README.md); writes bench/results.{json,md}
bench: setup
	bench/run.sh

## soak: the stack at a steady rate (SOAK_RATE, 200/s) for SOAK_SECONDS (180) on SQLite and on MariaDB: Envoy's and the sidecar's memory watched, the ledger checked exactly (bench/soak.py)
soak: setup
	$(WITH_MARIADB) $(PYTHON) bench/soak.py

## fuzz: every cargo-fuzz target (`cargo fuzz list`) for FUZZ_SECONDS each (default 60); installs cargo-fuzz if missing
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) fuzz/run.sh

# test-fuzz: what `make test` runs: each target for FUZZ_SECONDS (default 20)
# on the committed seeds plus what earlier runs found; a crash fails it.
test-fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),20) fuzz/run.sh

## oci: the filter as an OCI image (Wasm image format, compat variant) in the OCI layout target/oci/tollgate-filter, for Istio's WasmPlugin (scripts/oci.sh; installs Debian's umoci if missing)
oci: setup
	scripts/oci.sh

clean:
	cargo clean
	rm -rf .venv .tollgate
