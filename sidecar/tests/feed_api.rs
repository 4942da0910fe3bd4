//! The key change feed and the fleet's `jti` claims over the sidecar's
//! internal API, against SQLite and MySQL alike (see http_api.rs for how
//! each test runs twice).

#[macro_use]
mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use support::*;
use tollgate_wire::{changes_query, CHANGES_PATH, INTERNAL_TOKEN_HEADER, JTI_CLAIM_PATH};

on_both_backends!(
    the_feed_carries_creations_and_revocations_in_order,
    a_verdict_names_the_feed_position_it_was_read_at,
    readers_behind_the_purge_or_past_the_head_reset,
    polls_need_the_internal_token_and_a_cursor,
    a_jti_is_claimed_once_until_it_expires,
    racing_claims_of_one_jti_have_one_winner,
    bad_claims_are_refused_naming_the_field,
);

async fn poll(h: &Harness, query: &str) -> Reply {
    h.send(
        Request::get(query)
            .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

async fn changes_after(h: &Harness, after: u64) -> Value {
    let reply = poll(h, &changes_query(after, 500)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

async fn create(h: &Harness, name: &str) -> Value {
    let reply = h
        .admin(Method::POST, "/v1/keys", Some(json!({ "name": name })))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

async fn revoke(h: &Harness, id: i64) {
    let reply = h
        .admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

async fn the_feed_carries_creations_and_revocations_in_order(backend: Backend) {
    let h = Harness::new(backend).await;
    let start = changes_after(&h, 0).await;
    assert_eq!(
        start,
        json!({"cursor": 0, "changes": [], "more": false, "reset": false})
    );
    let a = create(&h, "a").await;
    let b = create(&h, "b").await;
    revoke(&h, a["id"].as_i64().unwrap()).await;
    // Revoking again changes nothing, so it publishes nothing.
    revoke(&h, a["id"].as_i64().unwrap()).await;
    let feed = changes_after(&h, 0).await;
    let hash_a = hash_key(a["key"].as_str().unwrap());
    let hash_b = hash_key(b["key"].as_str().unwrap());
    assert_eq!(
        feed["changes"],
        json!([
            {"cursor": 1, "key_hash": hash_a, "kind": "created"},
            {"cursor": 2, "key_hash": hash_b, "kind": "created"},
            {"cursor": 3, "key_hash": hash_a, "kind": "revoked"},
        ])
    );
    assert_eq!(feed["cursor"], 3);
    let rest = changes_after(&h, 2).await;
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1);
    let page = poll(&h, &changes_query(0, 2)).await.json();
    assert_eq!(
        (page["cursor"].as_u64(), page["more"].as_bool()),
        (Some(2), Some(true))
    );
}

async fn a_verdict_names_the_feed_position_it_was_read_at(backend: Backend) {
    let h = Harness::new(backend).await;
    let unknown = h
        .verify(&hash_key("tg_not_registered_anywhere_0000"))
        .await
        .json();
    assert_eq!(
        (unknown["verdict"].as_str(), unknown["feed_cursor"].as_u64()),
        (Some("not_found"), Some(0))
    );
    let a = create(&h, "a").await;
    let hash_a = hash_key(a["key"].as_str().unwrap());
    let active = h.verify(&hash_a).await.json();
    assert_eq!(
        (active["verdict"].as_str(), active["feed_cursor"].as_u64()),
        (Some("active"), Some(1))
    );
    revoke(&h, a["id"].as_i64().unwrap()).await;
    let revoked = h.verify(&hash_a).await.json();
    assert_eq!(
        (revoked["verdict"].as_str(), revoked["feed_cursor"].as_u64()),
        (Some("revoked"), Some(2))
    );
}

async fn readers_behind_the_purge_or_past_the_head_reset(backend: Backend) {
    let h = Harness::new(backend).await;
    for name in ["a", "b", "c"] {
        create(&h, name).await;
    }
    let far_future = i64::MAX / 2;
    assert_eq!(h.state.store.purge_changes(far_future).await.unwrap(), 3);
    let behind = changes_after(&h, 1).await;
    assert_eq!(
        behind,
        json!({"cursor": 3, "changes": [], "more": false, "reset": true})
    );
    let current = changes_after(&h, 3).await;
    assert_eq!(current["reset"], false);
    let ahead = changes_after(&h, 9).await;
    assert_eq!(
        (ahead["reset"].as_bool(), ahead["cursor"].as_u64()),
        (Some(true), Some(3))
    );
    // New changes after the purge are served to readers at the head.
    create(&h, "d").await;
    assert_eq!(changes_after(&h, 3).await["changes"][0]["cursor"], 4);
}

async fn polls_need_the_internal_token_and_a_cursor(backend: Backend) {
    let h = Harness::new(backend).await;
    let anonymous = h.get(&changes_query(0, 10)).await;
    anonymous.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    for (query, field) in [
        (CHANGES_PATH.to_string(), "after"),
        (format!("{CHANGES_PATH}?after=x"), "after"),
        (format!("{CHANGES_PATH}?after=1&limit=0"), "limit"),
        (format!("{CHANGES_PATH}?after=1&limit=501"), "limit"),
        (format!("{CHANGES_PATH}?after=1&since=2"), "since"),
    ] {
        let body = poll(&h, &query)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(body["field"], field, "{query}");
    }
}

async fn claim(h: &Harness, fingerprint: &str, expires_at: i64) -> Reply {
    let body = json!({"fingerprint": fingerprint, "expires_at": expires_at, "key_id": 1});
    h.internal(JTI_CLAIM_PATH, body.to_string()).await
}

fn now_s() -> i64 {
    i64::try_from(now_ms() / 1000).unwrap()
}

async fn a_jti_is_claimed_once_until_it_expires(backend: Backend) {
    let h = Harness::new(backend).await;
    let live = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        claim(&h, live, now_s() + 60).await.json(),
        json!({"claimed": true})
    );
    assert_eq!(
        claim(&h, live, now_s() + 60).await.json(),
        json!({"claimed": false})
    );
    // A claim past its token's life (not purged yet) is taken over.
    let old = "fedcba9876543210fedcba9876543210";
    assert_eq!(claim(&h, old, now_s() - 5).await.json()["claimed"], true);
    assert_eq!(claim(&h, old, now_s() + 60).await.json()["claimed"], true);
    assert_eq!(claim(&h, old, now_s() + 60).await.json()["claimed"], false);
    // The purge removes only expired claims.
    let gone = "00000000000000000000000000000001";
    claim(&h, gone, now_s() - 5).await;
    assert_eq!(h.state.store.purge_claims(now_s()).await.unwrap(), 1);
    assert_eq!(claim(&h, live, now_s() + 60).await.json()["claimed"], false);
}

async fn racing_claims_of_one_jti_have_one_winner(backend: Backend) {
    let h = Harness::new(backend).await;
    for round in 0..20 {
        let fingerprint = format!("{round:032x}");
        let (a, b) = tokio::join!(
            claim(&h, &fingerprint, now_s() + 60),
            claim(&h, &fingerprint, now_s() + 60)
        );
        let won: Vec<bool> = [a, b]
            .iter()
            .map(|r| r.json()["claimed"].as_bool().unwrap())
            .collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
    }
}

async fn bad_claims_are_refused_naming_the_field(backend: Backend) {
    let h = Harness::new(backend).await;
    // Without the internal token (none, or a wrong one), a claim is refused
    // before it is read, and claims nothing.
    let fingerprint = "00112233445566778899aabbccddeeff";
    let good = json!({"fingerprint": fingerprint, "expires_at": now_s() + 60, "key_id": 1});
    for token in [None, Some("not-the-internal-token")] {
        let mut request = Request::post(JTI_CLAIM_PATH).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header(INTERNAL_TOKEN_HEADER, token);
        }
        let reply = h
            .send(request.body(Body::from(good.to_string())).unwrap())
            .await;
        reply.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(
        claim(&h, fingerprint, now_s() + 60).await.json(),
        json!({"claimed": true}),
        "a refused claim took the jti"
    );
    for (body, field) in [
        (
            json!({"fingerprint": "ABC", "expires_at": 1, "key_id": 1}),
            "fingerprint",
        ),
        (
            json!({"fingerprint": "0123456789ABCDEF0123456789ABCDEF", "expires_at": 1, "key_id": 1}),
            "fingerprint",
        ),
        (
            json!({"fingerprint": "0123456789abcdef0123456789abcdef", "expires_at": 1, "key_id": 0}),
            "key_id",
        ),
    ] {
        let reply = h.internal(JTI_CLAIM_PATH, body.to_string()).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field);
    }
}
