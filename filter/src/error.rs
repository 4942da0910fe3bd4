//! Every reason the filter refuses a request, and the one place that turns a
//! reason into an HTTP status, a stable error code and a JSON body.

use tollgate_wire::{Api, ErrorBody, ErrorDetail, Outcome};

use crate::llm::request::InvalidRequest;

/// Why a request is refused. Each variant maps to exactly one row of the
/// error table in docs/ARCHITECTURE.md (several variants may share a code when
/// the client deserves a more precise message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// An LLM request's body or path is not what its API promises
    /// (`llm::request`); names the member at fault.
    InvalidRequest(InvalidRequest),
    /// No `Authorization` header, not `Bearer <key>`, or an empty key.
    MissingApiKey,
    /// The key is malformed (control characters, spaces, too long, several
    /// `Authorization` headers) or the registry does not know it.
    InvalidApiKey,
    /// No `X-Auth-Token` header, or an empty one.
    MissingToken,
    /// The token is not a well-formed compact JWS, its header or claims
    /// repeat a member name, or a claim has the wrong type.
    MalformedToken(&'static str),
    /// The token's `alg` is not one of the configured HMAC algorithms.
    UnsupportedAlgorithm,
    /// The token's `kid` names no configured secret (or it has no `kid` and
    /// no default secret is configured).
    UnknownKeyId,
    /// The HMAC does not match.
    InvalidSignature,
    /// `exp` (plus the clock skew) is in the past, or `exp` precedes `iat`.
    TokenExpired,
    /// `nbf` (minus the clock skew) is in the future.
    TokenNotYetValid,
    /// `iat` is further in the future than the clock skew allows.
    TokenIssuedInFuture,
    /// `exp - iat` exceeds the configured maximum lifetime.
    TokenLifetimeTooLong,
    /// A required claim is absent; names the claim.
    MissingClaim(&'static str),
    /// The body's SHA-256 differs from the token's `body_sha256`.
    BodyHashMismatch,
    /// `body_sha256` is not 64 lowercase hex digits (uppercase hex and
    /// base64 are refused even when they encode the right digest).
    BodyHashFormat,
    /// `htm`, `htu`, `iss` or `aud` does not match this request or gateway;
    /// the detail names which.
    RequestBindingMismatch(&'static str),
    /// The token's `jti` was seen before (replay protection).
    ReplayedToken,
    /// The key is registered but revoked.
    RevokedApiKey,
    /// The key is registered but past its expiry.
    ExpiredApiKey,
    /// The body (declared or received) exceeds `max_body_bytes`.
    PayloadTooLarge,
    /// The key already holds its share of the replay store's bucket for
    /// this `jti` (see `replay`): it must wait for its tokens to expire.
    TooManyLiveTokens,
    /// No usable key verdict (sidecar unreachable, bad answer, host error),
    /// or a replay-store bucket that cannot be read or updated: the filter
    /// fails closed.
    AuthUnavailable,
    /// The replay store's bucket for this `jti` is full of live entries.
    ReplayStoreFull,
    /// The key's rate (`team`: its team's) is exceeded on this Envoy
    /// (`limits`).
    RateLimited { team: bool },
    /// One of the key's quotas (`team`: its team's) is spent fleet-wide
    /// for its window (`limits`).
    QuotaExceeded { team: bool },
    /// The request's charge of a quota (for tokens: its reservation) is
    /// more than the quota's limit: it could never be admitted (`limits`).
    QuotaNeverFits {
        team: bool,
        kind: tollgate_wire::QuotaKind,
        charge: u64,
        limit: u64,
    },
}

/// How a refusal names the budget it came from: the key's own, or the
/// team's it belongs to (shared by the team's keys).
fn budget_name(team: bool) -> &'static str {
    if team {
        "the API key's team"
    } else {
        "the API key"
    }
}

impl Denial {
    /// The contract's code for this denial.
    pub fn outcome(self) -> Outcome {
        match self {
            Denial::InvalidRequest(_) => Outcome::InvalidRequest,
            Denial::MissingApiKey => Outcome::MissingApiKey,
            Denial::InvalidApiKey => Outcome::InvalidApiKey,
            Denial::MissingToken => Outcome::MissingToken,
            Denial::MalformedToken(_) => Outcome::MalformedToken,
            Denial::UnsupportedAlgorithm => Outcome::UnsupportedAlgorithm,
            Denial::UnknownKeyId => Outcome::UnknownKeyId,
            Denial::InvalidSignature => Outcome::InvalidSignature,
            Denial::TokenExpired => Outcome::TokenExpired,
            Denial::TokenNotYetValid => Outcome::TokenNotYetValid,
            Denial::TokenIssuedInFuture => Outcome::TokenIssuedInFuture,
            Denial::TokenLifetimeTooLong => Outcome::TokenLifetimeTooLong,
            Denial::MissingClaim(_) => Outcome::MissingClaim,
            Denial::BodyHashMismatch | Denial::BodyHashFormat => Outcome::BodyHashMismatch,
            Denial::RequestBindingMismatch(_) => Outcome::RequestBindingMismatch,
            Denial::ReplayedToken => Outcome::ReplayedToken,
            Denial::RevokedApiKey => Outcome::RevokedApiKey,
            Denial::ExpiredApiKey => Outcome::ExpiredApiKey,
            Denial::PayloadTooLarge => Outcome::PayloadTooLarge,
            Denial::TooManyLiveTokens => Outcome::TooManyLiveTokens,
            Denial::AuthUnavailable => Outcome::AuthUnavailable,
            Denial::ReplayStoreFull => Outcome::ReplayStoreFull,
            Denial::RateLimited { .. } => Outcome::RateLimited,
            Denial::QuotaExceeded { .. } | Denial::QuotaNeverFits { .. } => Outcome::QuotaExceeded,
        }
    }

    /// The stable, machine-readable error code.
    pub fn code(self) -> &'static str {
        self.outcome().as_str()
    }

    /// The HTTP status of the local reply (the contract's table, in `wire`).
    pub fn status(self) -> u16 {
        self.outcome().denial_status().unwrap_or(503)
    }

    /// Text for a person. Never contains a secret, a key or a token.
    pub fn message(self) -> String {
        match self {
            Denial::InvalidRequest(invalid) => invalid.message(),
            Denial::MissingApiKey => {
                "the Authorization header must be 'Bearer <api key>'".to_string()
            }
            Denial::InvalidApiKey => "the API key is not valid".to_string(),
            Denial::MissingToken => "the X-Auth-Token header is required".to_string(),
            Denial::MalformedToken(why) => format!("the X-Auth-Token is malformed: {why}"),
            Denial::UnsupportedAlgorithm => {
                "the token's alg is not an accepted HMAC algorithm".to_string()
            }
            Denial::UnknownKeyId => "the token's kid names no known secret".to_string(),
            Denial::InvalidSignature => "the token's signature does not verify".to_string(),
            Denial::TokenExpired => "the token has expired".to_string(),
            Denial::TokenNotYetValid => "the token is not valid yet (nbf)".to_string(),
            Denial::TokenIssuedInFuture => "the token's iat is in the future".to_string(),
            Denial::TokenLifetimeTooLong => {
                "the token's lifetime (exp - iat) is longer than allowed".to_string()
            }
            Denial::MissingClaim(claim) => format!("the token lacks the required claim '{claim}'"),
            Denial::BodyHashMismatch => {
                "the body's SHA-256 does not match the token's body_sha256".to_string()
            }
            Denial::BodyHashFormat => {
                "body_sha256 must be the SHA-256 of the body as 64 lowercase hex digits".to_string()
            }
            Denial::RequestBindingMismatch(what) => {
                format!("the token is bound to another request: {what}")
            }
            Denial::ReplayedToken => "the token was already used".to_string(),
            Denial::RevokedApiKey => "the API key has been revoked".to_string(),
            Denial::ExpiredApiKey => "the API key has expired".to_string(),
            Denial::PayloadTooLarge => "the request body is larger than allowed".to_string(),
            Denial::TooManyLiveTokens => {
                "this API key holds too many unexpired tokens in the replay store; \
                 retry once earlier tokens expire, or use shorter-lived tokens"
                    .to_string()
            }
            Denial::AuthUnavailable => {
                "authentication is temporarily unavailable; retry later".to_string()
            }
            Denial::ReplayStoreFull => {
                "the gateway's replay store is full; retry once earlier tokens expire".to_string()
            }
            Denial::RateLimited { team } => format!(
                "{}'s rate limit is exceeded; retry after Retry-After seconds",
                budget_name(team)
            ),
            Denial::QuotaExceeded { team } => format!(
                "{}'s quota for this window is spent; retry after Retry-After seconds",
                budget_name(team)
            ),
            Denial::QuotaNeverFits {
                team,
                kind,
                charge,
                limit,
            } if kind.counts_money() => format!(
                "this request may cost up to {} (its body's bytes and its output cap at its \
                 model's price), more than {}'s cost quota allows in a whole window ({}): \
                 it can never fit; lower the output cap",
                tollgate_wire::price::format_amount(charge),
                budget_name(team),
                tollgate_wire::price::format_amount(limit)
            ),
            Denial::QuotaNeverFits {
                team,
                kind,
                charge,
                limit,
            } if kind.reserves() => format!(
                "this request may use up to {charge} {kind} (its body's bytes plus its \
                 output cap), more than {}'s {kind} quota allows in a whole \
                 window ({limit}): it can never fit; lower the output cap",
                budget_name(team)
            ),
            Denial::QuotaNeverFits {
                team,
                kind,
                charge,
                limit,
            } => format!(
                "this request counts {charge} against {}'s {kind} quota, more \
                 than it allows in a whole window ({limit}): it can never fit",
                budget_name(team)
            ),
        }
    }

    /// The input field at fault, when there is one (`error.field`).
    pub fn field(self) -> Option<&'static str> {
        match self {
            Denial::InvalidRequest(invalid) => Some(invalid.field),
            _ => None,
        }
    }

    /// Headers of the local reply (content type, and `WWW-Authenticate` on 401).
    pub fn reply_headers(self) -> Vec<(&'static str, &'static str)> {
        let mut headers = vec![("content-type", "application/json")];
        if self.status() == 401 {
            headers.push(("www-authenticate", "Bearer"));
        }
        headers
    }

    /// The JSON body of the local reply on a route of `llm_api`: on an LLM
    /// route, that provider's error shape (so its SDK raises the matching
    /// exception; the code stays in it), else [`Denial::reply_body`].
    pub fn reply_body_on(self, llm_api: Option<Api>, request_id: &str) -> Vec<u8> {
        match llm_api {
            Some(api) => crate::llm::errors::error_body(
                api.provider(),
                self.status(),
                self.code(),
                &self.message(),
                request_id,
                self.field(),
            ),
            None => self.reply_body(request_id),
        }
    }

    /// The JSON body of the local reply:
    /// `{"error":{"code","message"},"request_id"}`.
    pub fn reply_body(self, request_id: &str) -> Vec<u8> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.message(),
                field: self.field().map(str::to_string),
            },
            request_id: if request_id.is_empty() {
                None
            } else {
                Some(request_id.to_string())
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            // Serializing plain strings cannot fail; keep a valid body anyway.
            format!(r#"{{"error":{{"code":"{}","message":""}}}}"#, self.code()).into_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::request::Fault;

    fn every_denial() -> Vec<Denial> {
        vec![
            Denial::InvalidRequest(InvalidRequest {
                field: "stream",
                fault: Fault::NotBoolean,
            }),
            Denial::MissingApiKey,
            Denial::InvalidApiKey,
            Denial::MissingToken,
            Denial::MalformedToken("x"),
            Denial::UnsupportedAlgorithm,
            Denial::UnknownKeyId,
            Denial::InvalidSignature,
            Denial::TokenExpired,
            Denial::TokenNotYetValid,
            Denial::TokenIssuedInFuture,
            Denial::TokenLifetimeTooLong,
            Denial::MissingClaim("iat"),
            Denial::BodyHashMismatch,
            Denial::BodyHashFormat,
            Denial::RequestBindingMismatch("htm"),
            Denial::ReplayedToken,
            Denial::RevokedApiKey,
            Denial::ExpiredApiKey,
            Denial::PayloadTooLarge,
            Denial::TooManyLiveTokens,
            Denial::AuthUnavailable,
            Denial::ReplayStoreFull,
            Denial::RateLimited { team: false },
            Denial::QuotaExceeded { team: false },
        ]
    }

    /// The error table of docs/CONTRACT.md ("Errors"), verbatim.
    const TABLE: &[(u16, &[&str])] = &[
        (400, &["invalid_request"]),
        (
            401,
            &[
                "missing_api_key",
                "invalid_api_key",
                "missing_token",
                "malformed_token",
                "unsupported_algorithm",
                "unknown_key_id",
                "invalid_signature",
                "token_expired",
                "token_not_yet_valid",
                "token_issued_in_future",
                "token_lifetime_too_long",
                "missing_claim",
                "body_hash_mismatch",
                "request_binding_mismatch",
                "replayed_token",
            ],
        ),
        (403, &["revoked_api_key", "expired_api_key"]),
        (413, &["payload_too_large"]),
        (
            429,
            &["too_many_live_tokens", "rate_limited", "quota_exceeded"],
        ),
        (503, &["auth_unavailable", "replay_store_full"]),
    ];

    #[test]
    fn every_code_in_the_table_maps_to_its_status() {
        let denials = every_denial();
        for (status, codes) in TABLE {
            for code in *codes {
                let matching: Vec<_> = denials.iter().filter(|d| d.code() == *code).collect();
                assert!(!matching.is_empty(), "no denial produces {code}");
                for d in matching {
                    assert_eq!(d.status(), *status, "{code}");
                }
            }
        }
        let table_codes: Vec<&str> = TABLE.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        for d in &denials {
            assert!(table_codes.contains(&d.code()), "{} not in table", d.code());
        }
        let wire_codes: Vec<&str> = Outcome::DENIALS.iter().map(|o| o.as_str()).collect();
        assert_eq!(wire_codes, table_codes);
    }

    #[test]
    fn body_is_the_shared_error_json() {
        let body = Denial::RevokedApiKey.reply_body("abc");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "revoked_api_key");
        assert_eq!(v["request_id"], "abc");
        assert!(v["error"]["message"].as_str().unwrap().contains("revoked"));
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.error.code, "revoked_api_key");
    }

    #[test]
    fn an_invalid_request_names_its_field() {
        let denial = Denial::InvalidRequest(InvalidRequest {
            field: "generationConfig.maxOutputTokens",
            fault: Fault::NotCap,
        });
        assert_eq!((denial.status(), denial.code()), (400, "invalid_request"));
        let parsed: ErrorBody = serde_json::from_slice(&denial.reply_body("r")).unwrap();
        assert_eq!(
            parsed.error.field.as_deref(),
            Some("generationConfig.maxOutputTokens")
        );
        assert!(parsed
            .error
            .message
            .contains("`generationConfig.maxOutputTokens`"));
        let other: serde_json::Value =
            serde_json::from_slice(&Denial::MissingToken.reply_body("r")).unwrap();
        assert!(other["error"].get("field").is_none());
    }

    #[test]
    fn only_401_carries_www_authenticate() {
        for d in every_denial() {
            let has = d
                .reply_headers()
                .iter()
                .any(|(n, v)| *n == "www-authenticate" && *v == "Bearer");
            assert_eq!(has, d.status() == 401, "{}", d.code());
            assert!(d
                .reply_headers()
                .contains(&("content-type", "application/json")));
        }
    }

    #[test]
    fn body_hash_format_message_names_the_format() {
        assert_eq!(Denial::BodyHashFormat.code(), "body_hash_mismatch");
        assert!(Denial::BodyHashFormat
            .message()
            .contains("64 lowercase hex"));
    }
}
