//! The forwarded body of an LLM call without an output cap, made to carry
//! one: a key with a token quota reserves the call's output cap at
//! admission, so the provider must honour a cap the gateway knows.
//!
//! Where the cap goes, per API (`request` reads it from the same place):
//! OpenAI chat `max_completion_tokens`, OpenAI responses
//! `max_output_tokens`, Anthropic `max_tokens`, Gemini
//! `generationConfig.maxOutputTokens`. A top-level member that is present
//! as `null` (which the gateway reads as absent) gets the value in place;
//! an absent one is inserted right after the body's opening `{`, so
//! nothing else moves. Gemini's `generationConfig` (or
//! `generation_config`) is rewritten with the cap in it, its other members
//! kept.
//!
//! The body is one that `request::parse` accepted with no cap. Anything
//! else gives `None` (nothing to change), never a panic.

use serde_json::{Map, Value};
use tollgate_wire::Api;

use super::top_level::scan;

/// The body to forward with output cap `cap`, or `None` for an API that
/// has no output (embeddings) or a body that is not as expected.
pub fn with_output_cap(api: Api, body: &[u8], cap: u64) -> Option<Vec<u8>> {
    match api {
        Api::OpenAiChat => top_level(body, &["max_completion_tokens", "max_tokens"], cap),
        Api::OpenAiResponses => top_level(body, &["max_output_tokens"], cap),
        Api::AnthropicMessages => top_level(body, &["max_tokens"], cap),
        Api::GeminiGenerate => gemini(body, cap),
        Api::OpenAiEmbeddings => None,
    }
}

/// Sets the first of `names` that is present (as `null`) to `cap`, or
/// inserts the first.
fn top_level(body: &[u8], names: &[&str], cap: u64) -> Option<Vec<u8>> {
    let object = scan(body, names)?;
    let value = cap.to_string();
    match object.found.iter().flatten().next() {
        Some(span) => splice(body, span.start, span.end, value.as_bytes()),
        None => {
            let member = format!("\"{}\":{value}", names.first()?);
            insert(body, object.open, object.empty, member.as_bytes())
        }
    }
}

fn gemini(body: &[u8], cap: u64) -> Option<Vec<u8>> {
    const NAMES: [&str; 2] = ["generationConfig", "generation_config"];
    let object = scan(body, &NAMES)?;
    let Some(span) = object.found.iter().flatten().next() else {
        let member = format!("\"generationConfig\":{{\"maxOutputTokens\":{cap}}}");
        return insert(body, object.open, object.empty, member.as_bytes());
    };
    let mut config = match serde_json::from_slice(body.get(span.clone())?).ok()? {
        Value::Object(config) => config,
        Value::Null => Map::new(),
        _ => return None,
    };
    // Absent or null under either spelling, as the request had no cap.
    config.remove("max_output_tokens");
    config.insert("maxOutputTokens".into(), Value::from(cap));
    let value = serde_json::to_vec(&config).ok()?;
    splice(body, span.start, span.end, &value)
}

/// `body` with `member` inserted at `open` (just after the top-level `{`).
fn insert(body: &[u8], open: usize, empty: bool, member: &[u8]) -> Option<Vec<u8>> {
    let separator: &[u8] = if empty { b"" } else { b"," };
    let (head, tail) = (body.get(..open)?, body.get(open..)?);
    Some([head, member, separator, tail].concat())
}

/// `body` with bytes `start..end` replaced by `value`.
fn splice(body: &[u8], start: usize, end: usize, value: &[u8]) -> Option<Vec<u8>> {
    Some([body.get(..start)?, value, body.get(end..)?].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::request::parse;

    const GEMINI_PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

    /// The rewritten body reads back with the cap, and keeps the model.
    fn capped(api: Api, body: &str) -> String {
        let out = with_output_cap(api, body.as_bytes(), 77).expect("a change");
        let text = String::from_utf8(out).unwrap();
        let request = parse(api, GEMINI_PATH, text.as_bytes()).unwrap();
        assert_eq!(request.max_output_tokens, Some(77), "{text}");
        text
    }

    #[test]
    fn each_api_gets_its_own_member_inserted_first() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            capped(Api::OpenAiChat, body),
            r#"{"max_completion_tokens":77,"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        );
        let body = r#"{"model":"m","input":"hi"}"#;
        assert!(capped(Api::OpenAiResponses, body).starts_with(r#"{"max_output_tokens":77,"#));
        let body = r#"{"model":"m","messages":[]}"#;
        assert!(capped(Api::AnthropicMessages, body).starts_with(r#"{"max_tokens":77,"#));
        let body = r#"{"contents":[]}"#;
        assert_eq!(
            capped(Api::GeminiGenerate, body),
            r#"{"generationConfig":{"maxOutputTokens":77},"contents":[]}"#
        );
        assert_eq!(with_output_cap(Api::OpenAiEmbeddings, b"{}", 77), None);
    }

    #[test]
    fn a_null_member_gets_the_cap_in_place() {
        let body = r#"{"model":"m", "max_tokens": null ,"messages":[]}"#;
        assert_eq!(
            capped(Api::OpenAiChat, body),
            r#"{"model":"m", "max_tokens": 77 ,"messages":[]}"#
        );
    }

    #[test]
    fn gemini_keeps_the_rest_of_its_generation_config() {
        for body in [
            r#"{"contents":[],"generationConfig":{"temperature":0.5}}"#,
            r#"{"contents":[],"generation_config":{"temperature":0.5,"max_output_tokens":null}}"#,
            r#"{"contents":[],"generationConfig":null}"#,
        ] {
            let text = capped(Api::GeminiGenerate, body);
            assert!(text.starts_with(r#"{"contents":[],"gen"#), "{text}");
            if body.contains("temperature") {
                assert!(text.contains(r#""temperature":0.5"#), "{text}");
            }
            assert!(!text.contains("max_output_tokens"), "{text}");
        }
    }

    #[test]
    fn an_empty_object_takes_the_member_without_a_comma() {
        assert_eq!(
            with_output_cap(Api::AnthropicMessages, b"{ }", 5).unwrap(),
            br#"{"max_tokens":5 }"#
        );
        assert_eq!(with_output_cap(Api::AnthropicMessages, b"[1]", 5), None);
    }
}
