//! A worker's root, generic over its host: it parses the configuration once,
//! creates the streams' flows, flushes usage on its tick, and drains the
//! buffer at shutdown before letting the host go.

use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::Arc;

use tollgate_wire::grant::GRANTS_PATH;

use crate::cache;
use crate::config::{self, Config};
use crate::feed::{self, Poll};
use crate::flow::Flow;
use crate::flusher;
use crate::host::{LogLevel, RootHost, StreamHost};
use crate::limits::{self, TickCall};
use crate::metrics::Metrics;
use crate::shared_table::SlotKey;
use crate::sidecar_call;
use crate::worker::{Shared, Worker};

/// The per-worker root context.
pub struct Root<H: RootHost> {
    host: H,
    metrics: OnceCell<Rc<Metrics>>,
    worker: Option<Rc<Worker>>,
    shutting_down: bool,
    /// This worker's key change feed poll, while it is in flight.
    feed_poll: Option<Poll>,
    /// This worker's grant call for its limited keys, while in flight.
    limits_call: Option<TickCall>,
    /// The tick's period, and when the timer next ticks.
    tick_period_ms: u64,
    next_tick_ms: u64,
}

impl<H: RootHost> Root<H> {
    /// A root that has not been configured yet.
    pub fn new(host: H) -> Self {
        Root {
            host,
            metrics: OnceCell::new(),
            worker: None,
            shutting_down: false,
            feed_poll: None,
            limits_call: None,
            tick_period_ms: 0,
            next_tick_ms: 0,
        }
    }

    /// The worker's metrics, defined on first use.
    fn metrics(&self) -> Rc<Metrics> {
        self.metrics
            .get_or_init(|| Rc::new(Metrics::define(&self.host)))
            .clone()
    }

    /// The flow of a new stream.
    pub fn stream<S: StreamHost>(&self, host: S) -> Flow<S> {
        Flow::new(host, self.worker.clone(), self.metrics())
    }

    /// Parses and validates the plugin configuration (`size` bytes); false
    /// refuses it, and the host keeps the plugin from serving.
    pub fn on_configure(&mut self, size: usize) -> bool {
        let metrics = self.metrics();
        let Some(bytes) = self.host.plugin_config(size) else {
            self.host.log(
                LogLevel::Error,
                "invalid plugin configuration: .: it is empty",
            );
            return false;
        };
        let parsed = match config::parse(&bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.host.log(LogLevel::Error, &format!("{e}"));
                return false;
            }
        };
        for warning in &parsed.warnings {
            self.host
                .log(LogLevel::Warn, &format!("plugin configuration: {warning}"));
        }
        let config = parsed.config;
        self.tick_period_ms = tick_period_ms(&config);
        self.next_tick_ms = 0;
        if let Err(e) = self
            .host
            .set_tick_period_ms(self.tick_period_ms.min(TIMER_PERIOD_MS))
        {
            self.host
                .log(LogLevel::Error, &format!("cannot set the flush timer: {e}"));
            return false;
        }
        let Some(cache_key) = SlotKey::shared(&self.host, cache::SLOT_KEY_NAME) else {
            self.host.log(
                LogLevel::Error,
                "cannot draw or read the key cache's slot key; refusing to start",
            );
            return false;
        };
        self.host.log(LogLevel::Info, &describe(&config));
        // A reconfiguration keeps the records already buffered, the
        // request ids and the keys served.
        let old = self.worker.as_deref();
        let shared = Arc::new(Shared::new(config, cache_key, old.map(|w| &*w.shared)));
        let Some(worker) = Worker::new(shared, metrics, &self.host, old) else {
            self.host.log(
                LogLevel::Error,
                "no randomness to seed request ids; refusing to start",
            );
            return false;
        };
        self.worker = Some(Rc::new(worker));
        true
    }

    /// The timer: publishes the hot counters, follows the key change feed,
    /// asks ahead and settles for the limited keys served, gives up on an
    /// overdue flush, and sends the next batch.
    pub fn on_tick(&mut self) {
        let metrics = self.metrics();
        metrics.publish(&self.host);
        let (Some(now), Some(worker)) = (self.host.now_ms(), &self.worker) else {
            return;
        };
        if self.feed_poll.is_none() && !self.shutting_down {
            self.feed_poll = feed::tick(&self.host, worker, &metrics, now);
        }
        if self.limits_call.is_none() && !self.shutting_down {
            let config = worker.config();
            self.limits_call = limits::tick(&self.host, &config.limits, now, |body| {
                let timeout_ms = config.limits.grant_timeout_ms;
                sidecar_call::post(&self.host, config, GRANTS_PATH, body, timeout_ms, None).ok()
            });
        }
        flusher::expire_overdue(&self.host, worker, &metrics, now);
        flusher::flush(&self.host, worker, &metrics, false, now);
    }

    /// The host's timer, every [`TIMER_PERIOD_MS`] (or the tick period,
    /// when shorter): the tick once its period has passed, else a look at
    /// the usage buffer. Without a clock it ticks (which still publishes
    /// the hot counters), as every timer did before the look between ticks.
    pub fn on_timer(&mut self) {
        let Some(now) = self.host.now_ms() else {
            self.on_tick();
            return;
        };
        if now >= self.next_tick_ms {
            self.next_tick_ms = now.saturating_add(self.tick_period_ms);
            self.on_tick();
        } else {
            self.on_records();
        }
    }

    /// Between ticks: sends a batch when a full one waits and none is in
    /// flight, so a busy worker's records never pile up for a whole period
    /// (memory that neither a wasm VM nor Envoy's allocator gives back).
    pub fn on_records(&mut self) {
        let (Some(now), Some(worker)) = (self.host.now_ms(), &self.worker) else {
            return;
        };
        let full = worker.usage().len() >= worker.config().usage.max_batch;
        if full {
            let metrics = self.metrics();
            flusher::flush(&self.host, worker, &metrics, false, now);
        }
    }

    /// A callout of the root answered (a feed poll, a grant call or a
    /// usage flush) with `body_size` bytes of body.
    pub fn on_callout_reply(&mut self, token: u32, body_size: usize) {
        let metrics = self.metrics();
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let now = self.host.now_ms().unwrap_or(0);
        if let Some(poll) = self.feed_poll.filter(|p| p.token == token) {
            self.feed_poll = feed::answered(&self.host, &worker, &metrics, poll, body_size, now);
            return;
        }
        if let Some(call) = self.limits_call.take_if(|c| c.token == token) {
            let status = self.host.callout_status();
            let body = (body_size > 0 && body_size <= limits::MAX_REPLY_BYTES)
                .then(|| self.host.callout_body(body_size))
                .flatten();
            let reply = limits::parse_reply(status.as_deref(), body.as_deref());
            if !limits::tick_answered(&self.host, &call, reply) {
                self.host.log(
                    LogLevel::Warn,
                    "the grant call gave no usable answer; its asks and settlements stay pending",
                );
            }
            return;
        }
        let Some(answer) = flusher::answered(&self.host, &worker, &metrics, token, body_size, now)
        else {
            return;
        };
        if self.shutting_down {
            let answered = answer.acknowledged || answer.refused;
            if !(answered && flusher::flush(&self.host, &worker, &metrics, true, now)) {
                flusher::give_up(&self.host, &worker, &metrics);
                self.host.done();
            }
        } else if answer.send_more() {
            // A backlog (or what is left after a refused record) drains at
            // the sidecar's pace, not one batch per tick.
            flusher::flush(&self.host, &worker, &metrics, false, now);
        }
    }

    /// The host is shutting the worker down. True when it may go at once;
    /// false while a last batch is in flight (then `done` follows its answer).
    pub fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        let metrics = self.metrics();
        metrics.publish(&self.host);
        let Some(worker) = self.worker.clone() else {
            return true;
        };
        let now = self.host.now_ms().unwrap_or(0);
        if flusher::busy(&worker) && flusher::flush(&self.host, &worker, &metrics, true, now) {
            return false;
        }
        flusher::give_up(&self.host, &worker, &metrics);
        true
    }
}

impl<H: RootHost> Root<H> {
    /// The worker's state, once configured (a host whose streams run on
    /// other threads builds their workers from its configuration).
    pub fn worker(&self) -> Option<Rc<Worker>> {
        self.worker.clone()
    }

    /// The host this root was made with.
    pub fn host(&self) -> &H {
        &self.host
    }
}

#[cfg(test)]
impl<H: RootHost> Root<H> {
    /// Hands the summed hot counters to the host, as the tick does.
    pub fn publish_metrics(&self) {
        self.metrics().publish(&self.host);
    }

    /// The records waiting in the worker's buffer.
    pub fn buffered(&self) -> Vec<tollgate_wire::UsageRecord> {
        match &self.worker {
            Some(worker) => worker.usage().records().cloned().collect(),
            None => Vec::new(),
        }
    }
}

/// How often the host's timer fires at most: between ticks it sends full
/// usage batches, so at most this long's records wait for a batch (at
/// 10,000 requests/s and a 1 s flush interval, 1,000 records, not 10,000).
pub const TIMER_PERIOD_MS: u64 = 100;

/// The root's tick: the usage flush interval, or the feed's poll interval
/// when that is shorter (a flush on every tick only sends what is buffered).
fn tick_period_ms(config: &Config) -> u64 {
    if config.key_feed.enabled {
        config
            .usage
            .flush_interval_ms
            .min(config.key_feed.poll_interval_ms)
    } else {
        config.usage.flush_interval_ms
    }
}

/// The start-up line: what the configuration turned on (no secret).
fn describe(config: &Config) -> String {
    let algorithms: Vec<&str> = config.jwt.algorithms.iter().map(|a| a.name()).collect();
    let replay = if config.jwt.require_jti {
        format!(
            "on ({} slots, scope {:?})",
            config.replay.slots, config.replay.scope
        )
    } else {
        "off".to_string()
    };
    let feed = if config.key_feed.enabled {
        format!("every {} ms", config.key_feed.poll_interval_ms)
    } else {
        "off".to_string()
    };
    format!(
        "configured; sidecar cluster {}, algorithms {}, {} kid secrets, max body {} bytes, \
         {} cache slots, key change feed {feed}, replay protection {replay}",
        config.sidecar_cluster,
        algorithms.join(","),
        config.jwt.kid_secrets.len(),
        config.max_body_bytes,
        config.key_cache.slots,
    )
}

#[cfg(test)]
mod tests;
