//! The filter's host interface (`tollgate_filter::host`) on Envoy:
//! [`NativeStream`] for one HTTP stream on its worker thread,
//! [`NativeRoot`] for a configuration's root on the main thread, and the
//! [`Ticker`] that drives the root's timer. Every call goes to Envoy
//! through the traits of `abi::api`; nothing here decides anything.

mod root;
mod stream;
mod ticker;

pub use root::NativeRoot;
pub use stream::NativeStream;
pub use ticker::{Ticker, TICK_EVENT};

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tollgate_filter::host::{Callout, HostError};

use crate::abi::{Answer, EnvoyContext};

/// A metric the configuration defined: the filter's id for it is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDef {
    /// The filter's metric name.
    pub name: String,
    /// Gauge (else counter).
    pub gauge: bool,
    /// Envoy's id.
    pub envoy_id: usize,
}

fn now_ms() -> Option<u64> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Milliseconds since the module first asked, on the process's steady
/// clock (one start for every thread, so every worker reads one clock).
fn monotonic_ms() -> Option<u64> {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).ok()
}

fn random(buf: &mut [u8]) -> bool {
    getrandom::getrandom(buf).is_ok()
}

fn failed(what: &str) -> HostError {
    HostError(format!("Envoy refused to {what}"))
}

/// The filter's id of the metric `name` of this kind, among `defs`.
fn metric_id(defs: &[MetricDef], name: &str, gauge: bool) -> Option<u32> {
    let index = defs
        .iter()
        .position(|m| m.name == name && m.gauge == gauge)?;
    u32::try_from(index).ok()
}

/// Moves the metric the filter calls `id` (an index into `defs`).
fn move_metric(
    envoy: &(impl EnvoyContext + ?Sized),
    defs: &[MetricDef],
    id: u32,
    by: i64,
) -> Result<(), HostError> {
    let def = usize::try_from(id)
        .ok()
        .and_then(|i| defs.get(i))
        .ok_or_else(|| HostError(format!("no metric {id}")))?;
    let ok = if def.gauge {
        envoy.move_gauge(def.envoy_id, by)
    } else {
        envoy.increment_counter(def.envoy_id, by.max(0).unsigned_abs())
    };
    ok.then_some(())
        .ok_or_else(|| HostError(format!("cannot move metric {}", def.name)))
}

/// Sends a callout; its id as the filter's token.
fn dispatch(envoy: &(impl EnvoyContext + ?Sized), call: &Callout<'_>) -> Result<u32, HostError> {
    let id = envoy
        .callout(call.cluster, call.headers, call.body, call.timeout_ms)
        .ok_or_else(|| HostError("Envoy refused the callout".to_string()))?;
    u32::try_from(id).map_err(|_| HostError(format!("callout id {id} does not fit a token")))
}

fn answer_status(answer: &RefCell<Option<Answer>>) -> Option<Vec<u8>> {
    answer.borrow().as_ref().and_then(|a| a.status.clone())
}

fn answer_body(answer: &RefCell<Option<Answer>>, size: usize) -> Option<Vec<u8>> {
    let answer = answer.borrow();
    let body = &answer.as_ref()?.body;
    body.get(..size.min(body.len())).map(<[u8]>::to_vec)
}

/// The calls of the host interface that a stream and a root make alike,
/// for an `impl Host` of a type with an `envoy` and an `answer`.
macro_rules! common_host_calls {
    () => {
        fn now_ms(&self) -> Option<u64> {
            super::now_ms()
        }

        fn monotonic_ms(&self) -> Option<u64> {
            super::monotonic_ms()
        }

        fn log(&self, level: LogLevel, message: &str) {
            crate::abi::log(level, message);
        }

        fn random(&self, buf: &mut [u8]) -> bool {
            super::random(buf)
        }

        fn shared_get(&self, key: &str) -> Result<Versioned, HostError> {
            crate::shared::get(key)
        }

        fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            crate::shared::set(key, value, cas)
        }

        fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError> {
            super::dispatch(&*self.envoy, call)
        }

        fn callout_status(&self) -> Option<Vec<u8>> {
            super::answer_status(&self.answer)
        }

        fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
            super::answer_body(&self.answer, size)
        }
    };
}
use common_host_calls;

#[cfg(test)]
mod tests;
