//! The one error type of the HTTP API: every way a call can fail, and the one
//! place that turns each into a status, a stable code and a message, answered
//! as the contract's JSON error body.

use std::fmt;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tollgate_wire::{ErrorBody, ErrorDetail, INTERNAL_TOKEN_HEADER, MAX_USAGE_BATCH};

use crate::domain::sealed::{SealError, MASTER_KEY_ENV};
use crate::store::StoreError;

/// Marks a response caused by a database failure, so the metrics layer can count it.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseFailure;

/// The stable, machine-readable codes of the sidecar's API (`error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: the input is of the wrong shape or out of range.
    InvalidRequest,
    /// 400: the body is not JSON.
    MalformedJson,
    /// 401: the caller lacks the credential the endpoint requires.
    Unauthorized,
    /// 401: the admin API is off (no admin token configured).
    AdminApiDisabled,
    /// 401: a console data call without a live console session.
    SessionRequired,
    /// 403: a console action without its CSRF token, or from another origin.
    CsrfRefused,
    /// 403: a console request whose `Host` is not one of the console's
    /// origins (`--console-origin`).
    HostNotAllowed,
    /// 429: too many failed console logins from this client; `Retry-After`
    /// says when it may try again.
    LoginThrottled,
    /// 503: every console session is live and in use; `Retry-After` says
    /// when one may be pushed out.
    SessionsFull,
    /// 404: no route serves the path.
    NotFound,
    /// 404: no key has the id.
    KeyNotFound,
    /// 404: no team has the id.
    TeamNotFound,
    /// 409: the team still has keys (deleting it).
    TeamHasKeys,
    /// 409: budget alerts watch the team's budget (deleting it).
    TeamHasAlerts,
    /// 409: a team has the name already.
    DuplicateTeamName,
    /// 405: the route does not take the method.
    MethodNotAllowed,
    /// 409: a key with this value is already registered.
    DuplicateKey,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 413: the usage batch has too many records.
    BatchTooLarge,
    /// 503: the database cannot answer; the message says what was not done
    /// (nothing stored, or nothing read).
    DatabaseUnavailable,
    /// 503: a signing secret was asked for, but the sidecar has no master
    /// key to seal it with; nothing was stored.
    MasterKeyMissing,
    /// 503: the key's signing secret cannot be opened (or a new one sealed):
    /// the key cannot be verified until the master key that sealed it is
    /// configured.
    SigningSecretUnavailable,
    /// 503 (`/readyz` only): the sidecar is draining before it stops, and
    /// still serves every other route meanwhile.
    Draining,
    /// 500: the handler panicked (a bug, logged); the sidecar serves on.
    InternalError,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::AdminApiDisabled => "admin_api_disabled",
            ErrorCode::SessionRequired => "session_required",
            ErrorCode::CsrfRefused => "csrf_refused",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::LoginThrottled => "login_throttled",
            ErrorCode::SessionsFull => "sessions_full",
            ErrorCode::NotFound => "not_found",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::TeamNotFound => "team_not_found",
            ErrorCode::TeamHasKeys => "team_has_keys",
            ErrorCode::TeamHasAlerts => "team_has_alerts",
            ErrorCode::DuplicateTeamName => "duplicate_team_name",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::DuplicateKey => "duplicate_key",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::MasterKeyMissing => "master_key_missing",
            ErrorCode::SigningSecretUnavailable => "signing_secret_unavailable",
            ErrorCode::Draining => "draining",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The HTTP status answered with this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized | ErrorCode::AdminApiDisabled | ErrorCode::SessionRequired => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::CsrfRefused | ErrorCode::HostNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::LoginThrottled => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::SessionsFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotFound | ErrorCode::KeyNotFound | ErrorCode::TeamNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::DuplicateKey
            | ErrorCode::TeamHasKeys
            | ErrorCode::TeamHasAlerts
            | ErrorCode::DuplicateTeamName => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge | ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::DatabaseUnavailable
            | ErrorCode::MasterKeyMissing
            | ErrorCode::SigningSecretUnavailable
            | ErrorCode::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret an endpoint requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The internal token, in [`INTERNAL_TOKEN_HEADER`] (the Envoy filter).
    InternalToken,
    /// The admin bearer token, in `Authorization`.
    AdminToken,
}

/// What a call could not do because the database failed, so the 503 tells
/// the caller the truth: a write stored nothing, a read returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undone {
    /// Ingestion, key creation, revocation: nothing was stored.
    Store,
    /// `GET /v1/usage/summary`.
    ReadSummary,
    /// `GET /v1/usage/log`.
    ReadUsageLog,
    /// `GET /v1/keys/{id}/usage/series`.
    ReadSeries,
    /// `GET /v1/keys`.
    ReadKeys,
    /// `GET /v1/prices`.
    ReadPrices,
    /// `GET /v1/alerts`.
    ReadAlerts,
    /// `GET /v1/teams`, `GET /v1/teams/{id}`.
    ReadTeams,
    /// `GET /v1/keys/{id}/budgets`.
    ReadBudgets,
    /// Key verification.
    VerifyKey,
    /// `GET /readyz`.
    CheckReadiness,
    /// The key change feed.
    ReadFeed,
    /// A grant call: items before the failure may have been applied, and a
    /// retry with the same ids applies each once.
    Grants,
}

impl Undone {
    /// What did not happen, for the message.
    fn describe(self) -> &'static str {
        match self {
            Undone::Store => "nothing was stored",
            Undone::ReadSummary => "the usage summary could not be read",
            Undone::ReadUsageLog => "the usage log could not be read",
            Undone::ReadSeries => "the usage series could not be read",
            Undone::ReadKeys => "the key list could not be read",
            Undone::ReadPrices => "the prices could not be read",
            Undone::ReadAlerts => "the alerts could not be read",
            Undone::ReadTeams => "the teams could not be read",
            Undone::ReadBudgets => "the budgets could not be read",
            Undone::VerifyKey => "the key could not be looked up",
            Undone::CheckReadiness => "the sidecar is not ready",
            Undone::ReadFeed => "the key change feed could not be read",
            Undone::Grants => "the grant call was not completed; retry it with the same ids",
        }
    }
}

/// Why an HTTP call failed. Its `Display` is the message for a person.
#[derive(Debug)]
pub enum ApiError {
    /// The input is of the wrong shape or out of range; `field` names the
    /// input at fault when one is (`[3].status_code`, `expires_at`).
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// The body is not JSON, or has data after the JSON value.
    MalformedJson {
        field: Option<String>,
        message: String,
    },
    /// The credential is missing.
    MissingCredential(Credential),
    /// The credential does not match.
    WrongCredential(Credential),
    /// The admin API is disabled.
    AdminApiDisabled,
    /// A console data call without a live console session (none, expired,
    /// or logged out).
    SessionRequired,
    /// A console action refused before it ran: `why` names the missing or
    /// wrong CSRF token or origin.
    CsrfRefused(&'static str),
    /// A console request sent to a host the console does not answer at.
    HostNotAllowed,
    /// A console login refused unchecked: the client failed too often and
    /// must wait `retry_after`.
    LoginThrottled { retry_after: Duration },
    /// A console login with the right token, refused: every session is live
    /// and in use; one may be pushed out after `retry_after`.
    SessionsFull {
        retry_after: Duration,
        /// How many sessions the console keeps.
        sessions: usize,
        /// How long a session must go unused before a login may push it out.
        idle_evictable: Duration,
    },
    /// No route serves the path.
    NoRoute,
    /// The route does not take the method.
    MethodNotAllowed,
    /// No key has this id.
    KeyNotFound(i64),
    /// No budget alert has this id.
    AlertNotFound(i64),
    /// No team has this id.
    TeamNotFound(i64),
    /// Team `id` still has these keys, so it is not deleted.
    TeamHasKeys { id: i64, keys: Vec<i64> },
    /// These budget alerts watch team `id`'s budget, so it is not deleted.
    TeamHasAlerts { id: i64, alerts: Vec<i64> },
    /// A team has this name already (the field at fault: `name`).
    DuplicateTeamName(String),
    /// A key with this value is already registered.
    DuplicateKey,
    /// The body is over `limit` bytes.
    BodyTooLarge { limit: usize },
    /// The usage batch has `records` records, more than [`MAX_USAGE_BATCH`].
    BatchTooLarge { records: usize },
    /// The database failed while the call did `undone`; the cause is
    /// logged, never answered.
    DatabaseUnavailable { cause: StoreError, undone: Undone },
    /// A signing secret was asked for and no master key is configured.
    MasterKeyMissing,
    /// A new signing secret could not be minted or sealed; logged.
    SealFailed(SealError),
    /// Key `key_id`'s signing secret does not open; the cause (master key
    /// ids, never the secret) is logged, never answered.
    SigningSecretUnreadable { key_id: i64, cause: SealError },
    /// The sidecar is draining (`/readyz` only).
    Draining,
    /// The handler panicked (`crate::http::panics`); what it had done before may
    /// have been stored.
    Panicked,
}

impl ApiError {
    /// 400 `invalid_request` naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The error of a store call that was writing: a duplicate key is 409,
    /// any other failure 503 "nothing was stored".
    pub fn storing(cause: StoreError) -> Self {
        match cause {
            StoreError::Duplicate => ApiError::DuplicateKey,
            cause => ApiError::DatabaseUnavailable {
                cause,
                undone: Undone::Store,
            },
        }
    }

    /// The error of a store call that was reading: 503 saying what could
    /// not be read. For `map_err`.
    pub fn reading(undone: Undone) -> impl FnOnce(StoreError) -> Self {
        move |cause| ApiError::DatabaseUnavailable { cause, undone }
    }

    /// The stable code this error answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Invalid { .. } => ErrorCode::InvalidRequest,
            ApiError::MalformedJson { .. } => ErrorCode::MalformedJson,
            ApiError::MissingCredential(_) | ApiError::WrongCredential(_) => {
                ErrorCode::Unauthorized
            }
            ApiError::AdminApiDisabled => ErrorCode::AdminApiDisabled,
            ApiError::SessionRequired => ErrorCode::SessionRequired,
            ApiError::CsrfRefused(_) => ErrorCode::CsrfRefused,
            ApiError::HostNotAllowed => ErrorCode::HostNotAllowed,
            ApiError::LoginThrottled { .. } => ErrorCode::LoginThrottled,
            ApiError::SessionsFull { .. } => ErrorCode::SessionsFull,
            ApiError::NoRoute | ApiError::AlertNotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::KeyNotFound(_) => ErrorCode::KeyNotFound,
            ApiError::TeamNotFound(_) => ErrorCode::TeamNotFound,
            ApiError::TeamHasKeys { .. } => ErrorCode::TeamHasKeys,
            ApiError::TeamHasAlerts { .. } => ErrorCode::TeamHasAlerts,
            ApiError::DuplicateTeamName(_) => ErrorCode::DuplicateTeamName,
            ApiError::DuplicateKey => ErrorCode::DuplicateKey,
            ApiError::BodyTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            ApiError::DatabaseUnavailable { .. } => ErrorCode::DatabaseUnavailable,
            ApiError::MasterKeyMissing => ErrorCode::MasterKeyMissing,
            ApiError::SealFailed(_) | ApiError::SigningSecretUnreadable { .. } => {
                ErrorCode::SigningSecretUnavailable
            }
            ApiError::Draining => ErrorCode::Draining,
            ApiError::Panicked => ErrorCode::InternalError,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// Whole seconds until the call may succeed, for `Retry-After`
    /// (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::LoginThrottled { retry_after }
            | ApiError::SessionsFull { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }

    /// The input at fault, for bad input.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } | ApiError::MalformedJson { field, .. } => {
                field.as_deref()
            }
            ApiError::DuplicateTeamName(_) => Some("name"),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Invalid { message, .. } | ApiError::MalformedJson { message, .. } => {
                f.write_str(message)
            }
            ApiError::MissingCredential(Credential::InternalToken) => {
                write!(f, "the {INTERNAL_TOKEN_HEADER} header is missing")
            }
            ApiError::WrongCredential(Credential::InternalToken) => {
                write!(f, "the {INTERNAL_TOKEN_HEADER} header does not match")
            }
            ApiError::MissingCredential(Credential::AdminToken) => {
                f.write_str("an admin bearer token is required: Authorization: Bearer <token>")
            }
            ApiError::WrongCredential(Credential::AdminToken) => {
                f.write_str("the admin bearer token does not match")
            }
            ApiError::AdminApiDisabled => f.write_str(
                "the admin API is disabled: start the sidecar with --admin-token \
                 (or TOLLGATE_ADMIN_TOKEN) to enable it",
            ),
            ApiError::SessionRequired => {
                f.write_str("no console session: log in at /console/login with the admin token")
            }
            ApiError::CsrfRefused(why) => write!(f, "refused: {why}; nothing was done"),
            ApiError::HostNotAllowed => f.write_str(
                "the console answers only at its own origins (--console-origin); \
                 this request's Host header names another",
            ),
            ApiError::LoginThrottled { .. } => write!(
                f,
                "too many failed logins from this address: try again in {} s",
                self.retry_after_secs().unwrap_or(1)
            ),
            ApiError::SessionsFull {
                sessions,
                idle_evictable,
                ..
            } => write!(
                f,
                "all {sessions} console sessions are in use: log out of one, or try \
                 again in {} s (a session unused for {} minutes makes room)",
                self.retry_after_secs().unwrap_or(1),
                idle_evictable.as_secs() / 60
            ),
            ApiError::NoRoute => f.write_str("no such endpoint"),
            ApiError::MethodNotAllowed => f.write_str("this endpoint does not accept this method"),
            ApiError::KeyNotFound(id) => write!(f, "no key has id {id}"),
            ApiError::AlertNotFound(id) => write!(f, "no alert has id {id}"),
            ApiError::TeamNotFound(id) => write!(f, "no team has id {id}"),
            ApiError::TeamHasKeys { id, keys } => write!(
                f,
                "team {id} still has {} key(s) ({}): move them out first \
                 (PUT /v1/keys/{{id}}/team {{\"team_id\": null}}); nothing was deleted",
                keys.len(),
                keys.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ApiError::TeamHasAlerts { id, alerts } => write!(
                f,
                "team {id} has {} budget alert(s) ({}): remove them first \
                 (DELETE /v1/alerts/{{id}}); nothing was deleted",
                alerts.len(),
                alerts
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ApiError::DuplicateTeamName(name) => write!(f, "a team named {name:?} exists already"),
            ApiError::DuplicateKey => f.write_str("a key with this value is already registered"),
            ApiError::BodyTooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            ApiError::BatchTooLarge { records } => write!(
                f,
                "a batch holds at most {MAX_USAGE_BATCH} records; this one has {records}"
            ),
            ApiError::DatabaseUnavailable { undone, .. } => write!(
                f,
                "the database is unavailable; {}, retry later",
                undone.describe()
            ),
            ApiError::MasterKeyMissing => write!(
                f,
                "a signing secret needs a master key to seal it, and none is configured: \
                 set {MASTER_KEY_ENV} (64 hex digits); nothing was stored"
            ),
            ApiError::SealFailed(_) => {
                f.write_str("the signing secret could not be sealed; nothing was stored")
            }
            ApiError::SigningSecretUnreadable { key_id, .. } => write!(
                f,
                "the signing secret of key {key_id} cannot be decrypted with this sidecar's \
                 master keys; the key cannot be verified until {MASTER_KEY_ENV} (or a previous \
                 master key) is the one that sealed it"
            ),
            ApiError::Draining => f.write_str(
                "the sidecar is draining before it stops; it still serves requests meanwhile",
            ),
            ApiError::Panicked => f.write_str(
                "the sidecar failed on this request (a bug, logged); it serves others as before",
            ),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::DatabaseUnavailable { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        match &self {
            ApiError::DatabaseUnavailable { cause, .. } => {
                tracing::error!(error = %cause, "database call failed");
            }
            ApiError::SealFailed(cause) => {
                tracing::error!(error = %cause, "cannot seal a new signing secret");
            }
            ApiError::SigningSecretUnreadable { key_id, cause } => {
                tracing::error!(key_id, error = %cause, "cannot open a key's signing secret");
            }
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: self.to_string(),
                field: self.field().map(str::to_string),
            },
            request_id: None,
        };
        let mut response = (code.status(), Json(body)).into_response();
        if code.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if code == ErrorCode::DatabaseUnavailable {
            response.extensions_mut().insert(DatabaseFailure);
        }
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_wire_names_and_statuses() {
        for (error, code, status) in [
            (ApiError::NoRoute, "not_found", 404),
            (ApiError::MethodNotAllowed, "method_not_allowed", 405),
            (ApiError::KeyNotFound(7), "key_not_found", 404),
            (ApiError::DuplicateKey, "duplicate_key", 409),
            (ApiError::AdminApiDisabled, "admin_api_disabled", 401),
            (ApiError::SessionRequired, "session_required", 401),
            (ApiError::CsrfRefused("no token"), "csrf_refused", 403),
            (ApiError::HostNotAllowed, "host_not_allowed", 403),
            (
                ApiError::LoginThrottled {
                    retry_after: Duration::from_millis(1500),
                },
                "login_throttled",
                429,
            ),
            (
                ApiError::SessionsFull {
                    retry_after: Duration::from_secs(60),
                    sessions: 64,
                    idle_evictable: Duration::from_secs(600),
                },
                "sessions_full",
                503,
            ),
            (
                ApiError::WrongCredential(Credential::AdminToken),
                "unauthorized",
                401,
            ),
            (
                ApiError::BodyTooLarge { limit: 1 },
                "payload_too_large",
                413,
            ),
            (
                ApiError::BatchTooLarge { records: 2 },
                "batch_too_large",
                413,
            ),
            (
                ApiError::reading(Undone::ReadKeys)(StoreError::Corrupt("x".into())),
                "database_unavailable",
                503,
            ),
            (ApiError::MasterKeyMissing, "master_key_missing", 503),
            (ApiError::Panicked, "internal_error", 500),
            (
                ApiError::SigningSecretUnreadable {
                    key_id: 3,
                    cause: SealError::NoMasterKey,
                },
                "signing_secret_unavailable",
                503,
            ),
            (
                ApiError::SealFailed(SealError::Random("x".into())),
                "signing_secret_unavailable",
                503,
            ),
        ] {
            assert_eq!(error.code().as_str(), code, "{error:?}");
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert!(!error.to_string().is_empty());
        }
        let invalid = ApiError::invalid_field("[0].outcome", "bad");
        assert_eq!(invalid.code(), ErrorCode::InvalidRequest);
        assert_eq!(invalid.field(), Some("[0].outcome"));
        assert_eq!(invalid.to_string(), "bad");
    }

    #[test]
    fn responses_are_the_contract_body_with_their_markers() {
        let response = ApiError::MissingCredential(Credential::InternalToken).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(response.extensions().get::<DatabaseFailure>().is_none());

        let store_down = StoreError::Unavailable(sqlx::Error::PoolClosed);
        let response = ApiError::storing(store_down).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.extensions().get::<DatabaseFailure>().is_some());
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(
            ApiError::storing(StoreError::Duplicate).code(),
            ErrorCode::DuplicateKey
        );
    }

    #[test]
    fn a_wait_is_said_in_retry_after_in_whole_seconds_rounded_up() {
        for (millis, secs) in [(1, "1"), (1000, "1"), (1001, "2"), (899_500, "900")] {
            let retry_after = Duration::from_millis(millis);
            let response = ApiError::LoginThrottled { retry_after }.into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], secs, "{millis} ms");
        }
        let full = ApiError::SessionsFull {
            retry_after: Duration::from_secs(42),
            sessions: 64,
            idle_evictable: Duration::from_secs(600),
        };
        assert!(
            full.to_string().contains("all 64 console sessions"),
            "{full}"
        );
        assert!(full.to_string().contains("try again in 42 s"), "{full}");
        assert!(full.to_string().contains("unused for 10 minutes"), "{full}");
        assert_eq!(full.into_response().headers()[header::RETRY_AFTER], "42");
        let refused = ApiError::CsrfRefused("x").into_response();
        assert!(refused.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_failed_read_does_not_claim_nothing_was_stored() {
        let down = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        let write = ApiError::storing(down()).to_string();
        assert!(write.contains("nothing was stored"), "{write}");
        for undone in [
            Undone::ReadSummary,
            Undone::ReadUsageLog,
            Undone::ReadSeries,
            Undone::ReadKeys,
            Undone::VerifyKey,
            Undone::CheckReadiness,
        ] {
            let read = ApiError::reading(undone)(down());
            assert_eq!(read.code(), ErrorCode::DatabaseUnavailable);
            let message = read.to_string();
            assert!(!message.contains("stored"), "{undone:?}: {message}");
        }
        assert_eq!(
            ApiError::reading(Undone::ReadSummary)(down()).to_string(),
            "the database is unavailable; the usage summary could not be read, retry later"
        );
    }
}
