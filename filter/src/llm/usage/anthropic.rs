//! Anthropic's Messages answers. The input is `input_tokens` plus both
//! cache counts (`cache_creation_input_tokens`, `cache_read_input_tokens`),
//! of which `cache_read_input_tokens` are cached; the output is
//! `output_tokens`, thinking included (the API does not count it apart).
//!
//! A stream reports the input in `message_start`'s `message.usage` and the
//! output in `message_delta`'s `usage`, whose counts are cumulative (a
//! `message_delta` may repeat input counts; they override the start's).
//! The usage is whole only once a `message_delta` has come: the
//! `output_tokens` of `message_start` is a placeholder.

use std::borrow::Cow;

use serde::Deserialize;

use super::count::{believe, optional, parse_json, present, required, Chars, Count, Obj};
use super::{Anomaly, Reading};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    input_tokens: Option<Count>,
    cache_creation_input_tokens: Option<Count>,
    cache_read_input_tokens: Option<Count>,
    output_tokens: Option<Count>,
}

/// The input counts as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Input {
    fresh: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Input {
    /// The input of a usage that must name it (`message_start`, a body).
    fn of(usage: &Usage) -> Result<Input, Anomaly> {
        Ok(Input {
            fresh: required(usage.input_tokens)?,
            cache_creation: optional(usage.cache_creation_input_tokens)?,
            cache_read: optional(usage.cache_read_input_tokens)?,
        })
    }

    /// This input with the counts `usage` names instead.
    fn updated(self, usage: &Usage) -> Result<Input, Anomaly> {
        Ok(Input {
            fresh: present(usage.input_tokens)?.unwrap_or(self.fresh),
            cache_creation: present(usage.cache_creation_input_tokens)?
                .unwrap_or(self.cache_creation),
            cache_read: present(usage.cache_read_input_tokens)?.unwrap_or(self.cache_read),
        })
    }

    fn with_output(self, output: u64) -> Result<tollgate_wire::TokenUsage, Anomaly> {
        let input = self
            .fresh
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        believe(input, output, self.cache_read, 0)
    }
}

/// A message (a whole answer, or `message_start`'s skeleton).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Message {
    content: Option<Vec<Block>>,
    usage: Option<Obj<Usage>>,
}

/// A content block, or a `content_block_delta`'s `delta`: generated text
/// is in `text`, `thinking` or (tool input, streamed) `partial_json`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Block {
    text: Chars,
    thinking: Chars,
    partial_json: Chars,
}

impl Block {
    fn chars(&self) -> u64 {
        Chars::sum([self.text, self.thinking, self.partial_json])
    }
}

/// A whole answer (or an error body: no usage).
pub(super) fn body(json: &[u8]) -> Result<Reading, Anomaly> {
    let message: Message = parse_json(json)?;
    let chars = message.content.iter().flatten().map(Block::chars);
    let usage = message
        .usage
        .as_ref()
        .map(|Obj(usage)| Input::of(usage)?.with_output(required(usage.output_tokens)?));
    Ok(Reading {
        chars: chars.fold(0, u64::saturating_add),
        usage: usage.transpose(),
    })
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    delta: Option<Block>,
    #[serde(default)]
    usage: Option<Obj<Usage>>,
}

/// What a stream has said of its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stream {
    input: Option<Input>,
}

impl Stream {
    /// One event of the stream.
    pub(super) fn event(&mut self, json: &[u8]) -> Result<Reading, Anomaly> {
        let event: Event<'_> = parse_json(json)?;
        match event.kind.as_ref() {
            "message_start" => {
                let usage = event
                    .message
                    .as_ref()
                    .and_then(|m| m.usage.as_ref())
                    .map(|u| &u.0);
                let usage =
                    usage.map(|usage| Input::of(usage).map(|input| self.input = Some(input)));
                Ok(Reading {
                    chars: 0,
                    usage: usage.transpose().map(|_| None),
                })
            }
            "content_block_start" => {
                Ok(Reading::text(event.content_block.map_or(0, |b| b.chars())))
            }
            "content_block_delta" => Ok(Reading::text(event.delta.map_or(0, |b| b.chars()))),
            "message_delta" => Ok(Reading {
                chars: 0,
                usage: event.usage.as_ref().map(|u| self.delta(&u.0)).transpose(),
            }),
            _ => Ok(Reading::text(0)),
        }
    }

    /// The usage after a `message_delta`'s cumulative `usage`.
    fn delta(&mut self, usage: &Usage) -> Result<tollgate_wire::TokenUsage, Anomaly> {
        let output = required(usage.output_tokens)?;
        let input = match self.input {
            Some(input) => input.updated(usage)?,
            // No `message_start` usage: the delta must name the input.
            None => Input::of(usage)?,
        };
        self.input = Some(input);
        input.with_output(output)
    }
}
