//! One LLM call let through, on the response side: what its request asked,
//! and the reading of its answer as the answer passes. A copy is read; the
//! answer itself is never held, save for one case: on a chat stream whose
//! usage the gateway asked for, the bytes of an event not yet complete wait
//! for its end, so that the usage-only chunk can be kept from the client
//! (`rewrite::UsageChunkStripper`).
//!
//! Memory per call: a stream holds its meter's line and event (about
//! 2 × `usage::DEFAULT_MAX_LINE`) and the stripper's one held event; a
//! whole (non-streamed) answer is copied up to [`MAX_BODY_COPY`] bytes, and
//! one larger is estimated.

use tollgate_wire::price::Price;
use tollgate_wire::{Api, LlmUsage, TokenUsage};

use super::request::LlmRequest;
use super::rewrite::UsageChunkStripper;
use super::usage::{read_body, EstimateReason, StreamMeter, UsageOutcome};

/// An upper bound of what an LLM call can cost: its input tokens and its
/// output cap (see docs/LIMITS.md, "Token quotas"), and their price at its
/// model's price in micro-units (`Price::bound_micros`; 0 for a model
/// without a price, or a key without a money quota).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBound {
    pub input: u64,
    pub output: u64,
    pub cost: u64,
}

/// Most bytes of a non-streamed answer copied to read its usage: 4 MiB.
pub const MAX_BODY_COPY: usize = 4 << 20;

/// Why a whole answer larger than [`MAX_BODY_COPY`] is estimated.
pub const ANSWER_TOO_LARGE: &str = "answer_too_large";

/// Why a call that ended before any answer counts no tokens: the
/// reservation it made goes back whole.
pub const NO_ANSWER: &str = "no_answer";

/// How the answer is read.
#[derive(Debug)]
enum Reading {
    /// No response has started.
    Waiting,
    /// A stream of server-sent events.
    Stream(StreamMeter),
    /// A whole JSON answer, copied (`None` once it outgrew the copy), and
    /// its size.
    Body {
        status: u16,
        copy: Option<Vec<u8>>,
        bytes: u64,
    },
}

/// An LLM call let through.
#[derive(Debug)]
pub struct LlmCall {
    asked: LlmRequest,
    request_bytes: u64,
    /// The size of the body as forwarded (after any rewrite).
    forwarded_bytes: u64,
    /// The output cap the call is given if it sets none and its key has a
    /// token quota (its route's default).
    default_cap: u64,
    reading: Reading,
    /// On a chat stream whose usage the gateway asked for.
    stripper: Option<UsageChunkStripper>,
    usage_added: bool,
    /// The answer is to come as server-sent events.
    sse: bool,
    /// The model's price in effect when the request arrived, for a key
    /// with a money quota (`None`: none, or the model has no price).
    price: Option<Price>,
}

/// How a call's answer ended, as metered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metered {
    pub usage: LlmUsage,
    /// Why the counts are estimated, when they are.
    pub estimated_because: Option<&'static str>,
    /// Lines of the stream longer than the parser's cap, skipped.
    pub skipped_lines: u64,
}

impl LlmCall {
    /// A call as its request (to `path`) asked it; `usage_added` when the
    /// forwarded body asks for usage the client did not.
    pub fn new(asked: LlmRequest, path: &str, usage_added: bool, request_bytes: u64) -> Self {
        let sse = asked.stream && (asked.api != Api::GeminiGenerate || asks_for_sse(path));
        LlmCall {
            asked,
            request_bytes,
            forwarded_bytes: request_bytes,
            default_cap: crate::llm::routes::DEFAULT_OUTPUT_CAP,
            reading: Reading::Waiting,
            stripper: None,
            usage_added,
            sse,
            price: None,
        }
    }

    /// The call is priced at `price` (its key has a money quota).
    pub fn priced_at(&mut self, price: Option<Price>) {
        self.price = price;
    }

    /// What `tokens` cost at the call's price, in micro-units (0 unpriced).
    pub fn cost_of(&self, tokens: &TokenUsage) -> u64 {
        self.price
            .as_ref()
            .map_or(0, |p| u64::try_from(p.cost_micros(tokens)).unwrap_or(0))
    }

    /// The model the request names.
    pub fn model(&self) -> &str {
        &self.asked.model
    }

    /// The output cap the call is given if it sets none (its route's
    /// default).
    pub fn with_default_cap(mut self, cap: u64) -> Self {
        self.default_cap = cap;
        self
    }

    /// The output cap written into the call when it sets none.
    pub fn default_cap(&self) -> u64 {
        self.default_cap
    }

    /// An upper bound of the tokens this call can cost, with the default
    /// cap as its output cap if it sets none (see docs/LIMITS.md, "Token
    /// quotas"): its input is at most its body's bytes (a byte-level
    /// tokenizer gives at most one token per byte of text, and the JSON
    /// around the text is longer than the tokens the provider adds per
    /// message), its output at most its cap (embeddings have none); its
    /// cost at most both at its price.
    pub fn token_bound(&self) -> TokenBound {
        let output = match self.asked.api {
            Api::OpenAiEmbeddings => 0,
            _ => self.asked.max_output_tokens.unwrap_or(self.default_cap),
        };
        let input = self.request_bytes;
        TokenBound {
            input,
            output,
            cost: self
                .price
                .as_ref()
                .map_or(0, |p| p.bound_micros(input, output)),
        }
    }

    /// Whether the call sets no output cap though its API has one.
    pub fn lacks_output_cap(&self) -> bool {
        self.asked.max_output_tokens.is_none() && self.asked.api != Api::OpenAiEmbeddings
    }

    /// The forwarded request now carries output cap `cap`.
    pub fn output_cap_written(&mut self, cap: u64) {
        self.asked.max_output_tokens = Some(cap);
    }

    /// The size of the body as it will be forwarded.
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded_bytes
    }

    /// The body to forward was rewritten to `bytes` bytes.
    pub fn body_rewritten(&mut self, bytes: u64) {
        self.forwarded_bytes = bytes;
    }

    /// The API of the call.
    pub fn api(&self) -> Api {
        self.asked.api
    }

    /// The response started with `status`: a successful answer to a
    /// streamed request is read as a stream, anything else as a whole body
    /// (so is Gemini's `streamGenerateContent` without `alt=sse`, a JSON
    /// array).
    pub fn response_started(&mut self, status: u16) {
        let streamed = self.sse && (200..300).contains(&status);
        self.reading = if streamed {
            if self.usage_added {
                self.stripper = Some(UsageChunkStripper::new());
            }
            Reading::Stream(StreamMeter::new(self.asked.api))
        } else {
            Reading::Body {
                status,
                copy: Some(Vec::new()),
                bytes: 0,
            }
        };
    }

    /// A chunk of the answer passes (`end`: the last). Returns the bytes to
    /// pass on instead of `chunk`, when they differ.
    pub fn chunk(&mut self, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        match &mut self.reading {
            Reading::Waiting => None,
            Reading::Stream(meter) => {
                meter.feed(chunk);
                let stripper = self.stripper.as_mut()?;
                let passed = stripper.push(chunk);
                if !end {
                    return (passed.as_ref() != chunk).then(|| passed.into_owned());
                }
                let mut passed = passed.into_owned();
                passed.extend_from_slice(&stripper.finish());
                (passed != chunk).then_some(passed)
            }
            Reading::Body { copy, bytes, .. } => {
                *bytes = bytes.saturating_add(chunk.len() as u64);
                let fits = copy
                    .as_ref()
                    .is_some_and(|c| c.len().saturating_add(chunk.len()) <= MAX_BODY_COPY);
                match copy {
                    Some(bytes) if fits => bytes.extend_from_slice(chunk),
                    _ => *copy = None,
                }
                None
            }
        }
    }

    /// The answer ended (or the stream did, with the client gone or the
    /// upstream reset): what the call used.
    pub fn finish(&mut self) -> Metered {
        let mut because = None;
        let outcome = match &mut self.reading {
            // No answer came: counted as no tokens (below), as a token
            // quota gives the call's reservation back whole.
            Reading::Waiting => UsageOutcome::Estimated {
                reason: EstimateReason::NoUsage,
                delivered_chars: 0,
            },
            Reading::Stream(meter) => meter.finish(),
            Reading::Body {
                status,
                copy: Some(body),
                ..
            } => body_outcome(self.asked.api, *status, body),
            // Too large to read: every byte counts as a delivered character.
            Reading::Body {
                copy: None, bytes, ..
            } => {
                because = Some(ANSWER_TOO_LARGE);
                UsageOutcome::Estimated {
                    reason: EstimateReason::NoUsage,
                    delivered_chars: *bytes,
                }
            }
        };
        let skipped_lines = match &self.reading {
            Reading::Stream(meter) => meter.parser().skipped_lines(),
            Reading::Waiting | Reading::Body { .. } => 0,
        };
        let mut estimated_because = match outcome {
            UsageOutcome::Reported(_) => None,
            UsageOutcome::Estimated { reason, .. } => because.or(Some(reason.reason())),
        };
        let mut tokens = outcome.tokens(self.request_bytes);
        if matches!(self.reading, Reading::Waiting) {
            estimated_because = Some(NO_ANSWER);
            tokens = TokenUsage::default();
        }
        // An estimate never passes the output cap the call was given.
        if let (Some(_), Some(cap)) = (estimated_because, self.asked.max_output_tokens) {
            tokens.output_tokens = tokens.output_tokens.min(cap);
        }
        Metered {
            usage: LlmUsage {
                api: self.asked.api,
                model: self.asked.model.clone(),
                streamed: self.asked.stream,
                usage_source: outcome.source(),
                tokens,
            },
            estimated_because,
            skipped_lines,
        }
    }
}

/// Whether a Gemini path's query asks for server-sent events (`alt=sse`).
fn asks_for_sse(path: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "alt=sse"))
}

/// What a whole answer of `status` says: a success is read for its usage
/// (estimated when it has none, or none that is believable); an error is
/// metered from its usage if it has one, else as zero tokens reported.
fn body_outcome(api: Api, status: u16, body: &[u8]) -> UsageOutcome {
    let read = read_body(api, body);
    let failed = !(200..300).contains(&status);
    match read.usage {
        Ok(Some(tokens)) => UsageOutcome::Reported(tokens),
        Ok(None) | Err(_) if failed => UsageOutcome::Reported(TokenUsage::default()),
        Ok(None) => UsageOutcome::Estimated {
            reason: EstimateReason::NoUsage,
            delivered_chars: read.delivered_chars,
        },
        Err(anomaly) => UsageOutcome::Estimated {
            reason: EstimateReason::Anomaly(anomaly),
            delivered_chars: read.delivered_chars,
        },
    }
}
