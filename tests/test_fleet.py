"""A fleet on one machine keeps its guarantees when a sidecar dies, drains or
loses the database: 3 Envoys and 2 sidecars over one MariaDB database
(``scripts/fleet.py``, the ``fleet`` fixture of conftest.py), real processes
on loopback, a steady load spread over the 3 Envoys with one cached key.

Each test counts on both sides afterwards: the request ids of the 2xx answers
the clients saw against the rows of ``usage_log`` (exactly one each), and
every answer to the cached key must be 200 (no 5xx, no reset).

* one sidecar SIGKILLed, restarted, then the other SIGKILLed: every Envoy
  takes the dead one out of its cluster (active health checks on /readyz,
  outlier detection), and a key no Envoy has seen is served through the
  other;
* a sidecar stopped with SIGTERM drains: /readyz answers 503 ``draining`` at
  once while it keeps serving, every Envoy takes it out before its drain
  period ends, and it exits 0 after it;
* the database cut for 5 s (the sidecars' connections go through a TCP
  forwarder): the filters keep their records and retry, and after recovery
  every served request has its row.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from faults import Load, wait_until_metered
from gateway import Gateway, assert_error

BODY = b'{"text": "a fleet of gateways"}'

#: Answers the load must see between two steps: the fleet shares two cores
#: with its clients, so a step lasts about a second.
STEP = 60


@pytest.fixture
def gw(fleet) -> Gateway:
    """The fleet whole again (database linked, both sidecars up and in every
    Envoy's cluster), as a client of its first Envoy for minting tokens."""
    fleet.db_link.restore()
    for sidecar in fleet.sidecars:
        if not sidecar.alive():
            sidecar.start()
    fleet.wait_sidecars_healthy([True] * len(fleet.sidecars))
    return Gateway(fleet.envoys[0], fleet.ledger)


def post(gw: Gateway, url: str, key: str) -> requests.Response:
    return requests.post(url + "/proxy/analyze", data=BODY, timeout=30,
                         headers={"Authorization": f"Bearer {key}",
                                  "X-Auth-Token": gw.token(BODY),
                                  "Content-Type": "application/json"})


def served_everywhere(fleet, gw: Gateway, key: dict) -> set[str]:
    """Posts with ``key`` once through each Envoy; each answer must be 200.
    Returns the request ids served."""
    ids = set()
    for url in fleet.gateways:
        resp = post(gw, url, key["key"])
        assert resp.status_code == 200, f"{url}: {resp.status_code} {resp.text[:200]}"
        ids.add(resp.headers["x-request-id"])
    return ids


def past_positive_ttl(fleet) -> None:
    """Until cached verdicts are due again: the next request of the cached
    key makes a verify callout."""
    time.sleep(fleet.envoys[0].filter_config["key_cache"]["positive_ttl_s"] + 0.5)


def assert_all_served(load: Load) -> None:
    """Every answer to the cached key was 200: no 5xx, no reset."""
    assert set(load.statuses()) == {(200, None)}, load.statuses()


def test_sidecars_killed_one_after_the_other_under_load(fleet, gw: Gateway):
    key = fleet.create_key("fleet-kill")
    served = served_everywhere(fleet, gw, key)
    first, second = fleet.sidecars
    cold_served: dict[int, set[str]] = {}
    out_after = []

    with Load(gw, key["key"], workers=6, urls=fleet.gateways) as load:
        load.wait_for(STEP)
        for victim, survivor in ((first, second), (second, first)):
            victim.kill()
            killed = time.monotonic()
            expected = [s is survivor for s in fleet.sidecars]
            out_after.append(fleet.wait_sidecars_healthy(expected, timeout=10))
            # Callouts of the cached key go to the survivor from now on...
            past_positive_ttl(fleet)
            load.wait_for(STEP)
            # ...and a key no Envoy has seen is served by every Envoy.
            time.sleep(0.2)  # the main thread's health view reaches the workers
            cold = fleet.create_key(f"fleet-kill-cold-{victim.index}")
            cold_served[cold["id"]] = served_everywhere(fleet, gw, cold)
            assert load.since(killed), "the load stalled while a sidecar was down"
            victim.start()
            fleet.wait_sidecars_healthy([True, True], timeout=10)
            load.wait_for(STEP)

    assert_all_served(load)
    wait_until_metered(fleet.ledger, key["id"], load.served() | served)
    for key_id, ids in cold_served.items():
        wait_until_metered(fleet.ledger, key_id, ids)
    print(f"sidecars SIGKILLed in turn: {len(load.served())} served over "
          f"{len(fleet.gateways)} Envoys, all metered once; out of every cluster "
          f"{out_after[0]:.2f} s and {out_after[1]:.2f} s after the kill")


def test_a_draining_sidecar_leaves_the_clusters_before_it_stops(fleet, gw: Gateway):
    key = fleet.create_key("fleet-drain")
    served = served_everywhere(fleet, gw, key)
    draining = fleet.sidecars[1]
    drain_s = fleet.config.drain_period_s
    verify = json.dumps({"key_hash": "ab" * 32})

    with Load(gw, key["key"], workers=6, urls=fleet.gateways) as load:
        load.wait_for(STEP)
        draining.terminate()
        signalled = time.monotonic()
        while True:
            ready = requests.get(draining.url + "/readyz", timeout=5)
            if ready.status_code != 200:
                break
            assert time.monotonic() - signalled < 0.5, "/readyz still 200 after SIGTERM"
            time.sleep(0.02)
        assert_error_code(ready, 503, "draining")
        # Still serving meanwhile: the key look-up answers.
        during = requests.post(draining.url + "/v1/internal/keys/verify", data=verify,
                               timeout=5, headers={
                                   "x-tollgate-internal-token": fleet.internal_token,
                                   "content-type": "application/json"})
        assert during.status_code == 200 and during.json()["verdict"] == "not_found", \
            during.text
        out_after = fleet.wait_sidecars_healthy([True, False], timeout=drain_s)
        assert draining.alive(), "the sidecar stopped before its drain period ended"
        cold = fleet.create_key("fleet-drain-cold")
        cold_served = served_everywhere(fleet, gw, cold)
        code = draining.stop()
        took = time.monotonic() - signalled
        load.wait_for(STEP)

    assert code == 0, f"the draining sidecar exited with {code}"
    assert took >= drain_s, f"it exited {took:.2f} s after SIGTERM, before {drain_s} s"
    assert out_after < drain_s
    assert_all_served(load)
    wait_until_metered(fleet.ledger, key["id"], load.served() | served)
    wait_until_metered(fleet.ledger, cold["id"], cold_served)
    print(f"drain: out of every cluster {out_after:.2f} s after SIGTERM, exit 0 after "
          f"{took:.2f} s (drain period {drain_s} s); {len(load.served())} served, all metered")


def assert_error_code(resp: requests.Response, status: int, code: str) -> None:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]}"
    assert resp.json()["error"]["code"] == code, resp.text


def test_database_cut_for_5s_under_load(fleet, gw: Gateway):
    key = fleet.create_key("fleet-db-cut")
    served = served_everywhere(fleet, gw, key)
    unseen = fleet.create_key("fleet-db-cut-unseen")
    gauge = "wasmcustom.tollgate_usage_records_buffered"

    with Load(gw, key["key"], workers=6, urls=fleet.gateways) as load:
        load.wait_for(STEP)
        fleet.db_link.cut()
        cut_at = time.monotonic()
        time.sleep(2.5)
        # A key no Envoy has cached cannot be looked up: 503, never a pass.
        assert_error(post(gw, fleet.gateways[1], unseen["key"]), 503, "auth_unavailable")
        time.sleep(max(0.0, 5.0 - (time.monotonic() - cut_at)))
        buffered = sum(int(e.envoy_stats().get(gauge) or 0) for e in fleet.envoys)
        during = load.since(cut_at)
        fleet.db_link.restore()
        load.wait_for(STEP)

    assert buffered > 0, "the filters hold no records while the database is cut"
    assert during, "the load stalled during the cut"
    assert_all_served(load)
    wait_until_metered(fleet.ledger, key["id"], load.served() | served)
    print(f"database cut 5 s: {len(during)} served during the cut, {buffered} records "
          f"buffered at its end over {len(fleet.envoys)} Envoys, all metered once after")
