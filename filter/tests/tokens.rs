//! Token verification against fixtures minted independently by PyJWT
//! (`tests/fixtures/gen_tokens.py` writes `tests/fixtures/tokens.json`).
//! Every case runs under a policy built through the real configuration
//! parser, then the body is hashed incrementally and compared, as in Envoy.

use serde_json::{json, Value};
use tollgate_filter::body::BodyHasher;
use tollgate_filter::config;
use tollgate_filter::error::Denial;
use tollgate_filter::flow::{Checking, Next, Verified};
use tollgate_filter::token::{prepare_token, RequestLine};
use tollgate_filter::verdict::KeyDecision;
use tollgate_wire::sha256;

fn fixtures() -> Value {
    let text = include_str!("fixtures/tokens.json");
    serde_json::from_str(text).expect("tokens.json is JSON")
}

/// The plugin configuration a case runs under: the fixture defaults plus
/// the case's overrides.
fn plugin_config(defaults: &Value, policy: &Value) -> config::Config {
    let mut jwt = json!({
        "secret": {"text": defaults["secret"]},
        "kid_secrets": {},
        "algorithms": defaults["algorithms"],
        "clock_skew_s": defaults["clock_skew_s"],
        "max_lifetime_s": defaults["max_lifetime_s"],
    });
    for (kid, secret) in defaults["kid_secrets"].as_object().unwrap() {
        jwt["kid_secrets"][kid] = json!({"text": secret});
    }
    for (key, value) in policy.as_object().unwrap() {
        match key.as_str() {
            "no_default_secret" => {
                jwt.as_object_mut().unwrap().remove("secret");
            }
            "algorithms" | "clock_skew_s" | "require_jti" | "issuer" | "audience" => {
                jwt[key] = value.clone();
            }
            other => panic!("unknown policy override {other}"),
        }
    }
    let doc = json!({"internal_token": "t", "jwt": jwt});
    config::parse(&serde_json::to_vec(&doc).unwrap())
        .expect("fixture policy is a valid configuration")
        .config
}

/// The filter's path: the header-phase checks, the rest of the token once
/// an active verdict (without a key secret) is in, then the body compared.
fn run(case: &Value, defaults: &Value, now: i64) -> Result<(), Denial> {
    let config = plugin_config(defaults, &case["policy"]);
    let line = RequestLine {
        method: case["method"].as_str().unwrap(),
        path: case["path"].as_str().unwrap(),
    };
    let token = prepare_token(case["token"].as_str().unwrap(), &config.jwt)?;
    let body = case["body"].as_str().unwrap().as_bytes();
    let active = KeyDecision {
        key_id: Some(1),
        result: Ok(1),
        signing_secret: None,
        budgets: Default::default(),
    };
    let mut checking = Checking::new([0; 32], token, now, config.max_body_bytes);
    let verdict = checking.key_known(active, |token, key_secret| {
        let token = token.verify(key_secret, &config.jwt, &line, now)?;
        Ok(Verified {
            expected_body: token.body_sha256,
            jti: None,
        })
    });
    if let Next::Deny(d) = verdict {
        return Err(d);
    }
    let fetch = |start: u64, len: u64| {
        body.get(start as usize..(start + len) as usize)
            .map(<[u8]>::to_vec)
    };
    match checking.body(body.len() as u64, true, fetch) {
        Next::Admit(_) => Ok(()),
        Next::Deny(d) => Err(d),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_pyjwt_fixture_gets_its_expected_answer() {
    let fx = fixtures();
    let now = fx["now"].as_i64().unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 100, "fixtures look truncated");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let got = run(case, &fx["defaults"], now);
        let got_code = match got {
            Ok(()) => "ok",
            Err(d) => d.code(),
        };
        if got_code != expect {
            failures.push(format!("{name}: expected {expect}, got {got:?}"));
            continue;
        }
        if case.get("detail").and_then(Value::as_str) == Some("format")
            && got != Err(Denial::BodyHashFormat)
        {
            failures.push(format!(
                "{name}: expected the body hash format error, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_cover_what_the_contract_requires() {
    let fx = fixtures();
    let names: Vec<&str> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for required in [
        "hs256_valid",
        "hs384_valid",
        "hs512_valid",
        "kid_2024",
        "kid_unknown",
        "alg_none_empty_signature",
        "alg_None_empty_signature",
        "alg_NONE_empty_signature",
        "hs512_when_only_hs256",
        "rs256_header",
        "es256_header",
        "header_not_base64url",
        "two_segments",
        "tampered_payload",
        "tampered_signature",
        "exp_at_skew_edge",
        "exp_one_second_past_skew",
        "nbf_at_skew_edge",
        "nbf_one_second_past_skew",
        "iat_at_skew_edge",
        "iat_one_second_past_skew",
        "lifetime_one_second_too_long",
        "missing_iat",
        "iat_string",
        "body_hash_mismatch",
        "body_hash_uppercase_hex",
        "body_hash_base64",
        "htm_mismatch",
        "htu_other_query",
        "iss_mismatch",
        "aud_mismatch",
    ] {
        assert!(names.contains(&required), "missing fixture {required}");
    }
}

#[test]
fn the_same_token_expires_exactly_one_second_past_the_skew() {
    let fx = fixtures();
    let now = fx["now"].as_i64().unwrap();
    let case = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hs256_valid")
        .unwrap()
        .clone();
    // exp = now + 60, skew 30: valid through now + 90.
    assert_eq!(run(&case, &fx["defaults"], now + 90), Ok(()));
    assert_eq!(
        run(&case, &fx["defaults"], now + 91),
        Err(Denial::TokenExpired)
    );
    // iat = now: it may arrive up to 30 s "early" by our clock.
    assert_eq!(run(&case, &fx["defaults"], now - 30), Ok(()));
    assert_eq!(
        run(&case, &fx["defaults"], now - 31),
        Err(Denial::TokenIssuedInFuture)
    );
}

#[test]
fn incremental_hash_of_a_fixture_body_matches_its_claim() {
    let fx = fixtures();
    let case = &fx["cases"][0];
    let body = case["body"].as_str().unwrap().as_bytes();
    let mut h = BodyHasher::new();
    for byte in body {
        h.update(std::slice::from_ref(byte));
    }
    assert_eq!(h.digest(), sha256(body));
}
