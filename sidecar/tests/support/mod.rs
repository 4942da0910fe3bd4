//! Test harness: the sidecar's router in-process over a fresh database of
//! either backend, and ways to look at what the database holds.
//!
//! SQLite tests use a temporary file. MySQL tests need
//! `TOLLGATE_TEST_MYSQL_URL` (e.g. `mysql://root@127.0.0.1:3306/tollgate_test`);
//! each test creates its own database on that server and drops it afterwards.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use sidecar::domain::sealed::{Keyring, MasterKey};
use sidecar::http::{router, AppState, AuthTokens};
use sidecar::store::DatabaseTarget;
use sidecar::store::{MySqlStore, Store};
use sqlx::{Connection, Row};
use tower::ServiceExt;

pub mod console;

/// Runs each named `async fn(Backend)` twice: `sqlite::<name>` on a
/// temporary file and `mysql::<name>` on a database of its own. (Unused by
/// suites whose subject keeps nothing in the database.)
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::MySql).await
                }
            )*
        }
    };
}

pub const INTERNAL_TOKEN: &str = "internal-token-for-tests-0123";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456";

/// A keyring whose only master key is 32 bytes of `byte`.
pub fn keyring(byte: u8) -> Keyring {
    Keyring::new(MasterKey::from_bytes([byte; 32]), Vec::new())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

/// `TOLLGATE_TEST_MYSQL_URL`, split into the server part and the query string.
fn mysql_server() -> (String, String) {
    let url = std::env::var("TOLLGATE_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "TOLLGATE_TEST_MYSQL_URL is not set, so the MySQL half of the suite cannot run. \
             Set it to a server the tests may create databases on, e.g. \
             TOLLGATE_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/tollgate_test \
             (MariaDB at 127.0.0.1:3306, user root, empty password)"
        )
    });
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u.to_string(), format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let base = match url[scheme_end..].find('/') {
        Some(slash) => url[..scheme_end + slash].to_string(),
        None => url,
    };
    (base, query)
}

/// A unique name for this test's database or file.
pub fn unique_name(kind: &str) -> String {
    format!(
        "tollgate_test_{kind}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops the test's MySQL database (or removes its SQLite directory) when the test ends.
enum Cleanup {
    MySql { server: String, database: String },
    Sqlite(PathBuf),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::MySql { server, database } => {
                let server = server.clone();
                let sql = format!("DROP DATABASE IF EXISTS `{database}`");
                // Drop runs inside the test's runtime; use a thread of our own.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime for cleanup");
                    runtime.block_on(async move {
                        if let Ok(mut conn) = sqlx::MySqlConnection::connect(&server).await {
                            let _ = sqlx::query(&sql).execute(&mut conn).await;
                            let _ = conn.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A fresh, migrated database.
pub struct TestDb {
    pub store: Store,
    pub target: DatabaseTarget,
    _cleanup: Cleanup,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        TestDb::open(backend, None).await
    }

    /// A fresh database as an older sidecar left it: migrated up to
    /// `version` only.
    pub async fn at_migration(backend: Backend, version: i64) -> TestDb {
        TestDb::open(backend, Some(version)).await
    }

    async fn open(backend: Backend, version: Option<i64>) -> TestDb {
        let migrate = |store: Store| async move {
            match version {
                Some(v) => store.migrate_up_to(v).await,
                None => store.migrate().await,
            }
            .expect("migrate");
            store
        };
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(unique_name("sqlite"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let target = DatabaseTarget::Sqlite(dir.join("tollgate.db"));
                let store = migrate(Store::connect(&target).await.expect("open SQLite")).await;
                TestDb {
                    store,
                    target,
                    _cleanup: Cleanup::Sqlite(dir),
                }
            }
            Backend::MySql => {
                let (server, query) = mysql_server();
                let database = unique_name("db");
                let mut conn = sqlx::MySqlConnection::connect(&format!("{server}{query}"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "cannot reach the MySQL server of TOLLGATE_TEST_MYSQL_URL ({server}): {e}. \
                             Is MariaDB running? (start-stop-daemon --start --oknodo --background \
                             --exec /usr/sbin/mariadbd)"
                        )
                    });
                sqlx::query(&format!("CREATE DATABASE `{database}`"))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                let _ = conn.close().await;
                let cleanup = Cleanup::MySql {
                    server: format!("{server}{query}"),
                    database: database.clone(),
                };
                let target = DatabaseTarget::MySql(format!("{server}/{database}{query}"));
                let store = migrate(Store::connect(&target).await.expect("open MySQL")).await;
                TestDb {
                    store,
                    target,
                    _cleanup: cleanup,
                }
            }
        }
    }

    /// A second, independent pool on the same database (to look behind the app's back).
    pub async fn observer(&self) -> Store {
        Store::connect(&self.target).await.expect("observer pool")
    }
}

/// Rows in `usage_log`, optionally only those of one request id.
pub async fn count_usage(store: &Store, request_id: Option<&str>) -> i64 {
    let sql = match request_id {
        Some(_) => "SELECT COUNT(*) FROM usage_log WHERE request_id = ?",
        None => "SELECT COUNT(*) FROM usage_log",
    };
    match store {
        Store::MySql(s) => {
            let mut q = sqlx::query_scalar::<_, i64>(sql);
            if let Some(id) = request_id {
                q = q.bind(id);
            }
            q.fetch_one(s.pool()).await.expect("count usage rows")
        }
        Store::Sqlite(s) => {
            let mut q = sqlx::query_scalar::<_, i64>(sql);
            if let Some(id) = request_id {
                q = q.bind(id);
            }
            q.fetch_one(s.pool()).await.expect("count usage rows")
        }
    }
}

/// Registers `count` keys straight in the store, so records may name key
/// ids `1..=count` (a fresh database numbers keys from 1).
pub async fn register_keys(store: &Store, count: i64) {
    // With the columns of the first migration only, so that it also
    // serves a database migrated part of the way (`TestDb::at_migration`).
    for i in 1..=count {
        let key = format!("tg_registered_for_usage_{i}");
        let insert = "INSERT INTO api_keys (name, prefix, key_hash, created_at) \
                      VALUES (?, ?, ?, '2026-01-01 00:00:00.000')";
        let done = match store {
            Store::MySql(s) => sqlx::query(insert)
                .bind(format!("usage-{i}"))
                .bind(&key[..9])
                .bind(hash_key(&key))
                .execute(s.pool())
                .await
                .map(|d| d.last_insert_id() as i64),
            Store::Sqlite(s) => sqlx::query(insert)
                .bind(format!("usage-{i}"))
                .bind(&key[..9])
                .bind(hash_key(&key))
                .execute(s.pool())
                .await
                .map(|d| d.last_insert_rowid()),
        };
        let id = done.expect("register a key");
        assert_eq!(id, i, "a fresh database numbers keys from 1");
    }
}

/// Stores a usage row as an older sidecar could, before ingestion bounded
/// byte counts: `bytes` in both byte columns.
pub async fn store_forged_usage(store: &Store, request_id: &str, key_id: i64, bytes: i64) {
    let sql = format!(
        "INSERT INTO usage_log (request_id, api_key_id, method, endpoint, status_code, \
         outcome, request_bytes, response_bytes, duration_ms, created_at) \
         VALUES ('{request_id}', {key_id}, 'POST', '/proxy/analyze', 200, 'allowed', \
         {bytes}, {bytes}, 1, '2025-11-24 10:00:00.000')"
    );
    let stored = match store {
        Store::MySql(s) => sqlx::query(&sql).execute(s.pool()).await.map(drop),
        Store::Sqlite(s) => sqlx::query(&sql).execute(s.pool()).await.map(drop),
    };
    stored.expect("store a forged row");
}

/// Every value of every column of every table, as raw bytes.
pub async fn dump_every_value(store: &Store) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    match store {
        Store::MySql(s) => {
            let columns = sqlx::query(
                "SELECT CAST(table_name AS CHAR) AS t, CAST(column_name AS CHAR) AS c \
                 FROM information_schema.columns WHERE table_schema = DATABASE()",
            )
            .fetch_all(s.pool())
            .await
            .expect("list columns");
            assert!(columns.len() >= 20, "expected the tollgate tables");
            for row in columns {
                let table: String = row.get("t");
                let column: String = row.get("c");
                let rows = sqlx::query(&format!(
                    "SELECT CAST(`{column}` AS BINARY) AS v FROM `{table}`"
                ))
                .fetch_all(s.pool())
                .await
                .expect("read column");
                for r in rows {
                    if let Some(v) = r
                        .try_get_unchecked::<Option<Vec<u8>>, _>("v")
                        .expect("value")
                    {
                        values.push(v);
                    }
                }
            }
        }
        Store::Sqlite(s) => {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(s.pool())
                    .await
                    .expect("list tables");
            assert!(tables.len() >= 2, "expected the tollgate tables");
            for table in tables {
                let columns = sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
                    .fetch_all(s.pool())
                    .await
                    .expect("list columns");
                for c in columns {
                    let column: String = c.get("name");
                    let rows = sqlx::query(&format!(
                        "SELECT CAST(\"{column}\" AS BLOB) AS v FROM \"{table}\""
                    ))
                    .fetch_all(s.pool())
                    .await
                    .expect("read column");
                    for r in rows {
                        if let Some(v) = r
                            .try_get_unchecked::<Option<Vec<u8>>, _>("v")
                            .expect("value")
                        {
                            values.push(v);
                        }
                    }
                }
            }
        }
    }
    values
}

/// Whether `needle` occurs in any value.
pub fn appears_in(values: &[Vec<u8>], needle: &str) -> bool {
    let needle = needle.as_bytes();
    values
        .iter()
        .any(|v| v.windows(needle.len()).any(|w| w == needle))
}

/// An answer from the router.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a JSON error with this status and code; returns the error object.
    pub fn expect_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "errors are JSON"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "body: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error has a message: {body}"
        );
        body["error"].clone()
    }
}

/// The router over a test database.
pub struct Harness {
    pub db: TestDb,
    pub state: AppState,
    pub app: Router,
}

impl Harness {
    pub async fn new(backend: Backend) -> Harness {
        Harness::with_admin(backend, Some(ADMIN_TOKEN)).await
    }

    /// A harness whose sidecar seals and opens signing secrets with `keyring`.
    pub async fn with_keyring(backend: Backend, keyring: Keyring) -> Harness {
        let mut h = Harness::new(backend).await;
        h.rekey(keyring);
        h
    }

    /// The same database, served from now on by a sidecar with `keyring`
    /// (a restart with other master keys).
    pub fn rekey(&mut self, keyring: Keyring) {
        self.state = self.state.clone().with_keyring(keyring);
        self.app = router(self.state.clone());
    }

    pub async fn with_admin(backend: Backend, admin: Option<&str>) -> Harness {
        Harness::over(TestDb::new(backend).await, admin)
    }

    /// The router over a database the test prepared.
    pub fn over(db: TestDb, admin: Option<&str>) -> Harness {
        let state = AppState::new(
            db.store.clone(),
            AuthTokens {
                admin_token: admin.map(str::to_string),
                internal_token: INTERNAL_TOKEN.to_string(),
            },
        );
        let app = router(state.clone());
        Harness { db, state, app }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        send(&self.app, request).await
    }

    pub async fn internal(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.send(
            Request::post(path)
                .header("content-type", "application/json")
                .header(tollgate_wire::INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
                .body(body.into())
                .expect("request"),
        )
        .await
    }

    pub async fn ingest(&self, records: &Value) -> Reply {
        self.internal(tollgate_wire::USAGE_PATH, records.to_string())
            .await
    }

    pub async fn verify(&self, key_hash: &str) -> Reply {
        self.internal(
            tollgate_wire::VERIFY_PATH,
            serde_json::json!({ "key_hash": key_hash }).to_string(),
        )
        .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"));
        let request = match body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).expect("request"))
            .await
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A router whose MySQL pool points at a closed port: every database call fails.
pub fn unreachable_mysql_app() -> (AppState, Router) {
    let store = MySqlStore::connect_lazy(
        "mysql://root@127.0.0.1:1/tollgate_nowhere",
        Duration::from_millis(1500),
    )
    .expect("lazy pool");
    let state = AppState::new(
        Store::MySql(store),
        AuthTokens {
            admin_token: Some(ADMIN_TOKEN.to_string()),
            internal_token: INTERNAL_TOKEN.to_string(),
        },
    );
    (state.clone(), router(state))
}

/// A usage record as the filter sends it.
pub fn record(request_id: &str, key_id: i64) -> Value {
    serde_json::json!({
        "request_id": request_id,
        "api_key_id": key_id,
        "method": "POST",
        "endpoint": "/proxy/analyze",
        "status_code": 200,
        "outcome": "allowed",
        "request_bytes": 100,
        "response_bytes": 40,
        "units": 6,
        "duration_ms": 7,
        "timestamp_ms": now_ms(),
    })
}

/// The hash the registry stores a key by, as the filter computes it.
pub fn hash_key(key: &str) -> String {
    tollgate_wire::key_hash_hex(key.as_bytes())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}
