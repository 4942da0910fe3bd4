//! Standard Webhooks signing (<https://www.standardwebhooks.com>): a
//! secret is `whsec_` and the base64 of its bytes; a message is signed with
//! HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` under the
//! secret's bytes, and the `webhook-signature` header is `v1,` and the
//! base64 of the tag. What a retry waits is here too.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tollgate_wire::Algorithm;

use crate::domain::random::random_bytes;

/// Every webhook secret's text starts with this.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// Random bytes of a generated secret (the spec asks for 24 to 64).
pub const WEBHOOK_SECRET_RANDOM_BYTES: usize = 24;

/// A webhook secret's bytes, the HMAC key. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A fresh secret of [`WEBHOOK_SECRET_RANDOM_BYTES`] random bytes.
    pub fn generate() -> Result<Self, String> {
        random_bytes(WEBHOOK_SECRET_RANDOM_BYTES).map(WebhookSecret)
    }

    /// Reads `whsec_<base64>` (the prefix may be left out, as the spec's
    /// libraries allow). The error never echoes the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let encoded = text.strip_prefix(WEBHOOK_SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| "the webhook secret is not whsec_ followed by base64".to_string())?;
        if bytes.is_empty() {
            return Err("the webhook secret is empty".into());
        }
        Ok(WebhookSecret(bytes))
    }

    /// The secret's text: `whsec_` and the base64 of its bytes.
    pub fn expose(&self) -> String {
        format!("{WEBHOOK_SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header of a message: `v1,` and the base64
    /// of HMAC-SHA256(`{id}.{timestamp}.{body}`).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let tag = Algorithm::Hs256.sign(&self.0, &signed);
        format!("v1,{}", STANDARD.encode(tag))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// How long a failed delivery waits before attempt `attempts + 1`:
/// `base`, doubled for each attempt made after the first (1 s, 2 s, 4 s...),
/// at most an hour.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << doublings)
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the spec's reference libraries: this secret, id,
    /// timestamp and body sign to this header.
    #[test]
    fn signs_as_the_reference_libraries_do() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_round_trip_and_never_show_in_debug() {
        let secret = WebhookSecret::generate().unwrap();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), 6 + 32);
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_ne!(WebhookSecret::generate().unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<24 bytes>)");
        let refused = WebhookSecret::parse("whsec_not base64!").unwrap_err();
        assert!(!refused.contains("not base64!"), "{refused}");
        assert!(WebhookSecret::parse("whsec_").is_err());
    }

    #[test]
    fn retries_back_off_exponentially_within_an_hour() {
        let s = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(s, a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(backoff(s, 40), Duration::from_secs(3600));
    }
}
