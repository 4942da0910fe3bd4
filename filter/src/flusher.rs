//! Sending a worker's usage records to the sidecar: one batch in flight at
//! a time, the next when the sidecar has acknowledged the last (a backlog
//! drains at the sidecar's pace), backoff after a failure, and a last drain
//! at shutdown. The buffer's own bookkeeping is `usage::UsageBuffer`.

use tollgate_wire::{refused_record, ErrorBody, USAGE_PATH};

use crate::host::{Host, LogLevel};
use crate::metrics::{Counter, Metrics};
use crate::sidecar_call;
use crate::worker::Worker;

/// How a flush's answer was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The sidecar stored the batch.
    pub acknowledged: bool,
    /// The sidecar refused one record of it, which was dropped; the rest
    /// waits to be sent again at once.
    pub refused: bool,
    /// A full batch or more is still waiting.
    pub backlog: bool,
}

impl Answered {
    /// Whether the next batch should go now rather than on a tick.
    pub fn send_more(&self) -> bool {
        self.backlog && (self.acknowledged || self.refused)
    }
}

/// Sends the next batch when the buffer is ready (`last`: at shutdown,
/// whatever the backoff says). True when a batch is in flight afterwards.
pub fn flush(host: &impl Host, worker: &Worker, metrics: &Metrics, last: bool, now: u64) -> bool {
    let mut usage = worker.usage();
    let batch = if last {
        usage.begin_final_flush(now)
    } else {
        usage.begin_flush(now)
    };
    let Some(batch) = batch else {
        return usage.in_flight();
    };
    let config = &worker.config();
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

/// Largest refusal body the flusher reads.
const MAX_REFUSAL_BYTES: usize = 4096;

/// Takes the answer to the call `token` (`body_size` bytes of body); `None`
/// when it is not the flush in flight (another call, or one already given
/// up on).
///
/// A 400 that names one record (`[i].field`, see `wire::record_field`)
/// means the sidecar will never store that record: it is dropped, counted
/// and logged, and the rest of the batch is resent at once, so one
/// impossible record cannot hold back a worker's whole ledger. Any other
/// failure keeps the batch for a retry with backoff.
pub fn answered(
    host: &impl Host,
    worker: &Worker,
    metrics: &Metrics,
    token: u32,
    body_size: usize,
    now: u64,
) -> Option<Answered> {
    let mut usage = worker.usage();
    if !usage.is_flush_token(token) {
        return None;
    }
    let status = host.callout_status();
    if status.as_deref() == Some(b"400".as_slice()) {
        if let Some((index, why)) = refusal(host, body_size) {
            if let Some(record) = usage.refuse_record(index, now) {
                metrics.inc(host, Counter::UsageRecordsRefused);
                metrics.buffered(host, -1);
                host.log(
                    LogLevel::Error,
                    &format!(
                        "the sidecar refused usage record {} (key {}): {why}; dropped it",
                        record.request_id, record.api_key_id
                    ),
                );
                return Some(Answered {
                    acknowledged: false,
                    refused: true,
                    backlog: !usage.is_empty(),
                });
            }
        }
    }
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
        refused: false,
        backlog: usage.len() >= worker.config().usage.max_batch,
    })
}

/// The record a 400 names, and its message.
fn refusal(host: &impl Host, body_size: usize) -> Option<(usize, String)> {
    if body_size == 0 || body_size > MAX_REFUSAL_BYTES {
        return None;
    }
    let body: ErrorBody = serde_json::from_slice(&host.callout_body(body_size)?).ok()?;
    let index = refused_record(body.error.field.as_deref()?)?;
    Some((index, body.error.message))
}

/// Fails a flush whose answer is overdue (counted as a failure).
pub fn expire_overdue(host: &impl Host, worker: &Worker, metrics: &Metrics, now: u64) {
    if worker.usage().expire_overdue(now) {
        metrics.inc(host, Counter::UsageFlushFailures);
    }
}

/// Whether records wait or a batch is in flight.
pub fn busy(worker: &Worker) -> bool {
    let usage = worker.usage();
    usage.in_flight() || !usage.is_empty()
}

/// Shutdown: drops what could not be sent (counted, and logged).
pub fn give_up(host: &impl Host, worker: &Worker, metrics: &Metrics) {
    let lost = worker.usage().abandon();
    if lost > 0 {
        metrics.add(host, Counter::UsageRecordsDropped, lost as u64);
        metrics.buffered(host, -(lost as i64));
        host.log(
            LogLevel::Warn,
            &format!("{lost} usage records could not be sent before shutdown"),
        );
    }
}
