"""The filter's bounds with the sidecar down, each on a stack of its own:

* a key verified before the outage keeps passing on its stale verdict only
  until ``stale_if_error_s`` has passed since that verification; then it gets
  503 ``auth_unavailable`` and the request never reaches the AI service;
* the usage buffer holds at most ``usage.buffer_cap`` records: the ones
  past it are dropped and counted in ``tollgate_usage_records_dropped``, and
  once the sidecar is back the ledger holds exactly the ones kept (one Envoy
  worker, so one buffer).
"""

from __future__ import annotations

import time

import pytest

from conftest import sqlite_gateway_of_its_own
from tollgate_tooling.faults import metered_ids
from tollgate_tooling.gateway import Gateway, assert_error
from tollgate_tooling.stack import USAGE_BUFFERED_GAUGE

BODY = b'{"text": "how long does a verdict last?"}'

STALE = {"positive_ttl_s": 1, "negative_ttl_s": 1, "stale_if_error_s": 4}
BUFFER_CAP = 5
DROPPED = "tollgate_usage_records_dropped"


@pytest.fixture
def stale_gateway(tmp_path_factory, filter_build) -> Gateway:
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-stale"),
                                   {"key_cache": STALE}) as gw:
        yield gw


@pytest.fixture
def capped_gateway(tmp_path_factory, filter_build) -> Gateway:
    # A cached verdict outlives the outage, so requests keep passing.
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-capped"),
                                   {"usage": {"buffer_cap": BUFFER_CAP},
                                    "key_cache": {"positive_ttl_s": 60, "stale_if_error_s": 120}},
                                   envoy_concurrency=1) as gw:
        yield gw


def test_a_stale_verdict_serves_only_within_stale_if_error(stale_gateway: Gateway):
    gw = stale_gateway
    key = gw.new_key("stale-bound")
    verified_at = time.monotonic()
    assert gw.post(BODY, key["key"]).status_code == 200  # verified: the verdict's age starts
    assert gw.stack.sidecar.stop() == 0

    time.sleep(max(0.0, verified_at + STALE["positive_ttl_s"] + 0.5 - time.monotonic()))
    stale = gw.post(BODY, key["key"])
    assert stale.status_code == 200, f"within stale_if_error_s: {stale.text}"

    time.sleep(max(0.0, verified_at + STALE["stale_if_error_s"] + 0.5 - time.monotonic()))
    assert_error(gw.post_refused(BODY, key["key"]), 503, "auth_unavailable")

    gw.stack.start_sidecar()
    assert gw.post(BODY, key["key"]).status_code == 200


def test_records_past_the_buffer_cap_are_dropped_and_counted(capped_gateway: Gateway):
    gw = capped_gateway
    key = gw.new_key("capped")
    warm = gw.post(BODY, key["key"])
    assert warm.status_code == 200
    gw.ledger.wait_usage_row(warm.headers["x-request-id"])  # the buffer is empty again
    dropped_before = gw.stack.envoy_stats().get(gw.stack.metric_prefix + DROPPED, 0)
    assert gw.stack.sidecar.stop() == 0

    served = []
    for _ in range(BUFFER_CAP + 7):
        resp = gw.post(BODY, key["key"])
        assert resp.status_code == 200, resp.text
        served.append(resp.headers["x-request-id"])
    stats = gw.stack.envoy_stats()
    assert stats[f"{gw.stack.metric_prefix}{USAGE_BUFFERED_GAUGE}"] == BUFFER_CAP, stats
    assert stats.get(gw.stack.metric_prefix + DROPPED, 0) - dropped_before == 7, "dropped records not counted"

    gw.stack.start_sidecar()
    kept = {warm.headers["x-request-id"], *served[:BUFFER_CAP]}
    deadline = time.monotonic() + 15
    while metered_ids(gw.ledger, key["id"]) != kept and time.monotonic() < deadline:
        time.sleep(0.2)
    # The oldest records are kept; the ones that found the buffer full are not.
    assert metered_ids(gw.ledger, key["id"]) == kept
