//! Sending a worker's usage records to the sidecar: one batch in flight at
//! a time, the next when the sidecar has acknowledged the last (a backlog
//! drains at the sidecar's pace), backoff after a failure, and a last drain
//! at shutdown. The buffer's own bookkeeping is `usage::UsageBuffer`.

use tollgate_wire::USAGE_PATH;

use crate::host::{Host, LogLevel};
use crate::metrics::{Counter, Metrics};
use crate::sidecar_call;
use crate::worker::Worker;

/// How a flush's answer was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The sidecar stored the batch.
    pub acknowledged: bool,
    /// A full batch or more is still waiting.
    pub backlog: bool,
}

/// Sends the next batch when the buffer is ready (`last`: at shutdown,
/// whatever the backoff says). True when a batch is in flight afterwards.
pub fn flush(host: &impl Host, worker: &Worker, metrics: &Metrics, last: bool, now: u64) -> bool {
    let Ok(mut usage) = worker.usage.try_borrow_mut() else {
        return false;
    };
    let batch = if last {
        usage.begin_final_flush(now)
    } else {
        usage.begin_flush(now)
    };
    let Some(batch) = batch else {
        return usage.in_flight();
    };
    let config = &worker.config;
    match sidecar_call::post(
        host,
        config,
        USAGE_PATH,
        &batch.body,
        config.usage.timeout_ms,
        None,
    ) {
        Ok(token) => {
            usage.dispatched(token);
            true
        }
        Err(e) => {
            usage.finish_flush(false, now);
            metrics.inc(host, Counter::UsageFlushFailures);
            host.log(
                LogLevel::Warn,
                &format!(
                    "cannot send usage to cluster {}: {e}; retrying later",
                    config.sidecar_cluster
                ),
            );
            false
        }
    }
}

/// Takes the answer to the call `token`; `None` when it is not the flush in
/// flight (another call, or one already given up on).
pub fn answered(
    host: &impl Host,
    worker: &Worker,
    metrics: &Metrics,
    token: u32,
    now: u64,
) -> Option<Answered> {
    let mut usage = worker.usage.try_borrow_mut().ok()?;
    if !usage.is_flush_token(token) {
        return None;
    }
    let status = host.callout_status();
    let ok = status.as_deref() == Some(b"200".as_slice());
    let sent = usage.finish_flush(ok, now);
    if ok {
        metrics.add(host, Counter::UsageRecordsSent, sent as u64);
        metrics.buffered(host, -(sent as i64));
    } else {
        metrics.inc(host, Counter::UsageFlushFailures);
        let status = status
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_else(|| "no response".to_string());
        host.log(
            LogLevel::Warn,
            &format!(
                "usage flush failed ({status}); {} records kept for retry",
                usage.len()
            ),
        );
    }
    Some(Answered {
        acknowledged: ok,
        backlog: usage.len() >= worker.config.usage.max_batch,
    })
}

/// Fails a flush whose answer is overdue (counted as a failure).
pub fn expire_overdue(host: &impl Host, worker: &Worker, metrics: &Metrics, now: u64) {
    if let Ok(mut usage) = worker.usage.try_borrow_mut() {
        if usage.expire_overdue(now) {
            metrics.inc(host, Counter::UsageFlushFailures);
        }
    }
}

/// Whether records wait or a batch is in flight.
pub fn busy(worker: &Worker) -> bool {
    match worker.usage.try_borrow() {
        Ok(usage) => usage.in_flight() || !usage.is_empty(),
        Err(_) => false,
    }
}

/// Shutdown: drops what could not be sent (counted, and logged).
pub fn give_up(host: &impl Host, worker: &Worker, metrics: &Metrics) {
    let Ok(mut usage) = worker.usage.try_borrow_mut() else {
        return;
    };
    let lost = usage.abandon();
    if lost > 0 {
        metrics.add(host, Counter::UsageRecordsDropped, lost as u64);
        metrics.buffered(host, -(lost as i64));
        host.log(
            LogLevel::Warn,
            &format!("{lost} usage records could not be sent before shutdown"),
        );
    }
}
