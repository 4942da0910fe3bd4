//! How a request ended, as the contract names it: `allowed`, or one of the
//! error codes of the contract's table with its HTTP status. The filter
//! answers and meters with these; the sidecar stores and summarises them.

use serde::{Deserialize, Serialize};

/// The outcome of one request: the `outcome` column of `usage_log`, and for
/// a denial the `error.code` of the JSON reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let through to the upstream.
    Allowed,
    /// An LLM request's body (or Gemini path) is not what its API
    /// promises; the message names the member at fault.
    InvalidRequest,
    MissingApiKey,
    InvalidApiKey,
    MissingToken,
    MalformedToken,
    UnsupportedAlgorithm,
    UnknownKeyId,
    InvalidSignature,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuedInFuture,
    TokenLifetimeTooLong,
    MissingClaim,
    BodyHashMismatch,
    RequestBindingMismatch,
    ReplayedToken,
    RevokedApiKey,
    ExpiredApiKey,
    PayloadTooLarge,
    /// The key holds its share of the replay store (see the filter's `replay`).
    TooManyLiveTokens,
    AuthUnavailable,
    /// The replay store has no room for the token's `jti`.
    ReplayStoreFull,
    /// The key's rate is exceeded on this Envoy (its token bucket is empty).
    RateLimited,
    /// One of the key's quotas is spent, fleet-wide, for the window.
    QuotaExceeded,
}

impl Outcome {
    /// Every denial code, in the order of the contract's table.
    pub const DENIALS: [Outcome; 24] = [
        Outcome::InvalidRequest,
        Outcome::MissingApiKey,
        Outcome::InvalidApiKey,
        Outcome::MissingToken,
        Outcome::MalformedToken,
        Outcome::UnsupportedAlgorithm,
        Outcome::UnknownKeyId,
        Outcome::InvalidSignature,
        Outcome::TokenExpired,
        Outcome::TokenNotYetValid,
        Outcome::TokenIssuedInFuture,
        Outcome::TokenLifetimeTooLong,
        Outcome::MissingClaim,
        Outcome::BodyHashMismatch,
        Outcome::RequestBindingMismatch,
        Outcome::ReplayedToken,
        Outcome::RevokedApiKey,
        Outcome::ExpiredApiKey,
        Outcome::PayloadTooLarge,
        Outcome::TooManyLiveTokens,
        Outcome::RateLimited,
        Outcome::QuotaExceeded,
        Outcome::AuthUnavailable,
        Outcome::ReplayStoreFull,
    ];

    /// The code as it appears on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::MissingApiKey => "missing_api_key",
            Outcome::InvalidApiKey => "invalid_api_key",
            Outcome::MissingToken => "missing_token",
            Outcome::MalformedToken => "malformed_token",
            Outcome::UnsupportedAlgorithm => "unsupported_algorithm",
            Outcome::UnknownKeyId => "unknown_key_id",
            Outcome::InvalidSignature => "invalid_signature",
            Outcome::TokenExpired => "token_expired",
            Outcome::TokenNotYetValid => "token_not_yet_valid",
            Outcome::TokenIssuedInFuture => "token_issued_in_future",
            Outcome::TokenLifetimeTooLong => "token_lifetime_too_long",
            Outcome::MissingClaim => "missing_claim",
            Outcome::BodyHashMismatch => "body_hash_mismatch",
            Outcome::RequestBindingMismatch => "request_binding_mismatch",
            Outcome::ReplayedToken => "replayed_token",
            Outcome::RevokedApiKey => "revoked_api_key",
            Outcome::ExpiredApiKey => "expired_api_key",
            Outcome::PayloadTooLarge => "payload_too_large",
            Outcome::TooManyLiveTokens => "too_many_live_tokens",
            Outcome::AuthUnavailable => "auth_unavailable",
            Outcome::ReplayStoreFull => "replay_store_full",
            Outcome::RateLimited => "rate_limited",
            Outcome::QuotaExceeded => "quota_exceeded",
        }
    }

    /// The outcome a code names.
    pub fn from_code(code: &str) -> Option<Outcome> {
        std::iter::once(Outcome::Allowed)
            .chain(Self::DENIALS)
            .find(|o| o.as_str() == code)
    }

    /// The HTTP status of a denial's reply; `None` for [`Outcome::Allowed`],
    /// whose status is the upstream's.
    pub fn denial_status(self) -> Option<u16> {
        match self {
            Outcome::Allowed => None,
            Outcome::InvalidRequest => Some(400),
            Outcome::RevokedApiKey | Outcome::ExpiredApiKey => Some(403),
            Outcome::PayloadTooLarge => Some(413),
            Outcome::TooManyLiveTokens | Outcome::RateLimited | Outcome::QuotaExceeded => Some(429),
            Outcome::AuthUnavailable | Outcome::ReplayStoreFull => Some(503),
            _ => Some(401),
        }
    }

    /// Position in [`Outcome::DENIALS`] (per-code metrics); `None` for
    /// [`Outcome::Allowed`].
    pub fn denial_index(self) -> Option<usize> {
        Self::DENIALS.iter().position(|o| *o == self)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_serde_names_and_round_trip() {
        for o in std::iter::once(Outcome::Allowed).chain(Outcome::DENIALS) {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
            assert_eq!(Outcome::from_code(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::from_code("nope"), None);
        assert!(serde_json::from_str::<Outcome>("\"nope\"").is_err());
    }

    #[test]
    fn statuses_follow_the_contract_table() {
        assert_eq!(Outcome::Allowed.denial_status(), None);
        assert_eq!(Outcome::InvalidRequest.denial_status(), Some(400));
        assert_eq!(Outcome::RevokedApiKey.denial_status(), Some(403));
        assert_eq!(Outcome::ExpiredApiKey.denial_status(), Some(403));
        assert_eq!(Outcome::PayloadTooLarge.denial_status(), Some(413));
        assert_eq!(Outcome::TooManyLiveTokens.denial_status(), Some(429));
        assert_eq!(Outcome::AuthUnavailable.denial_status(), Some(503));
        assert_eq!(Outcome::ReplayStoreFull.denial_status(), Some(503));
        assert_eq!(Outcome::RateLimited.denial_status(), Some(429));
        assert_eq!(Outcome::QuotaExceeded.denial_status(), Some(429));
        let unauthorized = Outcome::DENIALS
            .iter()
            .filter(|o| o.denial_status() == Some(401))
            .count();
        assert_eq!(unauthorized, 15);
        for (i, o) in Outcome::DENIALS.iter().enumerate() {
            assert_eq!(o.denial_index(), Some(i));
        }
        assert_eq!(Outcome::Allowed.denial_index(), None);
    }
}
