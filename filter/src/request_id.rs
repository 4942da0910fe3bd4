//! Request ids minted by the filter: 128 bits as 32 lowercase hex
//! characters. The filter overwrites any client-sent `x-request-id` with one,
//! because the sidecar deduplicates usage records by this id and a client
//! that could choose it could have its calls deduplicated away.
//!
//! Each VM draws 128 random bits once (WASI `random_get` inside Envoy) and
//! then mints ids from that seed and a counter, so the hot path makes no
//! host call for randomness. The high half is the seed's; the low half is
//! the counter passed through a bijection keyed by the seed's other half, so
//! ids from one VM never repeat (2^64 of them) and ids from two VMs collide
//! only if their random seeds do.

use tollgate_wire::to_hex;

use crate::host::Host;

/// Formats 16 bytes as a request id.
pub fn from_random_bytes(bytes: &[u8; 16]) -> String {
    to_hex(bytes)
}

/// Mints request ids for one VM.
#[derive(Debug, Clone)]
pub struct RequestIds {
    prefix: u64,
    key: u64,
    counter: u64,
}

impl RequestIds {
    /// A minter seeded from the host's randomness; `None` when there is none
    /// (the caller must fail closed rather than guess ids).
    pub fn from_host(host: &impl Host) -> Option<Self> {
        let mut seed = [0u8; 16];
        host.random(&mut seed).then(|| Self::from_seed(seed))
    }

    /// A minter from a given seed (tests, and `from_host`).
    pub fn from_seed(seed: [u8; 16]) -> Self {
        let (hi, lo) = seed.split_at(8);
        let word = |half: &[u8]| u64::from_be_bytes(half.try_into().unwrap_or([0; 8]));
        RequestIds {
            prefix: word(hi),
            key: word(lo),
            counter: 0,
        }
    }

    /// The next id.
    pub fn mint(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        let low = mix(self.counter ^ self.key);
        let mut bytes = [0u8; 16];
        let (hi, lo) = bytes.split_at_mut(8);
        hi.copy_from_slice(&self.prefix.to_be_bytes());
        lo.copy_from_slice(&low.to_be_bytes());
        from_random_bytes(&bytes)
    }
}

/// SplitMix64's finaliser: a bijection on u64 that scatters a counter's bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::FakeWorld;
    use std::collections::HashSet;

    #[test]
    fn ids_are_32_lowercase_hex_and_never_repeat() {
        let mut ids = RequestIds::from_host(&FakeWorld::new().root()).unwrap();
        let minted: Vec<String> = (0..10_000).map(|_| ids.mint()).collect();
        for id in &minted {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        }
        assert_eq!(minted.iter().collect::<HashSet<_>>().len(), minted.len());
    }

    #[test]
    fn two_vms_mint_different_ids() {
        let mut a = RequestIds::from_host(&FakeWorld::new().root()).unwrap();
        let mut b = RequestIds::from_host(&FakeWorld::new().root()).unwrap();
        let from_a: HashSet<String> = (0..1000).map(|_| a.mint()).collect();
        assert!((0..1000).all(|_| !from_a.contains(&b.mint())));
    }

    #[test]
    fn consecutive_ids_do_not_look_sequential() {
        let mut ids = RequestIds::from_seed([7; 16]);
        let (a, b) = (ids.mint(), ids.mint());
        assert_eq!(a.get(..16), b.get(..16), "same VM prefix");
        let differing = a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count();
        assert!(differing >= 8, "{a} vs {b}");
    }

    #[test]
    fn ids_fit_the_usage_record_limit() {
        let mut ids = RequestIds::from_seed([0; 16]);
        assert!(ids.mint().len() <= tollgate_wire::MAX_REQUEST_ID_LEN);
        assert_eq!(
            from_random_bytes(&[0xab; 16]),
            "abababababababababababababababab"
        );
    }
}
