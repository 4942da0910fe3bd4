//! The key change feed and fleet `jti` claims over HTTP (internal token):
//! `GET /v1/internal/keys/changes?after=N&limit=M`, which every Envoy polls
//! about once a second, and `POST /v1/internal/jti/claim`. Also the
//! background purge of old changes (past the feed's retention) and of
//! claims whose tokens can no longer be accepted.

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tollgate_wire::{CHANGES_PATH, JTI_CLAIM_PATH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use tollgate_wire::{
    ChangesReply, ClaimReply, ClaimRequest, KeyChange, FINGERPRINT_HEX_LEN, MAX_CHANGES_PER_REPLY,
};

use crate::domain::clock::to_unix_ms;
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{InternalCaller, JsonBody};
use crate::http::metrics::Metrics;
use crate::http::panics::{catching, PanicSite};
use crate::http::AppState;
use crate::store::feed::FeedPage;
use crate::store::Store;

/// How long changes are kept by default: an Envoy whose cursor is older
/// (one cut off from every sidecar for longer) drops its whole cache.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(10);

/// `GET /v1/internal/keys/changes`: the changes after the caller's cursor.
pub async fn changes(
    _caller: InternalCaller,
    State(state): State<AppState>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ChangesReply>, ApiError> {
    let Query(pairs) = pairs.map_err(|rejection| ApiError::Invalid {
        field: None,
        message: rejection.body_text(),
    })?;
    let (after, limit) = poll_query(&pairs)?;
    let page = state
        .store
        .feed_page(after, limit)
        .await
        .map_err(ApiError::reading(Undone::ReadFeed))?;
    Ok(Json(reply(after, limit, page)))
}

/// `after` (required) and `limit` (default and most:
/// [`MAX_CHANGES_PER_REPLY`]) of a poll; anything else is refused naming it.
fn poll_query(pairs: &[(String, String)]) -> Result<(u64, usize), ApiError> {
    let mut after = None;
    let mut limit = MAX_CHANGES_PER_REPLY;
    for (name, value) in pairs {
        match name.as_str() {
            "after" => {
                let parsed = value.parse::<u64>().map_err(|_| {
                    ApiError::invalid_field("after", "after must be a feed cursor (an integer)")
                })?;
                if after.replace(parsed).is_some() {
                    return Err(ApiError::invalid_field("after", "after is given twice"));
                }
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_CHANGES_PER_REPLY).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "limit",
                            format!("limit must be 1 to {MAX_CHANGES_PER_REPLY}"),
                        )
                    })?;
            }
            _ => {
                return Err(ApiError::invalid_field(
                    name.clone(),
                    format!(
                        "unknown query parameter {name:?}; this endpoint takes after and limit"
                    ),
                ))
            }
        }
    }
    let after = after.ok_or_else(|| ApiError::invalid_field("after", "after is required"))?;
    Ok((after, limit))
}

/// What a reader at `after` is told, from a page read after it.
///
/// A reader standing before what was purged, or past the head (the
/// database was restored from a backup, or replaced), cannot be brought up
/// to date change by change: `reset`, and go on from the head.
pub fn reply(after: u64, limit: usize, page: FeedPage) -> ChangesReply {
    if after < page.purged_through || after > page.head {
        return ChangesReply {
            cursor: page.head,
            changes: Vec::new(),
            more: false,
            reset: true,
        };
    }
    let more =
        page.changes.len() >= limit && page.changes.last().is_some_and(|c| c.seq < page.head);
    let cursor = match page.changes.last() {
        Some(last) if more => last.seq,
        _ => page.head,
    };
    ChangesReply {
        cursor,
        changes: page
            .changes
            .into_iter()
            .map(|c| KeyChange {
                cursor: c.seq,
                key_hash: c.key_hash,
                kind: c.kind,
            })
            .collect(),
        more,
        reset: false,
    }
}

/// `POST /v1/internal/jti/claim`: `claimed: true` for the first use of a
/// `jti` anywhere in the fleet, false for a replay.
pub async fn claim(
    _caller: InternalCaller,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimReply>, ApiError> {
    let fingerprint = &request.fingerprint;
    let hex = fingerprint.len() == FINGERPRINT_HEX_LEN
        && fingerprint
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        return Err(ApiError::invalid_field(
            "fingerprint",
            format!("fingerprint must be {FINGERPRINT_HEX_LEN} lowercase hex digits"),
        ));
    }
    if request.key_id <= 0 {
        return Err(ApiError::invalid_field("key_id", "key_id must be a key id"));
    }
    let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
    let claimed = state
        .store
        .claim_jti(fingerprint, request.key_id, request.expires_at, now_s)
        .await
        .map_err(ApiError::storing)?;
    Ok(Json(ClaimReply { claimed }))
}

/// Purges, every [`PURGE_EVERY`], changes older than `retention` and
/// claims whose tokens expired, batch by batch. Runs until the process
/// stops; a failed round is logged and tried again next time, and so is a
/// round that panicked (counted in `metrics`), rather than ending the task.
pub async fn purge_forever(store: Store, retention: Duration, metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if catching(purge_once(&store, retention)).await.is_err() {
            metrics.record_panic(PanicSite::Purge);
            tracing::error!("a purge round panicked; the next round runs as usual");
        }
    }
}

/// One purge round: every batch that is due.
pub async fn purge_once(store: &Store, retention: Duration) {
    let now = to_unix_ms(time::OffsetDateTime::now_utc());
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    let before_ms = i64::try_from(now.saturating_sub(retention_ms)).unwrap_or(0);
    let now_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
    let history_ms = u64::try_from(crate::store::limits::LIMIT_HISTORY.as_millis()).unwrap_or(0);
    let history_before_ms = i64::try_from(now.saturating_sub(history_ms)).unwrap_or(0);
    purge_in_batches("old key changes", || store.purge_changes(before_ms)).await;
    purge_in_batches("expired jti claims", || store.purge_claims(now_s)).await;
    purge_in_batches("old quota counters and charges", || {
        store.purge_limit_history(history_before_ms)
    })
    .await;
}

/// Runs one purge statement after another while each deletes a full batch;
/// a failure is logged and left for the next round.
async fn purge_in_batches<F, Fut>(what: &str, mut batch: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::store::StoreError>>,
{
    let full = u64::try_from(crate::store::feed::PURGE_BATCH).unwrap_or(u64::MAX);
    loop {
        match batch().await {
            Ok(n) if n >= full => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot purge {what}");
                break;
            }
        }
    }
}

/// The key change feed and `jti` claims (internal token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(CHANGES_PATH, get(changes))
        .route(JTI_CLAIM_PATH, post(claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::feed::StoredChange;

    fn page(head: u64, purged_through: u64, seqs: &[u64]) -> FeedPage {
        FeedPage {
            head,
            purged_through,
            changes: seqs
                .iter()
                .map(|&seq| StoredChange {
                    seq,
                    key_hash: format!("{seq:064x}"),
                    kind: "revoked".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_reader_up_to_date_gets_the_head_and_nothing() {
        let r = reply(5, 10, page(5, 0, &[]));
        assert_eq!(
            (r.cursor, r.changes.len(), r.more, r.reset),
            (5, 0, false, false)
        );
    }

    #[test]
    fn a_full_page_says_more_and_stops_at_its_last_change() {
        let r = reply(0, 2, page(5, 0, &[1, 2]));
        assert_eq!((r.cursor, r.more), (2, true));
        let r = reply(3, 2, page(5, 0, &[4, 5]));
        assert_eq!((r.cursor, r.more), (5, false));
    }

    #[test]
    fn a_reader_before_the_purge_or_past_the_head_resets() {
        let r = reply(3, 10, page(9, 4, &[5]));
        assert!(r.reset && r.changes.is_empty());
        assert_eq!(r.cursor, 9);
        assert!(!reply(4, 10, page(9, 4, &[5])).reset);
        assert!(reply(10, 10, page(9, 0, &[])).reset);
    }

    #[test]
    fn polls_need_a_cursor_and_a_sane_limit() {
        let q = |pairs: &[(&str, &str)]| {
            poll_query(
                &pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(q(&[("after", "7")]).unwrap(), (7, MAX_CHANGES_PER_REPLY));
        assert_eq!(q(&[("after", "7"), ("limit", "3")]).unwrap(), (7, 3));
        for bad in [
            vec![],
            vec![("after", "-1")],
            vec![("after", "1"), ("limit", "0")],
            vec![("after", "1"), ("limit", "100000")],
            vec![("after", "1"), ("since", "1")],
        ] {
            assert!(q(&bad).is_err(), "{bad:?}");
        }
    }
}
