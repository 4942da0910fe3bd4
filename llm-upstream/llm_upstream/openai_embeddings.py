"""OpenAI Embeddings (``POST /v1/embeddings``): one vector per input, usage
``prompt_tokens`` (= ``total_tokens``: there is no output).

``input`` is a string, an array of strings, an array of token ids or an
array of such arrays. A string counts its words, a token array its
length. Vector ``j`` of an input is ``u16_j / 32768 - 1``, ``u16_j`` being
the ``j``-th little-endian 16-bit word of SHAKE-256 of the input's UTF-8
text (a token array's text: its ids joined by spaces); ``dimensions``
(default ``DEFAULT_DIMENSIONS``) long. ``encoding_format: base64`` (what
the official SDK asks for by default) sends the float32 little-endian
bytes in base64.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from llm_upstream import delivery, rules
from llm_upstream.request import BadRequest, Call

DEFAULT_DIMENSIONS = 8


def inputs(value) -> list[tuple[str, int]]:
    """(text, tokens) of each input."""
    if isinstance(value, str):
        return [(value, rules.word_count(value))]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    if isinstance(value, list) and value:
        return [pair for v in value for pair in inputs(v)] if all(
            isinstance(v, (str, list)) for v in value) else _refuse()
    return _refuse()


def _refuse():
    raise BadRequest("input: expected a string, an array of strings or of token arrays")


def vector(text: str, dimensions: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    return [word / 32768 - 1 for (word,) in struct.iter_unpack("<H", raw)]


def answer(call: Call):
    body = call.body
    dimensions = call.cap("dimensions") or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("encoding_format: expected 'float' or 'base64'")
    data, tokens = [], 0
    for index, (text, count) in enumerate(inputs(body.get("input"))):
        values = vector(text, dimensions)
        if encoding == "base64":
            values = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": values})
        tokens += count
    whole = {"object": "list", "data": data, "model": call.model}
    if not call.knobs.has("omit-usage"):
        sign = -1 if call.knobs.has("bad-usage") else 1
        whole["usage"] = {"prompt_tokens": sign * tokens, "total_tokens": sign * tokens}
    return delivery.whole(whole, call.knobs, 0, call.headers)
