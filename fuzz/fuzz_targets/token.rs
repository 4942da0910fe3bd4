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
//!
//! A header or claims set that repeats a member name is never accepted: it
//! is `malformed_token`, unless a check that comes before the claims are
//! read (the header, the secret, the signature) refuses it first. An oracle
//! independent of the filter's parser (serde_json's count of top-level
//! members against its `Map`, which keeps one entry per unescaped name)
//! spots repeats in what the fuzzer wrote; and every header and claims
//! object the fuzzer writes is also sent with one of its members written
//! again (its name plain or escaped).
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};
use tollgate_filter::config::{self, Config};
use tollgate_filter::error::Denial;
use tollgate_filter::token::JwtPolicy;
use tollgate_filter::token::{
    prepare_token, verify_token, RequestLine, Secret, VerifiedToken, MAX_JTI_BYTES,
};

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

/// The headers of the claims-only modes.
const HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
const HEADER_KID: &[u8] = br#"{"alg":"HS256","kid":"k1"}"#;

/// The header and claims of the last mode: split at the first NUL.
fn split_header(rest: &[u8]) -> (&[u8], &[u8]) {
    let at = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (header, claims) = rest.split_at(at);
    (header, claims.get(1..).unwrap_or_default())
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

/// Whether `json` is an object whose top level repeats a member name, by
/// serde_json's reading: more members than its `Map` has entries.
fn repeats_a_member(json: &[u8]) -> bool {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(json) else {
        return false;
    };
    let members = serde_json::Deserializer::from_slice(json).deserialize_map(Count);
    members.is_ok_and(|n| n > map.len())
}

/// `json`, if it is an object with a member, written out again with one of
/// its members repeated at the end; `pick` chooses which, and whether the
/// repeat spells its name's first character as a `\u` escape.
fn with_a_repeat(json: &[u8], pick: u8) -> Option<Vec<u8>> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(json) else {
        return None;
    };
    let (name, value) = map.iter().nth(usize::from(pick >> 1) % map.len().max(1))?;
    let plain = serde_json::to_string(name).ok()?;
    let spelled = if pick & 1 == 1 {
        escape_first(name).unwrap_or(plain)
    } else {
        plain
    };
    let mut out = serde_json::to_vec(&map).ok()?;
    out.pop(); // its closing brace
    out.push(b',');
    out.extend_from_slice(spelled.as_bytes());
    out.push(b':');
    out.extend_from_slice(&serde_json::to_vec(value).ok()?);
    out.push(b'}');
    Some(out)
}

/// A JSON string of `name` whose first character is written as `\uXXXX`
/// (two escapes for a character outside the BMP).
fn escape_first(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let first = chars.next()?;
    let rest = serde_json::to_string(chars.as_str()).ok()?;
    let mut units = [0u16; 2];
    let escaped: String = first
        .encode_utf16(&mut units)
        .iter()
        .map(|u| format!("\\u{u:04x}"))
        .collect();
    Some(format!("\"{escaped}{}", rest.get(1..)?))
}

/// The header and claims JSON of a compact token, when both decode.
fn segments(token: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let claims = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    Some((header, claims))
}

/// A token whose header or claims repeat a member name is never accepted,
/// with the shared secrets or with the key's own: a repeat in the header is
/// `malformed_token` before anything else of the header is judged, and one
/// in the claims is `malformed_token` once the signature holds, before any
/// claim is judged.
fn check_repeats_refused(token: &str, jwt: &JwtPolicy, line: &RequestLine<'_>, now: i64) {
    let Some((header, claims)) = segments(token) else {
        return;
    };
    let header_repeats = repeats_a_member(&header);
    if !header_repeats && !repeats_a_member(&claims) {
        return;
    }
    let key_secret = Secret::new(KEY_SECRET.to_vec());
    let shared = verify_token(token, jwt, line, now);
    let prepared = prepare_token(token, jwt);
    if header_repeats {
        assert!(
            matches!(prepared, Err(Denial::MalformedToken(_))),
            "a header that repeats a member is not malformed: {:?}",
            prepared.err()
        );
        assert!(matches!(shared, Err(Denial::MalformedToken(_))));
        return;
    }
    // Only the claims repeat: every answer is one decided before the claims
    // are judged.
    let before_claims = |result: &Result<VerifiedToken, Denial>| {
        matches!(
            result,
            Err(Denial::MalformedToken(_)
                | Denial::UnsupportedAlgorithm
                | Denial::UnknownKeyId
                | Denial::InvalidSignature)
        )
    };
    assert!(
        before_claims(&shared),
        "claims that repeat a member: {shared:?}"
    );
    if let Ok(prepared) = prepared {
        let own = prepared.verify(Some(&key_secret), jwt, line, now);
        assert!(
            before_claims(&own),
            "claims that repeat a member, key's secret: {own:?}"
        );
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
        1 => Some(sign(secret, 0, HEADER, rest)),
        2 => Some(sign(secret, 0, HEADER_KID, rest)),
        // Fuzzer-chosen header and claims, split at the first NUL.
        _ => {
            let (header, claims) = split_header(rest);
            Some(sign(secret, mode / 4, header, claims))
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
    // The fuzzer's header and claims again, with a member of one repeated,
    // signed with the shared and with the key's secret.
    let pick = mode >> 2;
    let repeats: Vec<(u8, Vec<u8>, Vec<u8>)> = match mode % 4 {
        0 => Vec::new(),
        1 | 2 => {
            let header = if mode % 4 == 1 { HEADER } else { HEADER_KID };
            with_a_repeat(rest, pick)
                .map(|claims| (0, header.to_vec(), claims))
                .into_iter()
                .collect()
        }
        _ => {
            let (header, claims) = split_header(rest);
            let alg = mode / 4;
            [
                with_a_repeat(header, pick).map(|h| (alg, h, claims.to_vec())),
                with_a_repeat(claims, pick).map(|c| (alg, header.to_vec(), c)),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
    };
    let repeated: Vec<String> = repeats
        .iter()
        .flat_map(|(alg, header, claims)| {
            [SECRET, KEY_SECRET].map(|secret| sign(secret, *alg, header, claims))
        })
        .collect();
    for config in policies() {
        let jwt = &config.jwt;
        if let Ok(verified) = verify_token(&token, jwt, &line, now) {
            check_accepted(&verified, jwt, now);
        }
        for token in std::iter::once(&token).chain(&repeated) {
            check_repeats_refused(token, jwt, &line, now);
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
