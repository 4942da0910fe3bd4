//! Tests only: a fake Envoy behind the traits of `abi::api`. It records
//! every call the module makes (replies, resumes, callouts, metrics,
//! scheduler posts), answers from what a test set up, and panics in a named
//! call on demand, so the hooks' behaviour runs without Envoy.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::abi::{EnvoyConfig, EnvoyContext, EnvoyScheduler, EnvoyStream};

/// A callout the module sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Envoy's id for it.
    pub id: u64,
    /// The cluster.
    pub cluster: String,
    /// The request headers.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// The timeout.
    pub timeout_ms: u64,
}

impl Sent {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers.iter().find(|(n, _)| n == name)?;
        Some(value)
    }
}

/// A local reply the module sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
}

/// What runs inside a callout, given its id.
type CalloutHook = Box<dyn FnOnce(u64)>;

/// What one Envoy process holds for a configuration and its streams.
#[derive(Default)]
struct World {
    /// Metrics by Envoy id: (name, gauge, value).
    metrics: RefCell<Vec<(String, bool, i64)>>,
    /// The configuration's callouts.
    sent: RefCell<Vec<Sent>>,
    next_callout: Cell<u64>,
    refuse_callouts: Cell<bool>,
    no_scheduler: Cell<bool>,
    panic_in: Cell<Option<&'static str>>,
    /// Runs inside the configuration's next callout, with its id, as
    /// Envoy answers a callout that fails at once.
    during_callout: RefCell<Option<CalloutHook>>,
    /// Posts through every scheduler, and schedulers not yet deleted.
    posted: Arc<Mutex<Vec<u64>>>,
    schedulers: Arc<AtomicUsize>,
}

/// A fake Envoy: the configuration side (clones share one world).
#[derive(Clone, Default)]
pub struct FakeEnvoy(Rc<World>);

impl FakeEnvoy {
    /// An Envoy with no metric, callout or stream yet.
    pub fn new() -> Self {
        let envoy = FakeEnvoy::default();
        envoy.0.next_callout.set(1);
        envoy
    }

    /// The configuration side, as the module holds it.
    pub fn config(&self) -> Box<dyn EnvoyConfig> {
        Box::new(self.clone())
    }

    /// A stream whose request has these headers.
    pub fn stream(&self, headers: &[(&str, &str)]) -> Rc<FakeStream> {
        let request = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()));
        Rc::new(FakeStream {
            envoy: self.clone(),
            request_headers: RefCell::new(request.collect()),
            ..FakeStream::default()
        })
    }

    /// The value of the metric `name`, summed over every call (0 if never moved).
    pub fn metric(&self, name: &str) -> i64 {
        let metrics = self.0.metrics.borrow();
        metrics
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(.., v)| v)
            .sum()
    }

    /// Whether the configuration defined the metric `name`.
    pub fn defined(&self, name: &str) -> bool {
        self.0.metrics.borrow().iter().any(|(n, ..)| n == name)
    }

    /// The configuration's callouts so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.0.sent.borrow().clone()
    }

    /// The configuration's callouts to `path`.
    pub fn sent_to(&self, path: &str) -> Vec<Sent> {
        let sent = self.sent();
        sent.into_iter()
            .filter(|s| s.header(":path") == Some(path))
            .collect()
    }

    /// Refuse (or accept again) every callout.
    pub fn refuse_callouts(&self, refuse: bool) {
        self.0.refuse_callouts.set(refuse);
    }

    /// The next callout gets this id.
    pub fn next_callout_id(&self, id: u64) {
        self.0.next_callout.set(id);
    }

    /// Runs `f` inside the configuration's next callout, with its id.
    pub fn during_callout(&self, f: impl FnOnce(u64) + 'static) {
        *self.0.during_callout.borrow_mut() = Some(Box::new(f));
    }

    /// Envoy cannot make a scheduler.
    pub fn no_scheduler(&self) {
        self.0.no_scheduler.set(true);
    }

    /// The next call named `call` (configuration or stream) panics.
    pub fn panic_in(&self, call: &'static str) {
        self.0.panic_in.set(Some(call));
    }

    /// The events posted through the schedulers so far.
    pub fn posted(&self) -> Vec<u64> {
        self.0.posted.lock().unwrap().clone()
    }

    /// Schedulers made and not yet deleted.
    pub fn live_schedulers(&self) -> usize {
        self.0.schedulers.load(Ordering::SeqCst)
    }

    fn call(&self, name: &str) {
        if self.0.panic_in.get() == Some(name) {
            self.0.panic_in.set(None);
            panic!("fake Envoy: a panic in {name}");
        }
    }

    fn move_metric(&self, id: usize, by: i64) -> bool {
        match self.0.metrics.borrow_mut().get_mut(id) {
            Some((.., value)) => {
                *value += by;
                true
            }
            None => false,
        }
    }

    fn send(&self, sent: &RefCell<Vec<Sent>>, call: Sent) -> Option<u64> {
        self.call("callout");
        if self.0.refuse_callouts.get() {
            return None;
        }
        let id = self.0.next_callout.get();
        self.0.next_callout.set(id + 1);
        sent.borrow_mut().push(Sent { id, ..call });
        Some(id)
    }
}

fn sent(cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Sent {
    Sent {
        id: 0,
        cluster: cluster.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
        timeout_ms,
    }
}

impl EnvoyContext for FakeEnvoy {
    fn increment_counter(&self, id: usize, by: u64) -> bool {
        self.call("increment_counter");
        self.move_metric(id, i64::try_from(by).unwrap())
    }

    fn move_gauge(&self, id: usize, by: i64) -> bool {
        self.call("move_gauge");
        self.move_metric(id, by)
    }

    fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let id = self.send(&self.0.sent, sent(cluster, headers, body, timeout_ms))?;
        let during = self.0.during_callout.borrow_mut().take();
        if let Some(f) = during {
            f(id);
        }
        Some(id)
    }
}

impl EnvoyConfig for FakeEnvoy {
    fn define_metric(&self, gauge: bool, name: &str) -> Option<usize> {
        self.call("define_metric");
        let mut metrics = self.0.metrics.borrow_mut();
        metrics.push((name.to_string(), gauge, 0));
        Some(metrics.len() - 1)
    }

    fn scheduler(&self) -> Option<Box<dyn EnvoyScheduler>> {
        self.call("scheduler");
        if self.0.no_scheduler.get() {
            return None;
        }
        self.0.schedulers.fetch_add(1, Ordering::SeqCst);
        Some(Box::new(FakeScheduler {
            posted: self.0.posted.clone(),
            schedulers: self.0.schedulers.clone(),
        }))
    }
}

/// A scheduler that counts its posts (from any thread).
struct FakeScheduler {
    posted: Arc<Mutex<Vec<u64>>>,
    schedulers: Arc<AtomicUsize>,
}

impl EnvoyScheduler for FakeScheduler {
    fn commit(&self, event: u64) {
        self.posted.lock().unwrap().push(event);
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.schedulers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One stream's filter in the fake Envoy.
#[derive(Default)]
pub struct FakeStream {
    envoy: FakeEnvoy,
    request_headers: RefCell<Vec<(String, Vec<u8>)>>,
    body: RefCell<Vec<u8>>,
    response_headers: RefCell<Vec<(String, Vec<u8>)>>,
    response_frame: RefCell<Vec<u8>>,
    replies: RefCell<Vec<Reply>>,
    resumed: Cell<u32>,
    sent: RefCell<Vec<Sent>>,
    /// Runs inside the next local reply, as Envoy runs the response hooks.
    during_reply: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs inside the next resumption, as Envoy runs the next filters
    /// (and the response hooks of a reply it sends itself).
    during_resume: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl FakeStream {
    /// The stream, as the module holds it.
    pub fn handle(self: &Rc<Self>) -> Rc<dyn EnvoyStream> {
        self.clone()
    }

    /// A request body frame arrives (Envoy buffers it after the others).
    pub fn receive_body(&self, chunk: &[u8]) {
        self.body.borrow_mut().extend_from_slice(chunk);
    }

    /// The upstream's response headers arrive.
    pub fn respond(&self, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()));
        *self.response_headers.borrow_mut() = headers.collect();
    }

    /// A response body frame arrives.
    pub fn response_frame(&self, frame: &[u8]) {
        *self.response_frame.borrow_mut() = frame.to_vec();
    }

    /// The response body frame as it passes on (after any replacement).
    pub fn passed_response_frame(&self) -> Vec<u8> {
        self.response_frame.borrow().clone()
    }

    /// The request body as the upstream would get it.
    pub fn forwarded_body(&self) -> Vec<u8> {
        self.body.borrow().clone()
    }

    /// Runs `f` inside the next local reply.
    pub fn during_reply(&self, f: impl FnOnce() + 'static) {
        *self.during_reply.borrow_mut() = Some(Box::new(f));
    }

    /// Runs `f` inside the next resumption of the held request.
    pub fn during_resume(&self, f: impl FnOnce() + 'static) {
        *self.during_resume.borrow_mut() = Some(Box::new(f));
    }

    /// The request's headers now.
    pub fn request_header(&self, name: &str) -> Option<String> {
        let headers = self.request_headers.borrow();
        let (_, value) = headers.iter().find(|(n, _)| n == name)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// The local replies sent.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.borrow().clone()
    }

    /// The one local reply's error code ("" without a reply).
    pub fn reply_code(&self) -> String {
        let replies = self.replies();
        let Some(reply) = replies.first() else {
            return String::new();
        };
        let (_, after) = reply.body.split_once(r#""code":""#).unwrap();
        after.split('"').next().unwrap().to_string()
    }

    /// Times the held request was let go on.
    pub fn resumed(&self) -> u32 {
        self.resumed.get()
    }

    /// The stream's callouts so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.borrow().clone()
    }
}

impl EnvoyContext for FakeStream {
    fn increment_counter(&self, id: usize, by: u64) -> bool {
        self.envoy.increment_counter(id, by)
    }

    fn move_gauge(&self, id: usize, by: i64) -> bool {
        self.envoy.move_gauge(id, by)
    }

    fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        self.envoy
            .send(&self.sent, sent(cluster, headers, body, timeout_ms))
    }
}

impl EnvoyStream for FakeStream {
    fn request_headers(&self) -> Option<Vec<(String, Vec<u8>)>> {
        self.envoy.call("request_headers");
        Some(self.request_headers.borrow().clone())
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool {
        self.envoy.call("set_request_header");
        let mut headers = self.request_headers.borrow_mut();
        headers.retain(|(n, _)| n != name);
        if let Some(value) = value {
            headers.push((name.to_string(), value.as_bytes().to_vec()));
        }
        true
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.envoy.call("response_header");
        let headers = self.response_headers.borrow();
        let (_, value) = headers.iter().find(|(n, _)| n == name)?;
        Some(value.clone())
    }

    fn set_response_header(&self, name: &str, value: &str) -> bool {
        self.envoy.call("set_response_header");
        let mut headers = self.response_headers.borrow_mut();
        headers.retain(|(n, _)| n != name);
        headers.push((name.to_string(), value.as_bytes().to_vec()));
        true
    }

    fn request_body_size(&self) -> usize {
        self.envoy.call("request_body_size");
        self.body.borrow().len()
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.envoy.call("request_body");
        let body = self.body.borrow();
        body.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
    }

    fn replace_request_body(&self, body: &[u8]) -> bool {
        self.envoy.call("replace_request_body");
        *self.body.borrow_mut() = body.to_vec();
        true
    }

    fn received_response_body_size(&self) -> usize {
        self.envoy.call("received_response_body_size");
        self.response_frame.borrow().len()
    }

    fn received_response_body(&self) -> Option<Vec<u8>> {
        self.envoy.call("received_response_body");
        Some(self.response_frame.borrow().clone())
    }

    fn replace_received_response_body(&self, bytes: &[u8]) -> bool {
        self.envoy.call("replace_received_response_body");
        *self.response_frame.borrow_mut() = bytes.to_vec();
        true
    }

    fn response_code_details(&self) -> Option<String> {
        self.envoy.call("response_code_details");
        None
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.envoy.call("send_response");
        self.replies.borrow_mut().push(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        let during = self.during_reply.borrow_mut().take();
        if let Some(f) = during {
            f();
        }
    }

    fn reset(&self) {
        // The module resets a stream only when no local reply can be
        // sent, and the fake sends every one.
        self.envoy.call("reset");
    }

    fn continue_decoding(&self) {
        self.envoy.call("continue_decoding");
        self.resumed.set(self.resumed.get() + 1);
        let during = self.during_resume.borrow_mut().take();
        if let Some(f) = during {
            f();
        }
    }
}

// ------------------------------------------------- a gateway's requests

/// The JWT secret of the test configuration.
pub const SECRET: &str = "native-test-secret-0123456789abcdef";

/// The plugin configuration with these extra top-level members (JSON
/// text, e.g. `"usage": {"buffer_cap": 2}`); the key feed is off unless
/// asked for, so a tick sends only usage.
pub fn config(extra: &str) -> Vec<u8> {
    let feed = if extra.contains("key_feed") {
        ""
    } else {
        r#""key_feed": {"enabled": false},"#
    };
    let comma = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{{feed} "internal_token": "internal-token-0123456789",
            "jwt": {{"secret": {{"text": "{SECRET}"}}}}, "max_body_bytes": 64{comma} {extra}}}"#
    )
    .into_bytes()
}

/// Base64url without padding, as JWS writes it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A valid HS256 token for `body`, issued now.
pub fn token(body: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(
        r#"{{"iat":{now},"exp":{},"body_sha256":"{}"}}"#,
        now + 60,
        tollgate_wire::body_sha256_hex(body)
    );
    let input = format!(
        "{}.{}",
        base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        base64url(claims.as_bytes())
    );
    let mac = tollgate_wire::Algorithm::Hs256.sign(SECRET.as_bytes(), input.as_bytes());
    format!("{input}.{}", base64url(&mac))
}

/// The headers of a POST with API key `key` and a valid token for `body`.
pub fn request(key: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/proxy/analyze".to_string()),
        ("authorization".to_string(), format!("Bearer {key}")),
        ("x-auth-token".to_string(), token(body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::base64url;

    #[test]
    fn base64url_is_rfc_4648_without_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
