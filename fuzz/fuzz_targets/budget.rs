//! A key's budget on arbitrary bytes and arbitrary calls: decoding never
//! panics and what decodes encodes back to itself; admitting and settling
//! a call never panics, never charges a quota counted at admission more
//! than it held, and a settlement never gives back more than the call
//! reserved. A limits spelling read from arbitrary text never panics, and
//! what reads back spells itself the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_filter::limits::{At, Budget, Demand, TokenBound, Used};
use tollgate_wire::{Limits, TokenUsage};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<40>() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(limits) = Limits::parse_spec(text) {
            let spec = limits.to_spec();
            assert_eq!(Limits::parse_spec(&spec).as_ref(), Ok(&limits), "{spec}");
        }
    }
    let Some(mut budget) = Budget::decode(rest) else {
        return;
    };
    assert_eq!(Budget::decode(&budget.encode()).as_ref(), Some(&budget));
    let word = |i: usize| {
        let bytes: [u8; 8] = head[i * 8..i * 8 + 8].try_into().unwrap_or_default();
        u64::from_be_bytes(bytes)
    };
    // Clocks below 2^50 ms (35,000 years): a monotonic stamp of 2^62 or
    // more is read as an older filter's, by design.
    let (now, input, output) = (word(0) >> 14, word(1) >> 40, word(2) >> 40);
    let (used_in, used_out) = (word(3) >> 40, word(4) >> 40);
    let model = budget
        .quotas
        .iter()
        .find_map(|s| s.quota.model.clone())
        .unwrap_or_else(|| "m".to_owned());
    let demand = Demand {
        request_bytes: input,
        model: Some(&model),
        tokens: TokenBound {
            input,
            output,
            cost: 0,
        },
    };
    let held: Vec<u64> = budget.quotas.iter().map(|s| s.held).collect();
    let at = At {
        wall_ms: now,
        mono_ms: now,
    };
    if budget.admit(at, &demand) != tollgate_filter::limits::Admission::Admit {
        return;
    }
    let reserved = budget.reservations(&demand);
    for r in &reserved {
        let state = budget.quotas.iter().position(|s| r.quota.names(&s.quota));
        if let Some(i) = state {
            assert!(held[i] >= r.amount, "charged more than it held");
        }
    }
    let before: Vec<u64> = budget.quotas.iter().map(|s| s.held).collect();
    let used = Used {
        tokens: TokenUsage {
            input_tokens: used_in,
            output_tokens: used_out,
            ..TokenUsage::default()
        },
        cost: 0,
    };
    budget.settle(&reserved, &used, now);
    let back: u64 = budget
        .quotas
        .iter()
        .zip(&before)
        .map(|(s, b)| s.held.saturating_sub(*b))
        .sum();
    let most: u64 = reserved.iter().map(|r| r.amount).sum();
    assert!(back <= most, "gave back {back} of {most}");
    assert_eq!(Budget::decode(&budget.encode()).as_ref(), Some(&budget));
});
