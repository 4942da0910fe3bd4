"""Every row of the client contract's error table that a request can trigger
answers with its status, its code, a JSON body and, on 401, WWW-Authenticate;
and none of those requests reaches the AI service."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tollgate_tooling.gateway import Gateway, assert_error

BODY = b'{"text": "is this request allowed?"}'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, claims: dict) -> str:
    """A token with any header, signed with nothing (for alg none and friends)."""
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.new_key("error-table")["key"]


def now() -> int:
    return int(time.time())


# Each case: (name, status, code, how to build (key, token, extra headers)).
CASES = {
    "missing_api_key": (401, lambda gw, key: (None, gw.token(BODY), {})),
    "missing_api_key (Basic scheme)": (
        401, lambda gw, key: (None, gw.token(BODY), {"Authorization": "Basic dXNlcjpwYXNz"})),
    "invalid_api_key": (401, lambda gw, key: ("tg_0000000000000000000000000000000000000000",
                                               gw.token(BODY), {})),
    "missing_token": (401, lambda gw, key: (key, "", {})),
    "malformed_token": (401, lambda gw, key: (key, "only-one-segment", {})),
    "unsupported_algorithm": (401, lambda gw, key: (key, gw.token(BODY, algorithm="HS512"), {})),
    "unsupported_algorithm (none)": (401, lambda gw, key: (key, unsigned_token(
        {"alg": "none", "typ": "JWT"},
        {"iat": now(), "exp": now() + 60, "body_sha256": "0" * 64}), {})),
    "unknown_key_id": (401, lambda gw, key: (key, gw.token(BODY, headers={"kid": "retired"}), {})),
    "invalid_signature": (401, lambda gw, key: (key, gw.token(BODY, secret="x" * 40), {})),
    "token_expired": (401, lambda gw, key: (
        key, gw.token(BODY, iat=now() - 200, exp=now() - 100), {})),
    "token_not_yet_valid": (401, lambda gw, key: (key, gw.token(BODY, nbf=now() + 120), {})),
    "token_issued_in_future": (401, lambda gw, key: (
        key, gw.token(BODY, iat=now() + 120, exp=now() + 180), {})),
    "token_lifetime_too_long": (401, lambda gw, key: (key, gw.token(BODY, ttl=3600), {})),
    "missing_claim": (401, lambda gw, key: (key, gw.token(BODY, body_sha256=None), {})),
    "body_hash_mismatch": (401, lambda gw, key: (key, gw.token(b'{"text": "other"}'), {})),
    "request_binding_mismatch": (401, lambda gw, key: (key, gw.token(BODY, htm="GET"), {})),
    "request_binding_mismatch (htu)": (
        401, lambda gw, key: (key, gw.token(BODY, htu="/proxy/other"), {})),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_error_table(gateway: Gateway, key: str, case: str):
    status, build = CASES[case]
    code = case.split(" ")[0]
    req_key, token, headers = build(gateway, key)

    resp = gateway.post_refused(BODY, req_key, token, headers=headers)

    assert_error(resp, status, code)
    assert resp.headers["x-request-id"] == resp.json()["request_id"]


def test_revoked_key_gets_403(gateway: Gateway):
    key = gateway.new_key("to-revoke")
    gateway.stack.cli("keys", "revoke", str(key["id"]))
    assert_error(gateway.post_refused(BODY, key["key"]), 403, "revoked_api_key")


def test_expired_key_gets_403(gateway: Gateway):
    # Whole seconds, so 3 to 4 s ahead: room for a slow `keys create` (a key
    # cannot be created already expired) and the first request.
    expires_at = int(time.time()) + 4
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
    key = gateway.new_key("short-lived", "--expires-at", expires)
    assert gateway.post(BODY, key["key"]).status_code == 200
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    assert_error(gateway.post_refused(BODY, key["key"]), 403, "expired_api_key")


def test_denied_request_with_a_known_key_is_metered(gateway: Gateway):
    key = gateway.new_key("denied-metered")
    resp = gateway.post(BODY, key["key"], token=gateway.token(b"not the body"))
    assert_error(resp, 401, "body_hash_mismatch")
    row = gateway.ledger.wait_usage_row(resp.json()["request_id"])
    assert row["api_key_id"] == key["id"]
    assert row["outcome"] == "body_hash_mismatch"
    assert row["status_code"] == 401


def test_revocation_takes_effect_within_the_positive_cache_ttl(gateway: Gateway):
    ttl = gateway.stack.config.filter_overrides["key_cache"]["positive_ttl_s"]
    key = gateway.new_key("revoked-live")
    assert gateway.post(BODY, key["key"]).status_code == 200  # cached as active

    gateway.stack.cli("keys", "revoke", str(key["id"]))
    revoked_at = time.monotonic()
    while True:
        before = gateway.upstream_seen()["count"]
        resp = gateway.post(BODY, key["key"])
        if resp.status_code == 403:
            assert gateway.upstream_seen()["count"] == before, "the refusal reached the upstream"
            break
        assert resp.status_code == 200, resp.text
        assert time.monotonic() - revoked_at < ttl + 2, "revoked key still passes"
        time.sleep(0.1)
    took = time.monotonic() - revoked_at
    assert_error(resp, 403, "revoked_api_key")
    print(f"revocation refused after {took:.2f}s (positive TTL {ttl}s)")
    assert took <= ttl + 1.0
