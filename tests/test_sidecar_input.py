"""The sidecar never dies on input, on the real stack: an instant outside the
accepted range (1970-01-01T00:00:00Z up to, not including, year 3000) sent
to the admin API is a 400 ``invalid_request`` naming the field; the same
given to the CLI is an error naming the flag, with exit status 1. Neither is
a caught panic, and afterwards the sidecar still answers ``/healthz`` and
``/readyz``."""

from __future__ import annotations

import re
from urllib.parse import quote

import requests

from tollgate_tooling.gateway import Gateway, sidecar_request

#: Past year 3000 (one whose UTC date is in year 10000), and before 1970.
OUT_OF_RANGE = (
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "3000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
)


def admin(gateway: Gateway, method: str, path: str, body: dict | None = None) -> requests.Response:
    """A call to the sidecar's admin API with the stack's admin token."""
    stack = gateway.stack
    return sidecar_request(stack, method, path, body,
                           {"Authorization": f"Bearer {stack.config.admin_token}"})


def assert_refused(resp: requests.Response, field: str) -> None:
    assert resp.status_code == 400, f"{field}: {resp.status_code} {resp.text[:300]}"
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    error = resp.json()["error"]
    assert error["code"] == "invalid_request", error
    assert error["field"] == field, error
    assert "out of range" in error["message"], error


def panics(gateway: Gateway) -> dict[str, int]:
    """``tollgate_panics_total`` by site, from the sidecar's /metrics."""
    text = requests.get(gateway.stack.sidecar_url + "/metrics", timeout=10).text
    found = re.findall(r'^tollgate_panics_total\{site="(\w+)"\} (\d+)$', text, re.M)
    assert found, "the sidecar exposes no tollgate_panics_total"
    return {site: int(count) for site, count in found}


def test_instants_out_of_range_are_refused_and_the_sidecar_lives(any_gateway: Gateway):
    gw = any_gateway
    caught_before = panics(gw)
    keys_before = admin(gw, "GET", "/v1/keys").json()["keys"]

    for at in OUT_OF_RANGE:
        assert_refused(admin(gw, "GET", f"/v1/usage/summary?since={quote(at, safe='')}"), "since")
        assert_refused(admin(gw, "POST", "/v1/keys", {"name": "far", "expires_at": at}),
                       "expires_at")
        for args, flag in ((("usage", "summary", "--since", at), "--since"),
                           (("usage", "reconcile", "--at", at), "--at"),
                           (("keys", "create", "--name", "far", "--expires-at", at),
                            "--expires-at")):
            done = gw.stack.cli(*args, check=False)
            assert done.returncode == 1, f"{args}: {done.returncode} {done.stderr}"
            assert flag in done.stderr and "out of range" in done.stderr, (args, done.stderr)
            assert "panicked" not in done.stderr, (args, done.stderr)
    assert_refused(admin(gw, "GET", "/v1/usage/summary?since=30000d"), "since")

    for probe in ("/healthz", "/readyz"):
        assert requests.get(gw.stack.sidecar_url + probe, timeout=5).status_code == 200, probe
    assert gw.stack.sidecar.alive(), "the sidecar process ended"
    assert panics(gw) == caught_before, "a refusal went through a caught panic"
    assert admin(gw, "GET", "/v1/keys").json()["keys"] == keys_before, "a refused key was stored"
    assert "panic" not in gw.stack.sidecar.log_text().lower()
