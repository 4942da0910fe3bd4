"""Reads the Grafana dashboard's queries and Prometheus scrapes, so that
tests/test_dashboard.py can check each query's metrics against what Envoy
and the sidecar really expose.

A query's series selectors (``name{label="value", ...}``, or
``{__name__=~"regex", ...}``) are found by a small lexer: string literals
outside selectors (``label_replace``'s arguments) and the label lists of
``by (...)``/``without (...)`` are not metric names. Every selector must
name its job with one of the dashboard's job variables, which says which
scrape it reads; a metric name outside a selector is a problem, as it
would leave the job unsaid. Each query must also parse as PromQL (PyPI
promql-parser, the Rust promql-parser crate's binding), once Grafana's
variables are replaced by values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: A PromQL string literal, a selector with its braces, `by`/`without` and
#: their label list, or an identifier.
TOKEN = re.compile(r'''(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<selector>(?P<name>[A-Za-z_:][\w:]*)?\{(?P<matchers>(?:[^}"]|"(?:[^"\\]|\\.)*")*)\})
    |(?P<grouping>\b(?:by|without)\s*\([^)]*\))
    |(?P<ident>[A-Za-z_:][\w:]*)''', re.X)

MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

#: One series of a Prometheus text exposition: name, labels, value.
SERIES = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+\S+')
LABEL = re.compile(r'([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Selector:
    """One series selector of a query."""
    query: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value); the name as __name__

    def job(self) -> str | None:
        return next((v for label, op, v in self.matchers if label == "job" and op == "="), None)

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        """Whether a scraped series (its labels without job and instance,
        which Prometheus adds) is one this selector reads."""
        series = {**labels, "__name__": name}
        for label, op, value in self.matchers:
            if label == "job":
                continue
            actual = series.get(label, "")
            if op == "=" and actual != value or op == "!=" and actual == value:
                return False
            if op in ("=~", "!~") and bool(re.fullmatch(value, actual)) != (op == "=~"):
                return False
        return True


def queries(dashboard: dict) -> list[str]:
    """Every query expression of the dashboard's panels (rows included)."""
    found = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            found += [t["expr"] for t in inner.get("targets", []) if t.get("expr")]
    return found


def selectors(query: str) -> tuple[list[Selector], list[str]]:
    """The selectors of ``query``, and its problems (a metric outside a selector)."""
    found, problems = [], []
    for token in TOKEN.finditer(query):
        if token["selector"]:
            matchers = [(m[1], m[2], m[3]) for m in MATCHER.finditer(token["matchers"])]
            if token["name"]:
                matchers.insert(0, ("__name__", "=", token["name"]))
            found.append(Selector(query, tuple(matchers)))
        elif token["ident"] and token["ident"].startswith(("tollgate_", "envoy_")):
            problems.append(f"{token['ident']} is queried without a selector naming its job: "
                            f"{query}")
    return found, problems


def parse_problem(query: str) -> str | None:
    """Why ``query`` is not PromQL, or None; Grafana's ``$__interval``-like
    variables stand for a duration, the others for a name."""
    import promql_parser

    plain = re.sub(r"\$\{?(\w+)\}?", lambda m: "1m" if m[1].startswith("__") else m[1], query)
    try:
        promql_parser.parse(plain)
    except Exception as err:  # noqa: BLE001 - the binding raises plain exceptions
        return f"does not parse as PromQL ({err}): {query}"
    return None


def scrape_series(text: str) -> list[tuple[str, dict[str, str]]]:
    """The series of a Prometheus text exposition."""
    series = []
    for line in text.splitlines():
        match = SERIES.match(line)
        if match and not line.startswith("#"):
            series.append((match[1], dict(LABEL.findall(match[2] or ""))))
    return series


def scrape_families(text: str) -> set[str]:
    """The metric families (`# TYPE` lines) of an exposition."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def dashboard_problems(path: Path, scrapes: dict[str, str]) -> list[str]:
    """The dashboard's queries whose selectors match no series of the scrape
    their job names; ``scrapes`` maps a job variable (``$envoy_job``) to
    that scrape's text."""
    dashboard = json.loads(path.read_text())
    series = {job: scrape_series(text) for job, text in scrapes.items()}
    problems = []
    all_queries = queries(dashboard)
    if not all_queries:
        return ["the dashboard has no query"]
    for query in all_queries:
        problem = parse_problem(query)
        if problem:
            problems.append(problem)
        found, more = selectors(query)
        problems += more
        if not found:
            problems.append(f"no series selector in {query}")
        for selector in found:
            job = selector.job()
            if job not in series:
                problems.append(f"a selector names job {job!r}, not one of {sorted(series)}: "
                                f"{query}")
            elif not any(selector.matches(name, labels) for name, labels in series[job]):
                wanted = ", ".join(f"{l}{op}{v!r}" for l, op, v in selector.matchers)
                problems.append(f"no series of the {job} scrape matches {{{wanted}}}: {query}")
    return problems


def queried_names(path: Path) -> set[str]:
    """The metric names the dashboard's selectors name exactly."""
    dashboard = json.loads(path.read_text())
    return {value for query in queries(dashboard) for selector in selectors(query)[0]
            for label, op, value in selector.matchers if label == "__name__" and op == "="}
