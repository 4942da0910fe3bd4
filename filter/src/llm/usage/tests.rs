//! Recorded answers of each API (`../testdata/`, written from the
//! providers' documented formats), fed whole, split at every offset and
//! byte by byte, and the anomalies that make usage unbelievable.

use super::*;

const CHAT_SSE: &[u8] = include_bytes!("../testdata/openai_chat.sse");
const RESPONSES_SSE: &[u8] = include_bytes!("../testdata/openai_responses.sse");
const ANTHROPIC_SSE: &[u8] = include_bytes!("../testdata/anthropic_messages.sse");
const GEMINI_SSE: &[u8] = include_bytes!("../testdata/gemini_generate.sse");

fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        reasoning_tokens: reasoning,
    }
}

/// Each recorded stream, its usage and its delivered characters.
fn recorded() -> [(Api, &'static [u8], TokenUsage, u64); 4] {
    [
        (Api::OpenAiChat, CHAT_SSE, usage(2006, 300, 1920, 192), 40),
        (
            Api::OpenAiResponses,
            RESPONSES_SSE,
            usage(37, 11, 12, 0),
            43,
        ),
        (
            Api::AnthropicMessages,
            ANTHROPIC_SSE,
            usage(2620, 89, 2048, 0),
            69,
        ),
        (Api::GeminiGenerate, GEMINI_SSE, usage(11, 60, 4, 50), 51),
    ]
}

fn meter(api: Api, pieces: &[&[u8]]) -> (UsageOutcome, u64) {
    let mut meter = StreamMeter::new(api);
    for piece in pieces {
        meter.feed(piece);
    }
    let chars = meter.delivered_chars();
    (meter.finish(), chars)
}

fn outcome(api: Api, stream: &str) -> UsageOutcome {
    meter(api, &[stream.as_bytes()]).0
}

fn anomaly(api: Api, stream: &str) -> Option<Anomaly> {
    match outcome(api, stream) {
        UsageOutcome::Estimated {
            reason: EstimateReason::Anomaly(anomaly),
            ..
        } => Some(anomaly),
        _ => None,
    }
}

/// `stream` with its line endings made `ending`.
fn with_endings(stream: &[u8], ending: &str) -> Vec<u8> {
    let text = std::str::from_utf8(stream).unwrap().replace("\r\n", "\n");
    text.replace('\n', ending).into_bytes()
}

#[test]
fn each_recorded_stream_reads_the_same_at_every_split() {
    for (api, stream, tokens, chars) in recorded() {
        for ending in ["\n", "\r\n", "\r"] {
            let stream = with_endings(stream, ending);
            let expected = (UsageOutcome::Reported(tokens), chars);
            assert_eq!(meter(api, &[&stream]), expected, "{api:?} {ending:?}");
            for at in 0..=stream.len() {
                let (a, b) = stream.split_at(at);
                assert_eq!(meter(api, &[a, b]), expected, "{api:?} {ending:?} at {at}");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(meter(api, &bytes), expected, "{api:?} {ending:?} bytes");
        }
    }
}

#[test]
fn a_stream_cut_before_its_usage_is_estimated_from_what_was_delivered() {
    let cuts = [
        (Api::OpenAiChat, CHAT_SSE, "data: {\"id\":\"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"o4-mini-2025-04-16\",\"system_fingerprint\":\"fp_e4b3a3d5c1\",\"service_tier\":\"default\",\"choices\":[],"),
        (Api::OpenAiResponses, RESPONSES_SSE, "event: response.completed"),
        (Api::AnthropicMessages, ANTHROPIC_SSE, "event: message_delta"),
    ];
    for (api, stream, marker) in cuts {
        let text = std::str::from_utf8(stream).unwrap();
        let cut = text.find(marker).unwrap();
        let (outcome, chars) = meter(api, &[&stream[..cut]]);
        let expected = UsageOutcome::Estimated {
            reason: EstimateReason::NoUsage,
            delivered_chars: chars,
        };
        assert_eq!(outcome, expected, "{api:?}");
        assert_eq!(chars, recorded().iter().find(|r| r.0 == api).unwrap().3);
        assert_eq!(outcome.source(), UsageSource::Estimated);
        assert_eq!(outcome.tokens(401).input_tokens, 101);
        assert_eq!(outcome.tokens(401).output_tokens, chars.div_ceil(4));
    }
}

#[test]
fn a_gemini_stream_cut_early_reports_its_last_usage_so_far() {
    let text = std::str::from_utf8(GEMINI_SSE).unwrap();
    let cut = text.rfind("data:").unwrap();
    let (outcome, chars) = meter(Api::GeminiGenerate, &[&GEMINI_SSE[..cut]]);
    assert_eq!(outcome, UsageOutcome::Reported(usage(11, 59, 0, 50)));
    assert_eq!(chars, 50);
}

#[test]
fn an_event_cut_before_its_blank_line_is_not_read() {
    let text = std::str::from_utf8(CHAT_SSE).unwrap();
    let end = text.rfind("\n\ndata: [DONE]").unwrap();
    let (outcome, _) = meter(Api::OpenAiChat, &[&CHAT_SSE[..end + 1]]);
    assert_eq!(outcome.source(), UsageSource::Estimated);
}

#[test]
fn delivered_characters_are_characters_not_bytes() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"日本🙂\"}}]}\n\n";
    let bytes = stream.as_bytes();
    let at = stream.find('本').unwrap() + 1; // inside the character
    let (_, chars) = meter(Api::OpenAiChat, &[&bytes[..at], &bytes[at..]]);
    assert_eq!(chars, 3);
}

/// A chat stream whose last chunk has `usage` (written as JSON text).
fn chat_with_usage(usage: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"hello\"}}}}]}}\n\n\
         data: {{\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n"
    )
}

#[test]
fn chat_usage_numbers_must_be_believable() {
    let prompt_tokens = [
        ("-1", Anomaly::UsageNegative),
        ("-2e3", Anomaly::UsageNegative),
        ("1.5", Anomaly::UsageNotInteger),
        ("3.0", Anomaly::UsageNotInteger),
        ("\"3\"", Anomaly::UsageNotInteger),
        ("true", Anomaly::UsageNotInteger),
        ("[1]", Anomaly::UsageNotInteger),
        ("{}", Anomaly::UsageNotInteger),
        ("1073741825", Anomaly::UsageTooLarge),
        ("1e300", Anomaly::UsageTooLarge),
        ("99999999999999999999", Anomaly::UsageTooLarge),
        ("null", Anomaly::UsageIncomplete),
    ];
    let cases = prompt_tokens.iter().map(|(n, anomaly)| {
        (
            format!(r#"{{"prompt_tokens":{n},"completion_tokens":2}}"#),
            *anomaly,
        )
    });
    let shapes = [
        (r#"{"prompt_tokens":1}"#, Anomaly::UsageIncomplete),
        (
            r#"{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":2}}"#,
            Anomaly::UsageInconsistent,
        ),
        (
            r#"{"prompt_tokens":1,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":3}}"#,
            Anomaly::UsageInconsistent,
        ),
        (
            r#"{"prompt_tokens":1,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":-3}}"#,
            Anomaly::UsageNegative,
        ),
        (r#"[1,2]"#, Anomaly::UnexpectedJson),
    ];
    let cases = cases.chain(shapes.iter().map(|(u, anomaly)| (u.to_string(), *anomaly)));
    for (usage_json, expected) in cases {
        let stream = chat_with_usage(&usage_json);
        let estimated = UsageOutcome::Estimated {
            reason: EstimateReason::Anomaly(expected),
            delivered_chars: 5,
        };
        assert_eq!(outcome(Api::OpenAiChat, &stream), estimated, "{usage_json}");
    }
    let largest = r#"{"prompt_tokens":1073741824,"completion_tokens":0}"#;
    assert_eq!(
        outcome(Api::OpenAiChat, &chat_with_usage(largest)),
        UsageOutcome::Reported(usage(1 << 30, 0, 0, 0))
    );
}

#[test]
fn cumulative_counts_that_go_backwards_are_not_believed() {
    let chat = format!(
        "{}{}",
        chat_with_usage(r#"{"prompt_tokens":5,"completion_tokens":9}"#),
        chat_with_usage(r#"{"prompt_tokens":5,"completion_tokens":8}"#)
    );
    assert_eq!(
        anomaly(Api::OpenAiChat, &chat),
        Some(Anomaly::UsageWentBackwards)
    );
    let growing = format!(
        "{}{}",
        chat_with_usage(r#"{"prompt_tokens":5,"completion_tokens":8}"#),
        chat_with_usage(r#"{"prompt_tokens":5,"completion_tokens":9}"#)
    );
    assert_eq!(
        outcome(Api::OpenAiChat, &growing),
        UsageOutcome::Reported(usage(5, 9, 0, 0))
    );

    let anthropic = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":20}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
    assert_eq!(
        anomaly(Api::AnthropicMessages, anthropic),
        Some(Anomaly::UsageWentBackwards)
    );

    let gemini =
        "data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":7}}\n\n\
        data: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":6}}\n\n";
    assert_eq!(
        anomaly(Api::GeminiGenerate, gemini),
        Some(Anomaly::UsageWentBackwards)
    );
}

#[test]
fn anthropic_output_comes_from_the_last_message_delta() {
    let start = "event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n";
    let delta = |n: u32| {
        format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{n}}}}}\n\n")
    };
    let stream = format!("{start}{}{}", delta(7), delta(12));
    assert_eq!(
        outcome(Api::AnthropicMessages, &stream),
        UsageOutcome::Reported(usage(14, 12, 4, 0))
    );
    // message_start alone: its output count is a placeholder.
    assert_eq!(
        outcome(Api::AnthropicMessages, start),
        UsageOutcome::Estimated {
            reason: EstimateReason::NoUsage,
            delivered_chars: 0
        }
    );
    // A delta without a start must name the input.
    assert_eq!(
        anomaly(Api::AnthropicMessages, &delta(3)),
        Some(Anomaly::UsageIncomplete)
    );
    let full = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}\n\n";
    assert_eq!(
        outcome(Api::AnthropicMessages, full),
        UsageOutcome::Reported(usage(3, 4, 0, 0))
    );
    // A delta's input counts override the start's.
    let more = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":11,\"output_tokens\":4}}\n\n";
    let stream = format!("{start}{more}");
    assert_eq!(
        outcome(Api::AnthropicMessages, &stream),
        UsageOutcome::Reported(usage(15, 4, 4, 0))
    );
}

#[test]
fn malformed_streams_are_anomalies() {
    let cases = [
        (
            Api::OpenAiChat,
            "data: {\"choices\":[\n\n",
            Anomaly::InvalidJson,
        ),
        (Api::OpenAiChat, "data: hello\n\n", Anomaly::InvalidJson),
        (
            Api::OpenAiChat,
            "data: {\"choices\":{}}\n\n",
            Anomaly::UnexpectedJson,
        ),
        (
            Api::OpenAiResponses,
            "data: 42\n\n",
            Anomaly::UnexpectedJson,
        ),
        (
            Api::AnthropicMessages,
            "event: ping\ndata: {\"type\":\n\n",
            Anomaly::InvalidJson,
        ),
        (
            Api::GeminiGenerate,
            "data: {\"candidates\":\"x\"}\n\n",
            Anomaly::UnexpectedJson,
        ),
        (
            Api::OpenAiChat,
            "  \n{\"choices\":[],\"usage\":{}}",
            Anomaly::NotSse,
        ),
        (
            Api::GeminiGenerate,
            "[{\"usageMetadata\":{}}]",
            Anomaly::NotSse,
        ),
    ];
    for (api, stream, expected) in cases {
        assert_eq!(anomaly(api, stream), Some(expected), "{api:?} {stream:?}");
    }
}

#[test]
fn an_answer_that_is_not_sse_counts_its_bytes_as_delivered() {
    let body = "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}";
    let padded = format!("\n {body}");
    for at in 0..=padded.len() {
        let (a, b) = padded.as_bytes().split_at(at);
        let (outcome, chars) = meter(Api::OpenAiChat, &[a, b]);
        assert_eq!(chars, body.len() as u64, "split at {at}");
        assert_eq!(
            outcome,
            UsageOutcome::Estimated {
                reason: EstimateReason::Anomaly(Anomaly::NotSse),
                delivered_chars: body.len() as u64
            }
        );
    }
}

#[test]
fn an_event_dropped_after_the_usage_makes_it_unbelievable() {
    let usage_chunk =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
    let long = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(200)
    );
    let mut before = StreamMeter::with_max_line(Api::OpenAiChat, 128);
    before.feed(long.as_bytes());
    before.feed(usage_chunk.as_bytes());
    assert_eq!(before.finish(), UsageOutcome::Reported(usage(1, 1, 0, 0)));
    assert_eq!(before.parser().skipped_lines(), 1);
    let mut after = StreamMeter::with_max_line(Api::OpenAiChat, 128);
    after.feed(format!("{usage_chunk}{long}").as_bytes());
    assert_eq!(
        after.finish(),
        UsageOutcome::Estimated {
            reason: EstimateReason::Anomaly(Anomaly::EventDropped),
            delivered_chars: 0
        }
    );
}

#[test]
fn a_meter_holds_bounded_memory_whatever_the_stream() {
    let mut meter = StreamMeter::new(Api::OpenAiChat);
    let junk = vec![b'd'; 1 << 20];
    for _ in 0..4 {
        meter.feed(&junk);
        meter.feed(b"\n\n");
    }
    assert!(meter.parser().held_bytes() <= 2 * DEFAULT_MAX_LINE + crate::llm::sse::MAX_EVENT_NAME);
    assert_eq!(meter.parser().skipped_lines(), 4);
}

#[test]
fn embeddings_streams_report_nothing() {
    let (outcome, chars) = meter(Api::OpenAiEmbeddings, &[CHAT_SSE]);
    assert_eq!(chars, 0);
    assert_eq!(outcome.source(), UsageSource::Estimated);
}

#[test]
fn responses_text_is_counted_from_text_deltas_only() {
    let stream = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abc\"}\n\n\
        event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{}\"}\n\n\
        event: response.audio.delta\ndata: {\"type\":\"response.audio.delta\",\"delta\":\"QUJDRA==\"}\n\n\
        event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}}\n\n";
    assert_eq!(
        meter(Api::OpenAiResponses, &[stream.as_bytes()]),
        (UsageOutcome::Reported(usage(2, 3, 0, 0)), 5)
    );
    // A usage on an event that does not end the response is not the total.
    let early = "data: {\"type\":\"response.in_progress\",\"response\":{\"usage\":{\"input_tokens\":2,\"output_tokens\":3}}}\n\n";
    assert_eq!(
        outcome(Api::OpenAiResponses, early).source(),
        UsageSource::Estimated
    );
}

#[test]
fn the_usage_only_chunk_is_recognized() {
    assert!(is_usage_only_chunk(
        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#
    ));
    assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":null}"#));
    assert!(!is_usage_only_chunk(
        r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#
    ));
    assert!(!is_usage_only_chunk(r#"{"usage":{"prompt_tokens":1}}"#));
    assert!(!is_usage_only_chunk(r#"{"choices":{},"usage":{}}"#));
    assert!(!is_usage_only_chunk(r#"{"choices":[],"usage":1}"#));
    assert!(!is_usage_only_chunk("[DONE]"));
    assert!(is_usage_only_chunk(br#"{"choices":[],"usage":{}}"#));
    let chunks: Vec<&str> = std::str::from_utf8(CHAT_SSE)
        .unwrap()
        .split("\n\n")
        .collect();
    let last = chunks[chunks.len() - 3];
    assert!(is_usage_only_chunk(last.strip_prefix("data: ").unwrap()));
}

#[test]
fn each_recorded_body_reads_its_usage_and_text() {
    let bodies: [(Api, &[u8], TokenUsage, u64); 5] = [
        (
            Api::OpenAiChat,
            include_bytes!("../testdata/openai_chat.json"),
            usage(1117, 46, 1024, 0),
            17,
        ),
        (
            Api::OpenAiResponses,
            include_bytes!("../testdata/openai_responses.json"),
            usage(37, 140, 12, 128),
            60,
        ),
        (
            Api::OpenAiEmbeddings,
            include_bytes!("../testdata/openai_embeddings.json"),
            usage(8, 0, 0, 0),
            0,
        ),
        (
            Api::AnthropicMessages,
            include_bytes!("../testdata/anthropic_messages.json"),
            usage(3595, 503, 1500, 0),
            11,
        ),
        (
            Api::GeminiGenerate,
            include_bytes!("../testdata/gemini_generate.json"),
            usage(8, 25, 0, 20),
            13,
        ),
    ];
    for (api, body, tokens, chars) in bodies {
        let reading = read_body(api, body);
        assert_eq!(reading.usage, Ok(Some(tokens)), "{api:?}");
        assert_eq!(reading.delivered_chars, chars, "{api:?}");
        assert_eq!(usage_from_body(api, body), Ok(Some(tokens)));
    }
}

#[test]
fn error_bodies_have_no_usage() {
    let bodies = [
        (
            Api::OpenAiChat,
            r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}"#,
        ),
        (
            Api::OpenAiResponses,
            r#"{"error":{"message":"m","type":"server_error","param":null,"code":"x"}}"#,
        ),
        (
            Api::OpenAiEmbeddings,
            r#"{"error":{"message":"m","type":"t","param":null,"code":null}}"#,
        ),
        (
            Api::AnthropicMessages,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        (
            Api::GeminiGenerate,
            r#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED","details":[]}}"#,
        ),
    ];
    for (api, body) in bodies {
        assert_eq!(usage_from_body(api, body.as_bytes()), Ok(None), "{api:?}");
    }
}

#[test]
fn bad_bodies_are_anomalies() {
    let cases = [
        (Api::OpenAiChat, "{\"usage\":", Anomaly::InvalidJson),
        (Api::OpenAiChat, "", Anomaly::InvalidJson),
        (Api::OpenAiChat, "{} trailing", Anomaly::InvalidJson),
        (Api::OpenAiResponses, "\"text\"", Anomaly::UnexpectedJson),
        (
            Api::OpenAiEmbeddings,
            r#"{"usage":{"total_tokens":3}}"#,
            Anomaly::UsageIncomplete,
        ),
        (
            Api::AnthropicMessages,
            r#"{"usage":{"input_tokens":1,"output_tokens":0.5}}"#,
            Anomaly::UsageNotInteger,
        ),
        (
            Api::AnthropicMessages,
            r#"{"usage":{"input_tokens":1073741824,"cache_read_input_tokens":1,"output_tokens":0}}"#,
            Anomaly::UsageTooLarge,
        ),
        (
            Api::GeminiGenerate,
            r#"{"usageMetadata":{"candidatesTokenCount":1073741824,"thoughtsTokenCount":1}}"#,
            Anomaly::UsageTooLarge,
        ),
        (
            Api::GeminiGenerate,
            r#"{"usageMetadata":{"promptTokenCount":1,"cachedContentTokenCount":2}}"#,
            Anomaly::UsageInconsistent,
        ),
        (
            Api::GeminiGenerate,
            r#"[{"usageMetadata":{"promptTokenCount":3}},{"usageMetadata":{"promptTokenCount":2}}]"#,
            Anomaly::UsageWentBackwards,
        ),
    ];
    for (api, body, expected) in cases {
        assert_eq!(
            usage_from_body(api, body.as_bytes()),
            Err(expected),
            "{api:?} {body}"
        );
    }
}

#[test]
fn a_gemini_list_of_answers_adds_texts_and_keeps_the_last_usage() {
    let body = r#"[{"candidates":[{"content":{"parts":[{"text":"ab"}]}}],"usageMetadata":{"promptTokenCount":3}},
        {"candidates":[{"content":{"parts":[{"text":"cdé"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}]"#;
    let reading = read_body(Api::GeminiGenerate, body.as_bytes());
    assert_eq!(reading.usage, Ok(Some(usage(3, 2, 0, 0))));
    assert_eq!(reading.delivered_chars, 5);
}

#[test]
fn anomaly_and_estimate_reasons_have_names() {
    assert_eq!(EstimateReason::NoUsage.reason(), "no_usage");
    assert_eq!(EstimateReason::Anomaly(Anomaly::NotSse).reason(), "not_sse");
    assert_eq!(Anomaly::UsageWentBackwards.reason(), "usage_went_backwards");
}
