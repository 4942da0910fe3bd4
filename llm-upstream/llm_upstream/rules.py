"""The fake model: which words it answers and how many tokens everything counts.

The rules (README.md, "The deterministic model", says them for users):

* One token is one word, a word being a run of non-whitespace (``str.split``).
* A message's text is its string content, or the ``text`` of each of its
  parts (nested ``content``/``parts`` included), joined by spaces.
* Input tokens: the words of every message (system prompt and instructions
  count as one message each) plus ``MESSAGE_OVERHEAD`` per message.
* The reply: the words of the last message, repeated in order until the
  reply has ``reply_tokens`` words; ``ok`` when the last message has none.
* Reasoning tokens (a knob) are produced before the reply and count as
  output; the output cap bounds reasoning plus reply, reasoning first.
"""

from __future__ import annotations

import dataclasses
import itertools

from llm_upstream.knobs import Knobs

#: Tokens each message adds to the input count beyond its words.
MESSAGE_OVERHEAD = 1
#: The reply's word when the last message has no words.
FALLBACK_WORD = "ok"


def text_of(value) -> str:
    """The plain text a message, a content value or a part carries."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(t for t in (text_of(v) for v in value) if t)
    if isinstance(value, dict):
        pieces = [text_of(value.get(k)) for k in ("text", "content", "parts", "output")]
        return " ".join(p for p in pieces if p)
    return ""


def word_count(text: str) -> int:
    """Tokens of ``text``: one per word."""
    return len(text.split())


def input_tokens(messages: list[str]) -> int:
    """Input tokens of a prompt given as one text per message."""
    return sum(word_count(m) + MESSAGE_OVERHEAD for m in messages)


@dataclasses.dataclass(frozen=True)
class Counts:
    """Token counts as the provider reports them (negated under ``bad-usage``).

    ``input`` is every prompt token, ``cached`` and ``cache_creation`` the
    parts of it read from or written to the cache; ``output`` is every
    generated token, ``reasoning`` the part of it spent thinking.
    """

    input: int
    cached: int
    cache_creation: int
    output: int
    reasoning: int

    @property
    def visible(self) -> int:
        return self.output - self.reasoning

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclasses.dataclass(frozen=True)
class Completion:
    """What the fake model produced for one request."""

    words: list[str]
    truncated: bool  # stopped by the output cap
    counts: Counts

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def pieces(self) -> list[str]:
        """The reply token by token, as streamed: concatenated they give ``text``."""
        return [w if i == 0 else " " + w for i, w in enumerate(self.words)]


def complete(messages: list[str], cap: int | None, knobs: Knobs) -> Completion:
    """The reply to ``messages`` under the output ``cap`` (None: no cap)."""
    source = (messages[-1] if messages else "").split() or [FALLBACK_WORD]
    reply, reasoning = knobs.reply_tokens, knobs.reasoning_tokens
    truncated = False
    if cap is not None and not knobs.has("ignore-cap") and reasoning + reply > cap:
        truncated = True
        reasoning = min(reasoning, cap)
        reply = cap - reasoning
    prompt = input_tokens(messages)
    cached = min(knobs.cached_tokens, prompt)
    creation = min(knobs.cache_creation_tokens, prompt - cached)
    counts = Counts(prompt, cached, creation, reasoning + reply, reasoning)
    if knobs.has("bad-usage"):
        counts = Counts(*(-n for n in dataclasses.astuple(counts)))
    return Completion(list(itertools.islice(itertools.cycle(source), reply)), truncated, counts)
