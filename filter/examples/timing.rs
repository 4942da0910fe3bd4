//! Host-side timing of the per-request CPU work: one token verification
//! (HS256, PyJWT-shaped claims) plus the SHA-256 of a 1 KiB body fed in
//! chunks, as the filter does it.
//!
//! Run: `cargo run -p tollgate-filter --release --example timing`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_filter::body::BodyHasher;
use tollgate_filter::token::{verify_token, Algorithm, JwtPolicy, RequestLine, Secret};
use tollgate_wire::{sha256, to_hex};

const SECRET: &[u8] = b"timing-secret-0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fn token(body: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"iat":{NOW},"exp":{},"body_sha256":"{}","htm":"POST","htu":"/proxy/analyze"}}"#,
        NOW + 60,
        to_hex(&sha256(body))
    );
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(SECRET) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

fn main() {
    let policy = JwtPolicy {
        default_secret: Some(Secret::new(SECRET.to_vec())),
        kid_secrets: BTreeMap::new(),
        algorithms: vec![Algorithm::Hs256],
        clock_skew_s: 30,
        max_lifetime_s: 300,
        issuer: None,
        audience: None,
        require_jti: false,
    };
    let line = RequestLine {
        method: "POST",
        path: "/proxy/analyze",
    };
    let body: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let token = token(&body);
    let run = || {
        let verified = verify_token(black_box(&token), &policy, &line, NOW);
        let mut hasher = BodyHasher::new();
        for chunk in black_box(&body).chunks(256) {
            hasher.update(chunk);
        }
        matches!(verified, Ok(v) if v.body_sha256 == hasher.digest())
    };
    if !run() {
        eprintln!("timing: the sample token does not verify");
        std::process::exit(1);
    }
    for _ in 0..10_000 {
        black_box(run());
    }
    let mut best = f64::MAX;
    let iterations = 100_000;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(run());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
        best = best.min(ns);
    }
    let mut hash_only = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(sha256(black_box(&body)));
        }
        hash_only = hash_only.min(start.elapsed().as_nanos() as f64 / f64::from(iterations));
    }
    println!(
        "token verification + 1 KiB body hash: {best:.0} ns per request (best of 5 x {iterations})"
    );
    println!("of which 1 KiB SHA-256 alone:         {hash_only:.0} ns");
}
