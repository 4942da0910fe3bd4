"""What a client may not choose: the request id the ledger deduplicates by
is fresh randomness, never one derived from the last, and the headers the
gateway speaks with (the key id, the internal token, the original path of a
rewrite) neither reach the AI service nor the access log as the client sent
them; X-Real-IP is dropped and X-Forwarded-For ends with the real peer."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tollgate_tooling.gateway import Gateway, assert_error

BODY = b'{"text": "who chooses my headers?"}'

FORGED = {
    "X-Tollgate-Key-Id": "424242",
    "X-Tollgate-Internal-Token": "guessed-internal-token-000",
    "X-Envoy-Original-Path": "/forged/path",
    "X-Real-IP": "10.9.8.7",
    "X-Forwarded-For": "10.9.8.7",
}


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.new_key("client-headers")["key"]


def worker_connections(gateway: Gateway) -> dict[str, int]:
    """Connections each of Envoy's workers accepted on the gateway listener."""
    found = re.compile(rf"^listener\.[^ ]*_{gateway.stack.config.envoy_port}\.(worker_\d+)\.downstream_cx_total$")
    return {m.group(1): value for name, value in gateway.stack.envoy_stats().items()
            if (m := found.match(name))}


def test_request_ids_share_no_structure(gateway: Gateway):
    """Ids seen by clients on fresh connections, so from every worker: no
    two share a half (the per-worker prefix ids once had), and neighbours
    differ in about half of their 128 bits, as independent random ids do."""
    before = worker_connections(gateway)
    assert len(before) >= 2, f"the stack runs one Envoy worker: {before}"

    def one(_: int) -> int:
        resp = requests.post(gateway.stack.gateway + "/proxy/analyze", data=BODY, timeout=10,
                             headers={"Connection": "close", "Content-Type": "application/json"})
        return int(assert_error(resp, 401, "missing_api_key")["request_id"], 16)

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(200)))
    served = {w: n - before.get(w, 0) for w, n in worker_connections(gateway).items()}
    assert sum(served.values()) >= 200 and all(n > 0 for n in served.values()), (
        f"not every worker served these ids: {served}")
    assert len({i >> 64 for i in ids}) == len(ids), "ids share their high half"
    assert len({i & (2**64 - 1) for i in ids}) == len(ids), "ids share their low half"
    differing = [bin(a ^ b).count("1") for a, b in zip(ids, ids[1:])]
    mean = sum(differing) / len(differing)
    assert 58 < mean < 70, f"neighbouring ids differ in {mean:.1f} bits on average"
    assert min(differing) > 30


def test_gateway_headers_sent_by_a_client_never_reach_the_upstream(gateway: Gateway, key: str):
    resp = gateway.post(BODY, key, headers=FORGED)
    assert resp.status_code == 200, resp.text
    seen = gateway.upstream_seen()["last_headers"][-1]
    assert seen.get("x-tollgate-internal-token") is None
    assert seen["x-tollgate-key-id"] != FORGED["X-Tollgate-Key-Id"]
    # Envoy records the path it rewrote; the client's value is gone first.
    assert seen.get("x-envoy-original-path") in (None, "/proxy/analyze")
    assert seen.get("x-real-ip") is None
    # The peer's address is appended: the chain no longer ends in the
    # client's claim.
    hops = [h.strip() for h in seen["x-forwarded-for"].split(",")]
    assert len(hops) == 2 and hops[0] == "10.9.8.7", hops
    ipaddress.ip_address(hops[1])  # the peer as Envoy saw it (loopback or this host)
    assert hops[1] != "10.9.8.7", hops


def access_log_entry(gateway: Gateway, request_id: str, timeout: float = 15.0) -> dict:
    """The access log line of a request (Envoy writes the file every 10 s at most)."""
    path = gateway.stack.logs / "envoy-access.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("request_id") == request_id:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no access log line for {request_id}")


def test_a_denied_request_cannot_write_a_key_id_or_path_into_the_access_log(
        gateway: Gateway, key: str):
    resp = gateway.post(BODY, key, token="not-a-token", headers=FORGED)
    body = assert_error(resp, 401, "malformed_token")
    entry = access_log_entry(gateway, body["request_id"])
    assert entry["key_id"] in (None, "-", ""), entry
    assert entry["path"] == "/proxy/analyze", entry
