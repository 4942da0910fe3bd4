"""Ingestion refuses what cannot be true, on the real stack and both backends.

Whoever holds the internal token could store records no exchange can
produce: byte counts near 2^63 (two of them overflowed SQLite's ``SUM``, so
``tollgate usage summary`` failed for every key), key ids no key has,
timestamps of 0 or the year 9999, outcomes outside the contract. Each is
posted here straight to the sidecar, as the filter would post it: the batch
is refused with 400 ``invalid_request`` naming the record and field
(``[2].request_bytes``), nothing of it is stored, and the summary still works.
"""

from __future__ import annotations

import json
import secrets
import time

import requests

from tollgate_tooling.gateway import Gateway

#: The last instant a MySQL DATETIME holds (end of the year 9999).
YEAR_9999_MS = 253_402_300_799_999
DAY_MS = 86_400_000


def honest(key_id: int, request_id: str) -> dict:
    """A record as the filter sends it for a request that just ended."""
    return {"request_id": request_id, "api_key_id": key_id, "method": "POST",
            "endpoint": "/proxy/analyze", "status_code": 200, "outcome": "allowed",
            "request_bytes": 120, "response_bytes": 48, "units": 17, "duration_ms": 5,
            "timestamp_ms": int(time.time() * 1000)}


def ingest(gw: Gateway, records: list[dict]) -> requests.Response:
    return requests.post(gw.stack.sidecar_url + "/v1/internal/usage", data=json.dumps(records),
                         headers={"Content-Type": "application/json",
                                  "x-tollgate-internal-token": gw.stack.config.internal_token},
                         timeout=30)


def stored(gw: Gateway, prefix: str) -> int:
    return gw.ledger.query("SELECT COUNT(*) AS n FROM usage_log WHERE request_id LIKE ?",
                           [prefix + "%"])[0]["n"]


def summary_works(gw: Gateway, key_id: int) -> list[dict]:
    """``usage summary`` answers for every key, over HTTP and from the CLI;
    the rows of ``key_id``, which both agree on.

    The whole table is not compared across the two reads: other tests' usage
    batches still land on this shared stack between them.
    """
    auth = {"Authorization": f"Bearer {gw.stack.config.admin_token}"}
    url = gw.stack.sidecar_url + "/v1/usage/summary"
    resp = requests.get(url, timeout=30, headers=auth)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    cli = gw.stack.cli("usage", "summary", "--json", check=False)
    assert cli.returncode == 0, cli.stderr
    resp = requests.get(url, params={"key": key_id}, timeout=30, headers=auth)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    cli = gw.stack.cli("usage", "summary", "--key", str(key_id), "--json", check=False)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["rows"] == resp.json()["rows"]
    return resp.json()["rows"]


def test_forged_records_are_refused_and_the_summary_keeps_working(any_gateway: Gateway):
    gw = any_gateway
    key = gw.new_key("forged-records")
    prefix = f"forged-{secrets.token_hex(6)}-"
    now = int(time.time() * 1000)
    forgeries = [
        ("request_bytes", 2**63 - 1),
        ("response_bytes", 2**63 - 1),
        ("units", 2**40 + 1),
        ("api_key_id", key["id"] + 1_000_000),
        ("timestamp_ms", 0),
        ("timestamp_ms", YEAR_9999_MS),
        ("timestamp_ms", now - 2 * DAY_MS),
        ("outcome", "made_up"),
    ]
    for n, (field, value) in enumerate(forgeries):
        batch = [honest(key["id"], f"{prefix}{n}-{i}") for i in range(3)]
        batch[2][field] = value
        resp = ingest(gw, batch)
        assert resp.status_code == 400, f"{field}={value}: {resp.status_code} {resp.text[:300]}"
        error = resp.json()["error"]
        assert error["code"] == "invalid_request", error
        assert error["field"] == f"[2].{field}", error
    assert stored(gw, prefix) == 0

    # The finding itself: two records of 2^63-1 bytes, which made every
    # later summary fail with 503.
    pair = [honest(key["id"], f"{prefix}max-{i}") for i in range(2)]
    for r in pair:
        r["request_bytes"] = 2**63 - 1
    resp = ingest(gw, pair)
    assert resp.status_code == 400, resp.text[:300]
    assert resp.json()["error"]["field"] == "[0].request_bytes"
    assert stored(gw, prefix) == 0
    summary_works(gw, key["id"])

    # Honest records still go in and are summed.
    resp = ingest(gw, [honest(key["id"], f"{prefix}ok-{i}") for i in range(3)])
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["inserted"] == 3
    rows = summary_works(gw, key["id"])
    assert rows == [{"api_key_id": key["id"], "outcome": "allowed", "requests": 3,
                     "request_bytes": 360, "response_bytes": 144, "units": 51,
                     "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0,
                     "reasoning_tokens": 0, "cost_micros": None, "currency": None,
                     "priced_rows": 0, "unpriced_rows": 0}], rows
