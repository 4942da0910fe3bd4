//! The key verification call: the filter sends a key's hash, the sidecar
//! answers with what the registry knows of it.

use serde::{Deserialize, Serialize};

use crate::digest::Digest32;
use crate::grant::GrantGiven;
use crate::hex::to_hex;
use crate::limits::QuotaKind;

/// Body of a key verification call: the key is never sent, only its SHA-256.
/// Unknown fields are ignored, so a newer filter may send more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Lowercase hex SHA-256 of the API key (64 characters).
    pub key_hash: String,
    /// Asks for the key's first grants with the verdict: for each quota of
    /// an active key charged at admission, a grant of at least 1 under the
    /// id [`first_grant_id`] derives from this one (a grant id, 32
    /// lowercase hex digits). A cold key's request then waits for one
    /// call, not two. A retried call with the same id is answered the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_grant_id: Option<String>,
}

impl VerifyRequest {
    /// The request for a key whose hash is `key_hash`.
    pub fn for_key_hash(key_hash: &Digest32) -> Self {
        VerifyRequest {
            key_hash: to_hex(key_hash),
            first_grant_id: None,
        }
    }
}

/// The id of the first grant of quota `kind` asked under `base` (a
/// [`VerifyRequest::first_grant_id`]): `base` with its last hex digit
/// replaced by the kind's position in [`QuotaKind::ALL`].
pub fn first_grant_id(base: &str, kind: QuotaKind) -> String {
    let index = QuotaKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let digit = char::from(b"0123456789abcdef"[index]);
    let mut id: String = base.chars().take(base.len().saturating_sub(1)).collect();
    id.push(digit);
    id
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
    /// The first grants a [`VerifyRequest::first_grant_id`] asked for, one
    /// per quota charged at admission (empty when none was asked, or the
    /// key is not active).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantGiven>,
}

impl std::fmt::Debug for VerifyReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyReply")
            .field("verdict", &self.verdict)
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .field("feed_cursor", &self.feed_cursor)
            .field("limits", &self.limits)
            .field("grants", &self.grants)
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
            grants: Vec::new(),
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
    }

    #[test]
    fn first_grant_ids_differ_by_quota_in_the_last_digit() {
        let base = "0123456789abcdef0123456789abcde0";
        assert_eq!(
            first_grant_id(base, QuotaKind::Requests),
            "0123456789abcdef0123456789abcde0"
        );
        assert_eq!(
            first_grant_id(base, QuotaKind::RequestBytes),
            "0123456789abcdef0123456789abcde1"
        );
        assert!(crate::grant::is_charge_id(&first_grant_id(
            base,
            QuotaKind::Units
        )));
    }
}
