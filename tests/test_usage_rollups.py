"""Usage rollups on the real stack, both backends: traffic through Envoy shows
up in ``usage summary`` (read from the hourly and daily rollups) and in the
series the console plots (``GET /v1/keys/{id}/usage/series``), counted
exactly as ``usage_log`` holds it (requests, bytes and the upstream's
units), denials by code; ``usage prune`` keeps both.
"""

from __future__ import annotations

import json
import time

import requests

from tollgate_tooling.gateway import Gateway, assert_error

BODIES = [b'{"text": "hello"}', b'{"text": "a longer piece of text to analyse"}',
          b'{"text": "' + b"x" * 900 + b'"}']


def admin_get(gw: Gateway, path: str) -> requests.Response:
    return requests.get(gw.stack.sidecar_url + path, timeout=30,
                        headers={"Authorization": f"Bearer {gw.stack.config.admin_token}"})


def wait_rows(gw: Gateway, key_id: int, count: int, timeout: float = 15.0) -> list[dict]:
    """The usage rows of ``key_id`` once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = gw.ledger.query("SELECT outcome, request_bytes, response_bytes, units "
                               "FROM usage_log WHERE api_key_id = ?", [key_id])
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, f"{len(rows)} usage rows for key {key_id}, not {count}"
            return rows
        time.sleep(0.2)


def test_summary_and_series_see_the_traffic(any_gateway: Gateway):
    gw = any_gateway
    key = gw.new_key("rollups-e2e")
    key_id = key["id"]
    served = [gw.post(body, key["key"]) for body in BODIES for _ in range(3)]
    assert [r.status_code for r in served] == [200] * 9, [r.text[:200] for r in served]
    for _ in range(2):
        assert_error(gw.post(BODIES[0], key["key"], gw.token(BODIES[0], secret="x" * 40)),
                     401, "invalid_signature")

    rows = wait_rows(gw, key_id, 11)
    allowed = [r for r in rows if r["outcome"] == "allowed"]
    assert len(allowed) == 9
    assert sum(r["request_bytes"] for r in allowed) == 3 * sum(len(b) for b in BODIES)
    assert all(r["units"] == 0 for r in rows if r["outcome"] != "allowed"), \
        "a denied request never reached the upstream that reports units"
    ledger = {}
    for r in rows:
        n, rq, rs, un = ledger.get(r["outcome"], (0, 0, 0, 0))
        ledger[r["outcome"]] = (n + 1, rq + r["request_bytes"], rs + r["response_bytes"],
                                un + r["units"])

    # The summary, over HTTP and from the CLI, is the ledger's totals.
    resp = admin_get(gw, f"/v1/usage/summary?key={key_id}")
    assert resp.status_code == 200, resp.text
    summary = {r["outcome"]: (r["requests"], r["request_bytes"], r["response_bytes"], r["units"])
               for r in resp.json()["rows"]}
    assert summary == ledger
    summary_rows = resp.json()["rows"]
    cli = json.loads(gw.stack.cli("usage", "summary", "--key", str(key_id), "--since", "1h",
                                  "--json").stdout)
    assert cli["rows"] == resp.json()["rows"]

    # Every window of the series holds the same traffic, all of it in its
    # last bucket or two (a bucket may have ended since), denials by code.
    for window, buckets in (("hour", 60), ("day", 24), ("30d", 30)):
        resp = admin_get(gw, f"/v1/keys/{key_id}/usage/series?window={window}")
        assert resp.status_code == 200, resp.text
        series = resp.json()
        assert series["key_id"] == key_id and series["window"] == window
        points = series["points"]
        assert len(points) == buckets
        assert sum(p["requests"] for p in points) == 11, series
        assert sum(p["request_bytes"] for p in points) == sum(v[1] for v in ledger.values())
        assert sum(p["response_bytes"] for p in points) == sum(v[2] for v in ledger.values())
        assert sum(p["units"] for p in points) == sum(v[3] for v in ledger.values())
        denials = {}
        for p in points:
            for code, n in p["denials"].items():
                denials[code] = denials.get(code, 0) + n
        assert denials == {"invalid_signature": 2}, series
        assert all(p["requests"] == 0 for p in points[:-2]), series

    bad_window = admin_get(gw, f"/v1/keys/{key_id}/usage/series?window=week")
    assert bad_window.status_code == 400
    assert bad_window.json()["error"]["field"] == "window"
    assert admin_get(gw, "/v1/keys/987654/usage/series?window=day").status_code == 404
    unauthenticated = requests.get(
        gw.stack.sidecar_url + f"/v1/keys/{key_id}/usage/series?window=day", timeout=10)
    assert unauthenticated.status_code == 401

    # Pruning what is older than a day deletes none of this, and the
    # summary stays the ledger's.
    pruned = json.loads(gw.stack.cli("usage", "prune", "--older-than", "1d", "--json").stdout)
    assert pruned["deleted"] == 0, pruned
    assert len(wait_rows(gw, key_id, 11)) == 11
    assert admin_get(gw, f"/v1/usage/summary?key={key_id}").json()["rows"] == summary_rows
