//! What a request must carry: the internal and admin token guards, and a JSON
//! body reader whose errors name the field at fault.
//!
//! Bodies are read leniently where the wire says so: a field a type does not
//! know is ignored (a newer filter may send more), unless the type itself
//! refuses unknown fields (the admin API's).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tollgate_wire::{sha256, INTERNAL_TOKEN_HEADER};

use crate::http::error::{ApiError, Credential};
use crate::http::json_fault::fault_path;
use crate::http::AppState;

/// Largest request body the API reads (a full usage batch is far below this).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A query string's parameters in order, decoded (`+`, `%XX`; bytes that
/// are not UTF-8 replaced). Reading them never fails: each endpoint refuses
/// what it does not take with [`unknown_parameter`], naming it.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// 400 naming a query parameter the endpoint does not take; `takes` lists
/// those it does. An empty name is named `""`.
pub fn unknown_parameter(name: &str, takes: &str) -> ApiError {
    let field = if name.is_empty() { "\"\"" } else { name };
    ApiError::invalid_field(
        field,
        format!("unknown query parameter {name:?}; this endpoint takes {takes}"),
    )
}

/// 400 naming a query parameter given more than once.
pub fn repeated_parameter(name: &str) -> ApiError {
    ApiError::invalid_field(
        name,
        format!("the query parameter {name} is given more than once"),
    )
}

/// Compares two secrets in time that depends on neither their content nor
/// their lengths: both are hashed first, and the digests compared without
/// early exit.
pub fn secrets_match(presented: &[u8], expected: &[u8]) -> bool {
    let a = sha256(presented);
    let b = sha256(expected);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Proof that a request carries the internal token (the Envoy filter's secret).
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

impl FromRequestParts<AppState> for InternalCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts.headers.get(INTERNAL_TOKEN_HEADER) {
            Some(presented)
                if secrets_match(presented.as_bytes(), state.auth.internal_token.as_bytes()) =>
            {
                Ok(InternalCaller)
            }
            Some(_) => Err(ApiError::WrongCredential(Credential::InternalToken)),
            None => Err(ApiError::MissingCredential(Credential::InternalToken)),
        }
    }
}

/// Proof that a request carries the admin bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.auth.admin_token.as_deref() else {
            return Err(ApiError::AdminApiDisabled);
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match presented {
            Some(token) if secrets_match(token.as_bytes(), expected.as_bytes()) => Ok(AdminCaller),
            Some(_) => Err(ApiError::WrongCredential(Credential::AdminToken)),
            None => Err(ApiError::MissingCredential(Credential::AdminToken)),
        }
    }
}

/// A JSON request body, parsed with errors that name the field at fault
/// (`[3].status_code`) and a 413 when the body is over [`MAX_BODY_BYTES`].
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::Invalid {
                    field: None,
                    message: rejection.body_text(),
                }
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, turning serde's complaint into a 400 that names the field:
/// `malformed_json` when the body is not JSON, `invalid_request` when it is
/// JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut reader).map_err(|e| refused::<T>(bytes, &e))?;
    reader.end().map_err(|e| ApiError::MalformedJson {
        field: None,
        message: format!("the request body has trailing data: {e}"),
    })?;
    Ok(value)
}

/// The error for a body serde_json refused to read as a `T`.
fn refused<T: DeserializeOwned>(bytes: &[u8], error: &serde_json::Error) -> ApiError {
    let field = fault_path::<T>(bytes);
    let message = format!("the request body is not valid: {error}");
    if error.is_syntax() || error.is_eof() {
        ApiError::MalformedJson { field, message }
    } else {
        ApiError::Invalid { field, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorCode;
    use tollgate_wire::{UsageRecord, VerifyRequest};

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_match(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!secrets_match(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!secrets_match(b"", b"0123456789abcdef"));
    }

    #[test]
    fn json_errors_name_the_field() {
        let wrong_type = br#"[{"request_id":"a","api_key_id":"seven"}]"#;
        let err = parse_json::<Vec<UsageRecord>>(wrong_type).unwrap_err();
        assert_eq!(err.field(), Some("[0].api_key_id"));
        assert_eq!(err.code(), ErrorCode::InvalidRequest);

        let missing = br#"[{"request_id":"a"}]"#;
        let err = parse_json::<Vec<UsageRecord>>(missing).unwrap_err();
        assert_eq!(err.field(), Some("[0].api_key_id"));
        assert!(err.to_string().contains("missing field"), "{err}");

        let err = parse_json::<Vec<UsageRecord>>(b"[{").unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        let err = parse_json::<Vec<UsageRecord>>(b"[] []").unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_fields_are_ignored_unless_the_type_refuses_them() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Strict {
            #[allow(dead_code)]
            name: String,
        }
        let verify = parse_json::<VerifyRequest>(br#"{"key_hash":"ab","want_grant":true}"#);
        assert_eq!(verify.unwrap().key_hash, "ab");
        let err = parse_json::<Strict>(br#"{"name":"x","key":"k"}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
