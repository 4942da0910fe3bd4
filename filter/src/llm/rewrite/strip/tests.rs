use proptest::prelude::*;

use super::*;

const HEAD: &str = r#""id":"chatcmpl-B9x2","object":"chat.completion.chunk","created":1733479200,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1""#;

/// A recorded chat stream's events (each without its blank line), and the
/// index of the usage-only chunk among them.
fn events() -> (Vec<String>, usize) {
    let choice = |delta: &str, finish: &str| {
        format!(
            r#"data: {{{HEAD},"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null}}"#
        )
    };
    let events = vec![
        choice(
            r#"{"role":"assistant","content":"","refusal":null}"#,
            "null",
        ),
        choice(r#"{"content":"Hello"}"#, "null"),
        choice(r#"{"content":" there,\n friend"}"#, "null"),
        choice(r#"{"content":"!"}"#, "null"),
        choice("{}", r#""stop""#),
        format!(
            r#"data: {{{HEAD},"choices":[],"usage":{{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}}}"#
        ),
        "data: [DONE]".to_string(),
    ];
    (events, 5)
}

/// The stream with line ending `eol`, its ends of events, and the stream
/// the client must get.
fn stream(eol: &str) -> (Vec<u8>, Vec<usize>, Vec<u8>) {
    let (events, usage) = events();
    let (mut whole, mut ends, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for (i, event) in events.iter().enumerate() {
        let bytes = format!("{event}{eol}{eol}");
        whole.extend_from_slice(bytes.as_bytes());
        ends.push(whole.len());
        if i != usage {
            expected.extend_from_slice(bytes.as_bytes());
        }
    }
    (whole, ends, expected)
}

fn strip_in(pieces: &[&[u8]]) -> Vec<u8> {
    let mut stripper = UsageChunkStripper::new();
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&stripper.push(piece));
    }
    out.extend_from_slice(&stripper.finish());
    out
}

#[test]
fn the_usage_chunk_goes_and_everything_else_passes_byte_for_byte() {
    for eol in ["\n", "\r\n", "\r"] {
        let (whole, _, expected) = stream(eol);
        assert_ne!(whole, expected);
        assert_eq!(strip_in(&[&whole]), expected, "{eol:?}");
    }
}

#[test]
fn a_split_at_any_byte_gives_the_same_stream() {
    for eol in ["\n", "\r\n", "\r"] {
        let (whole, _, expected) = stream(eol);
        for at in 0..=whole.len() {
            let (a, b) = whole.split_at(at);
            assert_eq!(strip_in(&[a, b]), expected, "{eol:?} split at {at}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(strip_in(&bytes), expected, "{eol:?} byte by byte");
    }
}

#[test]
fn each_event_passes_as_soon_as_it_is_complete() {
    for eol in ["\n", "\r\n"] {
        let (whole, ends, _) = stream(eol);
        let (_, usage) = events();
        let mut stripper = UsageChunkStripper::new();
        let mut out = Vec::new();
        for (i, byte) in whole.iter().enumerate() {
            out.extend_from_slice(&stripper.push(std::slice::from_ref(byte)));
            let pushed = i + 1;
            // What is due: every kept event complete by now, nothing more.
            let due: usize = ends
                .iter()
                .enumerate()
                .filter(|(e, end)| **end <= pushed && *e != usage)
                .map(|(e, end)| end - if e == 0 { 0 } else { ends[e - 1] })
                .sum();
            assert_eq!(out.len(), due, "{eol:?} after byte {i}");
        }
        assert!(stripper.finish().is_empty());
    }
}

#[test]
fn whole_events_in_a_chunk_pass_without_a_copy() {
    let (whole, ends, _) = stream("\n");
    let mut stripper = UsageChunkStripper::new();
    let first = &whole[..ends[1]];
    assert!(matches!(stripper.push(first), Cow::Borrowed(b) if b == first));
    // Two events and half of the third: the two pass as they are.
    let part = &whole[ends[1]..ends[3] + 10];
    let out = stripper.push(part);
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(&*out, &whole[ends[1]..ends[3]]);
}

#[test]
fn only_a_data_only_event_with_empty_choices_and_a_usage_is_dropped() {
    let usage = r#"{"choices":[],"usage":{"prompt_tokens":1}}"#;
    let dropped = [
        format!("data: {usage}\n\n"),
        format!("data:{usage}\r\n\r\n"),
        "data: {\"choices\":[],\n\ndata: \"usage\":{}}\n\n".replace("\n\ndata", "\ndata"),
    ];
    for event in &dropped {
        assert_eq!(strip_in(&[event.as_bytes()]), b"", "{event:?}");
    }
    let kept = [
        format!("id: 7\ndata: {usage}\n\n"),
        format!("event: usage\ndata: {usage}\n\n"),
        format!(": note\ndata: {usage}\n\n"),
        "data: {\"choices\":[],\"usage\":null}\n\n".to_string(),
        "data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1}}\n\n".to_string(),
        "data: {\"usage\":{\"prompt_tokens\":1}}\n\n".to_string(),
        "data: [DONE]\n\n".to_string(),
        "data: {\"choices\":[],\"usage\":{}\n\n".to_string(),
        "\n\n".to_string(),
    ];
    for event in &kept {
        assert_eq!(strip_in(&[event.as_bytes()]), event.as_bytes(), "{event:?}");
    }
}

#[test]
fn an_incomplete_event_is_released_at_the_end() {
    let usage = "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}";
    let mut stripper = UsageChunkStripper::new();
    assert_eq!(&*stripper.push(usage.as_bytes()), b"");
    assert_eq!(stripper.finish(), usage.as_bytes());
    // A usage chunk whose blank line ends in a lone `\r` at the very end
    // is complete: it goes.
    let cr = format!("{usage}\r\r");
    assert_eq!(&*stripper.push(cr.as_bytes()), b"");
    assert_eq!(stripper.finish(), b"");
}

#[test]
fn an_event_longer_than_the_cap_is_released_unstripped() {
    let padding = " ".repeat(MAX_HELD_EVENT);
    let event = format!(
        "data: {{\"choices\":[],{padding}\"usage\":{{\"total_tokens\":3}}}}\n\ndata: [DONE]\n\n"
    );
    let bytes = event.as_bytes();
    let mut stripper = UsageChunkStripper::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(1000) {
        out.extend_from_slice(&stripper.push(piece));
        assert!(stripper.held.len() <= MAX_HELD_EVENT);
    }
    out.extend_from_slice(&stripper.finish());
    assert!(out == bytes, "the long event passes as it is");
    // Whole in one chunk, it passes too; the same event under the cap goes.
    assert!(strip_in(&[bytes]) == bytes);
    let short = event.replace(&padding, "");
    assert_eq!(strip_in(&[short.as_bytes()]), b"data: [DONE]\n\n");
}

#[test]
fn the_metering_recording_loses_exactly_its_usage_chunk() {
    let recorded = include_str!("../../testdata/openai_chat.sse");
    let usage: Vec<&str> = recorded
        .split_inclusive("\n\n")
        .filter(|event| event.contains(r#""choices":[]"#))
        .collect();
    assert_eq!(usage.len(), 1);
    let expected = recorded.replacen(usage[0], "", 1);
    for at in 0..=recorded.len() {
        let (a, b) = recorded.as_bytes().split_at(at);
        assert!(strip_in(&[a, b]) == expected.as_bytes(), "split at {at}");
    }
}

proptest! {
    /// Cut anywhere into any number of pieces, with any line ending, the
    /// stream comes out whole but for its usage chunk.
    #[test]
    fn any_cuts_give_the_same_stream(
        eol in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(0usize..2000, 0..12),
    ) {
        let (whole, _, expected) = stream(eol);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (whole.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in cuts {
            pieces.push(&whole[from..cut]);
            from = cut;
        }
        pieces.push(&whole[from..]);
        prop_assert!(strip_in(&pieces) == expected);
    }
}
