"""tollgate's load benchmark: the gateway's cost against bare Envoy, the key
callout, Envoy's native auth filters, the real ai-server, and usage ingestion.

``make bench`` (bench/run.sh) runs this with .venv's Python. It starts, on
free loopback ports:

* the sidecar on MariaDB (database ``tollgate_bench_gate``, recreated) and
  the ai-server under gunicorn, through tollgate_tooling.stack;
* a fast upstream: an Envoy that reads the body and answers a fixed JSON;
* the gateways, each from the stack's own Envoy template (bench/envoys.py):
  ``bare`` (no filter), ``gate`` (tollgate), ``gate_cold`` (tollgate with the
  key cache's TTLs at 0, so every request calls the sidecar), ``native``
  (api_key_auth + jwt_authn), ``wasm_noop``, ``wasm_mimic`` and
  ``wasm_floor`` (probe filters of bench/wasm-probe: one does nothing, the
  floor of any wasm filter; one makes tollgate's host calls without its
  logic; one does the least the client contract asks of any gate) and
  ``gate_ai`` (tollgate in front of the ai-server), ``gate_native_ai`` (its
  native build there), ``bare_ai`` (Envoy alone in front of it);
* for the LLM stream rows (bench/llm_stream.py), ``sse-upstream``
  replaying llm-upstream's streamed chat answer; the ``bare``, ``gate``,
  ``native`` and ``gate_native`` gateways route ``/v1/chat/completions`` to
  it, and those rows' latency run is a time-to-first-byte run;
  ``gate_llm_limited`` and ``gate_native_llm_limited`` are ``gate_llm_stream``
  and ``gate_native_llm_stream`` with a key whose token quota is far from its
  limit, so every stream reserves its token bound and settles it.

Then, for each round, every scenario gets one throughput run and one
fixed-rate latency run (bench/loadgen.py), with a fresh token per run, in an
order shuffled per round and per kind of run (seeded; the log prints each
order), so a drift of the machine favours no scenario. A metered run's CPU
window closes only once its last usage records are in ``usage_log``. After
the load it checks the ledger (bench/ledger.py): per metered scenario, as
many 2xx rows as 2xx answers, and the request ids the upstream served are
exactly those of the ``allowed`` rows. Then it reads Envoy's RSS, stops
everything and runs ``sidecar-bench`` for ingestion rows/s into MariaDB and
SQLite. bench/report.py writes bench/results.json and bench/results.md.

Knobs (environment): BENCH_DURATION (s per run, default 5), BENCH_ROUNDS (3),
BENCH_WARMUP (s, 2), BENCH_RATE (req/s of latency runs, 1000), BENCH_AI_RATE
(100), BENCH_CONNECTIONS (16), BENCH_TTFB_STREAMS (streams of each
time-to-first-byte run of the LLM stream rows, 2000), BENCH_INGEST_SECONDS (5), BENCH_SCENARIOS
(comma list, default all), BENCH_SEED (seed of the run orders, default
random), BENCH_KEEP (1: keep the work directory), BENCH_MYSQL_URL
(mysql://root@127.0.0.1:3306).

For the token-quota rows it also reports how much of each reservation was
given back: per allowed ledger row of their key, (reserved - used) /
reserved, averaged, where reserved is the request body's bytes plus the
body's output cap (the filter's token bound) and used the row's input and
output tokens.

Exit status: 0 when every run completed without errors (non-2xx answers or
socket errors) and the usage ledger is exact; 1 otherwise. A missed target
is marked in the table, not an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# envoys, ledger, loadgen and report are bench/'s own modules, beside this
# script (Python puts a script's directory first on its path).
import envoys
import ledger
import llm_stream
import loadgen
import report
from envoys import Envoy
from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling.stack import (
    METRIC_PREFIXES, NATIVE_DIR, USAGE_BUFFERED_GAUGE, Stack, StackConfig, StackError, mint_token)

SIDECAR_BENCH = ROOT / "target/release/sidecar-bench"
GATE_DATABASE = "tollgate_bench_gate"
#: The limits of the `gate_limited` keys: a rate and a requests quota the
#: load stays far from, so every request is charged and none refused.
LIMITED_KEY = ("--rate", "1000000/s", "--quota", "requests=1000000/day")
#: The limit of the token-quota LLM rows' keys: far more tokens than a run
#: reserves (about 250 a stream, some 10^5 streams), so every stream
#: reserves and settles and none waits or is refused.
LLM_LIMITED_KEY = ("--quota", "tokens=1000000000/month")
ANALYZE = "/proxy/analyze"


#: The scenarios whose upstream is the ai-server, not the fast upstream Envoy.
AI_SERVER_GATES = ("bare_ai_server", "gate_ai_server", "gate_native_ai_server")
#: The LLM stream rows (bench/llm_stream.py): their upstream is sse-upstream,
#: their latency run is the time to first byte.
LLM_STREAM_ROWS = ("bare_llm_stream", "gate_llm_stream", "native_llm_stream",
                   "gate_native_llm_stream", "gate_llm_limited", "gate_native_llm_limited")
#: Each token-quota LLM row and the row without limits it is paired with
#: (same gateway, same stream).
LLM_LIMITED_PAIRS = {"gate_llm_limited": "gate_llm_stream",
                     "gate_native_llm_limited": "gate_native_llm_stream"}
#: Targets of the token-quota rows' figures against their pairs: (comparison, bound).
LLM_LIMITED_TARGETS = {
    "gate_llm_limited_vs_gate_llm_stream_rps": (">=", 0.95),
    "gate_llm_limited_ttfb_added_ms": ("<=", 0.02),
    "gate_native_llm_limited_vs_gate_native_llm_stream_rps": (">=", 0.95),
    "gate_native_llm_limited_ttfb_added_ms": ("<=", 0.02),
}


@dataclasses.dataclass
class Knobs:
    """Run lengths and rates, from the environment (see the module docstring)."""

    duration_s: float = 5.0
    rounds: int = 3
    warmup_s: float = 2.0
    rate: int = 1000
    ai_rate: int = 100
    connections: int = 16
    ttfb_streams: int = 2000  # streams of each time-to-first-byte run (LLM stream rows)
    ingest_seconds: int = 5
    envoy_concurrency: int = 2
    scenarios: list[str] | None = None
    seed: int = 0  # of the order of the scenarios in each round
    keep: bool = False
    mysql_url: str = "mysql://root@127.0.0.1:3306"

    @classmethod
    def from_env(cls) -> "Knobs":
        e = os.environ
        only = [s.strip() for s in e.get("BENCH_SCENARIOS", "").split(",") if s.strip()]
        return cls(
            duration_s=float(e.get("BENCH_DURATION", 5)),
            rounds=int(e.get("BENCH_ROUNDS", 3)),
            warmup_s=float(e.get("BENCH_WARMUP", 2)),
            rate=int(e.get("BENCH_RATE", 1000)),
            ai_rate=int(e.get("BENCH_AI_RATE", 100)),
            connections=int(e.get("BENCH_CONNECTIONS", 16)),
            ttfb_streams=int(e.get("BENCH_TTFB_STREAMS", 2000)),
            ingest_seconds=int(e.get("BENCH_INGEST_SECONDS", 5)),
            scenarios=only or None,
            seed=int(e["BENCH_SEED"]) if e.get("BENCH_SEED") else random.randrange(1 << 32),
            keep=e.get("BENCH_KEEP", "") == "1",
            mysql_url=e.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306").rstrip("/"),
        )


@dataclasses.dataclass
class Scenario:
    """One row of the table: where requests go and what they carry."""

    name: str
    url: str
    body_path: Path
    body: bytes
    gateway: Envoy | None  # the Envoy whose CPU and RSS this row measures
    key: dict | None  # the API key (CLI JSON); gated rows meter under its id
    metered: bool  # tollgate's filter meters it: counts for the usage check
    rate: int
    ok_total: int = 0  # 2xx answers over every run, warm-up and smoke included
    llm: bool = False  # an LLM stream row: sse-upstream behind it, TTFB as its latency run


def json_body(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes: {"text": "..."} with English words."""
    words = b"the quick brown fox jumps over the lazy dog while the gateway checks it "
    head, tail = b'{"text": "', b'"}'
    fill = size - len(head) - len(tail)
    return head + (words * (fill // len(words) + 1))[:fill] + tail


def recreate_database(url: str, name: str) -> None:
    conn = ledger.mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}`")
    finally:
        conn.close()


def database_pid(url: str) -> int | None:
    """The process id of the database server at ``url`` (its ``pid_file``),
    or None where it cannot be read (a server on another machine)."""
    conn = ledger.mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@pid_file AS f")
            path = Path(cur.fetchone()["f"])
    finally:
        conn.close()
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """The processes of one benchmark run and the runs made against them."""

    def __init__(self, knobs: Knobs, workdir: Path):
        self.knobs = knobs
        self.workdir = workdir
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        recreate_database(knobs.mysql_url, GATE_DATABASE)
        #: The database server, whose CPU per request a metered run reports.
        self.database_pid = database_pid(knobs.mysql_url)
        self.stack = Stack(StackConfig.ephemeral(
            workdir, database_url=f"{knobs.mysql_url}/{GATE_DATABASE}",
            envoy_concurrency=knobs.envoy_concurrency))
        self.envoys: dict[str, Envoy] = {}
        self.scenarios: dict[str, Scenario] = {}
        self.runs: dict[str, dict[str, list[dict]]] = {}
        self.failures: list[str] = []
        self.rss_mb: dict[str, float] = {}
        self.rss_breakdown: dict[str, dict] = {}
        self.smoke_ok: dict[str, int] = {}
        self.rng = random.Random(knobs.seed)
        self.orders: list[dict] = []  # the order of each round's runs, as run
        self.grant_rates: dict[str, list[float]] = {}  # grants/s of each limited throughput run
        #: What the fast upstream served (key id, request id), for the usage check.
        self.served_log = workdir / "logs" / "upstream-served.log"
        #: The same for sse-upstream, the LLM stream rows' upstream.
        self.llm_served_log = workdir / "logs" / "llm-served.log"
        self.sse_upstream = None  # its Service, once started

    # -- processes ---------------------------------------------------------
    def envoy_env(self) -> dict:
        c = self.stack.config
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        return {**base, "TOLLGATE_JWT_SECRET": c.jwt_secret,
                "TOLLGATE_INTERNAL_TOKEN": c.internal_token}

    def add_envoy(self, name: str, make_config, module_dir=NATIVE_DIR) -> Envoy:
        port, admin = envoys.new_ports()
        env = {**self.envoy_env(), "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module_dir)}
        envoy = Envoy(name, make_config(port, admin), self.workdir, port, admin,
                      env, self.knobs.envoy_concurrency)
        envoy.validate()
        self.envoys[name] = envoy
        return envoy.start()

    def start(self) -> None:
        log("starting sidecar (MariaDB) and ai-server")
        self.stack.start_sidecar()
        # The ai-server's access log names what it served, for the usage check.
        self.stack.ai_server.env["GUNICORN_CMD_ARGS"] = (
            "--access-logformat " + shlex.quote(ledger.AI_SERVER_SERVED_FORMAT))
        self.stack.start_ai_server()
        c = self.stack.config
        sidecar_addr = f"127.0.0.1:{c.sidecar_port}"
        ai_addr = f"127.0.0.1:{c.ai_server_port}"
        keys = {name: self.stack.create_key(f"bench-{name}")
                for name in ("gate_cached", "gate_64k", "gate_cold", "gate_ai_server", "native",
                             "gate_native", "gate_native_64k", "gate_native_ai_server",
                             "gate_llm_stream", "gate_native_llm_stream")}
        # Limited keys far from their limits: the cost of charging a budget.
        for name in ("gate_limited", "gate_limited_no_header"):
            keys[name] = self.stack.create_key(f"bench-{name}", *LIMITED_KEY)
        for name in LLM_LIMITED_PAIRS:
            keys[name] = self.stack.create_key(f"bench-{name}", *LLM_LIMITED_KEY)

        log("starting the fast upstream and the gateways (configs validated first)")
        upstream = self.add_envoy("upstream", lambda port, admin: envoys.upstream_config(
            port, admin, self.served_log))
        up_addr = f"127.0.0.1:{upstream.port}"
        only = self.knobs.scenarios
        llm_addr = self.start_sse_upstream() if any(
            only is None or n in only for n in LLM_STREAM_ROWS) else None

        def gw(kind, upstream_addr, overrides=None, native=None, wasm=envoys.WASM, root_id=None,
               build="wasm", module=None):
            return lambda port, admin: envoys.gateway_config(
                kind, self.workdir, upstream_addr, sidecar_addr, port, admin,
                filter_overrides=overrides, native=native, wasm=wasm, root_id=root_id,
                build=build, module=module, llm_upstream_addr=llm_addr)

        bare = self.add_envoy("bare", gw("bare", up_addr))
        gate = self.add_envoy("gate", gw("gate", up_addr))
        cold = self.add_envoy("gate_cold", gw("gate", up_addr, {
            "key_cache": {"positive_ttl_s": 0, "negative_ttl_s": 0}}))
        native = self.add_envoy("native", gw("native", up_addr,
                                             native=(keys["native"]["key"], c.jwt_secret)))
        gate_ai = self.add_envoy("gate_ai", gw("gate", ai_addr))
        gate_native_ai = self.add_envoy("gate_native_ai", gw("gate", ai_addr, build="native"))
        bare_ai = self.add_envoy("bare_ai", gw("bare", ai_addr))
        noop = self.add_envoy("wasm_noop", gw("gate", up_addr, wasm=envoys.PROBE_WASM,
                                              root_id="noop"))
        mimic = self.add_envoy("wasm_mimic", gw("gate", up_addr, wasm=envoys.PROBE_WASM,
                                                root_id="mimic"))
        floor = self.add_envoy("wasm_floor", gw("gate", up_addr, wasm=envoys.PROBE_WASM,
                                                root_id="floor"))
        gate_native = self.add_envoy("gate_native", gw("gate", up_addr, build="native"))
        quiet = self.add_envoy("gate_limited_no_header", gw("gate", up_addr, {
            "limits": {"ratelimit_headers": False}}))
        module_noop = self.add_envoy(
            "native_module_noop", gw("gate", up_addr, build="native", module=envoys.NATIVE_PROBE),
            module_dir=envoys.NATIVE_PROBE_DIR)

        k = self.knobs
        small, large = json_body(1024), json_body(64 * 1024)
        (self.workdir / "body-1k.json").write_bytes(small)
        (self.workdir / "body-64k.json").write_bytes(large)
        b1, b64 = self.workdir / "body-1k.json", self.workdir / "body-64k.json"
        llm_body = self.workdir / "body-llm-stream.json"
        llm_body.write_bytes(llm_stream.BODY)
        chat, stream_body = llm_stream.PATH, llm_stream.BODY
        rows = [
            Scenario("bare", bare.url + ANALYZE, b1, small, bare, keys["gate_cached"], False, k.rate),
            Scenario("gate_cached", gate.url + ANALYZE, b1, small, gate, keys["gate_cached"], True, k.rate),
            Scenario("native", native.url + ANALYZE, b1, small, native, keys["native"], False, k.rate),
            Scenario("wasm_noop", noop.url + ANALYZE, b1, small, noop, keys["gate_cached"], False,
                     k.rate),
            Scenario("wasm_mimic", mimic.url + ANALYZE, b1, small, mimic, keys["gate_cached"],
                     False, k.rate),
            Scenario("wasm_floor", floor.url + ANALYZE, b1, small, floor, keys["gate_cached"],
                     False, k.rate),
            Scenario("gate_cold", cold.url + ANALYZE, b1, small, cold, keys["gate_cold"], True, k.rate),
            Scenario("gate_limited", gate.url + ANALYZE, b1, small, gate, keys["gate_limited"],
                     True, k.rate),
            Scenario("gate_limited_no_header", quiet.url + ANALYZE, b1, small, quiet,
                     keys["gate_limited_no_header"], True, k.rate),
            Scenario("bare_64k", bare.url + ANALYZE, b64, large, bare, keys["gate_64k"], False, k.rate),
            Scenario("gate_64k", gate.url + ANALYZE, b64, large, gate, keys["gate_64k"], True, k.rate),
            Scenario("native_module_noop", module_noop.url + ANALYZE, b1, small, module_noop,
                     keys["gate_cached"], False, k.rate),
            Scenario("gate_native", gate_native.url + ANALYZE, b1, small, gate_native,
                     keys["gate_native"], True, k.rate),
            Scenario("gate_native_64k", gate_native.url + ANALYZE, b64, large, gate_native,
                     keys["gate_native_64k"], True, k.rate),
            Scenario("ai_server_direct", self.stack.ai_server_url + "/analyze", b1, small, None,
                     keys["gate_ai_server"], False, k.ai_rate),
            Scenario("bare_ai_server", bare_ai.url + ANALYZE, b1, small, bare_ai,
                     keys["gate_ai_server"], False, k.ai_rate),
            Scenario("gate_ai_server", gate_ai.url + ANALYZE, b1, small, gate_ai,
                     keys["gate_ai_server"], True, k.ai_rate),
            Scenario("gate_native_ai_server", gate_native_ai.url + ANALYZE, b1, small,
                     gate_native_ai, keys["gate_native_ai_server"], True, k.ai_rate),
            Scenario("bare_llm_stream", bare.url + chat, llm_body, stream_body, bare,
                     keys["gate_llm_stream"], False, k.rate, llm=True),
            Scenario("gate_llm_stream", gate.url + chat, llm_body, stream_body, gate,
                     keys["gate_llm_stream"], True, k.rate, llm=True),
            Scenario("native_llm_stream", native.url + chat, llm_body, stream_body, native,
                     keys["native"], False, k.rate, llm=True),
            Scenario("gate_native_llm_stream", gate_native.url + chat, llm_body, stream_body,
                     gate_native, keys["gate_native_llm_stream"], True, k.rate, llm=True),
            Scenario("gate_llm_limited", gate.url + chat, llm_body, stream_body, gate,
                     keys["gate_llm_limited"], True, k.rate, llm=True),
            Scenario("gate_native_llm_limited", gate_native.url + chat, llm_body, stream_body,
                     gate_native, keys["gate_native_llm_limited"], True, k.rate, llm=True),
        ]
        self.scenarios = {s.name: s for s in rows
                          if k.scenarios is None or s.name in k.scenarios}

    def start_sse_upstream(self) -> str:
        """Records llm-upstream's streamed answer, then starts sse-upstream
        replaying it; returns its address (llm-upstream is stopped again)."""
        self.stack.start_llm_upstream()
        try:
            events = self.workdir / "llm-stream-answer.sse"
            llm_stream.record_answer(self.stack.llm_upstream_url, events)
        finally:
            self.stack.llm_upstream.stop()
        self.sse_upstream, port = llm_stream.responder(self.workdir, events, self.llm_served_log)
        self.sse_upstream.start()
        llm_stream.wait_listening(port)
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        for envoy in self.envoys.values():
            envoy.stop()
        if self.sse_upstream is not None:
            self.sse_upstream.stop()
        self.stack.stop()

    # -- runs --------------------------------------------------------------
    def request(self, s: Scenario) -> loadgen.Request:
        """Headers for one run of ``s``, with a token minted now (valid 300 s)."""
        headers = {"Content-Type": "application/json"}
        if s.key is not None:
            headers["Authorization"] = f"Bearer {s.key['key']}"
            headers["X-Auth-Token"] = mint_token(self.stack.config.jwt_secret, s.body, ttl=300)
        return loadgen.Request(s.url, s.body_path, headers)

    def smoke(self, s: Scenario) -> None:
        """One request with a full answer, so a broken scenario fails with its reason."""
        import requests

        req = self.request(s)
        resp = requests.post(req.url, data=s.body, headers=req.headers, timeout=10)
        if resp.status_code != 200:
            raise StackError(f"{s.name}: smoke request answered {resp.status_code}: "
                             f"{resp.text[:300]}")
        s.ok_total += 1

    def watch(self, s: Scenario) -> dict[str, int]:
        """Processes whose CPU per request a run of ``s`` reports."""
        pids = {}
        if s.gateway is not None and s.gateway.service.proc is not None:
            pids["gateway"] = s.gateway.service.proc.pid
        upstream = self.envoys.get("upstream")
        if s.llm:
            if self.sse_upstream is not None and self.sse_upstream.proc is not None:
                pids["upstream"] = self.sse_upstream.proc.pid
        elif upstream is not None and upstream.service.proc is not None \
                and s.gateway is not None and s.name not in AI_SERVER_GATES:
            pids["upstream"] = upstream.service.proc.pid
        if s.metered and self.stack.sidecar.proc is not None:
            pids["sidecar"] = self.stack.sidecar.proc.pid
        if s.metered and self.database_pid is not None:
            pids["database"] = self.database_pid
        return pids

    def one_run(self, s: Scenario, kind: str, seconds: float, record: bool) -> None:
        k = self.knobs
        grants_before = self.grants(s)
        try:
            settle = (lambda ok: self.settle(s, s.ok_total + ok)) if s.metered else None
            result = loadgen.run(self.request(s), kind, seconds, connections=k.connections,
                                 rate=s.rate if kind == "latency" else None, watch=self.watch(s),
                                 settle=settle)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
            self.failures.append(f"{s.name} {kind}: {err}")
            log(f"{s.name:<17} {kind:<10} FAILED: {err}")
            if record:
                self.runs.setdefault(s.name, {}).setdefault(kind, []).append(None)
            return
        self.record(s, kind, result, record)
        if record and grants_before is not None and kind == "throughput" and seconds > 0:
            per_s = (self.grants(s) - grants_before) / seconds
            self.grant_rates.setdefault(s.name, []).append(round(per_s, 2))

    def record(self, s: Scenario, kind: str, result: loadgen.RunResult, record: bool) -> None:
        """Counts, keeps (``record``) and logs one run's result."""
        s.ok_total += result.ok
        if result.errors:
            self.failures.append(f"{s.name} {kind}: {result.errors} errors {result.error_detail}")
        if record:
            self.runs.setdefault(s.name, {}).setdefault(kind, []).append(result.as_dict())
        log(f"{s.name:<17} {'warm-up' if not record else kind:<10} rps {result.rps:9.0f}  "
            f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  errors {result.errors}  "
            f"cpu us/req {result.cpu_us_per_req}"
            + (f"  settled {result.settle_s:.2f} s" if s.metered else ""))

    def ttfb_run(self, rows: list[Scenario]) -> None:
        """The LLM stream rows' latency run: their time to first byte, in one
        interleaved run (bench/llm_stream.py); then their usage settles."""
        targets = []
        for s in rows:
            req = self.request(s)
            targets.append(llm_stream.TtfbTarget(s.name, req.url, req.headers, s.body,
                                                 self.watch(s)))
        try:
            results = llm_stream.ttfb_interleaved(targets, self.knobs.ttfb_streams, self.rng)
        except OSError as err:
            self.failures.append(f"{', '.join(s.name for s in rows)} ttfb: {err}")
            log(f"ttfb FAILED: {err}")
            for s in rows:  # keeps the rounds of every row aligned
                self.runs.setdefault(s.name, {}).setdefault("latency", []).append(None)
            return
        for s in rows:
            self.record(s, "latency", results[s.name], record=True)
        for s in rows:
            if s.metered:
                self.settle(s, s.ok_total)

    def grants(self, s: Scenario) -> int | None:
        """Grants the sidecar gave ``s``'s key so far (limited keys only)."""
        if not (s.name.startswith("gate_limited") or s.name in LLM_LIMITED_PAIRS):
            return None
        return ledger.grant_count(self.stack.database_url, GATE_DATABASE, int(s.key["id"]))

    def buffered(self, envoy: Envoy) -> int:
        """Usage records ``envoy``'s filter holds that the sidecar has not acknowledged."""
        return int(sum(v or 0 for prefix in METRIC_PREFIXES.values()
                       for v in envoy.stats(f"{prefix}{USAGE_BUFFERED_GAUGE}").values()))

    def settle(self, s: Scenario, ok_total: int) -> None:
        """Returns once every usage record of ``s``'s requests is in the ledger.

        The filter flushes on a timer, so the last records of a run reach the
        sidecar after the load; waiting here charges that work to the run
        that caused it. The gauge counts records not yet acknowledged; the
        ledger's count for the scenario's key confirms they landed (a record
        is buffered only once its request has been logged, which may come
        just after the client had its answer).
        """
        key_id = int(s.key["id"])
        deadline = time.monotonic() + self.stack.usage_flush_bound_s + 5.0
        while time.monotonic() < deadline:
            if self.buffered(s.gateway) == 0:
                rows = ledger.ok_rows(self.stack.database_url, GATE_DATABASE, [key_id])
                if rows.get(key_id, 0) >= ok_total:
                    return
            time.sleep(0.1)
        log(f"{s.name}: usage not settled after {self.stack.usage_flush_bound_s + 5.0:.0f} s "
            "(the next run's CPU window holds the rest)")

    def measure(self) -> None:
        k = self.knobs
        # The table lists the scenarios in their own order, not the first round's.
        self.runs = {s.name: {} for s in self.scenarios.values()}
        for s in self.scenarios.values():
            self.smoke(s)
            if k.warmup_s > 0:
                self.one_run(s, "throughput", k.warmup_s, record=False)
        for round_no in range(1, k.rounds + 1):
            for kind in ("throughput", "latency"):
                order = list(self.scenarios.values())
                self.rng.shuffle(order)
                self.orders.append({"round": round_no, "kind": kind,
                                    "order": [s.name for s in order]})
                log(f"round {round_no}/{k.rounds} {kind} (seed {k.seed}): "
                    + ", ".join(s.name for s in order))
                # The LLM stream rows' latency runs are one interleaved run, at
                # the place of the first of them.
                ttfb = [s for s in order if s.llm] if kind == "latency" else []
                for s in order:
                    if s.llm and kind == "latency":
                        if s is ttfb[0]:
                            self.ttfb_run(ttfb)
                        continue
                    self.one_run(s, kind, k.duration_s, record=True)
                    if s.name == "gate_cached" and kind == "throughput":
                        self.read_rss()

    def read_rss(self) -> None:
        """Envoy's RSS with and without the filter (same config otherwise), now."""
        names = [n for n in ("gate", "bare", "wasm_noop", "native", "gate_native",
                             "native_module_noop") if n in self.envoys]
        self.rss_mb = {n: round(self.envoys[n].rss_mb(), 1) for n in names}
        self.rss_breakdown = {n: self.envoys[n].rss_breakdown_mb() for n in names}

    # -- usage -------------------------------------------------------------
    def check_usage(self, timeout: float = 60.0) -> tuple[int, int, list[ledger.KeyLedger]]:
        """(expected, found) usage rows and each metered scenario's check, once
        the filters' buffers have drained. Stops the fast upstream (Envoy
        writes the rest of its access log as it exits)."""
        metered = [s for s in self.scenarios.values() if s.metered]
        expected = sum(s.ok_total for s in metered)
        ids = [int(s.key["id"]) for s in metered]
        gates = [e for n, e in self.envoys.items() if n.startswith("gate")]
        deadline = time.monotonic() + timeout
        found, last_change, last = 0, time.monotonic(), -1
        rows: dict[int, int] = {}
        while time.monotonic() < deadline:
            buffered = sum(self.buffered(e) for e in gates)
            rows = ledger.ok_rows(self.stack.database_url, GATE_DATABASE, ids)
            found = sum(rows.values())
            if found != last:
                last, last_change = found, time.monotonic()
            if found >= expected and buffered == 0:
                break
            if buffered == 0 and time.monotonic() - last_change > 5:
                break  # drained, and nothing more arrives
            time.sleep(0.5)
        log(f"usage_log: {found} rows for {expected} successful gated requests")
        self.envoys["upstream"].stop()
        served = ledger.served_ids(self.served_log)
        if self.sse_upstream is not None:
            self.sse_upstream.stop()  # it writes its log as it exits
            for key_id, request_ids in ledger.served_ids(self.llm_served_log).items():
                served.setdefault(key_id, set()).update(request_ids)
        if self.stack.ai_server.log.exists():
            for key_id, request_ids in ledger.served_ids(
                    self.stack.ai_server.log, ledger.AI_SERVER_SERVED_MARKER).items():
                served.setdefault(key_id, set()).update(request_ids)
        allowed = ledger.allowed_ids(self.stack.database_url, GATE_DATABASE, ids)
        checks = [ledger.compare(s.name, s.ok_total, rows.get(int(s.key["id"]), 0),
                                 served.get(int(s.key["id"]), set()), allowed[int(s.key["id"])])
                  for s in metered]
        for check in checks:
            log(f"usage ledger {'exact' if check.exact else 'NOT EXACT'}: {check.describe()}")
        return expected, found, checks

    def give_back(self) -> dict[str, dict]:
        """Per token-quota LLM row measured: how much of each stream's
        reservation its settlement gave back, from its key's allowed 2xx
        ledger rows (once they have landed: after ``check_usage``).

        A stream reserved its token bound, its body's bytes plus the body's
        output cap (``llm_stream.BODY`` sets one, so the filter's default cap
        plays no part); it used the row's input plus output tokens.
        ``give_back`` is (reserved - used) / reserved averaged over the rows.
        """
        cap = int(json.loads(llm_stream.BODY)["max_completion_tokens"])
        out = {}
        for name in LLM_LIMITED_PAIRS:
            s = self.scenarios.get(name)
            if s is None:
                continue
            row = ledger.query(
                self.stack.database_url, GATE_DATABASE,
                "SELECT COUNT(*) AS rows_n, AVG(request_bytes + %s) AS reserved, "
                "AVG(input_tokens + output_tokens) AS used, "
                "AVG((request_bytes + %s - input_tokens - output_tokens)"
                " / (1e0 * (request_bytes + %s))) AS give_back, "
                "MIN((request_bytes + %s - input_tokens - output_tokens)"
                " / (1e0 * (request_bytes + %s))) AS give_back_min, "
                "MAX((request_bytes + %s - input_tokens - output_tokens)"
                " / (1e0 * (request_bytes + %s))) AS give_back_max, "
                "SUM(usage_source <> 'reported') AS not_reported "
                "FROM usage_log WHERE api_key_id = %s AND outcome = 'allowed' "
                "AND status_code BETWEEN 200 AND 299",
                (cap,) * 7 + (int(s.key["id"]),))[0]
            out[name] = {
                "rows": int(row["rows_n"]),
                "output_cap": cap,
                "reserved_avg": None if row["reserved"] is None else float(row["reserved"]),
                "used_avg": None if row["used"] is None else float(row["used"]),
                "give_back": row["give_back"],
                "give_back_min": row["give_back_min"],
                "give_back_max": row["give_back_max"],
                "rows_without_reported_usage": int(row["not_reported"] or 0),
            }
            g = out[name]
            log(f"{name}: {g['rows']} ledger rows, reserved {g['reserved_avg']} tokens "
                f"({cap} of them the output cap), used {g['used_avg']} on average; "
                f"given back {g['give_back']} of each reservation on average "
                f"(min {g['give_back_min']}, max {g['give_back_max']}; "
                f"{g['rows_without_reported_usage']} rows without reported usage)")
        return out

    def filter_stats(self) -> dict:
        """The filter's own counters on each gate Envoy (cache hits, usage sent ...)."""
        return {name: {k.removeprefix(prefix): v
                       for prefix in METRIC_PREFIXES.values()
                       for k, v in e.stats(prefix).items() if v}
                for name, e in self.envoys.items() if name.startswith("gate")}


def run_sidecar_bench(knobs: Knobs, workdir: Path) -> tuple[dict, str | None]:
    """Ingestion (and key verification) rows/s from ``sidecar-bench``."""
    out = workdir / "results-sidecar.json"
    argv = [str(SIDECAR_BENCH), "--seconds", str(knobs.ingest_seconds), "--batch", "500",
            "--mysql", knobs.mysql_url, "--out", str(out)]
    log("sidecar ingestion: " + " ".join(argv[1:]))
    # The summary phase fills a 10M-row ledger and rolls it up: minutes.
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        return {}, f"sidecar-bench failed: {done.stderr[-2000:]}"
    return json.loads(out.read_text()), None


def llm_limited_figures(runs: dict, grant_rates: dict[str, list[float]],
                        give_back: dict[str, dict]) -> dict:
    """Per token-quota LLM row: streams/s against its pair's (median of the
    per-round ratios), time to first byte added to its pair's (median of
    the per-round p50 differences), Envoy's CPU µs per stream added (the
    same, from the throughput runs), the highest grants/s of its throughput
    runs, and the average share of a reservation given back."""
    out = {}
    for name, pair in LLM_LIMITED_PAIRS.items():
        mine, theirs = runs.get(name, {}), runs.get(pair, {})
        out[f"{name}_vs_{pair}_rps"] = report.paired(
            theirs.get("throughput", []), mine.get("throughput", []), "rps", "ratio")
        out[f"{name}_ttfb_added_ms"] = report.paired(
            theirs.get("latency", []), mine.get("latency", []), "p50_ms", "added")
        out[f"{name}_cpu_added_us"] = report.paired(
            report.cpu_of(theirs.get("throughput", [])),
            report.cpu_of(mine.get("throughput", [])), "cpu", "added")
        out[f"{name}_grants_per_s"] = max(grant_rates[name]) if grant_rates.get(name) else None
        out[f"{name}_give_back"] = give_back.get(name, {}).get("give_back")
    return out


def llm_limited_targets(ratios: dict) -> dict:
    """The token-quota rows' targets, in the shape of ``report.targets``."""
    out = {}
    for name, (op, bound) in LLM_LIMITED_TARGETS.items():
        value = ratios.get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[name] = {"target": f"{op} {bound}", "value": value, "met": met}
    return out


def main() -> int:
    knobs = Knobs.from_env()
    started = time.monotonic()
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    log(f"work directory {workdir}; knobs {dataclasses.asdict(knobs)}")
    bench = Bench(knobs, workdir)
    failures: list[str] = []
    expected = found = None
    checks: list[ledger.KeyLedger] = []
    filter_stats: dict = {}
    give_back: dict[str, dict] = {}
    try:
        bench.start()
        bench.measure()
        if any(s.metered for s in bench.scenarios.values()):
            expected, found, checks = bench.check_usage()
            give_back = bench.give_back()
        filter_stats = bench.filter_stats()
    except Exception as err:  # noqa: BLE001  (report, then exit non-zero)
        traceback.print_exc()
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        bench.stop()
    failures = bench.failures + failures
    wrong = [c for c in checks if not c.exact]
    if wrong:
        failures.append("usage ledger not exact: " + "; ".join(c.describe() for c in wrong))

    sidecar: dict = {}
    if not knobs.scenarios or "ingest" in knobs.scenarios:
        sidecar, error = run_sidecar_bench(knobs, workdir)
        if error:
            failures.append(error)
    ingest = {row["backend"]: row["rows_per_sec"] for row in sidecar.get("ingest", [])}
    runs = {name: {kind: [r for r in rs if r is not None] for kind, rs in kinds.items()}
            for name, kinds in bench.runs.items()}
    summary = sidecar.get("summary") or {}
    extra = {
        "summary_10m_rows_p50_ms": (summary["queries"][0]["p50_ms"]
                                    if summary.get("queries") else None),
        "summary_vs_detail_scan": (round(summary["detail_scan_ms"]
                                         / summary["queries"][0]["p50_ms"], 1)
                                   if summary.get("queries") else None),
        "ingest_mysql_10m_ledger_rows_per_s": (summary["ingest"]["rows_per_sec"]
                                               if summary.get("ingest") else None),
        "ingest_mysql_rows_per_s": ingest.get("mysql"),
        "ingest_sqlite_rows_per_s": ingest.get("sqlite"),
        "envoy_rss_added_mb": (round(bench.rss_mb["gate"] - bench.rss_mb["bare"], 1)
                               if {"gate", "bare"} <= bench.rss_mb.keys() else None),
        "wasm_noop_rss_added_mb": (round(bench.rss_mb["wasm_noop"] - bench.rss_mb["bare"], 1)
                                   if {"wasm_noop", "bare"} <= bench.rss_mb.keys() else None),
        "gate_native_rss_added_mb": (
            round(bench.rss_mb["gate_native"] - bench.rss_mb["bare"], 1)
            if {"gate_native", "bare"} <= bench.rss_mb.keys() else None),
        "native_module_noop_rss_added_mb": (
            round(bench.rss_mb["native_module_noop"] - bench.rss_mb["bare"], 1)
            if {"native_module_noop", "bare"} <= bench.rss_mb.keys() else None),
        "gate_limited_grants_per_s": (max(bench.grant_rates["gate_limited"])
                                      if bench.grant_rates.get("gate_limited") else None),
        **llm_limited_figures(runs, bench.grant_rates, give_back),
        "usage_rows_expected": expected,
        "usage_rows_found": found,
    }
    ratios = report.ratios(runs, extra)
    limited_targets = llm_limited_targets(ratios)
    for name, t in limited_targets.items():
        log(f"{name} = {t['value']} (target {t['target']}: "
            f"{ {True: 'met', False: 'MISSED', None: 'not measured'}[t['met']]})")
    results = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {"cores": os.cpu_count(), "loadavg_before": loadavg,
                    "loadavg_after": " ".join(Path("/proc/loadavg").read_text().split()[:3])},
        "knobs": {**dataclasses.asdict(knobs), "mysql_url": None},
        "scenarios": report.summarise(runs),
        "ratios": ratios,
        "targets": {**report.targets(ratios), **limited_targets},
        "llm_limited_give_back": give_back,
        "rss_mb": bench.rss_mb,
        "rss_breakdown_mb": bench.rss_breakdown,
        "filter_stats": filter_stats,
        "usage_ledger": [{**dataclasses.asdict(c), "exact": c.exact} for c in checks],
        "orders": bench.orders,
        "sidecar": sidecar,
        "failures": failures,
        "runs": runs,
    }
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report.markdown(results)
    (ROOT / "bench/results.md").write_text(table)
    print()
    print(table)
    log(f"wrote bench/results.json and bench/results.md in {results['elapsed_s']} s")
    if failures:
        print("bench: errors:\n  " + "\n  ".join(failures), file=sys.stderr)
        print(f"bench: logs kept in {workdir}/logs", file=sys.stderr)
        return 1
    if not knobs.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
