//! The incremental SHA-256 of a request body, fed chunk by chunk as the
//! host delivers it (one-shot hashing and hex live in `tollgate_wire`).

use sha2::{Digest, Sha256};
use tollgate_wire::Digest32;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_wire::{sha256, to_hex};

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
}
