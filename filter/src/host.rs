//! What the filter needs from its host, and nothing more: the one interface
//! between tollgate's decisions and the proxy that runs them.
//!
//! [`Host`] is what every context can do (clock, logs, metrics, shared
//! data, callouts); [`StreamHost`] adds what one HTTP stream can do
//! (headers, body, local reply, resume); [`RootHost`] what the per-worker
//! root can do (configuration, timer, shutdown). The proxy-wasm adapter
//! (`wasm`) implements them on Envoy's Wasm ABI; tests use `fake_host`.
//! A host call that fails returns an error and the caller fails closed.

use std::fmt;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Normal operation worth a line (start, configuration).
    Info,
    /// Something degraded but handled (stale verdict, retried flush).
    Warn,
    /// A request was failed closed, or the filter cannot start.
    Error,
}

/// What the host does with the stream after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on with the next filter (the request passed, or the filter is done with it).
    Continue,
    /// Hold the stream (waiting, or answered with a local reply).
    Pause,
}

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A host call that failed, described for a log line (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(pub String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a compare-and-swap write of shared data did not land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// The host refused the write.
    Failed(HostError),
}

/// A value in shared data and its compare-and-swap token.
pub type Versioned = (Option<Vec<u8>>, Option<u32>);

/// An HTTP call to an upstream cluster (the sidecar).
#[derive(Debug, Clone, Copy)]
pub struct Callout<'a> {
    /// The Envoy cluster.
    pub cluster: &'a str,
    /// Request headers, pseudo-headers included.
    pub headers: &'a [(&'a str, &'a str)],
    /// Request body.
    pub body: &'a [u8],
    /// How long the host waits for the answer.
    pub timeout_ms: u64,
}

/// What every context of the filter can ask of its host.
pub trait Host {
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn now_ms(&self) -> Option<u64>;
    /// A clock that never steps, the same for every worker of this Envoy,
    /// in milliseconds from an arbitrary start: what a token bucket
    /// measures with, so that a wall clock set back or forward neither
    /// stalls it nor fills it.
    fn monotonic_ms(&self) -> Option<u64>;
    /// Writes a log line.
    fn log(&self, level: LogLevel, message: &str);
    /// Fills `buf` from the host's randomness; false when there is none.
    fn random(&self, buf: &mut [u8]) -> bool;
    /// Defines a metric and returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Adds `by` to a metric.
    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError>;
    /// Reads a shared-data value (seen by every worker) with its CAS token.
    fn shared_get(&self, key: &str) -> Result<Versioned, HostError>;
    /// Writes a shared-data value; with `cas`, only if it is still that version.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
    /// Sends an HTTP call; the answer arrives later under the returned token.
    fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError>;
    /// While a call's answer is being handled: its `:status`, if it got one.
    fn callout_status(&self) -> Option<Vec<u8>>;
    /// While a call's answer is being handled: its body (`size` bytes).
    fn callout_body(&self, size: usize) -> Option<Vec<u8>>;
}

/// What one HTTP stream can ask of its host besides.
pub trait StreamHost: Host {
    /// Every request header, pseudo-headers included, values as bytes.
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError>;
    /// Sets (replaces) a request header.
    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// Removes a request header.
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// `len` bytes of the buffered request body from `start`.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces the whole request body the host holds (`size` bytes, the
    /// body's end having arrived in the running callback) with `body`.
    fn replace_request_body(&self, size: usize, body: &[u8]) -> Result<(), HostError>;
    /// The response body chunk of the running callback (`size` bytes).
    fn response_chunk(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the response body chunk of the running callback (`size`
    /// bytes) with `bytes`, which pass on in its place.
    fn replace_response_chunk(&self, size: usize, bytes: &[u8]) -> Result<(), HostError>;
    /// The first value of each of the named response headers (lowercase
    /// names), in the order asked: the response's headers are read once,
    /// whatever the number of names.
    fn response_headers(&self, names: &[&str]) -> Vec<Option<Vec<u8>>>;
    /// Sets (replaces) a response header, while the response headers pass.
    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError>;
    /// Why the host answered as it did (Envoy's `response.code_details`,
    /// e.g. `route_not_found`, `via_upstream`), once the response started.
    fn response_code_details(&self) -> Option<String>;
    /// Answers the request with a local reply.
    fn send_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    /// Resets the stream (when not even a local reply could be sent).
    fn reset(&self);
    /// Lets a held request go on (after a callout answered).
    fn resume(&self) -> Result<(), HostError>;
}

/// What the per-worker root context can ask of its host besides.
pub trait RootHost: Host {
    /// The plugin configuration (`size` bytes).
    fn plugin_config(&self, size: usize) -> Option<Vec<u8>>;
    /// Sets the period of the root's timer.
    fn set_tick_period_ms(&self, period_ms: u64) -> Result<(), HostError>;
    /// Tells the host that a delayed shutdown has finished.
    fn done(&self);
}
