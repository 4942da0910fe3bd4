//! The filter's host interface (`filter::host`) on Envoy's dynamic-module
//! ABI: [`StreamHost`] for one HTTP stream on its worker thread, [`RootHost`]
//! for the configuration's root on the main thread. Every call goes through
//! the safe wrappers of `abi`; nothing here decides anything.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate_filter::host::{
    Callout, Host, HostError, LogLevel, MetricKind, RootHost, SetError, StreamHost, Versioned,
};

use crate::abi::{self, ConfigPtr, Scheduler, StreamPtr};
use crate::module::{Answer, Shared, TICK_EVENT};
use crate::shared;

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

fn callout_token(id: Option<u64>) -> Result<u32, HostError> {
    let id = id.ok_or_else(|| HostError("Envoy refused the callout".to_string()))?;
    u32::try_from(id).map_err(|_| HostError(format!("callout id {id} does not fit a token")))
}

/// What a stream and a configuration can both do in Envoy.
trait Context: Copy {
    fn increment_counter(self, id: usize, by: u64) -> bool;
    fn move_gauge(self, id: usize, by: i64) -> bool;
    fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64>;
}

macro_rules! context {
    ($ty:ty) => {
        impl Context for $ty {
            fn increment_counter(self, id: usize, by: u64) -> bool {
                <$ty>::increment_counter(self, id, by)
            }
            fn move_gauge(self, id: usize, by: i64) -> bool {
                <$ty>::move_gauge(self, id, by)
            }
            fn callout(
                self,
                cluster: &str,
                headers: &[(&str, &str)],
                body: &[u8],
                timeout_ms: u64,
            ) -> Option<u64> {
                <$ty>::callout(self, cluster, headers, body, timeout_ms)
            }
        }
    };
}
context!(StreamPtr);
context!(ConfigPtr);

/// Moves the metric the filter calls `id` (an index into `defs`).
fn move_metric(ctx: impl Context, defs: &[MetricDef], id: u32, by: i64) -> Result<(), HostError> {
    let def = usize::try_from(id)
        .ok()
        .and_then(|i| defs.get(i))
        .ok_or_else(|| HostError(format!("no metric {id}")))?;
    let ok = if def.gauge {
        ctx.move_gauge(def.envoy_id, by)
    } else {
        ctx.increment_counter(def.envoy_id, by.max(0).unsigned_abs())
    };
    ok.then_some(())
        .ok_or_else(|| HostError(format!("cannot move metric {}", def.name)))
}

/// Sends a callout; its id as the filter's token.
fn dispatch(ctx: impl Context, call: &Callout<'_>) -> Result<u32, HostError> {
    callout_token(ctx.callout(call.cluster, call.headers, call.body, call.timeout_ms))
}

fn answer_status(answer: &RefCell<Option<Answer>>) -> Option<Vec<u8>> {
    answer.borrow().as_ref().and_then(|a| a.status.clone())
}

fn answer_body(answer: &RefCell<Option<Answer>>, size: usize) -> Option<Vec<u8>> {
    let answer = answer.borrow();
    let body = &answer.as_ref()?.body;
    body.get(..size.min(body.len())).map(<[u8]>::to_vec)
}

/// One HTTP stream, on its worker thread.
pub struct NativeStream {
    /// The stream's filter in Envoy.
    pub ptr: StreamPtr,
    /// The configuration's state shared by every thread.
    pub shared: Arc<Shared>,
    /// The answer of the callout being handled, if one is.
    pub answer: Rc<RefCell<Option<Answer>>>,
}

impl Host for NativeStream {
    fn now_ms(&self) -> Option<u64> {
        now_ms()
    }

    fn monotonic_ms(&self) -> Option<u64> {
        monotonic_ms()
    }

    fn log(&self, level: LogLevel, message: &str) {
        abi::log(level, message);
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        random(buf)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let gauge = kind == MetricKind::Gauge;
        self.shared
            .metrics
            .iter()
            .position(|m| m.name == name && m.gauge == gauge)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                HostError(format!(
                    "metric {name} was not defined by the configuration"
                ))
            })
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        move_metric(self.ptr, &self.shared.metrics, id, by)
    }

    fn shared_get(&self, key: &str) -> Result<Versioned, HostError> {
        shared::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        shared::set(key, value, cas)
    }

    fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError> {
        dispatch(self.ptr, call)
    }

    fn callout_status(&self) -> Option<Vec<u8>> {
        answer_status(&self.answer)
    }

    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        answer_body(&self.answer, size)
    }
}

fn failed(what: &str) -> HostError {
    HostError(format!("Envoy refused to {what}"))
}

impl StreamHost for NativeStream {
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        self.ptr
            .request_headers()
            .ok_or_else(|| failed("list the request headers"))
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.ptr
            .set_request_header(name, Some(value))
            .then_some(())
            .ok_or_else(|| failed("set a request header"))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.ptr
            .set_request_header(name, None)
            .then_some(())
            .ok_or_else(|| failed("remove a request header"))
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.ptr.request_body(start, len)
    }

    fn response_headers(&self, names: &[&str]) -> Vec<Option<Vec<u8>>> {
        // A lookup in Envoy's own map is cheaper than copying every header.
        names
            .iter()
            .map(|name| self.ptr.response_header(name))
            .collect()
    }

    fn set_response_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.ptr
            .set_response_header(name, value)
            .then_some(())
            .ok_or_else(|| failed("set a response header"))
    }

    fn response_code_details(&self) -> Option<String> {
        self.ptr.response_code_details()
    }

    fn send_reply(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.ptr.send_response(status, headers, body);
        Ok(())
    }

    fn reset(&self) {
        self.ptr.reset();
    }

    fn resume(&self) -> Result<(), HostError> {
        self.ptr.continue_decoding();
        Ok(())
    }
}

/// The periodic tick: a thread that posts [`TICK_EVENT`] through the
/// configuration's scheduler (Envoy runs it on the main thread). Dropping
/// it stops and joins the thread before the scheduler is deleted.
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _scheduler: Arc<Scheduler>,
}

impl Ticker {
    fn start(scheduler: Scheduler, period: Duration) -> Result<Ticker, HostError> {
        let scheduler = Arc::new(scheduler);
        let (stop, stopped) = mpsc::channel::<()>();
        let posting = scheduler.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-tick".to_string())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    posting.commit(TICK_EVENT);
                }
            })
            .map_err(|e| HostError(format!("cannot start the tick thread: {e}")))?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
            _scheduler: scheduler,
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The root of one filter configuration, on Envoy's main thread.
pub struct NativeRoot {
    /// The configuration in Envoy.
    pub ptr: ConfigPtr,
    /// The plugin configuration JSON.
    pub plugin: Vec<u8>,
    /// The metrics defined so far (index = the filter's id).
    pub metrics: RefCell<Vec<MetricDef>>,
    /// The answer of the callout being handled, if one is.
    pub answer: RefCell<Option<Answer>>,
    /// The tick, once its period is set.
    pub ticker: RefCell<Option<Ticker>>,
}

impl NativeRoot {
    /// A root for the configuration `ptr` with its JSON.
    pub fn new(ptr: ConfigPtr, plugin: Vec<u8>) -> Self {
        NativeRoot {
            ptr,
            plugin,
            metrics: RefCell::new(Vec::new()),
            answer: RefCell::new(None),
            ticker: RefCell::new(None),
        }
    }
}

impl Host for NativeRoot {
    fn now_ms(&self) -> Option<u64> {
        now_ms()
    }

    fn monotonic_ms(&self) -> Option<u64> {
        monotonic_ms()
    }

    fn log(&self, level: LogLevel, message: &str) {
        abi::log(level, message);
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        random(buf)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let gauge = kind == MetricKind::Gauge;
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics
            .iter()
            .position(|m| m.name == name && m.gauge == gauge)
        {
            return u32::try_from(i).map_err(|_| failed("define a metric"));
        }
        let envoy_id = self
            .ptr
            .define_metric(gauge, name)
            .ok_or_else(|| failed(&format!("define metric {name}")))?;
        metrics.push(MetricDef {
            name: name.to_string(),
            gauge,
            envoy_id,
        });
        u32::try_from(metrics.len() - 1).map_err(|_| failed("define a metric"))
    }

    fn increment_metric(&self, id: u32, by: i64) -> Result<(), HostError> {
        move_metric(self.ptr, &self.metrics.borrow(), id, by)
    }

    fn shared_get(&self, key: &str) -> Result<Versioned, HostError> {
        shared::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        shared::set(key, value, cas)
    }

    fn dispatch(&self, call: &Callout<'_>) -> Result<u32, HostError> {
        dispatch(self.ptr, call)
    }

    fn callout_status(&self) -> Option<Vec<u8>> {
        answer_status(&self.answer)
    }

    fn callout_body(&self, size: usize) -> Option<Vec<u8>> {
        answer_body(&self.answer, size)
    }
}

impl RootHost for NativeRoot {
    fn plugin_config(&self, size: usize) -> Option<Vec<u8>> {
        (size > 0 && size == self.plugin.len()).then(|| self.plugin.clone())
    }

    fn set_tick_period_ms(&self, period_ms: u64) -> Result<(), HostError> {
        // The old thread (if any) stops before the new one starts.
        drop(self.ticker.borrow_mut().take());
        let scheduler = self
            .ptr
            .scheduler()
            .ok_or_else(|| failed("create a scheduler"))?;
        let ticker = Ticker::start(scheduler, Duration::from_millis(period_ms.max(1)))?;
        *self.ticker.borrow_mut() = Some(ticker);
        Ok(())
    }

    fn done(&self) {}
}
