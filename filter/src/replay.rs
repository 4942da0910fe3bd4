//! Replay protection: the store of accepted `jti`s, kept in the host's
//! shared data so that every Envoy worker of one instance sees it.
//!
//! Shared data never evicts, so the store is a fixed table: `slots` entries
//! grouped in buckets of [`BUCKET_ENTRIES`], one shared-data key per bucket
//! (`tollgate.jti.<bucket>`, bucket = first 8 bytes of SHA-256(jti) mod the
//! bucket count). A bucket is read and rewritten whole, with the CAS token
//! of the read, so "is this jti in the bucket?" and "add it" form one atomic
//! step: of two requests racing with the same `jti`, on any workers, exactly
//! one write lands; the other re-reads, finds the `jti` and is a replay.
//!
//! An entry is the first 16 bytes of SHA-256(jti) and the instant it may be
//! forgotten: the token's `exp` plus the clock skew, after which the token
//! itself is refused as expired. Expired entries are dropped whenever their
//! bucket is written, so the store holds at most the tokens accepted during
//! the last `max_lifetime_s + 2 * clock_skew_s` seconds (a token may be
//! issued up to `clock_skew_s` in the future and is accepted up to
//! `clock_skew_s` after its `exp`).
//!
//! Each entry also names the key that claimed it, and a bucket is shared
//! fairly: once it is half full, a key that already holds
//! [`KEY_SHARE`] of its live entries is refused (429 `too_many_live_tokens`)
//! while keys below their share still get in. So one key, however fast it
//! mints tokens, holds at most half of any bucket and cannot lock the others
//! out; it takes several keys together to fill one.
//!
//! A bucket whose entries are all live cannot take another claim. Evicting a
//! live entry would let that token be replayed, so the request fails closed
//! with 503 `replay_store_full` (the gateway, not the client, is at fault;
//! the client may retry once entries expire). A bucket that cannot be read
//! (another format, corrupt bytes) fails closed too: treating it as empty
//! would forget live `jti`s. Sizing keeps a full bucket rare: see
//! [`ReplayPolicy`].
//!
//! The decisions are pure ([`attempt`]); [`claim`] runs them as one
//! compare-and-swap update of the bucket through the host.

use tollgate_wire::{sha256, to_hex, ClaimRequest};

use crate::error::Denial;
use crate::host::{Host, HostError};
use crate::shared_table::{self, decode_versioned, encode_versioned, Change, Table, Updated};
use crate::token::{JwtPolicy, VerifiedToken};

/// Prefix of every bucket's shared-data key.
pub const BUCKET_KEY_PREFIX: &str = "tollgate.jti.";

/// Entries per bucket. Larger buckets even out the hashing (at half load a
/// claim finds its bucket full with probability about 2e-4 with 32 entries,
/// 8e-3 with 16) at the price of rewriting more bytes per claim.
pub const BUCKET_ENTRIES: usize = 32;

/// Bytes of SHA-256(jti) kept per entry: two distinct live `jti`s are
/// confused with probability 2^-128.
pub const FINGERPRINT_LEN: usize = 16;

/// Encoded size of one entry: fingerprint, then expiry and owner (i64
/// each, big-endian).
pub const ENTRY_LEN: usize = FINGERPRINT_LEN + 8 + 8;

/// Encoded size of a full bucket: version, entry count, entries.
pub const MAX_BUCKET_LEN: usize = 2 + BUCKET_ENTRIES * ENTRY_LEN;

/// Live entries one key may hold in a bucket once the bucket is half full:
/// a quarter of it, so one key alone stops at half and leaves the other
/// half to the rest.
pub const KEY_SHARE: usize = BUCKET_ENTRIES / 4;

/// Live entries in a bucket from which [`KEY_SHARE`] applies.
pub const SHARED_FROM: usize = BUCKET_ENTRIES / 2;

/// How often a claim re-reads its bucket after losing a CAS race before
/// failing closed. A lost race means another claim wrote the same bucket;
/// with one writer per worker, a handful of rounds always suffices.
pub const MAX_CLAIM_ATTEMPTS: u32 = 8;

const FORMAT_VERSION: u8 = 2;

/// The format of an earlier filter (entries without an owner), still read
/// so that a filter update in a running Envoy forgets no live `jti`.
const OWNERLESS_VERSION: u8 = 1;

/// Encoded size of an entry in [`OWNERLESS_VERSION`].
const OWNERLESS_ENTRY_LEN: usize = FINGERPRINT_LEN + 8;

/// The validated replay-store settings of the plugin configuration.
///
/// Sizing: the store must hold every token accepted within
/// `max_lifetime_s + 2 * clock_skew_s`. Set `slots` to at least twice
/// `peak accepted requests/s * (max_lifetime_s + 2 * clock_skew_s)`; at that
/// load or less a claim finds its bucket full (503) with probability about
/// 2e-4. The default, 65536 slots with the default 300 s lifetime and 30 s
/// skew, covers about 90 requests/s (one key alone may use half of each
/// bucket, so the same rule holds for a single busy key); memory is at most
/// `slots / 32` shared data keys of [`MAX_BUCKET_LEN`] bytes (2 MiB for
/// 65536), allocated as buckets are first used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayPolicy {
    /// Entries in the store (rounded up to whole buckets).
    pub slots: u32,
    /// Where a `jti` must be new: this Envoy instance, or the whole fleet.
    pub scope: ReplayScope,
}

/// Where replay protection holds (`jwt.replay_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayScope {
    /// The instance's own store only: no network call.
    #[default]
    Instance,
    /// After the instance's store, one claim through the sidecar, in the
    /// database every Envoy shares.
    Fleet,
}

impl ReplayPolicy {
    /// Number of buckets: `slots / BUCKET_ENTRIES`, rounded up, at least 1.
    pub fn buckets(&self) -> u32 {
        self.slots.div_ceil(BUCKET_ENTRIES as u32).max(1)
    }

    /// The table the buckets form.
    pub fn table(&self) -> Table {
        Table {
            prefix: BUCKET_KEY_PREFIX,
            slots: self.buckets(),
        }
    }
}

/// The first [`FINGERPRINT_LEN`] bytes of SHA-256(jti).
pub type Fingerprint = [u8; FINGERPRINT_LEN];

/// One accepted `jti`, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First [`FINGERPRINT_LEN`] bytes of SHA-256(jti).
    pub fingerprint: Fingerprint,
    /// Last second (since the epoch) at which the token could still be
    /// accepted; the entry is forgotten after it.
    pub expires_at_s: i64,
    /// Id of the key whose request claimed it (0: written by an earlier
    /// filter that did not record it; such entries count for no key).
    pub owner: i64,
}

/// What a request must claim before it is let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JtiClaim {
    /// The entry to add.
    pub entry: Entry,
    /// The shared-data key of its bucket.
    pub bucket_key: String,
}

impl JtiClaim {
    /// The claim of `jti` for a token expiring at `exp_s`, kept until
    /// `exp_s + clock_skew_s`.
    pub fn new(jti: &str, exp_s: i64, clock_skew_s: i64, policy: &ReplayPolicy) -> Self {
        let digest = sha256(jti.as_bytes());
        let fingerprint = digest
            .first_chunk::<FINGERPRINT_LEN>()
            .copied()
            .unwrap_or_default();
        JtiClaim {
            entry: Entry {
                fingerprint,
                expires_at_s: exp_s.saturating_add(clock_skew_s),
                owner: 0,
            },
            bucket_key: policy.table().slot_key(&digest),
        }
    }

    /// The fleet-wide claim of it, as the sidecar is asked for it.
    pub fn fleet_request(&self) -> ClaimRequest {
        ClaimRequest {
            fingerprint: to_hex(&self.entry.fingerprint),
            expires_at: self.entry.expires_at_s,
            key_id: self.entry.owner,
        }
    }

    /// The claim made on behalf of key `key_id` (known once its verdict is in).
    pub fn by_key(mut self, key_id: i64) -> Self {
        self.entry.owner = key_id;
        self
    }
}

/// The claim a verified token must make: `None` when replay protection is
/// off (`require_jti: false`). With it on, a token without a `jti` cannot
/// get here (`verify_token` refuses it), but if one did it is refused.
pub fn claim_for(
    token: &VerifiedToken,
    jwt: &JwtPolicy,
    policy: &ReplayPolicy,
) -> Result<Option<JtiClaim>, Denial> {
    if !jwt.require_jti {
        return Ok(None);
    }
    match token.jti.as_deref() {
        Some(jti) if !jti.is_empty() => Ok(Some(JtiClaim::new(
            jti,
            token.exp,
            jwt.clock_skew_s,
            policy,
        ))),
        _ => Err(Denial::MissingClaim("jti")),
    }
}

/// What to do with a bucket just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The `jti` is already there and live: a replay.
    Replayed,
    /// Every entry of the bucket is live: fail closed.
    Full,
    /// The bucket is at least half full and the claim's key already holds
    /// its share of it: refuse this key, keep the room for the others.
    ShareExceeded,
    /// The bucket's bytes cannot be read: fail closed rather than forget.
    Unreadable,
    /// Write these bytes with the read's CAS; on a CAS mismatch, read again.
    Write(Vec<u8>),
}

/// Decides a claim against a bucket's current content at `now_s`.
///
/// Entries past their expiry are dropped; a live entry with the same
/// fingerprint is a replay; otherwise the claim is added if there is room
/// and its key is within its share. An absent bucket is empty; one that
/// cannot be decoded is [`Attempt::Unreadable`].
pub fn attempt(current: Option<&[u8]>, claim: &JtiClaim, now_s: i64) -> Attempt {
    let stored = match current {
        None => Vec::new(),
        Some(bytes) => match decode_bucket(bytes) {
            Some(entries) => entries,
            None => return Attempt::Unreadable,
        },
    };
    let mut live: Vec<Entry> = stored
        .into_iter()
        .filter(|e| e.expires_at_s >= now_s)
        .collect();
    if live
        .iter()
        .any(|e| e.fingerprint == claim.entry.fingerprint)
    {
        return Attempt::Replayed;
    }
    if live.len() >= BUCKET_ENTRIES {
        return Attempt::Full;
    }
    let owner = claim.entry.owner;
    let held = live
        .iter()
        .filter(|e| owner != 0 && e.owner == owner)
        .count();
    if live.len() >= SHARED_FROM && held >= KEY_SHARE {
        return Attempt::ShareExceeded;
    }
    live.push(claim.entry);
    Attempt::Write(encode_bucket(&live))
}

/// How a claim through the host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The `jti` is recorded: the request may pass.
    Recorded,
    /// The `jti` was recorded before and is live: a replay.
    Replayed,
    /// Its bucket is full of live entries (the store is too small).
    Full,
    /// The key holds its share of a bucket that is half full or more.
    ShareExceeded,
    /// The bucket's bytes cannot be read.
    Unreadable,
    /// Every attempt lost its compare-and-swap race.
    Contended,
    /// The host failed a read or a write.
    Failed(HostError),
}

/// Records `claim` in the shared store at `now_s`, as one compare-and-swap
/// update of its bucket (a lost race reads again: the winner may have
/// claimed this very `jti`). Returns how it ended and how many races it lost.
pub fn claim(host: &impl Host, claim: &JtiClaim, now_s: i64) -> (Claimed, u32) {
    let update =
        shared_table::update(
            host,
            &claim.bucket_key,
            MAX_CLAIM_ATTEMPTS,
            |current| match attempt(current, claim, now_s) {
                Attempt::Write(bytes) => Change::Write(bytes),
                Attempt::Replayed => Change::Stop(Claimed::Replayed),
                Attempt::Full => Change::Stop(Claimed::Full),
                Attempt::ShareExceeded => Change::Stop(Claimed::ShareExceeded),
                Attempt::Unreadable => Change::Stop(Claimed::Unreadable),
            },
        );
    let claimed = match update.result {
        Updated::Written => Claimed::Recorded,
        Updated::Stopped(answer) => answer,
        Updated::Contended => Claimed::Contended,
        Updated::Failed(e) => Claimed::Failed(e),
    };
    (claimed, update.retries)
}

/// Host answers that never reached an upstream, for which a claim is given
/// back: the route did not exist, so Envoy answered 404 itself.
pub const UNROUTED_DETAILS: [&str; 1] = ["route_not_found"];

/// The status of every answer in [`UNROUTED_DETAILS`]: only a response
/// with it is asked why it was answered (a property read, kept off the
/// hot path).
pub const UNROUTED_STATUS: u16 = 404;

/// Gives `claim` back (its request was let through but never reached an
/// upstream: [`UNROUTED_DETAILS`]), so a request to a path without a route
/// does not use its `jti` up. Only this key's entry for this `jti` is
/// removed; a bucket that cannot be read is left alone. Returns whether
/// the entry was removed.
pub fn release(host: &impl Host, claim: &JtiClaim) -> bool {
    let update = shared_table::update(host, &claim.bucket_key, MAX_CLAIM_ATTEMPTS, |current| {
        let Some(entries) = current.and_then(decode_bucket) else {
            return Change::Stop(());
        };
        let before = entries.len();
        let kept: Vec<Entry> = entries.into_iter().filter(|e| *e != claim.entry).collect();
        if kept.len() == before {
            Change::Stop(())
        } else {
            Change::Write(encode_bucket(&kept))
        }
    });
    update.result == Updated::Written
}

/// The binary form of a bucket: version, count, then each entry.
/// At most [`BUCKET_ENTRIES`] entries are written.
pub fn encode_bucket(entries: &[Entry]) -> Vec<u8> {
    let entries = entries.get(..BUCKET_ENTRIES).unwrap_or(entries);
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(u8::try_from(entries.len()).unwrap_or(u8::MAX));
    for e in entries {
        out.extend_from_slice(&e.fingerprint);
        out.extend_from_slice(&e.expires_at_s.to_be_bytes());
        out.extend_from_slice(&e.owner.to_be_bytes());
    }
    encode_versioned(FORMAT_VERSION, &out)
}

/// Parses [`encode_bucket`]'s output (or an earlier filter's bucket without
/// owners); `None` for anything else.
pub fn decode_bucket(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (body, entry_len) = match decode_versioned(FORMAT_VERSION, bytes) {
        Some(body) => (body, ENTRY_LEN),
        None => (
            decode_versioned(OWNERLESS_VERSION, bytes)?,
            OWNERLESS_ENTRY_LEN,
        ),
    };
    let (count, rest) = body.split_first()?;
    let count = usize::from(*count);
    if count > BUCKET_ENTRIES || rest.len() != count * entry_len {
        return None;
    }
    rest.chunks_exact(entry_len)
        .map(|chunk| {
            let (fingerprint, rest) = chunk.split_first_chunk::<FINGERPRINT_LEN>()?;
            let (expiry, rest) = rest.split_first_chunk::<8>()?;
            let owner = rest
                .first_chunk::<8>()
                .map_or(0, |o| i64::from_be_bytes(*o));
            Some(Entry {
                fingerprint: *fingerprint,
                expires_at_s: i64::from_be_bytes(*expiry),
                owner,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::FakeWorld;

    const POLICY: ReplayPolicy = ReplayPolicy {
        slots: 65536,
        scope: ReplayScope::Instance,
    };

    fn claim(jti: &str, exp: i64) -> JtiClaim {
        JtiClaim::new(jti, exp, 30, &POLICY)
    }

    fn write(a: Attempt) -> Vec<u8> {
        match a {
            Attempt::Write(bytes) => bytes,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn buckets_round_up_and_never_vanish() {
        assert_eq!(
            ReplayPolicy {
                slots: 65536,
                scope: ReplayScope::Instance
            }
            .buckets(),
            2048
        );
        assert_eq!(
            ReplayPolicy {
                slots: 33,
                scope: ReplayScope::Instance
            }
            .buckets(),
            2
        );
        assert_eq!(
            ReplayPolicy {
                slots: 1,
                scope: ReplayScope::Instance
            }
            .buckets(),
            1
        );
        assert_eq!(
            ReplayPolicy {
                slots: 0,
                scope: ReplayScope::Instance
            }
            .buckets(),
            1
        );
        assert_eq!(
            ReplayPolicy {
                slots: u32::MAX,
                scope: ReplayScope::Instance
            }
            .buckets(),
            134_217_728
        );
    }

    #[test]
    fn a_claim_is_stable_and_lands_in_a_bucket() {
        let a = claim("4f1c-uuid", 1060);
        assert_eq!(a, claim("4f1c-uuid", 1060));
        assert_eq!(a.entry.expires_at_s, 1090);
        let n: u32 = a
            .bucket_key
            .strip_prefix(BUCKET_KEY_PREFIX)
            .unwrap()
            .parse()
            .unwrap();
        assert!(n < POLICY.buckets());
        assert_ne!(
            a.entry.fingerprint,
            claim("4f1c-uuiD", 1060).entry.fingerprint
        );
        let one = JtiClaim::new(
            "x",
            0,
            0,
            &ReplayPolicy {
                slots: 5,
                scope: ReplayScope::Instance,
            },
        );
        assert_eq!(one.bucket_key, "tollgate.jti.0");
        assert_eq!(claim("x", i64::MAX).entry.expires_at_s, i64::MAX);
    }

    #[test]
    fn first_use_writes_second_use_is_a_replay() {
        let c = claim("abc", 1060);
        let bucket = write(attempt(None, &c, 1000));
        assert_eq!(decode_bucket(&bucket), Some(vec![c.entry]));
        assert_eq!(attempt(Some(&bucket), &c, 1000), Attempt::Replayed);
        // Until the last second the token could be accepted, and no longer.
        assert_eq!(attempt(Some(&bucket), &c, 1090), Attempt::Replayed);
        let again = write(attempt(Some(&bucket), &c, 1091));
        assert_eq!(decode_bucket(&again), Some(vec![c.entry]));
    }

    #[test]
    fn other_jtis_share_a_bucket() {
        let one = ReplayPolicy {
            slots: 32,
            scope: ReplayScope::Instance,
        };
        let a = JtiClaim::new("a", 100, 0, &one);
        let b = JtiClaim::new("b", 200, 0, &one);
        let bucket = write(attempt(None, &a, 50));
        let bucket = write(attempt(Some(&bucket), &b, 50));
        assert_eq!(decode_bucket(&bucket), Some(vec![a.entry, b.entry]));
        assert_eq!(attempt(Some(&bucket), &a, 50), Attempt::Replayed);
        assert_eq!(attempt(Some(&bucket), &b, 50), Attempt::Replayed);
    }

    #[test]
    fn a_full_bucket_fails_closed_until_an_entry_expires() {
        let one = ReplayPolicy {
            slots: 32,
            scope: ReplayScope::Instance,
        };
        let mut bucket = None;
        for i in 0..BUCKET_ENTRIES {
            // Each from its own key, so no share applies.
            let c =
                JtiClaim::new(&format!("jti-{i}"), 100 + i as i64, 0, &one).by_key(i as i64 + 1);
            bucket = Some(write(attempt(bucket.as_deref(), &c, 50)));
        }
        let bucket = bucket.unwrap();
        assert_eq!(bucket.len(), MAX_BUCKET_LEN);
        let late = JtiClaim::new("late", 500, 0, &one).by_key(99);
        assert_eq!(attempt(Some(&bucket), &late, 100), Attempt::Full);
        // A full bucket still recognises its own replays.
        let first = JtiClaim::new("jti-0", 100, 0, &one).by_key(1);
        assert_eq!(attempt(Some(&bucket), &first, 100), Attempt::Replayed);
        // One second later jti-0 has expired: its place is reused, the rest stay.
        let after = decode_bucket(&write(attempt(Some(&bucket), &late, 101))).unwrap();
        assert_eq!(after.len(), BUCKET_ENTRIES);
        assert!(!after.contains(&first.entry));
        assert!(after.contains(&late.entry));
        // Everything expired: the bucket shrinks back to the one new entry.
        let fresh = JtiClaim::new("fresh", 1000, 0, &one);
        let bucket = write(attempt(Some(&encode_bucket(&after)), &fresh, 600));
        assert_eq!(decode_bucket(&bucket), Some(vec![fresh.entry]));
    }

    /// One key alone fills a bucket to half and no further; another key
    /// still gets its share, and a third fills the rest.
    #[test]
    fn one_key_cannot_take_more_than_its_share_while_others_need_room() {
        let one = ReplayPolicy {
            slots: 32,
            scope: ReplayScope::Instance,
        };
        let mut bucket: Option<Vec<u8>> = None;
        let mut sent = 0;
        let mut claims_of = |key: i64, count: usize| {
            let mut written = 0;
            for _ in 0..count {
                sent += 1;
                let c = JtiClaim::new(&format!("jti-{sent}"), 1000, 0, &one).by_key(key);
                match attempt(bucket.as_deref(), &c, 50) {
                    Attempt::Write(bytes) => {
                        bucket = Some(bytes);
                        written += 1;
                    }
                    Attempt::ShareExceeded => {}
                    other => panic!("key {key}: {other:?}"),
                }
            }
            written
        };
        assert_eq!(
            claims_of(1, 100),
            SHARED_FROM,
            "below half, anyone may claim"
        );
        assert_eq!(
            claims_of(2, 100),
            KEY_SHARE,
            "past half, up to a share each"
        );
        assert_eq!(claims_of(1, 1), 0);
        assert_eq!(claims_of(3, KEY_SHARE), KEY_SHARE, "and a third fills it");
        let full = bucket.clone().unwrap();
        let late = JtiClaim::new("late", 1000, 0, &one).by_key(4);
        assert_eq!(attempt(Some(&full), &late, 50), Attempt::Full);
        // Entries of an earlier filter belong to no key: they never use up a share.
        let ownerless = JtiClaim::new("x", 1000, 0, &one);
        assert_eq!(ownerless.entry.owner, 0);
    }

    #[test]
    fn an_earlier_filters_buckets_are_still_read() {
        let entry = claim("abc", 1060).entry;
        let mut v1 = vec![OWNERLESS_VERSION, 1];
        v1.extend_from_slice(&entry.fingerprint);
        v1.extend_from_slice(&entry.expires_at_s.to_be_bytes());
        assert_eq!(decode_bucket(&v1), Some(vec![entry]));
        assert_eq!(
            attempt(Some(&v1), &claim("abc", 1060), 1000),
            Attempt::Replayed
        );
    }

    #[test]
    fn unreadable_buckets_fail_closed() {
        let c = claim("abc", 1060);
        let good = encode_bucket(&[c.entry]);
        let mut other_version = good.clone();
        other_version[0] = 9;
        let mut bad_count = good.clone();
        bad_count[1] = 2;
        let mut too_many = vec![FORMAT_VERSION, (BUCKET_ENTRIES + 1) as u8];
        too_many.extend(std::iter::repeat_n(0, (BUCKET_ENTRIES + 1) * ENTRY_LEN));
        for bytes in [
            &[][..],
            &[FORMAT_VERSION][..],
            &other_version,
            &bad_count,
            &good[..good.len() - 1],
            &too_many,
        ] {
            assert_eq!(decode_bucket(bytes), None, "{bytes:?}");
            assert_eq!(attempt(Some(bytes), &c, 1000), Attempt::Unreadable);
        }
        assert_eq!(decode_bucket(&encode_bucket(&[])), Some(vec![]));
        assert!(matches!(attempt(None, &c, 1000), Attempt::Write(_)));
    }

    #[test]
    fn entries_round_trip() {
        let entries: Vec<Entry> = (0..BUCKET_ENTRIES as i64)
            .map(|i| Entry {
                fingerprint: [i as u8; FINGERPRINT_LEN],
                expires_at_s: i64::MIN + i,
                owner: i64::MAX - i,
            })
            .collect();
        assert_eq!(
            decode_bucket(&encode_bucket(&entries)),
            Some(entries.clone())
        );
        let mut more = entries.clone();
        more.push(entries[0]);
        assert_eq!(decode_bucket(&encode_bucket(&more)), Some(entries));
    }

    /// Two workers interleave read, read, write, write on the same jti, for
    /// an absent and an existing bucket: exactly one claim lands.
    #[test]
    fn racing_claims_of_one_jti_let_exactly_one_through() {
        for existing in [false, true] {
            let world = FakeWorld::new();
            let host = world.root();
            let c = claim("raced", 1060);
            if existing {
                let other = claim("other", 1060).entry;
                host.shared_set(&c.bucket_key, &encode_bucket(&[other]), None)
                    .unwrap();
            }
            let (v1, cas1) = host.shared_get(&c.bucket_key).unwrap();
            let (v2, cas2) = host.shared_get(&c.bucket_key).unwrap();
            let w1 = write(attempt(v1.as_deref(), &c, 1000));
            let w2 = write(attempt(v2.as_deref(), &c, 1000));
            let create = shared_table::CREATE_ONLY_CAS;
            assert!(host
                .shared_set(&c.bucket_key, &w1, Some(cas1.unwrap_or(create)))
                .is_ok());
            assert!(
                host.shared_set(&c.bucket_key, &w2, Some(cas2.unwrap_or(create)))
                    .is_err(),
                "both landed"
            );
            // The loser reads again and sees the winner's claim.
            assert_eq!(super::claim(&host, &c, 1000), (Claimed::Replayed, 0));
        }
    }

    #[test]
    fn a_claim_through_the_host_records_once() {
        let world = FakeWorld::new();
        let host = world.root();
        let c = claim("once", 1060);
        assert_eq!(super::claim(&host, &c, 1000), (Claimed::Recorded, 0));
        assert_eq!(super::claim(&host, &c, 1000), (Claimed::Replayed, 0));
        world.lose_races(u32::MAX);
        let other = claim("other", 1060);
        assert_eq!(
            super::claim(&host, &other, 1000),
            (Claimed::Contended, MAX_CLAIM_ATTEMPTS)
        );
    }

    #[test]
    fn claims_follow_the_policy() {
        let mut jwt = JwtPolicy {
            default_secret: None,
            kid_secrets: Default::default(),
            algorithms: vec![],
            clock_skew_s: 5,
            max_lifetime_s: 60,
            issuer: None,
            audience: None,
            require_jti: false,
        };
        let token = |jti: Option<&str>| VerifiedToken {
            body_sha256: [0; 32],
            jti: jti.map(str::to_string),
            exp: 100,
        };
        assert_eq!(claim_for(&token(Some("a")), &jwt, &POLICY), Ok(None));
        jwt.require_jti = true;
        let c = claim_for(&token(Some("a")), &jwt, &POLICY)
            .unwrap()
            .unwrap();
        assert_eq!(c, JtiClaim::new("a", 100, 5, &POLICY));
        assert_eq!(
            claim_for(&token(None), &jwt, &POLICY),
            Err(Denial::MissingClaim("jti"))
        );
        assert_eq!(
            claim_for(&token(Some("")), &jwt, &POLICY),
            Err(Denial::MissingClaim("jti"))
        );
    }
}
