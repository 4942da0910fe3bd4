"""Token quotas end to end (docs/LIMITS.md, "Token quotas"): keys made with
``tollgate keys create --quota tokens=.../...``, the OpenAI SDK as the
client (tollgate_tooling.llm_clients), llm-upstream behind real Envoys, on
both builds of the filter.

A call on an LLM route reserves its token bound at admission (its body's
bytes plus its output cap) and is charged what it used when its response
ends; the rest goes back to what its Envoy holds. Each test counts on both
sides: the answers the clients saw, and the rows of ``usage_log``.

* ``tokens=5000/day`` spent by 16 concurrent streams until refused, then
  one call at a time until refused (nothing in flight: the refusal is
  final): the ledger's tokens are at most 5000 and at least 90 % of it
  (less than one reservation per Envoy goes unused), on SQLite and MariaDB
  and across a fleet of 3 Envoys and 2 sidecars; every
  429 is ``quota_exceeded`` with Retry-After, RateLimit-Policy, RateLimit
  and OpenAI's ``x-ratelimit-*-tokens``; ``usage reconcile`` finds the key
  within its quota;
* an upstream that ignores the output cap: the overshoot is at most what
  the calls in flight used past their reservations;
* aborted streams (the client closes, the upstream aborts): an estimated
  row within its reservation, and what the call did not use serves the
  next ones: a quota of two and a half reservations refuses a third call
  while two are in flight, then serves eight aborted calls one after the
  other and exactly as many whole calls as what is left allows;
* ``tokens=300/day@model-a`` refuses model-a once spent, model-b passes;
* a ``minute`` window refills at the next UTC minute;
* a call without an output cap is forwarded with ``llm.default_output_cap``
  (only for a key whose token quota counts it), and a call whose bound
  alone is above the limit is refused at once: "can never fit";
* the sidecar SIGKILLed while streams hold reservations: they finish and
  are metered, and the quota holds once the sidecar is back.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

import httpx
import openai
import pytest

from conftest import fleet_of_its_own, sqlite_gateway_of_its_own
from tollgate_tooling.gateway import Gateway, Ledger
from tollgate_tooling.llm_clients import openai_client
from tollgate_tooling.log_faults import LLM_UPSTREAM_ABORT
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

PROMPT = "count the tokens of this prompt"
MESSAGES = [{"role": "user", "content": PROMPT}]
#: llm-upstream's rule: one token per word, plus one per message.
PROMPT_TOKENS = len(PROMPT.split()) + 1

DAY_S = 86_400
#: The output cap the module's own stack writes into a call that sets none
#: (``llm.default_output_cap``), far below the default 4096 so that a reply
#: longer than it shows it.
DEFAULT_CAP = 25

LIMIT = 5000
CAP = 40
#: The concurrent streams that spend a quota.
STREAMS = 16


# -- the stacks -----------------------------------------------------------------

@pytest.fixture(scope="module")
def own(tmp_path_factory, filter_build) -> Gateway:
    """A SQLite stack of this module's (a test kills its sidecar; it is
    started again at the end) whose filter writes a small default cap."""
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-tokens"),
                                   {"llm": {"default_output_cap": DEFAULT_CAP}}) as gw:
        yield gw


@pytest.fixture(params=["mariadb", "sqlite"])
def ledger_gw(request) -> Gateway:
    """The session's MariaDB stack, then this module's SQLite one."""
    return request.getfixturevalue("gateway" if request.param == "mariadb" else "own")


@pytest.fixture(scope="module")
def llm_fleet(tmp_path_factory, mysql_server, filter_build):
    """3 Envoys and 2 sidecars on MariaDB, and the llm-upstream the fleet
    starts, which every Envoy routes the LLM APIs to."""
    with fleet_of_its_own(tmp_path_factory.mktemp("fleet-tokens"), mysql_server,
                          "tollgate_e2e_tokens") as fleet:
        yield fleet


# -- one call, as a client sees it ------------------------------------------------

class Refused(Exception):
    """The gateway answered the call with an error (``error``: the SDK's),
    received at ``at`` and sent at ``sent`` when known (seconds since the
    epoch): its Retry-After counts from when its headers reached the
    gateway, in between."""

    def __init__(self, error: openai.APIStatusError, sent: float | None = None):
        super().__init__(f"{error.status_code} {error.message}")
        self.error = error
        self.at = time.time()
        self.sent = self.at if sent is None else sent


def upstream_headers(reply: int, delay_ms: int = 0, fault: str | None = None) -> dict:
    """llm-upstream's knobs: ``reply`` tokens, each after ``delay_ms``, ``fault``."""
    headers = {"x-llm-upstream-reply-tokens": str(reply)}
    if delay_ms:
        headers["x-llm-upstream-token-delay-ms"] = str(delay_ms)
    if fault:
        headers["x-llm-upstream-fault"] = fault
    return headers


def open_stream(client: openai.OpenAI, *, cap: int | None = CAP, model: str = "gpt-test",
                **knobs):
    """A streamed chat completion, its answer's head read (the SDK's raw
    response); raises Refused for an error answer."""
    extra = {} if cap is None else {"max_tokens": cap}
    sent = time.time()
    try:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, stream=True,
            extra_headers=upstream_headers(**knobs), **extra)
    except openai.APIStatusError as err:
        raise Refused(err, sent) from err


def chat(client: openai.OpenAI, *, cap: int | None = CAP, model: str = "gpt-test",
         reply: int = 100, delay_ms: int = 0, fault: str | None = None,
         started: threading.Event | None = None) -> tuple[str, str]:
    """A streamed chat completion read to its end: (request id, text).
    ``reply`` tokens asked of llm-upstream, each after ``delay_ms``;
    ``started`` is set once the first token arrived. Raises Refused for an
    error answer."""
    raw = open_stream(client, cap=cap, model=model, reply=reply, delay_ms=delay_ms, fault=fault)
    text = ""
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            if started is not None:
                started.set()
    return raw.headers["x-request-id"], text


def spend(clients: list[openai.OpenAI], workers: int,
          call: Callable[[openai.OpenAI], tuple[str, str]]) -> tuple[list[str], list[Refused]]:
    """``workers`` threads, thread i calling through ``clients[i % n]``, each
    until its first refusal; then one call at a time through each client in
    turn until a whole round is refused (nothing is in flight then, so the
    refusal is final: what an Envoy still held is spent). The request ids
    served and the refusals."""
    served: list[str] = []
    refused: list[Refused] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        client = clients[i % len(clients)]
        for _ in range(1000):
            try:
                request_id, _ = call(client)
            except Refused as no:
                with lock:
                    refused.append(no)
                return
            with lock:
                served.append(request_id)
        raise AssertionError("a worker was never refused")

    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(worker, i) for i in range(workers)]:
            done.result()
    for _ in range(1000):
        round_served = 0
        for client in clients:
            try:
                served.append(call(client)[0])
                round_served += 1
            except Refused as no:
                refused.append(no)
        if not round_served:
            return served, refused
    raise AssertionError("still served after 1000 rounds")


# -- what the ledger holds ---------------------------------------------------------

def rows_of(ledger: Ledger, key_id: int, served: list[str], timeout: float = 20.0) -> list[dict]:
    """The key's ``allowed`` rows once every served request has one; exactly
    one row per served request, and no other allowed row."""
    want = set(served)
    assert len(want) == len(served), "a request id served twice"
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger.query("SELECT * FROM usage_log WHERE api_key_id = ? AND outcome = 'allowed'",
                            [key_id])
        have = {r["request_id"] for r in rows}
        if want <= have or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert have == want, (f"{len(want)} served, {len(have)} allowed rows: {len(want - have)} "
                          f"missing, {len(have - want)} extra")
    return rows


def total(rows: list[dict]) -> int:
    """A ``tokens`` quota's count of rows: input + output."""
    return sum(r["input_tokens"] + r["output_tokens"] for r in rows)


def reservation(row: dict, cap: int) -> int:
    """What the call of ``row`` reserved: its body's bytes and its cap."""
    return row["request_bytes"] + cap


def reconciled(cli: Callable, key_id: int) -> dict[str, dict]:
    """``tollgate usage reconcile --key ID --json`` exits 0, no quota of the
    key over its limit; its rows by quota name."""
    result = cli("usage", "reconcile", "--key", str(key_id), "--json", check=False)
    assert result.returncode == 0, \
        f"usage reconcile exited {result.returncode}: {result.stdout[-2000:]}{result.stderr[-1000:]}"
    rows = json.loads(result.stdout)
    assert not [r for r in rows if r["over_limit"]], rows
    return {r["quota"]: r for r in rows}


# -- what a refusal says ------------------------------------------------------------

_ITEM = re.compile(r'\s*"([^"]+)"((?:;[a-z]+=-?\d+)*)\s*')


def sf_items(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy value: {name: {param: int}}."""
    items = {}
    for member in value.split(","):
        match = _ITEM.fullmatch(member)
        assert match, f"{member!r} is not a quoted name with integer parameters, in {value!r}"
        params = dict(p.split("=") for p in match[2].split(";")[1:])
        items[match[1]] = {k: int(v) for k, v in params.items()}
    return items


def openai_duration(seconds: int) -> str:
    """A duration as OpenAI's x-ratelimit-reset-* headers write it."""
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s"


def seconds_to_window_end(window_s: int, at: float) -> float:
    """Seconds from ``at`` to the end of its UTC minute or day."""
    t = datetime.fromtimestamp(at, timezone.utc)
    if window_s == 60:
        end = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    else:
        end = t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (end - t).total_seconds()


def assert_token_refusal(no: Refused, name: str, limit: int, window_s: int,
                         at: float | None = None) -> dict[str, str]:
    """A 429 ``quota_exceeded`` of the token quota ``name``, as OpenAI's SDK
    raised it, with every header the contract names; its headers."""
    err = no.error
    assert isinstance(err, openai.RateLimitError), f"{type(err).__name__}: {err}"
    assert err.code == "quota_exceeded", err.body
    headers = err.response.headers
    retry_after = headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, dict(headers)
    # Counted from when the request reached the gateway: between the
    # window's end as seen when it was sent and when its answer came.
    left = seconds_to_window_end(window_s, no.at if at is None else at)
    most = seconds_to_window_end(window_s, no.sent if at is None else at)
    assert left - 2 <= int(retry_after) <= most + 2, \
        f"Retry-After {retry_after}, but the window ends in {left:.0f} s ({most:.0f} s when sent)"
    policy = sf_items(headers.get("ratelimit-policy", ""))
    assert policy.get(name) == {"q": limit, "w": window_s}, headers.get("ratelimit-policy")
    assert sf_items(headers.get("ratelimit", "")) == {name: {"r": 0, "t": int(retry_after)}}, \
        headers.get("ratelimit")
    assert headers.get("x-ratelimit-limit-tokens") == str(limit), dict(headers)
    remaining = headers.get("x-ratelimit-remaining-tokens", "")
    assert remaining.isdigit() and int(remaining) < limit, dict(headers)
    assert headers.get("x-ratelimit-reset-tokens") == openai_duration(int(retry_after)), \
        dict(headers)
    return dict(headers)


def tally(refused: list[Refused]) -> collections.Counter:
    return collections.Counter((r.error.status_code, r.error.code) for r in refused)


# -- a daily quota spent by concurrent streams ----------------------------------------

def assert_a_token_quota_holds(clients: list[openai.OpenAI], ledger: Ledger, cli: Callable,
                               key: dict, label: str) -> None:
    """``tokens=5000/day`` spent by 16 concurrent streams (output = cap),
    then one call at a time until refused: the ledger holds at most 5000
    tokens and at least 90 % of them, every refusal is the quota's."""
    assert key["limits"]["quotas"] == [
        {"kind": "tokens", "limit": LIMIT, "window": "day"}], key["limits"]
    served, refused = spend(clients, STREAMS, lambda c: chat(c, delay_ms=2))
    assert refused, "never refused"
    for no in refused:
        assert_token_refusal(no, "tokens", LIMIT, DAY_S)
    rows = rows_of(ledger, key["id"], served)
    for r in rows:
        assert (r["output_tokens"], r["usage_source"]) == (CAP, "reported"), r
    spent = total(rows)
    print(f"{label}: tokens=5000/day: {len(served)} streams served, {spent} tokens in the "
          f"ledger ({spent / LIMIT:.1%}), {tally(refused)}")
    assert spent <= LIMIT, f"{spent} tokens in the ledger under tokens=5000/day"
    assert spent >= 0.9 * LIMIT, f"only {spent} of 5000 tokens served before the refusals"
    # Each Envoy refused a call once what it held and what was left to
    # grant were short of one reservation: less than that is unused.
    one = max(reservation(r, CAP) for r in rows)
    assert spent > LIMIT - len(clients) * one, \
        f"{spent} tokens served: more than {len(clients)} reservations of {one} left unused"
    counted = reconciled(cli, key["id"])["tokens"]
    assert counted["ledger"] == spent and counted["charged"] <= LIMIT, counted


def test_a_daily_token_quota_spent_by_concurrent_streams(ledger_gw: Gateway):
    gw = ledger_gw
    key = gw.new_key("tokens-5k", "--quota", "tokens=5k/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    assert_a_token_quota_holds([client], gw.ledger, gw.stack.cli, key, "one Envoy")


def test_a_daily_token_quota_across_a_fleet(llm_fleet):
    fleet = llm_fleet
    key = fleet.create_key("fleet-tokens-5k", "--quota", "tokens=5000/day")
    clients = [openai_client(url, key["key"], fleet.jwt_secret) for url in fleet.gateways]
    assert_a_token_quota_holds(clients, fleet.ledger, fleet.cli, key, "3 Envoys")


# -- an upstream that ignores the cap ------------------------------------------------------

def test_an_upstream_ignoring_the_cap_overshoots_by_at_most_the_calls_in_flight(own: Gateway):
    gw = own
    cap, reply, workers = 10, 300, 8
    key = gw.new_key("tokens-ignored-cap", "--quota", f"tokens={LIMIT}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    served, refused = spend([client], workers, lambda c: chat(
        c, cap=cap, reply=reply, delay_ms=2, fault="ignore-cap"))
    for no in refused:
        assert_token_refusal(no, "tokens", LIMIT, DAY_S)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert r["output_tokens"] == reply, f"the upstream ignored the cap: {r}"
    spent = total(rows)
    excess = max(r["input_tokens"] + r["output_tokens"] - reservation(r, cap) for r in rows)
    assert excess > 0, "each call must use more than it reserved, or this proves nothing"
    # At most the calls in flight when the limit was reached go past it,
    # each by what it used past its reservation.
    bound = workers * excess
    print(f"ignore-cap: {len(served)} served, {spent} tokens, overshoot {spent - LIMIT} "
          f"(bound {bound}: {workers} in flight x {excess}), {tally(refused)}")
    assert spent - LIMIT <= bound, f"{spent} tokens, {spent - LIMIT} past 5000: bound {bound}"
    assert spent >= 0.9 * LIMIT, f"only {spent} tokens served"
    if spent > LIMIT:  # usage reconcile flags what the upstream made it go over
        result = gw.stack.cli("usage", "reconcile", "--key", str(key["id"]), "--json",
                              check=False)
        assert result.returncode != 0, result.stdout
        row, = json.loads(result.stdout)
        assert (row["quota"], row["ledger"], row["over_limit"]) == ("tokens", spent, True), row


# -- aborted streams ------------------------------------------------------------------------

def test_aborted_streams_are_estimated_and_give_back_what_they_did_not_use(own: Gateway):
    gw = own
    cap = 200
    # What a call of this shape reserves, from a row of an unlimited key.
    probe = gw.new_key("tokens-probe")
    rid, _ = chat(openai_client(gw.stack.gateway, probe["key"], gw.secret), cap=cap, reply=5)
    one = reservation(gw.ledger.wait_usage_row(rid, timeout=15), cap)
    limit = 2 * one + one // 2  # two reservations fit at once, three never
    key = gw.new_key("tokens-aborted", "--quota", f"tokens={limit}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)

    def client_closes(raw) -> None:
        """Reads four chunks of the stream and closes it."""
        stream = raw.parse()
        chunks = iter(stream)
        for _ in range(4):
            next(chunks)
        stream.close()

    def slow() -> object:
        return open_stream(client, cap=cap, reply=200, delay_ms=20)

    # Two calls in flight hold two reservations: a third does not fit.
    held = [slow(), slow()]
    with pytest.raises(Refused) as refused:
        chat(client, cap=cap, reply=5)
    assert_token_refusal(refused.value, "tokens", limit, DAY_S)
    aborted = []
    gw.stack.expect_fault("llm-upstream", LLM_UPSTREAM_ABORT,
                          "the abort fault raises mid-stream, and gunicorn logs it")
    for i in range(8):
        if i < 2:
            raw = held[i]
            client_closes(raw)
        elif i % 2:  # the upstream aborts after 3 tokens
            raw = open_stream(client, cap=cap, reply=200, fault="abort")
            with contextlib.suppress(openai.APIConnectionError, httpx.HTTPError):
                for _ in raw.parse():
                    pass
        else:
            raw = slow()
            client_closes(raw)
        aborted.append(raw.headers["x-request-id"])
        # Envoy sees the end and settles the call a moment later; the
        # next call may need what this one gives back.
        gw.ledger.wait_usage_row(aborted[-1], timeout=15)
    rows = rows_of(gw.ledger, key["id"], aborted)
    for r in rows:
        assert r["usage_source"] == "estimated", r
        assert 0 < r["output_tokens"] <= cap, r
        assert r["input_tokens"] + r["output_tokens"] <= reservation(r, cap), r
    spent = total(rows)
    assert spent + one <= limit, "the test needs room for one more call"

    # What the aborted calls did not use serves whole calls, one at a time,
    # while a reservation fits in what is left.
    served = []
    with pytest.raises(Refused) as refused:
        for _ in range(50):
            served.append(chat(client, cap=cap, reply=5)[0])
    assert_token_refusal(refused.value, "tokens", limit, DAY_S)
    whole = PROMPT_TOKENS + 5
    fits = math.floor((limit - spent - one) / whole) + 1
    rows = rows_of(gw.ledger, key["id"], aborted + served)
    print(f"aborted: limit {limit} (a reservation {one}): a third call in flight refused; "
          f"8 aborted calls used {spent}, then {len(served)} whole calls of {whole} served "
          f"(expected {fits}); {total(rows)} tokens in all")
    assert len(served) == fits, f"{len(served)} whole calls served after the aborts, not {fits}"
    assert total(rows) <= limit


# -- a quota scoped to a model ------------------------------------------------------------

def test_a_quota_scoped_to_a_model_refuses_only_that_model(own: Gateway):
    gw = own
    key = gw.new_key("tokens-model-a", "--quota", "tokens=300/day@model-a")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    served = []
    with pytest.raises(Refused) as refused:
        for _ in range(20):
            served.append(chat(client, model="model-a")[0])
    assert served, "model-a was never served"
    assert_token_refusal(refused.value, "tokens@model-a", 300, DAY_S)
    others = [chat(client, model="model-b")[0] for _ in range(10)]
    rows = rows_of(gw.ledger, key["id"], served + others)
    spent_a = total([r for r in rows if r["model"] == "model-a"])
    spent_b = total([r for r in rows if r["model"] == "model-b"])
    print(f"tokens=300/day@model-a: {len(served)} model-a calls ({spent_a} tokens), "
          f"then 10 model-b calls ({spent_b} tokens) served")
    assert spent_a <= 300 and spent_b > 300, (spent_a, spent_b)
    with pytest.raises(Refused):
        chat(client, model="model-a")


# -- a minute window ------------------------------------------------------------------------

def test_a_minute_window_refills_at_the_next_utc_minute(own: Gateway):
    gw = own
    key = gw.new_key("tokens-minute", "--quota", "tokens=300/minute")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    if time.time() % 60 > 50:  # spend it within one minute
        time.sleep(60.2 - time.time() % 60)
    minute = int(time.time() // 60)
    served = []
    with pytest.raises(Refused) as refused:
        for _ in range(20):
            served.append(chat(client)[0])
    assert int(time.time() // 60) == minute, "the spending crossed a minute boundary"
    assert served, "never served"
    assert_token_refusal(refused.value, "tokens", 300, 60)
    time.sleep((minute + 1) * 60 + 0.5 - time.time())
    again = chat(client)[0]
    rows = rows_of(gw.ledger, key["id"], served + [again])
    print(f"tokens=300/minute: {len(served)} served, refused, then served again in the "
          f"next minute ({total(rows)} tokens in all)")


# -- the default output cap, and a call that can never fit -------------------------------------

def test_a_call_without_a_cap_is_forwarded_with_the_default_cap(own: Gateway):
    gw = own
    limited = gw.new_key("tokens-default-cap", "--quota", "tokens=10k/day")
    scoped = gw.new_key("tokens-other-model", "--quota", "tokens=10k/day@model-x")
    free = gw.new_key("tokens-none")
    reply = DEFAULT_CAP + 20

    def output(key: dict) -> tuple[int, str]:
        client = openai_client(gw.stack.gateway, key["key"], gw.secret)
        done = client.chat.completions.create(
            model="gpt-test", messages=MESSAGES,
            extra_headers={"x-llm-upstream-reply-tokens": str(reply)})
        return done.usage.completion_tokens, done.choices[0].finish_reason

    assert output(limited) == (DEFAULT_CAP, "length"), "the default cap was not written"
    assert output(scoped) == (reply, "stop"), "a quota of another model wrote a cap"
    assert output(free) == (reply, "stop"), "a key without a token quota got a cap"
    # Streamed, likewise.
    client = openai_client(gw.stack.gateway, limited["key"], gw.secret)
    rid, text = chat(client, cap=None, reply=reply)
    assert len(text.split()) == DEFAULT_CAP, text
    assert gw.ledger.wait_usage_row(rid, timeout=15)["output_tokens"] == DEFAULT_CAP


def test_a_call_whose_bound_is_above_the_limit_can_never_fit(own: Gateway):
    gw = own
    key = gw.new_key("tokens-never-fits", "--quota", "tokens=300/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    began = time.monotonic()
    with pytest.raises(Refused) as refused:
        chat(client, cap=1000)
    assert time.monotonic() - began < 2, "refused, but not at once"
    err = refused.value.error
    assert isinstance(err, openai.RateLimitError) and err.code == "quota_exceeded", err.body
    assert "can never fit" in err.message, err.message
    # It charged nothing: a call that fits is served in full.
    rid, text = chat(client, cap=CAP)
    assert len(text.split()) == CAP, text
    rows = rows_of(gw.ledger, key["id"], [rid])
    assert total(rows) == PROMPT_TOKENS + CAP, rows


# -- the sidecar killed while streams hold reservations -----------------------------------------

def test_the_sidecar_killed_while_streams_hold_reservations(own: Gateway):
    gw = own
    key = gw.new_key("tokens-sidecar-killed", "--quota", f"tokens={LIMIT}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    warm = [chat(client)[0]]
    in_flight = 4
    started = [threading.Event() for _ in range(in_flight)]
    with ThreadPoolExecutor(in_flight) as pool:
        streams = [pool.submit(chat, client, delay_ms=25, started=s) for s in started]
        for s in started:
            assert s.wait(10), "a stream did not start"
        assert gw.stack.sidecar.stop(signal.SIGKILL) is not None
        try:
            finished = [f.result(timeout=30) for f in streams]
        finally:
            gw.stack.start_sidecar()
    for _, text in finished:
        assert len(text.split()) == CAP, text
    rows = rows_of(gw.ledger, key["id"], warm + [rid for rid, _ in finished])
    assert all(r["usage_source"] == "reported" and r["output_tokens"] == CAP for r in rows), rows

    served, refused = spend([client], STREAMS, lambda c: chat(c, delay_ms=2))
    for no in refused:
        assert_token_refusal(no, "tokens", LIMIT, DAY_S)
    rows = rows_of(gw.ledger, key["id"], warm + [rid for rid, _ in finished] + served)
    spent = total(rows)
    print(f"sidecar killed with {in_flight} streams in flight: all finished and metered; "
          f"then {len(served)} served, {spent} tokens in the ledger, {tally(refused)}")
    assert spent <= LIMIT, f"{spent} tokens in the ledger under tokens=5000/day"
    assert spent >= 0.9 * LIMIT, f"only {spent} tokens served"
    assert reconciled(gw.stack.cli, key["id"])["tokens"]["ledger"] == spent
