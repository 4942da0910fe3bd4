use super::*;

const GEMINI_PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

fn ok(api: Api, body: &str) -> LlmRequest {
    parse(api, GEMINI_PATH, body.as_bytes()).unwrap()
}

fn refused(api: Api, body: &str) -> InvalidRequest {
    parse(api, GEMINI_PATH, body.as_bytes()).unwrap_err()
}

fn fault(field: &'static str, fault: Fault) -> InvalidRequest {
    InvalidRequest { field, fault }
}

#[test]
fn an_openai_chat_stream_is_read_with_its_cap_and_usage_option() {
    let request = ok(
        Api::OpenAiChat,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
            "stream":true,"max_tokens":50,"stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(
        request,
        LlmRequest {
            api: Api::OpenAiChat,
            model: "gpt-4o".into(),
            stream: true,
            max_output_tokens: Some(50),
            include_usage: true,
        }
    );
    assert!(!request.needs_include_usage());
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let request = ok(
        Api::OpenAiChat,
        r#"{"model":"m","max_tokens":50,"max_completion_tokens":70}"#,
    );
    assert_eq!(request.max_output_tokens, Some(70));
    assert!(!request.stream);
    assert!(!request.needs_include_usage());
}

#[test]
fn a_chat_stream_without_usage_needs_it_added() {
    for body in [
        r#"{"model":"m","stream":true}"#,
        r#"{"model":"m","stream":true,"stream_options":{}}"#,
        r#"{"model":"m","stream":true,"stream_options":null}"#,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
    ] {
        let request = ok(Api::OpenAiChat, body);
        assert!(!request.include_usage, "{body}");
        assert!(request.needs_include_usage(), "{body}");
    }
}

#[test]
fn responses_and_anthropic_read_their_caps() {
    let responses = ok(
        Api::OpenAiResponses,
        r#"{"model":"gpt-4.1","input":"hi","stream":true,"max_output_tokens":900,"max_tokens":"x"}"#,
    );
    assert_eq!(responses.max_output_tokens, Some(900));
    assert!(responses.stream);
    let messages = ok(
        Api::AnthropicMessages,
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[],"stream":false}"#,
    );
    assert_eq!(messages.max_output_tokens, Some(1024));
    assert!(!messages.stream);
    assert!(!messages.needs_include_usage());
    // Anthropic requires max_tokens; the provider says so, not the gateway.
    assert_eq!(
        ok(Api::AnthropicMessages, r#"{"model":"c"}"#).max_output_tokens,
        None
    );
}

#[test]
fn embeddings_never_stream_but_a_stream_must_still_be_a_boolean() {
    let request = ok(
        Api::OpenAiEmbeddings,
        r#"{"model":"text-embedding-3-small","input":"x","stream":true,"max_tokens":-1}"#,
    );
    assert!(!request.stream);
    assert_eq!(request.max_output_tokens, None);
    assert_eq!(
        refused(Api::OpenAiEmbeddings, r#"{"model":"e","stream":"yes"}"#),
        fault("stream", Fault::NotBoolean)
    );
}

#[test]
fn gemini_reads_the_model_and_the_stream_from_the_path() {
    let body = br#"{"contents":[],"generationConfig":{"temperature":0.2,"maxOutputTokens":256},"stream":"ignored"}"#;
    let plain = parse(Api::GeminiGenerate, GEMINI_PATH, body).unwrap();
    assert_eq!(plain.model, "gemini-2.0-flash");
    assert!(!plain.stream);
    assert_eq!(plain.max_output_tokens, Some(256));
    let streamed = parse(
        Api::GeminiGenerate,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        br#"{"generation_config":{"max_output_tokens":8}}"#,
    )
    .unwrap();
    assert_eq!(streamed.model, "gemini-2.5-pro");
    assert!(streamed.stream);
    assert_eq!(streamed.max_output_tokens, Some(8));
    assert_eq!(
        parse(Api::GeminiGenerate, GEMINI_PATH, b"{}")
            .unwrap()
            .max_output_tokens,
        None
    );
}

#[test]
fn a_gemini_path_without_a_model_or_with_another_method_is_refused() {
    for path in [
        "/v1beta/models/:generateContent",
        "/v1beta/models/gemini-pro:countTokens",
        "/v1beta/models/gemini-pro",
        "/v1beta/models/gemini-pro:generateContentX",
        "/v1beta/tunedModels/x:generateContent",
        "/v1beta/models/a/b:generateContent",
        "",
    ] {
        assert_eq!(
            parse(Api::GeminiGenerate, path, b"{}").unwrap_err(),
            fault("path", Fault::NotGeminiPath),
            "{path}"
        );
    }
    let long = format!(
        "/v1/models/{}:generateContent",
        "g".repeat(MAX_MODEL_LEN + 1)
    );
    assert_eq!(
        parse(Api::GeminiGenerate, &long, b"{}").unwrap_err(),
        fault("model", Fault::TooLong)
    );
}

#[test]
fn a_body_that_is_not_one_json_object_is_refused() {
    for body in [
        "",
        "not json",
        "[]",
        "null",
        "\"s\"",
        "1",
        "{\"model\":\"m\"} {}",
        "{\"model\":",
    ] {
        assert_eq!(
            refused(Api::OpenAiChat, body),
            fault("body", Fault::NotObject),
            "{body:?}"
        );
    }
    assert_eq!(
        refused(Api::GeminiGenerate, "[{}]"),
        fault("body", Fault::NotObject)
    );
}

#[test]
fn the_model_must_be_a_present_non_empty_bounded_string() {
    let cases = [
        (r#"{}"#, Fault::Missing),
        (r#"{"model":null}"#, Fault::Missing),
        (r#"{"model":5}"#, Fault::NotString),
        (r#"{"model":["m"]}"#, Fault::NotString),
        (r#"{"model":""}"#, Fault::Empty),
    ];
    for api in [
        Api::OpenAiChat,
        Api::OpenAiResponses,
        Api::OpenAiEmbeddings,
        Api::AnthropicMessages,
    ] {
        for (body, why) in cases {
            assert_eq!(refused(api, body), fault("model", why), "{api:?} {body}");
        }
    }
    let longest = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_LEN));
    assert_eq!(ok(Api::OpenAiChat, &longest).model.len(), MAX_MODEL_LEN);
    let too_long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_LEN + 1));
    assert_eq!(
        refused(Api::OpenAiChat, &too_long),
        fault("model", Fault::TooLong)
    );
}

#[test]
fn stream_and_include_usage_must_be_booleans() {
    for body in [
        r#"{"model":"m","stream":"true"}"#,
        r#"{"model":"m","stream":1}"#,
    ] {
        assert_eq!(
            refused(Api::OpenAiChat, body),
            fault("stream", Fault::NotBoolean)
        );
        assert_eq!(
            refused(Api::AnthropicMessages, body),
            fault("stream", Fault::NotBoolean)
        );
    }
    assert_eq!(
        refused(Api::OpenAiChat, r#"{"model":"m","stream_options":true}"#),
        fault("stream_options", Fault::NotObject)
    );
    assert_eq!(
        refused(Api::OpenAiChat, r#"{"model":"m","stream_options":[]}"#),
        fault("stream_options", Fault::NotObject)
    );
    assert_eq!(
        refused(
            Api::OpenAiChat,
            r#"{"model":"m","stream_options":{"include_usage":"yes"}}"#
        ),
        fault("stream_options.include_usage", Fault::NotBoolean)
    );
}

#[test]
fn a_cap_must_be_an_integer_from_one_to_the_maximum() {
    let max = MAX_OUTPUT_CAP.to_string();
    let over = (MAX_OUTPUT_CAP + 1).to_string();
    for bad in [
        "-1",
        "0",
        "10.5",
        "10.0",
        "1e3",
        "\"10\"",
        "true",
        "[1]",
        "{}",
        &over,
        "18446744073709551616",
    ] {
        let body = format!(r#"{{"model":"m","max_tokens":{bad}}}"#);
        assert_eq!(
            refused(Api::AnthropicMessages, &body),
            fault("max_tokens", Fault::NotCap),
            "{bad}"
        );
        let body = format!(r#"{{"model":"m","max_completion_tokens":{bad},"max_tokens":5}}"#);
        assert_eq!(
            refused(Api::OpenAiChat, &body),
            fault("max_completion_tokens", Fault::NotCap),
            "{bad}"
        );
        let body = format!(r#"{{"model":"m","max_tokens":{bad}}}"#);
        assert_eq!(
            refused(Api::OpenAiChat, &body),
            fault("max_tokens", Fault::NotCap),
            "{bad}"
        );
        let body = format!(r#"{{"generationConfig":{{"maxOutputTokens":{bad}}}}}"#);
        assert_eq!(
            refused(Api::GeminiGenerate, &body),
            fault("generationConfig.maxOutputTokens", Fault::NotCap),
            "{bad}"
        );
    }
    let body = format!(r#"{{"model":"m","max_output_tokens":{max}}}"#);
    assert_eq!(
        ok(Api::OpenAiResponses, &body).max_output_tokens,
        Some(MAX_OUTPUT_CAP)
    );
    assert_eq!(
        ok(Api::OpenAiChat, r#"{"model":"m","max_tokens":null}"#).max_output_tokens,
        None
    );
    assert_eq!(
        refused(Api::GeminiGenerate, r#"{"generationConfig":7}"#),
        fault("generationConfig", Fault::NotObject)
    );
}

#[test]
fn a_member_the_gateway_reads_may_appear_once_under_any_spelling() {
    let cases = [
        (Api::OpenAiChat, r#"{"model":"a","model":"b"}"#, "model"),
        (
            Api::AnthropicMessages,
            r#"{"model":"a","max_tokens":9,"max_tokens":99999}"#,
            "max_tokens",
        ),
        (
            Api::OpenAiChat,
            r#"{"model":"a","stream":true,"str\u0065am":false}"#,
            "stream",
        ),
        (
            Api::OpenAiChat,
            r#"{"model":"a","stream_options":{"include_usage":false,"include_usage":true}}"#,
            "stream_options.include_usage",
        ),
        (
            Api::GeminiGenerate,
            r#"{"generationConfig":{"maxOutputTokens":9,"max_output_tokens":99999}}"#,
            "generationConfig.maxOutputTokens",
        ),
        (
            Api::GeminiGenerate,
            r#"{"generationConfig":{},"generation_config":{}}"#,
            "generationConfig",
        ),
    ];
    for (api, body, field) in cases {
        assert_eq!(refused(api, body), fault(field, Fault::Repeated), "{body}");
    }
    // Members the gateway does not read may repeat: the provider judges them.
    let request = ok(
        Api::OpenAiChat,
        r#"{"model":"a","n":1,"n":2,"messages":[],"messages":[]}"#,
    );
    assert_eq!(request.model, "a");
}

#[test]
fn every_message_names_its_member() {
    assert_eq!(
        fault("stream", Fault::NotBoolean).message(),
        "`stream` must be a boolean"
    );
    assert_eq!(
        fault("generationConfig.maxOutputTokens", Fault::NotCap).message(),
        "`generationConfig.maxOutputTokens` must be an integer from 1 to 1048576"
    );
    assert_eq!(
        fault("model", Fault::TooLong).message(),
        format!("`model` must be at most {MAX_MODEL_LEN} bytes")
    );
    assert_eq!(
        fault("body", Fault::NotObject).message(),
        "the request body must be a JSON object"
    );
    assert!(fault("path", Fault::NotGeminiPath)
        .message()
        .contains(":streamGenerateContent"));
}
