//! What the ledger says a key used of one of its quotas in one window: the
//! `allowed` rows the quota applies to (those of its model when scoped),
//! summed in the buckets that tile the window. A team's use is the sum of
//! its current keys'. `usage reconcile`, the budget alerts and the
//! console's budget bars read a quota's use here, so they always agree.

use time::OffsetDateTime;
use tollgate_wire::{Outcome, Quota, QuotaKind, Window};

use super::rollup::Grain;
use super::{SeriesRow, Store, StoreError};
use crate::domain::clock::from_unix_ms;

/// The instant of a window's bound (Unix ms, as `Window::containing`
/// gives it); the epoch for a bound out of the stores' range.
pub fn instant(ms: i64) -> OffsetDateTime {
    from_unix_ms(u64::try_from(ms).unwrap_or(0)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The buckets that tile a window exactly: a minute's from `usage_log`
/// (no rollup keeps minutes), an hour's or a day's rollup row, a month's
/// days.
pub fn grain_of(window: Window) -> Grain {
    match window {
        Window::Minute => Grain::Minute,
        Window::Hour => Grain::Hour,
        Window::Day | Window::Month => Grain::Day,
    }
}

/// The ledger's total of `quota` for a key in its window `[start, end)`:
/// the `allowed` rows it applies to (those of its model, when scoped).
pub async fn ledger_total(
    store: &Store,
    key_id: i64,
    quota: &Quota,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<u128, StoreError> {
    let rows = store
        .usage_series(key_id, grain_of(quota.window), start, end)
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.outcome == Outcome::Allowed.as_str())
        .filter(|r| quota.applies_to((!r.model.is_empty()).then_some(r.model.as_str())))
        .map(|r| amount(quota.kind, r))
        .sum())
}

/// The ledger's total of a team's `quota` in `[start, end)`: the sum of
/// [`ledger_total`] over the keys it holds now (`key_ids`), so a key that
/// joined or left it mid-window counts wholly or not at all.
pub async fn team_ledger_total(
    store: &Store,
    key_ids: &[i64],
    quota: &Quota,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<u128, StoreError> {
    let mut total = 0;
    for &key_id in key_ids {
        total += ledger_total(store, key_id, quota, start, end).await?;
    }
    Ok(total)
}

/// What one row of the ledger counts of `kind`.
fn amount(kind: QuotaKind, row: &SeriesRow) -> u128 {
    let count = |n: i64| u128::try_from(n).unwrap_or(0);
    let tokens = &row.tokens;
    match kind {
        QuotaKind::Requests => count(row.requests),
        QuotaKind::RequestBytes => row.request_bytes,
        QuotaKind::ResponseBytes => row.response_bytes,
        QuotaKind::Units => row.units,
        QuotaKind::Tokens => count(tokens.input_tokens) + count(tokens.output_tokens),
        QuotaKind::InputTokens => count(tokens.input_tokens),
        QuotaKind::OutputTokens => count(tokens.output_tokens),
        QuotaKind::Cost => row.cost_micros,
    }
}
