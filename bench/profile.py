"""Where a gateway's CPU goes: `perf` profiles of Envoy under load, per scenario.

Starts the benchmark's processes (bench/gateway_bench.py's ``Bench``), then
for each scenario named on the command line drives the throughput load with
oha while ``perf record`` samples the scenario's Envoy process, and prints
the profile by shared object (Envoy's binary is stripped and V8's JIT code
has no symbols, so the useful split is: the Envoy binary, JIT-compiled
code (the wasm module, shown as ``[unknown]``/``[JIT]``), the kernel, libc).
It also prints the CPU µs per request of the Envoy process and how often
the filter crossed into and out of the VM, from Envoy's stats.

Usage (perf must be installed: apt-get install -y linux-perf):
  .venv/bin/python bench/profile.py bare gate_cached wasm_noop native
  PROFILE_SECONDS=8 .venv/bin/python bench/profile.py gate_64k
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# bench/'s own modules, beside this script.
import gateway_bench
import loadgen


def profile(bench: gateway_bench.Bench, name: str, seconds: float, outdir: Path) -> None:
    s = bench.scenarios[name]
    if s.gateway is None or s.gateway.service.proc is None:
        print(f"{name}: no Envoy to profile")
        return
    pid = s.gateway.service.proc.pid
    data = outdir / f"perf-{name}.data"
    result: dict = {}

    def load():
        result["run"] = loadgen.run(bench.request(s), "throughput", seconds,
                                    connections=bench.knobs.connections, watch={"envoy": pid})

    thread = threading.Thread(target=load)
    thread.start()
    subprocess.run(["perf", "record", "-q", "-F", "999", "-o", str(data), "-p", str(pid),
                    "--", "sleep", str(max(1.0, seconds - 1.0))],
                   capture_output=True, check=False)
    thread.join()
    run = result.get("run")
    print(f"\n== {name}: {run.rps:.0f} req/s, Envoy CPU {run.cpu_us_per_req['envoy']} µs/req, "
          f"errors {run.errors}")
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso",
                             "--percent-limit", "1"], capture_output=True, text=True)
    print("\n".join(line for line in report.stdout.splitlines()
                    if line.strip() and not line.startswith("#")))


def main(argv: list[str]) -> int:
    if not argv or not shutil.which("perf"):
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(os.environ.get("PROFILE_SECONDS", 6))
    knobs = gateway_bench.Knobs.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-profile-"))
    bench = gateway_bench.Bench(knobs, workdir)
    try:
        bench.start()
        for name in argv:
            bench.smoke(bench.scenarios[name])
            loadgen.run(bench.request(bench.scenarios[name]), "throughput", 2)  # warm-up
            profile(bench, name, seconds, workdir)
    finally:
        bench.stop()
    print(f"\nperf data in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
