"""OpenAI Chat Completions, through the official ``openai`` SDK straight to llm-upstream."""

from __future__ import annotations

import time

import pytest

PROMPT = [{"role": "system", "content": "be brief"},
          {"role": "user", "content": [{"type": "text", "text": "tell me a story"}]}]
#: Two messages: (2 + 1) + (4 + 1) by the README's rule.
PROMPT_TOKENS = 8


def create(client, headers=None, **params):
    return client.chat.completions.create(model="any-model", messages=PROMPT,
                                          extra_headers=headers or {}, **params)


def test_a_whole_answer_follows_the_rules(openai_client, rule):
    assert PROMPT_TOKENS == rule.input_tokens("be brief", "tell me a story")
    done = create(openai_client)
    [choice] = done.choices
    assert choice.message.content == rule.reply("tell me a story")
    assert choice.finish_reason == "stop"
    assert done.object == "chat.completion" and done.model == "any-model"
    usage = done.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, 12)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_a_stream_without_include_usage_has_no_usage(openai_client, rule):
    chunks = list(create(openai_client, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == rule.reply("tell me a story")
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"


def test_include_usage_adds_a_last_chunk_with_no_choices(openai_client, rule, knobs):
    chunks = list(create(openai_client, knobs(reply_tokens=5), stream=True,
                         stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == [] and all(c.usage is None for c in body)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        PROMPT_TOKENS, 5, PROMPT_TOKENS + 5)
    assert "".join(c.choices[0].delta.content or "" for c in body) == rule.reply("tell me a story", 5)


@pytest.mark.parametrize("cap", ["max_completion_tokens", "max_tokens"])
def test_the_cap_truncates_with_length(openai_client, rule, cap):
    done = create(openai_client, **{cap: 3})
    assert done.choices[0].message.content == rule.reply("tell me a story", 3)
    assert done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 3
    chunks = list(create(openai_client, stream=True, stream_options={"include_usage": True},
                         **{cap: 3}))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 3


def test_ignore_cap_produces_the_whole_reply(openai_client, rule, knobs):
    done = create(openai_client, knobs(fault="ignore-cap"), max_completion_tokens=3)
    assert done.choices[0].message.content == rule.reply("tell me a story")
    assert done.usage.completion_tokens == 12


def test_cached_and_reasoning_tokens_are_reported(openai_client, knobs):
    headers = knobs(cached_tokens=4, reasoning_tokens=5, reply_tokens=2)
    usage = create(openai_client, headers).usage
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.completion_tokens == 7  # reasoning counts as output
    # The cap bounds reasoning and reply together, reasoning first.
    capped = create(openai_client, headers, max_completion_tokens=6)
    assert capped.choices[0].message.content == "tell"
    assert capped.usage.completion_tokens == 6 and capped.choices[0].finish_reason == "length"


def test_omit_usage_leaves_usage_out_everywhere(openai_client, knobs):
    headers = knobs(fault="omit-usage")
    assert create(openai_client, headers).usage is None
    chunks = list(create(openai_client, headers, stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices


def test_bad_usage_reports_negative_numbers(openai_client, knobs):
    usage = create(openai_client, knobs(fault="bad-usage")).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        -PROMPT_TOKENS, -12, -PROMPT_TOKENS - 12)


@pytest.mark.parametrize("status,error", [(429, "RateLimitError"), (500, "InternalServerError"),
                                          (401, "AuthenticationError")])
def test_the_error_fault_raises_the_sdks_error(openai_client, openai_sdk, knobs, status, error):
    with pytest.raises(getattr(openai_sdk, error)) as raised:
        create(openai_client, knobs(fault="error", error_status=status), stream=True)
    assert raised.value.status_code == status
    assert raised.value.response.headers["x-request-id"].startswith("req_")


def test_abort_cuts_a_whole_answer_and_a_stream(openai_client, openai_sdk, knobs, until_cut):
    with pytest.raises(openai_sdk.APIConnectionError):
        create(openai_client, knobs(fault="abort"))
    stream = create(openai_client, knobs(fault="abort"), stream=True,
                    stream_options={"include_usage": True})
    seen = until_cut(stream, openai_sdk.APIConnectionError)
    assert len(seen) == 4  # the role chunk and three tokens
    assert all(c.usage is None for c in seen)


def test_slow_first_token_and_token_delay(openai_client, knobs):
    headers = knobs(fault="slow-first-token", first_token_delay_ms=600, token_delay_ms=50,
                    reply_tokens=4)
    start = time.monotonic()
    stream = create(openai_client, headers, stream=True)
    next(stream)  # the role chunk comes at once
    first_chunk = time.monotonic() - start
    next(stream)
    first_token = time.monotonic() - start
    list(stream)
    whole = time.monotonic() - start
    assert first_chunk < 0.5 <= 0.6 <= first_token, (first_chunk, first_token)
    assert whole >= 0.6 + 4 * 0.05


def test_stream_error_sends_an_error_event_mid_stream(openai_client, openai_sdk, knobs, until_cut):
    stream = create(openai_client, knobs(fault="stream-error", error_status=500), stream=True,
                    stream_options={"include_usage": True})
    seen = until_cut(stream, openai_sdk.APIError, match="stream-error fault")
    assert len(seen) == 4 and all(c.usage is None for c in seen)
