"""What a request asks of the fake model through its ``x-llm-upstream-*`` headers.

Every knob has a default, so a client that sends none of them (an official
SDK, a gateway under test) gets the plain behaviour: a 12-token reply, no
delay, no fault. README.md lists them.
"""

from __future__ import annotations

import dataclasses

PREFIX = "x-llm-upstream-"

#: The fault switches ``x-llm-upstream-fault`` may name (comma-separated).
FAULTS = frozenset({"omit-usage", "abort", "slow-first-token", "error", "stream-error",
                    "ignore-cap", "bad-usage", "unterminated"})

DEFAULT_REPLY_TOKENS = 12
DEFAULT_FIRST_TOKEN_DELAY_MS = 1000
DEFAULT_ERROR_STATUS = 429


class BadKnob(ValueError):
    """A knob header the upstream cannot follow (answered 400 in the provider's shape)."""


@dataclasses.dataclass(frozen=True)
class Knobs:
    """The per-request behaviour, read once from the headers."""

    reply_tokens: int = DEFAULT_REPLY_TOKENS
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    faults: frozenset = frozenset()
    error_status: int = DEFAULT_ERROR_STATUS
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    def has(self, fault: str) -> bool:
        return fault in self.faults


def _count(headers, name: str, default: int, low: int = 0, high: int = 1_000_000) -> int:
    raw = headers.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadKnob(f"{PREFIX}{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadKnob(f"{PREFIX}{name} must be between {low} and {high}, got {value}")
    return value


def from_headers(headers) -> Knobs:
    """The knobs of a request, from its headers (a case-insensitive mapping)."""
    faults = frozenset(f.strip() for f in headers.get(PREFIX + "fault", "").split(",") if f.strip())
    unknown = sorted(faults - FAULTS)
    if unknown:
        raise BadKnob(f"unknown {PREFIX}fault {', '.join(unknown)} (known: {', '.join(sorted(FAULTS))})")
    first_ms = _count(headers, "first-token-delay-ms", DEFAULT_FIRST_TOKEN_DELAY_MS, high=600_000)
    return Knobs(
        reply_tokens=_count(headers, "reply-tokens", DEFAULT_REPLY_TOKENS, high=100_000),
        token_delay_s=_count(headers, "token-delay-ms", 0, high=60_000) / 1000,
        first_token_delay_s=first_ms / 1000 if "slow-first-token" in faults else 0.0,
        faults=faults,
        error_status=_count(headers, "error-status", DEFAULT_ERROR_STATUS, low=400, high=599),
        cached_tokens=_count(headers, "cached-tokens", 0),
        cache_creation_tokens=_count(headers, "cache-creation-tokens", 0),
        reasoning_tokens=_count(headers, "reasoning-tokens", 0),
    )
