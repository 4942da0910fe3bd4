"""Load runs with oha, and the CPU each process spent on them.

Two kinds of run, because a closed loop at saturation measures queueing,
not the gateway:

* ``throughput``: 16 connections, each sends its next request when the last
  one answered, as fast as it goes; reports requests/s;
* ``latency``: a fixed offered rate (open loop, ``-q RATE
  --latency-correction``, so a stalled request is charged the wait of the
  ones scheduled behind it), the same rate for every scenario; reports
  p50/p99.

oha waits for requests in flight at the deadline (``-w``), so its count of
2xx answers is exactly the number of requests the gateway let through: the
usage check compares that count with the rows in ``usage_log``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def oha_path() -> str:
    """The oha binary: PATH, else ~/.cargo/bin (where ``cargo install`` puts it)."""
    found = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")
    if not Path(found).exists():
        raise FileNotFoundError("oha is not installed: cargo install oha --locked")
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14, stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (from /proc/stat).

    Busy is all but idle and iowait: user (guests included), nice, system,
    irq, softirq and steal.
    """
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


#: The ``cpu_us_per_req`` entry for the whole machine: every process on the
#: shared cores (oha, Envoys, sidecar, database, anything else) per request.
MACHINE = "machine"


@dataclasses.dataclass
class Request:
    """What every request of a run sends."""

    url: str
    body_path: Path
    headers: dict


@dataclasses.dataclass
class RunResult:
    """One oha run, reduced to what the report needs."""

    kind: str
    seconds: float
    requests: int
    ok: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    error_detail: dict
    cpu_us_per_req: dict
    settle_s: float  # after the load, until the run's last usage records were acknowledged

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _percentile(data: dict, name: str) -> float:
    table = data.get("latencyPercentiles") or {}
    value = table.get(name)
    return float(value) * 1000.0 if value is not None else float("nan")


def run(req: Request, kind: str, seconds: float, connections: int = 16,
        rate: int | None = None, watch: dict[str, int] | None = None,
        settle: Callable[[int], None] | None = None) -> RunResult:
    """One oha run of ``kind`` (throughput or latency) for ``seconds``.

    ``watch`` names processes (name -> pid) whose CPU time per request this
    run reports: the cost of a scenario in each part of the system; the
    machine's busy time per request is reported too, as ``MACHINE``.
    ``settle``, called with the run's 2xx count once the load has ended,
    returns when the work those requests left behind is done (a metered
    run's last usage flush); the CPU window closes after it, so that work
    is charged to this run and not the next, while requests/s stays the
    load's own.
    """
    argv = [oha_path(), "--no-tui", "--output-format", "json", "-w",
            "-z", f"{seconds}s", "-c", str(connections), "-m", "POST",
            "-D", str(req.body_path)]
    for name, value in req.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if kind == "latency":
        if not rate:
            raise ValueError("a latency run needs a rate")
        argv += ["-q", str(rate), "--latency-correction"]
    argv.append(req.url)
    watch = watch or {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    cpu_before[MACHINE] = machine_busy_seconds()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"oha failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    codes = {str(k): int(v) for k, v in (data.get("statusCodeDistribution") or {}).items()}
    socket_errors = {str(k): int(v) for k, v in (data.get("errorDistribution") or {}).items()}
    ok = sum(n for code, n in codes.items() if code.startswith("2"))
    if settle is not None:
        settle(ok)
    settle_s = time.monotonic() - started - elapsed
    cpu_after = {name: cpu_seconds(pid) for name, pid in watch.items()}
    cpu_after[MACHINE] = machine_busy_seconds()
    failed_status = {code: n for code, n in codes.items() if not code.startswith("2")}
    requests = sum(codes.values()) + sum(socket_errors.values())
    summary = data.get("summary") or {}
    cpu = {
        name: round((cpu_after[name] - cpu_before[name]) * 1e6 / ok, 1) if ok else None
        for name in cpu_before
    }
    return RunResult(
        kind=kind,
        seconds=round(elapsed, 2),
        requests=requests,
        ok=ok,
        errors=requests - ok,
        rps=float(summary.get("requestsPerSec") or 0.0),
        p50_ms=_percentile(data, "p50"),
        p99_ms=_percentile(data, "p99"),
        error_detail={**failed_status, **socket_errors},
        cpu_us_per_req=cpu,
        settle_s=round(settle_s, 2),
    )
