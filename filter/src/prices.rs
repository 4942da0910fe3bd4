//! The price table, for money quotas: the sidecar sends every price
//! version with the verdict of a key that has a money quota (or whose
//! team has one), and the filter keeps the latest table it was sent in
//! shared data (`tollgate.prices`, JSON), for every worker of this Envoy.
//! A priced key's LLM call reads it once, at admission, and keeps the
//! version in effect when its headers arrived (the sidecar prices the
//! call's row at the same instant, by the same rule: `wire::price`).
//!
//! A price set or changed is a change on the key feed for every key with
//! a money quota: their verdicts are evicted and the next verify reply
//! brings the new table.

use tollgate_wire::price::{Price, PriceBook};

use crate::host::{Host, SetError};

/// The table's shared-data key.
pub const PRICES_KEY: &str = "tollgate.prices";

/// Stores the table a verify reply carried (unchanged, it is not written
/// again).
pub fn store(host: &impl Host, prices: &[Price]) -> Result<(), SetError> {
    let bytes = serde_json::to_vec(prices)
        .map_err(|e| SetError::Failed(crate::host::HostError(e.to_string())))?;
    if let Ok((Some(current), _)) = host.shared_get(PRICES_KEY) {
        if current == bytes {
            return Ok(());
        }
    }
    host.shared_set(PRICES_KEY, &bytes, None)
}

/// The table last stored, if any (`None` also when it cannot be read).
pub fn load(host: &impl Host) -> Option<PriceBook> {
    let (bytes, _) = host.shared_get(PRICES_KEY).ok()?;
    let prices: Vec<Price> = serde_json::from_slice(&bytes?).ok()?;
    Some(PriceBook::new(prices))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::FakeWorld;
    use tollgate_wire::price::{Currency, Per};

    #[test]
    fn a_stored_table_reads_back_and_a_missing_one_is_none() {
        let world = FakeWorld::new();
        let host = world.root();
        assert!(load(&host).is_none());
        let price = Price {
            model: "gpt-test".into(),
            from_ms: 5,
            currency: Currency::Eur,
            per: Per::Million,
            input_micros: 1,
            cached_input_micros: 1,
            output_micros: 2,
        };
        store(&host, std::slice::from_ref(&price)).unwrap();
        let book = load(&host).unwrap();
        assert_eq!(book.price_at("gpt-test", 5), Some(&price));
        assert_eq!(book.price_at("gpt-test", 4), None, "not yet in effect");
    }
}
