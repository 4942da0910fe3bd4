//! A gateway on the fake host, for tests of the whole flow: a configured
//! root, tokens signed like PyJWT's, and requests driven callback by
//! callback as Envoy would.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use tollgate_wire::{body_sha256_hex, Algorithm, UsageRecord, VERIFY_PATH};

use crate::fake_host::{FakeHost, FakeWorld, Reply, Sent};
use crate::flow::{Flow, Stage};
use crate::host::Action;
use crate::metering::Decision;
use crate::root::Root;

/// The JWT secret of the test gateway.
pub const SECRET: &str = "flow-test-secret-0123456789abcdef0123";
/// The internal token of the test gateway.
pub const INTERNAL: &str = "internal-token-0123456789";
/// A key the tests use.
pub const KEY: &str = "tg_0123456789abcdef0123456789abcdef01234567";

/// The plugin configuration with `overrides` merged in (objects merge).
pub fn config(overrides: Value) -> String {
    let mut base = json!({
        "internal_token": INTERNAL,
        "jwt": {"secret": {"text": SECRET}},
        "max_body_bytes": 64,
    });
    merge(&mut base, overrides);
    base.to_string()
}

fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (k, v) in overrides {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, overrides) => *base = overrides,
    }
}

/// A compact HS256 JWS of `claims` under the test secret.
pub fn sign(claims: &Value) -> String {
    sign_with(SECRET, claims)
}

/// A compact HS256 JWS of `claims` under `secret`.
pub fn sign_with(secret: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mac = Algorithm::Hs256.sign(secret.as_bytes(), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// One Envoy worker running the filter on the fake host.
pub struct Gateway {
    pub world: FakeWorld,
    pub root: Root<FakeHost>,
}

impl Gateway {
    /// A gateway with the default test configuration.
    pub fn new() -> Self {
        Self::with(json!({}))
    }

    /// A gateway with these configuration overrides.
    pub fn with(overrides: Value) -> Self {
        Self::on(FakeWorld::new(), overrides)
    }

    /// Another worker of the same Envoy (same shared data and clock).
    pub fn on(world: FakeWorld, overrides: Value) -> Self {
        let mut root = Root::new(world.root());
        let size = world.configure(&config(overrides));
        assert!(
            root.on_configure(size),
            "{:?}",
            world.logs(crate::host::LogLevel::Warn)
        );
        Gateway { world, root }
    }

    /// The claims of a valid token for `body`, issued now.
    pub fn claims(&self, body: &[u8]) -> Value {
        let now = (self.world.now_ms() / 1000) as i64;
        json!({"iat": now, "exp": now + 60, "body_sha256": body_sha256_hex(body)})
    }

    /// A request with `key`, a valid token for `body`, and these extra headers.
    pub fn request(&self, key: &str, body: &[u8], extra: &[(&str, &str)]) -> Request {
        let token = sign(&self.claims(body));
        self.request_with_token(key, &token, extra)
    }

    /// A request with `key` and `token`; an extra `:method` or `:path`
    /// replaces the default one.
    pub fn request_with_token(&self, key: &str, token: &str, extra: &[(&str, &str)]) -> Request {
        let bearer = format!("Bearer {key}");
        let mut headers: Vec<(&str, &[u8])> = vec![
            (":method", b"POST"),
            (":path", b"/proxy/analyze"),
            ("authorization", bearer.as_bytes()),
            ("x-auth-token", token.as_bytes()),
        ];
        headers.retain(|(name, _)| !name.starts_with(':') || extra.iter().all(|(n, _)| n != name));
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_bytes())));
        let host = self.world.stream(&headers);
        let flow = self.root.stream(host.clone());
        Request { host, flow }
    }

    /// Verification calls sent so far.
    pub fn verify_calls(&self) -> Vec<Sent> {
        let calls = self.world.sent();
        calls
            .into_iter()
            .filter(|s| s.header(":path") == Some(VERIFY_PATH))
            .collect()
    }

    /// Sends a whole request for a key the sidecar calls active with `id`,
    /// answering the verification call if one is made; returns it ended.
    pub fn pass(&self, key: &str, id: i64) -> Request {
        let body = br#"{"text":"hi"}"#;
        let mut r = self.request(key, body, &[]);
        r.flow.on_request_headers(false);
        r.body(body, true);
        if r.awaiting() {
            r.answer_active(id);
        }
        r
    }

    /// The records waiting in the worker's usage buffer.
    pub fn buffered(&self) -> Vec<UsageRecord> {
        self.root.buffered()
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

/// One request through the flow.
pub struct Request {
    pub host: FakeHost,
    pub flow: Flow<FakeHost>,
}

impl Request {
    /// Appends a body chunk and calls the body callback.
    pub fn body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        let total = self.host.push_body(chunk);
        self.flow.on_request_body(total, end_of_stream)
    }

    /// Whether a verification call is in flight.
    pub fn awaiting(&self) -> bool {
        matches!(self.flow.stage(), Stage::Checking(c) if matches!(c.key, crate::flow::KeyState::Awaiting(_)))
    }

    /// The token of the verification call in flight.
    pub fn callout(&self) -> u32 {
        match self.flow.stage() {
            Stage::Checking(c) => match c.key {
                crate::flow::KeyState::Awaiting(call) => call.token,
                _ => panic!("no call in flight"),
            },
            other => panic!("no call in flight: {other:?}"),
        }
    }

    /// Answers the verification call with `status` and `body`, and its
    /// retry (after a quick failure) the same way: a sidecar fleet that
    /// keeps failing.
    pub fn answer(&mut self, status: Option<&str>, body: &str) {
        let mut token = self.answer_once(status, body);
        while self.awaiting() && self.callout() != token {
            token = self.answer_once(status, body);
        }
    }

    /// Answers only the verification call in flight; its token.
    pub fn answer_once(&mut self, status: Option<&str>, body: &str) -> u32 {
        let token = self.callout();
        let size = self.host.world().answer(status, body.as_bytes());
        self.flow.on_callout_reply(token, size);
        token
    }

    /// Answers the verification call: active, with this key id.
    pub fn answer_active(&mut self, id: i64) {
        self.answer(
            Some("200"),
            &format!(r#"{{"verdict":"active","key_id":{id}}}"#),
        );
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        self.flow.stage().decision()
    }

    /// Whether the request was let through.
    pub fn allowed(&self) -> bool {
        matches!(self.decision(), Some(Decision::Allowed(_)))
    }

    /// The local reply, if any.
    pub fn reply(&self) -> Option<Reply> {
        self.host.reply()
    }

    /// The error code of the local reply ("" without one).
    pub fn code(&self) -> String {
        self.reply().map(|r| r.code()).unwrap_or_default()
    }

    /// The upstream's response, then the end of the stream.
    pub fn respond(&mut self, status: &str, body_bytes: usize) {
        self.respond_with(status, &[&vec![b'x'; body_bytes]]);
    }

    /// The upstream's response in these chunks, then the end of the
    /// stream; each chunk as it passed on to the client.
    pub fn respond_with(&mut self, status: &str, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        self.host.set_response_header(":status", status);
        self.flow.on_response_headers();
        let mut passed = Vec::new();
        for (n, chunk) in chunks.iter().enumerate() {
            let size = self.host.push_response_chunk(chunk);
            self.flow.on_response_body(size, n + 1 == chunks.len());
            passed.push(self.host.passed_response_chunk());
        }
        self.flow.on_log();
        passed
    }
}
