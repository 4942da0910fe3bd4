"""The Python tooling is one package (tooling/tollgate_tooling, installed into
.venv by scripts/setup.sh) and every script, test and benchmark imports it
from there: no file edits the import path by hand."""

from __future__ import annotations

import re
import subprocess

from tollgate_tooling import REPO_ROOT

#: A hand edit of the import path (written so this file does not match it).
PATH_EDIT = re.compile(r"\bsys\.path\.(insert|append|extend)\s*\(|\bsys\.path\s*(\+=|=[^=])")


def python_files() -> list[str]:
    """The repository's .py files, tracked or not (ignored ones excepted)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.py"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [name for name in listed if (REPO_ROOT / name).is_file()]


def test_no_python_file_edits_the_import_path():
    files = python_files()
    assert "tooling/tollgate_tooling/stack.py" in files, files[:20]
    offenders = [f"{name}:{number}: {line.strip()}"
                 for name in files
                 for number, line in enumerate((REPO_ROOT / name).read_text().splitlines(), 1)
                 if PATH_EDIT.search(line)]
    assert not offenders, (
        "import from the tollgate_tooling package (tooling/) instead of editing sys.path:\n"
        + "\n".join(offenders))


def test_the_tooling_is_the_checkouts():
    """The installed package is this checkout's (editable), so the tooling
    starts this tree's builds with this tree's templates."""
    import tollgate_tooling.stack

    assert tollgate_tooling.stack.ROOT == REPO_ROOT
    assert (REPO_ROOT / "tooling/tollgate_tooling/stack.py").samefile(
        tollgate_tooling.stack.__file__)
