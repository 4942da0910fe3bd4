"""What fleet-scoped replay protection costs on the request path: two Envoys
of one fleet (tollgate_tooling.fleet) over one sidecar and MariaDB, both with
``jwt.require_jti``, one with ``replay_scope: "instance"`` (the instance's
store only) and one with ``"fleet"`` (then one claim through the sidecar, a
unique insert). Requests with a fresh ``jti`` each, one at a time on a
keep-alive connection, alternating between the two Envoys so that both see
the same machine; the key is cached on both.

Prints p50/p99 of each and what the fleet claim adds, and writes
bench/results-replay.json. The client is Python (requests), so absolute
figures include its own time; the difference is the claim's.

Knobs: BENCH_REPLAY_REQUESTS (1000 per Envoy), BENCH_MYSQL_URL (the server,
default mysql://root@127.0.0.1:3306).

Usage: .venv/bin/python bench/replay_scope.py
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import requests

from gateway_bench import recreate_database  # bench/, this script's directory
from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling.fleet import Fleet, FleetConfig

BODY = b'{"text": "what does a fleet claim cost"}'
DATABASE = "tollgate_bench_replay"
RESULTS = ROOT / "bench" / "results-replay.json"


def token(secret: str) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 60, "jti": uuid.uuid4().hex,
                       "body_sha256": hashlib.sha256(BODY).hexdigest()}, secret, algorithm="HS256")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    n = int(os.environ.get("BENCH_REPLAY_REQUESTS", "1000"))
    server = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306")
    recreate_database(server, DATABASE)
    scopes = ("instance", "fleet")
    with tempfile.TemporaryDirectory(prefix="tollgate-replay-bench-") as tmp:
        fleet = Fleet(FleetConfig(
            state_dir=Path(tmp), database_url=f"{server}/{DATABASE}", envoys=2, sidecars=1,
            # A generous callout timeout: the bench measures the claim's
            # cost, not how often a loaded machine misses 500 ms.
            filter_overrides={"jwt": {"require_jti": True}, "callout_timeout_ms": 2000},
            envoy_filter_overrides={i: {"jwt": {"replay_scope": s}} for i, s in enumerate(scopes)}))
        fleet.start()
        try:
            key = fleet.create_key("replay-bench")["key"]
            session = requests.Session()
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            times: dict[str, list[float]] = {s: [] for s in scopes}
            for i in range(n + 20):
                for scope, url in zip(scopes, fleet.gateways):
                    sent = {**headers, "X-Auth-Token": token(fleet.jwt_secret)}
                    start = time.perf_counter()
                    resp = session.post(url + "/proxy/analyze", data=BODY, headers=sent, timeout=10)
                    took = (time.perf_counter() - start) * 1000
                    if resp.status_code != 200:
                        raise SystemExit(f"{scope}: {resp.status_code} {resp.text[:200]}")
                    if i >= 20:  # the first ones warm the cache and the connections
                        times[scope].append(took)
        finally:
            fleet.stop()
    figures = {s: {"p50_ms": round(statistics.median(t), 3), "p99_ms": round(percentile(t, 0.99), 3),
                   "requests": len(t)} for s, t in times.items()}
    added = {"fleet_claim_p50_added_ms": round(figures["fleet"]["p50_ms"] - figures["instance"]["p50_ms"], 3),
             "fleet_claim_p99_added_ms": round(figures["fleet"]["p99_ms"] - figures["instance"]["p99_ms"], 3)}
    RESULTS.write_text(json.dumps({"scopes": figures, **added}, indent=2) + "\n")
    print("replay scope   p50 ms   p99 ms   requests")
    for s, f in figures.items():
        print(f"{s:<13} {f['p50_ms']:>7.3f}  {f['p99_ms']:>7.3f}   {f['requests']}")
    print(f"the fleet claim adds {added['fleet_claim_p50_added_ms']:.3f} ms at p50, "
          f"{added['fleet_claim_p99_added_ms']:.3f} ms at p99 (one sidecar call, one insert)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
