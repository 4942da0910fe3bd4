//! Minting the `X-Auth-Token` a client sends: a compact JWS, HMAC-signed,
//! binding the SHA-256 of the request body (see docs/CONTRACT.md).
//!
//! The algorithms, the claim and header names and the body digest are the
//! ones the filter verifies with, from `tollgate_wire`; this module only
//! lays them out as a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tollgate_wire::jws::{claim, header};
use tollgate_wire::{body_sha256_hex, Algorithm};

use crate::domain::random::random_hex;

/// The `typ` header every minted token carries.
pub const TOKEN_TYPE: &str = "JWT";

/// Random bytes in a `jti` (128 bits, 32 hex digits).
pub const JTI_RANDOM_BYTES: usize = 16;

/// What a token asserts.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub alg: Algorithm,
    pub kid: Option<&'a str>,
    /// Issued-at, seconds since the Unix epoch.
    pub iat: i64,
    /// Lifetime in seconds; `exp = iat + ttl_secs`.
    pub ttl_secs: i64,
    /// The exact request body.
    pub body: &'a [u8],
    pub method: Option<&'a str>,
    /// Path with query, as the request will carry it.
    pub path: Option<&'a str>,
    /// A unique token id, for replay protection.
    pub jti: Option<String>,
}

/// A random `jti`: [`JTI_RANDOM_BYTES`] bytes of lowercase hex.
pub fn random_jti() -> Result<String, String> {
    random_hex(JTI_RANDOM_BYTES)
}

/// Builds and signs the token: `base64url(header).base64url(claims).base64url(mac)`.
pub fn sign_token(request: &TokenRequest<'_>, secret: &[u8]) -> String {
    let mut head = Map::new();
    head.insert(header::ALG.into(), json!(request.alg.name()));
    head.insert(header::TYP.into(), json!(TOKEN_TYPE));
    if let Some(kid) = request.kid {
        head.insert(header::KID.into(), json!(kid));
    }
    let mut claims = Map::new();
    claims.insert(claim::IAT.into(), json!(request.iat));
    claims.insert(
        claim::EXP.into(),
        json!(request.iat.saturating_add(request.ttl_secs)),
    );
    claims.insert(
        claim::BODY_SHA256.into(),
        json!(body_sha256_hex(request.body)),
    );
    if let Some(method) = request.method {
        claims.insert(claim::HTM.into(), json!(method));
    }
    if let Some(path) = request.path {
        claims.insert(claim::HTU.into(), json!(path));
    }
    if let Some(jti) = &request.jti {
        claims.insert(claim::JTI.into(), json!(jti));
    }
    let encode = |value: Map<String, Value>| {
        URL_SAFE_NO_PAD.encode(Value::Object(value).to_string().as_bytes())
    };
    let signing_input = format!("{}.{}", encode(head), encode(claims));
    let signature = request.alg.sign(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn request(alg: Algorithm) -> TokenRequest<'static> {
        TokenRequest {
            alg,
            kid: Some("k1"),
            iat: 1_764_000_000,
            ttl_secs: 60,
            body: b"{\"text\":\"hello\"}",
            method: Some("POST"),
            path: Some("/proxy/analyze?x=1"),
            jti: Some("00ff".into()),
        }
    }

    #[test]
    fn tokens_carry_the_contract_claims_and_verify() {
        let token = sign_token(&request(Algorithm::Hs256), b"secret");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]),
            json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
        );
        // sha256 of the body, computed independently (sha256sum).
        assert_eq!(
            decode_part(parts[1]),
            json!({
                "iat": 1_764_000_000, "exp": 1_764_000_060,
                "body_sha256": "cbbbdcd27692344de5dbab3abcaba413fb0f45307267de7081401576df1cb176",
                "htm": "POST", "htu": "/proxy/analyze?x=1", "jti": "00ff"
            })
        );
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert!(Algorithm::Hs256.verify(b"secret", signing_input.as_bytes(), &tag));
        assert!(!Algorithm::Hs256.verify(b"other", signing_input.as_bytes(), &tag));
    }

    #[test]
    fn the_header_names_the_algorithm_that_signed() {
        for alg in Algorithm::ALL {
            let token = sign_token(&request(alg), b"secret");
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(decode_part(parts[0])["alg"], alg.name());
            let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            let signing_input = format!("{}.{}", parts[0], parts[1]);
            assert!(alg.verify(b"secret", signing_input.as_bytes(), &tag));
        }
    }

    #[test]
    fn jtis_are_random_hex() {
        let jti = random_jti().unwrap();
        assert_eq!(jti.len(), 2 * JTI_RANDOM_BYTES);
        assert_ne!(jti, random_jti().unwrap());
    }
}
