//! What a request must carry: the internal and admin token guards, and a JSON
//! body reader whose errors name the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tollgate_wire::INTERNAL_TOKEN_HEADER;

use crate::app::AppState;
use crate::error::ApiError;

/// Largest request body the API reads (a full usage batch is far below this).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Compares two secrets in time that depends on neither their content nor
/// their lengths: both are hashed first, and the digests compared without
/// early exit.
pub fn secrets_match(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
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
            Some(_) => Err(ApiError::unauthorized(format!(
                "the {INTERNAL_TOKEN_HEADER} header does not match"
            ))),
            None => Err(ApiError::unauthorized(format!(
                "the {INTERNAL_TOKEN_HEADER} header is missing"
            ))),
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
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin_api_disabled",
                "the admin API is disabled: start the sidecar with --admin-token \
                 (or TOLLGATE_ADMIN_TOKEN) to enable it",
            ));
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
            Some(_) => Err(ApiError::unauthorized(
                "the admin bearer token does not match",
            )),
            None => Err(ApiError::unauthorized(
                "an admin bearer token is required: Authorization: Bearer <token>",
            )),
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
                ApiError::body_too_large(MAX_BODY_BYTES)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    rejection.body_text(),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON, turning serde's complaint into a 400 that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut reader);
    let value = match parsed {
        Ok(value) => value,
        Err(e) => {
            let inner = e.inner();
            let mut field = e.path().to_string();
            if let Some(missing) = inner
                .to_string()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                field = if field == "." {
                    missing.to_string()
                } else {
                    format!("{field}.{missing}")
                };
            }
            let code = if inner.is_syntax() || inner.is_eof() {
                "malformed_json"
            } else {
                "invalid_request"
            };
            let mut error = ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("the request body is not valid: {inner}"),
            );
            if field != "." {
                error.field = Some(field);
            }
            return Err(error);
        }
    };
    reader.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body has trailing data: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::UsageRecord;

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
        assert_eq!(err.field.as_deref(), Some("[0].api_key_id"));
        assert_eq!(err.code, "invalid_request");

        let missing = br#"[{"request_id":"a"}]"#;
        let err = parse_json::<Vec<UsageRecord>>(missing).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("[0].api_key_id"));

        let err = parse_json::<Vec<UsageRecord>>(b"[{").unwrap_err();
        assert_eq!(err.code, "malformed_json");
        let err = parse_json::<Vec<UsageRecord>>(b"[] []").unwrap_err();
        assert_eq!(err.code, "malformed_json");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
