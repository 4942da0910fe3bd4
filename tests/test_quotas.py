"""Per-key rate limits and quotas, end to end (issue 11's tests): keys made
with ``tollgate keys create --rate/--burst/--quota``, real Envoys, real
sidecars, MariaDB and SQLite.

A denial is 429 ``rate_limited`` or ``quota_exceeded`` in the contract's JSON
error shape, with ``Retry-After``, ``RateLimit-Policy`` (every limit of the
key) and ``RateLimit`` (the limit that denied); allowed answers carry
``RateLimit`` too. Each test counts on both sides: the answers the clients
saw, and the rows of ``usage_log``; ``usage reconcile`` must show no key
over its limit afterwards.

* ``requests=200/day`` hit by 400 requests over 16 connections: 190..200
  answered 200, the rest ``quota_exceeded``; the ledger holds the same 2xx,
  and no denied request reached the AI service (both backends); the same on
  a fleet of 3 Envoys and 2 sidecars, requests spread over the Envoys;
* ``--rate 50/s --burst 50`` under 200 req/s for 10 s: allowed at most
  50 x elapsed + 50 and at least 90 % of it (one bucket per Envoy, shared
  by its workers);
* a ``request_bytes`` quota (month) counts chunked and sized bodies alike,
  to the byte, and is never exceeded; its window is the calendar month;
* a ``units`` quota (the ai-server's ``X-Usage-Units``) overshoots by at
  most the units of the requests in flight, and is settled exactly; so does
  a ``response_bytes`` quota, by the bytes of the responses in flight; on a
  fleet, a ``units`` quota overshoots by at most that plus what the other
  Envoys charged in the second before the limit was reached;
* an ``hour`` window's refusal says to retry when the UTC hour ends;
* a quota and a rate lowered and raised under load: in force within 2 s,
  on one Envoy and on every Envoy of a fleet;
* the sidecar SIGKILLed while a key holds a grant: the key is served from
  it, then 503 ``auth_unavailable``, never a 200 beyond it;
* two keys with different limits at once: each held to its own;
* ``limits.ratelimit_headers: false``: allowed answers carry no RateLimit.

The month window's boundary, with an injected clock, is a sidecar test
(``sidecar/tests/limits_api.rs``): the Envoy's clock cannot be moved.
"""

from __future__ import annotations

import calendar
import collections
import contextlib
import dataclasses
import itertools
import json
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable, Iterable

import pytest
import requests

from conftest import sqlite_gateway_of_its_own
from tollgate_tooling.faults import Load, json_code
from tollgate_tooling.gateway import (Gateway, Ledger, LimitDenial, assert_error, assert_limited, ratelimit_field,
                     sidecar_request)
from tollgate_tooling.stack import Stack
from tollgate_tooling.windows import clear_of_the_utc_day_end, clear_of_window_end, window_end  # noqa: F401 (an autouse fixture)

TEXT = "forty characters of text for the gateway"
BODY = json.dumps({"text": TEXT}).encode()

DAY_S = 86_400

#: The contract: a change of limits is in force on every Envoy within this.
EFFECT_S = 2.0
#: How long a test watches the load once a change must be in force.
WATCH_S = 1.0


# -- what a client sends and sees --------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sent:
    """One request and its answer, as the client saw them."""

    resp: requests.Response
    started: float  # time.monotonic()
    ended: float
    ended_wall: float  # time.time(), for the UTC windows
    envoy: int = 0  # which of the stacks answered

    @property
    def status(self) -> int:
        return self.resp.status_code

    @property
    def request_id(self) -> str | None:
        return self.resp.headers.get("x-request-id")

    @property
    def code(self) -> str | None:
        return json_code(self.resp)


def offer(stacks: list[Stack], key: str, count: int, *, connections: int = 16,
          rate: float | None = None, body: bytes = BODY) -> list[Sent]:
    """Sends ``count`` requests with ``key`` over ``connections`` concurrent
    connections, connection i to the Envoy of ``stacks[i % len(stacks)]``,
    each sending its next request once its last is answered; with ``rate``,
    request n is not sent before start + n / rate, and none after
    start + count / rate (a client that falls behind sends fewer). The
    answers, in the order they arrived."""
    numbers = itertools.count()
    sent: list[Sent] = []
    lock = threading.Lock()
    start = time.monotonic()

    def connection(i: int) -> None:
        client = Gateway(stacks[i % len(stacks)], Ledger())
        while (n := next(numbers)) < count:
            if rate:
                if time.monotonic() >= start + count / rate:
                    break
                time.sleep(max(0.0, start + n / rate - time.monotonic()))
            began = time.monotonic()
            resp = client.post(body, key)
            with lock:
                sent.append(Sent(resp, began, time.monotonic(), time.time(), i % len(stacks)))

    with ThreadPoolExecutor(connections) as pool:
        for done in [pool.submit(connection, i) for i in range(connections)]:
            done.result()
    return sent


def tally(answers: Iterable) -> collections.Counter:
    """(status, code) -> how many, for messages."""
    return collections.Counter((a.status, a.code) for a in answers)


def body_of(size: int) -> bytes:
    """An /analyze body of exactly ``size`` bytes."""
    body = json.dumps({"text": "b" * (size - 12)}).encode()
    assert len(body) == size
    return body


# -- the UTC windows -----------------------------------------------------------

def month_seconds(at: float) -> int:
    """The seconds of the UTC month holding ``at``: a month quota's ``w``."""
    t = datetime.fromtimestamp(at, timezone.utc)
    return calendar.monthrange(t.year, t.month)[1] * DAY_S


def assert_resets_at_window_end(denial: LimitDenial, window: str, at: float) -> None:
    """A quota's denial at ``at`` says it passes again when its window ends:
    both ``Retry-After`` and the RateLimit field's ``t``."""
    left = (window_end(window, at) - datetime.fromtimestamp(at, timezone.utc)).total_seconds()
    assert abs(denial.retry_after_s - left) <= 2, \
        f"Retry-After {denial.retry_after_s} s, but the {window} ends in {left:.0f} s"
    assert abs(denial.denied_by.reset_s - left) <= 2, \
        f"RateLimit t={denial.denied_by.reset_s}, but the {window} ends in {left:.0f} s"


# -- what the sidecar's side holds ---------------------------------------------

def assert_metered(ledger: Ledger, key_id: int, answers: Iterable, timeout: float = 30.0) -> list:
    """Waits until ``usage_log`` holds a 2xx row for each 2xx answer of the
    key, then asserts its 2xx rows are exactly those (no more, none
    missing), and each other row of the key is the denial the client saw.
    Returns the rows."""
    answers = list(answers)
    served = {a.request_id for a in answers if 200 <= a.status < 300}
    assert None not in served, "a 2xx answer without x-request-id"
    denied = {a.request_id: a.code for a in answers if not 200 <= a.status < 300}
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger.query("SELECT request_id, status_code, outcome, request_bytes "
                            "FROM usage_log WHERE api_key_id = ?", [key_id])
        allowed = {r["request_id"] for r in rows if 200 <= r["status_code"] < 300}
        if served <= allowed or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert allowed == served, (f"{len(served)} answered 2xx, {len(allowed)} 2xx rows: "
                               f"{len(served - allowed)} missing, {len(allowed - served)} extra")
    for row in rows:
        if row["request_id"] not in allowed:
            assert denied.get(row["request_id"]) == row["outcome"], \
                f"a usage row the client saw no such answer for: {row}"
    return rows


def reconciled(cli: Callable, key_id: int) -> dict[str, dict]:
    """``tollgate usage reconcile --key ID --json`` exits 0 with no quota of
    the key over its limit; its rows by quota."""
    result = cli("usage", "reconcile", "--key", str(key_id), "--json", check=False)
    assert result.returncode == 0, \
        f"usage reconcile exited {result.returncode}: {result.stdout[-2000:]}{result.stderr[-1000:]}"
    rows = json.loads(result.stdout)
    assert not [r for r in rows if r["over_limit"]], rows
    return {r["quota"]: r for r in rows}


def put_limits(stack: Stack, key_id: int, limits: dict) -> None:
    """``PUT /v1/keys/{id}/limits`` on the admin API."""
    resp = sidecar_request(stack, "PUT", f"/v1/keys/{key_id}/limits", limits,
                           {"Authorization": f"Bearer {stack.config.admin_token}"})
    assert resp.status_code == 200, resp.text


# -- a requests quota, on one Envoy and on a fleet -----------------------------

REQUESTS_LIMIT = 200


def assert_a_requests_quota_holds(stacks: list[Stack], ledger: Ledger, cli: Callable,
                                  key: dict) -> None:
    """400 requests over 16 connections spread over ``stacks`` with a key of
    ``requests=200/day``: at most 200 and at least 75 % of them answered 200
    (none of the others reaching the AI service), the rest 429
    ``quota_exceeded`` until the day ends; the ledger holds the same 2xx;
    the counter has charged every admitted request and no more than 200.
    Then each Envoy is drained of what it still holds: served and drained
    come to exactly 200, so no grant was lost and none overshot.

    When the burst ends, the Envoys that were not told "spent" still hold
    the unused part of their grants (each at most a quarter of what was
    left): 5 to 41 of 200 measured on both builds, more when the AI service
    is slow under load, since their connections get fewer turns before the
    shared counter of 400 runs out. So the burst's share is a loose bound,
    and exactness is proven by the drain."""
    assert key["limits"] == {"rate": None, "quotas": [
        {"kind": "requests", "limit": REQUESTS_LIMIT, "window": "day"}]}, key["limits"]
    before = reconciled(cli, key["id"])["requests"]
    assert (before["limit"], before["charged"], before["ledger"]) == (REQUESTS_LIMIT, 0, 0), before
    client = Gateway(stacks[0], ledger)
    upstream_before = client.upstream_seen()["count"]

    sent = offer(stacks, key["key"], 2 * REQUESTS_LIMIT, connections=16)

    served = [s for s in sent if s.status == 200]
    assert math.ceil(0.75 * REQUESTS_LIMIT) <= len(served) <= REQUESTS_LIMIT, \
        f"{len(served)} of {len(sent)} answered 200 under requests=200/day: {tally(sent)}"
    policy = {"requests": (REQUESTS_LIMIT, DAY_S)}
    for s in sent:
        if s.status == 200:
            field = ratelimit_field(s.resp)
            assert field.name == "requests" and field.remaining <= REQUESTS_LIMIT, field
        else:
            denial = assert_limited(s.resp, "quota_exceeded", policy)
            assert (denial.denied_by.name, denial.denied_by.remaining) == ("requests", 0), denial
            assert_resets_at_window_end(denial, "day", s.ended_wall)
    assert client.upstream_seen()["count"] - upstream_before == len(served), \
        "a denied request reached the AI service"
    assert_metered(ledger, key["id"], sent)
    after = reconciled(cli, key["id"])["requests"]
    assert after["ledger"] == len(served), after
    assert len(served) <= after["charged"] <= REQUESTS_LIMIT, after
    drained = drain(stacks, ledger, key["key"])
    settled = reconciled(cli, key["id"])["requests"]
    assert len(served) + drained == REQUESTS_LIMIT == settled["charged"], \
        (f"{len(served)} served in the burst and {drained} drained after it "
         f"under requests=200/day: {settled}")
    print(f"requests=200/day over {len(stacks)} Envoy(s): {len(served)} served of {len(sent)}, "
          f"{drained} drained after")


def drain(stacks: list[Stack], ledger: Ledger, key: str) -> int:
    """Sends one request to each Envoy in turn until a round where every
    one refuses: how many were served (what the Envoys still held)."""
    clients = [Gateway(stack, ledger) for stack in stacks]
    drained = 0
    for _ in range(REQUESTS_LIMIT + 1):
        served = sum(client.post(BODY, key).status_code == 200 for client in clients)
        drained += served
        if not served:
            return drained
    raise AssertionError(f"still serving after {drained} drained requests")


def test_a_daily_requests_quota_on_one_envoy(any_gateway: Gateway):
    gw = any_gateway
    key = gw.new_key("quota-200", "--quota", "requests=200/day")
    assert_a_requests_quota_holds([gw.stack], gw.ledger, gw.stack.cli, key)


# -- a rate --------------------------------------------------------------------

def test_a_rate_limit_under_four_times_its_rate(gateway: Gateway):
    key = gateway.new_key("rate-50", "--rate", "50/s", "--burst", "50")
    assert key["limits"]["rate"] == {"count": 50, "per": "s", "burst": 50}, key["limits"]

    sent = offer([gateway.stack], key["key"], 2000, connections=16, rate=200)

    first = min(s.started for s in sent)
    offered = len(sent) / (max(s.started for s in sent) - first)
    elapsed = max(s.ended for s in sent) - first
    allowed = [s for s in sent if s.status == 200]
    bound = 50 * elapsed + 50
    said = (f"{len(allowed)} allowed of {len(sent)} offered at {offered:.0f}/s in {elapsed:.2f} s "
            f"at 50/s, burst 50 (bound {bound:.0f}): {tally(sent)}")
    assert len(allowed) <= bound, said
    # Only an offer well above the rate tells a bucket from no limit.
    assert offered >= 150, f"the client offered too little, the machine is too busy: {said}"
    assert len(allowed) >= 0.9 * bound, said
    remaining = []
    for s in sent:
        if s.status == 200:
            field = ratelimit_field(s.resp)
            assert field.name == "rate" and 0 <= field.remaining <= 49 and field.reset_s <= 1, field
            remaining.append(field.remaining)
        else:
            denial = assert_limited(s.resp, "rate_limited", {"rate": (50, 1)})
            assert (denial.denied_by.name, denial.denied_by.remaining) == ("rate", 0), denial
            assert denial.retry_after_s == 1, "a token comes within 20 ms: Retry-After is 1"
    # The first request found the bucket full (50 less its own token), and
    # the bucket ran dry before the first refusal.
    assert max(remaining) == 49 and min(remaining) == 0, sorted(collections.Counter(remaining).items())
    assert_metered(gateway.ledger, key["id"], sent)
    print(said)


# -- request bytes and units -----------------------------------------------------

def test_a_request_bytes_quota_counts_chunked_and_sized_bodies_alike(any_gateway: Gateway):
    gw = any_gateway
    key = gw.new_key("bytes-10k", "--quota", "request_bytes=10KiB/month")
    assert key["limits"]["quotas"] == [
        {"kind": "request_bytes", "limit": 10240, "window": "month"}], key["limits"]
    sent = []

    def post(size: int, chunked: bool) -> requests.Response:
        began = time.monotonic()
        resp = gw.post(body_of(size), key["key"], chunked=chunked)
        sent.append(Sent(resp, began, time.monotonic(), time.time()))
        return resp

    for i in range(10):  # 10,000 bytes of 10,240, every other body chunked
        resp = post(1000, chunked=i % 2 == 1)
        assert resp.status_code == 200, f"request {i}: {resp.status_code} {resp.text[:200]}"
    for chunked in (True, False):  # 1,000 bytes more do not fit in the 240 left
        upstream = gw.upstream_seen()["count"]
        resp = post(1000, chunked=chunked)
        assert gw.upstream_seen()["count"] == upstream, "a denied request reached the AI service"
        policy = {"request_bytes": (10240, month_seconds(sent[-1].ended_wall))}
        denial = assert_limited(resp, "quota_exceeded", policy)
        assert denial.denied_by.name == "request_bytes", denial
        assert_resets_at_window_end(denial, "month", sent[-1].ended_wall)
    rest = post(240, chunked=True)  # exactly what is left
    assert rest.status_code == 200, f"240 bytes of the 240 left: {rest.status_code} {rest.text[:200]}"
    assert_error(post(20, chunked=False), 429, "quota_exceeded")
    for allowed in (s.resp for s in sent if s.status == 200):
        field = ratelimit_field(allowed)
        assert field.name == "request_bytes" and field.remaining <= 10240, field

    rows = assert_metered(gw.ledger, key["id"], sent)
    allowed = sorted(r["request_bytes"] for r in rows if r["outcome"] == "allowed")
    assert allowed == [240] + [1000] * 10, allowed
    counted = reconciled(gw.stack.cli, key["id"])["request_bytes"]
    assert (counted["ledger"], counted["charged"]) == (10240, 10240), counted


UNITS_LIMIT = 1000
UNITS_CONNECTIONS = 16


def units_of(gw: Gateway, body: bytes) -> int:
    """What the ai-server says ``body`` costs (``X-Usage-Units``), asked directly."""
    direct = gw.analyze_direct(body)
    assert direct.status_code == 200, direct.text
    value = direct.headers.get("x-usage-units")
    assert value is not None, ("the ai-server sets no X-Usage-Units on /analyze: "
                               "nothing would be charged to a units quota")
    return int(value)


def test_a_units_quota_overshoots_by_at_most_the_requests_in_flight(any_gateway: Gateway):
    gw = any_gateway
    units = units_of(gw, BODY)
    assert units == len(TEXT), f"X-Usage-Units {units} for {len(TEXT)} characters analysed"
    key = gw.new_key("units-1000", "--quota", f"units={UNITS_LIMIT}/day")

    sent = offer([gw.stack], key["key"], 200, connections=UNITS_CONNECTIONS)

    served = [s for s in sent if s.status == 200]
    charged = len(served) * units
    overshoot_bound = UNITS_LIMIT + UNITS_CONNECTIONS * units
    assert UNITS_LIMIT <= charged <= overshoot_bound, \
        (f"{len(served)} served x {units} units = {charged} under units=1000/day over "
         f"{UNITS_CONNECTIONS} connections (bound {overshoot_bound}): {tally(sent)}")
    for s in sent:
        if s.status != 200:
            denial = assert_limited(s.resp, "quota_exceeded", {"units": (UNITS_LIMIT, DAY_S)})
            assert denial.denied_by.name == "units", denial
            assert_resets_at_window_end(denial, "day", s.ended_wall)
    assert_metered(gw.ledger, key["id"], sent)
    # Every served request is settled, once.
    deadline = time.monotonic() + 5
    while (counter := reconciled(gw.stack.cli, key["id"])["units"])["charged"] != charged:
        assert time.monotonic() < deadline, f"{counter} after 5 s; {charged} units were served"
        time.sleep(0.25)
    print(f"units=1000/day: {len(served)} served, {charged} units charged "
          f"(overshoot {charged - UNITS_LIMIT}, bound {overshoot_bound - UNITS_LIMIT})")


RESPONSE_BYTES_LIMIT_KIB = 8
RESPONSE_BYTES_CONNECTIONS = 16


def allowed_sum(ledger: Ledger, key_id: int, column: str) -> tuple[int, set[int]]:
    """The sum of ``column`` over the key's allowed rows, and its distinct
    values (one per request when every request is charged alike)."""
    rows = ledger.query(f"SELECT {column} AS n FROM usage_log "
                        "WHERE api_key_id = ? AND outcome = 'allowed'", [key_id])
    return sum(int(r["n"]) for r in rows), {int(r["n"]) for r in rows}


def test_a_response_bytes_quota_overshoots_by_at_most_the_responses_in_flight(
        any_gateway: Gateway):
    gw = any_gateway
    size = len(gw.analyze_direct(BODY).content)
    limit = RESPONSE_BYTES_LIMIT_KIB * 1024
    clear_of_window_end("day", 30)
    key = gw.new_key("response-bytes-8k", "--quota",
                     f"response_bytes={RESPONSE_BYTES_LIMIT_KIB}KiB/day")
    assert key["limits"]["quotas"] == [
        {"kind": "response_bytes", "limit": limit, "window": "day"}], key["limits"]

    sent = offer([gw.stack], key["key"], limit // size + 3 * RESPONSE_BYTES_CONNECTIONS,
                 connections=RESPONSE_BYTES_CONNECTIONS)

    served = [s for s in sent if s.status == 200]
    assert {len(s.resp.content) for s in served} == {size}, "the answers differ in size"
    for s in sent:
        if s.status != 200:
            denial = assert_limited(s.resp, "quota_exceeded",
                                    {"response_bytes": (limit, DAY_S)})
            assert (denial.denied_by.name, denial.denied_by.remaining) == \
                ("response_bytes", 0), denial
            assert_resets_at_window_end(denial, "day", s.ended_wall)
    assert_metered(gw.ledger, key["id"], sent)
    charged, sizes = allowed_sum(gw.ledger, key["id"], "response_bytes")
    assert sizes == {size}, f"the ledger's response bytes {sizes}, the client saw {size}"
    # One Envoy knows its own charges at once: past the limit it admits
    # nothing, and what was in flight (one request a connection) ends.
    bound = limit + RESPONSE_BYTES_CONNECTIONS * size
    assert limit <= charged <= bound, \
        (f"{len(served)} served x {size} bytes = {charged} under response_bytes={limit}/day "
         f"over {RESPONSE_BYTES_CONNECTIONS} connections (bound {bound}): {tally(sent)}")
    deadline = time.monotonic() + 5
    while (counter := reconciled(gw.stack.cli, key["id"])["response_bytes"])["charged"] != charged:
        assert time.monotonic() < deadline, f"{counter} after 5 s; {charged} bytes were served"
        time.sleep(0.25)
    print(f"response_bytes={limit}/day: {len(served)} served x {size} bytes = {charged} "
          f"(overshoot {charged - limit}, bound {bound - limit}); {len(sent) - len(served)} refused")


HOUR_LIMIT = 5


def test_an_hour_window_refuses_until_the_end_of_the_utc_hour(any_gateway: Gateway):
    gw = any_gateway
    clear_of_window_end("hour", 120)
    key = gw.new_key("hourly-5", "--quota", f"requests={HOUR_LIMIT}/hour")
    assert key["limits"]["quotas"] == [
        {"kind": "requests", "limit": HOUR_LIMIT, "window": "hour"}], key["limits"]
    for i in range(HOUR_LIMIT):
        resp = gw.post(BODY, key["key"])
        assert resp.status_code == 200, f"request {i}: {resp.status_code} {resp.text[:200]}"
        field = ratelimit_field(resp)
        assert field.name == "requests" and field.remaining <= HOUR_LIMIT - 1 - i, field
    resp = gw.post_refused(BODY, key["key"])
    at = time.time()
    denial = assert_limited(resp, "quota_exceeded", {"requests": (HOUR_LIMIT, 3600)})
    assert (denial.denied_by.name, denial.denied_by.remaining) == ("requests", 0), denial
    assert_resets_at_window_end(denial, "hour", at)
    left = (window_end("hour", at) - datetime.fromtimestamp(at, timezone.utc)).total_seconds()
    print(f"requests={HOUR_LIMIT}/hour: refused with Retry-After {denial.retry_after_s} s, "
          f"RateLimit t={denial.denied_by.reset_s}, the hour ends in {left:.1f} s")


# -- several keys ----------------------------------------------------------------

def test_two_keys_with_different_limits_at_once(any_gateway: Gateway):
    gw = any_gateway
    small = gw.new_key("quota-60", "--quota", "requests=60/day")
    large = gw.new_key("quota-120-rated", "--rate", "1000/s", "--quota", "requests=120/day")
    cases = [(small, 60, 150, {"requests": (60, DAY_S)}),
             (large, 120, 250, {"rate": (1000, 1), "requests": (120, DAY_S)})]

    with ThreadPoolExecutor(len(cases)) as pool:
        runs = [pool.submit(offer, [gw.stack], key["key"], count, connections=8)
                for key, _, count, _ in cases]
        results = [run.result() for run in runs]

    for (key, limit, count, policy), sent in zip(cases, results):
        served = [s for s in sent if s.status == 200]
        assert math.ceil(0.95 * limit) <= len(served) <= limit, \
            f"key {key['name']}: {len(served)} of {count} served, limit {limit}: {tally(sent)}"
        for s in sent:
            if s.status != 200:
                denial = assert_limited(s.resp, "quota_exceeded", policy)
                assert denial.denied_by.name == "requests", denial
        assert_metered(gw.ledger, key["id"], sent)
        assert reconciled(gw.stack.cli, key["id"])["requests"]["ledger"] == len(served)


# -- limits changed under load ---------------------------------------------------

def after_change(loads: list[Load], change: Callable[[], object]) -> list[list]:
    """Makes ``change`` while ``loads`` run; for each load, the answers to
    the requests it started from EFFECT_S after the change for WATCH_S."""
    change()
    changed = time.monotonic()
    time.sleep(EFFECT_S + WATCH_S)
    since, until = changed + EFFECT_S, changed + EFFECT_S + WATCH_S
    windows = [[a for a in load.since(changed) if since <= a.started <= until] for load in loads]
    for window in windows:
        assert len(window) >= 10, f"the load made {len(window)} requests in {WATCH_S} s"
    return windows


def quota_lowered_and_raised(loads: list[Load], lower: Callable, raise_: Callable) -> None:
    """A key of ``requests=100000/day`` served by ``loads``: ``lower`` (to
    ``requests=10/day``, below what the window used) is in force within
    EFFECT_S on every Envoy of a load (only 429 ``quota_exceeded``), and so
    is ``raise_`` (back to 100000: only 200)."""
    for load in loads:
        load.wait_for(20)
    for window in after_change(loads, lower):
        assert tally(window) == {(429, "quota_exceeded"): len(window)}, tally(window)
    for window in after_change(loads, raise_):
        assert tally(window) == {(200, None): len(window)}, tally(window)


def test_a_quota_lowered_and_raised_under_load_is_in_force_within_2s(gateway: Gateway):
    key = gateway.new_key("quota-changed", "--quota", "requests=100000/day")
    cli = gateway.stack.cli
    with Load(gateway, key["key"], workers=4) as load:
        quota_lowered_and_raised(
            [load],
            lambda: cli("keys", "limits", str(key["id"]), "--quota", "requests=10/day"),
            lambda: put_limits(gateway.stack, key["id"], {"quotas": ["requests=100000/day"]}))
    assert_metered(gateway.ledger, key["id"], load.answers)
    reconciled(cli, key["id"])


def test_a_rate_lowered_and_raised_under_load_is_in_force_within_2s(gateway: Gateway):
    key = gateway.new_key("rate-changed", "--rate", "1000/s")
    cli = gateway.stack.cli
    with Load(gateway, key["key"], workers=4) as load:
        load.wait_for(20)
        lowered, = after_change([load], lambda: cli("keys", "limits", str(key["id"]),
                                                    "--rate", "5/s", "--burst", "5"))
        raised, = after_change([load], lambda: put_limits(gateway.stack, key["id"],
                                                          {"rate": "1000/s"}))
    counts = tally(lowered)
    assert set(counts) == {(200, None), (429, "rate_limited")}, counts
    # A full bucket of 5 when the watch starts, and 5 a second after.
    assert counts[(200, None)] <= 5 + 5 * WATCH_S, counts
    assert tally(raised) == {(200, None): len(raised)}, tally(raised)
    assert_metered(gateway.ledger, key["id"], load.answers)


# -- the filter's configuration, and the sidecar's loss ------------------------

@pytest.fixture(scope="module")
def quiet_gateway(tmp_path_factory, filter_build) -> Gateway:
    """A SQLite stack of its own whose filter puts no RateLimit field on an
    allowed answer; a test may stop its sidecar (started again at the end)."""
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-quotas"),
                                   {"limits": {"ratelimit_headers": False}}) as gw:
        yield gw


def test_allowed_answers_carry_no_ratelimit_when_the_config_turns_it_off(quiet_gateway: Gateway):
    gw = quiet_gateway
    key = gw.new_key("quiet", "--quota", "requests=3/day")
    for _ in range(3):
        resp = gw.post(BODY, key["key"])
        assert resp.status_code == 200, resp.text
        assert "ratelimit" not in resp.headers, resp.headers
    # A denial still says why and until when.
    denial = assert_limited(gw.post_refused(BODY, key["key"]), "quota_exceeded",
                            {"requests": (3, DAY_S)})
    assert_resets_at_window_end(denial, "day", time.time())


def test_the_sidecar_killed_while_a_key_holds_a_grant(quiet_gateway: Gateway):
    gw = quiet_gateway
    key = gw.new_key("grant-holder", "--quota", "requests=100/day")
    warm = []
    for _ in range(10):
        began = time.monotonic()
        warm.append(Sent(gw.post(BODY, key["key"]), began, time.monotonic(), time.time()))
    assert tally(warm) == {(200, None): 10}, tally(warm)

    assert gw.stack.sidecar.stop(signal.SIGKILL) is not None
    outage = []
    try:
        # The counter is final now: what it charged beyond the 10 served,
        # this Envoy holds at most.
        held = reconciled(gw.stack.cli, key["id"])["requests"]["charged"] - len(warm)
        assert held >= 1, f"the Envoy holds no grant of the key ({held + len(warm)} charged)"
        for _ in range(held + 15):
            began = time.monotonic()
            outage.append(Sent(gw.post(BODY, key["key"]), began, time.monotonic(), time.time()))
    finally:
        gw.stack.start_sidecar()

    statuses = [s.status for s in outage]
    from_grant = statuses.index(503) if 503 in statuses else len(statuses)
    assert 1 <= from_grant <= held, \
        f"{from_grant} served from a grant of at most {held} with the sidecar down: {statuses}"
    assert set(statuses[:from_grant]) == {200}, statuses
    for s in outage[from_grant:]:
        assert_error(s.resp, 503, "auth_unavailable")
    assert_metered(gw.ledger, key["id"], warm + outage)
    counted = reconciled(gw.stack.cli, key["id"])["requests"]
    assert counted["ledger"] == len(warm) + from_grant, counted
    print(f"sidecar killed: {from_grant} served from the grant (held at most {held}), "
          f"then {len(statuses) - from_grant} answered 503")


# -- a fleet (3 Envoys, 2 sidecars, MariaDB), last: it runs beside nothing else --

def test_a_daily_requests_quota_across_a_fleet(fleet):
    key = fleet.create_key("fleet-quota-200", "--quota", "requests=200/day")
    assert_a_requests_quota_holds(fleet.envoys, fleet.ledger, fleet.cli, key)


def test_a_limit_change_is_in_force_on_every_envoy_of_a_fleet_within_2s(fleet):
    key = fleet.create_key("fleet-quota-changed", "--quota", "requests=100000/day")
    loads = [Load(Gateway(envoy, fleet.ledger), key["key"], workers=2) for envoy in fleet.envoys]
    with contextlib.ExitStack() as running:
        for load in loads:
            running.enter_context(load)
        quota_lowered_and_raised(
            loads,
            lambda: fleet.cli("keys", "limits", str(key["id"]), "--quota", "requests=10/day"),
            lambda: put_limits(fleet.sidecars[1].stack, key["id"],
                               {"quotas": ["requests=100000/day"]}))
    assert_metered(fleet.ledger, key["id"], [a for load in loads for a in load.answers])
    reconciled(fleet.cli, key["id"])


FLEET_UNITS_LIMIT = 24_000
FLEET_UNITS_CONNECTIONS = 24  # 8 an Envoy
#: The settlement period the documented fleet bound counts: "what the other
#: Envoys charged in their last second" (OPERATING.md, the bounds' table).
SETTLEMENT_PERIOD_S = 1.0


def test_a_units_quota_across_a_fleet_overshoots_by_at_most_the_documented_bound(fleet):
    client = Gateway(fleet.envoys[0], fleet.ledger)
    units = units_of(client, BODY)
    limit = FLEET_UNITS_LIMIT
    clear_of_window_end("day", 60)
    key = fleet.create_key("fleet-units", "--quota", f"units={limit}/day")

    sent = offer(fleet.envoys, key["key"], 2 * limit // units,
                 connections=FLEET_UNITS_CONNECTIONS)

    served = sorted((s for s in sent if s.status == 200), key=lambda s: s.ended)
    for s in sent:
        if s.status != 200:
            denial = assert_limited(s.resp, "quota_exceeded", {"units": (limit, DAY_S)})
            assert denial.denied_by.name == "units", denial
    assert_metered(fleet.ledger, key["id"], sent)
    charged, per_request = allowed_sum(fleet.ledger, key["id"], "units")
    assert per_request == {units}, f"rows charged {per_request} units, the ai-server says {units}"
    # When the limit was reached (the answers as the clients saw them end):
    # the requests in flight then (one a connection at most), and what each
    # Envoy charged in the settlement period before.
    reached = next((s.ended for n, s in enumerate(served, 1) if n * units >= limit), None)
    assert reached is not None, f"{len(served)} served x {units} units never reached {limit}"
    in_flight = FLEET_UNITS_CONNECTIONS * units
    last_period = [units * sum(1 for s in served if s.envoy == e
                               and reached - SETTLEMENT_PERIOD_S < s.ended <= reached)
                   for e in range(len(fleet.envoys))]
    others = sum(last_period) - min(last_period)
    bound = limit + in_flight + others
    per_envoy = [sum(1 for s in served if s.envoy == e) for e in range(len(fleet.envoys))]
    said = (f"units={limit}/day over {len(fleet.envoys)} Envoys and {FLEET_UNITS_CONNECTIONS} "
            f"connections: {len(served)} served ({per_envoy} an Envoy) x {units} units = "
            f"{charged} (overshoot {charged - limit}); bound {bound} = limit + {in_flight} in "
            f"flight + {others} the other Envoys charged in their last second "
            f"(by Envoy {last_period}): {tally(sent)}")
    assert limit <= charged <= bound, said
    deadline = time.monotonic() + 5
    while (counter := reconciled(fleet.cli, key["id"])["units"])["charged"] != charged:
        assert time.monotonic() < deadline, f"{counter} after 5 s; {charged} units were served"
        time.sleep(0.25)
    print(said)
