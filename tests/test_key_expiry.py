"""A key's expiry on the real stack: a key cannot be created already expired,
and once a key's ``expires_at`` has passed the admin API and ``tollgate keys
list`` report it ``EXPIRED`` and Envoy refuses it with 403 ``expired_api_key``
(the filter's cache stops trusting an ``active`` verdict at the key's own
expiry, so no cache lifetime has to pass first), and the refused request
never reaches the AI service."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import requests

from tollgate_tooling.gateway import Gateway, assert_error, sidecar_request

BODY = b'{"text": "does this key still work?"}'


def rfc3339(t: float) -> str:
    """``t`` (seconds since the epoch) as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def admin(gateway: Gateway, method: str, path: str, body: dict | None = None) -> requests.Response:
    """A call to the sidecar's admin API with the stack's admin token."""
    stack = gateway.stack
    return sidecar_request(stack, method, path, body,
                           {"Authorization": f"Bearer {stack.config.admin_token}"})


def listed(gateway: Gateway) -> dict[int, dict]:
    """Every key as ``GET /v1/keys`` shows it, by id."""
    resp = admin(gateway, "GET", "/v1/keys")
    assert resp.status_code == 200, resp.text
    return {k["id"]: k for k in resp.json()["keys"]}


def cli_listed(gateway: Gateway) -> dict[int, dict]:
    """Every key as ``tollgate keys list --json`` shows it, by id."""
    return {k["id"]: k for k in json.loads(gateway.stack.cli("keys", "list", "--json").stdout)}


def test_a_key_cannot_be_created_already_expired(gateway: Gateway):
    before = listed(gateway)
    for past in ("2020-01-01T00:00:00Z", rfc3339(time.time() - 1)):
        resp = admin(gateway, "POST", "/v1/keys", {"name": "born-expired", "expires_at": past})
        assert resp.status_code == 400, f"{past}: {resp.status_code} {resp.text}"
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert error["code"] == "invalid_request", error
        assert error["field"] == "expires_at", error
        assert "key" not in resp.json()

        refused = gateway.stack.cli("keys", "create", "--name", "born-expired-cli",
                                    "--expires-at", past, "--json", check=False)
        assert refused.returncode != 0, refused.stdout
        assert refused.stdout == ""
        assert "expires_at" in refused.stderr, refused.stderr

    assert listed(gateway) == before, "a refused key was stored"
    assert not any(k["name"].startswith("born-expired") for k in cli_listed(gateway).values())


def test_a_key_past_its_expiry_is_listed_expired_and_refused(gateway: Gateway):
    expires = time.time() + 2
    resp = admin(gateway, "POST", "/v1/keys", {"name": "expiring", "expires_at": rfc3339(expires)})
    assert resp.status_code == 201, resp.text
    key = resp.json()
    assert key["status"] == "ACTIVE"
    assert gateway.post(BODY, key["key"]).status_code == 200  # verified, cached as active
    assert listed(gateway)[key["id"]]["status"] == "ACTIVE"

    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert listed(gateway)[key["id"]]["status"] == "EXPIRED"
    assert cli_listed(gateway)[key["id"]]["status"] == "EXPIRED"
    assert_error(gateway.post_refused(BODY, key["key"]), 403, "expired_api_key")
    # EXPIRED is computed when the key is read: the stored status is unchanged.
    [row] = gateway.ledger.query("SELECT status FROM api_keys WHERE id = ?", [key["id"]])
    assert row["status"] == "ACTIVE"

    # Revoked beats expired.
    resp = admin(gateway, "POST", f"/v1/keys/{key['id']}/revoke")
    assert resp.status_code == 200, resp.text
    assert resp.json()["key"]["status"] == "REVOKED"
    assert listed(gateway)[key["id"]]["status"] == "REVOKED"
