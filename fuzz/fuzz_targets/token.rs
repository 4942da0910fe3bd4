//! Token parsing and verification on arbitrary input, under a lax and a
//! strict policy (replay protection, issuer, audience, two kids).
//!
//! The first byte picks the mode: raw tokens exercise the JWS framing,
//! base64url and header checks; signed modes wrap fuzzer-chosen header and
//! claims JSON in a valid HMAC, so the claim rules behind the signature are
//! reached too. Verification must never panic, and what it accepts must
//! satisfy the policy.
//!
//! The per-key secret path runs too: every signed token is also minted with
//! a key's own secret, and must then verify only with that secret (never
//! with the shared ones), while a token of the shared secret never verifies
//! for a key that has its own.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Sha256, Sha384, Sha512};
use tollgate_filter::config::{self, Config};
use tollgate_filter::token::{
    prepare_token, verify_token, RequestLine, Secret, VerifiedToken, MAX_JTI_BYTES,
};
use tollgate_filter::token::JwtPolicy;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123";
const KEY_SECRET: &[u8] = b"tgs_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fn policies() -> &'static [Config; 2] {
    static POLICIES: OnceLock<[Config; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let secret = std::str::from_utf8(SECRET).unwrap_or_default();
        let lax = format!(
            r#"{{"internal_token":"t","jwt":{{"secret":{{"text":"{secret}"}},
            "algorithms":["HS256","HS384","HS512"]}}}}"#
        );
        let strict = format!(
            r#"{{"internal_token":"t","jwt":{{"secret":{{"text":"{secret}"}},
            "kid_secrets":{{"k1":{{"text":"{secret}"}},"k2":{{"text":"other-secret"}}}},
            "algorithms":["HS256"],"clock_skew_s":0,"max_lifetime_s":60,
            "issuer":"iss","audience":"aud","require_jti":true}}}}"#
        );
        let parse = |doc: &str| {
            config::parse(doc.as_bytes())
                .map(|p| p.config)
                .unwrap_or_else(|e| panic!("fuzz policy is invalid: {e}"))
        };
        [parse(&lax), parse(&strict)]
    })
}

fn sign(secret: &[u8], alg: u8, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = match alg % 3 {
        0 => mac::<Hmac<Sha256>>(secret, input.as_bytes()),
        1 => mac::<Hmac<Sha384>>(secret, input.as_bytes()),
        _ => mac::<Hmac<Sha512>>(secret, input.as_bytes()),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &[u8]) -> Vec<u8> {
    match <M as Mac>::new_from_slice(secret) {
        Ok(mut m) => {
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// What an accepted token must satisfy under `jwt`.
fn check_accepted(verified: &VerifiedToken, jwt: &JwtPolicy, now: i64) {
    assert!(
        now <= verified.exp.saturating_add(jwt.clock_skew_s),
        "accepted an expired token"
    );
    if jwt.require_jti {
        let jti = verified
            .jti
            .as_deref()
            .expect("require_jti accepted no jti");
        assert!(!jti.is_empty() && jti.len() <= MAX_JTI_BYTES);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mint = |secret: &[u8]| match mode % 4 {
        // Raw text as the X-Auth-Token value.
        0 => std::str::from_utf8(rest).ok().map(str::to_string),
        // Fuzzer-chosen claims under a fixed, valid header.
        1 => Some(sign(secret, 0, br#"{"alg":"HS256","typ":"JWT"}"#, rest)),
        2 => Some(sign(secret, 0, br#"{"alg":"HS256","kid":"k1"}"#, rest)),
        // Fuzzer-chosen header and claims, split at the first NUL.
        _ => {
            let at = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(at);
            Some(sign(secret, mode / 4, header, claims.get(1..).unwrap_or_default()))
        }
    };
    let Some(token) = mint(SECRET) else {
        return;
    };
    let line = RequestLine {
        method: "POST",
        path: "/proxy/analyze?x=1",
    };
    let now = NOW + i64::from(mode / 16) * 7 - 56;
    let key_secret = Secret::new(KEY_SECRET.to_vec());
    for config in policies() {
        let jwt = &config.jwt;
        if let Ok(verified) = verify_token(&token, jwt, &line, now) {
            check_accepted(&verified, jwt, now);
        }
        if mode % 4 == 0 {
            continue;
        }
        // The shared secret's token never passes for a key with its own.
        if let Ok(prepared) = prepare_token(&token, jwt) {
            assert!(
                prepared.verify(Some(&key_secret), jwt, &line, now).is_err(),
                "a shared-secret token passed for a key with its own secret"
            );
        }
        // The key's token passes only with the key's secret.
        let Some(own) = mint(KEY_SECRET) else {
            continue;
        };
        assert!(
            verify_token(&own, jwt, &line, now).is_err(),
            "a key's own token passed under the shared secrets"
        );
        if let Ok(prepared) = prepare_token(&own, jwt) {
            if let Ok(verified) = prepared.verify(Some(&key_secret), jwt, &line, now) {
                check_accepted(&verified, jwt, now);
            }
        }
    }
});
