//! OpenAI's answers: Chat Completions (chunks and whole answers share one
//! shape), Responses (typed stream events and the response object) and
//! Embeddings (never streamed).

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::count::{believe, optional, parse_json, required, Chars, Count, Obj};
use super::{Anomaly, Reading};
use tollgate_wire::TokenUsage;

/// A chat completion or one chunk of a streamed one.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatCompletion {
    choices: Option<Vec<ChatChoice>>,
    usage: Option<Obj<ChatUsage>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatChoice {
    /// In a chunk.
    delta: Option<ChatMessage>,
    /// In a whole answer.
    message: Option<ChatMessage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatMessage {
    content: Chars,
    reasoning_content: Chars,
    refusal: Chars,
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall {
    function: Option<FunctionCall>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCall {
    arguments: Chars,
}

/// Chat's and embeddings' `usage`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatUsage {
    prompt_tokens: Option<Count>,
    completion_tokens: Option<Count>,
    prompt_tokens_details: Option<Obj<Details>>,
    completion_tokens_details: Option<Obj<Details>>,
}

/// The `*_tokens_details` of a usage.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Details {
    cached_tokens: Option<Count>,
    reasoning_tokens: Option<Count>,
}

fn cached(details: &Option<Obj<Details>>) -> Result<u64, Anomaly> {
    optional(details.as_ref().and_then(|d| d.0.cached_tokens))
}

fn reasoning(details: &Option<Obj<Details>>) -> Result<u64, Anomaly> {
    optional(details.as_ref().and_then(|d| d.0.reasoning_tokens))
}

impl ChatMessage {
    fn chars(&self) -> u64 {
        let arguments = self
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|call| call.function.as_ref().map(|f| f.arguments));
        Chars::sum(
            [self.content, self.reasoning_content, self.refusal]
                .into_iter()
                .chain(arguments),
        )
    }
}

impl ChatUsage {
    fn normalized(&self) -> Result<TokenUsage, Anomaly> {
        believe(
            required(self.prompt_tokens)?,
            required(self.completion_tokens)?,
            cached(&self.prompt_tokens_details)?,
            reasoning(&self.completion_tokens_details)?,
        )
    }
}

/// A chat completion, whole or one chunk: its text (`content`,
/// `reasoning_content`, `refusal`, tool-call `arguments`) and its `usage`.
pub(super) fn chat(json: &[u8]) -> Result<Reading, Anomaly> {
    let completion: ChatCompletion = parse_json(json)?;
    let chars = completion.choices.iter().flatten().map(|choice| {
        let delta = choice.delta.as_ref().map_or(0, ChatMessage::chars);
        let message = choice.message.as_ref().map_or(0, ChatMessage::chars);
        delta.saturating_add(message)
    });
    Ok(Reading {
        chars: chars.fold(0, u64::saturating_add),
        usage: completion.usage.map(|u| u.0.normalized()).transpose(),
    })
}

/// Whether a chat chunk's JSON (an event's data, as text or bytes) is the
/// usage-only chunk that `stream_options.include_usage` adds: an object
/// whose `choices` is an empty list and whose `usage` is an object.
pub fn is_usage_only_chunk(data: impl AsRef<[u8]>) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        choices: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        usage: Option<Obj<IgnoredAny>>,
    }
    parse_json::<Probe>(data.as_ref())
        .is_ok_and(|p| p.choices.is_some_and(|c| c.is_empty()) && p.usage.is_some())
}

/// An embeddings answer: `usage.prompt_tokens`, no output.
pub(super) fn embeddings_body(json: &[u8]) -> Result<Reading, Anomaly> {
    let answer: ChatCompletion = parse_json(json)?;
    let usage = answer
        .usage
        .map(|u| believe(required(u.0.prompt_tokens)?, 0, 0, 0))
        .transpose();
    Ok(Reading { chars: 0, usage })
}

/// The Responses API's `usage`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsesUsage {
    input_tokens: Option<Count>,
    output_tokens: Option<Count>,
    input_tokens_details: Option<Obj<Details>>,
    output_tokens_details: Option<Obj<Details>>,
}

impl ResponsesUsage {
    fn normalized(&self) -> Result<TokenUsage, Anomaly> {
        believe(
            required(self.input_tokens)?,
            required(self.output_tokens)?,
            cached(&self.input_tokens_details)?,
            reasoning(&self.output_tokens_details)?,
        )
    }
}

/// A response object: its `usage`, and for a whole answer its `output`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Response {
    usage: Option<Obj<ResponsesUsage>>,
    output: Option<Vec<OutputItem>>,
}

/// An item of `output`: a message's `content`, a reasoning item's
/// `summary` (and `content`), a function call's `arguments`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputItem {
    content: Option<Vec<OutputPart>>,
    summary: Option<Vec<OutputPart>>,
    arguments: Chars,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutputPart {
    text: Chars,
    refusal: Chars,
}

/// A response object (or an error body: no usage) as a whole answer.
pub(super) fn responses_body(json: &[u8]) -> Result<Reading, Anomaly> {
    let response: Response = parse_json(json)?;
    let parts = response.output.iter().flatten().flat_map(|item| {
        let parts = item.content.iter().chain(&item.summary).flatten();
        parts
            .flat_map(|part| [part.text, part.refusal])
            .chain([item.arguments])
    });
    Ok(Reading {
        chars: Chars::sum(parts),
        usage: response.usage.map(|u| u.0.normalized()).transpose(),
    })
}

/// A stream event of the Responses API. Its `response` is read for the
/// usage only: the text it repeats was counted from the deltas.
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(default)]
    delta: Chars,
    #[serde(default)]
    response: Option<StreamedResponse>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamedResponse {
    usage: Option<Obj<ResponsesUsage>>,
}

/// Events whose `delta` is generated text.
const TEXT_DELTAS: [&str; 6] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.custom_tool_call_input.delta",
];

/// Events that end a response and carry its usage.
const FINAL: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// One event of a streamed response.
pub(super) fn responses_event(json: &[u8]) -> Result<Reading, Anomaly> {
    let event: ResponsesEvent<'_> = parse_json(json)?;
    let kind = event.kind.as_ref();
    let chars = if TEXT_DELTAS.contains(&kind) {
        event.delta.0
    } else {
        0
    };
    let usage = match event.response {
        Some(StreamedResponse { usage: Some(usage) }) if FINAL.contains(&kind) => {
            usage.0.normalized().map(Some)
        }
        _ => Ok(None),
    };
    Ok(Reading { chars, usage })
}
