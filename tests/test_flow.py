"""The README's story, end to end: a client with a key and a token calls the
AI service through Envoy, gets its answer untouched, and is metered."""

from __future__ import annotations

import json

import pytest

from tollgate_tooling.gateway import ANALYZE, Gateway, assert_error


def analyze_body(text: str) -> bytes:
    return json.dumps({"text": text}, ensure_ascii=False).encode()


def test_valid_request_returns_the_ai_servers_answer_and_is_metered(any_gateway: Gateway):
    gw = any_gateway
    key = gw.new_key("story")
    body = analyze_body("what the fuck, 이 시발 놈아")

    resp = gw.post(body, key["key"])

    assert resp.status_code == 200, resp.text
    direct = gw.analyze_direct(body)
    assert resp.content == direct.content, "the gateway changed the ai-server's answer"
    assert resp.json()["profane"] is True
    request_id = resp.headers["x-request-id"]
    row = gw.ledger.wait_usage_row(request_id)
    assert row["api_key_id"] == key["id"]
    assert row["endpoint"] == ANALYZE
    assert row["method"] == "POST"
    assert row["status_code"] == 200
    assert row["outcome"] == "allowed"
    assert row["request_bytes"] == len(body)
    assert row["response_bytes"] == len(resp.content)


def test_the_gateway_mints_the_request_id_not_the_client(gateway: Gateway):
    key = gateway.new_key("request-ids")
    body = analyze_body("hello")
    chosen = "client-chosen-id"

    first = gateway.post(body, key["key"], headers={"X-Request-Id": chosen})
    second = gateway.post(body, key["key"], headers={"X-Request-Id": chosen})

    assert first.status_code == second.status_code == 200
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert chosen not in ids and len(ids) == 2
    for request_id in ids:
        gateway.ledger.wait_usage_row(request_id)
    assert gateway.ledger.usage_rows(chosen) == []


def test_upstream_sees_no_credentials_and_no_denied_request(gateway: Gateway):
    key = gateway.new_key("hygiene")
    body = analyze_body("clean words only")
    before = gateway.upstream_seen()["count"]

    denied = [
        gateway.post(body, None),
        gateway.post(body, "tg_not_a_registered_key"),
        gateway.post(body, key["key"], token="not.a.token"),
        gateway.post(body, key["key"], token=gateway.token(b"another body")),
    ]
    assert [r.status_code for r in denied] == [401, 401, 401, 401]
    assert gateway.upstream_seen()["count"] == before, "a denied request reached the upstream"

    passed = gateway.post(body, key["key"], headers={"X-Tollgate-Key-Id": "999"})
    assert passed.status_code == 200, passed.text
    seen = gateway.upstream_seen()
    assert seen["count"] == before + 1
    headers = seen["last_headers"][-1]
    assert "authorization" not in headers
    assert "x-auth-token" not in headers
    assert headers["x-tollgate-key-id"] == str(key["id"]), "a client chose its key id"


def test_the_gateway_reuses_its_connections_to_the_ai_server(gateway: Gateway):
    """gunicorn's gthread workers keep a connection alive, so Envoy sends
    request after request on it instead of opening one per request (sync
    workers closed each one after its answer)."""
    key = gateway.new_key("keepalive")
    body = analyze_body("hello")
    opened = "cluster.ai_server.upstream_cx_total"
    before = gateway.stack.envoy_stats()[opened]
    for _ in range(20):
        resp = gateway.post(body, key["key"])
        assert resp.status_code == 200, resp.text
    new = gateway.stack.envoy_stats()[opened] - before
    assert new <= 2, f"{new} new upstream connections for 20 requests on one client connection"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [0, 1024, 900 * 1024], ids=["0B", "1KiB", "900KiB"])
def test_bodies_up_to_the_limit_pass(gateway: Gateway, size: int, chunked: bool):
    key = gateway.new_key(f"body-{size}-{chunked}")
    body = analyze_body("a" * max(size - 12, 0))[:size] if size else b""

    resp = gateway.post(body, key["key"], chunked=chunked)

    if size == 0:
        # The ai-server refuses an empty body; the gateway let it through.
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "bad_request"
    else:
        assert len(body) == size
        assert resp.status_code == 200, resp.text[:300]
    row = gateway.ledger.wait_usage_row(resp.headers["x-request-id"])
    assert row["request_bytes"] == size
    assert row["response_bytes"] == len(resp.content)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_413(gateway: Gateway, chunked: bool):
    key = gateway.new_key(f"big-{chunked}")
    body = analyze_body("b" * (2 * 1024 * 1024))
    before = gateway.upstream_seen()["count"]

    resp = gateway.post(body, key["key"], chunked=chunked)

    assert_error(resp, 413, "payload_too_large")
    assert gateway.upstream_seen()["count"] == before
