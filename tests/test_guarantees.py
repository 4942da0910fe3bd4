"""docs/GUARANTEES.md maps every guarantee to the tests that prove it, and
each test a bullet names must be one `make test` runs, as its runners list
them, not a function of that name in source text: a test pytest collects
(``file::name``, or a fixture such a test uses), a test
``cargo test --workspace -- --list`` shows in the crate and module of the
file named, or a fuzz target ``fuzz/run.sh`` runs; never an ignored,
skipped or xfail test. A guarantee proved only outside `make test` (by
`make soak` or `make bench`) says so in the words of ``OUTSIDE``.
A guarantee whose test is renamed, removed, ignored or skipped fails here,
not silently."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUARANTEES = (ROOT / "docs" / "GUARANTEES.md").read_text()

#: What a bullet proved only outside `make test` must say.
OUTSIDE = "outside `make test`"
#: The pytest sessions of `make test` (the Makefile's test-e2e), each its own.
PYTEST_SESSIONS = (("ai-server/tests", "tests"), ("llm-upstream/tests",))
PYTEST_DIRS = tuple(f"{d}/" for session in PYTEST_SESSIONS for d in session)
#: Scripts of `make bench` and `make soak`, which `make test` does not run.
OUTSIDE_DIRS = ("bench/",)
#: Where the paths a bullet names are checked (others, like a path inside a
#: crate written from its root, are prose).
CHECKED_DIRS = (*PYTEST_DIRS, "filter/", "sidecar/", "wire/", "native/", "fuzz/", "bench/")
#: Markers that keep a collected test from proving anything.
REFUSED_MARKERS = frozenset({"skip", "skipif", "xfail"})

#: A backticked span: a path (``.py``, ``.rs``, ``.json``, ``.sh``) with an
#: optional ``::name``, ``::name`` alone, or anything else.
SPAN = re.compile(r"`([^`]*)`")
PATH_REF = re.compile(r"([\w./-]+\.(?:py|rs|json|sh))(?:::(\w+))?")
NAME = re.compile(r"\w+")
#: What may stand between a reference and a bare name that continues it:
#: "`file.rs` (`a`, `b` and `c`)".
CONTINUES = re.compile(r"[\s,(]*(?:and\s+)?")


@dataclass(frozen=True)
class RustTarget:
    """One test binary `cargo test --workspace` builds and runs."""

    #: Its crate root, from the repository's root: ``filter/src/lib.rs``.
    root: str
    #: What ``--list`` shows: ``limits::tests::foo``.
    tests: frozenset[str]
    #: What ``--list --ignored`` shows.
    ignored: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Runs:
    """What `make test` runs, as its runners list it."""

    #: Each pytest node id without its parameters -> the names of its
    #: markers (over all its parameters).
    pytest: dict[str, frozenset[str]]
    #: ``path::name`` of every fixture a collected, unskipped test uses.
    fixtures: frozenset[str]
    rust: tuple[RustTarget, ...]
    #: The fuzz targets' sources: ``fuzz/fuzz_targets/token.rs``.
    fuzz: frozenset[str]


def guarantees(text: str = GUARANTEES) -> list[str]:
    """The bullets between the guarantees markers, each joined into one line."""
    begin = text.index("<!-- guarantees:begin -->")
    end = text.index("<!-- guarantees:end -->")
    bullets, current = [], None
    for line in text[begin:end].splitlines():
        if line.startswith("- "):
            current = [line[2:]]
            bullets.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line.strip())
        else:
            current = None
    return [" ".join(b) for b in bullets]


def references(bullet: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``(path, name)`` pairs a bullet names (name empty: the whole
    file), and what it names wrongly. A name belongs to the file named last:
    ``::name``; a bare name right after the file or another of its names
    (``file.rs`` (``a``, ``b``)); a bare ``test_*`` anywhere after a ``.py``."""
    refs, wrong = [], []
    last, chain_end = None, None
    for span in SPAN.finditer(bullet):
        text = span.group(1)
        continues = chain_end is not None and CONTINUES.fullmatch(bullet[chain_end:span.start()])
        chain_end = None
        if path := PATH_REF.fullmatch(text):
            path_part, name = path.groups()
            last = path_part if path_part.startswith(CHECKED_DIRS) else None
            if last:
                refs.append((last, name or ""))
                chain_end = span.end()
        elif text.startswith("::") and NAME.fullmatch(text[2:]):
            if last is None:
                wrong.append(f"`{text}` follows no file")
                continue
            refs.append((last, text[2:]))
            chain_end = span.end()
        elif NAME.fullmatch(text) and last and last.endswith((".py", ".rs")) and (
                continues or (last.endswith(".py") and text.startswith("test_"))):
            refs.append((last, text))
            chain_end = span.end()
    return refs, wrong


def module_of(path: str, root: str) -> str | None:
    """The module path of ``path`` in the crate whose root file is ``root``
    (``limits::tests``; empty for the root), or None when it is not under it."""
    file, root_file = PurePosixPath(path), PurePosixPath(root)
    if file == root_file:
        return ""
    if root_file.parent not in file.parents:
        return None
    parts = list(file.relative_to(root_file.parent).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def rust_problem(runs: Runs, path: str, name: str) -> str | None:
    """What keeps ``path::name`` (or the file's tests) from proving anything."""
    roots = [t for t in runs.rust if t.root == path]
    targets = roots or [t for t in runs.rust if module_of(path, t.root) is not None]
    if not targets:
        return f"{path} belongs to no crate target `cargo test --workspace` runs"
    listed = []
    for target in targets:
        module = module_of(path, target.root)
        in_file = [t for t in target.tests if not module or t.startswith(f"{module}::")]
        if not in_file and module:
            # Mounted elsewhere (`#[path]`): its directory's module.
            parent = module.rpartition("::")[0]
            in_file = [t for t in target.tests if not parent or t.startswith(f"{parent}::")]
        listed += [(target, t) for t in in_file if not name or t == name or t.endswith(f"::{name}")]
    what = f"{path}::{name}" if name else f"every test in {path}"
    if not listed:
        return (f"`cargo test -- --list` shows no {path}::{name} (not a test, or renamed)"
                if name else f"`cargo test -- --list` shows no test in {path}")
    if all(test in target.ignored for target, test in listed):
        return f"{what} is #[ignore]d"
    return None


def pytest_problem(runs: Runs, path: str, name: str) -> str | None:
    """What keeps ``path::name`` (or the file's tests) from proving anything."""
    ids = [i for i in runs.pytest if i.split("::")[0] == path
           and (not name or name in i.split("::")[1:])]
    if not ids:
        if name and f"{path}::{name}" in runs.fixtures:
            return None
        return (f"pytest collects no {path}::{name} (not a test, nor a fixture a test uses)"
                if name else f"pytest collects no test in {path}")
    marked = sorted({marker for i in ids for marker in runs.pytest[i] & REFUSED_MARKERS})
    if name and marked:
        return f"{path}::{name} is marked {', '.join(marked)}"
    if not name and all(runs.pytest[i] & REFUSED_MARKERS for i in ids):
        return f"every test in {path} is marked {', '.join(marked)}"
    return None


def problems(bullet: str, runs: Runs) -> list[str]:
    """What is wrong with one guarantee's references (empty: nothing)."""
    refs, wrong = references(bullet)
    proved, outside = False, []
    for path, name in refs:
        if not (ROOT / path).exists():
            wrong.append(f"{path} does not exist")
            continue
        if path in runs.fuzz:
            problem = f"fuzz target {path} holds no test {name}" if name else None
        elif path.startswith("fuzz/") and path.endswith(".rs"):
            problem = f"{path} is no fuzz target fuzz/run.sh runs"
        elif path.endswith(".rs"):
            problem = rust_problem(runs, path, name)
        elif path.startswith(PYTEST_DIRS) and path.endswith(".py"):
            problem = pytest_problem(runs, path, name)
        elif path.startswith(OUTSIDE_DIRS):
            outside.append(path)
            continue
        else:  # a data file, a helper script: it proves nothing itself
            if name:
                wrong.append(f"{path} holds no tests, so no {name}")
            continue
        if problem:
            wrong.append(problem)
        else:
            proved = True
    if not proved and outside and OUTSIDE not in bullet:
        wrong.append(f"only {', '.join(outside)} proves it, which `make test` does not run: "
                     f"say so (\"{OUTSIDE}\")")
    elif not proved and not outside:
        wrong.append("names no test `make test` runs")
    return wrong


# --- What `make test` runs, from its runners ------------------------------------


def run(command: list[str], what_to_do: str, **kwargs) -> subprocess.CompletedProcess:
    """``command``'s result; a failure fails the test, saying ``what_to_do``."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        pytest.fail(f"`{' '.join(command)}` failed (exit {result.returncode}): {what_to_do}\n{tail}",
                    pytrace=False)
    return result


def collected(session: tuple[str, ...]) -> list[dict]:
    """What one pytest session of `make test` collects (tollgate_tooling.collected)."""
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_TEST_FILTERS"}
    with tempfile.TemporaryDirectory() as tmp:
        env["TOLLGATE_COLLECTED_JSON"] = out = f"{tmp}/collected.json"
        run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "-p", "tollgate_tooling.collected", f"--rootdir={ROOT}", *session],
            "the guarantees' tests are read from what pytest collects; run it to see why "
            "(`make setup` installs the tooling package)", cwd=ROOT, env=env, timeout=300)
        return json.loads(Path(out).read_text())["items"]


def cargo_targets() -> tuple[RustTarget, ...]:
    """Every test binary of `cargo test --workspace --locked`, with what it lists."""
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not on PATH: the guarantees' Rust tests are read from "
                    "`cargo test --workspace --locked -- --list`; install Rust with rustup "
                    "(https://rustup.rs), then run `make setup`", pytrace=False)
    built = run(["cargo", "test", "--workspace", "--locked", "--no-run",
                 "--message-format=json-render-diagnostics"],
                "the Rust tests cannot be listed until the workspace's tests build; run "
                "`cargo test --workspace --locked --no-run`", cwd=ROOT)
    binaries = {}
    for line in built.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if (message.get("reason") == "compiler-artifact" and message.get("executable")
                and message["profile"]["test"]):
            binaries[message["executable"]] = (Path(message["target"]["src_path"]),
                                               Path(message["manifest_path"]).parent)

    def listed(binary: str, crate: Path, *flags: str) -> frozenset[str]:
        out = run([binary, "--list", "--format", "terse", *flags],
                  "a test binary of `cargo test --workspace` cannot list its tests", cwd=crate)
        return frozenset(line.removesuffix(": test") for line in out.stdout.splitlines()
                         if line.endswith(": test"))

    return tuple(RustTarget(root=src.relative_to(ROOT).as_posix(), tests=listed(binary, crate),
                            ignored=listed(binary, crate, "--ignored"))
                 for binary, (src, crate) in sorted(binaries.items()))


def fuzz_targets() -> frozenset[str]:
    """The sources of the fuzz targets fuzz/run.sh runs (`cargo fuzz list`:
    the binaries of fuzz/Cargo.toml)."""
    manifest = tomllib.loads((ROOT / "fuzz" / "Cargo.toml").read_text())
    return frozenset(f"fuzz/{b['path']}" for b in manifest.get("bin", []))


@functools.cache
def make_test_runs() -> Runs:
    """What `make test` runs, listed once a session (the listings run at once)."""
    with ThreadPoolExecutor() as pool:
        sessions = [pool.submit(collected, s) for s in PYTEST_SESSIONS]
        rust = pool.submit(cargo_targets)
        items = [item for session in sessions for item in session.result()]
        targets = rust.result()
    markers: dict[str, frozenset[str]] = {}
    fixtures: set[str] = set()
    for item in items:
        test = item["nodeid"].split("[", 1)[0]
        markers[test] = markers.get(test, frozenset()) | frozenset(item["markers"])
        if not REFUSED_MARKERS & set(item["markers"]):
            fixtures.update(item["fixtures"])
    return Runs(pytest=markers, fixtures=frozenset(fixtures), rust=targets, fuzz=fuzz_targets())


def test_every_guarantee_names_a_test_that_make_test_runs():
    bullets = guarantees()
    assert len(bullets) >= 25, "the Guarantees section looks truncated"
    runs = make_test_runs()
    unproved = {b[:90]: p for b in bullets if (p := problems(b, runs))}
    assert not unproved, "guarantees without a test that `make test` runs:\n" + "\n".join(
        f"- {text}...: {'; '.join(p)}" for text, p in unproved.items())


#: What `make test` runs in the check's own test: a few tests by name.
FAKE_RUNS = Runs(
    pytest={"tests/test_replay.py::test_one_key_cannot_fill_the_replay_store_for_another":
            frozenset({"parametrize"}),
            "tests/test_replay.py::test_a_token_needs_a_usable_jti": frozenset({"skipif"}),
            "tests/test_flow.py::test_a_flaky_one": frozenset({"xfail"})},
    fixtures=frozenset({"tests/conftest.py::no_credentials_in_logs"}),
    rust=(RustTarget(root="filter/src/lib.rs",
                     tests=frozenset({"limits::tests::an_ask_is_taken_in",
                                      "token::tests::a_repeated_claim_is_malformed",
                                      "token::tests::an_old_one"}),
                     ignored=frozenset({"token::tests::an_old_one"})),
          RustTarget(root="sidecar/tests/http_api.rs", tests=frozenset({"ingest_refuses"})),
          RustTarget(root="sidecar/tests/cli.rs", tests=frozenset({"serve_drains"}))),
    fuzz=frozenset({"fuzz/fuzz_targets/token.rs"}),
)


def test_the_check_catches_a_missing_or_renamed_test():
    def check(bullet: str) -> list[str]:
        return problems(bullet, FAKE_RUNS)

    # Proofs: a test and a bare name after its file, a fixture, a fuzz target.
    assert check("`tests/test_replay.py`, "
                 "`::test_one_key_cannot_fill_the_replay_store_for_another`") == []
    assert check("`filter/src/token.rs` (`a_repeated_claim_is_malformed`), and "
                 "`sidecar/tests/http_api.rs::ingest_refuses`") == []
    assert check("`tests/conftest.py::no_credentials_in_logs`") == []
    assert check("`fuzz/fuzz_targets/token.rs`") == []
    # Prose after a file is not a name: `jti` here, after a sentence; but
    # a bare `test_*` after a .py file is.
    assert check("`tests/test_replay.py::test_one_key_cannot_fill_the_replay_store_for_another`;"
                 " a token does not use its `jti` up") == []

    assert check("`tests/test_replay.py`: see `test_that_was_renamed`")[0].startswith(
        "pytest collects no tests/test_replay.py::test_that_was_renamed")
    assert check("a promise with no test at all") == ["names no test `make test` runs"]
    assert check("`::test_one_key_cannot_fill_the_replay_store_for_another`") == [
        "`::test_one_key_cannot_fill_the_replay_store_for_another` follows no file",
        "names no test `make test` runs"]
    assert check("`tests/no_such_file.py`") == ["tests/no_such_file.py does not exist",
                                                "names no test `make test` runs"]
    # Not collected: renamed, or a helper (pytest collects neither).
    assert check("`tests/test_replay.py::test_that_was_renamed`") == [
        "pytest collects no tests/test_replay.py::test_that_was_renamed "
        "(not a test, nor a fixture a test uses)", "names no test `make test` runs"]
    # A bare name after a file is checked like `::name`.
    assert check("`filter/src/token.rs` (`a_repeated_claim_is_malformed`, `a_helper`)") == [
        "`cargo test -- --list` shows no filter/src/token.rs::a_helper (not a test, or renamed)"]
    # A Rust test is looked for in the crate and module of its file.
    assert check("`filter/src/limits/tests.rs::a_repeated_claim_is_malformed`") == [
        "`cargo test -- --list` shows no filter/src/limits/tests.rs::a_repeated_claim_is_malformed"
        " (not a test, or renamed)", "names no test `make test` runs"]
    assert check("`sidecar/tests/cli.rs::ingest_refuses`")[0].startswith(
        "`cargo test -- --list` shows no sidecar/tests/cli.rs::ingest_refuses")
    # Ignored, skipped, xfail.
    assert check("`filter/src/token.rs::an_old_one`") == [
        "filter/src/token.rs::an_old_one is #[ignore]d", "names no test `make test` runs"]
    assert check("`tests/test_replay.py::test_a_token_needs_a_usable_jti`") == [
        "tests/test_replay.py::test_a_token_needs_a_usable_jti is marked skipif",
        "names no test `make test` runs"]
    assert check("`tests/test_flow.py`") == ["every test in tests/test_flow.py is marked xfail",
                                            "names no test `make test` runs"]
    # Not a fuzz target, a data file's "test".
    assert check("`fuzz/fuzz_targets/config.rs`") == [
        "fuzz/fuzz_targets/config.rs is no fuzz target fuzz/run.sh runs",
        "names no test `make test` runs"]
    assert check("`tests/hostile_cases.json::alg`") == [
        "tests/hostile_cases.json holds no tests, so no alg", "names no test `make test` runs"]
    # Proved outside `make test` only: allowed when said.
    assert check("`make soak` checks it: `bench/soak.py`.") == [
        "only bench/soak.py proves it, which `make test` does not run: "
        "say so (\"outside `make test`\")"]
    assert check("`make soak` (outside `make test`) checks it: `bench/soak.py`.") == []
