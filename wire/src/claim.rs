//! Fleet-scoped replay protection: with `jwt.replay_scope: "fleet"` the
//! filter claims each token's `jti` through the sidecar, one unique insert
//! in the database that every Envoy shares, after its own instance's store
//! has let it pass.

use serde::{Deserialize, Serialize};

/// `POST` a [`ClaimRequest`] (internal token), answered with a [`ClaimReply`].
pub const JTI_CLAIM_PATH: &str = "/v1/internal/jti/claim";

/// Length of a claim's fingerprint in hex: the first 16 bytes of
/// SHA-256(jti), as the instance's store keeps them.
pub const FINGERPRINT_HEX_LEN: usize = 32;

/// A `jti` to claim fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// Lowercase hex of the first 16 bytes of SHA-256(jti).
    pub fingerprint: String,
    /// Last second (since the epoch) at which the token could still be
    /// accepted: the claim is kept until then.
    pub expires_at: i64,
    /// The key whose request claims it.
    pub key_id: i64,
}

/// Whether the claim is this request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimReply {
    /// True: first use anywhere in the fleet; false: a replay.
    pub claimed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_travel_as_json() {
        let request = ClaimRequest {
            fingerprint: "ab".repeat(16),
            expires_at: 1_800_000_000,
            key_id: 3,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<ClaimRequest>(&text).unwrap(),
            request
        );
        let reply: ClaimReply = serde_json::from_str(r#"{"claimed":false}"#).unwrap();
        assert!(!reply.claimed);
    }
}
