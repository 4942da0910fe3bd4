//! Probe filters that split the gateway's per-request cost into parts.
//!
//! The plugin's `root_id` picks the behaviour:
//! - `noop`: every callback returns `Continue`. `bare` -> `wasm_noop` is
//!   what any Rust proxy-wasm filter costs on Envoy's V8 runtime (context
//!   creation and one VM entry per callback) before it does any work.
//! - `mimic`: the host calls tollgate's filter makes for a request whose
//!   key is cached, in the same callbacks, without its logic (no token
//!   check, no hashing, no usage records): read the clock, take 16 random
//!   bytes from a pool drawn 256 ids at a time (as `filter/src/request_id.rs`
//!   does), read all request headers, replace `x-request-id`, remove the
//!   two credential headers, read one shared-data slot, hold the headers
//!   until the body is complete, read the body, add `x-tollgate-key-id`;
//!   read the response headers once (the filter takes `:status` and the
//!   units header from one read); on log read the clock and bump a
//!   gauge. The hit and allowed counters are summed by the filter and
//!   handed to Envoy on its tick, so the mimic moves no counter per
//!   request. The filter's list of calls is pinned by its test
//!   `a_cached_request_makes_these_host_calls_and_no_more`
//!   (`filter/src/flow/tests.rs`); keep the two in step. `wasm_noop` -> `wasm_mimic`
//!   is the cost of those host calls; `wasm_mimic` -> `gate_cached` is
//!   tollgate's own work (token, hashing, usage buffering and flushing).
//! - `floor`: the least a filter keeping the client contract
//!   (`docs/CONTRACT.md`) must do per request, on the same requests: read
//!   the clock once (the usage row's time), read the request headers, set
//!   `x-request-id` to a minted id, remove the two credentials, hash the
//!   API key and look it up in a map of this VM's own (no shared data),
//!   decode the token and parse its claims, check its HMAC-SHA256, read the
//!   body and compare its SHA-256 with the claim, add `x-tollgate-key-id`,
//!   read the response headers (the status a usage row records); refuse a
//!   bad token with a 401. It keeps no usage record, moves no metric and
//!   has no limits: `wasm_floor` against `bare` is what the contract
//!   costs a wasm gate on this machine, before metering.
//!
//! Host errors are ignored: these measure cost. Only `floor` refuses
//! anything, so that the bench's error count shows it checked every token.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_wire::hex::{parse_lower_hex, to_hex};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(ProbeRoot { kind: Kind::Noop }));
}}

/// The metric the mimic bumps per request (as tollgate bumps its buffered gauge).
struct Metrics {
    buffered: u32,
}

/// Request-id bytes per draw from the host's randomness (the filter's pool).
const POOL_BYTES: usize = 16 * 256;

thread_local! {
    static POOL: std::cell::RefCell<(Vec<u8>, usize)> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// 16 bytes of the pool, drawing a new one when it is spent.
fn pooled_id() -> [u8; 16] {
    POOL.with(|pool| {
        let (bytes, next) = &mut *pool.borrow_mut();
        if *next + 16 > bytes.len() {
            bytes.resize(POOL_BYTES, 0);
            let _ = getrandom::getrandom(bytes);
            *next = 0;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[*next..*next + 16]);
        *next += 16;
        id
    })
}

/// Which probe the plugin's `root_id` asked for.
enum Kind {
    Noop,
    Mimic(Rc<Metrics>),
    Floor(Rc<Vec<u8>>),
}

struct ProbeRoot {
    kind: Kind,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .unwrap_or_default();
        if root_id == b"mimic" {
            let define = |kind, name| hostcalls::define_metric(kind, name).unwrap_or(0);
            self.kind = Kind::Mimic(Rc::new(Metrics {
                buffered: define(MetricType::Gauge, "probe_buffered"),
            }));
        } else if root_id == b"floor" {
            // The gateway's own secret, from the VM's environment as the
            // filter reads it, so that the floor checks the bench's tokens.
            let secret = std::env::var(FLOOR_SECRET_ENV).unwrap_or_default();
            self.kind = Kind::Floor(Rc::new(secret.into_bytes()));
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.kind {
            Kind::Mimic(metrics) => Some(Box::new(Mimic {
                metrics: metrics.clone(),
            })),
            Kind::Floor(secret) => Some(Box::new(Floor {
                secret: secret.clone(),
                key: Vec::new(),
                token: Vec::new(),
            })),
            Kind::Noop => Some(Box::new(Noop)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {}

struct Mimic {
    metrics: Rc<Metrics>,
}

impl Context for Mimic {}

impl HttpContext for Mimic {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _headers = arrive();
        let _ = hostcalls::get_shared_data("tollgate.kc.1");
        if end_of_stream {
            hand_on_key_id();
            return Action::Continue;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        hand_on_key_id();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
        Action::Continue
    }

    fn on_log(&mut self) {
        let _ = hostcalls::get_current_time();
        let _ = hostcalls::increment_metric(self.metrics.buffered, 1);
    }
}

/// What every gate does first with a request's headers, as tollgate does:
/// read the clock, mint an id from the pool, read the headers once, set
/// `x-request-id`, remove the two credentials. Returns the headers as read.
fn arrive() -> Vec<(String, Vec<u8>)> {
    let _ = hostcalls::get_current_time();
    let id = to_hex(&pooled_id());
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-request-id", Some(&id));
    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "authorization");
    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-auth-token");
    headers
}

/// Adds `x-tollgate-key-id` for a request let through. Key id 0 is no key's
/// (ids start at 1): the bench's usage check, which reads the key ids the
/// upstream served, never takes these requests for a metered key's.
fn hand_on_key_id() {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-tollgate-key-id", Some("0"));
}

/// The environment variable the gateway's JWT secret is in.
const FLOOR_SECRET_ENV: &str = "TOLLGATE_JWT_SECRET";

thread_local! {
    /// The floor's key cache, this VM's own: the SHA-256 of every key seen.
    static KEYS: RefCell<HashSet<[u8; 32]>> = RefCell::new(HashSet::new());
}

/// The credentials the floor took from the request headers.
struct Floor {
    secret: Rc<Vec<u8>>,
    key: Vec<u8>,
    token: Vec<u8>,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        for (name, value) in arrive() {
            if name.eq_ignore_ascii_case("authorization") {
                self.key = value.strip_prefix(b"Bearer ").unwrap_or(&value).to_vec();
            } else if name.eq_ignore_ascii_case("x-auth-token") {
                self.token = value;
            }
        }
        if end_of_stream {
            return self.check(&[]);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.check(&body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::get_map_bytes(MapType::HttpResponseHeaders);
        Action::Continue
    }
}

impl Floor {
    /// The key, the token and the body checked: the key id handed on, or
    /// the request refused (so that the bench's error count shows the floor
    /// checked what it was sent).
    fn check(&self, body: &[u8]) -> Action {
        let key_hash: [u8; 32] = Sha256::digest(&self.key).into();
        // The look-up of a cached key (every key is taken as known).
        KEYS.with(|keys| keys.borrow_mut().insert(key_hash));
        if !token_matches(&self.secret, &self.token, body) {
            let _ = hostcalls::send_http_response(
                401,
                vec![("content-type", "application/json")],
                Some(br#"{"error":"invalid_token"}"#),
            );
            return Action::Pause;
        }
        hand_on_key_id();
        Action::Continue
    }
}

/// The token's header, as far as the contract reads it.
#[derive(Deserialize)]
struct JwsHeader<'a> {
    alg: &'a str,
}

/// The claims the contract checks on every request (`htm` and `htu` are
/// checked when the token has them).
#[derive(Deserialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    body_sha256: &'a str,
    htm: Option<&'a str>,
    htu: Option<&'a str>,
}

/// Whether `token` is a JWS signed with `secret` whose claims hold
/// for this request and whose `body_sha256` is the body's hash: the header
/// and claims decoded and parsed, the signature checked, the body hashed.
fn token_matches(secret: &[u8], token: &[u8], body: &[u8]) -> bool {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(claims), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let decode = |part: &[u8]| URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
    let (header, claims) = (decode(header), decode(claims));
    let signed = &token[..signing_input_len(token)];
    let signature_ok = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(signed);
            mac.verify_slice(&decode(signature)).is_ok()
        }
        Err(_) => false,
    };
    let body_hash: [u8; 32] = Sha256::digest(body).into();
    let alg_ok = serde_json::from_slice::<JwsHeader>(&header).is_ok_and(|h| h.alg == "HS256");
    let claims_ok = serde_json::from_slice::<Claims>(&claims).is_ok_and(|c| {
        parse_lower_hex(c.body_sha256) == Some(body_hash)
            && c.htm.is_none_or(|m| m == "POST")
            && c.htu.is_none_or(|u| u.starts_with('/'))
            && c.iat <= c.exp
    });
    signature_ok && alg_ok && claims_ok
}

/// The length of a JWS's signing input (header and claims, up to the last dot).
fn signing_input_len(token: &[u8]) -> usize {
    token.iter().rposition(|b| *b == b'.').unwrap_or(0)
}
