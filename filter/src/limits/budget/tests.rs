use proptest::prelude::*;
use tollgate_wire::grant::{GrantGiven, GrantStatus, SettlementDone};
use tollgate_wire::{Limits, Quota, QuotaKind, Rate, RatePeriod, TokenUsage, Window};

use super::*;

const DAY_MS: u64 = 86_400_000;
/// 2026-12-02T00:00:00Z.
const MIDNIGHT: u64 = 1_796_169_600_000;

/// An instant with both clocks at `ms`.
fn at(ms: u64) -> At {
    At {
        wall_ms: ms,
        mono_ms: ms,
    }
}

fn limits(rate: Option<Rate>, quotas: &[Quota]) -> Limits {
    Limits {
        rate,
        quotas: quotas.to_vec(),
    }
}

fn quota(kind: QuotaKind, limit: u64, window: Window) -> Quota {
    Quota {
        kind,
        limit,
        window,
        model: None,
        currency: kind
            .counts_money()
            .then_some(tollgate_wire::price::Currency::Usd),
    }
}

/// The unscoped quota of `kind`.
fn qid(kind: QuotaKind) -> QuotaId {
    QuotaId { kind, model: None }
}

fn given(id: &ChargeId, status: GrantStatus, amount: u64, charged: u64) -> GrantGiven {
    GrantGiven {
        grant_id: tollgate_wire::to_hex(id),
        status,
        amount,
        limit: 0,
        charged,
        window_start_ms: MIDNIGHT as i64,
        window_end_ms: (MIDNIGHT + DAY_MS) as i64,
    }
}

#[test]
fn a_request_waits_for_a_grant_then_spends_it_and_a_spent_window_is_429_until_its_end() {
    let q = quota(QuotaKind::Requests, 100, Window::Day);
    let now = MIDNIGHT + 1000;
    let mut b = Budget::new(limits(None, &[q]), now);
    assert_eq!(
        b.admit(at(now), &Demand::bytes(10)),
        Admission::NeedGrant {
            quota: qid(QuotaKind::Requests),
            need: 1
        }
    );
    let ask = b.ask(&qid(QuotaKind::Requests), 1, [7; 16], now).unwrap();
    assert_eq!(
        b.ask(&qid(QuotaKind::Requests), 1, [8; 16], now)
            .unwrap()
            .id,
        ask.id,
        "a second waiting request shares the ask in flight"
    );
    b.apply_grant(
        &qid(QuotaKind::Requests),
        &ask.id,
        &given(&ask.id, GrantStatus::Granted, 2, 2),
    );
    assert_eq!(b.quotas[0].held, 2);
    b.apply_grant(
        &qid(QuotaKind::Requests),
        &ask.id,
        &given(&ask.id, GrantStatus::Granted, 2, 2),
    );
    assert_eq!(b.quotas[0].held, 2, "an answer is taken in once");
    assert_eq!(b.admit(at(now), &Demand::bytes(10)), Admission::Admit);
    assert_eq!(b.admit(at(now), &Demand::bytes(10)), Admission::Admit);
    assert!(matches!(
        b.admit(at(now), &Demand::bytes(10)),
        Admission::NeedGrant { .. }
    ));
    let ask = b.ask(&qid(QuotaKind::Requests), 1, [9; 16], now).unwrap();
    b.apply_grant(
        &qid(QuotaKind::Requests),
        &ask.id,
        &given(&ask.id, GrantStatus::Exhausted, 0, 100),
    );
    assert_eq!(
        b.admit(at(now), &Demand::bytes(10)),
        Admission::QuotaExceeded {
            quota: qid(QuotaKind::Requests),
            retry_after_s: (DAY_MS - 1000) / 1000
        }
    );
    assert!(
        matches!(
            b.admit(at(MIDNIGHT + DAY_MS), &Demand::bytes(10)),
            Admission::NeedGrant { .. }
        ),
        "the next window starts afresh"
    );
}

#[test]
fn the_bucket_allows_its_burst_then_its_rate_and_says_when_to_retry() {
    let rate = Rate {
        count: 10,
        per: RatePeriod::Second,
        burst: 5,
    };
    let mut b = Budget::new(limits(Some(rate), &[]), 0);
    for _ in 0..5 {
        assert_eq!(b.admit(at(0), &Demand::bytes(0)), Admission::Admit);
    }
    assert_eq!(
        b.admit(at(0), &Demand::bytes(0)),
        Admission::RateLimited { retry_after_s: 1 }
    );
    assert_eq!(
        b.admit(at(100), &Demand::bytes(0)),
        Admission::Admit,
        "a token every 100 ms"
    );
    assert!(matches!(
        b.admit(at(150), &Demand::bytes(0)),
        Admission::RateLimited { .. }
    ));
    b.refund(&Demand::bytes(0));
    assert_eq!(
        b.admit(at(150), &Demand::bytes(0)),
        Admission::Admit,
        "a refund gives the token back"
    );
    let slow = Rate {
        count: 1,
        per: RatePeriod::Minute,
        burst: 1,
    };
    let mut b = Budget::new(limits(Some(slow), &[]), 0);
    assert_eq!(b.admit(at(0), &Demand::bytes(0)), Admission::Admit);
    assert_eq!(
        b.admit(at(0), &Demand::bytes(0)),
        Admission::RateLimited { retry_after_s: 60 }
    );
}

#[test]
fn the_bucket_runs_on_the_monotonic_clock_and_restarts_an_older_filters_stamp() {
    let rate = Rate {
        count: 10,
        per: RatePeriod::Second,
        burst: 1,
    };
    let mut b = Budget::new(limits(Some(rate), &[]), 5_000);
    let when = |wall_ms, mono_ms| At { wall_ms, mono_ms };
    assert_eq!(
        b.admit(when(MIDNIGHT, 5_000), &Demand::bytes(0)),
        Admission::Admit
    );
    assert!(
        matches!(
            b.admit(when(MIDNIGHT + DAY_MS, 5_000), &Demand::bytes(0)),
            Admission::RateLimited { .. }
        ),
        "a day on the wall clock and no time on the bucket's: no token"
    );
    assert_eq!(
        b.admit(when(MIDNIGHT - DAY_MS, 5_100), &Demand::bytes(0)),
        Admission::Admit,
        "the wall clock set back a day: the token of 100 ms came"
    );
    // The stamp in the binary form is above any wall-clock instant, so an
    // older filter, which stamped the wall clock, refills nothing from it.
    let bytes = b.encode();
    assert_eq!(Budget::decode(&bytes).as_ref(), Some(&b));
    let stamp = u64::from_be_bytes(bytes[26..34].try_into().unwrap());
    assert!(stamp > 100 * 365 * DAY_MS + MIDNIGHT, "{stamp}");
    // A budget an older filter stamped with the wall clock.
    let mut old = Budget::decode(&b.encode_as_wall_stamped(MIDNIGHT)).unwrap();
    assert_eq!(old.refilled_ms, UNSTAMPED);
    assert!(
        matches!(
            old.admit(when(MIDNIGHT, 6_000), &Demand::bytes(0)),
            Admission::RateLimited { .. }
        ),
        "a stamp of another clock adds nothing"
    );
    assert_eq!(old.refilled_ms, 6_000, "and restarts at now");
    assert_eq!(
        old.admit(when(MIDNIGHT, 6_100), &Demand::bytes(0)),
        Admission::Admit
    );
    let unstamped = Budget {
        refilled_ms: UNSTAMPED,
        ..b.clone()
    };
    assert_eq!(
        Budget::decode(&unstamped.encode()),
        Some(unstamped),
        "a bucket not restarted yet stays so"
    );
}

#[test]
fn quotas_charged_after_the_fact_close_once_the_known_total_reaches_the_limit() {
    let q = quota(QuotaKind::Units, 100, Window::Hour);
    let now = MIDNIGHT;
    let mut b = Budget::new(limits(None, &[q]), now);
    let first = b.due(now, 1000, || [1; 16]);
    assert_eq!(first.len(), 1, "a first settlement of 0 learns the total");
    assert_eq!(first[0].pending.amount, 0);
    assert_eq!(b.admit(at(now), &Demand::bytes(0)), Admission::Admit);
    b.charge_after(0, 60, None, now);
    assert_eq!(
        b.admit(at(now), &Demand::bytes(0)),
        Admission::Admit,
        "60 of 100"
    );
    b.charge_after(0, 60, None, now);
    assert!(
        matches!(
            b.admit(at(now), &Demand::bytes(0)),
            Admission::QuotaExceeded { .. }
        ),
        "120 known: closed"
    );
    assert!(b.due(now + 10, 1000, || [2; 16]).is_empty(), "in flight");
    let resent = b.due(now + 1000, 1000, || [2; 16]);
    assert_eq!(resent[0].pending.id, [1; 16], "resent under its id");
    let done = SettlementDone {
        settlement_id: tollgate_wire::to_hex(&[1; 16]),
        status: GrantStatus::Granted,
        limit: 100,
        charged: 0,
        open: true,
        window_start_ms: MIDNIGHT as i64,
        window_end_ms: (MIDNIGHT + 3_600_000) as i64,
    };
    b.apply_settlement(&qid(QuotaKind::Units), &[1; 16], &done);
    let next = b.due(now + 1000, 1000, || [3; 16]);
    assert_eq!(next[0].pending.amount, 120, "what was charged meanwhile");
    assert!(matches!(
        b.admit(at(now), &Demand::bytes(0)),
        Admission::QuotaExceeded { .. }
    ));
}

/// A settlement's answer for a quota of `limit` (settled after the fact)
/// telling the window's total `charged`, in the hour of `MIDNIGHT`.
fn settled(id: &ChargeId, limit: u64, charged: u64) -> SettlementDone {
    SettlementDone {
        settlement_id: tollgate_wire::to_hex(id),
        status: GrantStatus::Granted,
        limit,
        charged,
        open: charged < limit,
        window_start_ms: MIDNIGHT as i64,
        window_end_ms: (MIDNIGHT + 3_600_000) as i64,
    }
}

#[test]
fn a_response_bytes_quota_counts_each_responses_bytes_and_closes_at_its_limit() {
    let q = quota(QuotaKind::ResponseBytes, 1000, Window::Hour);
    let now = MIDNIGHT + 1000;
    let mut b = Budget::new(limits(None, &[q]), now);
    assert_eq!(b.admit(at(now), &Demand::bytes(5000)), Admission::Admit);
    assert_eq!(
        b.quotas[0].unsettled, 0,
        "nothing is charged at admission, whatever the request's size"
    );
    b.charge_after(300, 77, None, now);
    assert_eq!(
        b.quotas[0].unsettled, 300,
        "the response's bytes, not its units"
    );
    b.charge_after(699, 0, Some("any-model"), now);
    assert_eq!(b.quotas[0].remaining(), 1);
    assert_eq!(
        b.admit(at(now), &Demand::bytes(0)),
        Admission::Admit,
        "999 of 1000 known: still below the limit"
    );
    b.charge_after(1, 0, None, now);
    assert_eq!(
        b.admit(at(now), &Demand::bytes(0)),
        Admission::QuotaExceeded {
            quota: qid(QuotaKind::ResponseBytes),
            retry_after_s: 3599
        },
        "1000 known: closed until the hour ends"
    );
    let due = b.due(now, 1000, || [1; 16]);
    assert_eq!(
        (due.len(), due[0].quota.kind, due[0].pending.amount),
        (1, QuotaKind::ResponseBytes, 1000),
        "the tick settles what was charged"
    );
    assert!(
        matches!(
            b.admit(at(now), &Demand::bytes(0)),
            Admission::QuotaExceeded { .. }
        ),
        "a settlement in flight still counts"
    );
    b.apply_settlement(
        &qid(QuotaKind::ResponseBytes),
        &[1; 16],
        &settled(&[1; 16], 1000, 1000),
    );
    assert_eq!((b.quotas[0].charged, b.quotas[0].unsettled), (1000, 0));
    assert!(matches!(
        b.admit(at(now), &Demand::bytes(0)),
        Admission::QuotaExceeded { .. }
    ));
    assert_eq!(
        b.admit(at(MIDNIGHT + 3_600_000), &Demand::bytes(0)),
        Admission::Admit,
        "the next hour starts afresh"
    );
}

#[test]
fn settlement_answers_raise_the_known_total_of_a_response_bytes_quota() {
    let q = quota(QuotaKind::ResponseBytes, 1000, Window::Hour);
    let now = MIDNIGHT + 1000;
    let mut b = Budget::new(limits(None, &[q]), now);
    b.charge_after(100, 0, None, now);
    let first = b.due(now, 1000, || [1; 16]);
    assert_eq!(first[0].pending.amount, 100);
    // Other Envoys charged 800 meanwhile: the answer tells 900 in all.
    b.apply_settlement(
        &qid(QuotaKind::ResponseBytes),
        &[1; 16],
        &settled(&[1; 16], 1000, 900),
    );
    assert_eq!(
        b.quotas[0].remaining(),
        100,
        "what the fleet charged counts"
    );
    assert_eq!(b.admit(at(now), &Demand::bytes(0)), Admission::Admit);
    b.charge_after(60, 0, None, now);
    let second = b.due(now, 1000, || [2; 16]);
    assert_eq!(second[0].pending.amount, 60);
    b.apply_settlement(
        &qid(QuotaKind::ResponseBytes),
        &[2; 16],
        &settled(&[2; 16], 1000, 1000),
    );
    assert!(
        matches!(
            b.admit(at(now), &Demand::bytes(0)),
            Admission::QuotaExceeded { .. }
        ),
        "the fleet's total reached the limit: closed, though this Envoy charged 160"
    );
    b.apply_settlement(
        &qid(QuotaKind::ResponseBytes),
        &[2; 16],
        &settled(&[2; 16], 1000, 0),
    );
    assert_eq!(
        b.quotas[0].charged, 1000,
        "an answer taken in once; a lower total never lowers it"
    );
}

#[test]
fn new_limits_keep_what_is_held_for_the_same_quota() {
    let q = quota(QuotaKind::Requests, 100, Window::Day);
    let mut b = Budget::new(limits(None, &[q]), MIDNIGHT);
    b.quotas[0].held = 7;
    let raised = b.with_limits(
        limits(None, &[quota(QuotaKind::Requests, 500, Window::Day)]),
        MIDNIGHT,
    );
    assert_eq!(
        (raised.quotas[0].held, raised.quotas[0].quota.limit),
        (7, 500)
    );
    let moved = b.with_limits(
        limits(None, &[quota(QuotaKind::Requests, 100, Window::Hour)]),
        MIDNIGHT,
    );
    assert_eq!(moved.quotas[0].held, 0, "another window starts afresh");
    let lowered = b.with_limits(
        limits(None, &[quota(QuotaKind::Requests, 50, Window::Day)]),
        MIDNIGHT,
    );
    assert_eq!(
        lowered.quotas[0].held, 0,
        "a lowered limit drops what is held"
    );
}

#[test]
fn a_budget_survives_its_binary_form_and_garbage_is_refused() {
    let rate = Rate {
        count: 600,
        per: RatePeriod::Minute,
        burst: 20,
    };
    let mut b = Budget::new(
        limits(
            Some(rate),
            &[
                quota(QuotaKind::Requests, 1000, Window::Day),
                quota(QuotaKind::Units, 5000, Window::Month),
            ],
        ),
        MIDNIGHT,
    );
    b.ask(&qid(QuotaKind::Requests), 1, [5; 16], MIDNIGHT);
    b.charge_after(10, 33, None, MIDNIGHT);
    let bytes = b.encode();
    assert_eq!(Budget::decode(&bytes), Some(b));
    assert_eq!(Budget::decode(&bytes[..bytes.len() - 1]), None);
    assert_eq!(Budget::decode(b"\x02"), None);
    assert_eq!(Budget::decode(&[]), None);
}

proptest! {
    /// Whatever the arrivals, a bucket of `count`/s and `burst` admits at
    /// most `count` x elapsed + `burst` requests.
    #[test]
    fn the_bucket_never_admits_more_than_its_rate_and_burst(
        count in 1u64..200, burst in 1u64..200,
        gaps in proptest::collection::vec(0u64..50, 1..400),
    ) {
        let rate = Rate { count, per: RatePeriod::Second, burst };
        let mut b = Budget::new(limits(Some(rate), &[]), 0);
        let (mut now, mut admitted) = (0u64, 0u64);
        for gap in gaps {
            now += gap;
            if b.admit(at(now), &Demand::bytes(0)) == Admission::Admit {
                admitted += 1;
            }
            prop_assert!(admitted * 1000 <= count * now + burst * 1000);
        }
    }

    /// Whatever the grants and the requests, the budget admits no more of
    /// a quota counted at admission than it was granted.
    #[test]
    fn a_budget_admits_no_more_than_it_was_granted(
        steps in proptest::collection::vec((0u64..20, 0u64..2000), 1..300),
    ) {
        let q = quota(QuotaKind::RequestBytes, 1 << 40, Window::Day);
        let mut b = Budget::new(limits(None, &[q]), MIDNIGHT);
        let (mut granted, mut admitted) = (0u64, 0u64);
        for (n, (grant, bytes)) in steps.into_iter().enumerate() {
            match b.admit(at(MIDNIGHT), &Demand::bytes(bytes)) {
                Admission::Admit => admitted += bytes,
                Admission::NeedGrant { need, .. } => {
                    let id = [n as u8; 16];
                    let ask = b.ask(&qid(QuotaKind::RequestBytes), need, id, MIDNIGHT).unwrap();
                    let amount = grant * 100;
                    b.apply_grant(&qid(QuotaKind::RequestBytes), &ask.id,
                                  &given(&ask.id, GrantStatus::Granted, amount, 0));
                    granted += amount;
                }
                other => prop_assert!(false, "{other:?}"),
            }
            prop_assert!(admitted <= granted);
            prop_assert_eq!(granted - admitted, b.quotas[0].held);
        }
    }
}

#[test]
fn a_request_asks_only_its_shortfall_and_what_is_held_serves_first() {
    let q = quota(QuotaKind::RequestBytes, 10_000, Window::Day);
    let now = MIDNIGHT;
    let mut b = Budget::new(limits(None, &[q]), now);
    b.quotas[0].window_end_ms = (MIDNIGHT + DAY_MS) as i64;
    b.quotas[0].held = 300;
    b.quotas[0].charged = 9_800;
    assert_eq!(
        b.admit(at(now), &Demand::bytes(400)),
        Admission::NeedGrant {
            quota: qid(QuotaKind::RequestBytes),
            need: 100
        },
        "400 bytes, 300 held: 100 more"
    );
    assert!(
        matches!(
            b.admit(at(now), &Demand::bytes(600)),
            Admission::QuotaExceeded { .. }
        ),
        "300 more than the 200 left to grant"
    );
    let ask = b
        .ask(&qid(QuotaKind::RequestBytes), 100, [3; 16], now)
        .unwrap();
    b.apply_grant(
        &qid(QuotaKind::RequestBytes),
        &ask.id,
        &given(&ask.id, GrantStatus::Exhausted, 0, 10_000),
    );
    assert_eq!(
        b.admit(at(now), &Demand::bytes(300)),
        Admission::Admit,
        "held serves after an exhausted ask"
    );
}

#[test]
fn answers_told_out_of_order_never_show_more_left_than_the_limit() {
    let requests = quota(QuotaKind::Requests, 200, Window::Day);
    let units = quota(QuotaKind::Units, 1000, Window::Day);
    let now = MIDNIGHT + 1000;
    let mut b = Budget::new(limits(None, &[requests, units]), now);
    // Two grants of 50, the later one answered first: it tells a
    // total of 100, the earlier one (arriving second) a total of 50.
    assert!(b.take_grant(
        &qid(QuotaKind::Requests),
        &given(&[1; 16], GrantStatus::Granted, 50, 100)
    ));
    assert!(b.take_grant(
        &qid(QuotaKind::Requests),
        &given(&[2; 16], GrantStatus::Granted, 50, 50)
    ));
    assert_eq!((b.quotas[0].held, b.quotas[0].charged), (100, 100));
    assert_eq!(b.quotas[0].remaining(), 200, "100 ungranted plus 100 held");
    // A settlement answered after a later one: its lower total is not taken.
    let mut settled = |id: [u8; 16], charged| {
        b.quotas[1].pending = Some(Pending {
            id,
            amount: 0,
            sent_ms: now,
        });
        let done = SettlementDone {
            settlement_id: tollgate_wire::to_hex(&id),
            status: GrantStatus::Granted,
            limit: 1000,
            charged,
            open: true,
            window_start_ms: MIDNIGHT as i64,
            window_end_ms: (MIDNIGHT + DAY_MS) as i64,
        };
        b.apply_settlement(&qid(QuotaKind::Units), &id, &done);
        b.quotas[1].charged
    };
    assert_eq!(settled([3; 16], 700), 700);
    assert_eq!(settled([4; 16], 400), 700, "an older total is not taken");
    let mut next_day = given(&[5; 16], GrantStatus::Granted, 5, 5);
    next_day.window_end_ms = (MIDNIGHT + 2 * DAY_MS) as i64;
    assert!(b.take_grant(&qid(QuotaKind::Requests), &next_day));
    assert_eq!(
        (b.quotas[0].held, b.quotas[0].charged),
        (5, 5),
        "a new window starts from what it tells"
    );
}

/// A key whose quotas are `quotas`, holding `held` of each (granted in
/// the day of `MIDNIGHT`).
fn holding(quotas: &[Quota], held: u64) -> Budget {
    let mut b = Budget::new(limits(None, quotas), MIDNIGHT);
    for state in &mut b.quotas {
        state.window_end_ms = (MIDNIGHT + DAY_MS) as i64;
        state.held = held;
        state.charged = held;
    }
    b
}

/// An LLM call of `model` with `input` bytes and output cap `output`.
fn call(model: &str, input: u64, output: u64) -> Demand<'_> {
    Demand {
        request_bytes: input,
        model: Some(model),
        tokens: TokenBound {
            input,
            output,
            cost: 0,
        },
    }
}

fn used(input_tokens: u64, output_tokens: u64) -> Used {
    Used {
        tokens: TokenUsage {
            input_tokens,
            output_tokens,
            ..TokenUsage::default()
        },
        cost: 0,
    }
}

#[test]
fn a_call_reserves_its_bound_and_settles_to_what_it_used() {
    let mut b = holding(
        &[
            quota(QuotaKind::Tokens, 10_000, Window::Day),
            quota(QuotaKind::OutputTokens, 10_000, Window::Day),
        ],
        1000,
    );
    let demand = call("m", 300, 200);
    assert_eq!(b.admit(at(MIDNIGHT), &demand), Admission::Admit);
    let reserved = b.reservations(&demand);
    assert_eq!(
        reserved.iter().map(|r| r.amount).collect::<Vec<_>>(),
        [500, 200]
    );
    assert_eq!((b.quotas[0].held, b.quotas[1].held), (500, 800));
    b.settle(&reserved, &used(40, 60), MIDNIGHT + 5);
    assert_eq!(
        (b.quotas[0].held, b.quotas[1].held),
        (900, 940),
        "the rest of each reservation is held again"
    );
}

#[test]
fn a_call_past_its_reservation_takes_from_what_is_held_then_owes() {
    let mut b = holding(&[quota(QuotaKind::Tokens, 10_000, Window::Day)], 600);
    let demand = call("m", 100, 100);
    assert_eq!(b.admit(at(MIDNIGHT), &demand), Admission::Admit);
    let reserved = b.reservations(&demand);
    b.settle(&reserved, &used(100, 700), MIDNIGHT);
    assert_eq!((b.quotas[0].held, b.quotas[0].owed), (0, 200));
    // The next call needs its charge and what is owed from a grant.
    assert_eq!(
        b.admit(at(MIDNIGHT), &call("m", 10, 10)),
        Admission::NeedGrant {
            quota: qid(QuotaKind::Tokens),
            need: 220
        }
    );
    let ask = b
        .ask(&qid(QuotaKind::Tokens), 220, [1; 16], MIDNIGHT)
        .unwrap();
    b.apply_grant(
        &qid(QuotaKind::Tokens),
        &ask.id,
        &given(&ask.id, GrantStatus::Granted, 250, 1050),
    );
    assert_eq!((b.quotas[0].held, b.quotas[0].owed), (50, 0), "paid first");
}

#[test]
fn a_reservation_above_the_limit_never_fits_and_waits_for_nothing() {
    let mut b = holding(&[quota(QuotaKind::Tokens, 500, Window::Day)], 0);
    assert_eq!(
        b.admit(at(MIDNIGHT), &call("m", 100, 450)),
        Admission::NeverFits {
            quota: qid(QuotaKind::Tokens),
            charge: 550,
            limit: 500
        }
    );
}

#[test]
fn a_scoped_quota_counts_only_its_model_and_other_calls_pass() {
    let mut scoped = quota(QuotaKind::Tokens, 1000, Window::Day);
    scoped.model = Some("a".into());
    let mut b = holding(&[scoped], 0);
    assert_eq!(
        b.admit(at(MIDNIGHT), &call("b", 100, 100)),
        Admission::Admit
    );
    assert_eq!(b.admit(at(MIDNIGHT), &Demand::bytes(5)), Admission::Admit);
    assert!(matches!(
        b.admit(at(MIDNIGHT), &call("a", 100, 100)),
        Admission::NeedGrant { quota, need: 200 } if quota.model.as_deref() == Some("a")
    ));
    assert!(b.reservations(&call("b", 1, 1)).is_empty());
}

#[test]
fn a_reservation_of_an_ended_window_lapses_with_its_grant() {
    let mut b = holding(&[quota(QuotaKind::Tokens, 10_000, Window::Day)], 1000);
    let demand = call("m", 100, 100);
    assert_eq!(b.admit(at(MIDNIGHT), &demand), Admission::Admit);
    let reserved = b.reservations(&demand);
    b.settle(&reserved, &used(1, 1), MIDNIGHT + DAY_MS + 1);
    assert_eq!(b.quotas[0].held, 0, "nothing comes back into the new day");
}

#[test]
fn a_scoped_token_budget_survives_its_binary_form() {
    let mut scoped = quota(QuotaKind::InputTokens, 1000, Window::Minute);
    scoped.model = Some("models/gemini-2.0-flash".into());
    let mut b = holding(&[quota(QuotaKind::Tokens, 9, Window::Hour), scoped], 7);
    b.quotas[0].owed = 3;
    let bytes = b.encode();
    assert_eq!(Budget::decode(&bytes), Some(b));
    assert_eq!(Budget::decode(&bytes[..bytes.len() - 1]), None);
}

proptest! {
    /// Whatever the calls, their caps and what they used, within what the
    /// grants brought: a quota is never charged past its grants while
    /// calls use no more than they reserved (held + in flight + used ==
    /// granted), a settlement never gives back more than was reserved,
    /// and what calls used past their reservations is held back or owed.
    #[test]
    fn reservations_never_charge_past_the_grants_and_settlements_never_give_back_more(
        grant in 0u64..5000,
        calls in proptest::collection::vec((1u64..400, 0u64..400, 0u64..600, 0u64..600), 1..60),
        overrun in proptest::bool::ANY,
    ) {
        let mut b = holding(&[quota(QuotaKind::Tokens, 1 << 40, Window::Day)], grant);
        let mut in_flight = Vec::new();
        let mut used_total = 0u64;
        for (n, (input, cap, used_in, used_out)) in calls.into_iter().enumerate() {
            let demand = call("m", input, cap);
            let before = b.quotas[0].held;
            if b.admit(at(MIDNIGHT), &demand) == Admission::Admit {
                let reserved = b.reservations(&demand);
                prop_assert_eq!(before - b.quotas[0].held, input + cap);
                in_flight.push((reserved, input, cap));
            }
            // Every other step, the oldest call ends.
            if n % 2 == 1 && !in_flight.is_empty() {
                let (reserved, input, cap) = in_flight.remove(0);
                let (u_in, u_out) = if overrun {
                    (used_in, used_out)
                } else {
                    (used_in.min(input), used_out.min(cap))
                };
                let held = b.quotas[0].held;
                b.settle(&reserved, &used(u_in, u_out), MIDNIGHT);
                let back = b.quotas[0].held.saturating_sub(held);
                prop_assert!(back <= input + cap, "gave back {} of {}", back, input + cap);
                used_total += u_in + u_out;
            }
            let state = &b.quotas[0];
            let reserved: u64 = in_flight.iter().map(|(_, i, c)| i + c).sum();
            prop_assert_eq!(
                state.held + reserved + used_total,
                grant + state.owed,
                "what was granted is held, reserved, used, or owed for"
            );
            if !overrun {
                prop_assert_eq!(state.owed, 0);
            }
        }
    }
}
