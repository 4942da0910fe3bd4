//! LLM answers on arbitrary bytes: the SSE parser, every API's stream
//! meter and body reader, and the usage-only chunk test.
//!
//! The first byte picks where the rest is split in two and the line cap of
//! a second, small-capped parser and meter (so over-long lines and dropped
//! events are reached). Nothing may panic, and:
//! - the parser dispatches the same events and counts the same skips and
//!   drops whether the input comes whole, in two pieces or (up to
//!   [`BYTEWISE_MAX`] bytes, for speed) byte by byte,
//!   and never holds more than `2 * max_line + MAX_EVENT_NAME` bytes;
//! - every meter reaches the same outcome and delivered characters however
//!   the input is split;
//! - every count a meter or a body reading gives is at most `MAX_TOKENS`,
//!   with cached tokens at most the input and reasoning ones at most the
//!   output, and so is every estimate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_filter::llm::sse::{SseParser, MAX_EVENT_NAME};
use tollgate_filter::llm::usage::{
    is_usage_only_chunk, read_body, StreamMeter, UsageOutcome, DEFAULT_MAX_LINE,
};
use tollgate_wire::{Api, TokenUsage, MAX_TOKENS};

/// Longest input also fed byte by byte.
const BYTEWISE_MAX: usize = 512;

/// What a parser made of its input: events, skipped lines, dropped events.
type Parsed = (Vec<(Option<String>, String, u64)>, u64, u64);

fn parse(max_line: usize, pieces: &[&[u8]]) -> Parsed {
    let mut parser = SseParser::new(max_line);
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece, |e| {
            events.push((e.event.map(str::to_string), e.data.to_string(), e.dropped_before))
        });
        assert!(parser.held_bytes() <= 2 * max_line + MAX_EVENT_NAME);
    }
    parser.finish();
    (events, parser.skipped_lines(), parser.dropped_events())
}

fn meter(api: Api, max_line: usize, pieces: &[&[u8]]) -> (UsageOutcome, u64) {
    let mut meter = StreamMeter::with_max_line(api, max_line);
    for piece in pieces {
        meter.feed(piece);
    }
    let chars = meter.delivered_chars();
    (meter.finish(), chars)
}

fn check(usage: &TokenUsage) {
    assert!(usage.input_tokens <= MAX_TOKENS, "{usage:?}");
    assert!(usage.output_tokens <= MAX_TOKENS, "{usage:?}");
    assert!(usage.cached_input_tokens <= usage.input_tokens, "{usage:?}");
    assert!(usage.reasoning_tokens <= usage.output_tokens, "{usage:?}");
}

fn check_outcome(outcome: &UsageOutcome, request_bytes: u64) {
    check(&outcome.tokens(request_bytes));
    check(&outcome.tokens(u64::MAX));
    if let UsageOutcome::Reported(usage) = outcome {
        check(usage);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let at = rest.len() * usize::from(pick) / 255;
    let (a, b) = rest.split_at(at.min(rest.len()));
    let bytes: Vec<&[u8]> = if rest.len() <= BYTEWISE_MAX {
        rest.chunks(1).collect()
    } else {
        vec![a, b]
    };
    let small = 8 + usize::from(pick % 64);

    for max_line in [small, DEFAULT_MAX_LINE] {
        let whole = parse(max_line, &[rest]);
        assert_eq!(parse(max_line, &[a, b]), whole, "split at {at}");
        assert_eq!(parse(max_line, &bytes), whole, "byte by byte");
    }

    for api in Api::ALL {
        for max_line in [small, DEFAULT_MAX_LINE] {
            let whole = meter(api, max_line, &[rest]);
            assert_eq!(meter(api, max_line, &[a, b]), whole, "{api:?} split at {at}");
            assert_eq!(meter(api, max_line, &bytes), whole, "{api:?} byte by byte");
            check_outcome(&whole.0, rest.len() as u64);
        }
        let body = read_body(api, rest);
        if let Ok(Some(usage)) = body.usage {
            check(&usage);
        }
    }
    let _ = is_usage_only_chunk(rest);
});
