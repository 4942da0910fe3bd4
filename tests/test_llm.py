"""LLM APIs through the gateway, the providers' official SDKs as clients
(``openai``, ``anthropic``, ``google-genai``), llm-upstream behind Envoy,
on both builds of the filter and both ledgers (MariaDB, SQLite): each
SDK sends its key where it always does and signs its bodies from an httpx
hook (tollgate_tooling.llm_clients, docs/METERING.md's recipes). For every API,
streamed or not, the ledger's tokens equal the usage the SDK showed the
client, request by request; an OpenAI chat stream is metered even when its
client did not ask for usage (and sees no usage chunk); a cut stream, an
upstream that omits usage or aborts, and an upstream error each give the
documented row; refusals come in the provider's error shape."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
import requests
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tollgate_tooling.gateway import Gateway
from tollgate_tooling.llm_clients import anthropic_client, gemini_client, openai_client
from tollgate_tooling.log_faults import LLM_UPSTREAM_ABORT

PROMPT = "count the tokens of this prompt"
#: llm-upstream's rule: one token per word, plus one per message.
PROMPT_TOKENS = len(PROMPT.split()) + 1
#: Its default reply length, in tokens.
REPLY_TOKENS = 12
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(params=["mariadb", "sqlite"])
def gw(request) -> Gateway:
    """The stack on each ledger."""
    return request.getfixturevalue("gateway" if request.param == "mariadb" else "sqlite_gateway")


@pytest.fixture
def key(gw: Gateway) -> str:
    return gw.new_key("llm")["key"]


def clients(gw: Gateway, key: str):
    base, secret = gw.stack.gateway, gw.secret
    return (openai_client(base, key, secret), anthropic_client(base, key, secret),
            gemini_client(base, key, secret))


def row(gw: Gateway, request_id: str) -> dict:
    return gw.ledger.wait_usage_row(request_id, timeout=15)


def tokens(r: dict) -> tuple:
    return (r["input_tokens"], r["output_tokens"], r["cached_input_tokens"],
            r["reasoning_tokens"])


def assert_row(r: dict, api: str, model: str, streamed: bool, source: str, counts: tuple):
    assert (r["api"], r["model"], bool(r["streamed"]), r["usage_source"]) == \
        (api, model, streamed, source), r
    assert tokens(r) == counts, r


def test_openai_chat_whole_and_streamed(gw: Gateway, key: str):
    oai, _, _ = clients(gw, key)
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-test", messages=MESSAGES,
        extra_headers={"x-llm-upstream-cached-tokens": "2"})
    done = raw.parse()
    u = done.usage
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.chat", "gpt-test", False,
               "reported", (u.prompt_tokens, u.completion_tokens,
                            u.prompt_tokens_details.cached_tokens, 0))
    assert u.prompt_tokens == PROMPT_TOKENS

    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-test", messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-llm-upstream-reasoning-tokens": "3"})
    chunks = list(raw.parse())
    u = chunks[-1].usage
    assert chunks[-1].choices == [], "the client asked for usage: it gets its chunk"
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.chat", "gpt-test", True,
               "reported", (u.prompt_tokens, u.completion_tokens, 0,
                            u.completion_tokens_details.reasoning_tokens))
    assert u.completion_tokens_details.reasoning_tokens == 3


def test_an_openai_stream_without_include_usage_is_still_metered_reported(gw: Gateway, key: str):
    oai, _, _ = clients(gw, key)
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-test", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    # The client sees exactly the stream it asked for: every chunk has a
    # choice, and none carries usage.
    assert chunks and all(c.choices and c.usage is None for c in chunks), chunks[-1]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(text.split()) == REPLY_TOKENS
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.chat", "gpt-test", True,
               "reported", (PROMPT_TOKENS, REPLY_TOKENS, 0, 0))


@pytest.mark.parametrize("ask_usage", [False, True])
def test_a_stream_whose_last_event_is_unterminated_reaches_the_client_whole(
        gw: Gateway, key: str, ask_usage: bool):
    """The upstream closes a chat stream without the blank line that ends its
    last event: the client still gets every byte of it, both when the
    gateway holds an event to keep the usage chunk back (the client did not
    ask for usage) and when it passes the stream as it is."""
    body = {"model": "gpt-test", "messages": MESSAGES, "stream": True}
    if ask_usage:
        body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    resp = gw.post(payload, key, path="/v1/chat/completions",
                   headers={"x-llm-upstream-fault": "unterminated"})
    assert resp.status_code == 200, resp.text
    # Straight from the upstream, for what the stream ends with.
    direct = requests.post(gw.stack.llm_upstream_url + "/v1/chat/completions", data=payload,
                           headers={"Content-Type": "application/json",
                                    "x-llm-upstream-fault": "unterminated"}, timeout=30)
    assert direct.content.endswith(b"data: [DONE]\n") and not direct.content.endswith(b"\n\n")
    assert resp.content.endswith(b"data: [DONE]\n"), resp.content[-200:]
    events = [e for e in resp.content.split(b"\n\n") if e.strip()]
    usage_chunks = [e for e in events if b'"usage":{' in e]
    assert len(usage_chunks) == (1 if ask_usage else 0), events[-3:]
    words = "".join(json.loads(e[len(b"data: "):])["choices"][0]["delta"].get("content") or ""
                    for e in events if e.startswith(b"data: {") and b'"choices":[{' in e)
    assert len(words.split()) == REPLY_TOKENS, words
    assert_row(row(gw, resp.headers["x-request-id"]), "openai.chat", "gpt-test", True,
               "reported", (PROMPT_TOKENS, REPLY_TOKENS, 0, 0))


def test_openai_responses_and_embeddings(gw: Gateway, key: str):
    oai, _, _ = clients(gw, key)
    raw = oai.responses.with_raw_response.create(model="r-test", input=PROMPT,
                                                 max_output_tokens=5)
    u = raw.parse().usage
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.responses", "r-test", False,
               "reported", (u.input_tokens, u.output_tokens, 0, 0))
    assert u.output_tokens == 5

    raw = oai.responses.with_raw_response.create(model="r-test", input=PROMPT, stream=True)
    events = list(raw.parse())
    u = events[-1].response.usage
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.responses", "r-test", True,
               "reported", (u.input_tokens, u.output_tokens, 0, 0))

    raw = oai.embeddings.with_raw_response.create(model="e-test", input=["a b", "c"])
    u = raw.parse().usage
    assert_row(row(gw, raw.headers["x-request-id"]), "openai.embeddings", "e-test", False,
               "reported", (u.prompt_tokens, 0, 0, 0))
    assert u.prompt_tokens == 3


def test_anthropic_messages_whole_and_streamed(gw: Gateway, key: str):
    _, claude, _ = clients(gw, key)
    raw = claude.messages.with_raw_response.create(
        model="claude-test", max_tokens=7, messages=MESSAGES,
        extra_headers={"x-llm-upstream-cached-tokens": "3"})
    u = raw.parse().usage
    billed_input = u.input_tokens + (u.cache_read_input_tokens or 0) + \
        (u.cache_creation_input_tokens or 0)
    assert_row(row(gw, raw.headers["x-request-id"]), "anthropic.messages", "claude-test", False,
               "reported", (billed_input, u.output_tokens, u.cache_read_input_tokens, 0))
    assert u.output_tokens == 7

    with claude.messages.stream(model="claude-test", max_tokens=20, messages=MESSAGES) as s:
        request_id = s.response.headers["x-request-id"]
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert len(text.split()) == REPLY_TOKENS
    u = final.usage
    assert_row(row(gw, request_id), "anthropic.messages", "claude-test", True, "reported",
               (u.input_tokens + (u.cache_read_input_tokens or 0)
                + (u.cache_creation_input_tokens or 0), u.output_tokens, 0, 0))


def test_gemini_generate_whole_and_streamed(gw: Gateway, key: str):
    _, _, gemini = clients(gw, key)
    done = gemini.models.generate_content(
        model="gemini-test", contents=PROMPT,
        config=genai_types.GenerateContentConfig(max_output_tokens=4))
    u = done.usage_metadata
    assert_row(row(gw, done.sdk_http_response.headers["x-request-id"]), "gemini.generate",
               "gemini-test", False, "reported",
               (u.prompt_token_count, u.candidates_token_count, 0, 0))
    assert u.candidates_token_count == 4

    chunks = list(gemini.models.generate_content_stream(model="gemini-test", contents=PROMPT))
    u = chunks[-1].usage_metadata
    assert_row(row(gw, chunks[0].sdk_http_response.headers["x-request-id"]),
               "gemini.generate", "gemini-test", True, "reported",
               (u.prompt_token_count, u.candidates_token_count, 0, 0))


def test_a_client_that_closes_mid_stream_gives_an_estimated_row(gw: Gateway, key: str):
    oai, _, _ = clients(gw, key)
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-test", messages=MESSAGES, stream=True,
        extra_headers={"x-llm-upstream-reply-tokens": "200",
                       "x-llm-upstream-token-delay-ms": "20"})
    stream = raw.parse()
    seen = [next(iter(stream)) for _ in range(4)]
    stream.close()
    assert any(c.choices[0].delta.content for c in seen)
    r = row(gw, raw.headers["x-request-id"])
    assert (r["usage_source"], bool(r["streamed"])) == ("estimated", True), r
    assert r["output_tokens"] > 0 and r["input_tokens"] > 0, r


@pytest.mark.parametrize("fault", ["omit-usage", "abort"])
def test_an_upstream_that_omits_usage_or_aborts_gives_an_estimated_row(
        gw: Gateway, key: str, fault: str):
    if fault == "abort":
        gw.stack.expect_fault("llm-upstream", LLM_UPSTREAM_ABORT,
                              "the abort fault raises mid-stream, and gunicorn logs it")
    _, claude, _ = clients(gw, key)
    raw = claude.messages.with_raw_response.create(
        model="claude-test", max_tokens=50, messages=MESSAGES, stream=True,
        extra_headers={"x-llm-upstream-fault": fault})
    text = ""
    try:
        for event in raw.parse():
            if event.type == "content_block_delta":
                text += event.delta.text
    except anthropic.APIConnectionError:
        assert fault == "abort"
    assert text, "some content was delivered"
    r = row(gw, raw.headers["x-request-id"])
    assert r["usage_source"] == "estimated", r
    assert r["output_tokens"] >= 1, "delivered content is never metered as zero tokens"


def test_an_upstream_error_is_metered_as_zero_tokens_reported(gw: Gateway, key: str):
    oai, _, _ = clients(gw, key)
    with pytest.raises(openai.RateLimitError) as raised:
        oai.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                    extra_headers={"x-llm-upstream-fault": "error"})
    r = row(gw, raised.value.response.headers["x-request-id"])
    assert (r["status_code"], r["usage_source"]) == (429, "reported"), r
    assert tokens(r) == (0, 0, 0, 0)


def test_refusals_are_in_each_providers_shape(gw: Gateway, key: str):
    oai, claude, gemini = clients(gw, key)
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                    extra_body={"max_tokens": -1})
    assert raised.value.code == "invalid_request"
    assert raised.value.param == "max_tokens"
    bad_key = anthropic_client(gw.stack.gateway, "tg_not_a_registered_key", gw.secret)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        bad_key.messages.create(model="claude-test", max_tokens=5, messages=MESSAGES)
    assert raised.value.body["error"]["code"] == "invalid_api_key"
    with pytest.raises(genai_errors.ClientError) as raised:
        gemini.models.generate_content(
            model="gemini-test", contents=PROMPT,
            config=genai_types.GenerateContentConfig(max_output_tokens=0))
    assert raised.value.code == 400
    assert raised.value.details["error"]["details"][0]["reason"] == "invalid_request"
