"""The crates' modules import one another in layers: no import circle in
``filter/``, ``native/``, ``sidecar/`` or ``wire/`` (docs/ARCHITECTURE.md,
"Module map"). A circle means two modules cannot be read, tested or moved
apart; this check finds one the day it is written.

A module is a file (``x.rs`` or ``x/mod.rs``); it imports another when its
code (comments and its ``#[cfg(test)] mod tests`` left out) names a path
into it, by ``crate::`` or ``super::``, grouped (``crate::{a, b}``) or not.
A module naming its own parent or child is containment, not an import: a
child that uses its parent's types is how Rust modules nest. Test-only
modules (``tests.rs``, ``*_tests.rs``, the fake hosts) may import anything.

Circles are looked for at every depth: between the crate's top modules
(``limits`` → ``config``), and between modules inside one
(``http::error`` → ``http::console``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from tollgate_tooling import REPO_ROOT

#: The crates' source trees, and the least a reading of each must find (so
#: a reader that finds nothing cannot pass).
CRATES = {"filter/src": 150, "native/src": 25, "sidecar/src": 200, "wire/src": 10}

#: Modules that only tests compile, which may import anything.
TEST_ONLY = ("tests", "fake", "fake_host", "testkit")

COMMENT = re.compile(r"//[^\n]*")
TESTS_MODULE = re.compile(r"#\[cfg\(test\)\]\s*mod tests\s*\{")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(rf"\b(crate|super)::(\{{[^}}]*\}}|{IDENT}(?:::{IDENT})*)")

Module = tuple[str, ...]


def modules(src: Path) -> dict[Module, str]:
    """Each module of a crate's source tree and its code, test-only ones
    left out."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts.pop()
        if any(p in TEST_ONLY or p.endswith("_tests") for p in parts):
            continue
        code = COMMENT.sub("", path.read_text())
        found[tuple(parts)] = TESTS_MODULE.split(code)[0]
    return found


def imports(found: dict[Module, str]) -> set[tuple[Module, Module]]:
    """Which module imports which, as (importer, imported) pairs."""
    known = set(found)
    for module in list(known):
        known.update(module[:n] for n in range(1, len(module)))

    def resolve(base: Module, segments: list[str]) -> Module:
        # The longest module the path names; past it are items.
        target = base
        for segment in segments:
            if target + (segment,) not in known:
                break
            target += (segment,)
        return target

    edges = set()
    for module, code in found.items():
        for anchor, rest in PATH.findall(code):
            base = () if anchor == "crate" else module[:-1]
            members = rest[1:-1].split(",") if rest.startswith("{") else [rest]
            for member in members:
                member = member.strip().split(" as ")[0]
                if member:
                    edges.add((module, resolve(base, member.split("::"))))
    return edges


def circles(edges: set[tuple[Module, Module]], depth: int) -> list[list[str]]:
    """The circles among modules cut to their first ``depth`` segments
    (Tarjan's strongly connected components of more than one module)."""
    graph: dict[Module, set[Module]] = defaultdict(set)
    for importer, imported in edges:
        a, b = importer[:depth], imported[:depth]
        if a and b and a != b and a[:len(b)] != b and b[:len(a)] != a:
            graph[a].add(b)
    index: dict[Module, int] = {}
    low: dict[Module, int] = {}
    stack: list[Module] = []
    on_stack: set[Module] = set()
    found: list[list[str]] = []

    def visit(node: Module) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append("::".join(member))
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def described(edges: set[tuple[Module, Module]], circle: list[str]) -> str:
    """A circle with the imports that close it."""
    names = set(circle)
    depth = len(circle[0].split("::"))
    links = sorted({("::".join(a[:depth]), "::".join(b[:depth])) for a, b in edges
                    if "::".join(a[:depth]) in names and "::".join(b[:depth]) in names
                    and a[:depth] != b[:depth]})
    return ", ".join(f"{a} -> {b}" for a, b in links)


@pytest.mark.parametrize("crate", sorted(CRATES))
def test_no_import_circle(crate):
    edges = imports(modules(REPO_ROOT / crate))
    assert len(edges) >= CRATES[crate], f"{crate}: only {len(edges)} imports read"
    deepest = max(len(a) for a, _ in edges)
    found = {depth: c for depth in range(1, deepest + 1) if (c := circles(edges, depth))}
    assert not found, f"{crate} has import circles:\n" + "\n".join(
        f"- {' / '.join(circle)}: {described(edges, circle)}"
        for circles_at in found.values() for circle in circles_at)


def test_the_check_finds_a_circle_and_lets_nesting_be(tmp_path):
    src = tmp_path / "src"
    (src / "http").mkdir(parents=True)
    (src / "lib.rs").write_text("mod config;\nmod http;\nmod store;\n")
    (src / "config.rs").write_text("use crate::store::Pool; // crate::http in a comment\n")
    (src / "store.rs").write_text("use crate::{config::Config, http};\n"
                                  "#[cfg(test)]\nmod tests {\n use crate::http::x;\n}\n")
    (src / "http" / "mod.rs").write_text("mod error;\nuse self::error::E;\n")
    (src / "http" / "error.rs").write_text("use super::State; // the parent: nesting\n"
                                           "use super::console::Page;\n")
    (src / "http" / "console.rs").write_text("use super::error::E;\n")
    (src / "http" / "tests.rs").write_text("use crate::config::X;\n")
    edges = imports(modules(src))
    assert circles(edges, 1) == [["config", "store"]]
    assert circles(edges, 2) == [["config", "store"], ["http::console", "http::error"]]
    assert (("store",), ("http",)) in edges
    assert (("http", "error"), ("http",)) in edges
    assert not any(a == ("http", "tests") for a, _ in edges)
    assert described(edges, ["config", "store"]) == "config -> store, store -> config"
