//! The glue between Envoy and the host-free core: the only module that
//! calls `proxy_wasm`. It reads headers and bodies, makes callouts, sends
//! local replies and moves metrics; every decision is made by `gate`,
//! `token`, `cache` and `usage`.
//!
//! It calls `proxy_wasm::hostcalls` directly rather than the trait helpers,
//! which `unwrap` host errors: here a host error becomes a denial
//! (`auth_unavailable`), never a trap and never a pass. Header values are
//! read as bytes, because the SDK's string getters panic on non-UTF-8.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use tollgate_wire::{INTERNAL_TOKEN_HEADER, KEY_ID_HEADER, USAGE_PATH, VERIFY_PATH};

use crate::body::Digest32;
use crate::cache::{self, CacheEntry, Lookup};
use crate::config::{self, Config};
use crate::error::Denial;
use crate::gate::{self, Exchange, Gate, Next, Outcome};
use crate::metrics::{denied_names, Counter, USAGE_RECORDS_BUFFERED};
use crate::replay::{self, Attempt, JtiClaim};
use crate::request_id::RequestIds;
use crate::token::RequestLine;
use crate::usage::{Pushed, UsageBuffer};

/// Installs the root context; called from the module's `_initialize`.
pub fn register() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn now_ms() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// Metric ids of this VM (a failed definition leaves `None`: the metric is
/// skipped, the request is not affected).
///
/// Counters that every request moves ([`Counter::is_hot`]) are summed here
/// and handed to the host on the root context's tick, which saves host calls
/// on the hot path; Envoy's stats show them at most one flush interval late.
/// Every other counter and the buffered gauge reach the host at once (the
/// graceful stop reads the gauge).
struct Metrics {
    counters: Vec<Option<u32>>,
    pending: Vec<Cell<u64>>,
    denied: Vec<Option<u32>>,
    buffered: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let define = |kind, name: &str| match hostcalls::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("cannot define metric {name}: {status:?}"),
                );
                None
            }
        };
        Metrics {
            counters: Counter::ALL
                .iter()
                .map(|c| define(MetricType::Counter, c.name()))
                .collect(),
            pending: Counter::ALL.iter().map(|_| Cell::new(0)).collect(),
            denied: denied_names()
                .iter()
                .map(|name| define(MetricType::Counter, name))
                .collect(),
            buffered: define(MetricType::Gauge, USAGE_RECORDS_BUFFERED),
        }
    }

    fn bump(id: Option<u32>, by: i64) {
        if let Some(id) = id {
            if by != 0 {
                let _ = hostcalls::increment_metric(id, by);
            }
        }
    }

    fn add(&self, counter: Counter, by: u64) {
        if counter.is_hot() {
            if let Some(pending) = self.pending.get(counter.index()) {
                pending.set(pending.get().saturating_add(by));
                return;
            }
        }
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        Self::bump(self.counters.get(counter.index()).copied().flatten(), by);
    }

    /// Hands the summed hot counters to the host.
    fn publish(&self) {
        for (pending, id) in self.pending.iter().zip(&self.counters) {
            let by = pending.replace(0);
            Self::bump(*id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn inc(&self, counter: Counter) {
        self.add(counter, 1);
    }

    fn denied(&self, denial: Denial) {
        let id = denial
            .code_index()
            .and_then(|i| self.denied.get(i).copied().flatten());
        Self::bump(id, 1);
    }

    fn buffered(&self, delta: i64) {
        Self::bump(self.buffered, delta);
    }
}

/// What the root context shares with every HTTP context of its worker.
struct Shared {
    config: Rc<Config>,
    usage: Rc<RefCell<UsageBuffer>>,
    request_ids: Rc<RefCell<RequestIds>>,
}

fn dispatch(
    config: &Config,
    path: &str,
    body: &[u8],
    timeout_ms: u64,
    request_id: &str,
) -> Result<u32, Status> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", config.sidecar_authority.as_str()),
        ("content-type", "application/json"),
        (INTERNAL_TOKEN_HEADER, config.internal_token.as_str()),
    ];
    if !request_id.is_empty() {
        headers.push(("x-request-id", request_id));
    }
    hostcalls::dispatch_http_call(
        &config.sidecar_cluster,
        headers,
        Some(body),
        vec![],
        Duration::from_millis(timeout_ms),
    )
}

fn call_response_status() -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
}

/// The per-worker root context: configuration, metrics, the usage buffer
/// and its flushes.
#[derive(Default)]
struct Root {
    metrics: Option<Rc<Metrics>>,
    shared: Option<Rc<Shared>>,
    shutting_down: bool,
}

impl Root {
    fn metrics(&mut self) -> Rc<Metrics> {
        self.metrics
            .get_or_insert_with(|| Rc::new(Metrics::define()))
            .clone()
    }

    /// Sends the next batch if the buffer is ready; true when one is in flight.
    fn flush(&mut self, now: u64) -> bool {
        let metrics = self.metrics();
        let Some(shared) = self.shared.clone() else {
            return false;
        };
        let Ok(mut usage) = shared.usage.try_borrow_mut() else {
            return false;
        };
        let batch = if self.shutting_down {
            usage.begin_final_flush(now)
        } else {
            usage.begin_flush(now)
        };
        let Some(batch) = batch else {
            return usage.in_flight();
        };
        let config = &shared.config;
        match dispatch(config, USAGE_PATH, &batch.body, config.usage.timeout_ms, "") {
            Ok(token) => {
                usage.dispatched(token);
                true
            }
            Err(status) => {
                usage.finish_flush(false, now);
                metrics.inc(Counter::UsageFlushFailures);
                log(
                    LogLevel::Warn,
                    &format!(
                        "cannot send usage to cluster {}: {status:?}; retrying later",
                        config.sidecar_cluster
                    ),
                );
                false
            }
        }
    }

    /// Shutdown: drops what could not be sent (counted) and releases the VM.
    fn give_up(&mut self) {
        let metrics = self.metrics();
        if let Some(shared) = &self.shared {
            if let Ok(mut usage) = shared.usage.try_borrow_mut() {
                let lost = usage.abandon();
                if lost > 0 {
                    metrics.add(Counter::UsageRecordsDropped, lost as u64);
                    metrics.buffered(-(lost as i64));
                    log(
                        LogLevel::Warn,
                        &format!("{lost} usage records could not be sent before shutdown"),
                    );
                }
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body_size: usize,
        _trailers: usize,
    ) {
        let metrics = self.metrics();
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = now_ms().unwrap_or(0);
        let (acknowledged, backlog) = {
            let Ok(mut usage) = shared.usage.try_borrow_mut() else {
                return;
            };
            if !usage.is_flush_token(token) {
                return;
            }
            let status = call_response_status();
            let ok = status.as_deref() == Some(b"200".as_slice());
            let sent = usage.finish_flush(ok, now);
            if ok {
                metrics.add(Counter::UsageRecordsSent, sent as u64);
                metrics.buffered(-(sent as i64));
            } else {
                metrics.inc(Counter::UsageFlushFailures);
                let status = status
                    .map(|s| String::from_utf8_lossy(&s).into_owned())
                    .unwrap_or_else(|| "no response".to_string());
                log(
                    LogLevel::Warn,
                    &format!(
                        "usage flush failed ({status}); {} records kept for retry",
                        usage.len()
                    ),
                );
            }
            (ok, usage.len() >= shared.config.usage.max_batch)
        };
        if self.shutting_down {
            if !(acknowledged && self.flush(now)) {
                self.give_up();
                let _ = hostcalls::done();
            }
        } else if acknowledged && backlog {
            // A backlog drains at the sidecar's pace, not one batch per tick.
            self.flush(now);
        }
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        self.metrics().publish();
        let now = now_ms().unwrap_or(0);
        let busy = match &self.shared {
            Some(shared) => match shared.usage.try_borrow() {
                Ok(usage) => usage.in_flight() || !usage.is_empty(),
                Err(_) => false,
            },
            None => false,
        };
        if busy && self.flush(now) {
            // Envoy keeps the VM until `done()` after the last answer.
            return false;
        }
        self.give_up();
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        self.metrics();
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log(
                    LogLevel::Error,
                    "invalid plugin configuration: .: it is empty",
                );
                return false;
            }
        };
        let parsed = match config::parse(&bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                log(LogLevel::Error, &format!("{e}"));
                return false;
            }
        };
        for warning in &parsed.warnings {
            log(LogLevel::Warn, &format!("plugin configuration: {warning}"));
        }
        let config = parsed.config;
        let interval = Duration::from_millis(config.usage.flush_interval_ms);
        if let Err(status) = hostcalls::set_tick_period(interval) {
            log(
                LogLevel::Error,
                &format!("cannot set the flush timer: {status:?}"),
            );
            return false;
        }
        log(
            LogLevel::Info,
            &format!(
                "configured; sidecar cluster {}, algorithms {}, {} kid secrets, max body {} bytes, {} cache slots, replay protection {}",
                config.sidecar_cluster,
                config
                    .jwt
                    .algorithms
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(","),
                config.jwt.kid_secrets.len(),
                config.max_body_bytes,
                config.key_cache.slots,
                if config.jwt.require_jti {
                    format!("on ({} slots)", config.replay.slots)
                } else {
                    "off".to_string()
                }
            ),
        );
        // A reconfiguration keeps the records already buffered.
        let (usage, request_ids) = match &self.shared {
            Some(old) => (old.usage.clone(), old.request_ids.clone()),
            None => {
                let Some(ids) = RequestIds::from_host() else {
                    log(
                        LogLevel::Error,
                        "no randomness to seed request ids; refusing to start",
                    );
                    return false;
                };
                (
                    Rc::new(RefCell::new(UsageBuffer::new(config.usage))),
                    Rc::new(RefCell::new(ids)),
                )
            }
        };
        self.shared = Some(Rc::new(Shared {
            config: Rc::new(config),
            usage,
            request_ids,
        }));
        true
    }

    fn on_tick(&mut self) {
        let metrics = self.metrics();
        metrics.publish();
        let Some(now) = now_ms() else {
            return;
        };
        if let Some(shared) = &self.shared {
            if let Ok(mut usage) = shared.usage.try_borrow_mut() {
                if usage.expire_overdue(now) {
                    metrics.inc(Counter::UsageFlushFailures);
                }
            }
        }
        self.flush(now);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http::new(
            self.shared.clone(),
            self.metrics
                .clone()
                .unwrap_or_else(|| Rc::new(Metrics::define())),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where a decision is acted on: inside a filter callback (its return
/// value carries on) or in a callout answer (the request must be resumed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Filter,
    Callout,
}

/// One HTTP stream.
struct Http {
    shared: Option<Rc<Shared>>,
    metrics: Rc<Metrics>,
    request_id: String,
    method: String,
    path: String,
    started_ms: u64,
    gate: Gate,
    key_hash: Digest32,
    jti_claim: Option<JtiClaim>,
    callout: Option<u32>,
    reply_status: Option<u16>,
    response_status: Option<u16>,
    response_bytes: u64,
}

impl Http {
    fn new(shared: Option<Rc<Shared>>, metrics: Rc<Metrics>) -> Self {
        Http {
            shared,
            metrics,
            request_id: String::new(),
            method: String::new(),
            path: String::new(),
            started_ms: 0,
            gate: Gate::denied(Denial::AuthUnavailable),
            key_hash: [0; 32],
            jti_claim: None,
            callout: None,
            reply_status: None,
            response_status: None,
            response_bytes: 0,
        }
    }

    /// Sends the one local reply of a denied request.
    fn send_denial(&mut self, denial: Denial) {
        self.metrics.denied(denial);
        self.reply_status = Some(denial.status());
        let body = denial.reply_body(&self.request_id);
        let status = u32::from(denial.status());
        if let Err(e) = hostcalls::send_http_response(status, denial.reply_headers(), Some(&body)) {
            log(
                LogLevel::Error,
                &format!("cannot send a local reply: {e:?}"),
            );
            let _ = hostcalls::reset_http_request();
        }
    }

    /// Carries out the gate's decision.
    fn act(&mut self, next: Next, phase: Phase) -> Action {
        match next {
            Next::Wait => Action::Pause,
            Next::Allow(key_id) => {
                let id = key_id.to_string();
                if let Err(e) =
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, KEY_ID_HEADER, Some(&id))
                {
                    log(
                        LogLevel::Error,
                        &format!("cannot set {KEY_ID_HEADER}: {e:?}"),
                    );
                    let next = self.gate.overrule(Denial::AuthUnavailable);
                    return self.act(next, phase);
                }
                // The jti is claimed last, once everything else passed, so
                // only a request that is let through uses it up.
                if let Some(claim) = self.jti_claim.take() {
                    if let Err(denial) = self.claim_jti(&claim) {
                        let next = self.gate.overrule(denial);
                        return self.act(next, phase);
                    }
                }
                self.metrics.inc(Counter::RequestsAllowed);
                if phase == Phase::Callout {
                    if let Err(e) = hostcalls::resume_http_request() {
                        log(
                            LogLevel::Error,
                            &format!("cannot resume the request: {e:?}"),
                        );
                    }
                }
                Action::Continue
            }
            Next::Deny(denial) => {
                self.send_denial(denial);
                Action::Pause
            }
            Next::Decided => match self.gate.outcome() {
                Some(Outcome::Allowed(_)) => Action::Continue,
                _ => Action::Pause,
            },
        }
    }

    /// Fails the request closed, whatever state it is in.
    fn fail(&mut self, denial: Denial, why: &str) -> Action {
        log(
            LogLevel::Error,
            &format!("request {}: {why}", self.request_id),
        );
        let next = self.gate.fail(denial);
        self.act(next, Phase::Filter)
    }

    /// Header phase: everything that needs no network, then the verdict
    /// from the cache or one callout.
    fn check_request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.fail(
                Denial::AuthUnavailable,
                "the plugin has no valid configuration",
            );
        };
        let config = &shared.config;
        let Some(now) = now_ms() else {
            return self.fail(Denial::AuthUnavailable, "no clock");
        };
        self.started_ms = now;
        let Ok(mut ids) = shared.request_ids.try_borrow_mut() else {
            return self.fail(Denial::AuthUnavailable, "request ids are busy");
        };
        self.request_id = ids.mint();
        drop(ids);
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(e) => {
                return self.fail(
                    Denial::AuthUnavailable,
                    &format!("cannot read headers: {e:?}"),
                )
            }
        };
        self.method = gate::header_value(&headers, ":method")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        self.path = gate::header_value(&headers, ":path")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();

        // The id the sidecar dedups by is ours, never the client's; the
        // credentials and any client-sent key id never reach the upstream.
        if let Err(e) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-request-id",
            Some(&self.request_id),
        ) {
            return self.fail(
                Denial::AuthUnavailable,
                &format!("cannot set x-request-id: {e:?}"),
            );
        }
        for name in gate::STRIPPED_HEADERS {
            if let Err(e) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                return self.fail(
                    Denial::AuthUnavailable,
                    &format!("cannot strip {name}: {e:?}"),
                );
            }
        }

        let line = RequestLine {
            method: &self.method,
            path: &self.path,
        };
        let now_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        let admitted =
            match gate::check_headers(&headers, &line, &config.jwt, config.max_body_bytes, now_s) {
                Ok(admitted) => admitted,
                Err(denial) => {
                    self.gate = Gate::denied(denial);
                    self.send_denial(denial);
                    return Action::Pause;
                }
            };
        self.jti_claim = match replay::claim_for(&admitted.token, &config.jwt, &config.replay) {
            Ok(claim) => claim,
            Err(denial) => {
                self.gate = Gate::denied(denial);
                self.send_denial(denial);
                return Action::Pause;
            }
        };
        self.gate = Gate::new(admitted.token.body_sha256, config.max_body_bytes);
        self.key_hash = admitted.key_hash;

        let slot = cache::slot_key(&self.key_hash, config.key_cache.slots);
        let cached = read_slot(&slot);
        let mut next = match cache::lookup(cached.as_ref(), &self.key_hash, now, &config.key_cache)
        {
            Lookup::Fresh(entry) => {
                self.metrics.inc(Counter::KeyCacheHit);
                self.gate.key_known(gate::decide_key(&entry, now))
            }
            Lookup::Miss => {
                self.metrics.inc(Counter::KeyCacheMiss);
                let request = crate::body::to_hex(&self.key_hash);
                let body = format!(r#"{{"key_hash":"{request}"}}"#);
                match dispatch(
                    config,
                    VERIFY_PATH,
                    body.as_bytes(),
                    config.callout_timeout_ms,
                    &self.request_id,
                ) {
                    Ok(token) => {
                        self.callout = Some(token);
                        Next::Wait
                    }
                    Err(e) => self.verdict_unavailable(&format!("callout not sent: {e:?}"), now),
                }
            }
        };
        if end_of_stream && next == Next::Wait {
            next = self.gate.body_end();
        }
        self.act(next, Phase::Filter)
    }

    /// Records the request's `jti` in the shared replay store: read the
    /// bucket, decide, write it back with the read's CAS; a lost race reads
    /// again (the winner may have claimed this very jti). A host error, a
    /// full bucket or endless contention fail closed.
    fn claim_jti(&self, claim: &JtiClaim) -> Result<(), Denial> {
        for _ in 0..replay::MAX_CLAIM_ATTEMPTS {
            let now_s = now_ms()
                .and_then(|ms| i64::try_from(ms / 1000).ok())
                .ok_or(Denial::AuthUnavailable)?;
            let (current, cas) = hostcalls::get_shared_data(&claim.bucket_key).map_err(|e| {
                log(
                    LogLevel::Error,
                    &format!(
                        "request {}: cannot read the replay store: {e:?}",
                        self.request_id
                    ),
                );
                Denial::AuthUnavailable
            })?;
            let bytes = match replay::attempt(current.as_deref(), claim, now_s) {
                Attempt::Replayed => return Err(Denial::ReplayedToken),
                Attempt::Full => {
                    self.metrics.inc(Counter::ReplayStoreFull);
                    log(
                        LogLevel::Warn,
                        &format!(
                            "request {}: replay store bucket {} is full of live entries; \
                             refusing (raise jwt.replay_slots)",
                            self.request_id, claim.bucket_key
                        ),
                    );
                    return Err(Denial::AuthUnavailable);
                }
                Attempt::Write(bytes) => bytes,
            };
            match hostcalls::set_shared_data(
                &claim.bucket_key,
                Some(&bytes),
                Some(replay::write_cas(cas)),
            ) {
                Ok(()) => return Ok(()),
                Err(Status::CasMismatch) => self.metrics.inc(Counter::ReplayCasRetries),
                Err(e) => {
                    log(
                        LogLevel::Error,
                        &format!(
                            "request {}: cannot write the replay store: {e:?}",
                            self.request_id
                        ),
                    );
                    return Err(Denial::AuthUnavailable);
                }
            }
        }
        log(
            LogLevel::Warn,
            &format!(
                "request {}: replay store bucket {} stayed contended; refusing",
                self.request_id, claim.bucket_key
            ),
        );
        Err(Denial::AuthUnavailable)
    }

    /// The sidecar gave no usable answer: a fresh entry another worker just
    /// wrote, else a stale positive verdict, else 503.
    fn verdict_unavailable(&mut self, why: &str, now: u64) -> Next {
        self.metrics.inc(Counter::CalloutFailures);
        let Some(shared) = self.shared.clone() else {
            return self.gate.fail(Denial::AuthUnavailable);
        };
        let policy = &shared.config.key_cache;
        let slot = cache::slot_key(&self.key_hash, policy.slots);
        let cached = read_slot(&slot);
        if let Lookup::Fresh(entry) = cache::lookup(cached.as_ref(), &self.key_hash, now, policy) {
            return self.gate.key_known(gate::decide_key(&entry, now));
        }
        if let Some(entry) = cache::stale_fallback(cached.as_ref(), &self.key_hash, now, policy) {
            self.metrics.inc(Counter::KeyCacheStale);
            log(
                LogLevel::Warn,
                &format!(
                    "request {}: key verification failed ({why}); using a stale verdict",
                    self.request_id
                ),
            );
            return self.gate.key_known(gate::decide_key(&entry, now));
        }
        log(
            LogLevel::Warn,
            &format!(
                "request {}: key verification failed ({why}); refusing",
                self.request_id
            ),
        );
        self.gate.fail(Denial::AuthUnavailable)
    }
}

fn read_slot(slot: &str) -> Option<CacheEntry> {
    match hostcalls::get_shared_data(slot) {
        Ok((Some(bytes), _)) => CacheEntry::decode(&bytes),
        _ => None,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.callout != Some(token) {
            return;
        }
        self.callout = None;
        let Some(now) = now_ms() else {
            let next = self.gate.fail(Denial::AuthUnavailable);
            self.act(next, Phase::Callout);
            return;
        };
        let status = call_response_status();
        let body = if body_size > 0 && body_size <= gate::MAX_VERIFY_REPLY_BYTES {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        } else {
            None
        };
        let entry = gate::parse_verify_reply(status.as_deref(), body.as_deref())
            .and_then(|reply| CacheEntry::from_reply(self.key_hash, &reply, now));
        let next = match entry {
            Some(entry) => {
                if let Some(shared) = &self.shared {
                    let slot = cache::slot_key(&self.key_hash, shared.config.key_cache.slots);
                    if let Err(e) = hostcalls::set_shared_data(&slot, Some(&entry.encode()), None) {
                        log(LogLevel::Warn, &format!("cannot cache a verdict: {e:?}"));
                    }
                }
                self.gate.key_known(gate::decide_key(&entry, now))
            }
            None => {
                let why = match status {
                    Some(s) if s.as_slice() == b"200" => "unreadable answer".to_string(),
                    Some(s) => format!("status {}", String::from_utf8_lossy(&s)),
                    None => "no answer (timeout or connection failure)".to_string(),
                };
                self.verdict_unavailable(&why, now)
            }
        };
        self.act(next, Phase::Callout);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.check_request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let next = self
            .gate
            .body(body_size as u64, end_of_stream, |start, len| {
                let start = usize::try_from(start).ok()?;
                let len = usize::try_from(len).ok()?;
                hostcalls::get_buffer(BufferType::HttpRequestBody, start, len)
                    .ok()
                    .flatten()
            });
        self.act(next, Phase::Filter)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let next = self.gate.body_end();
        self.act(next, Phase::Filter)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response_status =
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok());
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        self.response_bytes = self.response_bytes.saturating_add(body_size as u64);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let exchange = Exchange {
            request_id: &self.request_id,
            method: &self.method,
            path: &self.path,
            key_id: self.gate.key_id(),
            outcome: self.gate.outcome(),
            response_status: self.response_status.or(self.reply_status),
            request_bytes: self.gate.body_bytes(),
            response_bytes: self.response_bytes,
            started_ms: self.started_ms,
            ended_ms: now_ms().unwrap_or(self.started_ms),
        };
        let Some(record) = gate::usage_record(&exchange) else {
            return;
        };
        let pushed = match shared.usage.try_borrow_mut() {
            Ok(mut usage) => usage.push(record),
            Err(_) => Pushed::Dropped,
        };
        match pushed {
            Pushed::Buffered => self.metrics.buffered(1),
            Pushed::Dropped => self.metrics.inc(Counter::UsageRecordsDropped),
        }
    }
}
