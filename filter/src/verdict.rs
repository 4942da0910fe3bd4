//! What the key registry's answer means: the sidecar's reply to a
//! verification call (parsed with the wire types), and what a verdict
//! decides for a request.

use tollgate_wire::{Digest32, KeyVerdict, VerifyReply, VerifyRequest};

use crate::cache::CacheEntry;
use crate::error::Denial;
use crate::token::Secret;

/// What a key verdict means for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDecision {
    /// The key's id, when the registry knows the key (for metering).
    pub key_id: Option<i64>,
    /// Pass, or the denial the verdict calls for.
    pub result: Result<i64, Denial>,
    /// The secret the key's tokens must be signed with, when it has its
    /// own (otherwise the shared secrets of the configuration apply).
    pub signing_secret: Option<Secret>,
    /// The budgets an admitted request is charged to (its own, its team's).
    pub budgets: crate::limits::Budgets,
}

/// Maps a verdict to a decision at `now_ms`: `active` passes (unless the
/// key has passed its own `expires_at`: then it is an expired key),
/// `revoked`/`expired` are 403, `not_found` is `invalid_api_key`.
pub fn decide_key(entry: &CacheEntry, now_ms: u64) -> KeyDecision {
    let result = match (entry.verdict, entry.key_id) {
        (KeyVerdict::Active, Some(id)) if !entry.key_expired_at(now_ms) => Ok(id),
        (KeyVerdict::Active, Some(_)) | (KeyVerdict::Expired, _) => Err(Denial::ExpiredApiKey),
        (KeyVerdict::Active, None) => Err(Denial::AuthUnavailable),
        (KeyVerdict::Revoked, _) => Err(Denial::RevokedApiKey),
        (KeyVerdict::NotFound, _) => Err(Denial::InvalidApiKey),
    };
    KeyDecision {
        key_id: entry.key_id,
        result,
        signing_secret: entry.signing_secret.clone(),
        budgets: entry.budgets(),
    }
}

/// Largest verification answer the filter reads.
pub const MAX_VERIFY_REPLY_BYTES: usize = 256 * 1024;

/// The sidecar's answer to a verification callout: `None` unless the
/// status is 200 and the body is a [`VerifyReply`].
pub fn parse_verify_reply(status: Option<&[u8]>, body: Option<&[u8]>) -> Option<VerifyReply> {
    if status != Some(b"200".as_slice()) {
        return None;
    }
    let body = body?;
    if body.len() > MAX_VERIFY_REPLY_BYTES {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// The body of the verification call for a key hash (the key itself is
/// never sent).
pub fn verify_request_body(key_hash: &Digest32) -> Vec<u8> {
    serde_json::to_vec(&VerifyRequest::for_key_hash(key_hash)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_meanings() {
        let entry = |verdict, key_id, expires_at_s| CacheEntry {
            key_hash: [0; 32],
            verdict,
            key_id,
            expires_at_s,
            fetched_at_ms: 0,
            signing_secret: None,
            feed_position: None,
            limited: false,
            team: None,
            priced: false,
        };
        let now = 1_000_000;
        let d = |e: CacheEntry| decide_key(&e, now).result;
        assert_eq!(d(entry(KeyVerdict::Active, Some(4), None)), Ok(4));
        assert_eq!(d(entry(KeyVerdict::Active, Some(4), Some(1_001))), Ok(4));
        assert_eq!(
            d(entry(KeyVerdict::Active, Some(4), Some(1_000))),
            Err(Denial::ExpiredApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::Active, None, None)),
            Err(Denial::AuthUnavailable)
        );
        assert_eq!(
            d(entry(KeyVerdict::Revoked, Some(4), None)),
            Err(Denial::RevokedApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::Expired, Some(4), None)),
            Err(Denial::ExpiredApiKey)
        );
        assert_eq!(
            d(entry(KeyVerdict::NotFound, None, None)),
            Err(Denial::InvalidApiKey)
        );
        assert_eq!(
            decide_key(&entry(KeyVerdict::Revoked, Some(4), None), now).key_id,
            Some(4)
        );
    }

    #[test]
    fn verify_replies() {
        let ok = br#"{"verdict":"active","key_id":1}"#;
        assert!(parse_verify_reply(Some(b"200"), Some(ok)).is_some());
        assert!(parse_verify_reply(Some(b"500"), Some(ok)).is_none());
        assert!(parse_verify_reply(None, Some(ok)).is_none());
        assert!(parse_verify_reply(Some(b"200"), None).is_none());
        assert!(parse_verify_reply(Some(b"200"), Some(b"nope")).is_none());
        assert!(parse_verify_reply(Some(b"200"), Some(br#"{"verdict":"maybe"}"#)).is_none());
    }
}
