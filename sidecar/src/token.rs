//! Minting the `X-Auth-Token` a client sends: a compact JWS, HMAC-signed,
//! binding the SHA-256 of the request body (see ARCHITECTURE.md section 2).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::keys::{random_hex, to_hex};

/// HMAC algorithms a token may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "HS384")]
    Hs384,
    #[value(name = "HS512")]
    Hs512,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }

    /// HMAC of `message` under `secret` with this algorithm.
    pub fn sign(self, secret: &[u8], message: &[u8]) -> Vec<u8> {
        fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8]) -> Vec<u8> {
            // HMAC accepts keys of any length, so this cannot fail.
            match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
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
}

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

/// Lowercase hex SHA-256 of a body: the `body_sha256` claim.
pub fn body_sha256(body: &[u8]) -> String {
    to_hex(&Sha256::digest(body))
}

/// A random `jti`: 16 bytes of lowercase hex.
pub fn random_jti() -> Result<String, String> {
    random_hex(16)
}

/// Builds and signs the token: `base64url(header).base64url(claims).base64url(mac)`.
pub fn sign_token(request: &TokenRequest<'_>, secret: &[u8]) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), json!(request.alg.name()));
    header.insert("typ".into(), json!("JWT"));
    if let Some(kid) = request.kid {
        header.insert("kid".into(), json!(kid));
    }
    let mut claims = Map::new();
    claims.insert("iat".into(), json!(request.iat));
    claims.insert(
        "exp".into(),
        json!(request.iat.saturating_add(request.ttl_secs)),
    );
    claims.insert("body_sha256".into(), json!(body_sha256(request.body)));
    if let Some(method) = request.method {
        claims.insert("htm".into(), json!(method));
    }
    if let Some(path) = request.path {
        claims.insert("htu".into(), json!(path));
    }
    if let Some(jti) = &request.jti {
        claims.insert("jti".into(), json!(jti));
    }
    let encode = |value: Map<String, Value>| {
        URL_SAFE_NO_PAD.encode(Value::Object(value).to_string().as_bytes())
    };
    let signing_input = format!("{}.{}", encode(header), encode(claims));
    let signature = request.alg.sign(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_part(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn tokens_verify_with_an_independent_hmac() {
        let request = TokenRequest {
            alg: Algorithm::Hs256,
            kid: Some("k1"),
            iat: 1_764_000_000,
            ttl_secs: 60,
            body: b"{\"text\":\"hello\"}",
            method: Some("POST"),
            path: Some("/proxy/analyze?x=1"),
            jti: Some("00ff".into()),
        };
        let token = sign_token(&request, b"secret");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode_part(parts[0]),
            json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
        );
        assert_eq!(
            decode_part(parts[1]),
            json!({
                "iat": 1_764_000_000, "exp": 1_764_000_060,
                "body_sha256": body_sha256(b"{\"text\":\"hello\"}"),
                "htm": "POST", "htu": "/proxy/analyze?x=1", "jti": "00ff"
            })
        );
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(b"secret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("signature must verify");
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

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = Algorithm::Hs256.sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn empty_body_hashes_to_the_empty_string_digest() {
        assert_eq!(
            body_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
