//! [`NativeStream`]: the host of one HTTP stream's flow.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use tollgate_filter::host::{
    Callout, Host, HostError, LogLevel, MetricKind, SetError, StreamHost, Versioned,
};

use super::{common_host_calls, failed, metric_id, move_metric, MetricDef};
use crate::abi::{Answer, EnvoyStream};

/// One HTTP stream, on its worker thread.
#[derive(Clone)]
pub struct NativeStream {
    /// The stream's filter in Envoy.
    pub envoy: Rc<dyn EnvoyStream>,
    /// The metrics the configuration's root defined (index = the filter's id).
    pub metrics: Arc<[MetricDef]>,
    /// The answer of the callout being handled, if one is.
    pub answer: Rc<RefCell<Option<Answer>>>,
    /// The flow let its held request go on: the module resumes it in
    /// Envoy once the flow's call is over (`module::stream`).
    pub resume_due: Rc<Cell<bool>>,
}

impl Host for NativeStream {
    common_host_calls!();

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        // Streams only look up what the root defined on the main thread.
        metric_id(&self.metrics, name, kind == MetricKind::Gauge).ok_or_else(|| {
            HostError(format!(
                "metric {name} was not defined by the configuration"
            ))
        })
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        move_metric(&*self.envoy, &self.metrics, id, by)
    }
}

impl StreamHost for NativeStream {
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        self.envoy
            .request_headers()
            .ok_or_else(|| failed("list the request headers"))
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.envoy
            .set_request_header(name, Some(value))
            .then_some(())
            .ok_or_else(|| failed("set a request header"))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.envoy
            .set_request_header(name, None)
            .then_some(())
            .ok_or_else(|| failed("remove a request header"))
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.envoy.request_body(start, len)
    }

    fn replace_request_body(&self, _size: usize, body: &[u8]) -> Result<(), HostError> {
        self.envoy
            .replace_request_body(body)
            .then_some(())
            .ok_or_else(|| failed("replace the request body"))
    }

    fn response_chunk(&self, size: usize) -> Option<Vec<u8>> {
        self.envoy
            .received_response_body()
            .filter(|chunk| chunk.len() == size)
    }

    fn replace_response_chunk(&self, _size: usize, bytes: &[u8]) -> Result<(), HostError> {
        self.envoy
            .replace_received_response_body(bytes)
            .then_some(())
            .ok_or_else(|| failed("replace a response chunk"))
    }

    fn response_headers(&self, names: &[&str]) -> Vec<Option<Vec<u8>>> {
        // A lookup in Envoy's own map is cheaper than copying every header.
        names
            .iter()
            .map(|name| self.envoy.response_header(name))
            .collect()
    }

    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.envoy
            .set_response_header(name, value)
            .then_some(())
            .ok_or_else(|| failed("set a response header"))
    }

    fn response_code_details(&self) -> Option<String> {
        self.envoy.response_code_details()
    }

    fn send_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.envoy.send_response(status, headers, body);
        Ok(())
    }

    fn reset(&self) {
        self.envoy.reset();
    }

    fn resume(&self) -> Result<(), HostError> {
        // Not now: Envoy runs the next filters inside `continue_decoding`,
        // and with them the response hooks of a reply it sends itself (no
        // route), which must find the flow free to read that response.
        self.resume_due.set(true);
        Ok(())
    }
}
