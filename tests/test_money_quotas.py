"""Money quotas end to end (docs/LIMITS.md, "Money quotas"): a key or a
team with ``--quota cost=2USD/day``, prices set with ``tollgate prices
set``, OpenAI's SDK as the client, llm-upstream behind real Envoys, on both
builds of the filter.

A call reserves its bound at its model's price (every byte of its body an
input token at the dearer input price, its output cap at the output price)
and is charged its row's cost when it ends, so the quota never overshoots
when the upstream honours the cap.

* a key's ``cost=2USD/day`` spent by concurrent streams: the ledger's
  ``cost_micros`` are at most 2 000 000 and at least 90 % of it, on MariaDB
  and SQLite; every 429 is ``quota_exceeded`` naming ``cost``;
* a team's money budget shared by two keys, with the same bound;
* a model without a price costs nothing and is shown as unpriced;
* bad input changes nothing: a money quota in another currency than the
  prices', an amount with more than six decimals.
"""

from __future__ import annotations

import json
import time
import uuid

from test_teams import team_rows as ledger_rows
from test_token_quotas import STREAMS, chat, sf_items, spend, tally
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.llm_clients import openai_client
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

#: 2 USD in micro-units.
LIMIT = 2_000_000
#: Per 1M tokens: 100 USD input (100 micro-units a token), 1000 output.
INPUT, OUTPUT = "100", "1000"


def priced_model(cli) -> str:
    """A model of its own, priced at INPUT/OUTPUT per 1M tokens in USD from
    the start of time (so every row of this run is priced)."""
    model = f"money-{uuid.uuid4().hex[:8]}"
    cli("prices", "set", "--model", model, "--input", INPUT, "--output", OUTPUT,
        "--per", "1M", "--currency", "USD", "--from", "2020-01-01T00:00:00Z")
    return model


def assert_money_holds(clients, ledger, key_ids: list[int], model: str, label: str,
                       team: bool) -> None:
    served, refused = spend(clients, STREAMS, lambda c: chat(c, model=model, delay_ms=2))
    assert refused, "never refused"
    for no in refused:
        err = no.error
        assert (err.status_code, err.code) == (429, "quota_exceeded"), f"{err}"
        name = "team.cost" if team else "cost"
        assert name in sf_items(err.response.headers.get("ratelimit", "")), \
            err.response.headers.get("ratelimit")
    rows = ledger_rows(ledger, key_ids, served)
    for r in rows:
        assert r["cost_micros"] is not None and r["currency"] == "USD", r
    spent = sum(r["cost_micros"] for r in rows)
    print(f"{label}: cost=2USD/day: {len(served)} streams, {spent} micro-units "
          f"({spent / LIMIT:.1%}), {tally(refused)}")
    assert spent <= LIMIT, f"{spent} micro-units spent under cost=2USD/day"
    assert spent >= 0.9 * LIMIT, f"only {spent} of {LIMIT} micro-units served"


def test_a_keys_money_quota_never_overshoots(any_gateway: Gateway):
    gw = any_gateway
    model = priced_model(gw.stack.cli)
    key = gw.new_key(f"money-{uuid.uuid4().hex[:6]}", "--quota", "cost=2USD/day")
    assert key["limits"]["quotas"] == [
        {"kind": "cost", "limit": LIMIT, "window": "day", "currency": "USD"}], key["limits"]
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    assert_money_holds([client], gw.ledger, [key["id"]], model, "one key", team=False)


def test_a_teams_money_budget_is_shared_by_its_keys(gateway: Gateway):
    gw = gateway
    cli = gw.stack.cli
    model = priced_model(cli)
    team = json.loads(cli("teams", "create", "--name", f"money-team-{uuid.uuid4().hex[:6]}",
                          "--quota", "cost=2USD/day", "--json").stdout)
    keys = [gw.new_key(f"money-team-key-{i}-{uuid.uuid4().hex[:6]}", "--team", str(team["id"]))
            for i in range(2)]
    clients = [openai_client(gw.stack.gateway, k["key"], gw.secret) for k in keys]
    assert_money_holds(clients, gw.ledger, [k["id"] for k in keys], model, "a team of two",
                       team=True)


def test_a_model_without_a_price_costs_nothing_and_is_unpriced(gateway: Gateway):
    gw = gateway
    priced_model(gw.stack.cli)  # the key's calls are priced, this model is not
    key = gw.new_key(f"money-unpriced-{uuid.uuid4().hex[:6]}", "--quota", "cost=0.000001USD/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    served = [chat(client, model=f"unpriced-{uuid.uuid4().hex[:6]}", reply=3)[0]
              for _ in range(3)]
    rows = ledger_rows(gw.ledger, [key["id"]], served)
    assert [(r["cost_micros"], r["currency"]) for r in rows] == [(None, None)] * 3, rows


def test_bad_money_quotas_are_refused_and_change_nothing(gateway: Gateway):
    gw = gateway
    cli = gw.stack.cli
    priced_model(cli)  # prices are in USD
    for quota, says in [("cost=1EUR/day", "currency"), ("cost=1.0000001USD/day", "decimals"),
                        ("cost=1/day", "currency")]:
        made = cli("keys", "create", "--name", f"bad-money-{uuid.uuid4().hex[:6]}",
                   "--quota", quota, "--json", check=False)
        assert made.returncode != 0, f"{quota} was accepted: {made.stdout}"
        assert says in (made.stderr + made.stdout).lower(), (quota, made.stderr)
    key = gw.new_key(f"money-keep-{uuid.uuid4().hex[:6]}", "--quota", "cost=1USD/day")
    changed = cli("keys", "limits", str(key["id"]), "--quota", "cost=1EUR/day", check=False)
    assert changed.returncode != 0 and "currency" in (changed.stderr + changed.stdout).lower()
    listed = json.loads(cli("keys", "list", "--json").stdout)
    ours, = [k for k in listed if k["id"] == key["id"]]
    assert ours["limits"]["quotas"][0]["currency"] == "USD", ours



def test_a_price_changed_mid_window_prices_each_row_at_its_own_time(any_gateway: Gateway):
    gw = any_gateway
    cli = gw.stack.cli
    model = priced_model(cli)
    key = gw.new_key(f"money-repriced-{uuid.uuid4().hex[:6]}", "--quota", "cost=2USD/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    before = [chat(client, model=model, reply=5)[0] for _ in range(3)]
    # Ten times dearer from now on: the Envoy learns it through the key feed.
    cli("prices", "set", "--model", model, "--input", "1000", "--output", "10000",
        "--per", "1M", "--currency", "USD")
    time.sleep(2.0)
    after = [chat(client, model=model, reply=5)[0] for _ in range(3)]
    rows = {r["request_id"]: r for r in ledger_rows(gw.ledger, [key["id"]], before + after)}

    def cost(row: dict, input_price: int, output_price: int) -> int:
        # Whole micro-units per token here: no rounding.
        return row["input_tokens"] * input_price + row["output_tokens"] * output_price

    for rid in before:
        assert rows[rid]["cost_micros"] == cost(rows[rid], 100, 1000), rows[rid]
    for rid in after:
        assert rows[rid]["cost_micros"] == cost(rows[rid], 1000, 10000), rows[rid]
    # The summary adds the rows' own costs, exactly.
    summary = json.loads(cli("usage", "summary", "--key", str(key["id"]), "--by", "model",
                             "--json").stdout)
    ours = [r for r in summary["rows"] if r.get("model") == model]
    assert sum(r["cost_micros"] for r in ours) == sum(r["cost_micros"] for r in rows.values()), \
        (ours, summary)
