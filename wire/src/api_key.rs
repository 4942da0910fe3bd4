//! What an API key can look like: the one rule the sidecar applies when it
//! mints or imports a key, and the filter applies before it asks about one,
//! so a key that cannot be registered is refused without a sidecar call.
//!
//! - A key the gateway mints is `tg_` and 40 lowercase hex digits.
//! - An imported key (from an earlier system) is 8 to 512 printable ASCII
//!   characters without spaces; one that starts with `tg_` must be in the
//!   minted form.

/// Prefix of every key the gateway mints.
pub const MINTED_KEY_PREFIX: &str = "tg_";

/// Random bytes in a minted key (160 bits), written as twice as many hex digits.
pub const MINTED_KEY_RANDOM_BYTES: usize = 20;

/// Shortest imported key.
pub const MIN_KEY_LEN: usize = 8;

/// Longest imported key.
pub const MAX_KEY_LEN: usize = 512;

/// Why `key` cannot be a registered key, or `None` when it can. The reason
/// never quotes the key.
pub fn key_format_error(key: &[u8]) -> Option<&'static str> {
    if key.len() < MIN_KEY_LEN {
        return Some("a key has at least 8 characters");
    }
    if key.len() > MAX_KEY_LEN {
        return Some("a key has at most 512 characters");
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Some("a key is printable ASCII without spaces");
    }
    if let Some(random) = key.strip_prefix(MINTED_KEY_PREFIX.as_bytes()) {
        let minted = random.len() == 2 * MINTED_KEY_RANDOM_BYTES
            && random
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if !minted {
            return Some("a key that starts with tg_ is tg_ and 40 lowercase hex digits");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_and_imported_forms() {
        let minted = format!("tg_{}", "0a".repeat(20));
        assert_eq!(key_format_error(minted.as_bytes()), None);
        assert_eq!(key_format_error(b"legacy-key-123"), None);
        assert_eq!(key_format_error(&[b'k'; MAX_KEY_LEN]), None);
        assert_eq!(key_format_error(b"12345678"), None);
        for bad in [
            &b""[..],
            b"short",
            &[b'k'; MAX_KEY_LEN + 1],
            b"has space inside",
            b"caf\xc3\xa9-caf\xc3\xa9",
            b"tab\tinside-key",
            b"tg_abc",
            format!("tg_{}", "0A".repeat(20)).as_bytes(),
            format!("tg_{}", "0a".repeat(21)).as_bytes(),
        ] {
            assert!(key_format_error(bad).is_some(), "{bad:?}");
        }
    }
}
