//! The token estimate of an LLM call whose answer ended without believable
//! usage (the row's `usage_source` is then `estimated`).
//!
//! The rule, one token for every four characters or bytes, rounded up:
//! - `input_tokens` = ceil(request body bytes / 4);
//! - `output_tokens` = ceil(delivered characters / 4), so at least 1 when
//!   any content was delivered. Delivered characters are the Unicode
//!   characters of the generated text the answer carried (text, reasoning,
//!   refusals and tool-call arguments), counted by `llm::usage`;
//! - `cached_input_tokens` and `reasoning_tokens` are 0;
//! - every count is capped at `MAX_TOKENS` (2^30).
//!
//! Four characters a token is the usual rule of thumb for English text; it
//! under-counts for languages written with few characters per token, which
//! is why a reported figure, when believable, always wins.

use tollgate_wire::{TokenUsage, MAX_TOKENS};

/// Characters (or request bytes) counted as one token.
pub const CHARS_PER_TOKEN: u64 = 4;

/// ceil(`n` / 4), capped at `MAX_TOKENS`.
fn tokens_for(n: u64) -> u64 {
    let tokens = n / CHARS_PER_TOKEN + u64::from(n % CHARS_PER_TOKEN != 0);
    tokens.min(MAX_TOKENS)
}

/// Estimated prompt tokens of a request body of `request_body_bytes`:
/// ceil(bytes / 4), capped at `MAX_TOKENS`.
pub fn estimate_input_tokens(request_body_bytes: u64) -> u64 {
    tokens_for(request_body_bytes)
}

/// Estimated generated tokens of `delivered_chars` characters of text:
/// ceil(chars / 4) (at least 1 when any was delivered), capped at
/// `MAX_TOKENS`.
pub fn estimate_output_tokens(delivered_chars: u64) -> u64 {
    tokens_for(delivered_chars)
}

/// The estimated usage of a call: input from the request body's size,
/// output from the characters delivered, nothing cached, no reasoning.
pub fn estimate_usage(request_body_bytes: u64, delivered_chars: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: estimate_input_tokens(request_body_bytes),
        output_tokens: estimate_output_tokens(delivered_chars),
        cached_input_tokens: 0,
        reasoning_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_characters_make_a_token_rounded_up() {
        let cases = [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)];
        for (chars, tokens) in cases {
            assert_eq!(estimate_output_tokens(chars), tokens, "{chars} chars");
            assert_eq!(estimate_input_tokens(chars), tokens, "{chars} bytes");
        }
    }

    #[test]
    fn any_delivered_content_is_at_least_one_token() {
        assert_eq!(estimate_usage(0, 1).output_tokens, 1);
        assert_eq!(estimate_usage(0, 0).output_tokens, 0);
    }

    #[test]
    fn counts_are_capped_and_never_overflow() {
        let huge = estimate_usage(u64::MAX, u64::MAX);
        assert_eq!(
            (huge.input_tokens, huge.output_tokens),
            (MAX_TOKENS, MAX_TOKENS)
        );
        assert_eq!(estimate_output_tokens(4 * MAX_TOKENS), MAX_TOKENS);
        assert_eq!(estimate_output_tokens(4 * MAX_TOKENS + 1), MAX_TOKENS);
        assert_eq!(estimate_output_tokens(4 * MAX_TOKENS - 4), MAX_TOKENS - 1);
    }

    #[test]
    fn an_estimate_has_no_cached_or_reasoning_tokens() {
        let usage = estimate_usage(400, 40);
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 100,
                output_tokens: 10,
                cached_input_tokens: 0,
                reasoning_tokens: 0
            }
        );
    }
}
