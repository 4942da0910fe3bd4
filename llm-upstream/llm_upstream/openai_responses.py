"""OpenAI Responses (``POST /v1/responses``), whole or streamed.

Streamed: typed events (``event: <type>`` and a ``data:`` JSON with the
same ``type`` and a ``sequence_number``): ``response.created``,
``response.in_progress``, the output items' events, then
``response.completed``, or ``response.incomplete`` when the cap
(``max_output_tokens``) cut the reply; that last event's response holds
``usage``. Reasoning tokens (a knob) show as a reasoning item before the message.
"""

from __future__ import annotations

import time

from llm_upstream import delivery, errors, rules
from llm_upstream.delivery import CLOSING, OPENING, TOKEN, Event
from llm_upstream.request import Call


def usage(counts: rules.Counts) -> dict:
    return {
        "input_tokens": counts.input,
        "input_tokens_details": {"cached_tokens": counts.cached, "cache_write_tokens": 0},
        "output_tokens": counts.output,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning},
        "total_tokens": counts.total,
    }


def prompt(call: Call) -> list[str]:
    """One text per message: the instructions, then each input item."""
    body = call.body
    items = body.get("input")
    messages = [rules.text_of(body["instructions"])] if body.get("instructions") else []
    if isinstance(items, str):
        return messages + [items]
    return messages + [rules.text_of(item) for item in call.list_field("input")]


def answer(call: Call):
    body = call.body
    cap = call.cap("max_output_tokens")
    done = rules.complete(prompt(call), cap, call.knobs)
    status = "incomplete" if done.truncated else "completed"
    reasoning_item = {"id": f"rs_{call.id}", "type": "reasoning", "summary": []}
    message_id = f"msg_{call.id}"
    part = {"type": "output_text", "text": done.text, "annotations": [], "logprobs": []}
    message = {"id": message_id, "type": "message", "status": status, "role": "assistant",
               "content": [part]}
    items = ([reasoning_item] if done.counts.reasoning else []) + [message]
    created = int(time.time())

    def response(state: str, output: list, final: bool) -> dict:
        return {
            "id": f"resp_{call.id}", "object": "response", "created_at": created,
            "status": state, "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": cap,
            "model": call.model, "output": output, "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": body.get("store", True), "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled",
            "usage": usage(done.counts) if final and not call.knobs.has("omit-usage") else None,
            "user": None, "metadata": body.get("metadata") or {},
        }

    if not body.get("stream"):
        return delivery.whole(response(status, items, True), call.knobs, done.counts.output,
                              call.headers)

    events: list[Event] = []

    def emit(kind: str, payload: dict, when: str = OPENING) -> None:
        payload = {"type": kind, "sequence_number": len(events), **payload}
        events.append(Event(delivery.sse(payload, kind), when))

    emit("response.created", {"response": response("in_progress", [], False)})
    emit("response.in_progress", {"response": response("in_progress", [], False)})
    index = 0
    if done.counts.reasoning:
        emit("response.output_item.added", {"output_index": 0, "item": reasoning_item})
        emit("response.output_item.done", {"output_index": 0, "item": reasoning_item})
        index = 1
    where = {"item_id": message_id, "output_index": index, "content_index": 0}
    emit("response.output_item.added", {"output_index": index, "item": {
        **message, "status": "in_progress", "content": []}})
    emit("response.content_part.added", {**where, "part": {**part, "text": ""}})
    for piece in done.pieces():
        emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []}, TOKEN)
    emit("response.output_text.done", {**where, "text": done.text, "logprobs": []}, CLOSING)
    emit("response.content_part.done", {**where, "part": part}, CLOSING)
    emit("response.output_item.done", {"output_index": index, "item": message}, CLOSING)
    emit(f"response.{status}", {"response": response(status, items, True)}, CLOSING)
    error = errors.openai(call.knobs.error_status, "llm-upstream: stream-error fault")["error"]

    def error_event(sent: int) -> bytes:
        return delivery.sse({"type": "error", "sequence_number": sent, "code": error["code"],
                             "message": error["message"], "param": None}, "error")

    return delivery.streamed(events, call.knobs, call.headers, error_event)
