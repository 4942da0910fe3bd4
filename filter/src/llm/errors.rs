//! A refusal on an LLM route, in the error shape of the route's provider,
//! so that the provider's own SDK raises its usual exception for the
//! status with a readable message, while the contract's code stays where a
//! program finds it (OpenAI and Anthropic: `error.code`; Gemini: the
//! `ErrorInfo` detail's `reason`). The body is JSON
//! (`content-type: application/json`), the status the contract's.
//!
//! | provider | body (per the provider's API reference) |
//! | --- | --- |
//! | OpenAI | `{"error":{"message","type","param","code"},"request_id"}`; `param` is the member at fault or `null` |
//! | Anthropic | `{"type":"error","error":{"type","message","code"},"request_id"}` |
//! | Gemini | `{"error":{"code":<status>,"message","status","details":[ErrorInfo{reason,domain:"tollgate",metadata:{request_id}}, BadRequest{fieldViolations} when a member is at fault]}}` (`google.rpc.Status`) |
//!
//! `request_id` (Gemini: `metadata.request_id`) is left out when there is
//! none, as in the contract's own body. `reason` is the contract's code as
//! it is (`invalid_api_key`), not rewritten in upper case: the same string
//! a program reads on every route.
//!
//! The class of error is a function of the status (and, for OpenAI, of
//! the code):
//!
//! | status | OpenAI `type` | Anthropic `type` | Gemini `status` |
//! | --- | --- | --- | --- |
//! | 400 | `invalid_request_error` | `invalid_request_error` | `INVALID_ARGUMENT` |
//! | 401 | `authentication_error` | `authentication_error` | `UNAUTHENTICATED` |
//! | 403 | `permission_error` | `permission_error` | `PERMISSION_DENIED` |
//! | 404 | `invalid_request_error` | `not_found_error` | `NOT_FOUND` |
//! | 413 | `invalid_request_error` | `request_too_large` | `INVALID_ARGUMENT` |
//! | 429 | `rate_limit_error` (`insufficient_quota` for `quota_exceeded`) | `rate_limit_error` | `RESOURCE_EXHAUSTED` |
//! | 503 | `server_error` | `api_error` | `UNAVAILABLE` |
//! | 504 | `server_error` | `api_error` | `DEADLINE_EXCEEDED` |
//! | other 5xx | `server_error` | `api_error` | `INTERNAL` |
//! | other 4xx | `invalid_request_error` | `invalid_request_error` | `INVALID_ARGUMENT` |
//!
//! A 503 is `api_error`, not Anthropic's `overloaded_error`: that one
//! comes with its own status (529), and the gateway's 503 says its own
//! state store is unavailable, not that the model is busy.

use serde::Serialize;
use tollgate_wire::llm::Provider;
use tollgate_wire::Outcome;

/// The `domain` of a Gemini refusal's `ErrorInfo`.
pub const GEMINI_ERROR_DOMAIN: &str = "tollgate";

/// The JSON body of a refusal (`status`, the contract's `code`, text for a
/// person) on a route of `provider`; `field` names the member at fault.
pub fn error_body(
    provider: Provider,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
    field: Option<&str>,
) -> Vec<u8> {
    let class = error_class(provider, status, code);
    let body = match provider {
        Provider::OpenAi => serde_json::to_vec(&OpenAiBody {
            error: OpenAiError {
                message,
                class,
                param: field,
                code,
            },
            request_id,
        }),
        Provider::Anthropic => serde_json::to_vec(&AnthropicBody {
            kind: "error",
            error: AnthropicError {
                class,
                message,
                code,
            },
            request_id,
        }),
        Provider::Gemini => {
            let mut details = vec![Detail::ErrorInfo {
                kind: "type.googleapis.com/google.rpc.ErrorInfo",
                reason: code,
                domain: GEMINI_ERROR_DOMAIN,
                metadata: Metadata { request_id },
            }];
            if let Some(field) = field {
                details.push(Detail::BadRequest {
                    kind: "type.googleapis.com/google.rpc.BadRequest",
                    field_violations: [FieldViolation {
                        field,
                        description: message,
                    }],
                });
            }
            serde_json::to_vec(&GeminiBody {
                error: Status {
                    code: status,
                    message,
                    status: class,
                    details,
                },
            })
        }
    };
    // Serializing strings and numbers cannot fail; keep a JSON body anyway.
    body.unwrap_or_else(|_| br#"{"error":{}}"#.to_vec())
}

/// The provider's name for the class of a refusal: OpenAI's and
/// Anthropic's `error.type`, Gemini's `error.status` (the module's table).
pub fn error_class(provider: Provider, status: u16, code: &str) -> &'static str {
    match provider {
        Provider::OpenAi => match status {
            401 => "authentication_error",
            403 => "permission_error",
            429 if code == Outcome::QuotaExceeded.as_str() => "insufficient_quota",
            429 => "rate_limit_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        },
        Provider::Anthropic => match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        },
        Provider::Gemini => match status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            504 => "DEADLINE_EXCEEDED",
            500.. => "INTERNAL",
            _ => "INVALID_ARGUMENT",
        },
    }
}

fn no_request_id(request_id: &&str) -> bool {
    request_id.is_empty()
}

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
    #[serde(skip_serializing_if = "no_request_id")]
    request_id: &'a str,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    class: &'static str,
    param: Option<&'a str>,
    code: &'a str,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
    #[serde(skip_serializing_if = "no_request_id")]
    request_id: &'a str,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    class: &'static str,
    message: &'a str,
    code: &'a str,
}

#[derive(Serialize)]
struct GeminiBody<'a> {
    error: Status<'a>,
}

/// A `google.rpc.Status` as JSON.
#[derive(Serialize)]
struct Status<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
    details: Vec<Detail<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Detail<'a> {
    ErrorInfo {
        #[serde(rename = "@type")]
        kind: &'static str,
        reason: &'a str,
        domain: &'static str,
        metadata: Metadata<'a>,
    },
    BadRequest {
        #[serde(rename = "@type")]
        kind: &'static str,
        #[serde(rename = "fieldViolations")]
        field_violations: [FieldViolation<'a>; 1],
    },
}

#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(skip_serializing_if = "no_request_id")]
    request_id: &'a str,
}

#[derive(Serialize)]
struct FieldViolation<'a> {
    field: &'a str,
    description: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body(provider: Provider, status: u16, code: &str, field: Option<&str>) -> Value {
        let bytes = error_body(provider, status, code, "the message", "req-1", field);
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn openai_refusals_carry_type_param_and_the_contract_code() {
        assert_eq!(
            body(Provider::OpenAi, 400, "invalid_request", Some("stream")),
            json!({"error": {"message": "the message", "type": "invalid_request_error",
                   "param": "stream", "code": "invalid_request"}, "request_id": "req-1"})
        );
        let denied = body(Provider::OpenAi, 401, "invalid_api_key", None);
        assert_eq!(denied["error"]["type"], "authentication_error");
        assert_eq!(denied["error"]["param"], Value::Null);
        assert_eq!(denied["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn anthropic_refusals_are_typed_errors() {
        assert_eq!(
            body(Provider::Anthropic, 429, "rate_limited", Some("ignored")),
            json!({"type": "error", "error": {"type": "rate_limit_error",
                   "message": "the message", "code": "rate_limited"}, "request_id": "req-1"})
        );
        assert_eq!(
            body(Provider::Anthropic, 413, "payload_too_large", None)["error"]["type"],
            "request_too_large"
        );
    }

    #[test]
    fn gemini_refusals_are_rpc_statuses_with_error_info() {
        assert_eq!(
            body(Provider::Gemini, 403, "revoked_api_key", None),
            json!({"error": {"code": 403, "message": "the message", "status": "PERMISSION_DENIED",
                   "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "revoked_api_key", "domain": "tollgate",
                                "metadata": {"request_id": "req-1"}}]}})
        );
        let invalid = body(
            Provider::Gemini,
            400,
            "invalid_request",
            Some("generationConfig.maxOutputTokens"),
        );
        assert_eq!(invalid["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            invalid["error"]["details"][1],
            json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
                   "fieldViolations": [{"field": "generationConfig.maxOutputTokens",
                                        "description": "the message"}]})
        );
    }

    #[test]
    fn the_class_follows_the_table() {
        let table: &[(u16, &str, [&str; 3])] = &[
            (
                400,
                "invalid_request",
                [
                    "invalid_request_error",
                    "invalid_request_error",
                    "INVALID_ARGUMENT",
                ],
            ),
            (
                401,
                "missing_token",
                [
                    "authentication_error",
                    "authentication_error",
                    "UNAUTHENTICATED",
                ],
            ),
            (
                403,
                "expired_api_key",
                ["permission_error", "permission_error", "PERMISSION_DENIED"],
            ),
            (
                404,
                "not_found",
                ["invalid_request_error", "not_found_error", "NOT_FOUND"],
            ),
            (
                413,
                "payload_too_large",
                [
                    "invalid_request_error",
                    "request_too_large",
                    "INVALID_ARGUMENT",
                ],
            ),
            (
                429,
                "rate_limited",
                ["rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"],
            ),
            (
                429,
                "quota_exceeded",
                [
                    "insufficient_quota",
                    "rate_limit_error",
                    "RESOURCE_EXHAUSTED",
                ],
            ),
            (
                503,
                "auth_unavailable",
                ["server_error", "api_error", "UNAVAILABLE"],
            ),
            (
                504,
                "upstream_timeout",
                ["server_error", "api_error", "DEADLINE_EXCEEDED"],
            ),
            (500, "internal", ["server_error", "api_error", "INTERNAL"]),
            (
                408,
                "request_timeout",
                [
                    "invalid_request_error",
                    "invalid_request_error",
                    "INVALID_ARGUMENT",
                ],
            ),
        ];
        for (status, code, classes) in table {
            let providers = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];
            for (provider, class) in providers.into_iter().zip(classes) {
                assert_eq!(
                    error_class(provider, *status, code),
                    *class,
                    "{provider:?} {status}"
                );
            }
        }
    }

    #[test]
    fn messages_are_escaped_and_a_missing_request_id_is_left_out() {
        let message = "a \"quoted\"\nline\\ and \u{1} </script>";
        for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
            let bytes = error_body(provider, 400, "invalid_request", message, "", Some("a\"b"));
            let text = std::str::from_utf8(&bytes).unwrap();
            assert!(!text.contains('\n'), "{text}");
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(value["error"]["message"], message);
            assert!(value.get("request_id").is_none(), "{text}");
            assert!(!text.contains("request_id"), "{text}");
        }
    }
}
