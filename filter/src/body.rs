//! SHA-256 helpers: the incremental body hash, the API key hash used as the
//! cache and registry key, and the strict lowercase-hex digest format.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// Hashes a request body chunk by chunk as Envoy delivers it, so the body is
/// never copied whole into the VM at the end.
#[derive(Clone, Default, Debug)]
pub struct BodyHasher {
    hasher: Sha256,
    bytes: u64,
}

impl BodyHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk (only bytes not fed before).
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of everything fed so far (the hasher itself is unchanged).
    pub fn digest(&self) -> Digest32 {
        self.hasher.clone().finalize().into()
    }
}

/// SHA-256 of `data` in one go.
pub fn sha256(data: &[u8]) -> Digest32 {
    Sha256::digest(data).into()
}

/// Lowercase hex of some bytes (a digest gives 64 characters).
pub fn to_hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // from_digit yields lowercase and cannot fail for a nibble.
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    out
}

/// Parses exactly 64 lowercase hex digits. Uppercase hex, base64, or any
/// other spelling of a digest is refused: the client contract names one
/// format, and accepting several would make the signed claim ambiguous.
pub fn parse_lower_hex(text: &str) -> Option<Digest32> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        match pair {
            [hi, lo] => *slot = (nibble(*hi)? << 4) | nibble(*lo)?,
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_hash_equals_one_shot_hash() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for chunk in [1usize, 7, 64, 1000, 4096, 10_000] {
            let mut h = BodyHasher::new();
            for piece in body.chunks(chunk) {
                h.update(piece);
            }
            assert_eq!(h.digest(), sha256(&body), "chunk size {chunk}");
            assert_eq!(h.bytes(), body.len() as u64);
        }
    }

    #[test]
    fn empty_body_hashes_to_the_empty_string_digest() {
        assert_eq!(
            to_hex(&BodyHasher::new().digest()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hex_round_trips_and_only_lowercase_is_accepted() {
        let d = sha256(b"hello");
        let hex = to_hex(&d);
        assert_eq!(parse_lower_hex(&hex), Some(d));
        assert_eq!(parse_lower_hex(&hex.to_uppercase()), None);
        assert_eq!(parse_lower_hex(&hex[..63]), None);
        assert_eq!(parse_lower_hex(&format!("{hex}0")), None);
        assert_eq!(parse_lower_hex(&"g".repeat(64)), None);
        // Non-ASCII whose byte length is 64 must not be mistaken for hex.
        assert_eq!(parse_lower_hex(&"é".repeat(32)), None);
    }
}
