//! The `X-Auth-Token` as both sides see it: the HMAC algorithms a token may
//! be signed with and the names of its header parameters and claims. The
//! filter verifies with these; `tollgate token sign` signs with them.

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};

/// An HMAC algorithm of the contract. Nothing else exists here: `none` and
/// asymmetric algorithms cannot even be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
}

impl Algorithm {
    /// Every algorithm, strongest last.
    pub const ALL: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512];

    /// The algorithm a JOSE `alg` names, exactly (case-sensitive, as RFC 7515
    /// requires): `hs256`, `none` or `RS256` name nothing here.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }

    /// The HMAC of `message` under `secret`.
    pub fn sign(self, secret: &[u8], message: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length, so the error arm is never taken.
            match <M as Mac>::new_from_slice(secret) {
                Ok(mut m) => {
                    m.update(message);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }
        match self {
            Algorithm::Hs256 => mac::<Hmac<Sha256>>(secret, message),
            Algorithm::Hs384 => mac::<Hmac<Sha384>>(secret, message),
            Algorithm::Hs512 => mac::<Hmac<Sha512>>(secret, message),
        }
    }

    /// Whether `tag` is the HMAC of `message` under `secret`, compared in
    /// constant time (a tag of the wrong length is refused).
    pub fn verify(self, secret: &[u8], message: &[u8], tag: &[u8]) -> bool {
        fn check<M: Mac + hmac::digest::KeyInit>(
            secret: &[u8],
            message: &[u8],
            tag: &[u8],
        ) -> bool {
            match <M as Mac>::new_from_slice(secret) {
                Ok(mut m) => {
                    m.update(message);
                    m.verify_slice(tag).is_ok()
                }
                Err(_) => false,
            }
        }
        match self {
            Algorithm::Hs256 => check::<Hmac<Sha256>>(secret, message, tag),
            Algorithm::Hs384 => check::<Hmac<Sha384>>(secret, message, tag),
            Algorithm::Hs512 => check::<Hmac<Sha512>>(secret, message, tag),
        }
    }
}

/// Names of the JOSE header parameters the contract uses.
pub mod header {
    /// The signing algorithm.
    pub const ALG: &str = "alg";
    /// Which configured secret signed the token (rotation).
    pub const KID: &str = "kid";
    /// Extensions the recipient must understand (the filter understands none).
    pub const CRIT: &str = "crit";
    /// The media type, `JWT`; informational.
    pub const TYP: &str = "typ";
}

/// Names of the token claims of the contract (docs/CONTRACT.md).
pub mod claim {
    /// Issued at (NumericDate), required.
    pub const IAT: &str = "iat";
    /// Expiry (NumericDate), required.
    pub const EXP: &str = "exp";
    /// Not before (NumericDate), optional.
    pub const NBF: &str = "nbf";
    /// Lowercase hex SHA-256 of the exact body, required.
    pub const BODY_SHA256: &str = "body_sha256";
    /// The request method, optional binding.
    pub const HTM: &str = "htm";
    /// The request path with its query, optional binding.
    pub const HTU: &str = "htu";
    /// Token id, required with replay protection.
    pub const JTI: &str = "jti";
    /// Issuer, checked when configured.
    pub const ISS: &str = "iss";
    /// Audience, checked when configured.
    pub const AUD: &str = "aud";

    /// Every claim the contract names.
    pub const ALL: [&str; 9] = [IAT, EXP, NBF, BODY_SHA256, HTM, HTU, JTI, ISS, AUD];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::to_hex;

    #[test]
    fn names_round_trip_and_nothing_else_is_an_algorithm() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        for name in ["none", "hs256", "RS256", "ES256", ""] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let message = b"what do ya want for nothing?";
        let mac = Algorithm::Hs256.sign(b"Jefe", message);
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(Algorithm::Hs256.verify(b"Jefe", message, &mac));
        assert!(!Algorithm::Hs256.verify(b"jefe", message, &mac));
        assert!(!Algorithm::Hs256.verify(b"Jefe", message, &mac[..31]));
    }

    #[test]
    fn signatures_have_the_algorithm_length() {
        for (alg, len) in [
            (Algorithm::Hs256, 32),
            (Algorithm::Hs384, 48),
            (Algorithm::Hs512, 64),
        ] {
            assert_eq!(alg.sign(b"k", b"m").len(), len);
        }
    }
}
