//! Request ids minted by the filter: 128 random bits as 32 lowercase hex
//! characters. The filter overwrites any client-sent `x-request-id` with one,
//! because the sidecar deduplicates usage records by this id and a client
//! that could choose it could have its calls deduplicated away.

use crate::body::to_hex;

/// Formats 16 random bytes as a request id.
pub fn from_random_bytes(bytes: &[u8; 16]) -> String {
    to_hex(bytes)
}

/// Mints a fresh request id from the host's randomness (WASI `random_get`
/// inside Envoy). `None` when no randomness is available: the caller must
/// fail closed rather than reuse or guess an id.
pub fn mint() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(from_random_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_differ() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert_eq!(
            from_random_bytes(&[0xab; 16]),
            "abababababababababababababababab"
        );
    }

    #[test]
    fn ids_fit_the_usage_record_limit() {
        assert!(mint().unwrap().len() <= tollgate_wire::MAX_REQUEST_ID_LEN);
    }
}
