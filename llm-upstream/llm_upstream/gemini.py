"""Gemini ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``.

Each streamed ``data:`` event is a whole GenerateContentResponse holding
one token; its ``usageMetadata`` is cumulative (candidates so far), and a
last event with an empty text carries ``finishReason`` and the final
counts. Events end in ``\\r\\n\\r\\n``, as the Gemini API sends them.
``promptTokenCount`` includes the cached tokens; ``cachedContentTokenCount``
and ``thoughtsTokenCount`` appear when not zero; ``totalTokenCount`` is
prompt + candidates + thoughts. The cap is ``generationConfig.maxOutputTokens``.
"""

from __future__ import annotations

from llm_upstream import delivery, errors, rules
from llm_upstream.delivery import CLOSING, TOKEN, Event
from llm_upstream.request import BadRequest, Call

CRLF = "\r\n"


def usage(counts: rules.Counts, candidates: int) -> dict:
    meta = {"promptTokenCount": counts.input, "candidatesTokenCount": candidates,
            "totalTokenCount": counts.input + candidates + counts.reasoning,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": counts.input}]}
    if counts.cached:
        meta["cachedContentTokenCount"] = counts.cached
    if counts.reasoning:
        meta["thoughtsTokenCount"] = counts.reasoning
    return meta


def prompt(call: Call) -> list[str]:
    system = call.body.get("systemInstruction") or call.body.get("system_instruction")
    messages = [rules.text_of(system)] if system else []
    return messages + [rules.text_of(c) for c in call.list_field("contents")]


def answer(call: Call, stream: bool):
    config = call.body.get("generationConfig") or call.body.get("generation_config") or {}
    if not isinstance(config, dict):
        raise BadRequest("generationConfig: expected an object")
    done = rules.complete(prompt(call), call.cap("maxOutputTokens", within=config), call.knobs)
    finish = "MAX_TOKENS" if done.truncated else "STOP"
    with_usage = not call.knobs.has("omit-usage")

    def response(text: str, candidates: int, final: bool) -> dict:
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = finish
        out = {"candidates": [candidate]}
        if with_usage:
            out["usageMetadata"] = usage(done.counts, candidates)
        out.update({"modelVersion": call.model, "responseId": call.id})
        return out

    visible = done.counts.visible
    if not stream:
        return delivery.whole(response(done.text, visible, True), call.knobs,
                              done.counts.output, call.headers, indent=2)
    sign = -1 if visible < 0 else 1
    events = [Event(delivery.sse(response(p, sign * (i + 1), False), newline=CRLF), TOKEN)
              for i, p in enumerate(done.pieces())]
    events.append(Event(delivery.sse(response("", visible, True), newline=CRLF), CLOSING))
    error = errors.gemini(call.knobs.error_status, "llm-upstream: stream-error fault")
    return delivery.streamed(events, call.knobs, call.headers,
                             lambda _: delivery.sse(error, newline=CRLF),
                             content_type="text/event-stream")
