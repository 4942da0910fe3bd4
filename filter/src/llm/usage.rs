//! The token usage an LLM answer reports, streamed or not, and the
//! characters of text it delivered, so that a call ending without
//! believable usage can be estimated ([`super::estimate`]).
//!
//! Each API's shape has its reader: `openai` (Chat Completions,
//! Responses, Embeddings), `anthropic` (Messages) and `gemini`
//! (`generateContent`). Their counts are normalized the same way:
//! `input_tokens` includes cached ones and `output_tokens` reasoning ones.
//!
//! A streamed answer is read by a [`StreamMeter`] fed each chunk as the
//! proxy passes it on; it owns an [`SseParser`] whose lines and events are
//! capped at [`DEFAULT_MAX_LINE`] bytes, so a stream holds at most about
//! 2 × 64 KiB (one line and one event's data) plus the counts, whatever
//! the provider sends. A whole answer is read by [`read_body`].
//!
//! Counts are believed only when every one is a non-negative integer of at
//! most `MAX_TOKENS`, cached ones are at most the input and reasoning ones at
//! most the output, and cumulative counts never go backwards. Anything else
//! is an [`Anomaly`]: the call is then estimated, and the anomaly's reason
//! says why. A stream is also not believed when an event was dropped after
//! its last usage (that event may have carried a newer one), when one of
//! its events is not JSON of the API's shape, or when it is not SSE at all
//! (it opens with `{` or `[`; its bytes then stand in for the delivered
//! characters). `data: [DONE]` and empty events are skipped.

mod anomaly;
mod anthropic;
mod count;
mod gemini;
mod openai;

use tollgate_wire::{Api, TokenUsage, UsageSource};

use super::estimate::estimate_usage;
use super::sse::{SseEvent, SseParser};
pub use anomaly::{Anomaly, EstimateReason};
pub use openai::is_usage_only_chunk;

/// Longest SSE line (and event data) a [`StreamMeter`] keeps: 64 KiB, far
/// above any chunk of text or usage; a longer event is dropped and counted.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// What an answer says of its tokens, once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// The provider reported believable counts (`usage_source` `reported`).
    Reported(TokenUsage),
    /// It did not: the tokens are estimated (`usage_source` `estimated`)
    /// from the request's size and the characters delivered.
    Estimated {
        /// Why the answer's own figures are not used.
        reason: EstimateReason,
        /// Characters of generated text the answer carried.
        delivered_chars: u64,
    },
}

impl UsageOutcome {
    /// Where the counts of [`UsageOutcome::tokens`] come from.
    pub fn source(&self) -> UsageSource {
        match self {
            UsageOutcome::Reported(_) => UsageSource::Reported,
            UsageOutcome::Estimated { .. } => UsageSource::Estimated,
        }
    }

    /// The counts to meter: the reported ones, or the estimate for a request
    /// body of `request_body_bytes`.
    pub fn tokens(&self, request_body_bytes: u64) -> TokenUsage {
        match *self {
            UsageOutcome::Reported(tokens) => tokens,
            UsageOutcome::Estimated {
                delivered_chars, ..
            } => estimate_usage(request_body_bytes, delivered_chars),
        }
    }
}

/// What one JSON document (a streamed event or a whole body) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// Characters of generated text in it.
    chars: u64,
    /// The usage it reports, if any, or why that usage is not believed.
    usage: Result<Option<TokenUsage>, Anomaly>,
}

impl Reading {
    /// Text and no usage.
    fn text(chars: u64) -> Self {
        Reading {
            chars,
            usage: Ok(None),
        }
    }
}

/// What a whole (non-streamed) answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReading {
    /// The usage it reports: `Ok(None)` when it has none (a provider's
    /// error body, which the caller meters as zero tokens reported).
    pub usage: Result<Option<TokenUsage>, Anomaly>,
    /// Characters of generated text it carried, for an estimate.
    pub delivered_chars: u64,
}

/// Reads a whole JSON answer of `api`: chat `usage`, responses `usage`,
/// embeddings `usage.prompt_tokens` (no output), anthropic `usage`, gemini
/// `usageMetadata` (an array of answers, as `streamGenerateContent` sends
/// without `alt=sse`, is read too: the last usage counts).
pub fn read_body(api: Api, body: &[u8]) -> BodyReading {
    let reading = match api {
        Api::OpenAiChat => openai::chat(body),
        Api::OpenAiResponses => openai::responses_body(body),
        Api::OpenAiEmbeddings => openai::embeddings_body(body),
        Api::AnthropicMessages => anthropic::body(body),
        Api::GeminiGenerate => gemini::body(body),
    };
    match reading {
        Ok(reading) => BodyReading {
            usage: reading.usage,
            delivered_chars: reading.chars,
        },
        Err(anomaly) => BodyReading {
            usage: Err(anomaly),
            delivered_chars: 0,
        },
    }
}

/// The usage of a whole JSON answer of `api`; see [`read_body`].
pub fn usage_from_body(api: Api, body: &[u8]) -> Result<Option<TokenUsage>, Anomaly> {
    read_body(api, body).usage
}

/// Whether the stream is SSE at all, decided at its first byte that is not
/// whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Only whitespace so far.
    Undecided,
    Sse,
    /// It opened with `{` or `[`: a JSON answer where SSE was expected.
    /// Its bytes then stand in for delivered characters.
    NotSse,
}

/// The per-API part of a stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Chat,
    Responses,
    /// Never streamed: a meter for it reads no usage.
    Embeddings,
    Anthropic(anthropic::Stream),
    Gemini,
}

/// What the events of a stream said so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    shape: Shape,
    usage: Option<TokenUsage>,
    /// The parser's dropped events when `usage` was last set.
    dropped_at_usage: u64,
    /// The first reason the usage cannot be believed.
    anomaly: Option<Anomaly>,
    delivered_chars: u64,
}

/// Reads a streamed answer of one API chunk by chunk: the usage it reports
/// and the characters it delivers. See the module documentation for the
/// memory it holds.
///
/// What it reads, by API: chat, the `usage` of the last chunk that has one;
/// responses, `response.usage` of `response.completed` (or
/// `response.incomplete`, `response.failed`); anthropic, `message.usage` of
/// `message_start` for the input, then the cumulative `usage` of
/// `message_delta` for the output; gemini, the last `usageMetadata`.
#[derive(Debug)]
pub struct StreamMeter {
    parser: SseParser,
    framing: Framing,
    tally: Tally,
}

impl StreamMeter {
    /// A meter for a stream of `api`, keeping lines of up to
    /// [`DEFAULT_MAX_LINE`] bytes.
    pub fn new(api: Api) -> Self {
        Self::with_max_line(api, DEFAULT_MAX_LINE)
    }

    /// A meter keeping lines and event data of up to `max_line` bytes.
    pub fn with_max_line(api: Api, max_line: usize) -> Self {
        let shape = match api {
            Api::OpenAiChat => Shape::Chat,
            Api::OpenAiResponses => Shape::Responses,
            Api::OpenAiEmbeddings => Shape::Embeddings,
            Api::AnthropicMessages => Shape::Anthropic(anthropic::Stream::default()),
            Api::GeminiGenerate => Shape::Gemini,
        };
        StreamMeter {
            parser: SseParser::new(max_line),
            framing: Framing::Undecided,
            tally: Tally {
                shape,
                usage: None,
                dropped_at_usage: 0,
                anomaly: None,
                delivered_chars: 0,
            },
        }
    }

    /// Reads the next chunk of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.framing == Framing::Undecided {
            if let Some(at) = bytes.iter().position(|b| !b.is_ascii_whitespace()) {
                if matches!(bytes.get(at), Some(b'{' | b'[')) {
                    self.framing = Framing::NotSse;
                    self.tally.flag(Anomaly::NotSse);
                    self.tally.add_chars(bytes.len().saturating_sub(at) as u64);
                    return;
                }
                self.framing = Framing::Sse;
            }
        }
        if self.framing == Framing::NotSse {
            self.tally.add_chars(bytes.len() as u64);
            return;
        }
        let tally = &mut self.tally;
        self.parser.feed(bytes, |event| tally.read(&event));
    }

    /// Ends the stream (an event it left unfinished is discarded) and
    /// says what it reported.
    pub fn finish(&mut self) -> UsageOutcome {
        self.parser.finish();
        self.outcome()
    }

    /// What the stream reported so far.
    pub fn outcome(&self) -> UsageOutcome {
        let tally = &self.tally;
        let reason = match (tally.anomaly, tally.usage) {
            (Some(anomaly), _) => EstimateReason::Anomaly(anomaly),
            (None, None) => EstimateReason::NoUsage,
            (None, Some(usage)) => {
                if self.parser.dropped_events() == tally.dropped_at_usage {
                    return UsageOutcome::Reported(usage);
                }
                // An event lost after the usage may have carried a newer one.
                EstimateReason::Anomaly(Anomaly::EventDropped)
            }
        };
        UsageOutcome::Estimated {
            reason,
            delivered_chars: tally.delivered_chars,
        }
    }

    /// Characters of generated text delivered so far.
    pub fn delivered_chars(&self) -> u64 {
        self.tally.delivered_chars
    }

    /// The SSE parser, for its counters of skipped lines and dropped events.
    pub fn parser(&self) -> &SseParser {
        &self.parser
    }
}

impl Tally {
    fn read(&mut self, event: &SseEvent<'_>) {
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let data = data.as_bytes();
        let reading = match &mut self.shape {
            Shape::Chat => openai::chat(data),
            Shape::Responses => openai::responses_event(data),
            Shape::Embeddings => Ok(Reading::text(0)),
            Shape::Anthropic(stream) => stream.event(data),
            Shape::Gemini => gemini::event(data),
        };
        let reading = match reading {
            Ok(reading) => reading,
            Err(anomaly) => return self.flag(anomaly),
        };
        self.add_chars(reading.chars);
        match reading.usage.and_then(|usage| {
            usage
                .map(|next| count::advance(self.usage, next))
                .transpose()
        }) {
            Ok(Some(usage)) => {
                self.usage = Some(usage);
                self.dropped_at_usage = event.dropped_before;
            }
            Ok(None) => {}
            Err(anomaly) => self.flag(anomaly),
        }
    }

    fn flag(&mut self, anomaly: Anomaly) {
        self.anomaly.get_or_insert(anomaly);
    }

    fn add_chars(&mut self, chars: u64) {
        self.delivered_chars = self.delivered_chars.saturating_add(chars);
    }
}

#[cfg(test)]
mod tests;
