"""Anthropic Messages, through the official ``anthropic`` SDK straight to llm-upstream."""

from __future__ import annotations

import pytest

SYSTEM = "you are terse"
ASK = "name three rivers"
#: The system prompt and one message: (3 + 1) + (3 + 1).
PROMPT_TOKENS = 8


def create(client, headers=None, max_tokens=100, **params):
    return client.messages.create(model="any-model", system=SYSTEM, max_tokens=max_tokens,
                                  messages=[{"role": "user", "content": ASK}],
                                  extra_headers=headers or {}, **params)


def test_a_whole_answer_follows_the_rules(anthropic_client, rule):
    assert PROMPT_TOKENS == rule.input_tokens(SYSTEM, ASK)
    done = create(anthropic_client)
    assert [block.type for block in done.content] == ["text"]
    assert done.content[0].text == rule.reply(ASK)
    assert done.stop_reason == "end_turn" and done.model == "any-model"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (PROMPT_TOKENS, 12)
    assert done.usage.cache_read_input_tokens == 0 == done.usage.cache_creation_input_tokens


def test_a_stream_sends_the_named_events_in_order(anthropic_client, rule, knobs):
    events = list(create(anthropic_client, knobs(reply_tokens=3), stream=True))
    # The SDK drops `ping` (test_llm_wire.py sees it on the wire).
    assert [e.type for e in events] == [
        "message_start", "content_block_start", *["content_block_delta"] * 3,
        "content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.message.usage.input_tokens == PROMPT_TOKENS
    assert start.message.usage.output_tokens == 1
    assert delta.usage.output_tokens == 3 and delta.delta.stop_reason == "end_turn"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == rule.reply(ASK, 3)


def test_the_sdks_stream_helper_accumulates_the_message(anthropic_client, rule, knobs):
    with anthropic_client.messages.stream(
            model="m", max_tokens=100, messages=[{"role": "user", "content": ASK}],
            extra_headers=knobs(reply_tokens=4)) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == rule.reply(ASK, 4)
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == rule.input_tokens(ASK)


def test_the_cap_stops_with_max_tokens(anthropic_client, rule, knobs):
    done = create(anthropic_client, max_tokens=2)
    assert done.stop_reason == "max_tokens" and done.content[0].text == rule.reply(ASK, 2)
    assert done.usage.output_tokens == 2
    events = list(create(anthropic_client, max_tokens=2, stream=True))
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 2
    ignored = create(anthropic_client, knobs(fault="ignore-cap"), max_tokens=2)
    assert ignored.stop_reason == "end_turn" and ignored.usage.output_tokens == 12


def test_cache_and_reasoning_counts(anthropic_client, knobs):
    headers = knobs(cached_tokens=3, cache_creation_tokens=2, reasoning_tokens=4, reply_tokens=1)
    usage = create(anthropic_client, headers).usage
    # input_tokens are the prompt tokens neither read from nor written to the cache.
    assert (usage.input_tokens, usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens) == (PROMPT_TOKENS - 5, 3, 2)
    assert usage.output_tokens == 5
    start = list(create(anthropic_client, headers, stream=True))[0]
    assert start.message.usage.cache_read_input_tokens == 3


def test_max_tokens_is_required(anthropic_client, anthropic_sdk):
    with pytest.raises(anthropic_sdk.BadRequestError) as raised:
        anthropic_client.messages.create(model="m", messages=[{"role": "user", "content": "x"}],
                                         max_tokens=None)
    assert raised.value.body["error"]["type"] == "invalid_request_error"


def test_omit_usage_and_bad_usage(anthropic_client, knobs):
    events = list(create(anthropic_client, knobs(fault="omit-usage"), stream=True))
    assert getattr(events[0].message, "usage", None) is None
    assert getattr(events[-2], "usage", None) is None
    assert getattr(create(anthropic_client, knobs(fault="omit-usage")), "usage", None) is None
    usage = create(anthropic_client, knobs(fault="bad-usage")).usage
    assert (usage.input_tokens, usage.output_tokens) == (-PROMPT_TOKENS, -12)


@pytest.mark.parametrize("status,error", [(429, "RateLimitError"), (529, "OverloadedError"),
                                          (500, "InternalServerError")])
def test_the_error_fault_raises_the_sdks_error(anthropic_client, anthropic_sdk, knobs, status, error):
    with pytest.raises(getattr(anthropic_sdk, error)) as raised:
        create(anthropic_client, knobs(fault="error", error_status=status), stream=True)
    assert raised.value.status_code == status
    assert raised.value.request_id.startswith("req_")


def test_abort_cuts_the_answer(anthropic_client, anthropic_sdk, knobs, until_cut):
    with pytest.raises(anthropic_sdk.APIConnectionError):
        create(anthropic_client, knobs(fault="abort"))
    stream = create(anthropic_client, knobs(fault="abort"), stream=True)
    seen = [e.type for e in until_cut(stream, anthropic_sdk.APIConnectionError)]
    assert seen.count("content_block_delta") == 3 and "message_delta" not in seen


def test_stream_error_sends_an_error_event_mid_stream(anthropic_client, anthropic_sdk, knobs,
                                                      until_cut):
    stream = create(anthropic_client, knobs(fault="stream-error", error_status=529), stream=True)
    seen = until_cut(stream, anthropic_sdk.APIStatusError, match="type: overloaded_error")
    assert [e.type for e in seen].count("content_block_delta") == 3
