"""No grant is ever lost, and the API key alone charges nothing (docs/OPERATING.md,
"Limits and quotas"; docs/LIMITS.md, "No grant is lost").

A victim key with ``requests`` and ``request_bytes`` quotas, on a stack of
its own whose sidecar reaches MariaDB through a TCP forwarder the test can
stall. Each test attacks or abuses the key, then reads the counters the
sidecar keeps for it (``limit_counters``, ``limit_charges``) and sends the
key's own well-signed calls, which must pass:

* 6 rounds of 150 connections, each sending the victim's key with a token
  signed by a wrong secret, reset (SO_LINGER 0) before the verdict: nothing
  is charged;
* the same with well-signed requests whose client gives up mid-body;
* the same with the sidecar slowed past the callout timeout (its database
  answers slowly), so verify calls time out in the filter while the
  sidecar still completes them;
* a warm key whose grant calls time out while the database is stalled: the
  requests that waited share one ask, which the tick takes in once the
  sidecar answers again; one grant reaches the counter, not one per request.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from conftest import mysql_gateway_via_forwarder
from tollgate_tooling.faults import TcpForwarder
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

BODY = json.dumps({"text": "the victim's own words"}).encode()
LIMIT = 1000
LIMIT_BYTES = 1 << 20
QUOTAS = ("--quota", f"requests={LIMIT}/month", "--quota", f"request_bytes={LIMIT_BYTES}/month")
ROUNDS = 6
CONNECTIONS = 150
#: How long each round's connections live before their reset.
RESET_AFTER_S = (0.005, 0.02, 0.005, 0.05, 0.005, 0.1)


@pytest.fixture(scope="module")
def stalled(tmp_path_factory, mysql_server, filter_build):
    """(gateway, forwarder): a stack whose database link the test can stall."""
    with mysql_gateway_via_forwarder(tmp_path_factory.mktemp("stack-grant-loss"), mysql_server,
                                     "tollgate_e2e_grant_loss") as running:
        yield running


@pytest.fixture
def gw(stalled) -> Gateway:
    gateway, forwarder = stalled
    forwarder.restore()
    return gateway


@pytest.fixture
def forwarder(stalled) -> TcpForwarder:
    return stalled[1]


def victim(gw: Gateway, name: str) -> dict:
    return gw.new_key(name, *QUOTAS)


def charged(gw: Gateway, key_id: int) -> dict[str, int]:
    """What the counters hold for the key, per quota (every window)."""
    rows = gw.ledger.query(
        "SELECT quota, SUM(charged) AS charged FROM limit_counters WHERE api_key_id = ? "
        "GROUP BY quota", [key_id])
    return {row["quota"]: int(row["charged"]) for row in rows}


def grants_charged(gw: Gateway, key_id: int) -> list[dict]:
    return gw.ledger.query(
        "SELECT charge_id, quota, amount FROM limit_charges WHERE api_key_id = ? "
        "AND kind = 'grant'", [key_id])


def verify_calls(gw: Gateway) -> int:
    """Verify calls the sidecar has answered (its histogram's count)."""
    text = requests.get(gw.stack.sidecar_url + "/metrics", timeout=10).text
    found = re.search(r"^tollgate_key_verify_duration_seconds_count (\d+)", text, re.M)
    assert found, "the sidecar's /metrics has no tollgate_key_verify_duration_seconds_count"
    return int(found.group(1))


def raw_request(key: str, token: str, body: bytes, sent: bytes) -> bytes:
    """A POST of ``body`` (``content-length`` says all of it) whose bytes
    on the wire stop after ``sent`` of the body."""
    head = (f"POST /proxy/analyze HTTP/1.1\r\nHost: gateway\r\n"
            f"Authorization: Bearer {key}\r\nX-Auth-Token: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + sent


def reset_round(gw: Gateway, requests_bytes: list[bytes], hold_s: float) -> None:
    """Opens one connection per request, sends each, waits ``hold_s``, then
    resets every connection (SO_LINGER 0: an RST, not a FIN)."""
    url = urlparse(gw.stack.gateway)
    sockets = []
    try:
        for payload in requests_bytes:
            sock = socket.create_connection((url.hostname, url.port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sockets.append(sock)
            sock.sendall(payload)
        time.sleep(hold_s)
    finally:
        for sock in sockets:
            sock.close()


def own_calls_pass(gw: Gateway, key: str, count: int = 20) -> None:
    statuses = [gw.post(BODY, key).status_code for _ in range(count)]
    assert statuses == [200] * count, f"the victim's own calls: {statuses}"


def assert_nothing_charged(gw: Gateway, key: dict, what: str) -> None:
    # Grants in flight when the connections were reset would reach the
    # counters within a grant call's timeout and a tick.
    time.sleep(3)
    assert charged(gw, key["id"]) in ({}, {"requests": 0, "request_bytes": 0}), (
        f"{what} charged the victim's quotas: {charged(gw, key['id'])}")
    assert grants_charged(gw, key["id"]) == [], f"{what} took grants"


def test_resets_before_the_verdict_with_a_wrong_signature_charge_nothing(gw: Gateway):
    key = victim(gw, "victim-forged")
    before = verify_calls(gw)
    # Resets at several delays: on a busy machine the verdict may take
    # from a few to many milliseconds, and the attack must catch it in
    # flight.
    for hold_s in RESET_AFTER_S:
        forged = [raw_request(key["key"], gw.token(BODY, secret="not-the-secret" * 3), BODY, BODY)
                  for _ in range(CONNECTIONS)]
        reset_round(gw, forged, hold_s=hold_s)
    verified = verify_calls(gw) - before
    print(f"{verified} verify calls answered for {ROUNDS * CONNECTIONS} reset connections")
    assert verified >= 1, "the attack never reached the key's verification"
    assert_nothing_charged(gw, key, "forged requests reset before their verdict")
    own_calls_pass(gw, key["key"])


def test_well_signed_clients_that_give_up_mid_body_charge_nothing(gw: Gateway):
    key = victim(gw, "victim-gave-up")
    half = BODY[: len(BODY) // 2]
    for n in range(ROUNDS):
        # Some rounds reset before the verdict, some after it (the body
        # never completes, so no request reaches the limits step).
        gave_up = [raw_request(key["key"], gw.token(BODY), BODY, half) for _ in range(CONNECTIONS)]
        reset_round(gw, gave_up, hold_s=0.005 if n % 2 == 0 else 0.3)
    assert_nothing_charged(gw, key, "requests given up mid-body")
    own_calls_pass(gw, key["key"])


def test_forged_requests_while_the_sidecar_is_slower_than_the_callout_timeout_charge_nothing(
        gw: Gateway, forwarder: TcpForwarder):
    key = victim(gw, "victim-slow-sidecar")
    # Each database round trip takes 2 x 0.2 s: a verify call answers
    # after the filter's 0.5 s callout timeout, while the sidecar still
    # completes it.
    forwarder.slow(0.2)
    try:
        for n in range(ROUNDS):
            forged = [raw_request(key["key"], gw.token(BODY, secret="not-the-secret" * 3),
                                  BODY, BODY) for _ in range(CONNECTIONS)]
            reset_round(gw, forged, hold_s=0.005 if n % 2 == 0 else 0.7)
        time.sleep(2)  # what the sidecar still works on completes
    finally:
        forwarder.restore()
    assert_nothing_charged(gw, key, "forged requests while the sidecar was slow")
    own_calls_pass(gw, key["key"])


def test_grant_calls_that_time_out_leave_one_ask_that_the_tick_takes_in(
        gw: Gateway, forwarder: TcpForwarder):
    key = victim(gw, "victim-slow-grants")
    assert gw.post(BODY, key["key"]).status_code == 200
    first = grants_charged(gw, key["id"])
    held = sum(g["amount"] for g in first if g["quota"] == "requests") - 1
    forwarder.stall()
    try:
        # Spend what the first grant left, then wait on grant calls that
        # cannot be answered: each request fails closed at the timeout.
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: gw.post(BODY, key["key"]).status_code,
                                    range(held + 64)))
    finally:
        forwarder.restore()
    assert answers.count(200) <= held and 503 in answers, answers
    time.sleep(5)  # the resent ask is answered, and taken in on a tick
    grants = [g for g in grants_charged(gw, key["id"]) if g not in first]
    by_quota = {q: [g for g in grants if g["quota"] == q] for q in ("requests", "request_bytes")}
    assert all(len(g) <= 1 for g in by_quota.values()), (
        f"more than one ask per quota reached the counters while its calls timed out: {grants}")
    own_calls_pass(gw, key["key"])
