"""docs/GUARANTEES.md maps every guarantee to the test that
proves it: each bullet names at least one test file of this repository, and
every ``file::name`` it names is a test (or fixture) defined in that file.
A guarantee whose test is renamed or removed fails here, not silently."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUARANTEES = (ROOT / "docs" / "GUARANTEES.md").read_text()

#: A backticked reference: a path of this repository, optionally ``::name``,
#: or ``::name`` alone (another test of the file named just before).
REFERENCE = re.compile(r"`((?:[\w./-]+\.(?:py|rs|json|sh))?(?:::\w+)?)`")
TEST_DIRS = ("tests/", "sidecar/tests/", "filter/src/", "filter/tests/", "ai-server/tests/",
             "sidecar/src/", "wire/src/", "fuzz/", "bench/")


def guarantees() -> list[str]:
    """The bullets between the guarantees markers, each joined into one line."""
    begin = GUARANTEES.index("<!-- guarantees:begin -->")
    end = GUARANTEES.index("<!-- guarantees:end -->")
    bullets, current = [], None
    for line in GUARANTEES[begin:end].splitlines():
        if line.startswith("- "):
            current = [line[2:]]
            bullets.append(current)
        elif current is not None and line.startswith("  "):
            current.append(line.strip())
        else:
            current = None
    return [" ".join(b) for b in bullets]


def defines(path: Path, name: str) -> bool:
    """Whether ``path`` defines a test, fixture or function called ``name``."""
    text = path.read_text(errors="replace")
    return re.search(rf"\b(?:def|fn)\s+{re.escape(name)}\b", text) is not None


def problems(bullet: str) -> list[str]:
    """What is wrong with one guarantee's references (empty: nothing)."""
    found, wrong, last = [], [], None
    for ref in REFERENCE.findall(bullet):
        if not ref:
            continue
        path_part, _, name = ref.partition("::")
        if path_part:
            if not path_part.startswith(TEST_DIRS):
                continue
            path = ROOT / path_part
            if not path.exists():
                wrong.append(f"{path_part} does not exist")
                continue
            last = path
            found.append(path_part)
        elif last is None:
            continue
        if name:
            if not defines(last, name):
                wrong.append(f"{last.relative_to(ROOT)} defines no {name}")
            else:
                found.append(f"{last.relative_to(ROOT)}::{name}")
    if not found:
        wrong.append("names no test")
    return wrong


def test_every_guarantee_names_a_test_that_exists():
    bullets = guarantees()
    assert len(bullets) >= 25, "the Guarantees section looks truncated"
    unmapped = {b[:90]: p for b in bullets if (p := problems(b))}
    assert not unmapped, "guarantees without a test that exists:\n" + "\n".join(
        f"- {text}...: {', '.join(p)}" for text, p in unmapped.items())


def test_the_check_catches_a_missing_or_renamed_test():
    assert problems("a promise with no test at all") == ["names no test"]
    assert problems("`tests/test_replay.py::test_that_was_renamed`") == [
        "tests/test_replay.py defines no test_that_was_renamed"]
    assert problems("`tests/no_such_file.py`") == ["tests/no_such_file.py does not exist",
                                                   "names no test"]
    assert problems("`tests/test_replay.py`, "
                    "`::test_one_key_cannot_fill_the_replay_store_for_another`") == []
