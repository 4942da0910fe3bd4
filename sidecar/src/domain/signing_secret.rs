//! A key's own HMAC secret for its `X-Auth-Token`s: what one looks like, how
//! one is minted, and a type that never shows it in `Debug`.
//!
//! A minted secret is `tgs_` and 64 random lowercase hex digits (256 bits).
//! Clients use the whole string as their HMAC key (its UTF-8 bytes), as they
//! use the shared secret today. It is shown once, at creation; at rest it is
//! only ever sealed ([`crate::domain::sealed`]).

use serde::{Deserialize, Serialize};
use tollgate_wire::MAX_SIGNING_SECRET_LEN;

use crate::domain::random::random_hex;

/// Every minted signing secret starts with this.
pub const SIGNING_SECRET_PREFIX: &str = "tgs_";

/// Random bytes in a minted signing secret (256 bits).
pub const SIGNING_SECRET_RANDOM_BYTES: usize = 32;

/// A key's signing secret in the clear. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// A fresh secret: `tgs_` and 64 random lowercase hex digits.
    pub fn generate() -> Result<Self, String> {
        let secret = format!(
            "{SIGNING_SECRET_PREFIX}{}",
            random_hex(SIGNING_SECRET_RANDOM_BYTES)?
        );
        SigningSecret::new(secret)
    }

    /// Checks a secret read back from storage: not empty, at most
    /// [`MAX_SIGNING_SECRET_LEN`] bytes (what the filter accepts), no
    /// control characters. The secret is never echoed in the error.
    pub fn new(secret: String) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("the signing secret is empty".into());
        }
        if secret.len() > MAX_SIGNING_SECRET_LEN {
            return Err(format!(
                "the signing secret is longer than {MAX_SIGNING_SECRET_LEN} bytes"
            ));
        }
        if secret.chars().any(char::is_control) {
            return Err("the signing secret contains control characters".into());
        }
        Ok(SigningSecret(secret))
    }

    /// The secret's text, the HMAC key of the key's tokens.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's text, for the verify reply.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningSecret(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_prefixed_random_hex_within_the_wire_limit() {
        let a = SigningSecret::generate().unwrap();
        let b = SigningSecret::generate().unwrap();
        assert_ne!(a, b);
        let text = a.expose();
        assert_eq!(text.len(), 4 + 64);
        assert!(text.len() <= MAX_SIGNING_SECRET_LEN);
        assert!(text.starts_with("tgs_"));
        assert!(text[4..]
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = SigningSecret::generate().unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(secret.expose()), "{shown}");
        assert!(!shown.contains(&secret.expose()[4..12]), "{shown}");
        assert_eq!(shown, "SigningSecret(<68 bytes>)");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{}\"", secret.expose()));
    }

    #[test]
    fn stored_secrets_are_checked() {
        assert!(SigningSecret::new(String::new()).is_err());
        assert!(SigningSecret::new("a\nb".into()).is_err());
        let long = SigningSecret::new("x".repeat(MAX_SIGNING_SECRET_LEN + 1)).unwrap_err();
        assert!(long.contains("128"), "{long}");
        assert!(!long.contains("xxx"), "{long}");
        assert!(SigningSecret::new("x".repeat(MAX_SIGNING_SECRET_LEN)).is_ok());
    }
}
