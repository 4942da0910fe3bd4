"""The docs hold together: every relative link in README.md and docs/*.md
points at a file of this repository, and a link with an anchor
(``OPERATING.md#web-console``, ``#limits-and-quotas``) at a heading of that
Markdown file. A section moved or renamed fails here, not in a reader's
browser."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The pages whose links are checked.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: ``[text](target)`` and ``![alt](target)``, with an optional title.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans, where a bracket is no link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (``-1``, ``-2`` for repeats)."""
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def dead_links(page: Path) -> list[str]:
    """Each relative link of ``page`` that points at nothing, with what is wrong."""
    wrong = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            wrong.append(f"{target}: no file {path_part}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            wrong.append(f"{target}: no heading #{anchor} in {path.name}")
    return wrong


def test_every_relative_link_in_the_docs_resolves():
    assert len(PAGES) >= 2
    dead = {page.relative_to(ROOT): d for page in PAGES if (d := dead_links(page))}
    assert not dead, "dead links:\n" + "\n".join(
        f"- {page}: {link}" for page, links in dead.items() for link in links)


def test_the_check_catches_a_dead_file_or_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Limits and quotas (v1)\n\n## Limits and quotas (v1)\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md) [b](other.md#limits-and-quotas-v1) "
                    "[c](other.md#limits-and-quotas-v1-1) [d](https://example.com/x) "
                    "`[e](missing.md)`\n\n```\n[f](missing.md)\n```\n"
                    "[g](missing.md) [h](other.md#gone) [i](#nowhere)\n")
    assert dead_links(page) == ["missing.md: no file missing.md",
                                "other.md#gone: no heading #gone in other.md",
                                "#nowhere: no heading #nowhere in page.md"]
