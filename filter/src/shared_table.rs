//! Fixed-size tables in the host's shared data, as the key cache and the
//! replay store keep them: which slot a digest maps to, the versioned
//! encoding of a slot's value, and a compare-and-swap update with retry.
//!
//! Shared data is seen by every worker of an Envoy and never evicted, so a
//! table is a fixed number of keys (`<prefix><slot>`), and memory stays
//! bounded whatever the traffic. Values start with a format version byte;
//! a value of another version reads as absent, so a format change never
//! misreads an old entry.
//!
//! A table whose slots a client can aim at (the key cache: any client can
//! send any key) maps digests with a [`SlotKey`], a secret of the Envoy
//! process, so which digests share a slot cannot be computed offline.

use std::hash::Hasher as _;

use siphasher::sip::SipHasher13;
use tollgate_wire::Digest32;

use crate::host::{Host, HostError, SetError};

/// A table of `slots` shared-data keys named `<prefix><slot>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Prefix of every key of the table.
    pub prefix: &'static str,
    /// Number of slots (at least 1).
    pub slots: u32,
}

impl Table {
    /// The key of slot number `slot`.
    pub fn slot_name(&self, slot: u32) -> String {
        format!("{}{slot}", self.prefix)
    }

    /// The key of the slot `digest` maps to: its first 8 bytes, big-endian,
    /// modulo the slot count.
    pub fn slot_key(&self, digest: &Digest32) -> String {
        let head = digest.first_chunk::<8>().copied().unwrap_or_default();
        let slot = u64::from_be_bytes(head) % u64::from(self.slots.max(1));
        format!("{}{slot}", self.prefix)
    }
}

impl Table {
    /// The key of the slot `digest` maps to under `key`: SipHash-1-3 of the
    /// digest keyed by the secret, modulo the slot count.
    pub fn keyed_slot_key(&self, key: &SlotKey, digest: &Digest32) -> String {
        let [k0, k1] = key.0;
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        hasher.write(digest);
        let slot = hasher.finish() % u64::from(self.slots.max(1));
        format!("{}{slot}", self.prefix)
    }
}

/// A secret of one Envoy process that spreads digests over a table's slots.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SlotKey([u64; 2]);

impl std::fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotKey(..)")
    }
}

impl SlotKey {
    /// Bytes of a key as it is kept in shared data.
    pub const LEN: usize = 16;

    /// The key of 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (a, b) = bytes.split_at(8);
        let word = |half: &[u8]| u64::from_be_bytes(half.try_into().unwrap_or([0; 8]));
        SlotKey([word(a), word(b)])
    }

    /// The process's key kept in shared data under `name`: the first worker
    /// to start draws it from the host's randomness, every other worker
    /// (and every reconfiguration) reads the same one. `None` when there is
    /// no randomness or shared data fails (the worker must not start).
    pub fn shared(host: &impl Host, name: &str) -> Option<SlotKey> {
        let mut fresh = [0u8; Self::LEN];
        if !host.random(&mut fresh) {
            return None;
        }
        let existing = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).ok();
        let up = update(host, name, 8, |current| match current.and_then(existing) {
            Some(bytes) => Change::Stop(bytes),
            None => Change::Write(fresh.to_vec()),
        });
        match up.result {
            Updated::Written => Some(Self::from_bytes(fresh)),
            Updated::Stopped(bytes) => Some(Self::from_bytes(bytes)),
            Updated::Contended | Updated::Failed(_) => None,
        }
    }
}

/// `body` behind its format `version` byte.
pub fn encode_versioned(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(version);
    out.extend_from_slice(body);
    out
}

/// The body of a value written by [`encode_versioned`] with `version`;
/// `None` for any other version or an empty value.
pub fn decode_versioned(version: u8, bytes: &[u8]) -> Option<&[u8]> {
    match bytes.split_first() {
        Some((v, body)) if *v == version => Some(body),
        _ => None,
    }
}

/// A slot's current value; a host error reads as an empty slot (a miss).
pub fn read(host: &impl Host, key: &str) -> Option<Vec<u8>> {
    host.shared_get(key).ok().and_then(|(value, _)| value)
}

/// The CAS a write uses when the slot did not exist at the read.
///
/// The host creates a missing key whatever CAS it is given, but refuses to
/// overwrite an existing key whose CAS differs. A CAS of 0 would mean "no
/// check", so a slot another worker created between our read and our write
/// would be overwritten and its content lost. The host hands out CAS values
/// counting up from 1, so `u32::MAX` matches an existing key only after four
/// billion writes and then only for that key's current value: writing with
/// it is, in effect, "create if absent".
pub const CREATE_ONLY_CAS: u32 = u32::MAX;

/// What an update makes of the value it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<R> {
    /// Write these bytes (if the value is still the one read).
    Write(Vec<u8>),
    /// Write nothing; the update ends with this answer.
    Stop(R),
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated<R> {
    /// The write landed.
    Written,
    /// The decision stopped the update.
    Stopped(R),
    /// Every attempt lost its race to another writer.
    Contended,
    /// The host failed a read or a write.
    Failed(HostError),
}

/// An update's end and how many races it lost on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update<R> {
    /// How it ended.
    pub result: Updated<R>,
    /// Writes that lost a race and were read again.
    pub retries: u32,
}

/// Read-decide-write on one key, atomically: the write carries the read's
/// CAS, and a lost race reads again (the winner may have changed what
/// `decide` would say), at most `attempts` times.
pub fn update<R>(
    host: &impl Host,
    key: &str,
    attempts: u32,
    mut decide: impl FnMut(Option<&[u8]>) -> Change<R>,
) -> Update<R> {
    let mut retries = 0;
    for _ in 0..attempts {
        let (current, cas) = match host.shared_get(key) {
            Ok(read) => read,
            Err(e) => {
                return Update {
                    result: Updated::Failed(e),
                    retries,
                }
            }
        };
        let bytes = match decide(current.as_deref()) {
            Change::Write(bytes) => bytes,
            Change::Stop(answer) => {
                return Update {
                    result: Updated::Stopped(answer),
                    retries,
                }
            }
        };
        let cas = cas.unwrap_or(CREATE_ONLY_CAS);
        match host.shared_set(key, &bytes, Some(cas)) {
            Ok(()) => {
                return Update {
                    result: Updated::Written,
                    retries,
                }
            }
            Err(SetError::CasMismatch) => retries += 1,
            Err(SetError::Failed(e)) => {
                return Update {
                    result: Updated::Failed(e),
                    retries,
                }
            }
        }
    }
    Update {
        result: Updated::Contended,
        retries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::{Call, FakeWorld};

    const TABLE: Table = Table {
        prefix: "t.",
        slots: 16384,
    };

    #[test]
    fn slots_are_bounded_and_stable() {
        let mut digest = [0u8; 32];
        digest[7] = 5;
        assert_eq!(TABLE.slot_key(&digest), "t.5");
        digest[0] = 0xff;
        let key = TABLE.slot_key(&digest);
        let n: u64 = key.strip_prefix("t.").unwrap().parse().unwrap();
        assert!(n < 16384);
        let one = Table { slots: 1, ..TABLE };
        assert_eq!(one.slot_key(&digest), "t.0");
        let none = Table { slots: 0, ..TABLE };
        assert_eq!(none.slot_key(&digest), "t.0");
    }

    #[test]
    fn keyed_slots_depend_on_the_key_and_stay_in_the_table() {
        let a = SlotKey::from_bytes([1; 16]);
        let b = SlotKey::from_bytes([2; 16]);
        let digests: Vec<Digest32> = (0..64u8).map(|i| [i; 32]).collect();
        let under = |k: &SlotKey| -> Vec<String> {
            digests.iter().map(|d| TABLE.keyed_slot_key(k, d)).collect()
        };
        assert_eq!(under(&a), under(&a));
        let moved = under(&a)
            .iter()
            .zip(under(&b))
            .filter(|(x, y)| **x != *y)
            .count();
        assert!(
            moved > 60,
            "only {moved} of 64 digests changed slot with the key"
        );
        for key in under(&a) {
            let n: u64 = key.strip_prefix("t.").unwrap().parse().unwrap();
            assert!(n < 16384);
        }
        // Digests that share the unkeyed slot (the same first 8 bytes) part.
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        x[31] = 1;
        y[31] = 2;
        assert_eq!(TABLE.slot_key(&x), TABLE.slot_key(&y));
        assert_ne!(TABLE.keyed_slot_key(&a, &x), TABLE.keyed_slot_key(&a, &y));
    }

    #[test]
    fn every_worker_of_a_process_reads_the_one_shared_key() {
        let world = FakeWorld::new();
        let first = SlotKey::shared(&world.root(), "k").unwrap();
        let second = SlotKey::shared(&world.root(), "k").unwrap();
        assert_eq!(first, second);
        let other = SlotKey::shared(&FakeWorld::new().root(), "k").unwrap();
        assert_ne!(first, other, "another process draws its own");
        world.fail(Call::Random);
        assert_eq!(SlotKey::shared(&world.root(), "k2"), None);
    }

    #[test]
    fn versions_must_match() {
        let bytes = encode_versioned(3, b"abc");
        assert_eq!(decode_versioned(3, &bytes), Some(&b"abc"[..]));
        assert_eq!(decode_versioned(4, &bytes), None);
        assert_eq!(decode_versioned(3, &[]), None);
    }

    #[test]
    fn an_update_writes_what_it_decides_on_what_it_read() {
        let world = FakeWorld::new();
        let host = world.root();
        let appended = |current: Option<&[u8]>| {
            let mut v = current.unwrap_or_default().to_vec();
            v.push(b'x');
            Change::<()>::Write(v)
        };
        assert_eq!(update(&host, "k", 3, appended).result, Updated::Written);
        assert_eq!(update(&host, "k", 3, appended).result, Updated::Written);
        assert_eq!(read(&host, "k"), Some(b"xx".to_vec()));
        let stop = update(&host, "k", 3, |_| Change::Stop(7));
        assert_eq!(stop.result, Updated::Stopped(7));
    }

    #[test]
    fn a_lost_race_reads_again_and_endless_contention_gives_up() {
        let world = FakeWorld::new();
        let host = world.root();
        world.lose_races(1);
        let mut reads = 0;
        let up = update(&host, "k", 3, |_| {
            reads += 1;
            Change::<()>::Write(vec![reads])
        });
        assert_eq!((up.result, up.retries, reads), (Updated::Written, 1, 2));
        world.lose_races(u32::MAX);
        let up = update(&host, "k", 3, |_| Change::<()>::Write(vec![9]));
        assert_eq!((up.result, up.retries), (Updated::Contended, 3));
    }

    #[test]
    fn host_failures_end_the_update() {
        let world = FakeWorld::new();
        let host = world.root();
        world.fail(Call::SharedGet);
        let up = update(&host, "k", 3, |_| Change::<()>::Write(vec![1]));
        assert!(matches!(up.result, Updated::Failed(_)));
        assert_eq!(read(&host, "k"), None);
        world.heal(Call::SharedGet);
        world.fail(Call::SharedSet);
        let up = update(&host, "k", 3, |_| Change::<()>::Write(vec![1]));
        assert!(matches!(up.result, Updated::Failed(_)));
    }
}
