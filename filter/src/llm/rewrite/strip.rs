//! The answer to an OpenAI chat stream whose `include_usage` the gateway
//! added, less the usage-only chunk that the client did not ask for.
//!
//! Each response chunk goes in as it arrives ([`UsageChunkStripper::push`])
//! and what may pass comes out at once: every complete event, byte for
//! byte, except a usage-only chunk (an event made only of `data:` lines
//! whose JSON is an object with `"choices": []` and a non-null `usage`),
//! which is dropped with its blank line. Only an incomplete trailing event
//! is held until it completes. Lines end in `\n`, `\r\n` or `\r`; a chunk
//! may end anywhere, inside a line ending too (a trailing `\r` is held
//! until the next byte says whether a `\n` follows).
//!
//! Held bytes are bounded: an event longer than [`MAX_HELD_EVENT`] is
//! never stripped (a usage chunk is a few hundred bytes, so such an event
//! is not one, and it is not parsed), and once an incomplete one holds more
//! than that, what is held is released as it is and the rest of the event
//! passes as it comes. [`UsageChunkStripper::finish`] releases whatever is
//! held when the stream ends.

use std::borrow::Cow;

use crate::llm::usage::is_usage_only_chunk;

/// Most bytes of one incomplete event the stripper holds back: 64 KiB.
pub const MAX_HELD_EVENT: usize = 64 * 1024;

/// Takes the usage-only chunk out of a stream as it passes (see the
/// module's documentation).
#[derive(Debug, Default)]
pub struct UsageChunkStripper {
    /// The current event's bytes, held until it completes.
    held: Vec<u8>,
    line: Line,
    /// The current event outgrew [`MAX_HELD_EVENT`]: its bytes pass as
    /// they come until it ends.
    passing: bool,
}

/// Where the scan stands in the current line.
#[derive(Debug, Clone, Copy)]
enum Line {
    /// Inside a line; `empty` until it has a byte.
    In { empty: bool },
    /// Just after a `\r` that ended a line (empty or not); a `\n` next is
    /// part of the same line ending.
    AfterCr { empty: bool },
}

impl Default for Line {
    fn default() -> Self {
        Line::In { empty: true }
    }
}

/// What one byte means for the current event.
enum Step {
    Continue,
    /// The event ends with this byte (the `\n` of its blank line).
    EndsAfter,
    /// The event ended just before this byte (its blank line ended in a
    /// lone `\r`); the byte starts the next event and is not consumed.
    EndedBefore,
}

impl UsageChunkStripper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of `chunk` (and of events held from earlier chunks) to
    /// pass on now. Borrowed when it is a prefix of `chunk` as it is.
    pub fn push<'c>(&mut self, chunk: &'c [u8]) -> Cow<'c, [u8]> {
        let mut out = Out::default();
        let mut start = 0;
        let mut i = 0;
        while let Some(&byte) = chunk.get(i) {
            let end = match self.step(byte) {
                Step::Continue => {
                    i += 1;
                    continue;
                }
                Step::EndsAfter => {
                    i += 1;
                    i
                }
                Step::EndedBefore => i,
            };
            self.complete(chunk, start..end, &mut out);
            start = end;
        }
        if self.passing {
            out.pass(chunk, start..chunk.len());
        } else {
            self.held
                .extend_from_slice(chunk.get(start..).unwrap_or_default());
            if self.held.len() > MAX_HELD_EVENT {
                out.owned(chunk).append(&mut self.held);
                self.passing = true;
            }
        }
        out.into_cow(chunk)
    }

    /// The bytes still held when the stream ends: an incomplete event, as
    /// it is, or nothing if what is held is a complete usage-only chunk
    /// (its blank line ended in a `\r` with nothing after it).
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        let complete = matches!(self.line, Line::AfterCr { empty: true });
        *self = Self::default();
        if complete && is_usage_only_event(&held) {
            Vec::new()
        } else {
            held
        }
    }

    fn step(&mut self, byte: u8) -> Step {
        match (self.line, byte) {
            // A `\n` ends the line, or completes the `\r\n` that did.
            (Line::In { empty } | Line::AfterCr { empty }, b'\n') => {
                self.line = Line::In { empty: true };
                if empty {
                    Step::EndsAfter
                } else {
                    Step::Continue
                }
            }
            (Line::In { empty }, b'\r') => {
                self.line = Line::AfterCr { empty };
                Step::Continue
            }
            (Line::In { .. }, _) => {
                self.line = Line::In { empty: false };
                Step::Continue
            }
            (Line::AfterCr { empty: true }, _) => {
                self.line = Line::In { empty: true };
                Step::EndedBefore
            }
            (Line::AfterCr { empty: false }, _) => {
                self.line = Line::In { empty: true };
                self.step(byte)
            }
        }
    }

    /// The current event ends with `chunk[span]`: pass it, or drop it if it
    /// is the usage-only chunk.
    fn complete(&mut self, chunk: &[u8], span: std::ops::Range<usize>, out: &mut Out) {
        if std::mem::take(&mut self.passing) {
            out.pass(chunk, span);
            return;
        }
        let tail = chunk.get(span.clone()).unwrap_or_default();
        let strippable = self.held.len() + tail.len() <= MAX_HELD_EVENT;
        if self.held.is_empty() {
            if !(strippable && is_usage_only_event(tail)) {
                out.pass(chunk, span);
            }
        } else {
            self.held.extend_from_slice(tail);
            let event = std::mem::take(&mut self.held);
            if !(strippable && is_usage_only_event(&event)) {
                out.owned(chunk).extend_from_slice(&event);
            }
        }
    }
}

/// What a push passes on: a prefix of the chunk as it is, until something
/// breaks the run (a dropped event, held bytes); then a copy.
#[derive(Default)]
struct Out {
    prefix: usize,
    owned: Option<Vec<u8>>,
}

impl Out {
    fn pass(&mut self, chunk: &[u8], span: std::ops::Range<usize>) {
        if self.owned.is_none() && self.prefix == span.start {
            self.prefix = span.end;
        } else {
            let bytes = chunk.get(span).unwrap_or_default();
            self.owned(chunk).extend_from_slice(bytes);
        }
    }

    fn owned(&mut self, chunk: &[u8]) -> &mut Vec<u8> {
        let prefix = chunk.get(..self.prefix).unwrap_or_default();
        self.owned.get_or_insert_with(|| prefix.to_vec())
    }

    fn into_cow(self, chunk: &[u8]) -> Cow<'_, [u8]> {
        match self.owned {
            Some(bytes) => Cow::Owned(bytes),
            None => Cow::Borrowed(chunk.get(..self.prefix).unwrap_or_default()),
        }
    }
}

/// Whether a complete event (blank line included) is the usage-only
/// chunk: only `data:` lines, whose joined data is a chunk object with
/// `"choices": []` and a non-null `usage`.
fn is_usage_only_event(event: &[u8]) -> bool {
    let mut data: Vec<&[u8]> = Vec::new();
    for line in lines(event) {
        match line.strip_prefix(b"data:") {
            Some(value) => data.push(value.strip_prefix(b" ").unwrap_or(value)),
            None if line.is_empty() => {}
            None => return false,
        }
    }
    match data.as_slice() {
        [] => false,
        [one] => is_usage_only_chunk(one),
        many => is_usage_only_chunk(many.join(&b'\n')),
    }
}

/// The lines of an event, without their endings (`\r\n`, `\n` or `\r`).
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|b| *b == b'\n')
        .flat_map(|line| line.split(|b| *b == b'\r'))
}

#[cfg(test)]
mod tests;
