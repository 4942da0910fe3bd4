//! Server-sent events (WHATWG `text/event-stream`) read incrementally from a
//! streamed answer, in bounded memory.
//!
//! The parser is fed the body as the proxy passes it on, split anywhere
//! (inside a line, inside a `\r\n`, inside a UTF-8 character), and calls
//! back once per complete event with its `event:` name and its `data:`
//! lines joined by `\n`. It never holds the stream back: it reads a copy.
//!
//! Lines end in `\r\n`, `\n` or a lone `\r`. A line that starts with `:` is
//! a comment. A field's value is what follows its first `:`, less one
//! leading space. `data:` lines accumulate, `event:` names the event, and
//! `id:`, `retry:` and unknown fields are ignored (metering needs neither
//! reconnection nor the last event id). A blank line dispatches the event;
//! an event with no `data:` line is not dispatched. `data: [DONE]` is an
//! ordinary event here: what it means is for the reader of the API.
//!
//! Memory is bounded: the parser holds at most one line of `max_line`
//! bytes, the current event's data (at most `max_line` bytes) and its name
//! (at most [`MAX_EVENT_NAME`] bytes), whatever the stream sends. A longer
//! line is skipped whole and counted ([`SseParser::skipped_lines`]), and the
//! event it belongs to is dropped, never truncated (a skipped comment line
//! drops nothing). An event whose joined data would exceed `max_line`, or
//! whose data or name is not UTF-8, is dropped too; every dropped event is
//! counted ([`SseParser::dropped_events`]).

/// Longest `event:` name kept; an event with a longer name is dropped.
/// Every name an LLM API sends is under 64 bytes.
pub const MAX_EVENT_NAME: usize = 256;

/// One dispatched event. It borrows the parser's buffers for the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` name, if the event had a non-empty one (the SSE default
    /// type `message` otherwise).
    pub event: Option<&'a str>,
    /// The `data:` lines, joined by `\n`, without a trailing newline.
    pub data: &'a str,
    /// How many events the parser had dropped before this one, so a reader
    /// can tell whether something was lost after a given event.
    pub dropped_before: u64,
}

/// Whether the current line is being kept or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Kept in `line`, at most `max_line` bytes so far.
    Reading,
    /// Over `max_line`: discarded up to its end.
    Skipping,
}

/// An incremental SSE parser; see the module documentation.
#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    line: Vec<u8>,
    state: Line,
    /// The last byte seen was a `\r`: a `\n` right after it ends no line.
    after_cr: bool,
    /// No line has ended yet: a byte order mark opening it is dropped.
    at_start: bool,
    name: Vec<u8>,
    data: Vec<u8>,
    /// The current event has a `data:` line (its data may still be empty).
    has_data: bool,
    /// The current event lost a line or overflowed: it will be dropped.
    spoiled: bool,
    skipped_lines: u64,
    dropped_events: u64,
}

impl SseParser {
    /// A parser that keeps lines of at most `max_line` bytes (terminator
    /// excluded) and events of at most `max_line` bytes of data.
    pub fn new(max_line: usize) -> Self {
        SseParser {
            max_line,
            line: Vec::new(),
            state: Line::Reading,
            after_cr: false,
            at_start: true,
            name: Vec::new(),
            data: Vec::new(),
            has_data: false,
            spoiled: false,
            skipped_lines: 0,
            dropped_events: 0,
        }
    }

    /// Reads the next piece of the stream, calling `on_event` for each
    /// event it completes.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        let mut rest = bytes;
        while let Some((&first, tail)) = rest.split_first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                rest = tail;
                continue;
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.take(rest);
                    return;
                }
                Some(at) => {
                    let (text, end) = rest.split_at(at);
                    self.take(text);
                    self.after_cr = end.first() == Some(&b'\r');
                    rest = end.get(1..).unwrap_or_default();
                    self.end_line(&mut on_event);
                }
            }
        }
    }

    /// Ends the stream. As the SSE specification says, an event that no
    /// blank line closed is discarded, not dispatched (and so is an
    /// unfinished line). Returns whether anything was discarded; the parser
    /// is then ready for a new stream (its counters are kept).
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty()
            || self.state == Line::Skipping
            || self.has_data
            || self.spoiled
            || !self.name.is_empty();
        self.line.clear();
        self.state = Line::Reading;
        self.after_cr = false;
        self.at_start = true;
        self.reset_event();
        pending
    }

    /// Lines longer than `max_line`, skipped.
    pub fn skipped_lines(&self) -> u64 {
        self.skipped_lines
    }

    /// Events dropped: a line of theirs was skipped, their data exceeded
    /// `max_line`, their name exceeded [`MAX_EVENT_NAME`], or their data or
    /// name was not UTF-8.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Bytes the parser's buffers hold (their capacity): at most
    /// `2 * max_line + MAX_EVENT_NAME`.
    pub fn held_bytes(&self) -> usize {
        self.line.capacity() + self.data.capacity() + self.name.capacity()
    }

    /// Adds a piece of the current line, or starts skipping it when the
    /// line would exceed `max_line`.
    fn take(&mut self, piece: &[u8]) {
        if self.state == Line::Skipping || piece.is_empty() {
            return;
        }
        if push_bounded(&mut self.line, piece, self.max_line) {
            return;
        }
        let first = self.line.first().or(piece.first()).copied();
        self.line.clear();
        self.state = Line::Skipping;
        self.skipped_lines += 1;
        if first != Some(b':') {
            self.spoiled = true;
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        let at_start = std::mem::replace(&mut self.at_start, false);
        if std::mem::replace(&mut self.state, Line::Reading) == Line::Skipping {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = match line.strip_prefix("\u{feff}".as_bytes()) {
            Some(text) if at_start => text,
            _ => &line,
        };
        if text.is_empty() {
            self.dispatch(on_event);
        } else {
            self.field(text);
        }
        self.line = line;
        self.line.clear();
    }

    fn field(&mut self, line: &[u8]) {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(at) => {
                let (name, rest) = line.split_at(at);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                let joined = !self.has_data || push_bounded(&mut self.data, b"\n", self.max_line);
                self.has_data = true;
                if !(joined && push_bounded(&mut self.data, value, self.max_line)) {
                    self.data.clear();
                    self.spoiled = true;
                }
            }
            b"event" => {
                self.name.clear();
                if !push_bounded(&mut self.name, value, MAX_EVENT_NAME) {
                    self.spoiled = true;
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.spoiled {
            self.dropped_events += 1;
        } else if self.has_data {
            match (
                std::str::from_utf8(&self.data),
                std::str::from_utf8(&self.name),
            ) {
                (Ok(data), Ok(name)) => on_event(SseEvent {
                    event: (!name.is_empty()).then_some(name),
                    data,
                    dropped_before: self.dropped_events,
                }),
                _ => self.dropped_events += 1,
            }
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.name.clear();
        self.data.clear();
        self.has_data = false;
        self.spoiled = false;
    }
}

/// Appends `bytes` to `buf` if its length stays within `cap`, growing its
/// capacity no further than `cap`; false (nothing appended) otherwise.
fn push_bounded(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    let needed = match buf.len().checked_add(bytes.len()) {
        Some(needed) if needed <= cap => needed,
        _ => return false,
    };
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity().saturating_mul(2)).min(cap);
        buf.reserve_exact(target.saturating_sub(buf.len()));
    }
    buf.extend_from_slice(bytes);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events as owned (name, data) pairs.
    type Events = Vec<(Option<String>, String)>;

    fn parse_pieces(max_line: usize, pieces: &[&[u8]]) -> (Events, SseParser) {
        let mut parser = SseParser::new(max_line);
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece, |e| {
                events.push((e.event.map(str::to_string), e.data.to_string()))
            });
        }
        (events, parser)
    }

    fn parse(input: &str) -> Events {
        parse_pieces(1024, &[input.as_bytes()]).0
    }

    fn ev(name: Option<&str>, data: &str) -> (Option<String>, String) {
        (name.map(str::to_string), data.to_string())
    }

    /// The same events whatever the split: whole, at every offset, byte
    /// by byte.
    fn same_at_every_split(input: &[u8], max_line: usize) -> Events {
        let (whole, _) = parse_pieces(max_line, &[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(parse_pieces(max_line, &[a, b]).0, whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_pieces(max_line, &bytes).0, whole, "byte by byte");
        whole
    }

    #[test]
    fn fields_comments_and_blank_lines_make_events() {
        let input =
            ": hello\nevent: ping\ndata: {\"a\":1}\n\ndata:x\ndata:  y\nid: 7\nretry: 10\nfoo\n\n";
        assert_eq!(
            parse(input),
            vec![ev(Some("ping"), "{\"a\":1}"), ev(None, "x\n y")]
        );
    }

    #[test]
    fn every_line_ending_reads_the_same_at_every_split() {
        let lf = "event: a\ndata: é✓🙂\n\ndata: [DONE]\n\n";
        let expected = vec![ev(Some("a"), "é✓🙂"), ev(None, "[DONE]")];
        for ending in ["\n", "\r\n", "\r"] {
            let input = lf.replace('\n', ending);
            assert_eq!(
                same_at_every_split(input.as_bytes(), 64),
                expected,
                "{ending:?}"
            );
        }
    }

    #[test]
    fn an_event_without_data_or_without_a_closing_blank_line_is_not_dispatched() {
        let (events, mut parser) =
            parse_pieces(64, &[b"event: x\n\ndata: last\n\ndata: unfinished\n"]);
        assert_eq!(events, vec![ev(None, "last")]);
        assert!(parser.finish(), "the unfinished event was discarded");
        assert!(!parser.finish());
        let mut after = Vec::new();
        parser.feed(b"data: next\n\n", |e| after.push(e.data.to_string()));
        assert_eq!(after, vec!["next"]);
    }

    #[test]
    fn empty_data_is_an_event_and_a_field_without_colon_is_empty() {
        assert_eq!(parse("data\n\ndata:\n\n"), vec![ev(None, ""), ev(None, "")]);
    }

    #[test]
    fn a_byte_order_mark_opening_the_stream_is_dropped() {
        assert_eq!(parse("\u{feff}data: a\n\n"), vec![ev(None, "a")]);
    }

    #[test]
    fn a_line_over_the_cap_is_skipped_whole_and_its_event_dropped() {
        let long = "x".repeat(100);
        let input = format!("data: ok\n\ndata: {long}\ndata: tail\n\n: {long}\ndata: after\n\n");
        let events = same_at_every_split(input.as_bytes(), 32);
        assert_eq!(events, vec![ev(None, "ok"), ev(None, "after")]);
        let (_, parser) = parse_pieces(32, &[input.as_bytes()]);
        assert_eq!(parser.skipped_lines(), 2);
        assert_eq!(parser.dropped_events(), 1, "the long comment drops nothing");
        assert!(
            parser.held_bytes() <= 2 * 32,
            "held {}",
            parser.held_bytes()
        );
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_kept() {
        let input = format!("data: {}\n\n", "y".repeat(26));
        assert_eq!(same_at_every_split(input.as_bytes(), 32).len(), 1);
    }

    #[test]
    fn data_over_the_cap_drops_the_event() {
        let line = format!("data: {}\n", "z".repeat(20));
        let input = format!("{line}{line}\ndata: small\n\n");
        let (events, parser) = parse_pieces(32, &[input.as_bytes()]);
        assert_eq!(events, vec![ev(None, "small")]);
        assert_eq!((parser.skipped_lines(), parser.dropped_events()), (0, 1));
    }

    #[test]
    fn a_long_event_name_drops_the_event() {
        let input = format!("event: {}\ndata: x\n\n", "n".repeat(MAX_EVENT_NAME + 1));
        let (events, parser) = parse_pieces(4096, &[input.as_bytes()]);
        assert!(events.is_empty());
        assert_eq!(parser.dropped_events(), 1);
    }

    #[test]
    fn non_utf8_data_drops_the_event_and_a_split_character_does_not() {
        let (events, parser) =
            parse_pieces(64, &[b"data: \xff\xfe\n\n", b"data: \xe2\x9c", b"\x93\n\n"]);
        assert_eq!(events, vec![ev(None, "✓")]);
        assert_eq!(parser.dropped_events(), 1);
    }

    #[test]
    fn dispatched_events_say_how_many_were_dropped_before() {
        let long = "q".repeat(64);
        let input = format!("data: a\n\ndata: {long}\n\ndata: b\n\n");
        let mut parser = SseParser::new(16);
        let mut seen = Vec::new();
        parser.feed(input.as_bytes(), |e| {
            seen.push((e.data.to_string(), e.dropped_before))
        });
        assert_eq!(seen, vec![("a".to_string(), 0), ("b".to_string(), 1)]);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let cap = 1000;
        let mut parser = SseParser::new(cap);
        let junk = vec![b'a'; 4096];
        for _ in 0..256 {
            parser.feed(b"data: ", |_| {});
            parser.feed(&junk, |_| {});
            parser.feed(b"\ndata: ", |_| {});
            parser.feed(&junk[..600], |_| {});
            parser.feed(b"\ndata: ", |_| {});
            parser.feed(&junk[..600], |_| {});
            parser.feed(b"\n", |_| {});
            assert!(parser.held_bytes() <= 2 * cap + MAX_EVENT_NAME);
        }
        assert_eq!(parser.skipped_lines(), 256);
    }

    #[test]
    fn growth_never_exceeds_the_cap() {
        let mut buf = Vec::new();
        for _ in 0..10 {
            assert!(push_bounded(&mut buf, &[0; 7], 70));
            assert!(buf.capacity() <= 70);
        }
        assert!(!push_bounded(&mut buf, &[0], 70));
        assert_eq!(buf.len(), 70);
    }
}
