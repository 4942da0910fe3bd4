//! `sidecar-bench`: load benchmark of the tollgate sidecar.
//!
//! Starts the release `tollgate serve` against MariaDB (database
//! `tollgate_bench`, recreated each run) and measures, over real HTTP on
//! loopback:
//! - usage ingestion: rows/s committed, with batches of 500 unique records
//!   sent by a few concurrent senders (what the Envoy filter's flush does);
//! - key verification: latency (p50/p99) and requests/s at 16 concurrent
//!   clients, each on its own keep-alive connection (cache misses of the filter).
//!
//! - usage summaries and series over a ledger of `--summary-rows` (10M)
//!   rows filled with bulk SQL, answered from the rollups by the real
//!   sidecar, side by side with the detail scan summaries used to be, and
//!   the time migration 0003 takes to roll those rows up.
//!
//! The same runs against SQLite follow, for comparison. The table goes to
//! stdout and the figures to `bench/results-sidecar.json`. The load generator
//! shares the machine with the sidecar and the database: compare figures
//! measured in one run, not across machines.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sqlx::{Connection, MySqlConnection};
use tokio::net::TcpStream;
use tollgate_wire::{key_hash_hex, INTERNAL_TOKEN_HEADER, VERIFY_PATH};

const INTERNAL_TOKEN: &str = "bench-internal-token-0123456789";

/// Targets on the reference 2-core machine: ingestion into MariaDB with
/// the default senders and batches (issue 24; it was 20,000).
const TARGET_INGEST_ROWS_PER_SEC: f64 = 250_000.0;
/// A summary over 10M usage rows (issue 13).
const TARGET_SUMMARY_P50_MS: f64 = 50.0;
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const TARGET_VERIFY_P50_MS: f64 = 1.0;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod ingest;
use ingest::{run_ingest, IngestResult, Watched};

#[derive(Debug, Parser)]
#[command(
    name = "sidecar-bench",
    about = "Load benchmark of the tollgate sidecar"
)]
struct Args {
    /// The tollgate binary (default: target/sidecar/tollgate of this workspace,
    /// built with the sidecar profile).
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate: Option<PathBuf>,
    /// MySQL/MariaDB server to benchmark against (no database in the URL).
    #[arg(
        long,
        env = "TOLLGATE_BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    mysql: String,
    /// Database created (dropped first) on that server.
    #[arg(long, default_value = "tollgate_bench")]
    database: String,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent ingestion senders.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Records per ingestion batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent verification clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Where to write the JSON results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the SQLite comparison.
    #[arg(long)]
    skip_sqlite: bool,
    /// Usage rows of the summary phase's ledger (0 skips the phase).
    #[arg(long, env = "BENCH_SUMMARY_ROWS", default_value_t = 10_000_000)]
    summary_rows: u64,
    /// Requests per measured summary or series query.
    #[arg(long, default_value_t = 40)]
    summary_queries: usize,
}

/// A `tollgate serve` child process, stopped with SIGTERM when dropped.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

impl Sidecar {
    async fn start(bin: &Path, database_url: &str, log: &Path) -> Result<Sidecar, BoxError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string()])
            .env("DATABASE_URL", database_url)
            .env("TOLLGATE_INTERNAL_TOKEN", INTERNAL_TOKEN)
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            // Nothing health-checks it: it stops at once on SIGTERM.
            .env("TOLLGATE_DRAIN_PERIOD", "0s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut sidecar = Sidecar { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = Conn::open(addr).await {
                if let Ok((StatusCode::OK, _)) = conn.get("/readyz").await {
                    return Ok(sidecar);
                }
            }
            if let Some(status) = sidecar.child.try_wait()? {
                return Err(format!("tollgate serve exited early: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("tollgate serve did not become ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), BoxError> {
        let request = Request::get(path)
            .header(header::HOST, "localhost")
            .body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    async fn get_admin(&mut self, path: &str) -> Result<(StatusCode, Bytes), BoxError> {
        let request = Request::get(path)
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    async fn post_internal(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let request = Request::post(path)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .header(INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)
            .body(Full::new(body))?;
        self.send(request).await
    }
}

/// Value at quantile `q` (0..=1) of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Verification figures of one backend.
#[derive(Debug, Clone, serde::Serialize)]
struct VerifyResult {
    backend: String,
    clients: usize,
    seconds: f64,
    requests: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn run_verify(
    backend: &str,
    addr: SocketAddr,
    key_hash: &str,
    args: &Args,
) -> Result<VerifyResult, BoxError> {
    let body = Bytes::from(json!({ "key_hash": key_hash }).to_string());
    let mut check = Conn::open(addr).await?;
    let (status, reply) = check.post_internal(VERIFY_PATH, body.clone()).await?;
    let reply: Value = serde_json::from_slice(&reply)?;
    if status != StatusCode::OK || reply["verdict"] != "active" {
        return Err(format!("verify answered {status}: {reply}").into());
    }
    // Warm-up: one second of the same load, not measured.
    for (measure, seconds) in [(false, 1), (true, args.seconds)] {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                let mut latencies = Vec::with_capacity(100_000);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (status, _) = conn.post_internal(VERIFY_PATH, body.clone()).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if status != StatusCode::OK {
                        return Err::<_, BoxError>(format!("verify answered {status}").into());
                    }
                }
                Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        if !measure {
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        return Ok(VerifyResult {
            backend: backend.into(),
            clients: args.clients,
            seconds: elapsed,
            requests: latencies.len() as u64,
            requests_per_sec: latencies.len() as f64 / elapsed,
            p50_ms: quantile(&latencies, 0.50),
            p90_ms: quantile(&latencies, 0.90),
            p99_ms: quantile(&latencies, 0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
        });
    }
    Err("no measured phase".into())
}

/// Registers a key through the CLI; returns (id, lowercase hex SHA-256 of the key).
fn create_key(bin: &Path, database_url: &str, dir: &Path) -> Result<(i64, String), BoxError> {
    let out = Command::new(bin)
        .args(["keys", "create", "--name", "bench", "--json"])
        .env("DATABASE_URL", database_url)
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let created: Value = serde_json::from_slice(&out.stdout)?;
    let id = created["id"].as_i64().ok_or("keys create printed no id")?;
    let key = created["key"]
        .as_str()
        .ok_or("keys create printed no key")?;
    Ok((id, key_hash_hex(key.as_bytes())))
}

/// Keys, denial codes and days the summary phase's ledger spreads over.
const SUMMARY_KEYS: u64 = 100;
const SUMMARY_DAYS: u64 = 30;

/// Latency of one admin query, asked `queries` times in a row after two
/// unmeasured ones.
#[derive(Debug, Clone, serde::Serialize)]
struct QueryResult {
    name: String,
    path: String,
    queries: usize,
    p50_ms: f64,
    p99_ms: f64,
    reply_bytes: usize,
}

/// The summary phase's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct SummaryPhase {
    usage_rows: u64,
    keys: u64,
    days: u64,
    fill_seconds: f64,
    /// `tollgate migrate` applying 0003 to the filled ledger: the created_at
    /// index and the backfill of both rollups.
    migrate_seconds: f64,
    hourly_rows: i64,
    daily_rows: i64,
    /// The summary as it was read before the rollups: one scan of usage_log.
    detail_scan_ms: f64,
    queries: Vec<QueryResult>,
    /// Ingestion into this ledger, rollups on (one key, so every batch adds
    /// to the same two rollup rows: the most contended case).
    ingest: IngestResult,
}

async fn time_queries(
    addr: SocketAddr,
    name: &str,
    path: &str,
    queries: usize,
) -> Result<(QueryResult, Value), BoxError> {
    let mut conn = Conn::open(addr).await?;
    let mut latencies = Vec::with_capacity(queries);
    let mut last = Bytes::new();
    for i in 0..queries + 2 {
        let sent = Instant::now();
        let (status, body) = conn.get_admin(path).await?;
        let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
        if status != StatusCode::OK {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        if i >= 2 {
            latencies.push(elapsed);
        }
        last = body;
    }
    latencies.sort_by(f64::total_cmp);
    let result = QueryResult {
        name: name.into(),
        path: path.into(),
        queries,
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        reply_bytes: last.len(),
    };
    Ok((result, serde_json::from_slice(&last)?))
}

/// Fills a fresh database with `args.summary_rows` usage rows over
/// [`SUMMARY_KEYS`] keys and [`SUMMARY_DAYS`] days (5% denials of three
/// codes) with bulk SQL, as the ledger stood before migration 0003; runs
/// `tollgate migrate` (timed), then asks the real sidecar for summaries and
/// series, and checks the all-time summary against a scan of usage_log.
async fn run_summary_phase(
    bin: &Path,
    server: &str,
    scratch: &Path,
    args: &Args,
) -> Result<SummaryPhase, BoxError> {
    let database = format!("{}_summary", args.database);
    let mut admin = MySqlConnection::connect(server).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE `{database}`"))
        .execute(&mut admin)
        .await?;
    let url = format!("{server}/{database}");
    let migrate = |what: &str| -> Result<f64, BoxError> {
        let started = Instant::now();
        let out = Command::new(bin)
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .current_dir(scratch)
            .output()?;
        if !out.status.success() {
            return Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(started.elapsed().as_secs_f64())
    };
    migrate("tollgate migrate")?;
    let mut db = MySqlConnection::connect(&url).await?;
    // Back to the schema before the rollups, so that `tollgate migrate`
    // rolls up a ledger that is already full, as an upgrade does. 0006,
    // 0007 and 0009 add columns to the rollups (and to usage_log), so they
    // go too, and 0013 (which drops the index 0003 makes): all run again
    // after 0003.
    for sql in [
        "DROP TABLE usage_hourly, usage_daily, prices",
        "ALTER TABLE usage_log DROP COLUMN units, DROP COLUMN api, DROP COLUMN model, \
         DROP COLUMN streamed, DROP COLUMN input_tokens, DROP COLUMN output_tokens, \
         DROP COLUMN cached_input_tokens, DROP COLUMN reasoning_tokens, \
         DROP COLUMN usage_source, DROP COLUMN cost_micros, DROP COLUMN currency",
        "DELETE FROM _sqlx_migrations WHERE version IN (3, 6, 7, 9, 13)",
    ] {
        sqlx::query(sql).execute(&mut db).await?;
    }
    sqlx::query(&format!(
        "INSERT INTO api_keys (name, prefix, key_hash, status, created_at) \
         SELECT CONCAT('bench-', seq), 'tg_bench0', SHA2(seq, 256), 'ACTIVE', NOW(3) \
         FROM seq_1_to_{SUMMARY_KEYS}"
    ))
    .execute(&mut db)
    .await?;
    let started = Instant::now();
    let chunk = 1_000_000u64;
    let span_s = SUMMARY_DAYS * 86_400 - 3_600;
    let rows = args.summary_rows;
    let mut first = 0;
    while first < args.summary_rows {
        let last = (first + chunk).min(args.summary_rows) - 1;
        // MariaDB's sequence engine (seq_<from>_to_<to>) numbers the rows.
        // Ids and times grow with the number, so every index is appended
        // to (a fill in random order thrashes a default 128 MiB buffer
        // pool: minutes per million rows).
        sqlx::query(&format!(
            "INSERT INTO usage_log (request_id, api_key_id, method, endpoint, status_code, \
             outcome, request_bytes, response_bytes, duration_ms, created_at) \
             SELECT CONCAT('fill-', LPAD(seq, 12, '0')), 1 + seq % {SUMMARY_KEYS}, 'POST', '/proxy/analyze', \
             IF(seq % 20 = 7, 401, IF(seq % 20 = 13, 403, 200)), \
             CASE seq % 60 WHEN 7 THEN 'invalid_signature' WHEN 27 THEN 'token_expired' \
             WHEN 47 THEN 'invalid_signature' ELSE IF(seq % 20 = 13, 'revoked_api_key', \
             IF(seq % 20 = 7, 'token_expired', 'allowed')) END, \
             512 + seq % 64, 96 + seq % 1000, 3, \
             UTC_TIMESTAMP(3) - INTERVAL ({span_s} * ({rows} - seq) DIV {rows}) SECOND \
             FROM seq_{first}_to_{last}"
        ))
        .execute(&mut db)
        .await?;
        first = last + 1;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    println!(
        "summary phase: {} usage rows filled in {fill_seconds:.1} s",
        args.summary_rows
    );
    let migrate_seconds = migrate("tollgate migrate (0003 and 0006 on the filled ledger)")?;
    println!(
        "summary phase: migrations 0003 (index and rollups), 0006, 0007, 0009 (columns) and 0013 (index dropped) took {migrate_seconds:.1} s"
    );
    let hourly_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_hourly")
        .fetch_one(&mut db)
        .await?;
    let daily_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_daily")
        .fetch_one(&mut db)
        .await?;

    // The summary as it was computed before the rollups, for the ratio and
    // as the check of the rollups.
    let started = Instant::now();
    let scanned: Vec<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT api_key_id, outcome, COUNT(*), CAST(SUM(request_bytes) AS SIGNED), \
         CAST(SUM(response_bytes) AS SIGNED) FROM usage_log \
         GROUP BY api_key_id, outcome ORDER BY api_key_id, outcome",
    )
    .fetch_all(&mut db)
    .await?;
    let detail_scan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = db.close().await;

    let sidecar = Sidecar::start(bin, &url, &scratch.join("sidecar-summary.log")).await?;
    let mut queries = Vec::new();
    let key = SUMMARY_KEYS / 2;
    for (name, path) in [
        (
            "summary, all keys, all time",
            "/v1/usage/summary".to_string(),
        ),
        (
            "summary, all keys, since 7d",
            "/v1/usage/summary?since=7d".to_string(),
        ),
        (
            "summary, one key, all time",
            format!("/v1/usage/summary?key={key}"),
        ),
        (
            "summary, one key, since 24h",
            format!("/v1/usage/summary?key={key}&since=24h"),
        ),
        (
            "series 30d (daily rollups)",
            format!("/v1/keys/{key}/usage/series?window=30d"),
        ),
        (
            "series day (hourly rollups)",
            format!("/v1/keys/{key}/usage/series?window=day"),
        ),
        (
            "series hour (usage_log)",
            format!("/v1/keys/{key}/usage/series?window=hour"),
        ),
    ] {
        let (result, body) = time_queries(sidecar.addr, name, &path, args.summary_queries).await?;
        if path == "/v1/usage/summary" {
            let rows: Vec<(i64, String, i64, u128, u128)> = body["rows"]
                .as_array()
                .ok_or("the summary has no rows")?
                .iter()
                .map(|r| {
                    (
                        r["api_key_id"].as_i64().unwrap_or(-1),
                        r["outcome"].as_str().unwrap_or("").to_string(),
                        r["requests"].as_i64().unwrap_or(-1),
                        r["request_bytes"].as_u64().map_or(0, u128::from),
                        r["response_bytes"].as_u64().map_or(0, u128::from),
                    )
                })
                .collect();
            let expected: Vec<(i64, String, i64, u128, u128)> = scanned
                .iter()
                .map(|(k, o, n, rq, rs)| (*k, o.clone(), *n, *rq as u128, *rs as u128))
                .collect();
            if rows != expected {
                return Err("the summary from the rollups differs from a scan of usage_log".into());
            }
        }
        queries.push(result);
    }
    let watched = Watched {
        sidecar: sidecar.child.id(),
        database: Some(database_pid(&mut admin).await?),
    };
    let ingest = run_ingest("mysql, 10M-row ledger", sidecar.addr, 1, watched, args).await?;
    drop(sidecar);
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute(&mut admin)
        .await?;
    let _ = admin.close().await;
    Ok(SummaryPhase {
        usage_rows: args.summary_rows,
        keys: SUMMARY_KEYS,
        days: SUMMARY_DAYS,
        fill_seconds,
        migrate_seconds,
        hourly_rows,
        daily_rows,
        detail_scan_ms,
        queries,
        ingest,
    })
}

/// The database server's process id, from its `@@pid_file` (the server
/// runs on this machine: its CPU is charged per row).
async fn database_pid(conn: &mut MySqlConnection) -> Result<u32, BoxError> {
    let file: String = sqlx::query_scalar("SELECT CAST(@@pid_file AS CHAR)")
        .fetch_one(conn)
        .await?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read the database server's pid file {file}: {e}"))?;
    Ok(text.trim().parse()?)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("sidecar-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let root = workspace_root();
    let bin = args
        .tollgate
        .clone()
        .unwrap_or_else(|| root.join("target/sidecar/tollgate"));
    if !bin.is_file() {
        return Err(format!(
            "{} is missing; build it first: cargo build --profile sidecar -p tollgate-sidecar",
            bin.display()
        )
        .into());
    }
    let scratch = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    // MariaDB: a fresh database for this run.
    let server = args.mysql.trim_end_matches('/').to_string();
    let mut admin = MySqlConnection::connect(&server)
        .await
        .map_err(|e| format!("cannot reach MySQL at {server}: {e}"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS `{}`", args.database))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE `{}`", args.database))
        .execute(&mut admin)
        .await?;
    let (version, flush): (String, String) = sqlx::query_as(
        "SELECT CAST(@@version AS CHAR), CAST(@@innodb_flush_log_at_trx_commit AS CHAR)",
    )
    .fetch_one(&mut admin)
    .await?;
    let mysql_url = format!("{server}/{}", args.database);

    println!(
        "sidecar-bench: {} cores, MariaDB {version} (innodb_flush_log_at_trx_commit={flush}), {} s per phase",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.seconds
    );

    let (key_id, key_hash) = create_key(&bin, &mysql_url, &scratch)?;
    let sidecar = Sidecar::start(&bin, &mysql_url, &scratch.join("sidecar-mysql.log")).await?;
    let watched = Watched {
        sidecar: sidecar.child.id(),
        database: Some(database_pid(&mut admin).await?),
    };
    let ingest_mysql = run_ingest("mysql", sidecar.addr, key_id, watched, &args).await?;
    let stored: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM `{}`.usage_log",
        args.database
    ))
    .fetch_one(&mut admin)
    .await?;
    let expected = ingest_mysql.rows_inserted as i64 + args.batch as i64;
    if stored != expected {
        return Err(format!("MySQL holds {stored} usage rows, the replies said {expected}").into());
    }
    let verify_mysql = run_verify("mysql", sidecar.addr, &key_hash, &args).await?;
    drop(sidecar);
    let _ = admin.close().await;
    let summary = if args.summary_rows > 0 {
        Some(run_summary_phase(&bin, &server, &scratch, &args).await?)
    } else {
        None
    };

    let (ingest_sqlite, verify_sqlite) = if args.skip_sqlite {
        (None, None)
    } else {
        let url = format!("sqlite://{}", scratch.join("bench.db").display());
        let (key_id, key_hash) = create_key(&bin, &url, &scratch)?;
        let sidecar = Sidecar::start(&bin, &url, &scratch.join("sidecar-sqlite.log")).await?;
        let watched = Watched {
            sidecar: sidecar.child.id(),
            database: None,
        };
        let ingest = run_ingest("sqlite", sidecar.addr, key_id, watched, &args).await?;
        let verify = run_verify("sqlite", sidecar.addr, &key_hash, &args).await?;
        drop(sidecar);
        (Some(ingest), Some(verify))
    };
    let _ = std::fs::remove_dir_all(&scratch);

    println!();
    println!(
        "{:<28} {:>10} {:>14} {:>12} {:>12} {:>20}",
        "ingestion (batches of 500)",
        "backend",
        "rows/s",
        "batch p50",
        "batch p99",
        "CPU us/row sc+db"
    );
    for r in [Some(&ingest_mysql), ingest_sqlite.as_ref()]
        .into_iter()
        .flatten()
    {
        println!(
            "{:<28} {:>10} {:>14.0} {:>10.1}ms {:>10.1}ms {:>20}",
            format!("{} senders", r.senders),
            r.backend,
            r.rows_per_sec,
            r.batch_p50_ms,
            r.batch_p99_ms,
            r.cpu_us_per_row.describe()
        );
    }
    println!();
    println!(
        "{:<28} {:>10} {:>14} {:>12} {:>12}",
        "key verification", "backend", "requests/s", "p50", "p99"
    );
    for r in [Some(&verify_mysql), verify_sqlite.as_ref()]
        .into_iter()
        .flatten()
    {
        println!(
            "{:<28} {:>10} {:>14.0} {:>10.3}ms {:>10.3}ms",
            format!("{} clients", r.clients),
            r.backend,
            r.requests_per_sec,
            r.p50_ms,
            r.p99_ms
        );
    }
    if let Some(phase) = &summary {
        println!();
        println!(
            "summaries over {} usage rows ({} keys, {} days; rollups: {} hourly, {} daily rows; \
             the detail scan took {:.0} ms)",
            phase.usage_rows,
            phase.keys,
            phase.days,
            phase.hourly_rows,
            phase.daily_rows,
            phase.detail_scan_ms
        );
        for q in &phase.queries {
            println!("{:<34} {:>10.2}ms {:>10.2}ms", q.name, q.p50_ms, q.p99_ms);
        }
        println!(
            "ingestion into it, rollups on: {:.0} rows/s",
            phase.ingest.rows_per_sec
        );
    }
    let summary_p50 = summary
        .as_ref()
        .and_then(|p| p.queries.first())
        .map(|q| q.p50_ms);
    let summary_met = summary_p50.is_some_and(|ms| ms <= TARGET_SUMMARY_P50_MS);
    let ingest_met = ingest_mysql.rows_per_sec >= TARGET_INGEST_ROWS_PER_SEC;
    let verify_met = verify_mysql.p50_ms <= TARGET_VERIFY_P50_MS;
    println!();
    println!(
        "targets (MariaDB): ingestion >= {TARGET_INGEST_ROWS_PER_SEC:.0} rows/s: {}; verification p50 <= {TARGET_VERIFY_P50_MS} ms: {}",
        if ingest_met { "met" } else { "MISSED" },
        if verify_met { "met" } else { "MISSED" },
    );

    let ingest: Vec<&IngestResult> = [Some(&ingest_mysql), ingest_sqlite.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let verify: Vec<&VerifyResult> = [Some(&verify_mysql), verify_sqlite.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let results = json!({
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "mysql_version": version,
            "innodb_flush_log_at_trx_commit": flush,
            "note": "load generator, sidecar and database share the machine",
        },
        "seconds_per_phase": args.seconds,
        "ingest": ingest,
        "verify": verify,
        "summary": summary,
        "targets": {
            "summary_p50_ms_10m_rows": TARGET_SUMMARY_P50_MS,
            "summary_met": summary_met,
            "ingest_rows_per_sec_mysql": TARGET_INGEST_ROWS_PER_SEC,
            "verify_p50_ms_mysql": TARGET_VERIFY_P50_MS,
            "ingest_met": ingest_met,
            "verify_met": verify_met,
        },
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench/results-sidecar.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("results written to {}", out.display());
    Ok(())
}
