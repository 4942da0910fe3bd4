"""Per-key signing secrets on the real stack (MariaDB): a key created with
``--signing-secret`` takes only tokens signed with its own secret, minted by
an unchanged PyJWT client; a token signed with the shared secret, which every
customer on the shared secret holds, is refused for it; the secret is cached
with the verdict, judged before the key's state, and never reaches a log."""

from __future__ import annotations

import time

from tollgate_tooling.gateway import Gateway, assert_error

BODY = b'{"text": "signed with my own secret"}'


def test_a_key_with_its_own_secret_refuses_the_shared_one(gateway: Gateway):
    created = gateway.new_key("own-secret", "--signing-secret")
    key, own = created["key"], created["signing_secret"]
    assert own.startswith("tgs_") and own != gateway.secret

    before = gateway.upstream_seen()["count"]
    # The shared secret no longer signs for this key, cold or cached.
    for _ in range(2):
        assert_error(gateway.post(BODY, key, gateway.token(BODY)), 401, "invalid_signature")
    # Its own secret does, with PyJWT as the FastAPI clients use it.
    for _ in range(3):
        resp = gateway.post(BODY, key, gateway.token(BODY, secret=own))
        assert resp.status_code == 200, resp.text
    assert_error(gateway.post(BODY, key, gateway.token(BODY)), 401, "invalid_signature")
    assert gateway.upstream_seen()["count"] - before == 3, "only the three own-secret calls passed"

    # A key on the shared secret cannot borrow another key's secret either.
    plain = gateway.new_key("shared-secret")["key"]
    assert gateway.post(BODY, plain, gateway.token(BODY)).status_code == 200
    assert_error(gateway.post(BODY, plain, gateway.token(BODY, secret=own)), 401,
                 "invalid_signature")


def test_a_revoked_key_with_its_own_secret_is_refused_as_revoked(gateway: Gateway):
    created = gateway.new_key("own-secret-revoked", "--signing-secret")
    key, own = created["key"], created["signing_secret"]
    assert gateway.post(BODY, key, gateway.token(BODY, secret=own)).status_code == 200
    gateway.stack.cli("keys", "revoke", str(created["id"]))
    # The test stacks cache an active verdict for 3 s.
    deadline = time.monotonic() + 10
    while True:
        resp = gateway.post(BODY, key, gateway.token(BODY, secret=own))
        if resp.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    before = gateway.upstream_seen()["count"]
    assert_error(resp, 403, "revoked_api_key")
    # A forged token is still a bad signature first, whatever the key's state.
    assert_error(gateway.post(BODY, key, gateway.token(BODY)), 401, "invalid_signature")
    assert gateway.upstream_seen()["count"] == before


def test_signing_secrets_never_reach_a_log_and_are_listed_only_as_a_flag(gateway: Gateway):
    created = gateway.new_key("own-secret-quiet", "--signing-secret")
    own = created["signing_secret"]
    assert gateway.post(BODY, created["key"], gateway.token(BODY, secret=own)).status_code == 200
    listed = gateway.stack.cli("keys", "list", "--json").stdout
    assert own not in listed
    assert '"has_signing_secret": true' in listed.replace('":true', '": true')
    logs = sorted(gateway.stack.logs.glob("*.log"))
    assert {p.name for p in logs} >= {"envoy.log", "sidecar.log"}, logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert own not in text, f"the signing secret is in {path.name}"
        assert own.encode().hex() not in text, f"the signing secret (hex) is in {path.name}"
