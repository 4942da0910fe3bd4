"""What the SDKs do not show: the bytes on the wire (event names, line
endings, the end of a stream), that a stream is sent as it is produced
(not buffered), the knobs' own errors, and /health. Plain http.client."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest


def post(upstream: str, path: str, body: dict, headers: dict | None = None):
    url = urlsplit(upstream)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    conn.request("POST", path, json.dumps(body).encode(),
                 {"content-type": "application/json", **(headers or {})})
    return conn.getresponse()


CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}


def test_health(upstream):
    url = urlsplit(upstream)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200


def test_a_chat_stream_ends_with_done(upstream, knobs):
    resp = post(upstream, "/v1/chat/completions", CHAT, knobs(reply_tokens=2))
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    assert resp.getheader("x-request-id").startswith("req_")
    events = resp.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2]) and len(events) == 2 + 4


def test_anthropic_events_are_named_as_their_type_and_ping_is_sent(upstream, knobs):
    body = {"model": "m", "max_tokens": 9, "stream": True,
            "messages": [{"role": "user", "content": "a"}]}
    resp = post(upstream, "/v1/messages", body, knobs(reply_tokens=1))
    assert resp.getheader("request-id").startswith("req_")
    names = []
    for event in resp.read().decode().strip().split("\n\n"):
        head, data = event.split("\n")
        assert head.startswith("event: ") and data.startswith("data: ")
        names.append(head.removeprefix("event: "))
        assert json.loads(data.removeprefix("data: "))["type"] == names[-1]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]


def test_gemini_events_end_in_crlf(upstream, knobs):
    body = {"contents": [{"parts": [{"text": "a"}]}]}
    resp = post(upstream, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse", body,
                knobs(reply_tokens=2))
    raw = resp.read().decode()
    assert raw.count("\r\n\r\n") == 3 and raw.endswith("\r\n\r\n") and "\n\n" not in raw


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", CHAT),
    ("/v1/messages", {**CHAT, "max_tokens": 99}),
    ("/v1beta/models/m:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "a"}]}]}),
    ("/v1/responses", {"model": "m", "input": "a b", "stream": True}),
])
def test_a_stream_is_sent_as_it_is_produced(upstream, knobs, path, body):
    """With 200 ms per token, the first token arrives long before the last."""
    start = time.monotonic()
    resp = post(upstream, path, body, knobs(reply_tokens=4, token_delay_ms=200))
    arrivals = []
    while line := resp.readline():
        if line.strip():
            arrivals.append(time.monotonic() - start)
    assert arrivals[-1] >= 0.8, arrivals
    assert arrivals[0] < arrivals[-1] - 0.5, arrivals


@pytest.mark.parametrize("header,value", [("reply-tokens", "many"), ("fault", "explode"),
                                          ("error-status", "200")])
def test_a_bad_knob_is_a_400_in_the_providers_shape(upstream, header, value):
    resp = post(upstream, "/v1/messages", {"model": "m", "max_tokens": 1, "messages": []},
                {f"x-llm-upstream-{header}": value})
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["type"] == "invalid_request_error"


def test_an_unknown_gemini_method_is_a_404_in_gemini_shape(upstream):
    resp = post(upstream, "/v1beta/models/m:countTokens", {"contents": []})
    assert resp.status == 404 and json.loads(resp.read())["error"]["status"] == "NOT_FOUND"


def test_a_gemini_stream_without_alt_sse_is_refused(upstream):
    """Gemini's other stream framing (one JSON array) is not served."""
    resp = post(upstream, "/v1beta/models/m:streamGenerateContent", {"contents": []})
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["status"] == "INVALID_ARGUMENT"
