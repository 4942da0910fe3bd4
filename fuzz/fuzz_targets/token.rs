//! Token parsing and verification on arbitrary input, under a lax and a
//! strict policy (replay protection, issuer, audience, two kids).
//!
//! The first byte picks the mode: raw tokens exercise the JWS framing,
//! base64url and header checks; signed modes wrap fuzzer-chosen header and
//! claims JSON in a valid HMAC, so the claim rules behind the signature are
//! reached too. Verification must never panic, and what it accepts must
//! satisfy the policy.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Sha256, Sha384, Sha512};
use tollgate_filter::config::{self, Config};
use tollgate_filter::token::{verify_token, RequestLine, MAX_JTI_BYTES};

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123";
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

fn sign(alg: u8, header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let tag = match alg % 3 {
        0 => mac::<Hmac<Sha256>>(input.as_bytes()),
        1 => mac::<Hmac<Sha384>>(input.as_bytes()),
        _ => mac::<Hmac<Sha512>>(input.as_bytes()),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn mac<M: Mac + hmac::digest::KeyInit>(input: &[u8]) -> Vec<u8> {
    match <M as Mac>::new_from_slice(SECRET) {
        Ok(mut m) => {
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 4 {
        // Raw text as the X-Auth-Token value.
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
        // Fuzzer-chosen claims under a fixed, valid header.
        1 => sign(0, br#"{"alg":"HS256","typ":"JWT"}"#, rest),
        2 => sign(0, br#"{"alg":"HS256","kid":"k1"}"#, rest),
        // Fuzzer-chosen header and claims, split at the first NUL.
        _ => {
            let at = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(at);
            sign(mode / 4, header, claims.get(1..).unwrap_or_default())
        }
    };
    let line = RequestLine {
        method: "POST",
        path: "/proxy/analyze?x=1",
    };
    let now = NOW + i64::from(mode / 16) * 7 - 56;
    for config in policies() {
        let jwt = &config.jwt;
        let Ok(verified) = verify_token(&token, jwt, &line, now) else {
            continue;
        };
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
});
