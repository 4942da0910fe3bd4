"""Teams end to end (docs/LIMITS.md, "Teams"): a team's limits are shared by
all of its keys, and a request is charged to its key's budget and to its
team's; it is refused when either would be exceeded, and the refusal names
the budget. Keys and teams are made with the ``tollgate`` CLI; the clients
are plain HTTP (the profanity route) and OpenAI's SDK (the LLM routes),
through real Envoys running either build of the filter.

* two keys of one team with ``tokens=5000/day`` on the team, spent by
  concurrent streams through both keys: the ledger's tokens of both keys
  together are at most 5000, and less than one reservation per Envoy is
  left unused, on MariaDB and SQLite, and across a fleet of 3 Envoys and 2
  sidecars; every 429 names the team;
* a key budget inside a team budget: whichever is smaller refuses first,
  and the refusal says which (message and ``RateLimit``);
* a team's limits changed, a key moved into a team or out of it: every
  Envoy applies it within 2 s;
* bad input changes nothing: a key moved into a team that does not exist,
  a team deleted while it has keys.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from conftest import fleet_of_its_own
from test_token_quotas import CAP, STREAMS, chat, reservation, sf_items, spend, tally, total
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.llm_clients import openai_client
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

BODY = b'{"text": "hello team"}'
LIMIT = 5000


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def make_team(cli, name: str, *limits: str) -> dict:
    """``tollgate teams create --name N [limits] --json``."""
    return json.loads(cli("teams", "create", "--name", unique(name), *limits, "--json").stdout)


def post(gw: Gateway, key: dict):
    return gw.post(BODY, key["key"])


def refusal(resp) -> tuple[int, str, str, dict]:
    """A refusal's status, code, message and RateLimit items."""
    error = resp.json()["error"]
    return resp.status_code, error["code"], error["message"], \
        sf_items(resp.headers.get("ratelimit", ""))


def served_until_refused(gw: Gateway, key: dict, most: int = 50) -> tuple[int, object]:
    """Requests of ``key`` one at a time until the first refusal: how many
    were served, and the refusal."""
    for served in range(most):
        resp = post(gw, key)
        if resp.status_code != 200:
            return served, resp
    raise AssertionError(f"{most} requests served, none refused")


def eventually(check, timeout: float = 2.0, what: str = "") -> float:
    """Polls ``check`` until it is true; the seconds it took (at most
    ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# -- a team's token budget shared by its keys -------------------------------------

def assert_a_team_budget_holds(clients, ledger, keys: list[dict], label: str,
                               envoys: int = 1) -> None:
    served, refused = spend(clients, STREAMS, lambda c: chat(c, delay_ms=2))
    assert refused, "never refused"
    for no in refused:
        err = no.error
        assert (err.status_code, err.code) == (429, "quota_exceeded"), f"{err}"
        assert "team" in str(err.message), err.message
        assert "team.tokens" in sf_items(err.response.headers.get("ratelimit", "")), \
            err.response.headers.get("ratelimit")
    rows = team_rows(ledger, [k["id"] for k in keys], served)
    spent = total(rows)
    per_key = {k["id"]: total([r for r in rows if r["api_key_id"] == k["id"]]) for k in keys}
    print(f"{label}: team tokens=5000/day over {len(keys)} keys: {len(served)} streams, "
          f"{spent} tokens ({spent / LIMIT:.1%}), per key {per_key}, {tally(refused)}")
    assert all(per_key.values()), f"a key was never served: {per_key}"
    assert spent <= LIMIT, f"{spent} tokens under the team's tokens=5000/day"
    # Each Envoy refused a call once what it held of the team's budget and
    # what was left to grant were short of one reservation: less than that
    # is unused, per Envoy.
    one = max(reservation(r, CAP) for r in rows)
    assert spent > LIMIT - envoys * one, \
        f"{spent} tokens served: more than {envoys} reservations of {one} left unused"


def team_rows(ledger, ids: list[int], served: list[str], timeout: float = 20.0) -> list[dict]:
    """The ``allowed`` rows of keys ``ids`` once every served request has
    one; exactly one row per served request, and no other."""
    marks = ", ".join("?" for _ in ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger.query(f"SELECT * FROM usage_log WHERE api_key_id IN ({marks}) "
                            "AND outcome = 'allowed'", ids)
        have = [r["request_id"] for r in rows]
        if set(served) <= set(have) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert sorted(have) == sorted(served), \
        f"{len(served)} served, {len(have)} allowed rows"
    return rows


def test_two_keys_share_their_teams_token_budget(any_gateway: Gateway):
    gw = any_gateway
    team = make_team(gw.stack.cli, "shared-tokens", "--quota", f"tokens={LIMIT}/day")
    keys = [gw.new_key(unique(f"team-key-{i}"), "--team", str(team["id"])) for i in range(2)]
    for key in keys:
        assert key["team_id"] == team["id"], key
    clients = [openai_client(gw.stack.gateway, k["key"], gw.secret) for k in keys]
    assert_a_team_budget_holds(clients, gw.ledger, keys, "one Envoy")


@pytest.fixture(scope="module")
def team_fleet(tmp_path_factory, mysql_server, filter_build):
    with fleet_of_its_own(tmp_path_factory.mktemp("fleet-teams"), mysql_server,
                          "tollgate_e2e_teams") as fleet:
        yield fleet


def test_a_teams_token_budget_holds_across_a_fleet(team_fleet):
    fleet = team_fleet
    team = make_team(fleet.cli, "fleet-tokens", "--quota", f"tokens={LIMIT}/day")
    keys = [fleet.create_key(unique(f"fleet-team-key-{i}"), "--team", str(team["id"]))
            for i in range(2)]
    # Each Envoy serves both keys: 3 Envoys x 2 keys.
    clients = [openai_client(url, k["key"], fleet.jwt_secret)
               for url in fleet.gateways for k in keys]
    assert_a_team_budget_holds(clients, fleet.ledger, keys, "3 Envoys, 2 sidecars",
                               envoys=len(fleet.gateways))


# -- a key's budget inside its team's ----------------------------------------------

def test_the_smaller_budget_refuses_first_and_says_which(gateway: Gateway):
    gw = gateway
    team = make_team(gw.stack.cli, "nested", "--quota", "requests=5/day")
    small = gw.new_key(unique("nested-small"), "--team", str(team["id"]),
                       "--quota", "requests=3/day")
    other = gw.new_key(unique("nested-other"), "--team", str(team["id"]))
    # The key's own quota (3) is smaller than the team's (5).
    served, resp = served_until_refused(gw, small)
    status, code, message, ratelimit = refusal(resp)
    assert (served, status, code) == (3, 429, "quota_exceeded"), (served, resp.text)
    assert "team" not in message and "requests" in ratelimit, (message, ratelimit)
    # The team has 2 left: the other key gets them, then the team refuses.
    served, resp = served_until_refused(gw, other)
    status, code, message, ratelimit = refusal(resp)
    assert (served, status, code) == (2, 429, "quota_exceeded"), (served, resp.text)
    assert "team" in message and "team.requests" in ratelimit, (message, ratelimit)
    # And the small key is now refused by its own quota still (checked first).
    status, _, message, _ = refusal(post(gw, small))
    assert status == 429 and "team" not in message, message


def test_a_team_budget_smaller_than_the_keys_refuses_first(gateway: Gateway):
    gw = gateway
    team = make_team(gw.stack.cli, "tight-team", "--quota", "requests=2/day")
    key = gw.new_key(unique("roomy-key"), "--team", str(team["id"]),
                     "--quota", "requests=10/day")
    served, resp = served_until_refused(gw, key)
    status, code, message, ratelimit = refusal(resp)
    assert (served, status, code) == (2, 429, "quota_exceeded"), (served, resp.text)
    assert "team" in message and "team.requests" in ratelimit, (message, ratelimit)
    policy = sf_items(resp.headers.get("ratelimit-policy", ""))
    assert policy.get("team.requests", {}).get("q") == 2, policy


# -- changes reach every Envoy within 2 s -------------------------------------------

def test_team_changes_reach_the_envoy_within_two_seconds(gateway: Gateway):
    gw = gateway
    cli = gw.stack.cli
    team = make_team(cli, "changing")
    key = gw.new_key(unique("changing-key"), "--team", str(team["id"]))
    assert post(gw, key).status_code == 200, "a team without limits limits nothing"
    # The team gets a rate of 1 per minute: within 2 s the second request
    # in a row is refused by the team.
    cli("teams", "limits", str(team["id"]), "--rate", "1/min")

    def refused_by_team() -> bool:
        post(gw, key)
        resp = post(gw, key)
        return resp.status_code == 429 and "team" in resp.json()["error"]["message"]

    took = eventually(refused_by_team, what="the team's new rate applied")
    print(f"team limits applied after {took:.2f} s")
    # Out of the team: within 2 s the key is unlimited again.
    cli("keys", "move", str(key["id"]), "--no-team")
    took = eventually(lambda: all(post(gw, key).status_code == 200 for _ in range(3)),
                      what="the key moved out of the team")
    print(f"key moved out after {took:.2f} s")
    # Into a team that is spent: refused within 2 s.
    spent = make_team(cli, "spent", "--rate", "1/min")
    cli("keys", "move", str(key["id"]), "--team", str(spent["id"]))
    eventually(refused_by_team, what="the key moved into a limited team")


# -- bad input changes nothing --------------------------------------------------------

def test_bad_team_input_is_refused_and_changes_nothing(gateway: Gateway):
    gw = gateway
    cli = gw.stack.cli
    team = make_team(cli, "bad-input")
    key = gw.new_key(unique("bad-input-key"), "--team", str(team["id"]))
    moved = cli("keys", "move", str(key["id"]), "--team", "987654321", check=False)
    assert moved.returncode != 0 and "team" in (moved.stderr + moved.stdout), moved
    deleted = cli("teams", "delete", str(team["id"]), check=False)
    assert deleted.returncode != 0 and "key" in (deleted.stderr + deleted.stdout), deleted
    listed = json.loads(cli("teams", "list", "--json").stdout)
    ours = [t for t in listed if t["id"] == team["id"]]
    assert ours and key["id"] in ours[0]["key_ids"], ours
    created = cli("keys", "create", "--name", unique("orphan"), "--team", "987654321",
                  "--json", check=False)
    assert created.returncode != 0, created.stdout
    assert post(gw, key).status_code == 200
