"""`make soak`: the stack under a steady load for a set time, on SQLite and on
MariaDB, watching the memory of Envoy and the sidecar and checking the usage
ledger exactly.

For each backend it starts a stack (tollgate_tooling.stack), sends
``SOAK_RATE`` requests/s (default 200) for ``SOAK_SECONDS`` (default 180) from
``SOAK_CLIENTS`` threads on fixed schedule slots (a late answer does not slow
the schedule), and samples the resident memory (VmRSS) of Envoy and of the
sidecar every ``SOAK_SAMPLE_S`` seconds. Then it

* compares the request ids of the 2xx answers with the ``allowed`` rows of
  ``usage_log``: the two sets must be equal (nothing missing, nothing extra);
* fits a line to each process's memory over the second half of the run and
  reports its growth per minute; the run fails when a process grows faster
  than ``SOAK_MAX_GROWTH_KIB_PER_MIN`` (default 2048) there, or when the
  sidecar's memory ends above ``SOAK_SIDECAR_MAX_MIB`` (default 48, the
  bound docs/GUARANTEES.md states). A leak such as a statement cache filling with
  one statement per batch size grew the sidecar by 13 MiB a minute; SQLite's
  page caches, bounded at 8 MiB in all, filled at 850 KiB a minute in the
  second half of a 180 s run at 200/s, and stop when full.

Prints a table and exits non-zero on any failure. MariaDB comes from
``TOLLGATE_TEST_MYSQL_URL`` (``make soak`` starts a throwaway server when
none answers, as ``make test`` does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import jwt

from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling.gateway import Ledger, mysql_connect
from tollgate_tooling.stack import Stack, StackConfig

BODY = b'{"text": "a steady stream of small requests, for hours"}'


def knob(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclasses.dataclass
class Knobs:
    rate: float = knob("SOAK_RATE", 200)
    seconds: float = knob("SOAK_SECONDS", 180)
    clients: int = int(knob("SOAK_CLIENTS", 16))
    sample_s: float = knob("SOAK_SAMPLE_S", 2)
    max_growth_kib_per_min: float = knob("SOAK_MAX_GROWTH_KIB_PER_MIN", 2048)
    sidecar_max_mib: float = knob("SOAK_SIDECAR_MAX_MIB", 48)


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mariadb_pid() -> int | None:
    """The MariaDB server's pid (the stack's database runs on this machine)."""
    return next((pid for pid, comm, _, _ in processes() if comm in ("mariadbd", "mysqld")),
                None)


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def processes():
    """(pid, command name, process group, the fields after the name) of
    every live process, from /proc/<pid>/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        yield int(entry.name), stat[stat.index("(") + 1:stat.rindex(")")], int(fields[2]), fields


def group_process(leader: int, name: str) -> int:
    """The pid of the process called ``name`` in ``leader``'s process group
    (Envoy runs under a Python wrapper)."""
    for pid, comm, pgid, _ in processes():
        if pgid == leader and comm == name:
            return pid
    raise RuntimeError(f"no {name} process in group {leader}")


def group_cpu_s(leader: int) -> float:
    """User plus system CPU seconds of the live processes in ``leader``'s
    process group (each service of the stack runs in its own session)."""
    ticks = sum(int(f[11]) + int(f[12]) for _, _, pgid, f in processes() if pgid == leader)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def cpu_report(before: dict, after: dict, seconds: float, machine: tuple) -> tuple[str, str]:
    """Each process's share of one core over the run, and which one a missed
    rate points at: (the table line, the busiest process)."""
    shares = {name: (after[name] - before[name]) / seconds * 100 for name in before}
    busy = (machine[1][0] - machine[0][0]) / max(machine[1][1] - machine[0][1], 1e-9) * 100
    busiest = max(shares, key=shares.get)
    line = ("  cpu      " + ", ".join(f"{name} {share:.0f}%" for name, share in shares.items())
            + f" of one core; the {os.cpu_count()} cores {busy:.0f}% busy")
    return line, busiest


def slope_kib_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return cov / var * 60


@dataclasses.dataclass
class Load:
    """Requests sent on a fixed schedule, and the ids of the 2xx answers."""

    url: str
    key: str
    secret: str
    knobs: Knobs
    ok_ids: set = dataclasses.field(default_factory=set)
    statuses: dict = dataclasses.field(default_factory=dict)
    late: int = 0

    def run(self) -> None:
        total = int(self.knobs.rate * self.knobs.seconds)
        start = time.monotonic() + 0.5
        next_slot = iter(range(total))
        lock = threading.Lock()
        digest = hashlib.sha256(BODY).hexdigest()

        url = urllib.parse.urlsplit(self.url)
        tokens: dict[int, str] = {}

        def token_for(now: int) -> str:
            # One token a second, shared by the clients: minting one per
            # request cost the load generator more than the stack.
            token = tokens.get(now)
            if token is None:
                token = jwt.encode({"iat": now, "exp": now + 60, "body_sha256": digest},
                                   self.secret, algorithm="HS256")
                tokens.clear()
                tokens[now] = token
            return token

        def client() -> None:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            while True:
                with lock:
                    i = next(next_slot, None)
                if i is None:
                    conn.close()
                    return
                wait = start + i / self.knobs.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -1:
                    with lock:
                        self.late += 1
                with lock:
                    token = token_for(int(time.time()))
                try:
                    conn.request("POST", url.path, body=BODY, headers={
                        "Authorization": f"Bearer {self.key}", "X-Auth-Token": token,
                        "Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                    request_id = resp.getheader("x-request-id")
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
                    status, request_id = 0, None
                with lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if 200 <= status < 300 and request_id:
                        self.ok_ids.add(request_id)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(self.knobs.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def allowed_ids(stack: Stack, key_id: int, ledger: Ledger, expect: int, timeout: float) -> set:
    """The request ids of the key's ``allowed`` rows, once ``expect`` have
    landed or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger.query("SELECT request_id FROM usage_log WHERE api_key_id = ? "
                            "AND outcome = 'allowed'", [key_id])
        ids = {r["request_id"] for r in rows}
        if len(ids) >= expect or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def soak(backend: str, knobs: Knobs, workdir: Path) -> tuple[list[str], list[str]]:
    """One backend's run: (table lines, failures)."""
    state = workdir / backend
    database_url = None
    ledger = Ledger(sqlite_path=str(state / "tollgate.db"))
    if backend == "mariadb":
        server = os.environ.get("TOLLGATE_TEST_MYSQL_URL", "").rsplit("/", 1)[0]
        if not server:
            return [], ["TOLLGATE_TEST_MYSQL_URL is not set (make soak sets it)"]
        conn = mysql_connect(server)
        try:
            with conn.cursor() as cur:
                cur.execute("DROP DATABASE IF EXISTS tollgate_soak")
                cur.execute("CREATE DATABASE tollgate_soak")
        finally:
            conn.close()
        database_url = f"{server}/tollgate_soak"
        ledger = Ledger(mysql_url=database_url)
    stack = Stack(StackConfig.ephemeral(state, database_url=database_url))
    stack.start()
    failures: list[str] = []
    try:
        key = stack.create_key(f"soak-{backend}")
        pids = {"envoy": group_process(stack.envoy.proc.pid, "envoy"),
                "sidecar": stack.sidecar.proc.pid}
        samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        # Where the CPU goes, to say which process held a missed rate back.
        groups = {"loadgen": os.getpgrp(), "envoy": stack.envoy.proc.pid,
                  "sidecar": stack.sidecar.proc.pid, "ai-server": stack.ai_server.proc.pid}
        database = mariadb_pid() if backend == "mariadb" else None

        def cpu_now() -> dict:
            now = {name: group_cpu_s(leader) for name, leader in groups.items()}
            if database:
                now["database"] = process_cpu_s(database)
            return now

        load = Load(stack.gateway + "/proxy/analyze", key["key"], stack.config.jwt_secret, knobs)
        loader = threading.Thread(target=load.run)
        cpu_before, machine_before = cpu_now(), machine_busy_s()
        began = time.monotonic()
        loader.start()
        while loader.is_alive():
            elapsed = time.monotonic() - began
            for name, pid in pids.items():
                samples[name].append((elapsed, rss_kib(pid)))
            loader.join(knobs.sample_s)
        ran = time.monotonic() - began
        cpu_line, busiest = cpu_report(cpu_before, cpu_now(), ran,
                                       (machine_before, machine_busy_s()))
        landed = allowed_ids(stack, key["id"], ledger, len(load.ok_ids),
                             stack.usage_flush_bound_s + 30)
        missing = load.ok_ids - landed
        extra = landed - load.ok_ids
        sent = sum(load.statuses.values())
        lines = [f"{backend}: {sent} requests in {ran:.0f} s ({sent / ran:.0f}/s), "
                 f"statuses {dict(sorted(load.statuses.items()))}, "
                 f"{load.late} sent over 1 s late; ledger: {len(landed)} rows for "
                 f"{len(load.ok_ids)} 2xx, {len(missing)} missing, {len(extra)} extra",
                 cpu_line]
        if sent / ran < 0.97 * knobs.rate:
            lines.append(f"  the offered {knobs.rate:.0f}/s was not reached: {sent / ran:.0f}/s; "
                         f"the busiest process was {busiest} (see cpu above)")
        if missing or extra:
            failures.append(f"{backend}: the ledger is not exact ({len(missing)} missing, "
                            f"{len(extra)} extra)")
        if set(load.statuses) != {200}:
            failures.append(f"{backend}: not every request got 200: {load.statuses}")
        half = ran / 2
        for name, series in samples.items():
            second_half = [(t, m) for t, m in series if t >= half]
            growth = slope_kib_per_min(second_half)
            first, last = series[0][1], series[-1][1]
            peak = max(m for _, m in series)
            lines.append(f"  {name:8} rss {first / 1024:6.1f} -> {last / 1024:6.1f} MiB "
                         f"(peak {peak / 1024:.1f}); second half: {growth:+.0f} KiB/min")
            if growth > knobs.max_growth_kib_per_min:
                failures.append(f"{backend}: {name} still grows {growth:.0f} KiB/min in the "
                                f"second half (bound {knobs.max_growth_kib_per_min:.0f})")
            if name == "sidecar" and last / 1024 > knobs.sidecar_max_mib:
                failures.append(f"{backend}: the sidecar ends at {last / 1024:.1f} MiB "
                                f"(bound {knobs.sidecar_max_mib:.0f} MiB)")
        return lines, failures
    finally:
        stack.stop()


def main() -> int:
    knobs = Knobs()
    backends = os.environ.get("SOAK_BACKENDS", "sqlite mariadb").split()
    print(f"soak: {knobs.rate:.0f} requests/s for {knobs.seconds:.0f} s per backend "
          f"({', '.join(backends)}), memory sampled every {knobs.sample_s:.0f} s", flush=True)
    report: list[str] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-soak-") as tmp:
        for backend in backends:
            lines, failed = soak(backend, knobs, Path(tmp))
            report += lines
            failures += failed
            print("\n".join(lines), flush=True)
    for failure in failures:
        print(f"FAIL {failure}")
    print("soak: ok" if not failures else f"soak: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
