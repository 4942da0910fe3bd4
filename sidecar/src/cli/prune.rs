//! `tollgate usage prune`: deleting old `usage_log` detail rows in batches,
//! keeping the hourly and daily rollups, so summaries and the day and 30-day
//! series read the same before and after.

use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::clock::{check_accepted, format_rfc3339, parse_duration};
use crate::store::{Store, PRUNE_MAX_BATCH_ROWS};

/// The youngest rows a prune may delete: ingestion de-duplicates a record
/// against the detail rows and accepts records up to
/// `TOLLGATE_USAGE_MAX_SKEW` (24 h by default) old, so a retried batch must
/// still find its rows.
pub const MIN_AGE: Duration = Duration::from_secs(86_400);

/// Rows deleted per transaction unless told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Rows created before this instant (RFC 3339) were deleted.
    pub before: String,
    pub deleted: u64,
}

/// The instant before which rows go, from `--older-than` (`90d`) at `now`;
/// the error says what is wrong with the input.
pub fn cutoff(older_than: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let age = parse_duration(older_than).map_err(|e| format!("--older-than: {e}"))?;
    if age < MIN_AGE {
        return Err(format!(
            "--older-than {older_than} is too young: at least 1d, since records up to \
             TOLLGATE_USAGE_MAX_SKEW (24h by default) old are still accepted and \
             de-duplicated against these rows"
        ));
    }
    let too_far = |why: String| format!("--older-than {older_than} reaches back too far{why}");
    let before = time::Duration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .ok_or_else(|| too_far(String::new()))?;
    check_accepted(before).map_err(|e| too_far(format!(": {e}")))
}

/// Checks `--batch-size`.
pub fn batch_rows(requested: usize) -> Result<usize, String> {
    if (1..=PRUNE_MAX_BATCH_ROWS).contains(&requested) {
        Ok(requested)
    } else {
        Err(format!(
            "--batch-size must be from 1 to {PRUNE_MAX_BATCH_ROWS}, not {requested}"
        ))
    }
}

/// Deletes the rows created before `before`, `batch` at a time, telling
/// standard error how far it got every few seconds.
pub async fn prune(
    store: &Store,
    before: OffsetDateTime,
    batch: usize,
) -> Result<PruneReport, String> {
    let mut told = Instant::now();
    let deleted = store
        .prune_usage(before, batch, |so_far| {
            if told.elapsed() >= Duration::from_secs(5) {
                eprintln!("deleted {so_far} usage rows so far");
                told = Instant::now();
            }
            std::future::ready(())
        })
        .await
        .map_err(|e| format!("pruning stopped: {e}; rows deleted so far are gone, run it again"))?;
    Ok(PruneReport {
        before: format_rfc3339(before),
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_cutoff_is_now_less_the_age_of_at_least_a_day() {
        let now = datetime!(2026-12-02 03:00:00 UTC);
        assert_eq!(cutoff("90d", now), Ok(datetime!(2026-09-03 03:00:00 UTC)));
        assert_eq!(cutoff("24h", now), Ok(datetime!(2026-12-01 03:00:00 UTC)));
        for (bad, says) in [
            ("23h", "at least 1d"),
            ("0d", "at least 1d"),
            ("90", "no unit"),
            ("ninety days", "start with a number"),
            ("-5d", "start with a number"),
            ("90w", "unknown unit"),
            ("99999999999999d", "too"),
            ("30000d", "out of range"),
        ] {
            let err = cutoff(bad, now).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.starts_with("--older-than"), "{bad}: {err}");
        }
    }

    #[test]
    fn batches_are_bounded() {
        assert_eq!(batch_rows(1), Ok(1));
        assert_eq!(batch_rows(PRUNE_MAX_BATCH_ROWS), Ok(PRUNE_MAX_BATCH_ROWS));
        assert!(batch_rows(0).is_err());
        assert!(batch_rows(PRUNE_MAX_BATCH_ROWS + 1).is_err());
    }
}
