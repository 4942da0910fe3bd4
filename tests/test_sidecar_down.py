"""With the sidecar stopped, cached keys keep passing within the stale bound,
unknown keys get 503 auth_unavailable, and the usage records of what was served
reach the ledger once the sidecar is back: each exactly once. An unknown key
aimed at a cached key's slot cannot take that fallback away."""

from __future__ import annotations

import hashlib
import itertools
import time

import pytest

from conftest import mysql_gateway
from tollgate_tooling.faults import metered_ids
from tollgate_tooling.gateway import Gateway, assert_error

BODY = b'{"text": "metering must survive a sidecar restart"}'


@pytest.fixture(scope="module")
def own_gateway(tmp_path_factory, mysql_server, filter_build) -> Gateway:
    """A stack of its own: this test stops and starts its sidecar."""
    with mysql_gateway(tmp_path_factory.mktemp("stack-down"), mysql_server,
                       "tollgate_e2e_down") as gw:
        yield gw


def test_sidecar_outage(own_gateway: Gateway):
    gw = own_gateway
    cache = gw.stack.config.filter_overrides["key_cache"]
    cached = gw.new_key("cached")
    unknown = gw.new_key("never-seen-by-the-filter")
    warm = gw.post(BODY, cached["key"])
    assert warm.status_code == 200
    served = [warm.headers["x-request-id"]]

    assert gw.stack.sidecar.stop() == 0, "the sidecar did not exit cleanly on SIGTERM"
    # Past the positive TTL, the entry is stale: it still serves while the
    # sidecar cannot answer, up to stale_if_error_s.
    time.sleep(cache["positive_ttl_s"] + 0.5)
    for _ in range(10):
        resp = gw.post(BODY, cached["key"])
        assert resp.status_code == 200, resp.text
        served.append(resp.headers["x-request-id"])
    assert_error(gw.post(BODY, unknown["key"]), 503, "auth_unavailable")
    assert gw.ledger.query("SELECT COUNT(*) AS n FROM usage_log")[0]["n"] <= 1

    gw.stack.start_sidecar()
    for request_id in served:
        gw.ledger.wait_usage_row(request_id, timeout=15)
    assert metered_ids(gw.ledger, cached["id"]) == set(served)
    # And the unknown key is served again once the sidecar answers.
    assert gw.post(BODY, unknown["key"]).status_code == 200


def unkeyed_slot(key: str, slots: int = 16384) -> int:
    """The slot a key had when slots were the first 8 bytes of its SHA-256
    mod the slot count: what anyone could compute offline."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % slots


def test_an_unknown_key_aimed_at_a_cached_keys_slot_cannot_evict_it(own_gateway: Gateway):
    gw = own_gateway
    slots = gw.stack.config.filter_overrides["key_cache"].get("slots", 16384)
    victim = gw.new_key("victim")
    assert gw.post(BODY, victim["key"]).status_code == 200
    target = unkeyed_slot(victim["key"], slots)
    poison = next(k for k in (f"tg_{i:040x}" for i in itertools.count())
                  if unkeyed_slot(k, slots) == target)
    assert_error(gw.post(BODY, poison), 401, "invalid_api_key")

    assert gw.stack.sidecar.stop() == 0
    try:
        resp = gw.post(BODY, victim["key"])
        assert resp.status_code == 200, f"the victim lost its cached verdict: {resp.text}"
    finally:
        gw.stack.start_sidecar()
