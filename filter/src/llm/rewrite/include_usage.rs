//! The forwarded body of an OpenAI chat stream, made to ask for usage.
//!
//! The client's bytes stay as they are wherever possible. Without a
//! `stream_options` member (the usual case), `"stream_options":
//! {"include_usage":true}` is inserted right after the body's opening `{`;
//! nothing else moves. With one, only that member's value is rewritten (its
//! other members are kept, in key order). The result has exactly one
//! `stream_options` member, found by its unescaped name.
//!
//! The body is one that `request::parse` accepted: a single JSON object
//! whose `stream_options`, if any, appears once and is an object or
//! `null`. Anything else gives `None` (nothing to change), never a panic.

use serde_json::{Map, Value};

use super::top_level::scan;

const STREAM_OPTIONS: &str = "stream_options";
const INSERTED: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// The body to forward with `stream_options.include_usage: true`, or
/// `None` when it already asks (or is not an object the gateway accepted).
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let object = scan(body, &[STREAM_OPTIONS])?;
    match object.found.first().cloned().flatten() {
        None => {
            let (head, tail) = (body.get(..object.open)?, body.get(object.open..)?);
            let separator: &[u8] = if object.empty { b"" } else { b"," };
            Some([head, INSERTED, separator, tail].concat())
        }
        Some(span) => {
            let mut options = match serde_json::from_slice(body.get(span.clone())?).ok()? {
                Value::Object(options) => options,
                Value::Null => Map::new(),
                _ => return None,
            };
            if options.get("include_usage") == Some(&Value::Bool(true)) {
                return None;
            }
            options.insert("include_usage".to_string(), Value::Bool(true));
            let value = serde_json::to_vec(&options).ok()?;
            let (head, tail) = (body.get(..span.start)?, body.get(span.end..)?);
            Some([head, &value, tail].concat())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::request::parse;
    use tollgate_wire::llm::Api;

    /// The rewritten body: valid JSON, one `stream_options`, asking for usage.
    fn rewritten(body: &str) -> String {
        let out = with_include_usage(body.as_bytes()).expect("a change");
        let text = String::from_utf8(out).unwrap();
        let request = parse(Api::OpenAiChat, "", text.as_bytes()).unwrap();
        assert!(request.include_usage, "{text}");
        assert_eq!(text.matches("stream_options").count(), 1, "{text}");
        text
    }

    #[test]
    fn the_member_is_inserted_after_the_opening_brace() {
        assert_eq!(
            rewritten(r#"{"model":"m","stream":true}"#),
            r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#
        );
        let spaced = "  {\n  \"model\": \"m\",\n  \"stream\": true\n}\n";
        assert_eq!(
            rewritten(spaced),
            "  {\"stream_options\":{\"include_usage\":true},\n  \"model\": \"m\",\n  \"stream\": true\n}\n"
        );
        assert_eq!(
            with_include_usage(b"{ }").unwrap(),
            br#"{"stream_options":{"include_usage":true} }"#.to_vec()
        );
    }

    #[test]
    fn an_existing_stream_options_is_rewritten_in_place() {
        assert_eq!(
            rewritten(r#"{"model":"m","stream_options":{"include_usage":false},"stream":true}"#),
            r#"{"model":"m","stream_options":{"include_usage":true},"stream":true}"#
        );
        assert_eq!(
            rewritten(r#"{"model":"m", "stream_options" : null ,"stream":true}"#),
            r#"{"model":"m", "stream_options" : {"include_usage":true} ,"stream":true}"#
        );
        let kept = rewritten(
            r#"{"messages":[{"content":"a \"}\" {["}],"stream_options":{"x":[1,{"y":2}]},"model":"m"}"#,
        );
        assert_eq!(
            kept,
            r#"{"messages":[{"content":"a \"}\" {["}],"stream_options":{"include_usage":true,"x":[1,{"y":2}]},"model":"m"}"#
        );
        let escaped = with_include_usage(
            br#"{"model":"m","stream\u005foptions":{"include\u005fusage":false}}"#,
        );
        assert_eq!(
            escaped.as_deref(),
            Some(&br#"{"model":"m","stream\u005foptions":{"include_usage":true}}"#[..])
        );
    }

    #[test]
    fn a_body_that_already_asks_is_left_alone() {
        assert_eq!(
            with_include_usage(br#"{"model":"m","stream_options":{"include_usage":true}}"#),
            None
        );
        for garbage in [
            &b""[..],
            b"[]",
            b"{\"model\"",
            b"{\"a\":1 \"b\":2}",
            b"\"x\"",
        ] {
            assert_eq!(with_include_usage(garbage), None);
        }
    }

    #[test]
    fn a_string_that_mentions_stream_options_is_not_the_member() {
        let body = r#"{"messages":[{"content":"\"stream_options\":{}"}],"model":"m"}"#;
        let text = String::from_utf8(with_include_usage(body.as_bytes()).unwrap()).unwrap();
        assert!(text.starts_with(r#"{"stream_options":{"include_usage":true},"messages""#));
        assert!(
            parse(Api::OpenAiChat, "", text.as_bytes())
                .unwrap()
                .include_usage
        );
    }
}
