//! A host for tests: an in-memory stand-in for Envoy that records what the
//! filter asked of it and can fail any host call on demand.
//!
//! A [`FakeWorld`] is one Envoy: clock, shared data (with the CAS rules of
//! proxy-wasm-cpp-host: a set with a non-zero CAS that differs from the
//! key's current one fails; a missing key is created whatever the CAS),
//! metrics, logs and callouts. Each [`FakeHost`] is one context of it: the
//! root, or a stream with its own headers, body and reply.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use crate::host::{
    Callout, Host, HostError, LogLevel, MetricKind, RootHost, SetError, StreamHost, Versioned,
};

/// A host call: every one is counted ([`FakeWorld::calls`]); those in
/// [`Call::STREAM`] can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Clock,
    Random,
    DefineMetric,
    SharedGet,
    SharedSet,
    Dispatch,
    CalloutStatus,
    CalloutBody,
    RequestHeaders,
    SetHeader,
    RemoveHeader,
    RequestBody,
    SendReply,
    Resume,
    PluginConfig,
    TickPeriod,
    /// Counted only: a failed metric update changes no decision.
    IncrementMetric,
    /// Counted only: a response header that cannot be read reads as absent.
    ResponseHeaders,
    /// Counted only: the property read of why the host answered.
    CodeDetails,
    /// Replacing the request body (an LLM route's rewrite).
    ReplaceRequestBody,
    /// Reading the response chunk (an LLM route's metering).
    ResponseChunk,
    /// Replacing the response chunk (an LLM stream's usage-only chunk).
    ReplaceResponseChunk,
}

impl Call {
    /// Every call a stream makes.
    pub const STREAM: [Call; 14] = [
        Call::Clock,
        Call::Random,
        Call::DefineMetric,
        Call::SharedGet,
        Call::SharedSet,
        Call::Dispatch,
        Call::CalloutStatus,
        Call::CalloutBody,
        Call::RequestHeaders,
        Call::SetHeader,
        Call::RemoveHeader,
        Call::RequestBody,
        Call::SendReply,
        Call::Resume,
    ];
}

/// A callout the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl Sent {
    /// A header of the call.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The `error.code` of the JSON body.
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

type Interleaved = Box<dyn FnOnce(&FakeWorld)>;

/// The `:status` (if any) and body of a callout's answer.
type Answer = (Option<Vec<u8>>, Vec<u8>);

#[derive(Default)]
struct World {
    now_ms: Cell<u64>,
    monotonic_ms: Cell<u64>,
    failing: RefCell<HashSet<Call>>,
    shared: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    races_to_lose: Cell<u32>,
    interleaved: RefCell<Option<Interleaved>>,
    metrics: RefCell<Vec<(String, i64)>>,
    logs: RefCell<Vec<(LogLevel, String)>>,
    sent: RefCell<Vec<Sent>>,
    answer: RefCell<Option<Answer>>,
    plugin_config: RefCell<Vec<u8>>,
    tick_period_ms: Cell<Option<u64>>,
    done: Cell<u32>,
    calls: RefCell<Vec<Call>>,
}

/// One Envoy, as far as the filter can tell.
#[derive(Clone, Default)]
pub struct FakeWorld(Rc<World>);

impl FakeWorld {
    /// A world at 2026-01-01T00:00:00Z with nothing in it.
    pub fn new() -> Self {
        let world = FakeWorld::default();
        world.0.now_ms.set(1_767_225_600_000);
        world
    }

    /// The root context's host.
    pub fn root(&self) -> FakeHost {
        FakeHost {
            world: self.clone(),
            stream: Rc::new(Stream::default()),
        }
    }

    /// A stream's host, with these request headers.
    pub fn stream(&self, headers: &[(&str, &[u8])]) -> FakeHost {
        let host = self.root();
        *host.stream.request_headers.borrow_mut() = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        host
    }

    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms.get()
    }

    /// Lets `ms` pass: both clocks move.
    pub fn advance_ms(&self, ms: u64) {
        self.0.now_ms.set(self.0.now_ms.get() + ms);
        self.0.monotonic_ms.set(self.0.monotonic_ms.get() + ms);
    }

    /// Sets the wall clock to `now_ms` (an operator or NTP stepping it):
    /// the monotonic clock does not move.
    pub fn set_wall_ms(&self, now_ms: u64) {
        self.0.now_ms.set(now_ms);
    }

    /// Makes a host call fail from now on.
    pub fn fail(&self, call: Call) {
        self.0.failing.borrow_mut().insert(call);
    }

    /// Makes a failing host call work again.
    pub fn heal(&self, call: Call) {
        self.0.failing.borrow_mut().remove(&call);
    }

    fn fails(&self, call: Call) -> bool {
        self.0.calls.borrow_mut().push(call);
        self.0.failing.borrow().contains(&call)
    }

    /// Every host call made since the last [`FakeWorld::take_calls`], in order.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.calls.borrow_mut())
    }

    /// The next `n` CAS writes lose a race (another writer got there first).
    pub fn lose_races(&self, n: u32) {
        self.0.races_to_lose.set(n);
    }

    /// Runs `f` just before the next shared-data write, as another worker
    /// would between the filter's read and its write.
    pub fn before_next_write(&self, f: impl FnOnce(&FakeWorld) + 'static) {
        *self.0.interleaved.borrow_mut() = Some(Box::new(f));
    }

    /// A shared-data value.
    pub fn shared(&self, key: &str) -> Option<Vec<u8>> {
        self.0.shared.borrow().get(key).map(|(v, _)| v.clone())
    }

    /// Shared-data keys with this prefix.
    pub fn shared_keys(&self, prefix: &str) -> Vec<String> {
        let shared = self.0.shared.borrow();
        shared
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A metric's value by name (0 if never moved).
    pub fn metric(&self, name: &str) -> i64 {
        let metrics = self.0.metrics.borrow();
        metrics
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Log lines at `level` or above.
    pub fn logs(&self, level: LogLevel) -> Vec<String> {
        let logs = self.0.logs.borrow();
        logs.iter()
            .filter(|(l, _)| *l >= level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Every callout sent so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.0.sent.borrow().clone()
    }

    /// Sets the answer the next callout-reply callback reads; returns the
    /// body size to hand to it.
    pub fn answer(&self, status: Option<&str>, body: &[u8]) -> usize {
        *self.0.answer.borrow_mut() = Some((status.map(|s| s.as_bytes().to_vec()), body.to_vec()));
        body.len()
    }

    /// Sets the plugin configuration; returns its size.
    pub fn configure(&self, json: &str) -> usize {
        *self.0.plugin_config.borrow_mut() = json.as_bytes().to_vec();
        json.len()
    }

    /// The timer period the root asked for.
    pub fn tick_period_ms(&self) -> Option<u64> {
        self.0.tick_period_ms.get()
    }

    /// How often the root said a delayed shutdown was done.
    pub fn done_calls(&self) -> u32 {
        self.0.done.get()
    }
}

#[derive(Default)]
struct Stream {
    request_headers: RefCell<Vec<(String, Vec<u8>)>>,
    body: RefCell<Vec<u8>>,
    response_headers: RefCell<Vec<(String, Vec<u8>)>>,
    response_chunk: RefCell<Vec<u8>>,
    code_details: RefCell<Option<String>>,
    reply: RefCell<Option<Reply>>,
    resumed: Cell<u32>,
    reset: Cell<bool>,
}

/// One context of a [`FakeWorld`].
#[derive(Clone)]
pub struct FakeHost {
    world: FakeWorld,
    stream: Rc<Stream>,
}

impl FakeHost {
    /// The world this context lives in.
    pub fn world(&self) -> &FakeWorld {
        &self.world
    }

    /// Appends body bytes to what the host holds; returns the total.
    pub fn push_body(&self, chunk: &[u8]) -> usize {
        let mut body = self.stream.body.borrow_mut();
        body.extend_from_slice(chunk);
        body.len()
    }

    /// The request body the host holds (as the upstream would get it).
    pub fn body(&self) -> Vec<u8> {
        self.stream.body.borrow().clone()
    }

    /// Hands a response chunk to the host; returns its size.
    pub fn push_response_chunk(&self, chunk: &[u8]) -> usize {
        *self.stream.response_chunk.borrow_mut() = chunk.to_vec();
        chunk.len()
    }

    /// The response chunk as it passes on (after any replacement).
    pub fn passed_response_chunk(&self) -> Vec<u8> {
        self.stream.response_chunk.borrow().clone()
    }

    /// Sets why the host answered (`response.code_details`).
    pub fn set_code_details(&self, details: &str) {
        *self.stream.code_details.borrow_mut() = Some(details.to_string());
    }

    /// Sets a response header.
    pub fn set_response_header(&self, name: &str, value: &str) {
        let mut headers = self.stream.response_headers.borrow_mut();
        headers.push((name.to_string(), value.as_bytes().to_vec()));
    }

    /// A response header as the client would get it.
    pub fn response_header_value(&self, name: &str) -> Option<String> {
        let headers = self.stream.response_headers.borrow();
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// A request header as the upstream would get it.
    pub fn request_header(&self, name: &str) -> Option<String> {
        let headers = self.stream.request_headers.borrow();
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The local reply, if one was sent.
    pub fn reply(&self) -> Option<Reply> {
        self.stream.reply.borrow().clone()
    }

    /// How often the stream was resumed.
    pub fn resumed(&self) -> u32 {
        self.stream.resumed.get()
    }

    /// Whether the stream was reset.
    pub fn was_reset(&self) -> bool {
        self.stream.reset.get()
    }

    fn check(&self, call: Call) -> Result<(), HostError> {
        if self.world.fails(call) {
            Err(HostError(format!("{call:?} failed (fake)")))
        } else {
            Ok(())
        }
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> Option<u64> {
        self.check(Call::Clock).ok()?;
        Some(self.world.now_ms())
    }

    fn monotonic_ms(&self) -> Option<u64> {
        self.check(Call::Clock).ok()?;
        Some(self.world.0.monotonic_ms.get())
    }

    fn log(&self, level: LogLevel, message: &str) {
        let mut logs = self.world.0.logs.borrow_mut();
        logs.push((level, message.to_string()));
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        self.check(Call::Random).is_ok() && getrandom::getrandom(buf).is_ok()
    }

    fn define_metric(&self, _kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.check(Call::DefineMetric)?;
        let mut metrics = self.world.0.metrics.borrow_mut();
        metrics.push((name.to_string(), 0));
        u32::try_from(metrics.len() - 1).map_err(|_| HostError("too many metrics".into()))
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        self.world.fails(Call::IncrementMetric);
        let mut metrics = self.world.0.metrics.borrow_mut();
        let metric = metrics
            .get_mut(id as usize)
            .ok_or_else(|| HostError("no such metric".into()))?;
        metric.1 += by;
        Ok(())
    }

    fn shared_get(&self, key: &str) -> Result<Versioned, HostError> {
        self.check(Call::SharedGet)?;
        let shared = self.world.0.shared.borrow();
        Ok(match shared.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.check(Call::SharedSet).map_err(SetError::Failed)?;
        let interleaved = self.world.0.interleaved.borrow_mut().take();
        if let Some(f) = interleaved {
            f(&self.world);
        }
        let world = &self.world.0;
        let cas = cas.unwrap_or(0);
        if cas != 0 && world.races_to_lose.get() > 0 {
            world.races_to_lose.set(world.races_to_lose.get() - 1);
            return Err(SetError::CasMismatch);
        }
        world.next_cas.set(world.next_cas.get() + 1);
        let next = world.next_cas.get();
        let mut shared = world.shared.borrow_mut();
        match shared.get_mut(key) {
            Some(slot) if cas != 0 && cas != slot.1 => Err(SetError::CasMismatch),
            Some(slot) => {
                *slot = (value.to_vec(), next);
                Ok(())
            }
            None => {
                shared.insert(key.to_string(), (value.to_vec(), next));
                Ok(())
            }
        }
    }

    fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError> {
        self.check(Call::Dispatch)?;
        let mut sent = self.world.0.sent.borrow_mut();
        let token = u32::try_from(sent.len() + 1).map_err(|_| HostError("too many".into()))?;
        sent.push(Sent {
            token,
            cluster: call.cluster.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: call.body.to_vec(),
            timeout_ms: call.timeout_ms,
        });
        Ok(token)
    }

    fn callout_status(&self) -> Option<Vec<u8>> {
        self.check(Call::CalloutStatus).ok()?;
        self.world.0.answer.borrow().as_ref()?.0.clone()
    }

    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        self.check(Call::CalloutBody).ok()?;
        let answer = self.world.0.answer.borrow();
        let body = &answer.as_ref()?.1;
        body.get(..size).map(<[u8]>::to_vec)
    }
}

impl StreamHost for FakeHost {
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        self.check(Call::RequestHeaders)?;
        Ok(self.stream.request_headers.borrow().clone())
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.check(Call::SetHeader)?;
        let mut headers = self.stream.request_headers.borrow_mut();
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), value.as_bytes().to_vec()));
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.check(Call::RemoveHeader)?;
        let mut headers = self.stream.request_headers.borrow_mut();
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        Ok(())
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.check(Call::RequestBody).ok()?;
        let body = self.stream.body.borrow();
        body.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
    }

    fn replace_request_body(&self, size: usize, body: &[u8]) -> Result<(), HostError> {
        self.check(Call::ReplaceRequestBody)?;
        let mut held = self.stream.body.borrow_mut();
        if held.len() != size {
            return Err(HostError(format!(
                "replace {size} bytes of a {}-byte body (fake)",
                held.len()
            )));
        }
        *held = body.to_vec();
        Ok(())
    }

    fn response_chunk(&self, size: usize) -> Option<Vec<u8>> {
        self.check(Call::ResponseChunk).ok()?;
        self.stream
            .response_chunk
            .borrow()
            .get(..size)
            .map(<[u8]>::to_vec)
    }

    fn replace_response_chunk(&self, size: usize, bytes: &[u8]) -> Result<(), HostError> {
        self.check(Call::ReplaceResponseChunk)?;
        let mut chunk = self.stream.response_chunk.borrow_mut();
        if chunk.len() != size {
            return Err(HostError("replace a chunk of another size (fake)".into()));
        }
        *chunk = bytes.to_vec();
        Ok(())
    }

    fn response_headers(&self, names: &[&str]) -> Vec<Option<Vec<u8>>> {
        self.world.fails(Call::ResponseHeaders);
        crate::headers::first_values(&self.stream.response_headers.borrow(), names)
    }

    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.check(Call::SetHeader)?;
        let mut headers = self.stream.response_headers.borrow_mut();
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), value.as_bytes().to_vec()));
        Ok(())
    }

    fn response_code_details(&self) -> Option<String> {
        self.world.fails(Call::CodeDetails);
        self.stream.code_details.borrow().clone()
    }

    fn send_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.check(Call::SendReply)?;
        *self.stream.reply.borrow_mut() = Some(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn reset(&self) {
        self.stream.reset.set(true);
    }

    fn resume(&self) -> Result<(), HostError> {
        self.check(Call::Resume)?;
        self.stream.resumed.set(self.stream.resumed.get() + 1);
        Ok(())
    }
}

impl RootHost for FakeHost {
    fn plugin_config(&self, size: usize) -> Option<Vec<u8>> {
        self.check(Call::PluginConfig).ok()?;
        let config = self.world.0.plugin_config.borrow();
        config.get(..size).map(<[u8]>::to_vec)
    }

    fn set_tick_period_ms(&self, period_ms: u64) -> Result<(), HostError> {
        self.check(Call::TickPeriod)?;
        self.world.0.tick_period_ms.set(Some(period_ms));
        Ok(())
    }

    fn done(&self) {
        self.world.0.done.set(self.world.0.done.get() + 1);
    }
}
