//! The ingestion phase of `sidecar-bench`: concurrent senders posting
//! batches of unique usage records to the sidecar, as the filter's flush
//! does, and what each row cost: rows/s committed, and the CPU the sidecar,
//! the database server and the senders themselves spent per row.
//!
//! The senders build each batch from a template encoded once (only the
//! request ids change), so the load generator takes little of the cores it
//! shares with the sidecar and the database.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::StatusCode;
use tollgate_wire::{IngestReply, Outcome, UsageRecord, USAGE_PATH};

use crate::{quantile, Args, BoxError, Conn};

/// What stands for the request id in a record's template.
const ID_MARK: &str = "@REQUEST_ID@";

/// A batch of `size` records of one key, encoded once: each record's JSON
/// before and after its request id.
pub struct BatchTemplate {
    parts: Vec<(String, String)>,
}

impl BatchTemplate {
    pub fn new(size: usize, key_id: i64) -> Result<BatchTemplate, BoxError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let parts = (0..size as u64)
            .map(|i| {
                let record = UsageRecord {
                    request_id: ID_MARK.into(),
                    api_key_id: key_id,
                    method: "POST".into(),
                    endpoint: "/proxy/analyze".into(),
                    status_code: 200,
                    outcome: Outcome::Allowed,
                    request_bytes: 512 + (i % 64),
                    response_bytes: 96,
                    units: 0,
                    duration_ms: 3 + (i % 5),
                    timestamp_ms: now_ms,
                    llm: None,
                };
                let json = serde_json::to_string(&record)?;
                let (before, after) = json
                    .split_once(ID_MARK)
                    .ok_or("a record's JSON lost its request id")?;
                Ok((before.to_string(), after.to_string()))
            })
            .collect::<Result<_, BoxError>>()?;
        Ok(BatchTemplate { parts })
    }

    /// The batch of records `first..` of `sender` in `run`, each with its
    /// own request id in Envoy's form (a random-looking UUID), so the
    /// ledger's unique index is filled in no order, as in production.
    pub fn body(&self, run: &str, sender: usize, first: u64) -> Bytes {
        let size: usize = self.parts.iter().map(|(b, a)| b.len() + a.len() + 32).sum();
        let mut body = String::with_capacity(size + 2);
        body.push('[');
        for (i, (before, after)) in self.parts.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(before);
            let (high, low) = request_id(run, sender, first + i as u64);
            let _ = write!(
                body,
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                high >> 32,
                (high >> 16) & 0xffff,
                high & 0xfff,
                0x8000 | (low >> 48) & 0x3fff,
                low & 0xffff_ffff_ffff
            );
            body.push_str(after);
        }
        body.push(']');
        Bytes::from(body)
    }
}

/// Two 64-bit words unique to (run, sender, n), spread by SplitMix64's
/// finalizer (a bijection), from which a request id is written.
fn request_id(run: &str, sender: usize, n: u64) -> (u64, u64) {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let run = run
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (mix(n), mix(run ^ ((sender as u64) << 32)) ^ n)
}

/// User plus system CPU seconds a process has spent, from `/proc`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th of the line, the 12th and 13th after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel reports them in clock ticks, 100 a second on Linux.
    Some(ticks / 100.0)
}

/// The processes whose CPU an ingestion run charges per row.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub sidecar: u32,
    /// The database server (`None` for SQLite, which runs in the sidecar).
    pub database: Option<u32>,
}

impl Watched {
    fn sample(&self) -> [Option<f64>; 3] {
        [
            cpu_seconds(self.sidecar),
            self.database.and_then(cpu_seconds),
            cpu_seconds(std::process::id()),
        ]
    }
}

/// CPU microseconds per committed row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuPerRow {
    pub sidecar: Option<f64>,
    pub database: Option<f64>,
    /// The sidecar and the database together: what a metered row costs.
    pub metering: Option<f64>,
    /// This process: the senders and their HTTP client.
    pub bench: Option<f64>,
}

impl CpuPerRow {
    /// `sidecar + database = metering` for the table.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "{} + {} = {}",
            f(self.sidecar),
            f(self.database),
            f(self.metering)
        )
    }
}

/// Ingestion figures of one backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestResult {
    pub backend: String,
    pub senders: usize,
    pub batch_size: usize,
    pub seconds: f64,
    pub batches: u64,
    pub rows_inserted: u64,
    pub rows_duplicate: u64,
    pub rows_per_sec: f64,
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
    pub cpu_us_per_row: CpuPerRow,
}

/// Runs `args.senders` senders for `args.seconds` against the sidecar at
/// `addr`, after one warm-up batch.
pub async fn run_ingest(
    backend: &str,
    addr: SocketAddr,
    key_id: i64,
    watched: Watched,
    args: &Args,
) -> Result<IngestResult, BoxError> {
    let template = std::sync::Arc::new(BatchTemplate::new(args.batch, key_id)?);
    // Warm-up: connections, prepared statements, buffer pool.
    let mut warm = Conn::open(addr).await?;
    let (status, body) = warm
        .post_internal(USAGE_PATH, template.body("warm", 0, 0))
        .await?;
    if status != StatusCode::OK {
        return Err(format!(
            "warm-up ingest answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }

    let before = watched.sample();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for sender in 0..args.senders {
        let batch = args.batch;
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let (mut inserted, mut duplicates, mut latencies) = (0u64, 0u64, Vec::new());
            let mut next = 0u64;
            while Instant::now() < deadline {
                let body = template.body("run", sender, next);
                next += batch as u64;
                let sent = Instant::now();
                let (status, reply) = conn.post_internal(USAGE_PATH, body).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if status != StatusCode::OK {
                    return Err::<_, BoxError>(
                        format!(
                            "ingest answered {status}: {}",
                            String::from_utf8_lossy(&reply)
                        )
                        .into(),
                    );
                }
                let reply: IngestReply = serde_json::from_slice(&reply)?;
                inserted += reply.inserted;
                duplicates += reply.duplicates;
            }
            Ok((inserted, duplicates, latencies))
        }));
    }
    let (mut inserted, mut duplicates, mut latencies) = (0, 0, Vec::new());
    for task in tasks {
        let (i, d, l) = task.await??;
        inserted += i;
        duplicates += d;
        latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = watched.sample();
    let per_row = |i: usize| match (before[i], after[i]) {
        (Some(a), Some(b)) if inserted > 0 => Some((b - a) * 1e6 / inserted as f64),
        _ => None,
    };
    let (sidecar, database) = (per_row(0), per_row(1));
    let metering = match (sidecar, database, watched.database) {
        (Some(s), Some(d), Some(_)) => Some(s + d),
        (Some(s), _, None) => Some(s),
        _ => None,
    };
    latencies.sort_by(f64::total_cmp);
    Ok(IngestResult {
        backend: backend.into(),
        senders: args.senders,
        batch_size: args.batch,
        seconds,
        batches: latencies.len() as u64,
        rows_inserted: inserted,
        rows_duplicate: duplicates,
        rows_per_sec: inserted as f64 / seconds,
        batch_p50_ms: quantile(&latencies, 0.50),
        batch_p99_ms: quantile(&latencies, 0.99),
        cpu_us_per_row: CpuPerRow {
            sidecar,
            database,
            metering,
            bench: per_row(2),
        },
    })
}
