"""A usage record the sidecar refuses as impossible costs only itself, on a
real stack: the filter drops it, counts it in
``tollgate_usage_records_refused``, logs its request id, and sends the rest
of its batch again at once, not after the retry backoff.

The record is honestly impossible: the sidecar runs with a short
``TOLLGATE_USAGE_MAX_SKEW`` and is down while the filter serves one request
on its cached verdict; once that record is older than the skew, three more
are served, and the sidecar comes back. The filter's next batch holds the
old record first and the three fresh ones after it: the sidecar refuses it
with 400 naming ``[0].timestamp_ms``. One Envoy worker, so one buffer.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from conftest import sqlite_gateway_of_its_own
from tollgate_tooling.faults import metered_ids
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.stack import USAGE_BUFFERED_GAUGE

BODY = b'{"text": "a record kept too long"}'

#: The sidecar's accepted skew. The fresh records wait at most a sidecar
#: start, the backoff and a tick before their batch arrives, well inside it.
SKEW_S = 10
#: Longest retry backoff: what a refused record would make the rest wait
#: for if the filter took the refusal as a failed flush (the outage has
#: run its backoff up to it by then).
MAX_BACKOFF_MS = 4000
#: How soon after the refusal the rest of its batch must be stored.
RESENT_WITHIN_S = 2.0
REFUSED = "tollgate_usage_records_refused"
INGESTIONS = re.compile(
    r'^tollgate_http_requests_total\{route="/v1/internal/usage",status="(\d+)"\} (\d+)$', re.M)
INSERTED = re.compile(r'^tollgate_usage_rows_ingested_total\{result="inserted"\} (\d+)$', re.M)


@pytest.fixture
def skewed_gateway(tmp_path_factory, filter_build) -> Gateway:
    # The verdict cached at the warm-up outlives the outage: no look-up.
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-refused-record"),
                                   {"usage": {"max_backoff_ms": MAX_BACKOFF_MS},
                                    "key_cache": {"positive_ttl_s": 60, "stale_if_error_s": 120}},
                                   envoy_concurrency=1,
                                   sidecar_env={"TOLLGATE_USAGE_MAX_SKEW": f"{SKEW_S}s"}) as gw:
        yield gw


def served(gw: Gateway, key: str) -> str:
    resp = gw.post(BODY, key)
    assert resp.status_code == 200, resp.text
    return resp.headers["x-request-id"]


def ingestions(gw: Gateway) -> tuple[dict[int, int], int]:
    """The sidecar's answers to usage batches by status, and the records it
    stored, since it started (its /metrics)."""
    text = requests.get(gw.stack.sidecar_url + "/metrics", timeout=10).text
    inserted = INSERTED.search(text)
    return ({int(status): int(n) for status, n in INGESTIONS.findall(text)},
            int(inserted[1]) if inserted else 0)


def test_a_refused_record_is_dropped_and_the_rest_of_its_batch_resent_at_once(
        skewed_gateway: Gateway):
    gw = skewed_gateway
    refused_metric = gw.stack.metric_prefix + REFUSED
    key = gw.new_key("refused-record")
    warm = served(gw, key["key"])
    gw.ledger.wait_usage_row(warm)  # the buffer is empty again
    assert gw.stack.sidecar.stop() == 0

    old_started = time.monotonic()
    old = served(gw, key["key"])
    time.sleep(max(0.0, old_started + SKEW_S + 0.5 - time.monotonic()))
    fresh = {served(gw, key["key"]) for _ in range(3)}
    # The next batch will hold them all, the old record first.
    assert gw.stack.envoy_stats().get(gw.stack.metric_prefix + USAGE_BUFFERED_GAUGE) == 4
    gw.stack.start_sidecar()

    # The refusal, then the rest of its batch in the ledger.
    refused_at = stored_at = None
    deadline = time.monotonic() + MAX_BACKOFF_MS / 1000 + 10
    while stored_at is None and time.monotonic() < deadline:
        if refused_at is None and gw.stack.envoy_stats().get(refused_metric, 0) >= 1:
            refused_at = time.monotonic()
        if fresh <= metered_ids(gw.ledger, key["id"]):
            stored_at = time.monotonic()
        time.sleep(0.05)
    assert refused_at is not None, f"no record refused: {gw.stack.envoy_stats().get(refused_metric)}"
    assert stored_at is not None, "the rest of the refused record's batch was never stored"
    assert stored_at - refused_at <= RESENT_WITHIN_S, \
        f"the rest was stored {stored_at - refused_at:.2f} s after the refusal: it waited"

    assert metered_ids(gw.ledger, key["id"]) == {warm, *fresh}, "the ledger is not the rest"
    # Since the sidecar came back: the one batch refused, then its rest
    # stored as one batch.
    assert ingestions(gw) == ({400: 1, 200: 1}, 3)
    assert gw.stack.envoy_stats().get(refused_metric) == 1
    logged = [line for line in gw.stack.envoy.log_text().splitlines()
              if f"the sidecar refused usage record {old}" in line]
    assert len(logged) == 1, f"Envoy's log names the refused record {len(logged)} times"
    assert "record 0: timestamp_ms" in logged[0], logged[0]
    print(f"refused record {old} dropped; the rest of its batch stored "
          f"{stored_at - refused_at:.2f} s after the refusal was counted")
