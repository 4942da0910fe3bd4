# tollgate: `make run` starts the whole stack, `make test` runs every test.
SHELL := /bin/bash
export TOLLGATE_TEST_MYSQL_URL ?= mysql://root@127.0.0.1:3306/tollgate_test
PYTHON := .venv/bin/python

.PHONY: run test setup build lint test-rust test-e2e bench fuzz clean

## run: build everything, start sidecar (SQLite unless DATABASE_URL), ai-server and Envoy on :8001
run: setup
	$(PYTHON) scripts/stack.py run

## test: every test: Rust unit/HTTP tests (SQLite and MariaDB), ai-server tests, end-to-end tests
test: setup test-rust test-e2e

setup:
	scripts/setup.sh

build: setup

test-rust:
	cargo test --workspace --locked

test-e2e:
	$(PYTHON) -m pytest -q ai-server/tests tests

## lint: what CI checks besides the tests
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy -p filter --target wasm32-wasip1 --locked -- -D warnings

## bench: load benchmarks (see bench/README.md); writes bench/results.{json,md}
bench: setup
	bench/run.sh

## fuzz: every cargo-fuzz target (token, config, ingest, replay) for FUZZ_SECONDS each; installs cargo-fuzz if missing
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

clean:
	cargo clean
	rm -rf .venv .tollgate
