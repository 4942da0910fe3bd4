"""OpenAI Responses, through the official ``openai`` SDK straight to llm-upstream."""

from __future__ import annotations

import pytest

INSTRUCTIONS = "answer in kind"
ASK = "what is a gateway"
#: The instructions and one input message: (3 + 1) + (4 + 1).
PROMPT_TOKENS = 9


def create(client, headers=None, **params):
    return client.responses.create(model="any-model", instructions=INSTRUCTIONS, input=ASK,
                                   extra_headers=headers or {}, **params)


def test_a_whole_answer_follows_the_rules(openai_client, rule):
    assert PROMPT_TOKENS == rule.input_tokens(INSTRUCTIONS, ASK)
    done = create(openai_client)
    assert done.status == "completed" and done.incomplete_details is None
    assert done.output_text == rule.reply(ASK)
    usage = done.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        PROMPT_TOKENS, 12, PROMPT_TOKENS + 12)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_input_items_count_one_message_each(openai_client, rule):
    items = [{"role": "user", "content": "one two"},
             {"role": "assistant", "content": [{"type": "output_text", "text": "three"}]},
             {"role": "user", "content": [{"type": "input_text", "text": "four five six"}]}]
    done = openai_client.responses.create(model="m", input=items)
    assert done.usage.input_tokens == rule.input_tokens("one two", "three", "four five six")
    assert done.output_text == rule.reply("four five six")


def test_a_stream_sends_the_typed_events(openai_client, rule, knobs):
    events = list(create(openai_client, knobs(reply_tokens=3), stream=True))
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * 3,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == rule.reply(ASK, 3) == events[-1].response.output_text
    assert events[0].response.usage is None
    assert events[-1].response.usage.output_tokens == 3
    assert events[-1].response.usage.input_tokens == PROMPT_TOKENS


def test_the_cap_makes_the_response_incomplete(openai_client, rule):
    done = create(openai_client, max_output_tokens=4)
    assert done.status == "incomplete"
    assert done.incomplete_details.reason == "max_output_tokens"
    assert done.output_text == rule.reply(ASK, 4) and done.usage.output_tokens == 4
    events = list(create(openai_client, max_output_tokens=4, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 4


def test_ignore_cap_produces_the_whole_reply(openai_client, knobs):
    done = create(openai_client, knobs(fault="ignore-cap"), max_output_tokens=4)
    assert done.status == "completed" and done.usage.output_tokens == 12


def test_reasoning_shows_as_an_item_and_in_usage(openai_client, knobs):
    headers = knobs(reasoning_tokens=3, cached_tokens=2, reply_tokens=2)
    done = create(openai_client, headers)
    assert [item.type for item in done.output] == ["reasoning", "message"]
    assert done.usage.output_tokens == 5
    assert done.usage.output_tokens_details.reasoning_tokens == 3
    assert done.usage.input_tokens_details.cached_tokens == 2
    events = list(create(openai_client, headers, stream=True))
    assert events[-1].response.usage.output_tokens_details.reasoning_tokens == 3
    assert {e.output_index for e in events if e.type == "response.output_text.delta"} == {1}


def test_omit_usage_and_bad_usage(openai_client, knobs):
    assert create(openai_client, knobs(fault="omit-usage")).usage is None
    events = list(create(openai_client, knobs(fault="omit-usage"), stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage is None
    usage = create(openai_client, knobs(fault="bad-usage")).usage
    assert (usage.input_tokens, usage.output_tokens) == (-PROMPT_TOKENS, -12)


def test_the_error_fault_raises_the_sdks_error(openai_client, openai_sdk, knobs):
    with pytest.raises(openai_sdk.RateLimitError) as raised:
        create(openai_client, knobs(fault="error"))
    assert raised.value.code == "rate_limit_exceeded"
    with pytest.raises(openai_sdk.BadRequestError):
        create(openai_client, knobs(fault="error", error_status=400), stream=True)


def test_abort_cuts_the_answer(openai_client, openai_sdk, knobs, until_cut):
    with pytest.raises(openai_sdk.APIConnectionError):
        create(openai_client, knobs(fault="abort"))
    stream = create(openai_client, knobs(fault="abort"), stream=True)
    seen = [e.type for e in until_cut(stream, openai_sdk.APIConnectionError)]
    assert seen.count("response.output_text.delta") == 3
    assert "response.completed" not in seen


def test_stream_error_sends_an_error_event_mid_stream(openai_client, knobs):
    events = list(create(openai_client, knobs(fault="stream-error"), stream=True))
    assert [e.type for e in events][-4:] == ["response.output_text.delta"] * 3 + ["error"]
    assert events[-1].code == "rate_limit_exceeded"
    assert events[-1].sequence_number == len(events) - 1
