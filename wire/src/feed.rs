//! The key change feed: every change to a key that a cached verdict could
//! miss (created, revoked, limits changed) gets a cursor, in commit order,
//! kept in the database so that every sidecar serves the same feed. Each
//! Envoy polls it about once a second and evicts the cached verdicts it
//! names, so a revocation reaches every instance within the poll period
//! instead of the cache's TTL.

use serde::{Deserialize, Serialize};

/// `GET` with `?after=<cursor>&limit=<n>` (internal token), answered with
/// a [`ChangesReply`].
pub const CHANGES_PATH: &str = "/v1/internal/keys/changes";

/// Most changes one reply carries; a reply that stops there says `more`.
pub const MAX_CHANGES_PER_REPLY: usize = 500;

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    /// Position in the feed (strictly increasing, in commit order).
    pub cursor: u64,
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: String,
    /// What changed (`created`, `revoked`, ...). A reader evicts the key's
    /// cached verdict whatever the kind, so new kinds need no new reader.
    pub kind: String,
}

/// Answer to a feed poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesReply {
    /// Where the reader stands after applying `changes`: poll with it next.
    pub cursor: u64,
    /// The changes after the reader's cursor, oldest first.
    pub changes: Vec<KeyChange>,
    /// More changes wait past `cursor`: poll again at once.
    #[serde(default)]
    pub more: bool,
    /// The reader's cursor is older than what the feed still keeps (or
    /// newer than its head): some changes cannot be delivered, so the
    /// reader must drop every cached verdict, then go on from `cursor`.
    #[serde(default)]
    pub reset: bool,
}

/// The query of a poll after `cursor`.
pub fn changes_query(after: u64, limit: usize) -> String {
    format!("{CHANGES_PATH}?after={after}&limit={limit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_default_their_flags() {
        let reply: ChangesReply = serde_json::from_str(
            r#"{"cursor":7,"changes":[{"cursor":7,"key_hash":"ab","kind":"revoked"}]}"#,
        )
        .unwrap();
        assert_eq!(reply.cursor, 7);
        assert!(!reply.more && !reply.reset);
        assert_eq!(reply.changes[0].kind, "revoked");
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<ChangesReply>(&text).unwrap(), reply);
    }

    #[test]
    fn the_query_names_the_cursor_and_the_limit() {
        assert_eq!(
            changes_query(42, 500),
            "/v1/internal/keys/changes?after=42&limit=500"
        );
    }
}
