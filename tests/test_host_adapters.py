"""Every call of the filter's host interface (filter/src/host.rs), on both
adapters that implement it (the proxy-wasm one, filter/src/wasm.rs, and the
Envoy dynamic module's, native/src/host/), proved end to end: each call's
effect as Envoy, the upstream or the ledger sees it, on the real stack, once
per build. The flow's decisions are unit-tested on the fake host; a call an
adapter gets wrong (the old bytes forwarded, a header set or removed in
vain, a metric never moved, a callout's answer cut short) shows only here.

Where another end-to-end test already proves a call's effect precisely it
is named, not repeated; this module's own tests prove the rest.

Host call, then its proof (a test named bare is in this module):

now_ms
    `tests/test_errors.py::test_error_table`: `token_issued_in_future` and
    `token_expired` are refused, while every fresh token passes.
monotonic_ms
    `tests/test_quotas.py::test_a_rate_limit_under_four_times_its_rate`:
    the bucket refills (at least 90 % of 50/s x elapsed + 50 in 10 s).
log
    From the root: `tests/test_refused_record.py` (the refused record's id
    in Envoy's log) and
    `tests/test_envoy_replies.py::test_a_filter_configuration_that_does_not_load_keeps_the_listener_closed`
    (the field at fault); from a stream:
    `test_a_streams_log_line_names_its_request`.
random
    `tests/test_client_headers.py::test_request_ids_share_no_structure`.
define_metric, increment_metric
    `test_every_metric_is_defined_and_moves_by_the_requests_sent`; the
    buffered gauge and a counter moved at once:
    `tests/test_limits.py::test_records_past_the_buffer_cap_are_dropped_and_counted`.
shared_get, shared_set
    The key cache: `test_every_metric_is_defined_and_moves_by_the_requests_sent`
    (one miss, then hits); a value of over 100 KiB (the price table):
    `test_a_verify_answer_over_100_kib_is_read_whole`; compare-and-swap
    with two workers racing:
    `tests/test_replay.py::test_two_copies_racing_on_two_connections_let_exactly_one_through`
    (on wasm `tollgate_replay_cas_retries` moves; the native build's lost
    race is proved in native/src/host/tests.rs only) and
    `tests/test_quotas.py::test_a_daily_requests_quota_on_one_envoy` (what
    was served and drained comes to the quota exactly).
dispatch, callout_status
    Every verdict fetched (each first request of a key here); a stream's
    grant call:
    `test_a_request_held_for_its_grant_call_reaches_the_upstream_byte_exact`;
    no answer: `tests/test_sidecar_down.py::test_sidecar_outage`.
callout_body
    `test_a_verify_answer_over_100_kib_is_read_whole`.
request_headers
    `tests/test_errors.py::test_error_table` (each code read from the key
    and token headers).
set_request_header
    `x-request-id`, `x-tollgate-key-id`:
    `test_the_upstream_gets_the_headers_the_filter_sets_and_none_it_removes`;
    `content-length` of a rewritten body (which the upstream then parses):
    `tests/test_token_quotas.py::test_a_call_without_a_cap_is_forwarded_with_the_default_cap`.
remove_request_header
    `test_the_upstream_gets_the_headers_the_filter_sets_and_none_it_removes`
    (every header the filter strips).
request_body
    `tests/test_errors.py::test_error_table` (`body_hash_mismatch`),
    `tests/test_flow.py::test_bodies_up_to_the_limit_pass` (900 KiB, sized
    and chunked, hashed whole).
replace_request_body
    `tests/test_llm.py::test_an_openai_stream_without_include_usage_is_still_metered_reported`
    (llm-upstream reports a chat stream's usage only when the body asks,
    and only the forwarded body does) and
    `tests/test_token_quotas.py::test_a_call_without_a_cap_is_forwarded_with_the_default_cap`
    (the answer stops at the cap only the forwarded body carries).
response_chunk, replace_response_chunk
    `tests/test_llm.py::test_an_openai_stream_without_include_usage_is_still_metered_reported`:
    the row's tokens are the stream's usage, and the usage-only chunk
    never reaches the client.
response_headers
    `:status`:
    `tests/test_llm.py::test_an_upstream_error_is_metered_as_zero_tokens_reported`
    (the upstream's 429 in the row); the units header:
    `tests/test_quotas.py::test_a_units_quota_overshoots_by_at_most_the_requests_in_flight`
    (charged = served x `X-Usage-Units`, exactly).
set_response_header
    `RateLimit` on allowed answers:
    `tests/test_quotas.py::test_a_request_bytes_quota_counts_chunked_and_sized_bodies_alike`,
    `test_a_request_held_for_its_grant_call_reaches_the_upstream_byte_exact`.
response_code_details
    `tests/test_replay.py::test_a_request_without_a_route_does_not_use_its_jti_up`
    (Envoy's `route_not_found` gives the `jti` back).
send_reply
    `tests/test_errors.py::test_error_table` (status, JSON body,
    `content-type`, `WWW-Authenticate`, `x-request-id`), and
    `tests/test_quotas.py` (`Retry-After`, `RateLimit-Policy` on a 429).
reset
    None: the flow resets a stream only when Envoy refuses its local reply,
    which no test can make it do (the native adapter's never fails).
resume
    `test_a_request_held_for_its_grant_call_reaches_the_upstream_byte_exact`.
plugin_config
    `tests/test_limits.py::test_records_past_the_buffer_cap_are_dropped_and_counted`
    (`usage.buffer_cap` 5 holds),
    `tests/test_token_quotas.py::test_a_call_without_a_cap_is_forwarded_with_the_default_cap`
    (`llm.default_output_cap` 25), and
    `tests/test_envoy_replies.py::test_a_filter_configuration_that_does_not_load_keeps_the_listener_closed`.
set_tick_period_ms
    `test_usage_reaches_the_ledger_within_a_second`.
done
    None: the native adapter's does nothing (a dynamic module has no
    delayed shutdown: its configuration's root sends a last batch as Envoy
    drops it), and Envoy exits on SIGTERM without waiting for a Wasm root's
    delayed shutdown, so `Stack.stop_envoy` waits for the filter's buffer
    to empty before it signals.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from pathlib import Path

import pytest
import requests

from conftest import sqlite_gateway_of_its_own
from tollgate_tooling.gateway import Gateway, assert_error, ratelimit_field
from tollgate_tooling.llm_clients import openai_client
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"text": "what does each host call do?"}'


# -- request headers: set and remove ------------------------------------------

#: What the filter removes from every request (filter/src/headers.rs,
#: STRIPPED_HEADERS), as a client might send each: the key id the filter
#: sets afterwards, and the original path Envoy writes after the filter,
#: are checked for their own values.
STRIPPED = {
    "Authorization": None,  # the key: gateway.post sends it
    "X-Auth-Token": None,  # the token: likewise
    "X-Api-Key": "tg_" + "1" * 40,
    "X-Goog-Api-Key": "tg_" + "2" * 40,
    "X-Tollgate-Key-Id": "424242",
    "X-Tollgate-Internal-Token": "guessed-internal-token",
    "X-Envoy-Original-Path": "/forged/path",
    "X-Real-IP": "10.9.8.7",
}


def stripped_headers() -> list[str]:
    """STRIPPED_HEADERS as the filter's source lists it."""
    source = (ROOT / "filter/src/headers.rs").read_text()
    block = re.search(r"pub const STRIPPED_HEADERS: \[&str; \d+\] = \[(.*?)\];", source, re.S)
    assert block, "filter/src/headers.rs no longer declares STRIPPED_HEADERS"
    return re.findall(r'"([a-z0-9-]+)"', block[1])


def test_the_upstream_gets_the_headers_the_filter_sets_and_none_it_removes(gateway: Gateway):
    """`set_request_header`: the upstream's `x-request-id` is the id the
    filter minted (its usage row's, not the client's, not Envoy's UUID) and
    `x-tollgate-key-id` the key's; `remove_request_header`: no stripped
    header reaches it as the client sent it."""
    assert sorted(h.lower() for h in STRIPPED) == sorted(stripped_headers()), \
        "STRIPPED no longer lists what the filter strips"
    key = gateway.new_key("host-headers")
    sent = {name: value for name, value in STRIPPED.items() if value is not None}
    resp = gateway.post(BODY, key["key"], headers={**sent, "X-Request-Id": "client-chosen-id"})
    assert resp.status_code == 200, resp.text

    seen = gateway.upstream_seen()["last_headers"][-1]
    minted = gateway.ledger.wait_usage_row(resp.headers["x-request-id"])["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", minted), f"not an id the filter mints: {minted}"
    assert seen["x-request-id"] == minted, seen
    assert seen["x-tollgate-key-id"] == str(key["id"]), seen
    for name in ("authorization", "x-auth-token", "x-api-key", "x-goog-api-key",
                 "x-tollgate-internal-token", "x-real-ip"):
        assert name not in seen, f"{name} reached the upstream: {seen[name]!r}"
    # Envoy writes its own after the filter: the path it rewrote.
    assert seen.get("x-envoy-original-path") in (None, "/proxy/analyze"), seen


# -- the request body, held and resumed ---------------------------------------------

def words_body(size: int, seed: int) -> bytes:
    """An /analyze body of about ``size`` ASCII bytes whose text has
    profane words scattered through it: the ai-server's answer gives each
    one's offset, so any byte lost, added or moved shows in it."""
    rnd = random.Random(seed)
    words, length = [], 0
    while length < size - 40:
        word = (rnd.choice(["fuck", "shit", "damn", "bastard"]) if rnd.random() < 0.02
                else "".join(rnd.choice("abcdefghijklmnop") for _ in range(rnd.randint(2, 9))))
        words.append(word)
        length += len(word) + 1
    return json.dumps({"text": " ".join(words)}).encode()


def test_a_request_held_for_its_grant_call_reaches_the_upstream_byte_exact(gateway: Gateway):
    """`resume` (and a stream's `dispatch`, `callout_status`): the first
    request of a key with a quota has its verdict fetched, then, its body
    whole, waits for the grant call that gives its budget something to
    charge, and goes on from that call's answer. Its body of nearly 1 MiB
    (the stack's ``max_body_bytes``) reaches the AI service byte for byte:
    the answer, which gives every match's offset, is the one the AI service
    gives the same body directly. `set_response_header`: the answer carries
    `RateLimit` for the quota."""
    key = gateway.new_key("host-resume", "--quota", "requests=1000/day")
    body = words_body(1_000_000, seed=11)
    assert len(body) <= gateway.stack.config.max_body_bytes

    resp = gateway.post(body, key["key"])

    assert resp.status_code == 200, resp.text[:300]
    direct = gateway.analyze_direct(body)
    assert direct.json()["matches"], "the body has no match: nothing would show a moved byte"
    assert resp.content == direct.content, "the AI service got another body than the client sent"
    assert ratelimit_field(resp).name == "requests"
    row = gateway.ledger.wait_usage_row(resp.headers["x-request-id"])
    assert (row["outcome"], row["request_bytes"]) == ("allowed", len(body)), row


# -- a callout's answer, read whole -------------------------------------------------

#: Prices enough to make a priced key's verify answer (which carries the
#: whole price table) over 100 KiB, under the filter's 256 KiB bound.
PRICES = 600


@pytest.fixture(scope="module")
def priced_gateway(tmp_path_factory, filter_build) -> Gateway:
    """A stack of this module's, whose price table the test fills (the
    session's stacks keep theirs small)."""
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-host-prices")) as gw:
        yield gw


def test_a_verify_answer_over_100_kib_is_read_whole(priced_gateway: Gateway):
    """`callout_body`: a key with a money quota is verified with the whole
    price table, 600 prices in over 100 KiB; read short, the answer would
    not parse and the request would get 503. Both requests pass: one on the AI service, and
    a chat call of the model priced last, which the filter prices from the
    table it stored in shared data (`shared_set`, `shared_get`)."""
    gw = priced_gateway
    admin = {"Authorization": f"Bearer {gw.stack.config.admin_token}"}
    models = [f"host-adapters-{i:04d}-" + "m" * 80 for i in range(PRICES)]

    # One at a time: SQLite takes one writer.
    with requests.Session() as session:
        for model in models:
            resp = session.post(gw.stack.sidecar_url + "/v1/prices", headers=admin, timeout=10,
                                json={"model": model, "input": "1", "output": "2", "per": "1M",
                                      "currency": "USD"})
            assert resp.status_code == 201, resp.text
    key = gw.new_key("host-priced", "--quota", "cost=100USD/day")
    verify = requests.post(
        gw.stack.sidecar_url + "/v1/internal/keys/verify",
        json={"key_hash": hashlib.sha256(key["key"].encode()).hexdigest()},
        headers={"x-tollgate-internal-token": gw.stack.config.internal_token}, timeout=10)
    assert verify.status_code == 200, verify.text[:300]
    assert len(verify.json()["prices"]) == PRICES
    assert 100 * 1024 < len(verify.content) < 256 * 1024, len(verify.content)

    resp = gw.post(BODY, key["key"])
    assert resp.status_code == 200, resp.text

    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    raw = client.chat.completions.with_raw_response.create(
        model=max(models), messages=[{"role": "user", "content": "price me"}], max_tokens=5)
    assert raw.http_response.status_code == 200
    row = gw.ledger.wait_usage_row(raw.headers["x-request-id"])
    assert (row["outcome"], row["model"]) == ("allowed", max(models)), row


# -- metrics ------------------------------------------------------------------------

def filter_metrics() -> dict[str, str]:
    """Every metric the filter defines, name -> kind, from its source:
    the counters and gauges of filter/src/metrics.rs and one denial counter
    per code of wire/src/outcome.rs's DENIALS."""
    metrics = (ROOT / "filter/src/metrics.rs").read_text()
    names = dict.fromkeys(re.findall(r'Counter::\w+ => "(tollgate_[a-z_]+)"', metrics), "counter")
    gauges = re.findall(r'pub const \w+: &str = "(tollgate_[a-z_]+)"', metrics)
    outcome = (ROOT / "wire/src/outcome.rs").read_text()
    block = re.search(r"pub const DENIALS: \[Outcome; \d+\] = \[(.*?)\];", outcome, re.S)
    assert block, "wire/src/outcome.rs no longer declares DENIALS"
    codes = dict(re.findall(r'Outcome::(\w+) => "([a-z_]+)"', outcome))
    denials = [codes[variant] for variant in re.findall(r"Outcome::(\w+)", block[1])]
    assert len(names) >= 19 and len(gauges) == 2 and len(denials) >= 24, (names, gauges, denials)
    return {**names, **{f"tollgate_denied_{code}": "counter" for code in denials},
            **dict.fromkeys(gauges, "gauge")}


def prometheus_types(gw: Gateway) -> dict[str, str]:
    """Each filter metric's type in Envoy's Prometheus exposition, by the
    filter's name (the native build's carry Envoy's prefix)."""
    text = requests.get(gw.stack.envoy_admin + "/stats/prometheus", timeout=10).text
    return {m[1]: m[2] for m in re.finditer(
        r"^# TYPE (?:envoy_dynamicmodulescustom_)?(tollgate_\w+) (\w+)$", text, re.M)}


def settled(gw: Gateway, names: list[str]) -> dict[str, int]:
    """The values of the counters ``names`` once two reads a tick apart
    agree (what earlier requests moved has reached Envoy), by the filter's
    names."""
    last = None
    for _ in range(50):
        stats = gw.stack.envoy_stats()
        now = {name.split(".", 1)[1]: stats[name] for name in names}
        if now == last:
            return now
        last = now
        time.sleep(0.3)
    raise AssertionError("the filter's metrics never settled")


def test_every_metric_is_defined_and_moves_by_the_requests_sent(gateway: Gateway):
    """`define_metric`: each metric the filter defines is in Envoy's stats
    under the build's prefix, a counter or a gauge as defined.
    `increment_metric`: a fresh key's 4 allowed requests and 3 bodies that
    do not match their token, and 2 requests without a key, move
    `tollgate_requests_allowed` by 4, the key cache's miss by 1 and hits by
    6 (the verdict cached in shared data), the two denial counters by 3 and
    2, and no other denial counter."""
    gw = gateway
    prefix = gw.stack.metric_prefix
    defined = filter_metrics()
    stats = gw.stack.envoy_stats()
    missing = sorted(name for name in defined if prefix + name not in stats)
    assert not missing, f"defined by the filter, not in Envoy's stats under {prefix}: {missing}"
    types = prometheus_types(gw)
    wrong = {name: types.get(name) for name, kind in defined.items() if types.get(name) != kind}
    assert not wrong, f"not of the kind the filter defined: {wrong}"

    expected = {"tollgate_requests_allowed": 4, "tollgate_key_cache_miss": 1,
                "tollgate_key_cache_hit": 6, "tollgate_denied_body_hash_mismatch": 3,
                "tollgate_denied_missing_api_key": 2}
    expected.update({name: 0 for name in defined
                     if name.startswith("tollgate_denied_") and name not in expected})
    key = gw.new_key("host-metrics")["key"]
    before = settled(gw, [prefix + name for name in expected])
    for _ in range(4):
        assert gw.post(BODY, key).status_code == 200
    for _ in range(3):
        assert_error(gw.post(BODY, key, gw.token(b"another body")), 401, "body_hash_mismatch")
    for _ in range(2):
        assert_error(gw.post(BODY, None), 401, "missing_api_key")

    def moved() -> dict[str, int]:
        now = gw.stack.envoy_stats()
        return {name: now[prefix + name] - before[name] for name in expected}

    # The hot counters reach Envoy on the filter's tick; then nothing more moves.
    deadline = time.monotonic() + 5
    while moved() != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert moved() == expected


# -- a stream's log line ------------------------------------------------------------

def test_a_streams_log_line_names_its_request(gateway: Gateway):
    """`log` from a stream: a chat answer without usage is metered by an
    estimate, and the warning saying so names the request in Envoy's log."""
    key = gateway.new_key("host-log")
    body = json.dumps({"model": "gpt-test", "max_tokens": 5,
                       "messages": [{"role": "user", "content": "log me"}]}).encode()
    resp = gateway.post(body, key["key"], path="/v1/chat/completions",
                        headers={"x-llm-upstream-fault": "omit-usage"})
    assert resp.status_code == 200, resp.text
    request_id = resp.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while True:
        logged = [line for line in gateway.stack.envoy.log_text().splitlines()
                  if f"request {request_id}: openai.chat tokens estimated" in line]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(logged) == 1, f"Envoy's log says {len(logged)} times that {request_id} was estimated"
    assert "no_usage" in logged[0], logged[0]


# -- the root's timer ---------------------------------------------------------------

#: How soon after its answer a request's usage row must be in the ledger:
#: the stacks flush every 200 ms (TEST_FILTER_OVERRIDES), the timer looks
#: every 100 ms, and the sidecar writes a batch in a few ms.
FLUSHED_WITHIN_S = 1.0


def test_usage_reaches_the_ledger_within_a_second(gateway: Gateway):
    """`set_tick_period_ms`: nothing but the root's timer sends usage (no
    flush without it until Envoy stops); each of five requests' rows is in
    the ledger within a second of its answer."""
    key = gateway.new_key("host-timer")["key"]
    took = []
    for _ in range(5):
        resp = gateway.post(BODY, key)
        answered = time.monotonic()
        assert resp.status_code == 200, resp.text
        while not gateway.ledger.usage_rows(resp.headers["x-request-id"]):
            assert time.monotonic() - answered < FLUSHED_WITHIN_S + 5, "never flushed"
            time.sleep(0.02)
        took.append(time.monotonic() - answered)
    print("usage rows in the ledger after " + ", ".join(f"{t:.2f}" for t in took) + " s")
    assert max(took) <= FLUSHED_WITHIN_S, took
