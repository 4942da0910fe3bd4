//! The key verdict cache: entry encoding and the freshness policy.
//!
//! The cache lives in the host's shared data, which every worker sees and
//! which the host never evicts. Memory stays bounded because the cache is a
//! fixed-size, direct-mapped [`Table`]: a key hash goes to exactly one of
//! `slots` shared-data keys (`tollgate.kc.<slot>`, slot = SipHash of the
//! hash under the process's [`SlotKey`], mod `slots`), and a slot holding
//! another key's entry is a miss whose answer overwrites it, except that a
//! negative verdict never overwrites another key's active entry that could
//! still serve as a stale fallback. With the slot key secret, nobody can
//! compute offline which keys share a victim's slot. At most `slots` entries of [`ENTRY_LEN`]
//! bytes ever exist (16384 slots: about 1.3 MB with the keys' names).
//!
//! Entries are a binary record (no JSON on the hot path): a fixed part,
//! then, for a key with its own signing secret, that secret. Each carries
//! the full key hash, so a slot collision can never hand one key another
//! key's verdict or secret. The secret stays inside Envoy's shared data; it
//! is never sent to clients or logged.

use tollgate_wire::{Digest32, KeyVerdict, VerifyReply, MAX_SIGNING_SECRET_LEN};

use crate::host::{Host, SetError};
use crate::shared_table::{self, decode_versioned, encode_versioned, SlotKey, Table};
use crate::token::Secret;

/// Name of the shared-data value holding the cache's [`SlotKey`].
pub const SLOT_KEY_NAME: &str = "tollgate.kc_slot_key";

/// Prefix of every cache slot's shared-data key.
pub const SLOT_KEY_PREFIX: &str = "tollgate.kc.";

/// Encoded size of a [`CacheEntry`] without a signing secret; one with a
/// secret adds a length byte and the secret.
pub const ENTRY_LEN: usize = 59;

const FORMAT_VERSION: u8 = 1;
const HAS_KEY_ID: u8 = 1;
const HAS_EXPIRES_AT: u8 = 2;
const HAS_SIGNING_SECRET: u8 = 4;
const HAS_FEED_POSITION: u8 = 8;
/// The key has limits: its requests are charged to its budget (`limits`).
const LIMITED: u8 = 16;
/// The key's team has limits: its requests are charged to the team's
/// budget too; the team's id follows the feed position.
const TEAM_LIMITED: u8 = 32;
/// The key or its team has a money quota: its LLM calls are priced.
const PRICED: u8 = 64;

/// The validated cache settings of the plugin configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long an `active` verdict is used without asking again while the
    /// key change feed is current (it evicts a revoked key's entry within
    /// about a second, whatever this TTL).
    pub positive_ttl_ms: u64,
    /// How long an `active` verdict is used while the feed lags or is off:
    /// then only this TTL bounds how long a revocation takes to be seen.
    pub unfed_positive_ttl_ms: u64,
    /// How long a `revoked`/`expired`/`not_found` verdict is used.
    pub negative_ttl_ms: u64,
    /// How old an `active` verdict may be and still serve when the sidecar
    /// cannot answer.
    pub stale_if_error_ms: u64,
    /// Number of slots in the table.
    pub slots: u32,
}

/// One cached verdict, as stored in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// SHA-256 of the API key this entry is for.
    pub key_hash: Digest32,
    /// What the registry said.
    pub verdict: KeyVerdict,
    /// The key's id, when the registry knows the key.
    pub key_id: Option<i64>,
    /// When the key stops being valid (seconds since the epoch), if ever.
    pub expires_at_s: Option<i64>,
    /// When the registry said it (milliseconds since the epoch).
    pub fetched_at_ms: u64,
    /// The key's own secret for its tokens, when it has one.
    pub signing_secret: Option<Secret>,
    /// The key change feed's position the verdict was read at: a change at
    /// or before it is already in the verdict, so it does not evict it.
    pub feed_position: Option<u64>,
    /// The key has a rate or quotas (kept in its budget, `limits`).
    pub limited: bool,
    /// The key's team, when the team has a rate or quotas (kept in the
    /// team's budget): its requests are charged to both.
    pub team: Option<i64>,
    /// The key or its team has a money quota (the verify reply carried the
    /// price table): its LLM calls are priced.
    pub priced: bool,
}

/// The result of looking a key up in its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A usable entry for this key.
    Fresh(CacheEntry),
    /// Ask the sidecar (empty slot, another key's entry, or too old).
    Miss,
}

impl CachePolicy {
    /// The table the cache's slots form.
    pub fn table(&self) -> Table {
        Table {
            prefix: SLOT_KEY_PREFIX,
            slots: self.slots,
        }
    }
}

/// The entry in `key_hash`'s slot, whichever key it is for (a host error
/// or an unreadable value is an empty slot).
pub fn read_slot(
    host: &impl Host,
    key_hash: &Digest32,
    policy: &CachePolicy,
    secret: &SlotKey,
) -> Option<CacheEntry> {
    let slot = policy.table().keyed_slot_key(secret, key_hash);
    shared_table::read(host, &slot).and_then(|bytes| CacheEntry::decode(&bytes))
}

/// Whether [`write_slot`] stored the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// The entry is in its slot.
    Stored,
    /// A negative verdict was not cached: the slot holds another key's
    /// active entry that may still have to serve while the sidecar is down.
    KeptActive,
}

/// Stores an entry in its key's slot at `now_ms`, replacing whatever was
/// there unless a negative verdict would evict another key's usable
/// active entry. A failed write is returned for the log; the cache is only
/// an optimisation.
pub fn write_slot(
    host: &impl Host,
    entry: &CacheEntry,
    policy: &CachePolicy,
    secret: &SlotKey,
    now_ms: u64,
) -> Result<Cached, SetError> {
    let slot = policy.table().keyed_slot_key(secret, &entry.key_hash);
    if entry.verdict != KeyVerdict::Active {
        let current = shared_table::read(host, &slot).and_then(|b| CacheEntry::decode(&b));
        if let Some(current) = current.filter(|c| c.key_hash != entry.key_hash) {
            if stale_fallback(Some(&current), &current.key_hash, now_ms, policy).is_some() {
                return Ok(Cached::KeptActive);
            }
        }
    }
    host.shared_set(&slot, &entry.encode(), None)
        .map(|()| Cached::Stored)
}

/// How many times an eviction re-reads a slot that changed under it.
const EVICT_ATTEMPTS: u32 = 4;

/// Which of a key's entries an eviction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict {
    /// Only the entry fetched at this instant (the one a caller wrote).
    FetchedAt(u64),
    /// Any entry that does not already reflect the feed change at this
    /// position (one read at or after it stays).
    ChangedAt(u64),
}

/// Empties `key_hash`'s slot if it holds that key's entry and `which`
/// takes it. True when an entry went. A failed host call leaves the entry;
/// the caller's TTL still bounds it.
pub fn evict(
    host: &impl Host,
    key_hash: &Digest32,
    which: Evict,
    policy: &CachePolicy,
    secret: &SlotKey,
) -> bool {
    let slot = policy.table().keyed_slot_key(secret, key_hash);
    let update = shared_table::update(host, &slot, EVICT_ATTEMPTS, |current| {
        let entry = current.and_then(CacheEntry::decode);
        let ours = entry.is_some_and(|e| {
            &e.key_hash == key_hash
                && match which {
                    Evict::FetchedAt(at) => e.fetched_at_ms == at,
                    Evict::ChangedAt(change) => e.feed_position.is_none_or(|read| read < change),
                }
        });
        if ours {
            shared_table::Change::Write(Vec::new())
        } else {
            shared_table::Change::Stop(())
        }
    });
    update.result == shared_table::Updated::Written
}

/// Empties every slot that holds an entry; the number emptied. For when
/// the key change feed cannot say which entries are out of date.
pub fn clear(host: &impl Host, policy: &CachePolicy) -> u32 {
    let table = policy.table();
    let mut cleared = 0;
    for slot in 0..table.slots {
        let key = table.slot_name(slot);
        if shared_table::read(host, &key).is_some_and(|v| !v.is_empty())
            && host.shared_set(&key, &[], None).is_ok()
        {
            cleared += 1;
        }
    }
    cleared
}

fn verdict_byte(verdict: KeyVerdict) -> u8 {
    match verdict {
        KeyVerdict::Active => 0,
        KeyVerdict::Revoked => 1,
        KeyVerdict::Expired => 2,
        KeyVerdict::NotFound => 3,
    }
}

fn verdict_from_byte(byte: u8) -> Option<KeyVerdict> {
    match byte {
        0 => Some(KeyVerdict::Active),
        1 => Some(KeyVerdict::Revoked),
        2 => Some(KeyVerdict::Expired),
        3 => Some(KeyVerdict::NotFound),
        _ => None,
    }
}

fn take<const N: usize>(cursor: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = cursor.split_first_chunk::<N>()?;
    *cursor = rest;
    Some(*head)
}

impl CacheEntry {
    /// The fixed-layout binary form: version, verdict, flags, key hash,
    /// key id, expiry, fetch time (integers big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.key_id.is_some() {
            flags |= HAS_KEY_ID;
        }
        if self.expires_at_s.is_some() {
            flags |= HAS_EXPIRES_AT;
        }
        let secret = self
            .signing_secret
            .as_ref()
            .map(Secret::as_bytes)
            .filter(|s| (1..=MAX_SIGNING_SECRET_LEN).contains(&s.len()));
        if secret.is_some() {
            flags |= HAS_SIGNING_SECRET;
        }
        if self.feed_position.is_some() {
            flags |= HAS_FEED_POSITION;
        }
        if self.limited {
            flags |= LIMITED;
        }
        if self.team.is_some() {
            flags |= TEAM_LIMITED;
        }
        if self.priced {
            flags |= PRICED;
        }
        let mut out = Vec::with_capacity(ENTRY_LEN + secret.map_or(0, |s| 1 + s.len()));
        out.push(verdict_byte(self.verdict));
        out.push(flags);
        out.extend_from_slice(&self.key_hash);
        out.extend_from_slice(&self.key_id.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.expires_at_s.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.fetched_at_ms.to_be_bytes());
        if let Some(position) = self.feed_position {
            out.extend_from_slice(&position.to_be_bytes());
        }
        if let Some(team) = self.team {
            out.extend_from_slice(&team.to_be_bytes());
        }
        if let Some(secret) = secret {
            out.push(u8::try_from(secret.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(secret);
        }
        encode_versioned(FORMAT_VERSION, &out)
    }

    /// Parses [`CacheEntry::encode`]'s output; anything else (another
    /// version, a truncated value) is `None` and treated as a miss.
    pub fn decode(bytes: &[u8]) -> Option<CacheEntry> {
        if bytes.len() < ENTRY_LEN {
            return None;
        }
        let mut cursor = decode_versioned(FORMAT_VERSION, bytes)?;
        let [verdict, flags] = take::<2>(&mut cursor)?;
        const KNOWN: u8 =
            HAS_KEY_ID | HAS_EXPIRES_AT | HAS_SIGNING_SECRET | HAS_FEED_POSITION | LIMITED;
        if flags & !(KNOWN | TEAM_LIMITED | PRICED) != 0 {
            return None;
        }
        let verdict = verdict_from_byte(verdict)?;
        let key_hash = take::<32>(&mut cursor)?;
        let key_id = i64::from_be_bytes(take::<8>(&mut cursor)?);
        let expires_at = i64::from_be_bytes(take::<8>(&mut cursor)?);
        let fetched_at_ms = u64::from_be_bytes(take::<8>(&mut cursor)?);
        let feed_position = if flags & HAS_FEED_POSITION != 0 {
            Some(u64::from_be_bytes(take::<8>(&mut cursor)?))
        } else {
            None
        };
        let team = if flags & TEAM_LIMITED != 0 {
            Some(i64::from_be_bytes(take::<8>(&mut cursor)?))
        } else {
            None
        };
        let signing_secret = if flags & HAS_SIGNING_SECRET != 0 {
            let [len] = take::<1>(&mut cursor)?;
            if len == 0 || cursor.len() != usize::from(len) {
                return None;
            }
            Some(Secret::new(cursor.to_vec()))
        } else if cursor.is_empty() {
            None
        } else {
            return None;
        };
        Some(CacheEntry {
            key_hash,
            verdict,
            key_id: (flags & HAS_KEY_ID != 0).then_some(key_id),
            expires_at_s: (flags & HAS_EXPIRES_AT != 0).then_some(expires_at),
            fetched_at_ms,
            signing_secret,
            feed_position,
            limited: flags & LIMITED != 0,
            team,
            priced: flags & PRICED != 0,
        })
    }

    /// The entry for the sidecar's answer about `key_hash`, fetched at
    /// `now_ms`. `None` for an answer that cannot be right (a known key
    /// without a positive id): the caller treats it as a failed callout.
    /// A signing secret must be 1 to `MAX_SIGNING_SECRET_LEN` bytes, and
    /// only a known key has one.
    pub fn from_reply(key_hash: Digest32, reply: &VerifyReply, now_ms: u64) -> Option<CacheEntry> {
        match (reply.verdict, reply.key_id) {
            (KeyVerdict::NotFound, _) => {}
            (_, Some(id)) if id > 0 => {}
            _ => return None,
        }
        let signing_secret = match (&reply.signing_secret, reply.verdict) {
            (None, _) => None,
            (Some(_), KeyVerdict::NotFound) => return None,
            (Some(s), _) if (1..=MAX_SIGNING_SECRET_LEN).contains(&s.len()) => {
                Some(Secret::new(s.as_bytes().to_vec()))
            }
            (Some(_), _) => return None,
        };
        Some(CacheEntry {
            key_hash,
            verdict: reply.verdict,
            key_id: reply.key_id.filter(|id| *id > 0),
            expires_at_s: reply.expires_at,
            fetched_at_ms: now_ms,
            signing_secret,
            feed_position: reply.feed_cursor,
            limited: reply.limits.as_ref().is_some_and(|l| !l.is_empty()),
            team: reply
                .team_id
                .filter(|id| *id > 0)
                .filter(|_| reply.team_limits.as_ref().is_some_and(|l| !l.is_empty())),
            priced: reply.prices.is_some(),
        })
    }

    /// Age at `now_ms`; `None` when the entry claims to come from the future
    /// (a clock step), which makes it unusable.
    fn age_ms(&self, now_ms: u64) -> Option<u64> {
        now_ms.checked_sub(self.fetched_at_ms)
    }

    /// The budgets the key's requests are charged to.
    pub fn budgets(&self) -> crate::limits::Budgets {
        crate::limits::Budgets {
            own: self.limited,
            team: self.team,
            priced: self.priced,
        }
    }

    /// Whether an `active` key has passed its own expiry at `now_ms`.
    pub fn key_expired_at(&self, now_ms: u64) -> bool {
        match self.expires_at_s {
            Some(at) => i128::from(now_ms) >= i128::from(at) * 1000,
            None => false,
        }
    }
}

/// Decides whether a slot's content answers for `key_hash` at `now_ms`.
///
/// Fresh means: same key hash, and younger than the positive TTL (for
/// `active`; the shorter unfed one unless the key change feed is current,
/// `fed`) or the negative TTL (any other verdict). An `active` entry
/// whose key has meanwhile passed its `expires_at` is still returned: the
/// caller treats it as an expired key (see `verdict::decide_key`).
pub fn lookup(
    slot: Option<&CacheEntry>,
    key_hash: &Digest32,
    now_ms: u64,
    policy: &CachePolicy,
    fed: bool,
) -> Lookup {
    let Some(entry) = slot.filter(|e| &e.key_hash == key_hash) else {
        return Lookup::Miss;
    };
    let ttl = match (entry.verdict, fed) {
        (KeyVerdict::Active, true) => policy.positive_ttl_ms,
        (KeyVerdict::Active, false) => policy.unfed_positive_ttl_ms,
        _ => policy.negative_ttl_ms,
    };
    match entry.age_ms(now_ms) {
        Some(age) if age < ttl => Lookup::Fresh(entry.clone()),
        _ => Lookup::Miss,
    }
}

/// When the sidecar cannot answer: the entry to fall back on, if any. Only
/// an `active` verdict for this key, with a key id, younger than
/// stale-if-error and not past the key's own expiry qualifies; a failure
/// never turns into a pass on anything weaker.
pub fn stale_fallback(
    slot: Option<&CacheEntry>,
    key_hash: &Digest32,
    now_ms: u64,
    policy: &CachePolicy,
) -> Option<CacheEntry> {
    let entry = slot.filter(|e| &e.key_hash == key_hash)?;
    let usable = entry.verdict == KeyVerdict::Active
        && entry.key_id.is_some()
        && !entry.key_expired_at(now_ms)
        && matches!(entry.age_ms(now_ms), Some(age) if age < policy.stale_if_error_ms);
    usable.then(|| entry.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CachePolicy = CachePolicy {
        positive_ttl_ms: 30_000,
        unfed_positive_ttl_ms: 30_000,
        negative_ttl_ms: 5_000,
        stale_if_error_ms: 300_000,
        slots: 16384,
    };

    fn entry(verdict: KeyVerdict) -> CacheEntry {
        CacheEntry {
            key_hash: [7; 32],
            verdict,
            key_id: Some(42),
            expires_at_s: Some(2_000_000_000),
            fetched_at_ms: 1_000_000,
            signing_secret: None,
            feed_position: None,
            limited: false,
            team: None,
            priced: false,
        }
    }

    #[test]
    fn entries_round_trip() {
        for verdict in [
            KeyVerdict::Active,
            KeyVerdict::Revoked,
            KeyVerdict::Expired,
            KeyVerdict::NotFound,
        ] {
            let mut e = entry(verdict);
            assert_eq!(CacheEntry::decode(&e.encode()), Some(e.clone()));
            e.key_id = None;
            e.expires_at_s = None;
            e.key_hash[31] = 1;
            let bytes = e.encode();
            assert_eq!(bytes.len(), ENTRY_LEN);
            assert_eq!(CacheEntry::decode(&bytes), Some(e));
        }
        let e = CacheEntry {
            key_id: Some(-1),
            expires_at_s: Some(i64::MIN),
            fetched_at_ms: u64::MAX,
            ..entry(KeyVerdict::Active)
        };
        assert_eq!(CacheEntry::decode(&e.encode()), Some(e));
    }

    #[test]
    fn damaged_entries_are_misses() {
        let bytes = entry(KeyVerdict::Active).encode();
        assert_eq!(CacheEntry::decode(&bytes[..ENTRY_LEN - 1]), None);
        assert_eq!(CacheEntry::decode(&[bytes.clone(), vec![0]].concat()), None);
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(CacheEntry::decode(&v), None);
        let mut v = bytes.clone();
        v[1] = 9;
        assert_eq!(CacheEntry::decode(&v), None);
        let mut v = bytes;
        v[2] = 4;
        assert_eq!(CacheEntry::decode(&v), None);
        assert_eq!(CacheEntry::decode(&[]), None);
    }

    #[test]
    fn slots_are_named_by_the_cache_prefix() {
        let mut hash = [0u8; 32];
        hash[7] = 5;
        assert_eq!(POLICY.table().slot_key(&hash), "tollgate.kc.5");
    }

    #[test]
    fn a_negative_verdict_never_evicts_another_keys_usable_active_entry() {
        let world = crate::fake_host::FakeWorld::new();
        let host = world.root();
        let secret = SlotKey::from_bytes([3; 16]);
        let one_slot = CachePolicy { slots: 1, ..POLICY };
        let now = 1_000_000;
        let active = CacheEntry {
            fetched_at_ms: now,
            ..entry(KeyVerdict::Active)
        };
        let unknown = CacheEntry {
            key_hash: [9; 32],
            verdict: KeyVerdict::NotFound,
            key_id: None,
            expires_at_s: None,
            fetched_at_ms: now,
            signing_secret: None,
            feed_position: None,
            limited: false,
            team: None,
            priced: false,
        };
        let read = || read_slot(&host, &active.key_hash, &one_slot, &secret);
        assert_eq!(
            write_slot(&host, &active, &one_slot, &secret, now),
            Ok(Cached::Stored)
        );
        assert_eq!(
            write_slot(&host, &unknown, &one_slot, &secret, now),
            Ok(Cached::KeptActive)
        );
        assert_eq!(read(), Some(active.clone()));
        // The key's own revocation replaces its entry.
        let revoked = CacheEntry {
            verdict: KeyVerdict::Revoked,
            ..active.clone()
        };
        assert_eq!(
            write_slot(&host, &revoked, &one_slot, &secret, now),
            Ok(Cached::Stored)
        );
        assert_eq!(read(), Some(revoked.clone()));
        // Past stale-if-error the active entry may go; another active key always may.
        write_slot(&host, &active, &one_slot, &secret, now).unwrap();
        let late = now + POLICY.stale_if_error_ms;
        assert_eq!(
            write_slot(&host, &unknown, &one_slot, &secret, late),
            Ok(Cached::Stored)
        );
        let other_active = CacheEntry {
            key_hash: [8; 32],
            ..active.clone()
        };
        write_slot(&host, &active, &one_slot, &secret, now).unwrap();
        assert_eq!(
            write_slot(&host, &other_active, &one_slot, &secret, now),
            Ok(Cached::Stored)
        );
    }

    #[test]
    fn positive_ttl_edge() {
        let e = entry(KeyVerdict::Active);
        let at = |ms| lookup(Some(&e), &e.key_hash, e.fetched_at_ms + ms, &POLICY, true);
        assert_eq!(at(0), Lookup::Fresh(e.clone()));
        assert_eq!(at(29_999), Lookup::Fresh(e.clone()));
        assert_eq!(at(30_000), Lookup::Miss);
    }

    #[test]
    fn negative_ttl_edge() {
        for verdict in [
            KeyVerdict::Revoked,
            KeyVerdict::Expired,
            KeyVerdict::NotFound,
        ] {
            let e = entry(verdict);
            let at = |ms| lookup(Some(&e), &e.key_hash, e.fetched_at_ms + ms, &POLICY, true);
            assert_eq!(at(4_999), Lookup::Fresh(e.clone()));
            assert_eq!(at(5_000), Lookup::Miss);
        }
    }

    #[test]
    fn another_keys_entry_or_a_future_entry_is_a_miss() {
        let e = entry(KeyVerdict::Active);
        assert_eq!(
            lookup(Some(&e), &[8; 32], e.fetched_at_ms, &POLICY, true),
            Lookup::Miss
        );
        assert_eq!(
            lookup(None, &e.key_hash, e.fetched_at_ms, &POLICY, true),
            Lookup::Miss
        );
        assert_eq!(
            lookup(Some(&e), &e.key_hash, e.fetched_at_ms - 1, &POLICY, true),
            Lookup::Miss
        );
    }

    #[test]
    fn stale_fallback_edges() {
        let e = entry(KeyVerdict::Active);
        let at = |e: &CacheEntry, ms| {
            stale_fallback(Some(e), &e.key_hash, e.fetched_at_ms + ms, &POLICY)
        };
        assert_eq!(at(&e, 299_999), Some(e.clone()));
        assert_eq!(at(&e, 300_000), None);
        assert_eq!(
            stale_fallback(Some(&e), &[8; 32], e.fetched_at_ms, &POLICY),
            None
        );
        for verdict in [
            KeyVerdict::Revoked,
            KeyVerdict::Expired,
            KeyVerdict::NotFound,
        ] {
            assert_eq!(at(&entry(verdict), 1), None);
        }
        let no_id = CacheEntry {
            key_id: None,
            ..e.clone()
        };
        assert_eq!(at(&no_id, 1), None);
        let key_expires = CacheEntry {
            expires_at_s: Some(1_010),
            ..e
        };
        assert_eq!(at(&key_expires, 9_999), Some(key_expires.clone()));
        assert_eq!(at(&key_expires, 10_000), None);
    }

    #[test]
    fn replies_become_entries() {
        let reply = |verdict, key_id| VerifyReply {
            verdict,
            key_id,
            expires_at: Some(5),
            signing_secret: None,
            feed_cursor: None,
            limits: None,
            team_id: None,
            team_limits: None,
            prices: None,
        };
        let e = CacheEntry::from_reply([1; 32], &reply(KeyVerdict::Active, Some(3)), 9).unwrap();
        assert_eq!(
            (e.key_id, e.expires_at_s, e.fetched_at_ms),
            (Some(3), Some(5), 9)
        );
        assert!(CacheEntry::from_reply([1; 32], &reply(KeyVerdict::Active, None), 9).is_none());
        assert!(CacheEntry::from_reply([1; 32], &reply(KeyVerdict::Revoked, Some(0)), 9).is_none());
        let nf = CacheEntry::from_reply([1; 32], &reply(KeyVerdict::NotFound, None), 9).unwrap();
        assert_eq!(nf.key_id, None);
    }

    #[test]
    fn key_expiry_edge() {
        let e = CacheEntry {
            expires_at_s: Some(100),
            ..entry(KeyVerdict::Active)
        };
        assert!(!e.key_expired_at(99_999));
        assert!(e.key_expired_at(100_000));
        let never = CacheEntry {
            expires_at_s: None,
            ..e
        };
        assert!(!never.key_expired_at(u64::MAX));
    }
}
