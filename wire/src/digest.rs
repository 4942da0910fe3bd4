//! SHA-256 as both sides use it: the API key hash that the registry stores
//! and the filter caches by, and the body digest a token signs.

use sha2::{Digest, Sha256};

use crate::hex::to_hex;

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// SHA-256 of `data` in one go.
pub fn sha256(data: &[u8]) -> Digest32 {
    Sha256::digest(data).into()
}

/// The hash an API key is stored and looked up by: SHA-256 of its bytes.
/// The plaintext goes no further than this function.
pub fn key_hash(key: &[u8]) -> Digest32 {
    sha256(key)
}

/// [`key_hash`] as the lowercase hex the registry stores and the verify
/// call carries.
pub fn key_hash_hex(key: &[u8]) -> String {
    to_hex(&key_hash(key))
}

/// The `body_sha256` claim of a body: lowercase hex SHA-256 of its exact
/// bytes (the empty body hashes the empty string).
pub fn body_sha256_hex(body: &[u8]) -> String {
    to_hex(&sha256(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_body_hashes_to_the_empty_string_digest() {
        assert_eq!(
            body_sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn keys_hash_to_lowercase_sha256_hex() {
        assert_eq!(
            key_hash_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key_hash(b"abc"), sha256(b"abc"));
    }
}
