//! Request ids minted by the filter: 128 random bits as 32 lowercase hex
//! characters. The filter overwrites any client-sent `x-request-id` with one,
//! because the sidecar deduplicates usage records by this id: a client that
//! could choose it, or predict the next one, could have calls deduplicated
//! away or counted against another key.
//!
//! Every id is fresh randomness from the host. To keep host calls off the
//! hot path, a worker draws [`IDS_PER_DRAW`] ids' worth of random bytes at
//! once and hands them out one id at a time; no id is derived from another,
//! so seeing any number of ids says nothing about the next one.

use tollgate_wire::to_hex;

use crate::host::Host;

/// Random bytes in one id.
pub const ID_BYTES: usize = 16;

/// Ids drawn per host call for randomness (4 KiB of random bytes).
pub const IDS_PER_DRAW: usize = 256;

/// Mints request ids for one worker.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pool: Vec<u8>,
    next: usize,
}

impl RequestIds {
    /// A minter with its first draw made; `None` when the host has no
    /// randomness (the caller must fail closed rather than guess ids).
    pub fn from_host(host: &impl Host) -> Option<Self> {
        let mut ids = RequestIds {
            pool: vec![0; ID_BYTES * IDS_PER_DRAW],
            next: 0,
        };
        ids.draw(host).then_some(ids)
    }

    fn draw(&mut self, host: &impl Host) -> bool {
        self.next = 0;
        host.random(&mut self.pool)
    }

    /// The next id; `None` when the pool is spent and the host has no
    /// randomness to refill it.
    pub fn mint(&mut self, host: &impl Host) -> Option<String> {
        if self.next + ID_BYTES > self.pool.len() && !self.draw(host) {
            // Never hand out bytes twice: the pool stays spent.
            self.next = self.pool.len();
            return None;
        }
        let id = self.pool.get(self.next..self.next + ID_BYTES)?;
        self.next += ID_BYTES;
        Some(to_hex(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::{Call, FakeWorld};
    use std::collections::HashSet;

    fn parse(id: &str) -> u128 {
        u128::from_str_radix(id, 16).unwrap()
    }

    #[test]
    fn ids_are_32_lowercase_hex_and_never_repeat() {
        let host = FakeWorld::new().root();
        let mut ids = RequestIds::from_host(&host).unwrap();
        let minted: Vec<String> = (0..10_000).map(|_| ids.mint(&host).unwrap()).collect();
        for id in &minted {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            assert!(id.len() <= tollgate_wire::MAX_REQUEST_ID_LEN);
        }
        assert_eq!(minted.iter().collect::<HashSet<_>>().len(), minted.len());
    }

    /// Neighbouring ids share no recoverable structure: their XOR has about
    /// half its 128 bits set (a counter, or a shared per-worker half, would
    /// leave most bits clear), and no two share their first 8 bytes.
    #[test]
    fn consecutive_ids_share_no_structure() {
        let host = FakeWorld::new().root();
        let mut ids = RequestIds::from_host(&host).unwrap();
        let minted: Vec<u128> = (0..2_000)
            .map(|_| parse(&ids.mint(&host).unwrap()))
            .collect();
        let bits: Vec<u32> = minted
            .windows(2)
            .map(|w| (w[0] ^ w[1]).count_ones())
            .collect();
        let mean = f64::from(bits.iter().sum::<u32>()) / bits.len() as f64;
        assert!((60.0..68.0).contains(&mean), "mean differing bits {mean}");
        assert!(bits.iter().all(|b| *b > 30), "a pair of ids nearly equal");
        let prefixes: HashSet<u64> = minted.iter().map(|id| (id >> 64) as u64).collect();
        assert_eq!(prefixes.len(), minted.len());
    }

    #[test]
    fn the_pool_is_refilled_and_a_failed_refill_fails_closed() {
        let world = FakeWorld::new();
        let host = world.root();
        let mut ids = RequestIds::from_host(&host).unwrap();
        for _ in 0..IDS_PER_DRAW {
            assert!(ids.mint(&host).is_some());
        }
        world.fail(Call::Random);
        assert_eq!(ids.mint(&host), None);
        assert_eq!(ids.mint(&host), None, "spent bytes are never reused");
        world.heal(Call::Random);
        assert!(ids.mint(&host).is_some());
        assert!(RequestIds::from_host(&host).is_some());
        world.fail(Call::Random);
        assert!(RequestIds::from_host(&host).is_none());
    }
}
