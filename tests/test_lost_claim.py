"""A fleet claim whose answer is lost (``jwt.replay_scope: "fleet"``) fails
closed and gives the instance's claim back, on a real stack on MariaDB.

The test holds a lock on ``jti_claims`` (a transaction that read every row
and gap of it ``FOR UPDATE``), so the sidecar's insert of the claim waits in
the database until the filter's callout timeout has run out: the client gets
503 ``auth_unavailable`` and the AI service sees nothing. Then the abandoned
insert meets one of two fates, and the retry of the same token tells them
apart. Either way the retry is sent to the sidecar's claim route again,
which it would not be if the instance's own store still held the ``jti``:

* the insert is killed (``KILL QUERY``): nothing reached the ledger of
  claims, and the retry passes;
* the lock is released: the insert lands after Envoy gave up, and the retry
  is refused by the fleet (the claim route answers it), 401
  ``replayed_token``.
"""

from __future__ import annotations

import collections
import contextlib
import re
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests

from conftest import TEST_FILTER_OVERRIDES, mysql_gateway
from tollgate_tooling import envoy_config
from tollgate_tooling.gateway import Gateway, assert_error, mysql_connect

BODY = b'{"text": "a claim whose answer never came"}'

#: The filter's wait for the claim's answer; a retry's claim must come back
#: within it on two cores shared with the whole stack.
CALLOUT_TIMEOUT_MS = 1000
#: How much later than the callout timeout the 503 may come.
LATENCY_MARGIN_S = 2.5

CLAIM_ANSWERS = re.compile(
    r'^tollgate_http_requests_total\{route="/v1/internal/jti/claim",status="(\d+)"\} (\d+)$',
    re.M)
FLEET_FAILURES = "tollgate_replay_fleet_failures"


@pytest.fixture(scope="module")
def claiming(tmp_path_factory, mysql_server, filter_build) -> Gateway:
    """Fleet-wide replay protection on a stack of its own; a verdict is
    cached for the whole module, so no key look-up joins the claims."""
    overrides = envoy_config.merge_overrides(TEST_FILTER_OVERRIDES, {
        "key_cache": {"positive_ttl_s": 300, "stale_if_error_s": 300},
        "callout_timeout_ms": CALLOUT_TIMEOUT_MS,
        "jwt": {"require_jti": True, "replay_scope": "fleet"},
    })
    with mysql_gateway(tmp_path_factory.mktemp("stack-lost-claim"), mysql_server,
                       "tollgate_e2e_lost_claim", filter_overrides=overrides) as gw:
        yield gw


@contextlib.contextmanager
def claims_locked(gw: Gateway):
    """Holds every row and gap of ``jti_claims`` until the block ends: a
    claim's insert waits for the lock (InnoDB's lock wait, 50 s)."""
    url = gw.ledger.mysql_url
    conn = mysql_connect(url, urlparse(url).path.lstrip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("BEGIN")
            cur.execute("SELECT fingerprint FROM jti_claims FOR UPDATE")
            yield
            cur.execute("COMMIT")
    finally:
        conn.close()


def waiting_inserts(gw: Gateway) -> list[int]:
    """The database threads whose claim insert is under way."""
    return [row["ID"] for row in gw.ledger.query(
        "SELECT ID FROM information_schema.PROCESSLIST "
        "WHERE DB = DATABASE() AND INFO LIKE ?", ["INSERT INTO jti_claims%"])]


def claim_answers(gw: Gateway) -> collections.Counter:
    """The sidecar's answers to fleet claims so far, by status (its /metrics)."""
    text = requests.get(gw.stack.sidecar_url + "/metrics", timeout=10).text
    return collections.Counter({int(status): int(n) for status, n in CLAIM_ANSWERS.findall(text)})


def claims_stored(gw: Gateway, key_id: int) -> int:
    return gw.ledger.query("SELECT COUNT(*) AS n FROM jti_claims WHERE api_key_id = ?",
                           [key_id])[0]["n"]


def fleet_failures(gw: Gateway) -> int:
    return int(gw.stack.envoy_stats().get(gw.stack.metric_prefix + FLEET_FAILURES) or 0)


def wait_for(what: str, done, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def lose_the_claims_answer(gw: Gateway, key: str, token: str) -> int:
    """Sends ``token`` while the claim's insert waits for the lock: 503
    ``auth_unavailable`` at the callout timeout, counted as a fleet claim
    failure, nothing reached the AI service, and the insert still waits in
    the database. Returns the database thread of that insert."""
    failures = fleet_failures(gw)
    started = time.monotonic()
    lost = gw.post_refused(BODY, key, token)
    took = time.monotonic() - started
    assert_error(lost, 503, "auth_unavailable")
    assert took >= CALLOUT_TIMEOUT_MS / 1000, f"refused after {took:.2f} s, before the callout timeout"
    assert took < CALLOUT_TIMEOUT_MS / 1000 + LATENCY_MARGIN_S, f"refused only after {took:.2f} s"
    assert fleet_failures(gw) == failures + 1
    waiting = waiting_inserts(gw)
    assert len(waiting) == 1, f"claim inserts under way after Envoy gave up: {waiting}"
    return waiting[0]


def test_a_lost_claim_fails_closed_and_gives_the_instances_claim_back(claiming: Gateway):
    gw = claiming
    key = gw.new_key("lost-claim")
    warm = gw.post(BODY, key["key"], gw.token(BODY, jti=uuid.uuid4().hex))
    assert warm.status_code == 200, warm.text
    upstream = gw.upstream_seen()["count"]

    # 1. The abandoned insert is killed: the retry passes.
    token = gw.token(BODY, jti=uuid.uuid4().hex)
    stored, answers = claims_stored(gw, key["id"]), claim_answers(gw)
    with claims_locked(gw):
        thread = lose_the_claims_answer(gw, key["key"], token)
        gw.ledger.query(f"KILL QUERY {int(thread)}")
        wait_for("the killed insert ending", lambda: not waiting_inserts(gw))
    assert claims_stored(gw, key["id"]) == stored, "the killed claim is stored"

    again = gw.post(BODY, key["key"], token)
    assert again.status_code == 200, f"the retry: {again.status_code} {again.text[:300]}"
    assert claim_answers(gw)[200] == answers[200] + 1, "the retry made no claim call"
    assert claims_stored(gw, key["id"]) == stored + 1
    assert gw.upstream_seen()["count"] == upstream + 1
    # Now the instance holds the jti: refused here, with no claim call.
    assert_error(gw.post_refused(BODY, key["key"], token), 401, "replayed_token")
    assert claim_answers(gw)[200] == answers[200] + 1, "the instance asked the fleet"

    # 2. The abandoned insert lands after Envoy gave up: the fleet refuses
    # the retry, and the instance did ask it.
    token = gw.token(BODY, jti=uuid.uuid4().hex)
    stored = claims_stored(gw, key["id"])
    with claims_locked(gw):
        lose_the_claims_answer(gw, key["key"], token)
    wait_for("the abandoned claim stored", lambda: claims_stored(gw, key["id"]) == stored + 1)
    # Whatever the sidecar still made of it is answered by now.
    time.sleep(0.5)
    answers = claim_answers(gw)

    assert_error(gw.post_refused(BODY, key["key"], token), 401, "replayed_token")
    assert claim_answers(gw)[200] == answers[200] + 1, \
        "the retry made no claim call: the instance's own store refused it"
    assert gw.upstream_seen()["count"] == upstream + 1
