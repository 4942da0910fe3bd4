"""A pytest plugin that writes down what a session collected: each test's
node id, the names of its markers and the fixtures it uses (as
``path::name`` of their definitions), after every hook that deselects
tests has run. ``tests/test_guarantees.py`` reads it to know which tests
``make test`` runs, instead of trusting source text.

    TOLLGATE_COLLECTED_JSON=out.json python -m pytest --collect-only -q \\
        -p tollgate_tooling.collected tests

Writes ``{"items": [{"nodeid": ..., "markers": [...], "fixtures": [...]}]}``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

#: The environment variable naming the JSON file to write.
OUTPUT_ENV = "TOLLGATE_COLLECTED_JSON"


def fixtures_of(item: pytest.Item, root: Path) -> list[str]:
    """``path::name`` of each fixture the item uses, by where it is defined."""
    info = getattr(item, "_fixtureinfo", None)
    found = []
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        try:
            source = inspect.getsourcefile(defs[-1].func)
        except TypeError:  # defined in C
            source = None
        if source is None:
            continue
        source = Path(source).resolve()
        path = source.relative_to(root).as_posix() if source.is_relative_to(root) else str(source)
        found.append(f"{path}::{name}")
    return sorted(found)


def pytest_collection_finish(session: pytest.Session) -> None:
    output = os.environ.get(OUTPUT_ENV)
    if not output:
        raise pytest.UsageError(f"tollgate_tooling.collected needs {OUTPUT_ENV}: the file to write")
    root = session.config.rootpath
    items = [{"nodeid": item.nodeid,
              "markers": sorted({mark.name for mark in item.iter_markers()}),
              "fixtures": fixtures_of(item, root)} for item in session.items]
    Path(output).write_text(json.dumps({"items": items}, indent=1))
