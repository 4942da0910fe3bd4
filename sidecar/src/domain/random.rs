//! Randomness the sidecar mints things from: API keys and token ids. Every
//! byte comes from the operating system's random source.

use tollgate_wire::to_hex;

/// `bytes` random bytes from the operating system.
pub fn random_bytes(bytes: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("the system random source failed: {e}"))?;
    Ok(buf)
}

/// Lowercase hex of `bytes` random bytes (twice as many characters).
pub fn random_hex(bytes: usize) -> Result<String, String> {
    random_bytes(bytes).map(|buf| to_hex(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_is_lowercase_and_fresh_each_time() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(a, random_hex(16).unwrap());
        assert!(random_bytes(0).unwrap().is_empty());
    }
}
