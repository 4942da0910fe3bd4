"""Budget alerts end to end (docs/OPERATING.md, "Budget alerts"): a key with
a small quota and an alert made with ``tollgate alerts add``, the quota
spent through Envoy, and a webhook receiver on 127.0.0.1 that checks every
event with the official Standard Webhooks library (``standardwebhooks``),
as an operator's receiver would.

* ``requests=10/day`` with an alert at 50, 80 and 100 %, its secret
  generated and shown once: each threshold arrives once, signed, with the
  ledger's use, the limit and the window; the secret never reaches a log;
* an alert whose secret is read from the sidecar's environment
  (``--secret-env``): signed with that secret;
* an alert whose receiver is down, with ``TOLLGATE_ALERT_ATTEMPTS=2``:
  after its last attempt the event is listed by ``alerts list --failed``;
* a team of two keys with ``requests=10/day`` and an alert on the team's
  budget (``alerts add --team``) at 50 and 100 %, requests sent through
  both keys: the 50 and the 100 % events arrive, each once, naming the team
  and no key, signed.

The alerts do not depend on the filter's build: the module runs on wasm.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from conftest import sqlite_gateway_of_its_own
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.stack import free_port
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.filter_builds("wasm")

BODY = json.dumps({"text": "forty characters of text for the gateway"}).encode()
#: The environment variable the sidecar reads the second alert's secret from.
SECRET_ENV = "TOLLGATE_TEST_WEBHOOK_SECRET"
ENV_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """A webhook receiver: every request's headers and raw body, kept."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, filter_build) -> Gateway:
    """A SQLite stack whose sidecar checks alerts every second, tries a
    webhook twice, and holds the second alert's secret in its environment."""
    with sqlite_gateway_of_its_own(
            tmp_path_factory.mktemp("stack-alerts"),
            sidecar_env={SECRET_ENV: ENV_SECRET, "TOLLGATE_ALERT_ATTEMPTS": "2",
                         "TOLLGATE_ALERT_INTERVAL": "1s"}) as gw:
        gw.stack.created_keys.append(ENV_SECRET)
        yield gw


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def spend(gateway: Gateway, key: str, allowed: int) -> None:
    """``allowed`` requests answered 200, then one refused 429."""
    for i in range(allowed):
        resp = gateway.post(BODY, key)
        assert resp.status_code == 200, f"request {i}: {resp.status_code} {resp.text[:200]}"
    refused = gateway.post(BODY, key)
    assert refused.status_code == 429, refused.text[:200]


def received_by(receiver: Receiver, key_id: int) -> list[tuple[dict, bytes]]:
    with receiver.lock:
        got = list(receiver.received)
    return [(h, b) for h, b in got if json.loads(b)["budget"]["key_id"] == key_id]


def received_for_team(receiver: Receiver, team_id: int) -> list[tuple[dict, bytes]]:
    with receiver.lock:
        got = list(receiver.received)
    return [(h, b) for h, b in got if json.loads(b)["budget"].get("team_id") == team_id]


def test_each_threshold_arrives_once_and_verifies(gateway, receiver):
    stack = gateway.stack
    key = gateway.new_key("alerted", "--quota", "requests=10/day")
    created = json.loads(stack.cli(
        "alerts", "add", "--key", str(key["id"]), "--at", "50,80,100",
        "--url", receiver.url("/hooks/generated"), "--json").stdout)
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["thresholds"] == [50, 80, 100]
    stack.created_keys.append(secret)  # never in a log (conftest checks)

    spend(gateway, key["key"], 10)
    got = wait_for(lambda: len(received_by(receiver, key["id"])) >= 3 and
                   received_by(receiver, key["id"]), 30, "three threshold events")
    time.sleep(2.5)  # two more rounds: nothing more arrives
    got = received_by(receiver, key["id"])
    assert len(got) == 3, [b for _, b in got]

    webhook = Webhook(secret)
    events = [webhook.verify(body, headers) for headers, body in got]
    assert sorted(e["threshold"] for e in events) == [50, 80, 100]
    assert len({h["webhook-id"] for h, _ in got}) == 3
    for event in events:
        assert event["type"] == "budget.threshold"
        assert event["budget"]["quota"] == "requests"
        assert event["budget"]["window"] == "day"
        assert event["limit"] == 10
        assert event["used"] * 100 >= event["threshold"] * 10
        assert event["team"] is None
        assert event["key"] == {"id": key["id"], "name": "alerted"}
    last = next(e for e in events if e["threshold"] == 100)
    assert last["used"] == 10 and last["percent"] == 100.0
    # A forged body does not verify.
    headers, body = got[0]
    with pytest.raises(Exception):
        webhook.verify(body.replace(b'"limit":10', b'"limit":99'), headers)

    listed = json.loads(stack.cli("alerts", "list", "--json").stdout)["alerts"]
    mine = [a for a in listed if a["id"] == created["id"]]
    assert mine and "secret" not in mine[0] and mine[0]["secret_source"] == "generated"


def test_a_secret_from_the_environment_signs(gateway, receiver):
    stack = gateway.stack
    key = gateway.new_key("alerted-env", "--quota", "requests=4/day")
    created = json.loads(stack.cli(
        "alerts", "add", "--key", str(key["id"]), "--at", "50",
        "--url", receiver.url("/hooks/env"), "--secret-env", SECRET_ENV, "--json").stdout)
    assert created["secret"] is None and created["secret_env"] == SECRET_ENV
    spend(gateway, key["key"], 4)
    got = wait_for(lambda: received_by(receiver, key["id"]), 30, "the 50 % event")
    headers, body = got[0]
    event = Webhook(ENV_SECRET).verify(body, headers)
    assert event["threshold"] == 50
    with pytest.raises(Exception):
        Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(body, headers)


def test_an_undeliverable_event_is_failed_and_listed(gateway):
    stack = gateway.stack
    key = gateway.new_key("alerted-down", "--quota", "requests=2/day")
    # A port nothing listens on.
    created = json.loads(stack.cli(
        "alerts", "add", "--key", str(key["id"]), "--at", "50",
        "--url", f"http://127.0.0.1:{free_port()}/down", "--json").stdout)
    stack.created_keys.append(created["secret"])
    spend(gateway, key["key"], 2)

    def failed():
        events = json.loads(stack.cli("alerts", "list", "--failed", "--json").stdout)["events"]
        return [e for e in events if e["alert_id"] == created["id"]]

    events = wait_for(failed, 30, "the event to fail")
    assert events[0]["attempts"] == 2 and events[0]["state"] == "failed"
    assert "connect" in events[0]["last_error"]
    assert events[0]["payload"]["threshold"] == 50
    table = stack.cli("alerts", "list", "--failed").stdout
    assert events[0]["id"] in table


def test_a_teams_budget_alerts_once_per_threshold(gateway, receiver):
    stack = gateway.stack
    team = json.loads(stack.cli("teams", "create", "--name", "alerted-team",
                                "--quota", "requests=10/day", "--json").stdout)
    keys = [gateway.new_key(f"alerted-team-{i}", "--team", str(team["id"])) for i in range(2)]
    created = json.loads(stack.cli(
        "alerts", "add", "--team", "alerted-team", "--at", "50,100",
        "--url", receiver.url("/hooks/team"), "--json").stdout)
    secret = created["secret"]
    stack.created_keys.append(secret)  # never in a log (conftest checks)
    assert created["team_id"] == team["id"] and created["key_id"] is None

    # Ten requests through both keys, in turn; the eleventh is the team's 429.
    for i in range(10):
        resp = gateway.post(BODY, keys[i % 2]["key"])
        assert resp.status_code == 200, f"request {i}: {resp.status_code} {resp.text[:200]}"
    refused = gateway.post(BODY, keys[0]["key"])
    assert refused.status_code == 429, refused.text[:200]

    wait_for(lambda: len(received_for_team(receiver, team["id"])) >= 2, 30,
             "the team's two threshold events")
    time.sleep(2.5)  # two more rounds: nothing more arrives
    got = received_for_team(receiver, team["id"])
    assert len(got) == 2, [b for _, b in got]
    assert len({h["webhook-id"] for h, _ in got}) == 2

    webhook = Webhook(secret)
    events = [webhook.verify(body, headers) for headers, body in got]
    assert sorted(e["threshold"] for e in events) == [50, 100]
    for event in events:
        assert event["type"] == "budget.threshold"
        assert event["budget"]["key_id"] is None
        assert event["budget"]["team_id"] == team["id"]
        assert event["budget"]["quota"] == "requests" and event["budget"]["window"] == "day"
        assert event["team"] == {"id": team["id"], "name": "alerted-team"}
        assert event["key"] is None
        assert event["limit"] == 10
        assert event["used"] * 100 >= event["threshold"] * 10
    last = next(e for e in events if e["threshold"] == 100)
    assert last["used"] == 10 and last["percent"] == 100.0
    # Another secret does not verify them.
    headers, body = got[0]
    with pytest.raises(Exception):
        Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).verify(body, headers)

    listed = json.loads(stack.cli("alerts", "list", "--json").stdout)["alerts"]
    mine = [a for a in listed if a["id"] == created["id"]]
    assert mine and mine[0]["team_id"] == team["id"] and mine[0]["key_id"] is None
    assert f"team {team['id']}" in stack.cli("alerts", "list").stdout
