"""OpenAI Chat Completions (``POST /v1/chat/completions``), whole or streamed.

Streamed: ``data: {chunk}`` events (a first one with the role, one per
token, one with the finish reason), then ``data: [DONE]``. Usage is sent
only when ``stream_options.include_usage`` is true: every chunk then has
``"usage": null`` and one more chunk, with ``"choices": []``, has it.
"""

from __future__ import annotations

import time

from llm_upstream import delivery, errors, rules
from llm_upstream.delivery import CLOSING, TOKEN, Event
from llm_upstream.request import Call


def usage(counts: rules.Counts) -> dict:
    return {
        "prompt_tokens": counts.input,
        "completion_tokens": counts.output,
        "total_tokens": counts.total,
        "prompt_tokens_details": {"cached_tokens": counts.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": counts.reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def answer(call: Call):
    body = call.body
    messages = [rules.text_of(m) for m in call.list_field("messages")]
    cap = call.cap("max_completion_tokens")
    if cap is None:
        cap = call.cap("max_tokens")
    done = rules.complete(messages, cap, call.knobs)
    finish = "length" if done.truncated else "stop"
    head = {"id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": int(time.time()),
            "model": call.model, "service_tier": "default", "system_fingerprint": None}
    with_usage = not call.knobs.has("omit-usage")
    if not body.get("stream"):
        whole = {**head, "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.text, "refusal": None,
                        "annotations": []},
            "logprobs": None,
            "finish_reason": finish,
        }]}
        if with_usage:
            whole["usage"] = usage(done.counts)
        return delivery.whole(whole, call.knobs, done.counts.output, call.headers)

    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: dict, finish_reason=None) -> dict:
        out = {**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            out["usage"] = None
        return out

    events = [Event(delivery.sse(chunk({"role": "assistant", "content": "", "refusal": None})))]
    events += [Event(delivery.sse(chunk({"content": p})), TOKEN) for p in done.pieces()]
    events.append(Event(delivery.sse(chunk({}, finish)), CLOSING))
    if include_usage and with_usage:
        events.append(Event(delivery.sse({**head, "object": "chat.completion.chunk", "choices": [],
                                          "usage": usage(done.counts)}), CLOSING))
    events.append(Event(b"data: [DONE]\n\n", CLOSING))
    error = errors.openai(call.knobs.error_status, "llm-upstream: stream-error fault")
    return delivery.streamed(events, call.knobs, call.headers, lambda _: delivery.sse(error))
