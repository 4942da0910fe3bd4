//! A key's budgets now (`GET /v1/keys/{id}/budgets`), on SQLite and MySQL
//! alike: per quota, the counter's charge beside the ledger's use, what is
//! reserved and left; the same through the console's allow-listed route,
//! and its changing a key's limits with the session's CSRF token. A team's
//! (`GET /v1/teams/{id}/budgets`): its own counters, its current keys'
//! ledger rows summed; the console's team routes.

#[macro_use]
mod support;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use support::console::*;
use support::*;
use tollgate_wire::GRANTS_PATH;

on_both_backends!(
    budgets_show_charged_used_reserved_and_left,
    the_console_reads_budgets_and_changes_limits,
    a_teams_budgets_are_its_counters_and_its_keys_use,
    the_console_manages_teams_through_the_admin_api,
);

async fn create(h: &Harness, body: Value) -> i64 {
    let reply = h.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

/// One grant call through the internal API; its answer.
async fn grants(h: &Harness, request: Value) -> Value {
    let reply = h.internal(GRANTS_PATH, request.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

fn budget<'a>(reply: &'a Value, quota: &str) -> &'a Value {
    reply["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["quota"] == quota)
        .unwrap_or_else(|| panic!("no budget {quota} in {reply}"))
}

async fn budgets_show_charged_used_reserved_and_left(backend: Backend) {
    let h = Harness::new(backend).await;
    let key_id = create(
        &h,
        json!({"name": "budgeted", "quotas": ["requests=10/day", "units=100/hour"]}),
    )
    .await;
    let fresh = h
        .admin(Method::GET, &format!("/v1/keys/{key_id}/budgets"), None)
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text());
    let fresh = fresh.json();
    assert_eq!(fresh["key_id"], key_id);
    let requests = budget(&fresh, "requests");
    for (field, value) in [
        ("limit", 10),
        ("charged", 0),
        ("used", 0),
        ("reserved", 0),
        ("left", 10),
    ] {
        assert_eq!(requests[field], value, "{field}: {requests}");
    }
    assert_eq!(requests["kind"], "requests");
    assert_eq!(requests["window"], "day");
    assert!(requests["window_start"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000Z"));

    // An Envoy takes a grant of requests, two of them reach the ledger; two
    // records' units (6 each) are settled after the fact.
    let given = grants(
        &h,
        json!({"asks": [{"grant_id": format!("{:032x}", 1), "key_id": key_id,
                         "quota": "requests", "need": 4, "recent_use": 0}]}),
    )
    .await;
    let granted = given["grants"][0]["charged"].as_u64().unwrap();
    assert!(granted >= 4, "{given}");
    let reply = h
        .ingest(&json!([record("b1", key_id), record("b2", key_id)]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    grants(
        &h,
        json!({"settlements": [{"settlement_id": format!("{:032x}", 2), "key_id": key_id,
                                "quota": "units", "amount": 12}]}),
    )
    .await;

    let now = h
        .admin(Method::GET, &format!("/v1/keys/{key_id}/budgets"), None)
        .await
        .json();
    let requests = budget(&now, "requests");
    assert_eq!(requests["charged"], granted);
    assert_eq!(requests["used"], 2);
    assert_eq!(requests["reserved"], granted - 2);
    assert_eq!(requests["left"], 10 - granted);
    let units = budget(&now, "units");
    assert_eq!(
        (
            &units["charged"],
            &units["used"],
            &units["reserved"],
            &units["left"]
        ),
        (&json!(12), &json!(12), &json!(0), &json!(88)),
        "{units}"
    );
    // The same use as `usage reconcile` reads.
    let at = sidecar::domain::clock::now_ms();
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, Some(key_id), None, at)
        .await
        .unwrap();
    assert_eq!(rows[0].ledger, 2);
    assert_eq!(rows[0].charged, granted as i64);

    // Refusals name what is wrong.
    h.admin(Method::GET, "/v1/keys/999/budgets", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "key_not_found");
    let bad = h.admin(Method::GET, "/v1/keys/x/budgets", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["field"], "id");
    let anonymous = h.get(&format!("/v1/keys/{key_id}/budgets")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // A key without quotas has no budget.
    let plain = create(&h, json!({"name": "plain"})).await;
    let none = h
        .admin(Method::GET, &format!("/v1/keys/{plain}/budgets"), None)
        .await
        .json();
    assert_eq!(none["budgets"], json!([]));
}

async fn the_console_reads_budgets_and_changes_limits(backend: Backend) {
    let h = Harness::new(backend).await;
    let key_id = create(
        &h,
        json!({"name": "console", "quotas": ["requests=5/hour"]}),
    )
    .await;
    let (cookie, csrf) = logged_in(&h).await;
    let path = format!("/console/api/keys/{key_id}/budgets");
    let through = read(&h, &path, &cookie).await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    let direct = h
        .admin(Method::GET, &path.replace("/console/api", "/v1"), None)
        .await;
    let (mut a, mut b) = (through.json(), direct.json());
    a["at"] = json!(null);
    b["at"] = json!(null);
    assert_eq!(a, b, "the console shows the admin API's answer");
    get(&h, &path)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "session_required");

    // Changing limits is an action: without the CSRF token nothing changes.
    let limits = format!("/console/api/keys/{key_id}/limits");
    let body = json!({"rate": "5/s", "quotas": ["tokens=100k/day@gpt-4o"]});
    let put = |csrf: Option<String>, body: Value| {
        let cookie = cookie.clone();
        let limits = limits.clone();
        let h = &h;
        async move {
            h.send(request(
                Method::PUT,
                &limits,
                Some(&cookie),
                csrf.as_deref(),
                Some(ORIGIN),
                Some(body),
            ))
            .await
        }
    };
    put(None, body.clone())
        .await
        .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let bad = put(Some(csrf.clone()), json!({"quotas": ["requests=lots/day"]})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    assert_eq!(bad.json()["error"]["field"], "quota");
    let keys = read(&h, "/console/api/keys", &cookie).await.json();
    assert_eq!(
        keys["keys"][0]["limits"]["quotas"][0]["kind"], "requests",
        "a refused change changed nothing"
    );
    let done = put(Some(csrf), body).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["limits"]["rate"]["count"], 5);
    let now = read(&h, &path, &cookie).await.json();
    assert_eq!(budget(&now, "tokens@gpt-4o")["limit"], 100_000);
    assert_eq!(budget(&now, "tokens@gpt-4o")["model"], "gpt-4o");
}

async fn create_team(h: &Harness, body: Value) -> i64 {
    let reply = h.admin(Method::POST, "/v1/teams", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

async fn team_budgets(h: &Harness, team_id: i64) -> Value {
    let reply = h
        .admin(Method::GET, &format!("/v1/teams/{team_id}/budgets"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

async fn a_teams_budgets_are_its_counters_and_its_keys_use(backend: Backend) {
    let h = Harness::new(backend).await;
    let team_id = create_team(
        &h,
        json!({"name": "research", "quotas": ["requests=10/day", "units=100/hour"]}),
    )
    .await;
    let a = create(
        &h,
        json!({"name": "a", "team_id": team_id, "quotas": ["requests=50/day"]}),
    )
    .await;
    let b = create(&h, json!({"name": "b", "team_id": team_id})).await;
    let outsider = create(&h, json!({"name": "outsider"})).await;

    let fresh = team_budgets(&h, team_id).await;
    assert_eq!(fresh["team_id"], team_id);
    assert_eq!(fresh["key_ids"], json!([a, b]));
    let requests = budget(&fresh, "requests");
    for (field, value) in [
        ("limit", 10),
        ("charged", 0),
        ("used", 0),
        ("reserved", 0),
        ("left", 10),
    ] {
        assert_eq!(requests[field], value, "{field}: {requests}");
    }
    assert_eq!(requests["window"], "day");

    // An Envoy takes a grant of the team's requests; one call of each of its
    // keys and one of another key reach the ledger; the team's units (6 a
    // record) are settled after the fact.
    let given = grants(
        &h,
        json!({"asks": [{"grant_id": format!("{:032x}", 1), "key_id": 0, "team_id": team_id,
                         "quota": "requests", "need": 4, "recent_use": 0}]}),
    )
    .await;
    let granted = given["grants"][0]["charged"].as_u64().unwrap();
    assert!(granted >= 4, "{given}");
    let reply = h
        .ingest(&json!([
            record("t1", a),
            record("t2", b),
            record("t3", outsider)
        ]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    grants(
        &h,
        json!({"settlements": [{"settlement_id": format!("{:032x}", 2), "key_id": 0,
                                "team_id": team_id, "quota": "units", "amount": 12}]}),
    )
    .await;

    let now = team_budgets(&h, team_id).await;
    let requests = budget(&now, "requests");
    assert_eq!(requests["charged"], granted);
    assert_eq!(requests["used"], 2, "its keys' rows, not the outsider's");
    assert_eq!(requests["reserved"], granted - 2);
    assert_eq!(requests["left"], 10 - granted);
    let units = budget(&now, "units");
    assert_eq!(
        (
            &units["charged"],
            &units["used"],
            &units["reserved"],
            &units["left"]
        ),
        (&json!(12), &json!(12), &json!(0), &json!(88)),
        "{units}"
    );
    // A key's own counter is not its team's: key a was charged nothing.
    let own = h
        .admin(Method::GET, &format!("/v1/keys/{a}/budgets"), None)
        .await
        .json();
    assert_eq!(budget(&own, "requests")["charged"], 0);
    assert_eq!(budget(&own, "requests")["used"], 1);
    // The same use as `usage reconcile` reads for the team.
    let at = sidecar::domain::clock::now_ms();
    let rows = sidecar::cli::reconcile::reconcile(&h.db.store, None, None, at)
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.team_id == Some(team_id) && r.quota == "requests")
        .expect("the team's row");
    assert_eq!(row.ledger, 2);
    assert_eq!(row.charged, granted as i64);

    // The use is that of the keys the team holds now.
    let moved = h
        .admin(
            Method::PUT,
            &format!("/v1/keys/{b}/team"),
            Some(json!({"team_id": null})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text());
    let after = team_budgets(&h, team_id).await;
    assert_eq!(after["key_ids"], json!([a]));
    assert_eq!(budget(&after, "requests")["used"], 1);
    assert_eq!(budget(&after, "requests")["charged"], granted);

    // Refusals name what is wrong; a team without quotas has no budget.
    h.admin(Method::GET, "/v1/teams/999/budgets", None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "team_not_found");
    let bad = h.admin(Method::GET, "/v1/teams/x/budgets", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["field"], "id");
    let anonymous = h.get(&format!("/v1/teams/{team_id}/budgets")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let plain = create_team(&h, json!({"name": "plain"})).await;
    assert_eq!(team_budgets(&h, plain).await["budgets"], json!([]));
}

async fn the_console_manages_teams_through_the_admin_api(backend: Backend) {
    let h = Harness::new(backend).await;
    let (cookie, csrf) = logged_in(&h).await;
    let send = |method: Method, path: &str, csrf: Option<&str>, body: Option<Value>| {
        h.send(request(
            method,
            path,
            Some(&cookie),
            csrf,
            Some(ORIGIN),
            body,
        ))
    };
    let body = json!({"name": "ops", "quotas": ["requests=5/hour"]});

    // Creating is an action: without the CSRF token nothing is stored.
    send(Method::POST, "/console/api/teams", None, Some(body.clone()))
        .await
        .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let bad = send(
        Method::POST,
        "/console/api/teams",
        Some(&csrf),
        Some(json!({"name": "bad", "quotas": ["requests=lots/day"]})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    assert_eq!(bad.json()["error"]["field"], "quota");
    let teams = read(&h, "/console/api/teams", &cookie).await.json();
    assert_eq!(teams["teams"], json!([]), "a refused team was stored");
    let made = send(Method::POST, "/console/api/teams", Some(&csrf), Some(body)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let team_id = made.json()["id"].as_i64().unwrap();

    // Its budgets read as the admin API answers them.
    let path = format!("/console/api/teams/{team_id}/budgets");
    let (mut through, mut direct) = (
        read(&h, &path, &cookie).await.json(),
        team_budgets(&h, team_id).await,
    );
    through["at"] = json!(null);
    direct["at"] = json!(null);
    assert_eq!(through, direct, "the console shows the admin API's answer");
    get(&h, &path)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "session_required");

    // A key created into it, its limits changed, a key moved out; a team
    // with keys is not deleted.
    let key = send(
        Method::POST,
        "/console/api/keys",
        Some(&csrf),
        Some(json!({"name": "k", "team_id": team_id})),
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text());
    let key_id = key.json()["id"].as_i64().unwrap();
    let limits = format!("/console/api/teams/{team_id}/limits");
    let changed = send(
        Method::PUT,
        &limits,
        Some(&csrf),
        Some(json!({"quotas": ["requests=7/hour"]})),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json()["limits"]["quotas"][0]["limit"], 7);
    let team_path = format!("/console/api/teams/{team_id}");
    send(Method::DELETE, &team_path, None, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let refused = send(Method::DELETE, &team_path, Some(&csrf), None).await;
    refused.expect_error(StatusCode::CONFLICT, "team_has_keys");
    let move_path = format!("/console/api/keys/{key_id}/team");
    send(
        Method::PUT,
        &move_path,
        None,
        Some(json!({"team_id": null})),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "csrf_refused");
    let out = send(
        Method::PUT,
        &move_path,
        Some(&csrf),
        Some(json!({"team_id": null})),
    )
    .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text());
    assert_eq!(out.json()["team_id"], Value::Null);
    let deleted = send(Method::DELETE, &team_path, Some(&csrf), None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    let teams = read(&h, "/console/api/teams", &cookie).await.json();
    assert_eq!(teams["teams"], json!([]));
}
