"""Faults under steady load lose no usage data, and never hang a client.

One stack of its own, whose sidecar reaches MariaDB through a TCP forwarder
the test controls (the machine's shared MariaDB is never stopped). Each test
runs a steady load with one key, injects a fault, recovers, and then counts on
both sides: the request ids of the 2xx answers the client saw against the rows
of ``usage_log``; each served request must have exactly one row.

* the sidecar killed with SIGKILL and restarted: the cached key keeps passing
  (stale verdicts, within ``stale_if_error_s``), an unknown key gets 503
  ``auth_unavailable``, and every served request is metered once;
* the database connection cut: ingestion answers 503, the filter keeps its
  records and retries, key look-ups fail closed, and after recovery every
  served request is metered once;
* Envoy stopped gracefully (``Stack.stop_envoy``: drain, wait for the filter's
  buffer to empty, SIGTERM): nothing is lost;
* Envoy killed with SIGKILL: the loss is at most what the filter's buffered
  gauge showed just before the kill (plus what was served after that
  reading), and at most two flush intervals of the load's measured rate;
* key verification under overload (many concurrent cold keys, then a stalled
  database) answers within the callout timeout plus a margin, with 200, 401 or
  503 JSON, never a hang: unknown keys are never served, real ones are, and
  with the database stalled most answers come before the sidecar's own
  look-up timeout could have produced one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import secrets
import signal
import statistics
import time

import pytest
import requests

from conftest import mysql_gateway_via_forwarder
from tollgate_tooling.faults import Load, TcpForwarder, json_code, metered_ids, wait_until_metered
from tollgate_tooling.gateway import Gateway, assert_error
from tollgate_tooling.stack import USAGE_BUFFERED_GAUGE

BODY = b'{"text": "metering must survive faults"}'

#: How much slower than the callout timeout an answer may be: the client and
#: the stack share two cores (measured 2026-12-07 with other tests running
#: beside: slowest answer 0.18 s unstalled, 0.57 s stalled, against 0.5 s).
LATENCY_MARGIN_S = 1.0

#: How many of the 20 real keys must be served under overload (measured: 20
#: of 20); a 503 costs one only when its look-up missed the callout timeout.
REAL_KEYS_SERVED = 15


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, mysql_server, filter_build):
    """(gateway, forwarder): a stack whose database link the test can cut."""
    with mysql_gateway_via_forwarder(tmp_path_factory.mktemp("stack-faults"), mysql_server,
                                     "tollgate_e2e_faults") as running:
        yield running


@pytest.fixture
def gw(faulty) -> Gateway:
    """The fault stack, whole again whatever the previous test left behind."""
    gateway, forwarder = faulty
    forwarder.restore()
    stack = gateway.stack
    if not stack.sidecar.alive():
        stack.start_sidecar()
    if not stack.envoy.alive():
        stack.start_envoy()
    return gateway


@pytest.fixture
def forwarder(faulty) -> TcpForwarder:
    return faulty[1]


def warm_key(gw: Gateway, name: str) -> dict:
    """A key the filter has just cached (one request served)."""
    key = gw.new_key(name)
    resp = gw.post(BODY, key["key"])
    assert resp.status_code == 200, resp.text
    key["served"] = {resp.headers["x-request-id"]}
    return key


def past_positive_ttl(gw: Gateway) -> None:
    """Sleeps until cached verdicts are stale: only stale_if_error keeps them."""
    time.sleep(gw.stack.config.filter_overrides["key_cache"]["positive_ttl_s"] + 0.5)


def test_sidecar_killed_under_load(gw: Gateway):
    key = warm_key(gw, "load-sidecar-kill")
    unknown = gw.new_key("unknown-to-the-filter")
    stale = f"{gw.stack.metric_prefix}tollgate_key_cache_stale"
    stale_before = gw.stack.envoy_stats().get(stale, 0)

    with Load(gw, key["key"]) as load:
        load.wait_for(40)
        gw.stack.sidecar.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        past_positive_ttl(gw)
        stale_from = time.monotonic()
        load.wait_for(20)
        stale_to = time.monotonic()
        assert_error(gw.post(BODY, unknown["key"]), 503, "auth_unavailable")
        during = load.since(killed_at)
        gw.stack.start_sidecar()
        load.wait_for(40)

    assert during and all(a.status == 200 for a in during), load.statuses()
    assert set(load.statuses()) == {(200, None)}, load.statuses()
    # Past the positive TTL with the sidecar down, each of those answers came
    # from the stale verdict (this stack's counter, read before and after).
    on_stale = [a for a in load.since(stale_from)
                if a.started >= stale_from and a.ended <= stale_to]
    stale_used = gw.stack.envoy_stats().get(stale, 0) - stale_before
    assert on_stale and stale_used >= len(on_stale), \
        f"{stale_used} stale verdicts used for {len(on_stale)} requests served on them"
    served = load.served() | key["served"]
    wait_until_metered(gw.ledger, key["id"], served)
    print(f"sidecar SIGKILL: {len(served)} served, {len(during)} while it was down")
    assert gw.post(BODY, unknown["key"]).status_code == 200


def ingest_directly(gw: Gateway, key_id: int) -> requests.Response:
    """A one-record batch straight to the sidecar, as the filter sends it."""
    now_ms = int(time.time() * 1000)
    record = {"request_id": f"probe-{secrets.token_hex(8)}", "api_key_id": key_id,
              "method": "POST", "endpoint": "/probe", "status_code": 200, "outcome": "allowed",
              "request_bytes": 0, "response_bytes": 0, "duration_ms": 1, "timestamp_ms": now_ms}
    return requests.post(gw.stack.sidecar_url + "/v1/internal/usage", data=json.dumps([record]),
                         headers={"Content-Type": "application/json",
                                  "x-tollgate-internal-token": gw.stack.config.internal_token},
                         timeout=30)


def row_count(gw: Gateway, key_id: int) -> int:
    return gw.ledger.query("SELECT COUNT(*) AS n FROM usage_log WHERE api_key_id = ?",
                           [key_id])[0]["n"]


def test_database_cut_under_load(gw: Gateway, forwarder: TcpForwarder):
    key = warm_key(gw, "load-db-cut")
    unseen = gw.new_key("unseen-until-the-cut")  # the CLI needs the database too
    failures = f"{gw.stack.metric_prefix}tollgate_usage_flush_failures"
    failures_before = gw.stack.envoy_stats().get(failures, 0)

    with Load(gw, key["key"]) as load:
        load.wait_for(40)
        forwarder.cut()
        cut_at = time.monotonic()
        probe = ingest_directly(gw, key["id"])
        rows_during_cut = row_count(gw, key["id"])
        past_positive_ttl(gw)
        # Key look-ups fail too: a key the filter never saw is refused...
        assert_error(gw.post(BODY, unseen["key"]), 503, "auth_unavailable")
        load.wait_for(20)
        # ...while the cached key is served, and nothing reaches the ledger.
        assert row_count(gw, key["id"]) == rows_during_cut
        buffered = gw.stack.envoy_stats()[f"{gw.stack.metric_prefix}{USAGE_BUFFERED_GAUGE}"]
        during = load.since(cut_at)
        forwarder.restore()
        load.wait_for(40)

    assert probe.status_code == 503, probe.text
    assert probe.json()["error"]["code"] == "database_unavailable"
    assert buffered > 0, "the filter holds no records while the database is cut"
    assert gw.stack.envoy_stats().get(failures, 0) > failures_before
    assert during and all(a.status == 200 for a in during), load.statuses()
    assert set(load.statuses()) == {(200, None)}, load.statuses()
    served = load.served() | key["served"]
    wait_until_metered(gw.ledger, key["id"], served)
    print(f"database cut: {len(served)} served, {len(during)} during the cut, "
          f"{buffered} records buffered at its end")


def test_envoy_graceful_stop_under_load_loses_nothing(gw: Gateway):
    key = warm_key(gw, "load-envoy-stop")

    with Load(gw, key["key"]) as load:
        load.wait_for(60)
        started = time.monotonic()
        code = gw.stack.stop_envoy()
        took = time.monotonic() - started

    assert code == 0, f"envoy exited with {code}"
    assert gw.stack.envoy_unflushed == 0
    # Clients saw answers, then refused connections; never a 5xx.
    assert {status for status, _ in load.statuses()} <= {200, 0}, load.statuses()
    served = load.served() | key["served"]
    wait_until_metered(gw.ledger, key["id"], served)
    print(f"graceful stop took {took:.1f}s; {len(served)} served, all metered")


#: Answers of the last seconds before a kill give the load's rate then.
RATE_WINDOW_S = 2.0


def test_envoy_killed_loses_at_most_what_was_buffered(gw: Gateway):
    """What a SIGKILL loses is bounded twice: by the filter's own account
    (its buffered gauge just before the kill, plus what was served after the
    reading), and independently of anything the filter says, by the load's
    rate: the records of the flush interval under way and of one batch in
    flight, two intervals' worth. A filter that did not flush on its timer
    would lose everything served."""
    key = warm_key(gw, "load-envoy-kill")
    flush_s = gw.stack.filter_config["usage"]["flush_interval_ms"] / 1000

    with Load(gw, key["key"]) as load:
        load.wait_for(400)  # many flush intervals: a filter that never flushed loses it all
        read_at = time.monotonic()
        buffered = gw.stack.envoy_stats()[f"{gw.stack.metric_prefix}{USAGE_BUFFERED_GAUGE}"]
        gw.stack.envoy.stop(signal.SIGKILL)
        killed_at = time.monotonic()
    # Answers completed after the gauge was read were not in it yet.
    late = [a for a in load.since(read_at - 0.05) if 200 <= a.status < 300]
    recent = [a for a in load.since(killed_at - RATE_WINDOW_S) if 200 <= a.status < 300]
    rate = len(recent) / RATE_WINDOW_S

    served = load.served() | key["served"]
    time.sleep(1.0)  # an ingestion call in flight at the kill commits or fails
    metered = metered_ids(gw.ledger, key["id"])
    assert metered <= served, "rows for requests the client was not served"
    lost = len(served - metered)
    allowed = math.ceil(2 * flush_s * rate)
    print(f"envoy SIGKILL at {rate:.0f} req/s (flush every {flush_s * 1000:.0f} ms): "
          f"gauge {buffered} before the kill, {len(late)} served after the reading, "
          f"{lost} of {len(served)} served requests lost (allowed {allowed})")
    assert lost <= buffered + len(late), "more lost than the filter said it held"
    assert lost <= allowed, (
        f"{lost} of {len(served)} served requests lost: more than two flush intervals "
        f"({flush_s:.1f}s) of traffic at {rate:.0f} req/s ({allowed})")


def cold_requests(gw: Gateway, keys: list[str], concurrency: int) -> list[tuple]:
    """Posts once with each key, ``concurrency`` at a time; (key, status, code, seconds)."""
    def one(api_key: str) -> tuple:
        started = time.monotonic()
        resp = requests.post(gw.stack.gateway + "/proxy/analyze", data=BODY, timeout=30,
                             headers={"Authorization": f"Bearer {api_key}",
                                      "X-Auth-Token": gw.token(BODY),
                                      "Content-Type": "application/json"})
        return api_key, resp.status_code, json_code(resp), time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, keys))


def assert_bounded(answers: list[tuple], bound_s: float, allowed: set) -> None:
    """Every answer is one of ``allowed`` (status, code) and came within ``bound_s``."""
    kinds = {(status, code) for _, status, code, _ in answers}
    assert kinds <= allowed, kinds
    slowest = max(seconds for *_, seconds in answers)
    assert slowest <= bound_s, f"an answer took {slowest:.2f}s (bound {bound_s:.2f}s)"
    print(f"{len(answers)} cold-key requests: {sorted(kinds)}; slowest {slowest:.2f}s")


#: The sidecar's own bound on one key look-up in MariaDB
#: (sidecar/src/store/mysql.rs, ``LOOKUP_TIMEOUT``): with the database
#: stalled, no verification answer leaves the sidecar sooner.
SIDECAR_LOOKUP_TIMEOUT_S = 1.0


def test_verify_under_overload_answers_within_the_callout_timeout(gw: Gateway, forwarder):
    callout_s = gw.stack.filter_config["callout_timeout_ms"] / 1000
    assert callout_s < SIDECAR_LOOKUP_TIMEOUT_S / 1.5, "the test needs a callout timeout " \
        "well under the sidecar's look-up timeout"
    bound = callout_s + LATENCY_MARGIN_S
    real = [gw.new_key(f"cold-{i}")["key"] for i in range(20)]
    unknown = [f"tg_{secrets.token_hex(20)}" for _ in range(140)]
    contract = {(200, None), (401, "invalid_api_key"), (503, "auth_unavailable")}

    answers = cold_requests(gw, real + unknown, concurrency=64)
    assert_bounded(answers, bound, contract)
    by_kind = {"real": set(real), "unknown": set(unknown)}
    got = {kind: collections.Counter((s, c) for k, s, c, _ in answers if k in keys)
           for kind, keys in by_kind.items()}
    print(f"real keys: {dict(got['real'])}; unknown keys: {dict(got['unknown'])}")
    # An unknown key is never let through, a real key never called unknown;
    # overload may cost a real key a 503, not more than a few of them.
    assert got["unknown"][(200, None)] == 0, f"an unknown key was served: {got}"
    assert got["real"][(401, "invalid_api_key")] == 0, f"a real key was called unknown: {got}"
    assert got["real"][(200, None)] >= REAL_KEYS_SERVED, (
        f"fewer than {REAL_KEYS_SERVED} of 20 real keys served under overload: {got}")

    # A database that stopped answering: look-ups hang in the sidecar until
    # its own look-up timeout (and queue for its 16 look-up connections),
    # the filter gives up at the callout timeout and fails closed. A filter
    # that waited for the sidecar could answer none of them before
    # SIDECAR_LOOKUP_TIMEOUT_S, and most of them seconds later.
    forwarder.stall()
    try:
        answers = cold_requests(gw, [f"tg_{secrets.token_hex(20)}" for _ in range(96)],
                                concurrency=48)
    finally:
        forwarder.restore()
    median = statistics.median(seconds for *_, seconds in answers)
    assert median < SIDECAR_LOOKUP_TIMEOUT_S, (
        f"the median answer took {median:.2f}s: the filter waited for the sidecar's "
        f"look-up timeout ({SIDECAR_LOOKUP_TIMEOUT_S}s), not its own {callout_s}s")
    assert_bounded(answers, bound, {(503, "auth_unavailable")})
