//! What the module asks of Envoy, as three small traits: [`EnvoyStream`]
//! (one stream's filter), [`EnvoyConfig`] (one filter configuration) and
//! [`EnvoyScheduler`] (its scheduler). The hosts and the hooks' behaviour
//! are written against them; the safe wrappers (`stream.rs`, `config.rs`)
//! implement them, each method one callback, and unit tests implement them
//! with a fake Envoy.

/// What a stream and a configuration can both ask of Envoy.
pub trait EnvoyContext {
    /// Adds to a counter; false when Envoy refused.
    fn increment_counter(&self, id: usize, by: u64) -> bool;
    /// Moves a gauge up or down; false when Envoy refused.
    fn move_gauge(&self, id: usize, by: i64) -> bool;
    /// Sends an HTTP callout; its id, or `None` when Envoy refused it.
    fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64>;
}

/// One HTTP stream's filter in Envoy, on its worker thread.
pub trait EnvoyStream: EnvoyContext {
    /// Every request header, in order, values as bytes.
    fn request_headers(&self) -> Option<Vec<(String, Vec<u8>)>>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool;
    /// The first value of a response header.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Sets a response header (while the response headers pass).
    fn set_response_header(&self, name: &str, value: &str) -> bool;
    /// Bytes of the request body Envoy holds.
    fn request_body_size(&self) -> usize;
    /// `len` bytes of the request body Envoy holds, from `start`.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces the whole request body Envoy holds (buffered and received)
    /// with `body`; false when Envoy refused.
    fn replace_request_body(&self, body: &[u8]) -> bool;
    /// Bytes of the response body frame of the running hook.
    fn received_response_body_size(&self) -> usize;
    /// The response body frame of the running hook.
    fn received_response_body(&self) -> Option<Vec<u8>>;
    /// Replaces the response body frame of the running hook with `bytes`;
    /// false when Envoy refused.
    fn replace_received_response_body(&self, bytes: &[u8]) -> bool;
    /// Envoy's `response.code_details`.
    fn response_code_details(&self) -> Option<String>;
    /// Answers the request with a local reply.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// Resets the stream.
    fn reset(&self);
    /// Lets a held request go on.
    fn continue_decoding(&self);
}

/// One filter configuration in Envoy, on the main thread.
pub trait EnvoyConfig: EnvoyContext {
    /// Defines a counter (`gauge` false) or a gauge; its id.
    fn define_metric(&self, gauge: bool, name: &str) -> Option<usize>;
    /// A scheduler that posts events to this configuration on the main thread.
    fn scheduler(&self) -> Option<Box<dyn EnvoyScheduler>>;
}

/// A configuration's scheduler: any thread may post through it.
pub trait EnvoyScheduler: Send + Sync {
    /// Posts `event` to the configuration's scheduled hook (main thread).
    fn commit(&self, event: u64);
}
