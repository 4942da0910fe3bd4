"""Anthropic Messages (``POST /v1/messages``), whole or streamed.

``max_tokens`` is required. Usage: ``input_tokens`` are the prompt tokens
neither read from nor written to the cache, which ``cache_read_input_tokens``
and ``cache_creation_input_tokens`` count; ``output_tokens`` include the
reasoning tokens (a knob; no thinking block is shown).

Streamed: named events ``message_start`` (its usage has the input counts
and ``output_tokens`` 1), ``content_block_start``, ``ping``, one
``content_block_delta`` per token, ``content_block_stop``,
``message_delta`` (stop reason; ``usage.output_tokens``, cumulative) and
``message_stop``.
"""

from __future__ import annotations

from llm_upstream import delivery, errors, rules
from llm_upstream.delivery import CLOSING, TOKEN, Event
from llm_upstream.request import Call


def usage(counts: rules.Counts) -> dict:
    return {
        "input_tokens": counts.input - counts.cached - counts.cache_creation,
        "cache_creation_input_tokens": counts.cache_creation,
        "cache_read_input_tokens": counts.cached,
        "output_tokens": counts.output,
        "service_tier": "standard",
    }


def prompt(call: Call) -> list[str]:
    system = call.body.get("system")
    messages = [rules.text_of(system)] if system else []
    return messages + [rules.text_of(m) for m in call.list_field("messages")]


def answer(call: Call):
    body = call.body
    cap = call.cap("max_tokens", required=True)
    done = rules.complete(prompt(call), cap, call.knobs)
    stop = "max_tokens" if done.truncated else "end_turn"
    with_usage = not call.knobs.has("omit-usage")
    message = {"id": f"msg_{call.id}", "type": "message", "role": "assistant",
               "model": call.model, "content": [{"type": "text", "text": done.text}],
               "stop_reason": stop, "stop_sequence": None}
    if not body.get("stream"):
        if with_usage:
            message["usage"] = usage(done.counts)
        return delivery.whole(message, call.knobs, done.counts.output, call.headers)

    start = {**message, "content": [], "stop_reason": None}
    if with_usage:
        start["usage"] = {**usage(done.counts), "output_tokens": min(done.counts.output, 1)}
    delta = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
    if with_usage:
        delta["usage"] = {"output_tokens": done.counts.output}

    def event(kind: str, payload: dict, when: str = delivery.OPENING) -> Event:
        return Event(delivery.sse({"type": kind, **payload}, kind), when)

    events = [
        event("message_start", {"message": start}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
        *(event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}},
                TOKEN) for p in done.pieces()),
        event("content_block_stop", {"index": 0}, CLOSING),
        Event(delivery.sse(delta, "message_delta"), CLOSING),
        event("message_stop", {}, CLOSING),
    ]
    error = errors.anthropic(call.knobs.error_status, "llm-upstream: stream-error fault",
                             call.headers["request-id"])
    return delivery.streamed(events, call.knobs, call.headers,
                             lambda _: delivery.sse(error, "error"))
