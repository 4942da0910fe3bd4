"""Token quotas end to end on every LLM API and every token kind (docs/LIMITS.md,
"Token quotas: reserve, stream, settle"), the providers' official SDKs as
clients (tollgate_tooling.llm_clients), llm-upstream behind a SQLite stack,
on both builds of the filter. test_token_quotas.py covers OpenAI chat
streams in depth; this module the other APIs and kinds, one call at a time
(nothing in flight when the last refusal comes, so it is final).

* Anthropic messages, Gemini generateContent / streamGenerateContent and
  OpenAI Responses, each whole and streamed, under ``tokens=N/day``: served
  until refused with 429 ``quota_exceeded`` in the provider's shape (the
  SDK's own rate-limit error) with Retry-After, RateLimit-Policy and
  RateLimit (OpenAI's ``x-ratelimit-*-tokens`` on the OpenAI route only);
  the ledger's tokens at most N, and less than one reservation short of it.
  Gemini without ``generationConfig`` and Responses without
  ``max_output_tokens`` are forwarded with ``llm.default_output_cap``: the
  reply stops at it (a key without a token quota gets the whole reply);
* ``input_tokens`` and ``output_tokens`` quotas on one key: each refuses on
  its own side while the other is far from its limit, its side's ledger
  sum within its limit;
* embeddings under ``tokens``: they reserve their body's bytes only (no
  output cap: a limit between the body's bytes and those plus the default
  cap admits them), their rows have no output.
"""

from __future__ import annotations

import time
from typing import Callable

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from test_token_quotas import (  # noqa: F401  (own: the module's stack, a fixture)
    DAY_S, DEFAULT_CAP, MESSAGES, PROMPT, PROMPT_TOKENS, Refused, assert_token_refusal, own,
    rows_of, seconds_to_window_end, sf_items, upstream_headers)
from tollgate_tooling.gateway import Gateway, Ledger
from tollgate_tooling.llm_clients import anthropic_client, openai_client, signer
from tollgate_tooling.windows import clear_of_the_utc_day_end  # noqa: F401 (an autouse fixture)

#: The cap the Anthropic calls set, and what llm-upstream is asked to reply
#: (at least the cap: each call uses its whole output reservation).
CAP = 40
#: A reply longer than the default cap, to show where it stops.
LONG_REPLY = DEFAULT_CAP + 20
LIMIT = 600


# -- one call at a time until the refusal is final ------------------------------------

def serially(ledger: Ledger, key_id: int, call: Callable[[], str],
             refusal: type[Exception] | tuple) -> tuple[list[str], Exception]:
    """Calls ``call`` (it returns the request id) one at a time until it
    raises ``refusal``; then, once every served call's row is in (its
    reservation settled), once more: a second refusal is final. The
    request ids served, and the final refusal."""
    served: list[str] = []
    for _ in range(200):
        try:
            served.append(call())
            continue
        except refusal as no:
            first = no
        rows_of(ledger, key_id, served)
        try:
            served.append(call())
        except refusal as no:
            assert type(no) is type(first), (first, no)
            return served, no
    raise AssertionError("still served after 200 calls")


def assert_within(rows: list[dict], limit: int, count: Callable[[dict], int],
                  bound: Callable[[dict], int], label: str) -> int:
    """Each row within its reservation (``bound``), their sum (``count``)
    at most ``limit`` and less than one reservation short of it (the last
    refusal came with nothing in flight); the sum."""
    assert rows, f"{label}: nothing served"
    for r in rows:
        assert r["usage_source"] == "reported", r
        assert count(r) <= bound(r), f"{label}: a call used more than it reserved: {r}"
    spent = sum(count(r) for r in rows)
    one = max(bound(r) for r in rows)
    print(f"{label}: {len(rows)} served, {spent} of {limit} in the ledger "
          f"(a reservation {one})")
    assert spent <= limit, f"{label}: {spent} in the ledger, limit {limit}"
    assert spent > limit - one, f"{label}: {spent} of {limit}: more than a reservation unused"
    return spent


def both(r: dict) -> int:
    return r["input_tokens"] + r["output_tokens"]


def assert_refusal_headers(headers, name: str, limit: int) -> None:
    """A refusal of daily token quota ``name`` on a route that is not
    OpenAI's: Retry-After, RateLimit-Policy and RateLimit, no x-ratelimit."""
    retry_after = headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, dict(headers)
    assert abs(int(retry_after) - seconds_to_window_end(DAY_S, time.time())) <= 2, retry_after
    assert sf_items(headers.get("ratelimit-policy", "")).get(name) == \
        {"q": limit, "w": DAY_S}, dict(headers)
    assert sf_items(headers.get("ratelimit", "")) == \
        {name: {"r": 0, "t": int(retry_after)}}, dict(headers)
    assert "x-ratelimit-limit-tokens" not in headers, "OpenAI's headers on another route"


# -- Anthropic messages ------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_anthropic_messages_under_a_token_quota(own: Gateway, streamed: bool):
    gw = own
    key = gw.new_key(f"tokens-anthropic-{streamed}", "--quota", f"tokens={LIMIT}/day")
    claude = anthropic_client(gw.stack.gateway, key["key"], gw.secret)
    knobs = {"extra_headers": upstream_headers(CAP)}

    def call() -> str:
        if streamed:
            with claude.messages.stream(model="claude-test", max_tokens=CAP,
                                        messages=MESSAGES, **knobs) as s:
                text = "".join(s.text_stream)
                usage = s.get_final_message().usage
                request_id = s.response.headers["x-request-id"]
            assert len(text.split()) == CAP, text
        else:
            raw = claude.messages.with_raw_response.create(
                model="claude-test", max_tokens=CAP, messages=MESSAGES, **knobs)
            usage = raw.parse().usage
            request_id = raw.headers["x-request-id"]
        assert usage.output_tokens == CAP, usage
        return request_id

    def assert_quota_refusal(no: Exception) -> None:
        assert isinstance(no, anthropic.RateLimitError), f"{type(no).__name__}: {no}"
        assert no.body["error"]["type"] == "rate_limit_error", no.body
        assert no.body["error"]["code"] == "quota_exceeded", no.body
        assert_refusal_headers(no.response.headers, "tokens", LIMIT)

    # The cap is reserved: a call capped at the whole limit can never fit.
    with pytest.raises(anthropic.APIStatusError) as never:
        claude.messages.create(model="claude-test", max_tokens=LIMIT, messages=MESSAGES)
    assert_quota_refusal(never.value)
    assert "can never fit" in never.value.body["error"]["message"], never.value.body
    served, no = serially(gw.ledger, key["id"], call, anthropic.APIStatusError)
    assert_quota_refusal(no)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert r["output_tokens"] == CAP, r
    assert_within(rows, LIMIT, both, lambda r: r["request_bytes"] + CAP,
                  f"anthropic {'streamed' if streamed else 'whole'}")


# -- Gemini generateContent --------------------------------------------------------------

def gemini_with_headers(gw: Gateway, key: str, headers: dict) -> genai.Client:
    """llm_clients.gemini_client, with llm-upstream's knobs on every request
    (so a call needs no config: no ``generationConfig`` in its body)."""
    return genai.Client(api_key=key, http_options=genai_types.HttpOptions(
        base_url=gw.stack.gateway, api_version="v1beta", headers=headers,
        client_args={"event_hooks": {"request": [signer(gw.secret)]}}))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_gemini_generate_under_a_token_quota_gets_the_default_cap(own: Gateway,
                                                                   streamed: bool):
    gw = own

    def call(client: genai.Client) -> tuple[str, int, str]:
        """(request id, output tokens, finish reason) of one call without
        ``generationConfig``."""
        if streamed:
            chunks = list(client.models.generate_content_stream(model="gemini-test",
                                                                contents=PROMPT))
            text = "".join(c.text or "" for c in chunks)
            last = chunks[-1]
            assert len(text.split()) == last.usage_metadata.candidates_token_count, text
            request_id = chunks[0].sdk_http_response.headers["x-request-id"]
        else:
            last = client.models.generate_content(model="gemini-test", contents=PROMPT)
            request_id = last.sdk_http_response.headers["x-request-id"]
        return (request_id, last.usage_metadata.candidates_token_count,
                last.candidates[0].finish_reason.name)

    free = gw.new_key(f"tokens-gemini-free-{streamed}")
    _, output, finish = call(gemini_with_headers(gw, free["key"], upstream_headers(LONG_REPLY)))
    assert (output, finish) == (LONG_REPLY, "STOP"), "a key without a token quota got a cap"

    key = gw.new_key(f"tokens-gemini-{streamed}", "--quota", f"tokens={LIMIT}/day")
    client = gemini_with_headers(gw, key["key"], upstream_headers(LONG_REPLY))

    def limited() -> str:
        request_id, output, finish = call(client)
        assert (output, finish) == (DEFAULT_CAP, "MAX_TOKENS"), "the default cap was not written"
        return request_id

    served, no = serially(gw.ledger, key["id"], limited, genai_errors.APIError)
    assert isinstance(no, genai_errors.ClientError) and no.code == 429, f"{type(no)}: {no}"
    assert no.status == "RESOURCE_EXHAUSTED", no.details
    assert no.details["error"]["details"][0]["reason"] == "quota_exceeded", no.details
    assert_refusal_headers(no.response.headers, "tokens", LIMIT)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert r["output_tokens"] == DEFAULT_CAP, r
    assert_within(rows, LIMIT, both, lambda r: r["request_bytes"] + DEFAULT_CAP,
                  f"gemini {'streamed' if streamed else 'whole'}, default cap")


# -- OpenAI Responses --------------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_openai_responses_under_a_token_quota_get_the_default_cap(own: Gateway,
                                                                  streamed: bool):
    gw = own
    knobs = {"extra_headers": upstream_headers(LONG_REPLY)}

    def call(client: openai.OpenAI) -> tuple[str, int, str]:
        """(request id, output tokens, status) of one call without
        ``max_output_tokens``; raises Refused for an error answer."""
        try:
            raw = client.responses.with_raw_response.create(
                model="r-test", input=PROMPT, stream=streamed, **knobs)
        except openai.APIStatusError as err:
            raise Refused(err) from err
        if streamed:
            events = list(raw.parse())
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            done = events[-1].response
            assert len(text.split()) == done.usage.output_tokens, text
        else:
            done = raw.parse()
        return raw.headers["x-request-id"], done.usage.output_tokens, done.status

    free = gw.new_key(f"tokens-responses-free-{streamed}")
    _, output, status = call(openai_client(gw.stack.gateway, free["key"], gw.secret))
    assert (output, status) == (LONG_REPLY, "completed"), "a key without a token quota got a cap"

    key = gw.new_key(f"tokens-responses-{streamed}", "--quota", f"tokens={LIMIT}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)

    def limited() -> str:
        request_id, output, status = call(client)
        assert (output, status) == (DEFAULT_CAP, "incomplete"), "the default cap was not written"
        return request_id

    served, no = serially(gw.ledger, key["id"], limited, Refused)
    assert_token_refusal(no, "tokens", LIMIT, DAY_S)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert r["output_tokens"] == DEFAULT_CAP, r
    assert_within(rows, LIMIT, both, lambda r: r["request_bytes"] + DEFAULT_CAP,
                  f"responses {'streamed' if streamed else 'whole'}, default cap")


# -- input_tokens and output_tokens ------------------------------------------------------

def chat_call(client: openai.OpenAI, content: str, cap: int) -> str:
    """A whole chat completion of one message, ``cap`` its cap and the
    reply asked of llm-upstream; its request id. Raises Refused."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": content}],
            max_tokens=cap, extra_headers=upstream_headers(cap))
    except openai.APIStatusError as err:
        raise Refused(err) from err
    assert raw.parse().usage.completion_tokens == cap
    return raw.headers["x-request-id"]


def test_an_input_tokens_quota_refuses_on_the_input_side(own: Gateway):
    gw = own
    limit, far = 1000, 100_000
    key = gw.new_key("tokens-input-side", "--quota", f"input_tokens={limit}/day",
                     "--quota", f"output_tokens={far}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    long_prompt = " ".join(["word"] * 60)  # 61 input tokens, some 330 bytes
    served, no = serially(gw.ledger, key["id"], lambda: chat_call(client, long_prompt, 2),
                          Refused)
    assert_token_refusal(no, "input_tokens", limit, DAY_S)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert r["input_tokens"] == len(long_prompt.split()) + 1, r
    assert_within(rows, limit, lambda r: r["input_tokens"], lambda r: r["request_bytes"],
                  "input_tokens")
    output = sum(r["output_tokens"] for r in rows)
    assert output < far // 100, f"{output} output tokens: the output side is far from its limit"


def test_an_output_tokens_quota_refuses_on_the_output_side(own: Gateway):
    gw = own
    limit, far, cap = 300, 100_000, 40
    key = gw.new_key("tokens-output-side", "--quota", f"input_tokens={far}/day",
                     "--quota", f"output_tokens={limit}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    served, no = serially(gw.ledger, key["id"], lambda: chat_call(client, PROMPT, cap), Refused)
    assert_token_refusal(no, "output_tokens", limit, DAY_S)
    rows = rows_of(gw.ledger, key["id"], served)
    assert_within(rows, limit, lambda r: r["output_tokens"], lambda r: cap, "output_tokens")
    input_ = sum(r["input_tokens"] for r in rows)
    assert input_ == PROMPT_TOKENS * len(rows) and input_ < far // 100, input_


# -- embeddings ----------------------------------------------------------------------------

def test_embeddings_reserve_only_their_input(own: Gateway):
    gw = own
    texts = ["one two three", "four five"]

    def embed(client: openai.OpenAI) -> str:
        try:
            raw = client.embeddings.with_raw_response.create(model="e-test", input=texts)
        except openai.APIStatusError as err:
            raise Refused(err) from err
        assert raw.parse().usage.prompt_tokens == 5
        return raw.headers["x-request-id"]

    # What the call's body weighs, from a key without limits.
    probe = gw.new_key("tokens-embeddings-probe")
    body = gw.ledger.wait_usage_row(embed(openai_client(
        gw.stack.gateway, probe["key"], gw.secret)), timeout=15)["request_bytes"]
    # Room for its bytes, not for them and the default cap: a call that
    # reserved an output cap could never fit.
    limit = body + DEFAULT_CAP // 2
    key = gw.new_key("tokens-embeddings", "--quota", f"tokens={limit}/day")
    client = openai_client(gw.stack.gateway, key["key"], gw.secret)
    served, no = serially(gw.ledger, key["id"], lambda: embed(client), Refused)
    assert "can never fit" not in no.error.message, "embeddings reserved an output cap"
    assert served, "never served"
    assert_token_refusal(no, "tokens", limit, DAY_S)
    rows = rows_of(gw.ledger, key["id"], served)
    for r in rows:
        assert (r["api"], r["output_tokens"], r["request_bytes"]) == \
            ("openai.embeddings", 0, body), r
    assert_within(rows, limit, both, lambda r: r["request_bytes"], "embeddings")
