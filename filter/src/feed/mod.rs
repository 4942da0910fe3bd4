//! Following the sidecar's key change feed, so that a revoked key stops
//! working on every Envoy within about a second, whatever the cache's TTL.
//!
//! One Envoy instance polls the feed about once per `poll_interval_ms`,
//! whichever worker's tick comes first: the workers share a [`FeedState`]
//! in shared data (`tollgate.feed`), and a poll is taken by a
//! compare-and-swap that leases it. The answer's changes evict the cached
//! verdicts they name; a `reset` (the instance fell behind what the feed
//! keeps) empties the whole cache.
//!
//! The cursor means: every change up to it has been applied to the cache,
//! or concerns no cached entry. So a verdict read by the sidecar before a
//! change the instance has already applied must not be cached (the change
//! may be about that key and would never come again). The verify reply
//! names the feed position it was read at (`feed_cursor`);
//! [`verdict_cached`] checks it after the entry is written, and takes the
//! entry out again if the instance's cursor has passed it. A poll moves the
//! cursor before it evicts, so every interleaving of the two ends with the
//! entry gone or current.
//!
//! While the feed answers, active verdicts live for the long positive TTL;
//! once its last good answer is older than `max_lag_ms` (or it is off),
//! for the short unfed one: the revocation bound degrades to the TTL, not
//! worse.

use tollgate_wire::{changes_query, parse_lower_hex, ChangesReply, MAX_CHANGES_PER_REPLY};

use crate::cache::{self, CacheEntry};
pub use crate::config::FeedPolicy;
use crate::host::{Callout, Host, LogLevel};
use crate::metrics::{Counter, Metrics};
use crate::shared_table::{self, decode_versioned, encode_versioned, Change, Updated};
use crate::worker::Worker;

/// The shared-data key of the instance's [`FeedState`].
pub const STATE_KEY: &str = "tollgate.feed";

/// Largest feed answer the filter reads (a full page of changes).
pub const MAX_REPLY_BYTES: usize = 64 + MAX_CHANGES_PER_REPLY * 160;

const FORMAT_VERSION: u8 = 1;
const HAS_CURSOR: u8 = 1;
const STATE_LEN: usize = 2 + 5 * 8;
const UPDATE_ATTEMPTS: u32 = 8;

/// What the instance's workers share about the feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Changes up to here are applied; `None` until the first verdict
    /// names a position (with nothing cached there is nothing to follow).
    pub cursor: Option<u64>,
    /// When the feed last answered (ms since the epoch; 0: never).
    pub last_ok_ms: u64,
    /// A poll is in flight until then (its lease).
    pub in_flight_until_ms: u64,
    /// The next poll is due then.
    pub next_poll_ms: u64,
    /// The lag last added to the lag gauge, so that any worker can move
    /// the gauge by the difference.
    pub published_lag_ms: u64,
}

impl FeedState {
    /// The fixed binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_LEN);
        out.push(if self.cursor.is_some() { HAS_CURSOR } else { 0 });
        for n in [
            self.cursor.unwrap_or(0),
            self.last_ok_ms,
            self.in_flight_until_ms,
            self.next_poll_ms,
            self.published_lag_ms,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        encode_versioned(FORMAT_VERSION, &out)
    }

    /// Parses [`FeedState::encode`]'s output; anything else is `None`.
    pub fn decode(bytes: &[u8]) -> Option<FeedState> {
        let body = decode_versioned(FORMAT_VERSION, bytes)?;
        let (&flags, rest) = body.split_first()?;
        if rest.len() != 5 * 8 || flags & !HAS_CURSOR != 0 {
            return None;
        }
        let mut numbers = rest
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_be_bytes).unwrap_or(0));
        let mut next = || numbers.next().unwrap_or(0);
        let cursor = next();
        Some(FeedState {
            cursor: (flags & HAS_CURSOR != 0).then_some(cursor),
            last_ok_ms: next(),
            in_flight_until_ms: next(),
            next_poll_ms: next(),
            published_lag_ms: next(),
        })
    }

    /// Whether the feed counts as current at `now_ms`.
    pub fn is_current(&self, policy: &FeedPolicy, now_ms: u64) -> bool {
        policy.enabled
            && self.cursor.is_some()
            && self.last_ok_ms > 0
            && now_ms.saturating_sub(self.last_ok_ms) <= policy.max_lag_ms
    }

    /// How long ago the feed last answered (0 before anything is followed).
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        match (self.cursor, self.last_ok_ms) {
            (Some(_), 0) | (None, _) => 0,
            (Some(_), ok) => now_ms.saturating_sub(ok),
        }
    }

    /// Whether a poll may start at `now_ms`.
    fn poll_due(&self, now_ms: u64) -> bool {
        self.cursor.is_some() && now_ms >= self.next_poll_ms && now_ms >= self.in_flight_until_ms
    }
}

/// A poll in flight: its callout token and the cursor it asked after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub token: u32,
    pub after: u64,
}

fn read_state(host: &impl Host) -> FeedState {
    shared_table::read(host, STATE_KEY)
        .and_then(|bytes| FeedState::decode(&bytes))
        .unwrap_or_default()
}

/// Changes the shared state with `change` (read, change, compare-and-swap
/// write); the state as written, or `None` when `change` declined or every
/// attempt failed.
fn update_state(
    host: &impl Host,
    mut change: impl FnMut(&mut FeedState) -> bool,
) -> Option<FeedState> {
    let mut written = None;
    let update = shared_table::update(host, STATE_KEY, UPDATE_ATTEMPTS, |current| {
        let mut state = current.and_then(FeedState::decode).unwrap_or_default();
        if change(&mut state) {
            written = Some(state);
            Change::Write(state.encode())
        } else {
            Change::Stop(())
        }
    });
    match update.result {
        Updated::Written => written,
        _ => None,
    }
}

/// The tick of one worker: notes whether the feed is current (for the
/// worker's cache look-ups), moves the lag gauge, and starts a poll when
/// one is due and no other worker has taken it.
pub fn tick(host: &impl Host, worker: &Worker, metrics: &Metrics, now_ms: u64) -> Option<Poll> {
    let policy = worker.config().key_feed;
    let state = read_state(host);
    worker
        .shared
        .set_feed_current(state.is_current(&policy, now_ms));
    if !policy.enabled {
        return None;
    }
    let lag = state.lag_ms(now_ms);
    if lag != state.published_lag_ms {
        let published = update_state(host, |s| {
            let before = s.published_lag_ms;
            s.published_lag_ms = s.lag_ms(now_ms);
            before != s.published_lag_ms
        });
        if let Some(written) = published {
            let delta = i128::from(written.published_lag_ms) - i128::from(state.published_lag_ms);
            metrics.feed_lag(host, i64::try_from(delta).unwrap_or(0));
        }
    }
    if !state.poll_due(now_ms) {
        return None;
    }
    start_poll(host, worker, metrics, now_ms)
}

/// Leases the next poll and sends it.
fn start_poll(host: &impl Host, worker: &Worker, metrics: &Metrics, now_ms: u64) -> Option<Poll> {
    let policy = worker.config().key_feed;
    let leased = update_state(host, |s| {
        if !s.poll_due(now_ms) {
            return false;
        }
        s.in_flight_until_ms = now_ms.saturating_add(policy.timeout_ms).saturating_add(100);
        // A little early, so that ticks of the same period never skip one.
        s.next_poll_ms = now_ms.saturating_add(policy.poll_interval_ms * 3 / 4);
        true
    })?;
    let after = leased.cursor?;
    let path = changes_query(after, MAX_CHANGES_PER_REPLY);
    let config = &worker.config();
    let headers = [
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", config.sidecar_authority.as_str()),
        (
            tollgate_wire::INTERNAL_TOKEN_HEADER,
            config.internal_token.as_str(),
        ),
    ];
    let sent = host.dispatch(&Callout {
        cluster: &config.sidecar_cluster,
        headers: &headers,
        body: &[],
        timeout_ms: policy.timeout_ms,
    });
    match sent {
        Ok(token) => {
            metrics.inc(host, Counter::KeyFeedPolls);
            Some(Poll { token, after })
        }
        Err(e) => {
            host.log(
                LogLevel::Warn,
                &format!("cannot poll the key change feed: {e}"),
            );
            metrics.inc(host, Counter::KeyFeedFailures);
            release_lease(host);
            None
        }
    }
}

fn release_lease(host: &impl Host) {
    update_state(host, |s| {
        s.in_flight_until_ms = 0;
        true
    });
}

/// A poll answered (`body_size` bytes of body): the cursor moves, then the
/// changed keys' entries go. When the feed has more at once, the next poll
/// is sent and returned.
pub fn answered(
    host: &impl Host,
    worker: &Worker,
    metrics: &Metrics,
    poll: Poll,
    body_size: usize,
    now_ms: u64,
) -> Option<Poll> {
    let status = host.callout_status();
    let body = (body_size > 0 && body_size <= MAX_REPLY_BYTES)
        .then(|| host.callout_body(body_size))
        .flatten();
    let reply = (status.as_deref() == Some(b"200".as_slice()))
        .then(|| body.and_then(|b| serde_json::from_slice::<ChangesReply>(&b).ok()))
        .flatten();
    let Some(reply) = reply else {
        let status = status.map(|s| String::from_utf8_lossy(&s).into_owned());
        host.log(
            LogLevel::Warn,
            &format!(
                "the key change feed gave no usable answer (status {}); \
                 cached verdicts fall back to key_cache.unfed_positive_ttl_s",
                status.as_deref().unwrap_or("none")
            ),
        );
        metrics.inc(host, Counter::KeyFeedFailures);
        release_lease(host);
        return None;
    };
    let moved = update_state(host, |s| {
        s.cursor = Some(if reply.reset {
            reply.cursor
        } else {
            s.cursor.unwrap_or(0).max(reply.cursor)
        });
        s.last_ok_ms = now_ms;
        s.in_flight_until_ms = 0;
        if reply.more {
            s.next_poll_ms = 0;
        }
        true
    });
    if moved.is_none() {
        // The cursor could not move: apply nothing now, the next poll asks
        // again from the old cursor.
        metrics.inc(host, Counter::KeyFeedFailures);
        return None;
    }
    worker.shared.set_feed_current(true);
    let policy = &worker.config().key_cache;
    if reply.reset {
        let cleared = cache::clear(host, policy);
        metrics.inc(host, Counter::KeyFeedResets);
        host.log(
            LogLevel::Warn,
            &format!(
                "the key change feed no longer holds every change after cursor {}; \
                 dropped the whole key cache ({cleared} entries)",
                poll.after
            ),
        );
    }
    for change in &reply.changes {
        let Some(key_hash) = parse_lower_hex(&change.key_hash) else {
            continue;
        };
        let which = cache::Evict::ChangedAt(change.cursor);
        if cache::evict(host, &key_hash, which, policy, worker.cache_key()) {
            metrics.inc(host, Counter::KeyFeedEvictions);
        }
    }
    if reply.more {
        return start_poll(host, worker, metrics, now_ms);
    }
    None
}

/// A verdict read at feed position `read_at` was just written to the cache
/// as `entry`: the first position ever seen becomes the cursor; an entry
/// read before the cursor is taken out again (a change already applied may
/// concern it). True when the entry stays.
pub fn verdict_cached(
    host: &impl Host,
    worker: &Worker,
    entry: &CacheEntry,
    read_at: Option<u64>,
) -> bool {
    if !worker.config().key_feed.enabled {
        return true;
    }
    let Some(read_at) = read_at else {
        // A sidecar without the feed: nothing to follow for this entry.
        return true;
    };
    let mut state = read_state(host);
    if state.cursor.is_none() {
        if let Some(written) = update_state(host, |s| {
            if s.cursor.is_some() {
                return false;
            }
            s.cursor = Some(read_at);
            true
        }) {
            state = written;
        } else {
            state = read_state(host);
        }
    }
    match state.cursor {
        Some(cursor) if cursor > read_at => {
            let policy = &worker.config().key_cache;
            cache::evict(
                host,
                &entry.key_hash,
                cache::Evict::FetchedAt(entry.fetched_at_ms),
                policy,
                worker.cache_key(),
            );
            false
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests;
