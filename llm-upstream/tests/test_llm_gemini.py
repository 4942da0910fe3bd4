"""Gemini generateContent and streamGenerateContent, through the official
``google-genai`` SDK straight to llm-upstream."""

from __future__ import annotations

import pytest

SYSTEM = "speak plainly"
ASK = "why is the sky blue"
#: The system instruction and one content: (2 + 1) + (5 + 1).
PROMPT_TOKENS = 9


def generate(make, types, headers=None, stream=False, **config):
    client = make(headers)
    method = client.models.generate_content_stream if stream else client.models.generate_content
    return method(model="any-model", contents=ASK, config=types.GenerateContentConfig(
        system_instruction=SYSTEM, **config))


def test_a_whole_answer_follows_the_rules(gemini_client, genai, rule):
    _, types, _ = genai
    assert PROMPT_TOKENS == rule.input_tokens(SYSTEM, ASK)
    done = generate(gemini_client, types)
    assert done.text == rule.reply(ASK)
    assert done.candidates[0].finish_reason == types.FinishReason.STOP
    usage = done.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (
        PROMPT_TOKENS, 12, PROMPT_TOKENS + 12)
    assert usage.cached_content_token_count is None and usage.thoughts_token_count is None


def test_a_stream_has_cumulative_usage_and_a_last_finish_reason(gemini_client, genai, rule, knobs):
    _, types, _ = genai
    chunks = list(generate(gemini_client, types, knobs(reply_tokens=3), stream=True))
    assert len(chunks) == 4
    assert "".join(c.text or "" for c in chunks) == rule.reply(ASK, 3)
    assert [c.usage_metadata.candidates_token_count for c in chunks] == [1, 2, 3, 3]
    assert [c.candidates[0].finish_reason for c in chunks] == [None] * 3 + [types.FinishReason.STOP]
    assert chunks[-1].usage_metadata.total_token_count == PROMPT_TOKENS + 3


def test_the_cap_stops_with_max_tokens(gemini_client, genai, rule, knobs):
    _, types, _ = genai
    done = generate(gemini_client, types, max_output_tokens=5)
    assert done.text == rule.reply(ASK, 5)
    assert done.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert done.usage_metadata.candidates_token_count == 5
    last = list(generate(gemini_client, types, stream=True, max_output_tokens=5))[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    ignored = generate(gemini_client, types, knobs(fault="ignore-cap"), max_output_tokens=5)
    assert ignored.usage_metadata.candidates_token_count == 12


def test_the_sdks_default_v1_paths_are_served_too(gemini_client, genai, rule):
    _, types, _ = genai
    done = gemini_client(api_version="v1").models.generate_content(model="m", contents=ASK)
    assert done.text == rule.reply(ASK) and done.usage_metadata.prompt_token_count == 6


def test_cached_and_thoughts_counts(gemini_client, genai, knobs):
    _, types, _ = genai
    usage = generate(gemini_client, types, knobs(cached_tokens=4, reasoning_tokens=6,
                                                 reply_tokens=2)).usage_metadata
    assert usage.prompt_token_count == PROMPT_TOKENS  # includes the cached ones
    assert usage.cached_content_token_count == 4
    assert usage.thoughts_token_count == 6 and usage.candidates_token_count == 2
    assert usage.total_token_count == PROMPT_TOKENS + 2 + 6


def test_omit_usage_and_bad_usage(gemini_client, genai, knobs):
    _, types, _ = genai
    assert generate(gemini_client, types, knobs(fault="omit-usage")).usage_metadata is None
    chunks = list(generate(gemini_client, types, knobs(fault="omit-usage"), stream=True))
    assert all(c.usage_metadata is None for c in chunks)
    usage = generate(gemini_client, types, knobs(fault="bad-usage")).usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (-PROMPT_TOKENS, -12)


@pytest.mark.parametrize("status,error,name", [(429, "ClientError", "RESOURCE_EXHAUSTED"),
                                               (503, "ServerError", "UNAVAILABLE")])
@pytest.mark.parametrize("stream", [False, True])
def test_the_error_fault_raises_the_sdks_error(gemini_client, genai, knobs, status, error, name,
                                               stream):
    _, types, errors = genai
    with pytest.raises(getattr(errors, error)) as raised:
        list(generate(gemini_client, types, knobs(fault="error", error_status=status),
                      stream=stream)) if stream else generate(
            gemini_client, types, knobs(fault="error", error_status=status))
    assert raised.value.code == status and raised.value.status == name


def test_abort_cuts_the_answer(gemini_client, genai, knobs, need, until_cut):
    """The SDK lets its transport's (httpx2's) error through."""
    _, types, _ = genai
    cut = need("httpx2").RemoteProtocolError
    with pytest.raises(cut, match="complete message body"):
        generate(gemini_client, types, knobs(fault="abort"))
    stream = generate(gemini_client, types, knobs(fault="abort"), stream=True)
    seen = until_cut(stream, cut, match="incomplete chunked read")
    assert len(seen) == 3 and all(c.candidates[0].finish_reason is None for c in seen)


def test_stream_error_sends_an_error_event_mid_stream(gemini_client, genai, knobs, until_cut):
    _, types, errors = genai
    stream = generate(gemini_client, types, knobs(fault="stream-error", error_status=503),
                      stream=True)
    seen = until_cut(stream, errors.ServerError, match="stream-error fault")
    assert len(seen) == 3
