//! Budget alerts on both databases, delivered to a real HTTP receiver on
//! 127.0.0.1 that checks every signature with a verifier of its own (an
//! HMAC-SHA256 written here from SHA-256, not the sidecar's): each threshold
//! arrives once, two sidecars racing send each event once, a receiver that
//! fails three times still gets it, and after the last attempt the event is
//! failed and listed. Bad alerts are refused naming the field. A team's
//! alert watches the team's budget, its use the sum of its keys'; a team is
//! not deleted while an alert watches it; alerts stored before migration
//! 0012 stay the keys'.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sidecar::alerts::{deliver_once, Checker, DeliveryPolicy};
use sidecar::domain::sealed::Keyring;
use sidecar::store::{DatabaseTarget, Store};
use support::{keyring, now_ms, record, Backend, Harness, TestDb};
use tollgate_wire::BudgetOwner;

on_both_backends!(
    each_threshold_arrives_once_signed,
    two_sidecars_racing_deliver_each_event_once,
    a_receiver_failing_three_times_still_gets_the_event,
    after_the_last_attempt_the_event_is_failed_and_listed,
    a_lease_left_by_a_dead_sender_runs_out_and_the_event_is_sent,
    a_secret_from_the_environment_signs_and_is_never_stored,
    bad_alerts_are_refused_naming_the_field,
    an_https_receiver_gets_the_event_over_tls,
    a_teams_two_keys_together_cross_each_threshold_once,
    team_alerts_are_added_listed_and_refused_naming_the_field,
    a_team_with_alerts_is_not_deleted,
    alerts_stored_before_team_alerts_stay_the_keys,
);

/// HMAC-SHA256 from the definition (RFC 2104) over `tollgate_wire::sha256`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&tollgate_wire::sha256(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let mut inner = pad(0x36);
    inner.extend_from_slice(message);
    let mut outer = pad(0x5c);
    outer.extend_from_slice(&tollgate_wire::sha256(&inner));
    tollgate_wire::sha256(&outer).to_vec()
}

/// Whether the headers sign `body` under `secret` (`whsec_<base64>`), per
/// Standard Webhooks: one of the space-separated `v1,<base64>` signatures
/// is HMAC-SHA256 of `id.timestamp.body`, and the timestamp is recent.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("no {name}"))
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let ts: i64 = timestamp.parse().map_err(|_| "bad timestamp")?;
    if (ts - (now_ms() / 1000) as i64).abs() > 300 {
        return Err(format!("timestamp {ts} is not recent"));
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("no whsec_")?)
        .map_err(|_| "secret not base64")?;
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &signed)));
    if signatures.split(' ').any(|s| s == expected) {
        Ok(id)
    } else {
        Err(format!("signature {signatures} is not {expected}"))
    }
}

/// What the receiver got and how it answers.
#[derive(Default)]
struct Inbox {
    secret: String,
    /// Answer 500 to this many requests first (`u32::MAX`: always).
    fail_first: u32,
    /// How long each answer waits (so racing senders overlap).
    delay: Duration,
    requests: u32,
    /// Every accepted event, in order of arrival: (webhook-id, body).
    accepted: Vec<(String, Value)>,
    /// Requests whose signature did not verify.
    forged: Vec<String>,
}

type Shared = Arc<Mutex<Inbox>>;

async fn receive(State(inbox): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = inbox.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut inbox = inbox.lock().unwrap();
    inbox.requests += 1;
    let id = match verify(&inbox.secret, &headers, &body) {
        Ok(id) => id,
        Err(why) => {
            inbox.forged.push(why);
            return StatusCode::BAD_REQUEST;
        }
    };
    if inbox.requests <= inbox.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let body: Value = serde_json::from_slice(&body).expect("JSON body");
    inbox.accepted.push((id, body));
    StatusCode::NO_CONTENT
}

/// A receiver on 127.0.0.1:0; its URL and what it got.
async fn receiver() -> (String, Shared) {
    let inbox: Shared = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), inbox)
}

/// Retries a few milliseconds apart, so tests take well under a second.
fn fast(max_attempts: u32) -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts,
        first_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        batch: 32,
    }
}

/// A key with `quotas`; its id.
async fn key_with(h: &Harness, quotas: &[&str]) -> i64 {
    let reply = h
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "budgeted", "quotas": quotas})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

/// Adds an alert over the admin API; the answer.
async fn add_alert(h: &Harness, body: Value) -> Value {
    let reply = h.admin(Method::POST, "/v1/alerts", Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

/// Stores `n` allowed requests of the key, 100 request bytes each.
async fn spend(h: &Harness, key: i64, n: usize) {
    let records: Vec<Value> = (0..n)
        .map(|_| record(&format!("req-{}", uuid_like()), key))
        .collect();
    let reply = h.ingest(&Value::Array(records)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

fn uuid_like() -> String {
    sidecar::domain::random::random_hex(16).unwrap()
}

/// Sends until nothing is pending (or `rounds` rounds have passed).
async fn deliver_all(store: &Store, keyring: &Keyring, policy: &DeliveryPolicy, rounds: u32) {
    for _ in 0..rounds {
        deliver_once(store, keyring, policy).await.unwrap();
        let pending = store.alert_events(Some("pending")).await.unwrap();
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("events still pending after {rounds} rounds");
}

fn now() -> i64 {
    now_ms() as i64
}

async fn each_threshold_arrives_once_signed(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=10/day", "request_bytes=100000/day"]).await;
    let created = add_alert(
        &h,
        json!({"key_id": key, "thresholds": [100, 50, 80], "url": url}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["thresholds"], json!([50, 80, 100]));
    inbox.lock().unwrap().secret = secret.clone();
    // The generated secret is stored sealed, never in the clear.
    let values = support::dump_every_value(&h.db.store).await;
    assert!(!support::appears_in(&values, &secret));
    assert!(!support::appears_in(&values, &secret["whsec_".len()..]));

    let keyring = keyring(7);
    let policy = fast(6);
    // Two checkers (two sidecars) on their own pools, every round.
    let other = h.db.observer().await;
    let (mut one, mut two) = (Checker::default(), Checker::default());
    macro_rules! check {
        () => {{
            let a = one.check_once(&h.db.store, now()).await.unwrap();
            let b = two.check_once(&other, now()).await.unwrap();
            a + b
        }};
    }
    assert_eq!(check!(), 0);
    spend(&h, key, 4).await;
    assert_eq!(check!(), 0, "40 % crosses nothing");
    spend(&h, key, 1).await;
    assert_eq!(check!(), 1, "50 % once, whichever checker saw it");
    assert_eq!(check!(), 0);
    spend(&h, key, 4).await;
    assert_eq!(check!(), 1, "80 %");
    spend(&h, key, 3).await;
    assert_eq!(check!(), 1, "100 % (120 % used)");
    assert_eq!(check!(), 0);
    // A fresh checker (a restarted sidecar) adds nothing either.
    assert_eq!(
        Checker::default()
            .check_once(&h.db.store, now())
            .await
            .unwrap(),
        0
    );
    deliver_all(&h.db.store, &keyring, &policy, 20).await;
    deliver_once(&h.db.store, &keyring, &policy).await.unwrap();

    // What the receiver got (its lock is not held across an await).
    let inbox = std::mem::take(&mut *inbox.lock().unwrap());
    assert!(inbox.forged.is_empty(), "{:?}", inbox.forged);
    let thresholds: Vec<i64> = inbox
        .accepted
        .iter()
        .map(|(_, b)| b["threshold"].as_i64().unwrap())
        .collect();
    let mut sorted = thresholds.clone();
    sorted.sort();
    assert_eq!(sorted, [50, 80, 100], "each once: {thresholds:?}");
    let (_, last) = inbox
        .accepted
        .iter()
        .find(|(_, b)| b["threshold"] == 100)
        .unwrap();
    assert_eq!(last["type"], "budget.threshold");
    assert_eq!(last["budget"]["key_id"], key);
    assert_eq!(last["budget"]["team_id"], Value::Null);
    assert_eq!(last["budget"]["quota"], "requests");
    assert_eq!(last["budget"]["window"], "day");
    assert!(last["budget"]["window_start"]
        .as_str()
        .unwrap()
        .contains("T00:00:00"));
    assert_eq!(last["used"], 12);
    assert_eq!(last["limit"], 10);
    assert_eq!(last["percent"], 120.0);
    assert_eq!(last["team"], Value::Null);
    assert_eq!(last["key"], json!({"id": key, "name": "budgeted"}));
    assert!(last["timestamp"].as_str().unwrap().ends_with('Z'));
    // The ids are distinct, and each was delivered.
    let ids: std::collections::HashSet<&String> = inbox.accepted.iter().map(|(i, _)| i).collect();
    assert_eq!(ids.len(), 3);
    let events = h.db.store.alert_events(None).await.unwrap();
    assert!(events
        .iter()
        .all(|e| e.state == "delivered" && e.attempts == 1));
}

async fn two_sidecars_racing_deliver_each_event_once(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=100/hour"]).await;
    let thresholds: Vec<i64> = (1..=20).map(|t| t * 5).collect();
    let created = add_alert(
        &h,
        json!({"key_id": key, "thresholds": thresholds, "url": url}),
    )
    .await;
    {
        let mut inbox = inbox.lock().unwrap();
        inbox.secret = created["secret"].as_str().unwrap().to_string();
        inbox.delay = Duration::from_millis(30);
    }
    spend(&h, key, 100).await;
    let added = Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    assert_eq!(added, 20);

    // Two sidecars' senders, each on its own pool, claiming a few at a time.
    let policy = DeliveryPolicy {
        batch: 3,
        ..fast(6)
    };
    let sender = |store: Store| {
        let policy = policy.clone();
        tokio::spawn(async move {
            let keyring = keyring(7);
            let mut delivered = 0;
            for _ in 0..200 {
                delivered += deliver_once(&store, &keyring, &policy).await.unwrap();
                if store
                    .alert_events(Some("pending"))
                    .await
                    .unwrap()
                    .is_empty()
                {
                    break;
                }
            }
            delivered
        })
    };
    let a = sender(h.db.observer().await);
    let b = sender(h.db.observer().await);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, 20, "delivered by one sender or the other: {a} + {b}");

    let inbox = inbox.lock().unwrap();
    assert!(inbox.forged.is_empty(), "{:?}", inbox.forged);
    assert_eq!(inbox.requests, 20, "no event was sent twice");
    let mut per_id: HashMap<&str, u32> = HashMap::new();
    for (id, _) in &inbox.accepted {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 20);
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
}

async fn a_receiver_failing_three_times_still_gets_the_event(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let created = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": url})).await;
    {
        let mut inbox = inbox.lock().unwrap();
        inbox.secret = created["secret"].as_str().unwrap().to_string();
        inbox.fail_first = 3;
    }
    spend(&h, key, 1).await;
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    deliver_all(&h.db.store, &keyring(7), &fast(6), 200).await;
    // Backed off 20, 40 and 80 ms between the four attempts.
    assert!(started.elapsed() >= Duration::from_millis(140));

    // What the receiver got (its lock is not held across an await).
    let inbox = std::mem::take(&mut *inbox.lock().unwrap());
    assert!(inbox.forged.is_empty(), "{:?}", inbox.forged);
    assert_eq!(inbox.requests, 4);
    assert_eq!(inbox.accepted.len(), 1);
    let events = h.db.store.alert_events(None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, "delivered");
    assert_eq!(events[0].attempts, 4);
    let failed = h.admin(Method::GET, "/v1/alerts?failed=true", None).await;
    assert_eq!(failed.json()["events"], json!([]));
}

async fn after_the_last_attempt_the_event_is_failed_and_listed(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let created = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": url})).await;
    {
        let mut inbox = inbox.lock().unwrap();
        inbox.secret = created["secret"].as_str().unwrap().to_string();
        inbox.fail_first = u32::MAX;
    }
    spend(&h, key, 1).await;
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    deliver_all(&h.db.store, &keyring(7), &fast(3), 200).await;
    // Nothing is sent after the last attempt.
    tokio::time::sleep(Duration::from_millis(100)).await;
    deliver_once(&h.db.store, &keyring(7), &fast(3))
        .await
        .unwrap();
    assert_eq!(inbox.lock().unwrap().requests, 3);
    assert!(inbox.lock().unwrap().forged.is_empty());

    let failed = h.admin(Method::GET, "/v1/alerts?failed=true", None).await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.text());
    let events = failed.json()["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["state"], "failed");
    assert_eq!(events[0]["attempts"], 3);
    assert_eq!(events[0]["threshold"], 50);
    assert_eq!(events[0]["alert_id"], created["id"]);
    assert!(events[0]["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(events[0]["payload"]["threshold"], 50);

    // The CLI lists it too.
    let out = cli(&h.db.target, &["alerts", "list", "--failed", "--json"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["events"][0]["id"], events[0]["id"]);
    let table = cli(&h.db.target, &["alerts", "list", "--failed"]);
    assert!(table.contains(events[0]["id"].as_str().unwrap()), "{table}");
}

async fn a_lease_left_by_a_dead_sender_runs_out_and_the_event_is_sent(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let created = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": url})).await;
    inbox.lock().unwrap().secret = created["secret"].as_str().unwrap().to_string();
    spend(&h, key, 1).await;
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    // A sender claims the event and dies before sending it.
    let dead = h.db.observer().await;
    let claimed = dead.claim_due_events(now(), 400, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    drop(dead);
    // While its lease holds, nobody else sends it.
    assert_eq!(
        deliver_once(&h.db.store, &keyring(7), &fast(6))
            .await
            .unwrap(),
        0
    );
    assert_eq!(inbox.lock().unwrap().requests, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        deliver_once(&h.db.store, &keyring(7), &fast(6))
            .await
            .unwrap(),
        1
    );
    let inbox = inbox.lock().unwrap();
    assert_eq!(inbox.accepted.len(), 1);
    assert_eq!(inbox.accepted[0].0, claimed[0].event_id);
}

async fn a_secret_from_the_environment_signs_and_is_never_stored(backend: Backend) {
    // No master key: a secret from the environment needs none.
    let h = Harness::new(backend).await;
    let (url, inbox) = receiver().await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let name = format!("TOLLGATE_TEST_HOOK_SECRET_{}", uuid_like().to_uppercase());
    let secret = format!(
        "whsec_{}",
        STANDARD.encode(b"a secret of thirty-two bytes!!!!")
    );
    std::env::set_var(&name, &secret);
    let created = add_alert(
        &h,
        json!({"key_id": key, "thresholds": [50], "url": url, "secret_env": name}),
    )
    .await;
    assert_eq!(created["secret"], Value::Null);
    assert_eq!(created["secret_source"], "env");
    inbox.lock().unwrap().secret = secret.clone();
    spend(&h, key, 1).await;
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    deliver_all(&h.db.store, &Keyring::empty(), &fast(6), 20).await;
    assert_eq!(inbox.lock().unwrap().accepted.len(), 1);
    assert!(inbox.lock().unwrap().forged.is_empty());
    let values = support::dump_every_value(&h.db.store).await;
    assert!(!support::appears_in(&values, &secret));

    // Without a master key, an alert whose secret is to be generated is
    // refused, storing nothing.
    let reply = h
        .admin(
            Method::POST,
            "/v1/alerts",
            Some(json!({"key_id": key, "thresholds": [50], "url": url})),
        )
        .await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "master_key_missing");
    let listed = h.admin(Method::GET, "/v1/alerts", None).await.json();
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 1);
}

async fn bad_alerts_are_refused_naming_the_field(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let url = "https://hooks.example.com/tollgate";
    for (body, field) in [
        (
            json!({"key_id": key, "thresholds": [0], "url": url}),
            "thresholds",
        ),
        (
            json!({"key_id": key, "thresholds": [101], "url": url}),
            "thresholds",
        ),
        (
            json!({"key_id": key, "thresholds": [50, 50], "url": url}),
            "thresholds",
        ),
        (
            json!({"key_id": key, "thresholds": [], "url": url}),
            "thresholds",
        ),
        (
            json!({"key_id": key, "thresholds": [50], "url": "ftp://h/x"}),
            "url",
        ),
        (
            json!({"key_id": key, "thresholds": [50], "url": "hooks.example.com"}),
            "url",
        ),
        (
            json!({"key_id": key + 99, "thresholds": [50], "url": url}),
            "key_id",
        ),
        (
            json!({"key_id": key, "thresholds": [50], "url": url, "secret_env": "A-B"}),
            "secret_env",
        ),
    ] {
        let reply = h
            .admin(Method::POST, "/v1/alerts", Some(body.clone()))
            .await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let listed = h.admin(Method::GET, "/v1/alerts", None).await.json();
    assert_eq!(listed["alerts"], json!([]), "nothing was stored");

    // The CLI refuses the same, naming its flags, and stores nothing.
    for (args, flag) in [
        (vec!["--at", "50,50", "--url", url], "--at"),
        (vec!["--at", "0", "--url", url], "--at"),
        (vec!["--at", "50", "--url", "ftp://h/x"], "--url"),
    ] {
        let key = key.to_string();
        let mut full = vec!["alerts", "add", "--key", key.as_str()];
        full.extend(args);
        let error = cli_error(&h.db.target, &full);
        assert!(error.starts_with(&format!("error: {flag}:")), "{error}");
    }
    let error = cli_error(
        &h.db.target,
        &[
            "alerts",
            "add",
            "--key",
            "999",
            "--at",
            "50",
            "--url",
            url,
            "--secret-env",
            "X",
        ],
    );
    assert!(error.contains("--key: no key has id 999"), "{error}");
    assert!(h.db.store.list_alerts().await.unwrap().is_empty());

    // Added, listed, removed; a second removal finds nothing.
    let created = add_alert(&h, json!({"key_id": key, "thresholds": [90], "url": url})).await;
    let id = created["id"].as_i64().unwrap();
    let listed = h.admin(Method::GET, "/v1/alerts", None).await.json();
    assert_eq!(listed["alerts"][0]["id"], id);
    assert_eq!(listed["alerts"][0]["secret_source"], "generated");
    assert!(listed["alerts"][0].get("secret").is_none());
    let path = format!("/v1/alerts/{id}");
    assert_eq!(
        h.admin(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    h.admin(Method::DELETE, &path, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // The admin token is required.
    let anonymous = h
        .send(
            axum::http::Request::get("/v1/alerts")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// The database URL of a test database, for the CLI.
fn database_url(target: &DatabaseTarget) -> String {
    match target {
        DatabaseTarget::MySql(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    }
}

fn run_cli(target: &DatabaseTarget, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("DATABASE_URL", database_url(target))
        .env_remove("TOLLGATE_MASTER_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tollgate")
}

/// A CLI command's output; it must succeed.
fn cli(target: &DatabaseTarget, args: &[&str]) -> String {
    let out = run_cli(target, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CLI command's error; it must fail.
fn cli_error(target: &DatabaseTarget, args: &[&str]) -> String {
    let out = run_cli(target, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap().trim().to_string()
}

/// A test CA and a certificate for `localhost` it signed (made with the
/// `openssl` command once per process), and `SSL_CERT_FILE` naming the CA,
/// which is then the only root the sender trusts.
fn test_pki() -> &'static std::path::PathBuf {
    static PKI: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(support::unique_name("pki"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for args in [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem"],
                &["-days", "1", "-subj", "/CN=tollgate test CA"],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &["-keyout", "leaf.key", "-out", "leaf.csr"],
                &["-subj", "/CN=localhost"],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
            ],
        ] {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));
        dir
    })
}

/// An https receiver on 127.0.0.1:0 (certificate for `localhost`), the
/// request read by hand: its URL and what it got.
async fn tls_receiver() -> (String, Shared) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::ServerConfig;

    let dir = test_pki();
    let chain = vec![CertificateDer::from_pem_file(dir.join("leaf.pem")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Shared = Arc::default();
    let shared = inbox.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head_end, length) = loop {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                raw.extend_from_slice(&buf[..n]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (end + 4, length);
                }
            };
            while raw.len() < head_end + length {
                let n = tls.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
            let mut headers = HeaderMap::new();
            for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
                let (name, value) = line.split_once(':').unwrap();
                headers.insert(
                    axum::http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                    value.trim().parse().unwrap(),
                );
            }
            let body = Bytes::copy_from_slice(&raw[head_end..head_end + length]);
            let status = receive(State(shared.clone()), headers, body).await;
            let reply = format!(
                "HTTP/1.1 {} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                status.as_u16()
            );
            let _ = tls.write_all(reply.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    (format!("https://localhost:{port}/hook"), inbox)
}

async fn an_https_receiver_gets_the_event_over_tls(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = tls_receiver().await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let created = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": url})).await;
    inbox.lock().unwrap().secret = created["secret"].as_str().unwrap().to_string();
    spend(&h, key, 1).await;
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    deliver_all(&h.db.store, &keyring(7), &fast(6), 20).await;
    let got = std::mem::take(&mut *inbox.lock().unwrap());
    assert!(got.forged.is_empty(), "{:?}", got.forged);
    assert_eq!(got.accepted.len(), 1);
    assert_eq!(got.accepted[0].1["threshold"], 50);
    let events = h.db.store.alert_events(None).await.unwrap();
    assert_eq!(events[0].state, "delivered");

    // A certificate that does not name the host asked for (it names
    // `localhost`, not 127.0.0.1): every attempt fails on TLS.
    let wrong = url.replace("localhost", "127.0.0.1");
    let second = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": wrong})).await;
    inbox.lock().unwrap().secret = second["secret"].as_str().unwrap().to_string();
    Checker::default()
        .check_once(&h.db.store, now())
        .await
        .unwrap();
    deliver_all(&h.db.store, &keyring(7), &fast(2), 50).await;
    assert!(inbox.lock().unwrap().accepted.is_empty());
    let failed = h.db.store.alert_events(Some("failed")).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].last_error.as_deref().unwrap().contains("TLS"),
        "{failed:?}"
    );
}

/// A team named `name` with `quotas`; its id.
async fn team_with(h: &Harness, name: &str, quotas: &[&str]) -> i64 {
    let reply = h
        .admin(
            Method::POST,
            "/v1/teams",
            Some(json!({"name": name, "quotas": quotas})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

/// A key of team `team` named `name`, with its own `quotas`; its id.
async fn team_key(h: &Harness, team: i64, name: &str, quotas: &[&str]) -> i64 {
    let reply = h
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": name, "team_id": team, "quotas": quotas})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()["id"].as_i64().unwrap()
}

async fn a_teams_two_keys_together_cross_each_threshold_once(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let (url, inbox) = receiver().await;
    let team = team_with(&h, "acme", &["requests=10/day"]).await;
    let a = team_key(&h, team, "acme-a", &["requests=6/day"]).await;
    let b = team_key(&h, team, "acme-b", &[]).await;
    // A key of no team spends too: its rows are not the team's.
    let outsider = key_with(&h, &["requests=100/day"]).await;
    let created = add_alert(
        &h,
        json!({"team_id": team, "thresholds": [100, 50], "url": url}),
    )
    .await;
    assert_eq!(created["team_id"], team);
    assert_eq!(created["key_id"], Value::Null);
    inbox.lock().unwrap().secret = created["secret"].as_str().unwrap().to_string();
    // A's own alert, to a receiver of its own: its events name A's team.
    let (own_url, own_inbox) = receiver().await;
    let own = add_alert(&h, json!({"key_id": a, "thresholds": [50], "url": own_url})).await;
    own_inbox.lock().unwrap().secret = own["secret"].as_str().unwrap().to_string();

    // Two checkers (two sidecars) on their own pools, every round.
    let other = h.db.observer().await;
    let (mut one, mut two) = (Checker::default(), Checker::default());
    macro_rules! check {
        () => {{
            let x = one.check_once(&h.db.store, now()).await.unwrap();
            let y = two.check_once(&other, now()).await.unwrap();
            x + y
        }};
    }
    spend(&h, outsider, 20).await;
    spend(&h, a, 2).await;
    spend(&h, b, 2).await;
    assert_eq!(check!(), 0, "40 % of the team's: nothing");
    spend(&h, b, 1).await;
    assert_eq!(check!(), 1, "50 % of the team's, by its two keys together");
    assert_eq!(check!(), 0);
    spend(&h, a, 2).await;
    assert_eq!(
        check!(),
        1,
        "the team at 70 %, A at its own 4 of 6: A's 50 %"
    );
    spend(&h, b, 3).await;
    assert_eq!(check!(), 1, "100 % of the team's");
    assert_eq!(check!(), 0);
    assert_eq!(
        Checker::default()
            .check_once(&h.db.store, now())
            .await
            .unwrap(),
        0,
        "a restarted sidecar adds nothing"
    );
    deliver_all(&h.db.store, &keyring(7), &fast(6), 20).await;

    let got = std::mem::take(&mut *inbox.lock().unwrap());
    assert!(got.forged.is_empty(), "{:?}", got.forged);
    let mut thresholds: Vec<i64> = got
        .accepted
        .iter()
        .map(|(_, e)| e["threshold"].as_i64().unwrap())
        .collect();
    thresholds.sort();
    assert_eq!(thresholds, [50, 100], "each once");
    for (_, event) in &got.accepted {
        assert_eq!(event["type"], "budget.threshold");
        assert_eq!(event["budget"]["key_id"], Value::Null, "{event}");
        assert_eq!(event["budget"]["team_id"], team);
        assert_eq!(event["budget"]["quota"], "requests");
        assert_eq!(event["budget"]["window"], "day");
        assert_eq!(event["team"], json!({"id": team, "name": "acme"}));
        assert_eq!(event["key"], Value::Null);
        assert_eq!(event["limit"], 10);
    }
    let (_, last) = got
        .accepted
        .iter()
        .find(|(_, e)| e["threshold"] == 100)
        .unwrap();
    assert_eq!(last["used"], 10, "A's 4 and B's 6, not the outsider's");
    assert_eq!(last["percent"], 100.0);

    let own = std::mem::take(&mut *own_inbox.lock().unwrap());
    assert!(own.forged.is_empty(), "{:?}", own.forged);
    assert_eq!(own.accepted.len(), 1);
    let event = &own.accepted[0].1;
    assert_eq!(event["budget"]["key_id"], a);
    assert_eq!(event["budget"]["team_id"], Value::Null);
    assert_eq!(event["used"], 4);
    assert_eq!(event["limit"], 6);
    assert_eq!(event["key"], json!({"id": a, "name": "acme-a"}));
    assert_eq!(event["team"], json!({"id": team, "name": "acme"}));

    // The outbox rows name the team of a team's events.
    let events = h.db.store.alert_events(None).await.unwrap();
    assert_eq!(events.len(), 3);
    for e in &events {
        let expected = if e.alert_id == created["id"] { team } else { 0 };
        assert_eq!(e.team_id, expected, "{e:?}");
        assert_eq!(e.state, "delivered");
    }
}

async fn team_alerts_are_added_listed_and_refused_naming_the_field(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let team = team_with(&h, "research", &["tokens=1M/month"]).await;
    let key = key_with(&h, &["requests=2/day"]).await;
    let url = "https://hooks.example.com/tollgate";
    for (body, field) in [
        (json!({"thresholds": [50], "url": url}), "key_id"),
        (
            json!({"key_id": null, "team_id": null, "thresholds": [50], "url": url}),
            "key_id",
        ),
        (
            json!({"key_id": key, "team_id": team, "thresholds": [50], "url": url}),
            "team_id",
        ),
        (
            json!({"team_id": team + 99, "thresholds": [50], "url": url}),
            "team_id",
        ),
        (
            json!({"team_id": team, "thresholds": [101], "url": url}),
            "thresholds",
        ),
        (
            json!({"team_id": team, "thresholds": [50], "url": "ftp://h/x"}),
            "url",
        ),
    ] {
        let reply = h
            .admin(Method::POST, "/v1/alerts", Some(body.clone()))
            .await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    assert!(h.db.store.list_alerts().await.unwrap().is_empty());

    // The CLI: exactly one of --key and --team, a team by id or name.
    let t = &h.db.target;
    let add = |who: &[&str]| {
        let mut args = vec!["alerts", "add"];
        args.extend_from_slice(who);
        args.extend([
            "--at",
            "50,80",
            "--url",
            url,
            "--secret-env",
            "HOOK",
            "--json",
        ]);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let key_text = key.to_string();
    let error = cli_error(t, &refs(&add(&[])));
    assert!(error.starts_with("error: --key:"), "{error}");
    let error = cli_error(t, &refs(&add(&["--key", &key_text, "--team", "research"])));
    assert!(error.starts_with("error: --team:"), "{error}");
    let error = cli_error(t, &refs(&add(&["--team", "nobody"])));
    assert!(error.contains("--team \"nobody\""), "{error}");
    let error = cli_error(t, &refs(&add(&["--team", "999"])));
    assert!(error.contains("--team \"999\""), "{error}");
    assert!(
        h.db.store.list_alerts().await.unwrap().is_empty(),
        "nothing stored"
    );
    let by_name: Value =
        serde_json::from_str(&cli(t, &refs(&add(&["--team", "research"])))).unwrap();
    assert_eq!(by_name["team_id"], team);
    assert_eq!(by_name["key_id"], Value::Null);
    assert_eq!(by_name["thresholds"], json!([50, 80]));
    let team_text = team.to_string();
    let by_id: Value = serde_json::from_str(&cli(t, &refs(&add(&["--team", &team_text])))).unwrap();
    assert_eq!(by_id["team_id"], team);

    // Over the API, with a generated secret; listed with whose budget.
    let created = add_alert(&h, json!({"team_id": team, "thresholds": [90], "url": url})).await;
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let listed = h.admin(Method::GET, "/v1/alerts", None).await.json();
    let alerts = listed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 3);
    assert!(alerts
        .iter()
        .all(|a| a["team_id"] == team && a["key_id"] == Value::Null));
    let table = cli(t, &["alerts", "list"]);
    assert!(table.contains("BUDGET"), "{table}");
    assert!(table.contains(&format!("team {team}")), "{table}");
    let mine = add_alert(&h, json!({"key_id": key, "thresholds": [50], "url": url})).await;
    let table = cli(t, &["alerts", "list"]);
    assert!(table.contains(&format!("key {key}")), "{table}");
    assert_eq!(mine["team_id"], Value::Null);
    assert_eq!(mine["key_id"], key);
    // Removed as any alert is.
    let path = format!("/v1/alerts/{}", created["id"]);
    assert_eq!(
        h.admin(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A team whose budget alerts watch it is not deleted (409 naming them,
/// the CLI likewise), until they are removed.
async fn a_team_with_alerts_is_not_deleted(backend: Backend) {
    let h = Harness::with_keyring(backend, keyring(7)).await;
    let team = team_with(&h, "ops", &["requests=10/day"]).await;
    let url = "http://127.0.0.1:9/hook";
    let first = add_alert(&h, json!({"team_id": team, "thresholds": [50], "url": url})).await;
    let second = add_alert(&h, json!({"team_id": team, "thresholds": [90], "url": url})).await;
    let path = format!("/v1/teams/{team}");
    let error = h
        .admin(Method::DELETE, &path, None)
        .await
        .expect_error(StatusCode::CONFLICT, "team_has_alerts");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("({}, {})", first["id"], second["id"])),
        "{message}"
    );
    let t = &h.db.target;
    let refused = cli_error(t, &["teams", "delete", "ops"]);
    assert!(refused.contains("budget alert(s)"), "{refused}");
    assert!(refused.contains("tollgate alerts remove"), "{refused}");
    assert!(h.db.store.team_by_id(team).await.unwrap().is_some(), "kept");
    assert_eq!(h.db.store.list_alerts().await.unwrap().len(), 2, "kept");

    for alert in [&first, &second] {
        let path = format!("/v1/alerts/{}", alert["id"]);
        assert_eq!(
            h.admin(Method::DELETE, &path, None).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let deleted = h.admin(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    // An alert on the deleted team is refused naming team_id.
    let reply = h
        .admin(
            Method::POST,
            "/v1/alerts",
            Some(json!({"team_id": team, "thresholds": [50], "url": url})),
        )
        .await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(error["field"], "team_id");
}

/// Alerts and events an older sidecar stored (before migration 0012) are
/// the keys' after it, as they were.
async fn alerts_stored_before_team_alerts_stay_the_keys(backend: Backend) {
    let db = TestDb::at_migration(backend, 11).await;
    let statements = [
        "INSERT INTO alerts (api_key_id, thresholds, url, secret_env, sealed_secret, created_ms) \
         VALUES (7, '50,100', 'http://h/x', 'HOOK', NULL, 1)",
        "INSERT INTO alert_events (event_id, alert_id, quota, window_start_ms, threshold, \
         payload, state, attempts, next_attempt_ms, lease_until_ms, created_ms) \
         VALUES ('msg_1', 1, 'requests', 0, 50, '{}', 'delivered', 1, 0, 0, 1)",
    ];
    for sql in statements {
        let done = match &db.store {
            Store::MySql(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
            Store::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(drop),
        };
        done.expect("an older sidecar's row");
    }
    db.store.migrate().await.expect("migrate to the newest");
    let alerts = db.store.list_alerts().await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].owner, BudgetOwner::Key(7));
    assert_eq!(alerts[0].thresholds, [50, 100]);
    let events = db.store.alert_events(None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].team_id, 0);
    // The outbox is still once per alert, quota, window and threshold.
    let again = sidecar::store::alerts::NewEvent {
        event_id: "msg_2".into(),
        alert_id: 1,
        owner: BudgetOwner::Key(7),
        quota: "requests".into(),
        window_start_ms: 0,
        threshold: 50,
        payload: "{}".into(),
        created_ms: 2,
    };
    assert!(!db.store.insert_event(&again).await.unwrap());
}
