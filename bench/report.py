"""Turn the benchmark's raw runs into results.json, results.md and docs/PERFORMANCE.md's table.

Per scenario the table shows medians over the rounds: ``rps`` from the
throughput runs, ``p50_ms``/``p99_ms`` from the fixed-rate runs. Ratios and
added latencies are medians of per-round differences between a scenario and
its reference measured in the same round (in an order shuffled per round),
which cancels most of the drift of a shared machine.

Usage (rewrite docs/PERFORMANCE.md's table from the last results; print the
table of another results file, e.g. bench/results-llm-stream.json):
  .venv/bin/python bench/report.py --readme
  .venv/bin/python bench/report.py bench/results-llm-stream.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "docs" / "PERFORMANCE.md"
README_BEGIN = "<!-- performance:begin (owned by bench/; `make bench` prints the table) -->"
README_END = "<!-- performance:end -->"

#: Target of each ratio: (comparison, bound). Missing a target is reported, not an error.
TARGETS = {
    "gate_cached_vs_bare_rps": (">=", 0.80),
    "gate_cached_p50_added_ms": ("<=", 0.10),
    "gate_cached_p99_added_ms": ("<=", 0.50),
    "gate_cold_p50_added_ms": ("<=", 1.5),
    "metering_cpu_us_per_request": ("<=", 10),
    "ingest_mysql_rows_per_s": (">=", 250000),
    "summary_10m_rows_p50_ms": ("<=", 50),
    "ingest_mysql_10m_ledger_rows_per_s": (">=", 20000),
    "envoy_rss_added_mb": ("<=", 30),
    "gate_native_vs_bare_rps": (">=", 0.95),
    "gate_native_vs_native_rps": (">=", 1.10),
    "gate_native_p50_added_ms": ("<=", 0.03),
    "gate_native_p99_added_ms": ("<=", 0.15),
    "gate_native_64k_vs_bare_64k_rps": (">=", 0.70),
    "gate_native_rss_added_mb": ("<=", 5),
    "gate_limited_vs_gate_cached_rps": (">=", 0.95),
    "gate_limited_p50_added_ms": ("<=", 0.02),
    "gate_limited_grants_per_s": ("<=", 1.0),
    "gate_ai_server_vs_bare_ai_server_rps": (">=", 0.95),
    "gate_native_ai_server_vs_bare_ai_server_rps": (">=", 0.95),
    "gate_llm_stream_ttfb_added_ms": ("<=", 0.10),
    "gate_native_llm_stream_ttfb_added_ms": ("<=", 0.05),
}

#: Why a target stands where it does, when it was re-based on what was
#: measured (bench/README.md has the runs).
TARGET_REASONS = {
    "gate_native_64k_vs_bare_64k_rps":
        "re-based from 0.85: SHA-256 of 64 KiB alone takes 33.5 µs of Envoy's 100 "
        "(this CPU's SHA extensions), so no gateway that hashes the body passes 0.75 here",
    "gate_ai_server_vs_bare_ai_server_rps":
        "replaces 0.85 of the direct ai-server: Envoy alone reaches 0.64 of it on "
        "these 2 cores, so the gate is held to Envoy alone",
    "gate_native_ai_server_vs_bare_ai_server_rps": "as above, for the native build",
    "gate_cached_vs_bare_rps":
        "kept: a probe doing only what the contract asks of a gate (`wasm_floor`, no "
        "metering) reaches a median 0.81 of bare here (15 rounds, 0.65-0.89, 7 under 0.80); "
        "tollgate, which also meters, reaches 0.91 of that floor in the same rounds",
    "metering_cpu_us_per_request":
        "kept, and out of reach for a row per call: a usage_log with no index but its "
        "primary key costs 8.9-10.8 µs a row here, before exactly-once (bench/README.md)",
    "ingest_mysql_rows_per_s":
        "kept, and out of reach for a row per call: a usage_log with no index but its "
        "primary key reaches 155,000-177,000 rows/s on these 2 cores",
}


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]  # drop None and NaN
    return statistics.median(values) if values else None


def paired(rounds_a: list[dict], rounds_b: list[dict], field: str, how: str) -> float | None:
    """Median over rounds of b/a (``how == "ratio"``) or b - a (``"added"``)."""
    values = []
    for a, b in zip(rounds_a, rounds_b):
        if a is None or b is None:
            continue
        va, vb = a.get(field), b.get(field)
        if va is None or vb is None:
            continue
        if how == "ratio":
            values.append(vb / va if va else None)
        else:
            values.append(vb - va)
    return median(values)


def cpu_of(rounds: list[dict], process: str = "gateway") -> list[dict | None]:
    """Each round's CPU µs per request of ``process``, as ``{"cpu": value}``
    (the shape ``paired`` reads)."""
    return [None if r is None else {"cpu": r["cpu_us_per_req"].get(process)} for r in rounds]


def metering_cpu(rounds: list[dict]) -> float | None:
    """Median over rounds of the sidecar's plus the database's CPU µs per request."""
    return median([r["cpu_us_per_req"].get("sidecar", 0) + r["cpu_us_per_req"]["database"]
                   for r in rounds if r and "database" in r["cpu_us_per_req"]])


def summarise(runs: dict[str, dict[str, list[dict]]]) -> dict:
    """Per scenario: medians of its throughput and latency runs, errors summed."""
    out = {}
    for name, kinds in runs.items():
        thr, lat = kinds.get("throughput", []), kinds.get("latency", [])
        every = thr + lat
        cpu_names = sorted({n for r in every for n in r["cpu_us_per_req"]})
        out[name] = {
            "rps": median([r["rps"] for r in thr]),
            "p50_ms": median([r["p50_ms"] for r in lat]),
            "p99_ms": median([r["p99_ms"] for r in lat]),
            "errors": sum(r["errors"] for r in every),
            "requests": sum(r["requests"] for r in every),
            "saturated_p50_ms": median([r["p50_ms"] for r in thr]),
            "saturated_p99_ms": median([r["p99_ms"] for r in thr]),
            "cpu_us_per_req": {
                n: median([r["cpu_us_per_req"].get(n) for r in thr]) for n in cpu_names
            },
            "rounds": len(thr),
        }
    return out


def ratios(runs: dict, extra: dict) -> dict:
    """The ratios the issue asks for, plus a few that help read the table."""
    def thr(name):
        return runs.get(name, {}).get("throughput", [])

    def lat(name):
        return runs.get(name, {}).get("latency", [])

    r = {
        "gate_cached_vs_bare_rps": paired(thr("bare"), thr("gate_cached"), "rps", "ratio"),
        "gate_cached_p50_added_ms": paired(lat("bare"), lat("gate_cached"), "p50_ms", "added"),
        "gate_cached_p99_added_ms": paired(lat("bare"), lat("gate_cached"), "p99_ms", "added"),
        "gate_64k_vs_bare_64k_rps": paired(thr("bare_64k"), thr("gate_64k"), "rps", "ratio"),
        "gate_64k_p50_added_ms": paired(lat("bare_64k"), lat("gate_64k"), "p50_ms", "added"),
        "gate_cold_vs_bare_rps": paired(thr("bare"), thr("gate_cold"), "rps", "ratio"),
        "gate_cold_p50_added_ms": paired(lat("bare"), lat("gate_cold"), "p50_ms", "added"),
        "gate_cold_p99_added_ms": paired(lat("bare"), lat("gate_cold"), "p99_ms", "added"),
        "native_vs_bare_rps": paired(thr("bare"), thr("native"), "rps", "ratio"),
        "wasm_noop_vs_bare_rps": paired(thr("bare"), thr("wasm_noop"), "rps", "ratio"),
        "wasm_noop_p50_added_ms": paired(lat("bare"), lat("wasm_noop"), "p50_ms", "added"),
        "wasm_mimic_vs_bare_rps": paired(thr("bare"), thr("wasm_mimic"), "rps", "ratio"),
        "wasm_mimic_p50_added_ms": paired(lat("bare"), lat("wasm_mimic"), "p50_ms", "added"),
        "wasm_floor_vs_bare_rps": paired(thr("bare"), thr("wasm_floor"), "rps", "ratio"),
        "wasm_floor_p50_added_ms": paired(lat("bare"), lat("wasm_floor"), "p50_ms", "added"),
        "native_p50_added_ms": paired(lat("bare"), lat("native"), "p50_ms", "added"),
        "gate_cached_vs_native_rps": paired(thr("native"), thr("gate_cached"), "rps", "ratio"),
        "gate_native_vs_bare_rps": paired(thr("bare"), thr("gate_native"), "rps", "ratio"),
        "gate_native_vs_native_rps": paired(thr("native"), thr("gate_native"), "rps", "ratio"),
        "gate_native_p50_added_ms": paired(lat("bare"), lat("gate_native"), "p50_ms", "added"),
        "gate_native_p99_added_ms": paired(lat("bare"), lat("gate_native"), "p99_ms", "added"),
        "gate_native_64k_vs_bare_64k_rps": paired(
            thr("bare_64k"), thr("gate_native_64k"), "rps", "ratio"),
        "native_module_noop_vs_bare_rps": paired(
            thr("bare"), thr("native_module_noop"), "rps", "ratio"),
        "native_module_noop_p50_added_ms": paired(
            lat("bare"), lat("native_module_noop"), "p50_ms", "added"),
        "gate_limited_vs_gate_cached_rps": paired(
            thr("gate_cached"), thr("gate_limited"), "rps", "ratio"),
        "gate_limited_p50_added_ms": paired(
            lat("gate_cached"), lat("gate_limited"), "p50_ms", "added"),
        "gate_limited_no_header_vs_gate_limited_rps": paired(
            thr("gate_limited"), thr("gate_limited_no_header"), "rps", "ratio"),
        "gate_ai_server_vs_direct_rps": paired(
            thr("ai_server_direct"), thr("gate_ai_server"), "rps", "ratio"),
        "gate_ai_server_p50_added_ms": paired(
            lat("ai_server_direct"), lat("gate_ai_server"), "p50_ms", "added"),
        "bare_ai_server_vs_direct_rps": paired(
            thr("ai_server_direct"), thr("bare_ai_server"), "rps", "ratio"),
        "gate_ai_server_vs_bare_ai_server_rps": paired(
            thr("bare_ai_server"), thr("gate_ai_server"), "rps", "ratio"),
        "gate_native_ai_server_vs_bare_ai_server_rps": paired(
            thr("bare_ai_server"), thr("gate_native_ai_server"), "rps", "ratio"),
        "gate_native_ai_server_vs_direct_rps": paired(
            thr("ai_server_direct"), thr("gate_native_ai_server"), "rps", "ratio"),
        "gate_native_ai_server_p50_added_ms": paired(
            lat("ai_server_direct"), lat("gate_native_ai_server"), "p50_ms", "added"),
        # LLM stream rows: their latency runs are time-to-first-byte runs.
        "gate_llm_stream_ttfb_added_ms": paired(
            lat("bare_llm_stream"), lat("gate_llm_stream"), "p50_ms", "added"),
        "gate_native_llm_stream_ttfb_added_ms": paired(
            lat("bare_llm_stream"), lat("gate_native_llm_stream"), "p50_ms", "added"),
        "native_llm_stream_ttfb_added_ms": paired(
            lat("bare_llm_stream"), lat("native_llm_stream"), "p50_ms", "added"),
        "gate_llm_stream_cpu_added_us": paired(
            cpu_of(thr("bare_llm_stream")), cpu_of(thr("gate_llm_stream")), "cpu", "added"),
        "gate_native_llm_stream_cpu_added_us": paired(
            cpu_of(thr("bare_llm_stream")), cpu_of(thr("gate_native_llm_stream")), "cpu",
            "added"),
        # What a metered request costs the ledger: the sidecar's and the
        # database server's CPU per request of a throughput run.
        "metering_cpu_us_per_request": metering_cpu(thr("gate_cached")),
        "metering_cpu_us_per_request_native": metering_cpu(thr("gate_native")),
        "metering_cpu_us_per_request_llm_stream": metering_cpu(thr("gate_llm_stream")),
        "gate_llm_stream_vs_bare_llm_stream_rps": paired(
            thr("bare_llm_stream"), thr("gate_llm_stream"), "rps", "ratio"),
        "gate_native_llm_stream_vs_bare_llm_stream_rps": paired(
            thr("bare_llm_stream"), thr("gate_native_llm_stream"), "rps", "ratio"),
    }
    r.update(extra)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}


def targets(r: dict) -> dict:
    """Each target with its measured value and whether it was met."""
    out = {}
    for name, (op, bound) in TARGETS.items():
        value = r.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"target": f"{op} {bound}", "value": value, "met": met}
    expected, found = r.get("usage_rows_expected"), r.get("usage_rows_found")
    out["usage_rows_found == usage_rows_expected"] = {
        "target": "==", "value": f"{found} / {expected}",
        "met": None if expected is None else found == expected,
    }
    return out


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


#: What each scenario row is, for the table.
DESCRIPTIONS = {
    "bare": "Envoy routing only (the stack's config without the filter), 1 KiB",
    "gate_cached": "Envoy + tollgate, key cached, 1 KiB body",
    "bare_64k": "Envoy routing only, 64 KiB body",
    "gate_64k": "Envoy + tollgate, key cached, 64 KiB body",
    "gate_cold": "Envoy + tollgate, every request a cache miss (sidecar on MariaDB)",
    "native": "Envoy api_key_auth + jwt_authn (HS256), no body hash, no metering",
    "wasm_noop": "Envoy + a proxy-wasm filter that does nothing (the floor of any wasm filter)",
    "wasm_mimic": "Envoy + a probe filter making tollgate's host calls, none of its logic",
    "wasm_floor": "Envoy + a probe filter doing the least the client contract asks of a gate "
                  "(8 host calls, key hash, token and body checks; no metering)",
    "ai_server_direct": "Flask ai-server under gunicorn, no gateway",
    "gate_ai_server": "Envoy + tollgate in front of the ai-server",
    "gate_native_ai_server": "Envoy + tollgate's native build in front of the ai-server",
    "bare_ai_server": "Envoy routing only in front of the ai-server (the floor of any gateway there)",
    "native_module_noop": "Envoy + a dynamic module that does nothing (the floor of any native module)",
    "gate_native": "Envoy + tollgate's native build (dynamic module), key cached, 1 KiB body",
    "gate_native_64k": "Envoy + tollgate's native build, 64 KiB body",
    "gate_limited": "Envoy + tollgate, key cached, with a rate and a requests quota far from both",
    "gate_limited_no_header": "as gate_limited, allowed responses without RateLimit (its cost)",
    "bare_llm_stream": "Envoy routing only, a streamed OpenAI chat completion (20 tokens); "
                       "rps = streams/s, p50/p99 = time to first body byte",
    "gate_llm_stream": "Envoy + tollgate metering the stream (key cached, usage chunk read)",
    "native_llm_stream": "Envoy api_key_auth + jwt_authn in front of the stream, no metering",
    "gate_native_llm_stream": "Envoy + tollgate's native build metering the stream",
}


def markdown(results: dict) -> str:
    """The table a person reads (results.md, docs/PERFORMANCE.md, the terminal)."""
    k = results["knobs"]
    lines = [
        f"Measured {results['finished_at']} on {results['machine']['cores']} cores "
        f"(load average {results['machine']['loadavg_before']} before the run); "
        f"{k['rounds']} rounds, scenarios in a shuffled order each round (seed "
        f"{k.get('seed', '-')}), medians; throughput: {k['connections']} "
        f"connections closed loop, {k['duration_s']} s per run; latency: "
        f"{k['rate']} req/s offered ({k['ai_rate']} req/s for the ai-server rows), "
        f"open loop with latency correction. "
        f"Envoy concurrency {k['envoy_concurrency']}; oha, Envoy, upstream, sidecar and "
        "database share the cores. CPU µs per request: the gateway's Envoy, the sidecar and "
        "the database server (metered rows only), and the whole machine (every process, "
        "busy time of both cores): while the cores are the limit, rps is about "
        "2 cores / the machine's figure. LLM stream rows (`*_llm_stream`): rps is whole "
        "streams per second, p50/p99 the time to the first byte of the body over "
        f"{k.get('ttfb_streams', '-')} streams per row, one at a time, the rows taking turns.",
        "",
        "| scenario | what | rps (16 conn) | p50 ms | p99 ms | errors "
        "| CPU µs/req: Envoy | sidecar | database | machine |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in results["scenarios"].items():
        cpu = s.get("cpu_us_per_req", {})
        lines.append(
            f"| `{name}` | {DESCRIPTIONS.get(name, '')} | {_fmt(s['rps'], 0)} | "
            f"{_fmt(s['p50_ms'], 3)} | {_fmt(s['p99_ms'], 3)} | {s['errors']} | "
            f"{_fmt(cpu.get('gateway'), 1)} | {_fmt(cpu.get('sidecar'), 1)} | "
            f"{_fmt(cpu.get('database'), 1)} | {_fmt(cpu.get('machine'), 1)} |"
        )
    ingest = results.get("sidecar", {}).get("ingest", [])
    if ingest:
        lines += ["", "| sidecar ingestion (batches of 500) | rows/s | batch p50 ms | batch p99 ms "
                  "| CPU µs/row: sidecar | database | senders |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in ingest:
            cpu = row.get("cpu_us_per_row", {})
            lines.append(f"| {row['backend']} ({row['senders']} senders) | "
                         f"{_fmt(row['rows_per_sec'], 0)} | {_fmt(row['batch_p50_ms'])} | "
                         f"{_fmt(row['batch_p99_ms'])} | {_fmt(cpu.get('sidecar'), 1)} | "
                         f"{_fmt(cpu.get('database'), 1)} | {_fmt(cpu.get('bench'), 1)} |")
    verify = results.get("sidecar", {}).get("verify", [])
    if verify:
        lines += ["", "| sidecar key verification | clients | req/s | p50 ms | p99 ms |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for row in verify:
            lines.append(f"| {row['backend']} | {row['clients']} | "
                         f"{_fmt(row['requests_per_sec'], 0)} | {_fmt(row['p50_ms'])} | "
                         f"{_fmt(row['p99_ms'])} |")
    summary = results.get("sidecar", {}).get("summary")
    if summary:
        lines += ["", f"| admin reads over {summary['usage_rows']:,} usage rows "
                  f"({summary['keys']} keys, {summary['days']} days; rollups "
                  f"{summary['hourly_rows']:,} hourly + {summary['daily_rows']:,} daily rows) "
                  "| p50 ms | p99 ms |", "| --- | ---: | ---: |"]
        for q in summary["queries"]:
            lines.append(f"| {q['name']}: `{q['path']}` | {_fmt(q['p50_ms'])} | "
                         f"{_fmt(q['p99_ms'])} |")
        lines.append(f"| the same summary as a scan of `usage_log` (before the rollups), "
                     f"once | {_fmt(summary['detail_scan_ms'], 0)} | |")
        lines.append(f"| filling the rows (bulk SQL) / `tollgate migrate` rolling them up | "
                     f"{_fmt(summary['fill_seconds'], 1)} s | {_fmt(summary['migrate_seconds'], 1)} s |")
    lines += ["", "| ratio (paired per round) | value | target | | why the target |",
              "| --- | ---: | ---: | --- | --- |"]
    t = results["targets"]
    for name, value in results["ratios"].items():
        target = t.get(name)
        mark = "" if target is None else {True: "met", False: "**MISSED**",
                                          None: "not measured"}[target["met"]]
        digits = 0 if name.endswith("rows_per_s") else 2 if name.startswith("summary") else 3
        lines.append(f"| `{name}` | {_fmt(value, digits)} | "
                     f"{target['target'] if target else ''} | {mark} | "
                     f"{TARGET_REASONS.get(name, '')} |")
    usage = t["usage_rows_found == usage_rows_expected"]
    lines.append(f"| usage rows found / expected | {usage['value']} | == | "
                 f"{ {True: 'met', False: '**MISSED**', None: 'not measured'}[usage['met']]} | |")
    checks = results.get("usage_ledger") or []
    if checks:
        missing, extra = sum(c["missing"] for c in checks), sum(c["extra"] for c in checks)
        lines.append(f"| usage request ids missing / extra | {missing} / {extra} | 0 / 0 | "
                     f"{'met' if missing == extra == 0 else '**MISSED**'} | |")
    rss = results.get("rss_mb", {})
    if rss:
        names = {"bare": "bare", "gate": "tollgate", "wasm_noop": "no-op wasm filter",
                 "native": "native filters", "gate_native": "tollgate native build",
                 "native_module_noop": "no-op dynamic module"}
        lines += ["", "Envoy RSS (VmRSS) right after the last `gate_cached` run: " + ", ".join(
            f"{names.get(n, n)} {_fmt(v, 1)} MiB" for n, v in rss.items()) + "."]
    return "\n".join(lines) + "\n"


def update_readme(table: str, elapsed_s: float) -> None:
    """Replace docs/PERFORMANCE.md's table (between its markers) with ``table``."""
    text = README.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit("docs/PERFORMANCE.md has no performance:begin/end markers")
    minutes = elapsed_s / 60
    how = (f"Reproduce with `make bench` (this run: {minutes:.1f} minutes; the first run on a "
           "machine adds about 9 minutes to `cargo install oha`); bench/README.md says what "
           "each scenario measures, lists the knobs, explains the missed targets with "
           "profiling evidence (*Findings*) and records the optimisations made, with "
           "before/after figures. "
           "The figures come from one run on a shared 2-core machine: compare ratios, not "
           "absolute numbers.\n\n")
    body = README_BEGIN + "\n" + how + table + README_END
    README.write_text(text[:start] + body + text[end + len(README_END):])


def main(argv: list[str]) -> int:
    files = [a for a in argv if not a.startswith("--")]
    results = json.loads(Path(files[0] if files else HERE / "results.json").read_text())
    table = markdown(results)
    if "--readme" in argv:
        update_readme(table, results.get("elapsed_s", 0))
        print("docs/PERFORMANCE.md updated")
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
