//! Token parsing and verification on arbitrary input, under a lax and a
//! strict policy (replay protection, issuer, audience, two kids).
//!
//! The first byte picks the mode: raw tokens exercise the JWS framing,
//! base64url and header checks; signed modes wrap fuzzer-chosen header and
//! claims JSON in a valid HMAC, so the claim rules behind the signature are
//! reached too. Verification must never panic, and what it accepts must
//! satisfy the policy, judged again by an oracle of the target's own
//! (serde_json and the `hmac` crate, not the filter's reader): the HMAC of
//! the `alg` the policy allows under the secret its `kid` names (or the
//! key's own), `iat`, `exp`, `nbf`, the lifetime and the skew, `iss`,
//! `aud`, `htm` and `htu` against the request line, `jti`, and the digest
//! and expiry the filter hands on.
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
const OTHER_SECRET: &[u8] = b"other-secret";
const KEY_SECRET: &[u8] = b"tgs_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fn policies() -> &'static [Config; 2] {
    static POLICIES: OnceLock<[Config; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let secret = std::str::from_utf8(SECRET).unwrap_or_default();
        let other = std::str::from_utf8(OTHER_SECRET).unwrap_or_default();
        let lax = format!(
            r#"{{"internal_token":"t","jwt":{{"secret":{{"text":"{secret}"}},
            "algorithms":["HS256","HS384","HS512"]}}}}"#
        );
        let strict = format!(
            r#"{{"internal_token":"t","jwt":{{"secret":{{"text":"{secret}"}},
            "kid_secrets":{{"k1":{{"text":"{secret}"}},"k2":{{"text":"{other}"}}}},
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

/// The secret a shared-secret token must be signed with under `jwt`: the
/// `kid`'s, or the default one without a `kid` (the fuzz policies' secrets,
/// written out again).
fn shared_secret<'a>(jwt: &JwtPolicy, kid: Option<&str>) -> Option<&'a [u8]> {
    match kid {
        None => Some(SECRET),
        Some(kid) if !jwt.kid_secrets.contains_key(kid) => None,
        Some("k1") => Some(SECRET),
        Some("k2") => Some(OTHER_SECRET),
        Some(_) => None,
    }
}

/// A NumericDate as the contract reads it (RFC 7519 2: a number of seconds;
/// a fraction rounded the way that never extends validity).
fn date(value: Option<&Value>, up: bool) -> Option<i64> {
    let value = value?;
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    let f = value.as_f64()?;
    let rounded = if up { f.ceil() } else { f.floor() };
    (rounded.is_finite() && rounded.abs() <= 9.0e15).then_some(rounded as i64)
}

/// What an accepted token must satisfy under `jwt`, judged again from the
/// token's text by an oracle of its own (serde_json for the JSON, the
/// `hmac` crate for the signature): `key_secret` is the key's own secret
/// when it was verified with one.
fn check_accepted(
    verified: &VerifiedToken,
    token: &str,
    key_secret: Option<&[u8]>,
    jwt: &JwtPolicy,
    line: &RequestLine<'_>,
    now: i64,
) {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token that is not three segments");
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("accepted a header that is not JSON");
    let claims: Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("accepted claims that are not JSON");
    let tag = URL_SAFE_NO_PAD
        .decode(sig)
        .expect("accepted a signature that is not base64url");

    // alg: one the policy allows, and the one the signature was made with.
    let alg = header["alg"]
        .as_str()
        .expect("accepted a header without a string alg");
    assert!(
        jwt.algorithms.iter().any(|a| a.name() == alg),
        "accepted alg {alg}, which the policy does not allow"
    );
    assert!(header.get("crit").is_none(), "accepted a crit header");
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(other) => panic!("accepted a kid that is not a string: {other}"),
    };
    let secret = match key_secret {
        Some(own) => own,
        None => shared_secret(jwt, kid).expect("accepted a kid the policy does not know"),
    };
    let input = format!("{h}.{c}");
    let expected = match alg {
        "HS256" => mac::<Hmac<Sha256>>(secret, input.as_bytes()),
        "HS384" => mac::<Hmac<Sha384>>(secret, input.as_bytes()),
        "HS512" => mac::<Hmac<Sha512>>(secret, input.as_bytes()),
        other => panic!("accepted alg {other}"),
    };
    assert_eq!(
        tag, expected,
        "accepted a signature that is not the {alg} HMAC"
    );

    // The time claims, the lifetime and the skew.
    let skew = jwt.clock_skew_s;
    let iat = date(claims.get("iat"), true).expect("accepted no numeric iat");
    let exp = date(claims.get("exp"), false).expect("accepted no numeric exp");
    assert_eq!(verified.exp, exp, "the verified exp is not the token's");
    assert!(iat <= now + skew, "accepted a token issued in the future");
    assert!(now <= exp + skew, "accepted an expired token");
    assert!(exp >= iat, "accepted exp before iat");
    assert!(
        exp - iat <= jwt.max_lifetime_s,
        "accepted a lifetime over the maximum"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = date(Some(nbf), true).expect("accepted an nbf that is not a NumericDate");
        assert!(now >= nbf - skew, "accepted a token before its nbf");
    }

    // The body digest, the issuer, the audience and the request binding.
    let digest = claims["body_sha256"]
        .as_str()
        .expect("accepted no body_sha256");
    let hex: String = verified
        .body_sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, hex, "the verified digest is not the token's");
    if let Some(issuer) = &jwt.issuer {
        assert_eq!(
            claims["iss"].as_str(),
            Some(issuer.as_str()),
            "accepted another iss"
        );
    }
    if let Some(audience) = &jwt.audience {
        let named = match &claims["aud"] {
            Value::String(aud) => aud == audience,
            Value::Array(auds) => auds.iter().any(|a| a.as_str() == Some(audience.as_str())),
            _ => false,
        };
        assert!(named, "accepted an aud that does not name the gateway");
    }
    if let Some(htm) = claims.get("htm") {
        assert_eq!(htm.as_str(), Some(line.method), "accepted another htm");
    }
    if let Some(htu) = claims.get("htu") {
        assert_eq!(htu.as_str(), Some(line.path), "accepted another htu");
    }
    match claims.get("jti") {
        Some(Value::String(jti)) => assert_eq!(verified.jti.as_deref(), Some(jti.as_str())),
        Some(other) => panic!("accepted a jti that is not a string: {other}"),
        None => assert!(verified.jti.is_none()),
    }
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
            check_accepted(&verified, &token, None, jwt, &line, now);
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
                check_accepted(&verified, &own, Some(KEY_SECRET), jwt, &line, now);
            }
        }
    }
});
