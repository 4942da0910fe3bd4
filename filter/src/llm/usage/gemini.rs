//! Gemini's `generateContent` answers. Every streamed event is a whole
//! `GenerateContentResponse` whose `usageMetadata` is cumulative, so the
//! last one counts.
//!
//! The input is `promptTokenCount` (which includes
//! `cachedContentTokenCount`, the cached part) plus
//! `toolUsePromptTokenCount` (the prompt of tool calls, also billed as
//! input); the output is `candidatesTokenCount` plus `thoughtsTokenCount`
//! (the reasoning part). The API leaves out counts that are zero, so every
//! count is optional.

use serde::Deserialize;

use super::count::{advance, believe, optional, parse_any, parse_json, Chars, Count, Obj};
use super::{Anomaly, Reading};
use tollgate_wire::TokenUsage;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Response {
    candidates: Option<Vec<Candidate>>,
    usage_metadata: Option<Obj<UsageMetadata>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Candidate {
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content {
    parts: Option<Vec<Part>>,
}

/// A part of a candidate: its `text` (thoughts included) is generated text.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Part {
    text: Chars,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<Count>,
    tool_use_prompt_token_count: Option<Count>,
    cached_content_token_count: Option<Count>,
    candidates_token_count: Option<Count>,
    thoughts_token_count: Option<Count>,
}

impl UsageMetadata {
    fn normalized(&self) -> Result<TokenUsage, Anomaly> {
        let thoughts = optional(self.thoughts_token_count)?;
        believe(
            optional(self.prompt_token_count)?
                .saturating_add(optional(self.tool_use_prompt_token_count)?),
            optional(self.candidates_token_count)?.saturating_add(thoughts),
            optional(self.cached_content_token_count)?,
            thoughts,
        )
    }
}

impl Response {
    fn reading(&self) -> Reading {
        let parts = self.candidates.iter().flatten().flat_map(|candidate| {
            let parts = candidate.content.as_ref().and_then(|c| c.parts.as_ref());
            parts.into_iter().flatten().map(|part| part.text)
        });
        Reading {
            chars: Chars::sum(parts),
            usage: self
                .usage_metadata
                .as_ref()
                .map(|u| u.0.normalized())
                .transpose(),
        }
    }
}

/// One event of a stream (`streamGenerateContent?alt=sse`).
pub(super) fn event(json: &[u8]) -> Result<Reading, Anomaly> {
    parse_json::<Response>(json).map(|response| response.reading())
}

/// A whole answer: one response (or an error body: no usage), or the list
/// of responses `streamGenerateContent` sends without `alt=sse`, whose
/// texts add up and whose last usage counts.
pub(super) fn body(json: &[u8]) -> Result<Reading, Anomaly> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return event(json);
    }
    let responses: Vec<Obj<Response>> = parse_any(json)?;
    let mut total = Reading::text(0);
    for Obj(response) in &responses {
        let reading = response.reading();
        total.chars = total.chars.saturating_add(reading.chars);
        total.usage = match (total.usage, reading.usage) {
            (Ok(prev), Ok(Some(next))) => advance(prev, next).map(Some),
            (Ok(prev), Ok(None)) => Ok(prev),
            (Err(anomaly), _) | (_, Err(anomaly)) => Err(anomaly),
        };
    }
    Ok(total)
}
