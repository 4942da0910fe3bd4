//! The per-worker usage buffer: records waiting for the sidecar, batching,
//! and retry with exponential backoff.
//!
//! Every worker of a configuration appends to one buffer
//! (`worker::Shared`: one per wasm VM; one for all of the native module's
//! threads), and the root flushes it from its tick. A batch
//! stays at the front of the buffer until the sidecar acknowledges it, so a
//! failed batch is retried first and in order; the sidecar deduplicates by
//! `request_id`, so a batch that was stored but not acknowledged costs
//! nothing when resent.
//!
//! When the buffer is full the NEWEST record is dropped (and counted): the
//! records at the front may be in flight, and keeping them intact keeps the
//! acknowledge-then-remove bookkeeping exact. A full buffer means the
//! sidecar has been unreachable for a long time, and what is lost is the
//! most recent traffic, which the `dropped` counter makes visible.

use std::collections::VecDeque;

use tollgate_wire::UsageRecord;

/// The validated usage settings of the plugin configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePolicy {
    /// Tick period of the root context; also the first retry delay.
    pub flush_interval_ms: u64,
    /// Most records per ingestion call (at most `wire::MAX_USAGE_BATCH`).
    pub max_batch: usize,
    /// Most records held per worker; further records are dropped.
    pub buffer_cap: usize,
    /// Longest delay between retries.
    pub max_backoff_ms: u64,
    /// Timeout of one ingestion call.
    pub timeout_ms: u64,
}

/// Whether [`UsageBuffer::push`] kept the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The record waits in the buffer.
    Buffered,
    /// The buffer was full (or the record invalid); the record is lost.
    Dropped,
}

/// A batch ready to send: the JSON array body and how many records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[UsageRecord, ...]` as JSON.
    pub body: Vec<u8>,
    /// Records in the batch (the first `count` of the buffer).
    pub count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    count: usize,
    since_ms: u64,
    token: Option<u32>,
}

/// Records waiting to be sent, plus the flush state.
#[derive(Debug)]
pub struct UsageBuffer {
    policy: UsagePolicy,
    records: VecDeque<UsageRecord>,
    in_flight: Option<InFlight>,
    failures: u32,
    next_attempt_ms: u64,
}

/// Grace beyond the call timeout after which a flush that never got an
/// answer is considered failed (the host should always answer first).
const IN_FLIGHT_GRACE_MS: u64 = 1_000;

impl UsageBuffer {
    /// An empty buffer.
    pub fn new(policy: UsagePolicy) -> Self {
        UsageBuffer {
            policy,
            records: VecDeque::new(),
            in_flight: None,
            failures: 0,
            next_attempt_ms: 0,
        }
    }

    /// Records held (including an unacknowledged batch).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records held, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &UsageRecord> {
        self.records.iter()
    }

    /// Whether a batch awaits the sidecar's answer.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Consecutive failed flushes.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Appends a record; drops it when the buffer is full or the record
    /// would be refused by the sidecar anyway.
    pub fn push(&mut self, record: UsageRecord) -> Pushed {
        if self.records.len() >= self.policy.buffer_cap || record.validate().is_err() {
            return Pushed::Dropped;
        }
        self.records.push_back(record);
        Pushed::Buffered
    }

    /// The delay after `failures` consecutive failures: the flush interval,
    /// doubled per further failure, capped at `max_backoff_ms`.
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let doublings = (failures - 1).min(32);
        self.policy
            .flush_interval_ms
            .saturating_mul(1u64 << doublings)
            .min(self.policy.max_backoff_ms)
    }

    /// Whether a flush may start at `now_ms`: records waiting, none in
    /// flight, and the backoff has passed.
    pub fn ready(&self, now_ms: u64) -> bool {
        !self.records.is_empty() && self.in_flight.is_none() && now_ms >= self.next_attempt_ms
    }

    /// Starts a flush when [`UsageBuffer::ready`]: the first `max_batch`
    /// records as JSON. They stay in the buffer until
    /// [`UsageBuffer::finish_flush`].
    pub fn begin_flush(&mut self, now_ms: u64) -> Option<Batch> {
        if !self.ready(now_ms) {
            return None;
        }
        self.take_batch(now_ms)
    }

    /// Starts a flush whatever the backoff says (the VM is shutting down:
    /// there is no later). Still one flush at a time.
    pub fn begin_final_flush(&mut self, now_ms: u64) -> Option<Batch> {
        if self.records.is_empty() || self.in_flight.is_some() {
            return None;
        }
        self.take_batch(now_ms)
    }

    fn take_batch(&mut self, now_ms: u64) -> Option<Batch> {
        let count = self.records.len().min(self.policy.max_batch);
        let batch: Vec<&UsageRecord> = self.records.iter().take(count).collect();
        let body = serde_json::to_vec(&batch).ok()?;
        self.in_flight = Some(InFlight {
            count,
            since_ms: now_ms,
            token: None,
        });
        Some(Batch { body, count })
    }

    /// Remembers the host's token for the flush in flight.
    pub fn dispatched(&mut self, token: u32) {
        if let Some(flight) = self.in_flight.as_mut() {
            flight.token = Some(token);
        }
    }

    /// Whether `token` is the call of the flush in flight.
    pub fn is_flush_token(&self, token: u32) -> bool {
        matches!(self.in_flight, Some(InFlight { token: Some(t), .. }) if t == token)
    }

    /// Ends the flush in flight. On success drops the acknowledged records
    /// and returns how many; on failure keeps them and backs off.
    pub fn finish_flush(&mut self, acknowledged: bool, now_ms: u64) -> usize {
        let Some(flight) = self.in_flight.take() else {
            return 0;
        };
        if acknowledged {
            let count = flight.count.min(self.records.len());
            self.records.drain(..count);
            self.failures = 0;
            self.next_attempt_ms = now_ms;
            count
        } else {
            self.failures = self.failures.saturating_add(1);
            self.next_attempt_ms = now_ms.saturating_add(self.backoff_ms(self.failures));
            0
        }
    }

    /// Ends the flush in flight whose record `index` the sidecar refused
    /// as impossible (a 400 naming it): that record is removed and
    /// returned, the others stay for an immediate resend. A refusal is an
    /// answer, not a failure, so it does not back off. `None` (and the
    /// flush ends as failed) when `index` is not in the batch.
    pub fn refuse_record(&mut self, index: usize, now_ms: u64) -> Option<UsageRecord> {
        let flight = self.in_flight?;
        if index >= flight.count.min(self.records.len()) {
            self.finish_flush(false, now_ms);
            return None;
        }
        self.in_flight = None;
        self.next_attempt_ms = now_ms;
        self.records.remove(index)
    }

    /// Fails a flush whose answer is overdue; true when one was.
    pub fn expire_overdue(&mut self, now_ms: u64) -> bool {
        let limit = self.policy.timeout_ms.saturating_add(IN_FLIGHT_GRACE_MS);
        match self.in_flight {
            Some(flight) if now_ms.saturating_sub(flight.since_ms) > limit => {
                self.finish_flush(false, now_ms);
                true
            }
            _ => false,
        }
    }

    /// Empties the buffer (VM shutdown after the last attempt); returns how
    /// many records are thereby lost.
    pub fn abandon(&mut self) -> usize {
        self.in_flight = None;
        let lost = self.records.len();
        self.records.clear();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UsagePolicy {
        UsagePolicy {
            flush_interval_ms: 1_000,
            max_batch: 3,
            buffer_cap: 5,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
        }
    }

    fn record(n: u32) -> UsageRecord {
        UsageRecord {
            request_id: format!("{n:032x}"),
            api_key_id: 1,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: tollgate_wire::Outcome::Allowed,
            request_bytes: 10,
            response_bytes: 20,
            units: 0,
            duration_ms: 1,
            timestamp_ms: 1_700_000_000_000,
            llm: None,
        }
    }

    fn ids(batch: &Batch) -> Vec<String> {
        let records: Vec<UsageRecord> = serde_json::from_slice(&batch.body).unwrap();
        records.into_iter().map(|r| r.request_id).collect()
    }

    #[test]
    fn a_refused_record_goes_and_the_rest_is_resent_at_once() {
        let mut buf = UsageBuffer::new(policy());
        for n in 0..4 {
            buf.push(record(n));
        }
        let batch = buf.begin_flush(0).unwrap();
        assert_eq!(batch.count, 3);
        assert_eq!(
            buf.refuse_record(1, 10).map(|r| r.request_id),
            Some(format!("{:032x}", 1))
        );
        assert!(!buf.in_flight());
        assert_eq!(buf.failures(), 0);
        let again = buf.begin_flush(10).expect("resent without backoff");
        assert_eq!(ids(&again), [0, 2, 3].map(|n| format!("{n:032x}")));
        // An index outside the batch cannot be acted on: a plain failure.
        assert_eq!(buf.refuse_record(7, 20), None);
        assert_eq!(buf.failures(), 1);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn cap_drops_the_newest() {
        let mut b = UsageBuffer::new(policy());
        for n in 0..5 {
            assert_eq!(b.push(record(n)), Pushed::Buffered);
        }
        assert_eq!(b.push(record(5)), Pushed::Dropped);
        assert_eq!(b.len(), 5);
        let batch = b.begin_flush(0).unwrap();
        assert_eq!(
            ids(&batch),
            vec![
                format!("{:032x}", 0),
                format!("{:032x}", 1),
                format!("{:032x}", 2)
            ]
        );
    }

    #[test]
    fn invalid_records_are_dropped() {
        let mut b = UsageBuffer::new(policy());
        let mut r = record(1);
        r.api_key_id = 0;
        assert_eq!(b.push(r), Pushed::Dropped);
        assert!(b.is_empty());
    }

    #[test]
    fn batches_are_at_most_max_batch_and_acknowledged_in_order() {
        let mut b = UsageBuffer::new(policy());
        for n in 0..5 {
            b.push(record(n));
        }
        let first = b.begin_flush(0).unwrap();
        assert_eq!(first.count, 3);
        // One flush at a time.
        assert!(b.in_flight());
        assert_eq!(b.begin_flush(0), None);
        // Records pushed meanwhile go to the back.
        assert_eq!(b.finish_flush(true, 10), 3);
        let second = b.begin_flush(10).unwrap();
        assert_eq!(second.count, 2);
        assert_eq!(ids(&second)[0], format!("{:032x}", 3));
        assert_eq!(b.finish_flush(true, 20), 2);
        assert!(b.is_empty());
        assert_eq!(b.begin_flush(30), None);
    }

    #[test]
    fn a_failed_batch_is_retried_first_after_backoff() {
        let mut b = UsageBuffer::new(policy());
        for n in 0..4 {
            b.push(record(n));
        }
        let first = b.begin_flush(0).unwrap();
        assert_eq!(b.finish_flush(false, 100), 0);
        assert_eq!(b.len(), 4);
        assert_eq!(b.begin_flush(1_099), None, "backing off");
        let again = b.begin_flush(1_100).unwrap();
        assert_eq!(again, first);
        b.finish_flush(false, 2_000);
        assert_eq!(b.begin_flush(3_999), None);
        assert!(b.begin_flush(4_000).is_some());
        b.finish_flush(true, 4_000);
        assert_eq!(b.failures(), 0);
        assert!(b.ready(4_000));
    }

    #[test]
    fn the_final_flush_ignores_backoff_but_not_a_flush_in_flight() {
        let mut b = UsageBuffer::new(policy());
        b.push(record(1));
        b.begin_flush(0).unwrap();
        assert_eq!(b.begin_final_flush(0), None);
        b.finish_flush(false, 0);
        assert_eq!(b.begin_flush(10), None);
        assert_eq!(b.begin_final_flush(10).unwrap().count, 1);
        b.finish_flush(true, 20);
        assert_eq!(b.begin_final_flush(20), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = UsageBuffer::new(policy());
        let delays: Vec<u64> = (0..9).map(|f| b.backoff_ms(f)).collect();
        assert_eq!(
            delays,
            vec![0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(b.backoff_ms(u32::MAX), 30_000);
    }

    #[test]
    fn tokens_and_overdue_flushes() {
        let mut b = UsageBuffer::new(policy());
        b.push(record(1));
        b.begin_flush(0).unwrap();
        assert!(!b.is_flush_token(9));
        b.dispatched(9);
        assert!(b.is_flush_token(9));
        assert!(!b.expire_overdue(6_000));
        assert!(b.expire_overdue(6_001));
        assert!(!b.in_flight());
        assert!(!b.is_flush_token(9));
        assert_eq!(b.len(), 1);
        assert_eq!(b.abandon(), 1);
        assert!(b.is_empty());
    }
}
