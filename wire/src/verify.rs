//! The key verification call: the filter sends a key's hash, the sidecar
//! answers with what the registry knows of it.

use serde::{Deserialize, Serialize};

use crate::digest::Digest32;
use crate::hex::to_hex;

/// Body of a key verification call: the key is never sent, only its SHA-256.
/// Unknown fields are ignored, so a newer filter may send more.
///
/// The call reads and charges nothing: it comes before the token's
/// signature can be checked (the reply names the secret), so a key's
/// grants are asked only later, by a request that passed that check
/// (docs/LIMITS.md, "No grant is lost").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Lowercase hex SHA-256 of the API key (64 characters).
    pub key_hash: String,
}

impl VerifyRequest {
    /// The request for a key whose hash is `key_hash`.
    pub fn for_key_hash(key_hash: &Digest32) -> Self {
        VerifyRequest {
            key_hash: to_hex(key_hash),
        }
    }
}

/// What the key registry knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyVerdict {
    /// Registered, not revoked, not past its expiry.
    Active,
    /// Registered and revoked.
    Revoked,
    /// Registered, not revoked, past its `expires_at`.
    Expired,
    /// No key with this hash is registered.
    NotFound,
}

impl KeyVerdict {
    /// The verdict as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyVerdict::Active => "active",
            KeyVerdict::Revoked => "revoked",
            KeyVerdict::Expired => "expired",
            KeyVerdict::NotFound => "not_found",
        }
    }
}

/// Longest per-key signing secret a [`VerifyReply`] may carry (bytes).
pub const MAX_SIGNING_SECRET_LEN: usize = 128;

/// Answer to a [`VerifyRequest`]. Its `Debug` output never shows the
/// signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReply {
    pub verdict: KeyVerdict,
    /// The key's id; absent for [`KeyVerdict::NotFound`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<i64>,
    /// When the key stops being valid, in seconds since the Unix epoch; absent
    /// when it never expires. Lets a cache stop trusting an `active` verdict
    /// at the right moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The key's own HMAC secret for its `X-Auth-Token`s, when it has one
    /// (whatever the key's state, so that the signature is judged the same
    /// way before the state is): the token is then verified with these
    /// UTF-8 bytes, and a token signed with the shared secret is refused.
    /// Absent for keys that use the shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// The key change feed's cursor read together with the key (one
    /// snapshot): the verdict reflects every change up to it. A filter
    /// that has applied changes past it does not cache the verdict (a
    /// change it already applied might concern this key). Absent from a
    /// sidecar without the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_cursor: Option<u64>,
    /// The key's rate and quotas, when it has any (an active key's
    /// requests are then admitted against them); absent for a key without
    /// limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// The team the key belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<i64>,
    /// The team's rate and quotas, shared by all of its keys, when it has
    /// any: an active key's requests are admitted against them as well as
    /// its own (`grant::BudgetOwner::Team`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_limits: Option<crate::limits::Limits>,
    /// Every price version of the price table (past, current and
    /// future), when the key or its team has a money quota: the filter
    /// reserves and settles money with them. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<Vec<crate::price::Price>>,
}

impl std::fmt::Debug for VerifyReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyReply")
            .field("verdict", &self.verdict)
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .field("feed_cursor", &self.feed_cursor)
            .field("limits", &self.limits)
            .field("team_id", &self.team_id)
            .field("team_limits", &self.team_limits)
            .field("prices", &self.prices.as_ref().map(Vec::len))
            .field(
                "signing_secret",
                &self
                    .signing_secret
                    .as_ref()
                    .map(|s| format!("<{} bytes>", s.len())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_use_snake_case_on_the_wire() {
        let reply = VerifyReply {
            verdict: KeyVerdict::NotFound,
            key_id: None,
            expires_at: None,
            signing_secret: None,
            feed_cursor: None,
            limits: None,
            team_id: None,
            team_limits: None,
            prices: None,
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"verdict":"not_found"}"#
        );
        let parsed: VerifyReply =
            serde_json::from_str(r#"{"verdict":"active","key_id":3,"expires_at":1800000000}"#)
                .unwrap();
        assert_eq!(parsed.verdict.as_str(), "active");
        assert_eq!(parsed.key_id, Some(3));
        assert_eq!(parsed.signing_secret, None);
    }

    #[test]
    fn a_signing_secret_travels_but_never_shows_in_debug() {
        let parsed: VerifyReply =
            serde_json::from_str(r#"{"verdict":"active","key_id":3,"signing_secret":"tgs_abc"}"#)
                .unwrap();
        assert_eq!(parsed.signing_secret.as_deref(), Some("tgs_abc"));
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("tgs_abc"), "{shown}");
        assert!(shown.contains("<7 bytes>"), "{shown}");
    }

    #[test]
    fn requests_carry_the_hex_hash_and_tolerate_new_fields() {
        let request = VerifyRequest::for_key_hash(&[0xab; 32]);
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            format!(r#"{{"key_hash":"{}"}}"#, "ab".repeat(32))
        );
        let newer: VerifyRequest =
            serde_json::from_str(r#"{"key_hash":"00","want_grant":true}"#).unwrap();
        assert_eq!(newer.key_hash, "00");
        // An older filter asked for first grants with the verdict; that
        // field is read past, and nothing is granted for it.
        let older: VerifyRequest = serde_json::from_str(
            r#"{"key_hash":"00","first_grant_id":"0123456789abcdef0123456789abcde0"}"#,
        )
        .unwrap();
        assert_eq!(
            older,
            VerifyRequest {
                key_hash: "00".into()
            }
        );
    }
}
