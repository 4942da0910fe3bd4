"""How an answer leaves: paced token by token, and cut short under ``abort``.

A streamed answer is a list of ``Event``s, each one SSE event already
encoded, marked as opening, token or closing. ``streamed`` writes each as
soon as it is due (gunicorn's gthread worker sends every chunk a generator
yields at once, so nothing is held back), waiting ``token_delay_s`` before
each token and ``first_token_delay_s`` more before the first. Under
``abort`` the connection is cut before the token after ``ABORT_AFTER_TOKENS``
tokens, or before the first closing event, whichever comes first: the
client has the opening events and some tokens, never the final usage.
Under ``stream-error`` the provider's mid-stream error event is sent at
that point instead, and the stream ends there. Under ``unterminated`` the
last event goes without the blank line that ends it: the stream ends on
its last line's newline.

A whole (non-streamed) answer waits as long as its tokens would have taken,
then is sent at once; under ``abort`` only the first half of the body is
sent (after a Content-Length announcing all of it), then the connection is
cut.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Iterable, Iterator

from flask import Response

from llm_upstream.knobs import Knobs

#: Tokens an aborted stream delivers before the connection is cut.
ABORT_AFTER_TOKENS = 3

OPENING, TOKEN, CLOSING = "opening", "token", "closing"


class AbortedOnPurpose(Exception):
    """The ``abort`` fault: gunicorn closes a connection whose answer raised mid-way."""


@dataclasses.dataclass(frozen=True)
class Event:
    data: bytes
    kind: str = OPENING


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse(payload, event: str | None = None, newline: str = "\n") -> bytes:
    """One server-sent event holding ``payload`` as JSON on one ``data:`` line."""
    head = f"event: {event}{newline}" if event else ""
    return f"{head}data: {compact(payload)}{newline}{newline}".encode()


#: A provider's mid-stream error event, given how many events were sent before it.
StreamError = Callable[[int], bytes]


def _paced(events: Iterable[Event], knobs: Knobs, stream_error: StreamError) -> Iterator[bytes]:
    sent_tokens = 0
    cut = knobs.has("abort") or knobs.has("stream-error")
    for sent, event in enumerate(events):
        if cut and (
            event.kind == CLOSING or (event.kind == TOKEN and sent_tokens >= ABORT_AFTER_TOKENS)
        ):
            if knobs.has("stream-error"):
                yield stream_error(sent)
            if knobs.has("abort"):
                raise AbortedOnPurpose("x-llm-upstream-fault: abort")
            return
        if event.kind == TOKEN:
            delay = knobs.token_delay_s + (knobs.first_token_delay_s if sent_tokens == 0 else 0)
            if delay:
                time.sleep(delay)
            sent_tokens += 1
        yield event.data


def _unterminated(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, each sent when the next is due, the last without the
    newline of the blank line that ends its event."""
    last = None
    for chunk in chunks:
        if last is not None:
            yield last
        last = chunk
    if last is not None:
        yield last[:-2] if last.endswith(b"\r\n\r\n") else last[:-1] if last.endswith(b"\n\n") else last


def streamed(events: Iterable[Event], knobs: Knobs, headers: dict, stream_error: StreamError,
             content_type: str = "text/event-stream; charset=utf-8") -> Response:
    """A ``text/event-stream`` answer sending ``events`` as they are due."""
    chunks = _paced(events, knobs, stream_error)
    if knobs.has("unterminated"):
        chunks = _unterminated(chunks)
    return Response(chunks, status=200, content_type=content_type,
                    headers={"Cache-Control": "no-cache", **headers})


def whole(payload, knobs: Knobs, tokens: int, headers: dict, status: int = 200,
          indent: int | None = None) -> Response:
    """A JSON answer sent once ``tokens`` tokens' worth of delay has passed."""
    delay = knobs.first_token_delay_s + knobs.token_delay_s * max(tokens, 0)
    if delay:
        time.sleep(delay)
    text = json.dumps(payload, indent=indent, ensure_ascii=False) if indent else compact(payload)
    body = text.encode()
    if not knobs.has("abort"):
        return Response(body, status=status, content_type="application/json", headers=headers)

    def half_then_cut() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        raise AbortedOnPurpose("x-llm-upstream-fault: abort")

    return Response(half_then_cut(), status=status, content_type="application/json",
                    headers={**headers, "Content-Length": str(len(body))})
