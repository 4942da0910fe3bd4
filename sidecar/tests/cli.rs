//! The `tollgate` binary as a person runs it: from a fresh directory, with
//! the embedded SQLite default, and `serve` stopping cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use tollgate_wire::Algorithm;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A fresh working directory, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let dir = std::env::temp_dir().join(format!("tollgate-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        WorkDir(dir)
    }

    fn run(&self, args: &[&str]) -> Output {
        tollgate(&self.0).args(args).output().expect("run tollgate")
    }

    /// Runs with these environment variables set.
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = tollgate(&self.0);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.args(args).output().expect("run tollgate")
    }

    /// Runs with these environment variables and expects success; returns stdout.
    fn ok_with(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run_with(env, args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary in `dir`, with no database or token settings inherited.
fn tollgate(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_LISTEN")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_INTERNAL_TOKEN")
        .env_remove("TOLLGATE_MASTER_KEY")
        .env_remove("TOLLGATE_PREVIOUS_MASTER_KEY")
        .env_remove("TOLLGATE_DRAIN_PERIOD")
        .env_remove("TOLLGATE_CONSOLE_ORIGIN")
        .env_remove("RUST_LOG");
    cmd
}

#[test]
fn keys_create_then_list_from_a_fresh_directory() {
    let dir = WorkDir::new("fresh");
    let text = dir.ok(&["keys", "create", "--name", "demo"]);
    assert!(text.contains("shown once"), "{text}");
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("tg_") && w.len() == 43)
        .unwrap_or_else(|| panic!("no key in: {text}"));
    assert!(dir.0.join(".tollgate/tollgate.db").is_file());

    let list = dir.ok(&["keys", "list"]);
    assert!(list.contains("demo") && list.contains(&key[..9]), "{list}");
    assert!(!list.contains(key), "list must not show the key");

    let created: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "create",
        "--name",
        "j",
        "--expires-at",
        "2030-01-01T00:00:00Z",
        "--json",
    ]))
    .expect("one JSON object");
    for field in [
        "id",
        "name",
        "prefix",
        "key",
        "status",
        "created_at",
        "expires_at",
    ] {
        assert!(created.get(field).is_some(), "missing {field}: {created}");
    }
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["expires_at"], "2030-01-01T00:00:00.000Z");
    assert_eq!(created["prefix"], &created["key"].as_str().unwrap()[..9]);

    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], created["id"]);
    assert!(list
        .iter()
        .all(|k| k.get("key").is_none() && k.get("key_hash").is_none()));
}

#[test]
fn keys_with_format_or_bidi_characters_in_their_name_are_refused() {
    let dir = WorkDir::new("bidi-name");
    for args in [
        &["keys", "create", "--name", "evil\u{202E}cod.exe"][..],
        &["keys", "create", "--name", "a\u{2029}b"][..],
        &[
            "keys",
            "import",
            "--name",
            "a\u{200B}b",
            "--key",
            "legacy-key-123",
        ][..],
    ] {
        let out = dir.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the key name must not contain control, format or bidi characters"),
            "{args:?}: {err}"
        );
    }
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]), "nothing was stored");
}

#[test]
fn keys_import_revoke_and_usage_summary() {
    let dir = WorkDir::new("manage");
    let imported: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "import",
        "--name",
        "legacy",
        "--key",
        "old-plaintext-key",
        "--json",
    ]))
    .unwrap();
    assert_eq!(imported["prefix"], "old-plain");
    assert!(
        imported.get("key").is_none(),
        "import does not echo the key"
    );

    let dup = dir.run(&[
        "keys",
        "import",
        "--name",
        "again",
        "--key",
        "old-plaintext-key",
    ]);
    assert!(!dup.status.success());
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(err.contains("already registered"), "{err}");
    assert!(!err.contains("old-plaintext-key"), "{err}");

    let empty = dir.run(&["keys", "import", "--name", "e", "--key", ""]);
    assert!(!empty.status.success());
    let control = dir.run(&["keys", "import", "--name", "c", "--key", "a\u{1}b"]);
    assert!(!control.status.success());

    let id = imported["id"].to_string();
    let first = dir.ok(&["keys", "revoke", &id]);
    assert!(first.contains("Revoked"), "{first}");
    let second = dir.ok(&["keys", "revoke", &id]);
    assert!(second.contains("already revoked"), "{second}");
    let unknown = dir.run(&["keys", "revoke", "4242"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("4242"));

    let summary: Value =
        serde_json::from_str(&dir.ok(&["usage", "summary", "--since", "7d", "--json"])).unwrap();
    assert!(summary["since"].is_string());
    assert_eq!(summary["rows"], serde_json::json!([]));
    assert!(dir
        .ok(&["usage", "summary", "--key", "1"])
        .contains("No usage"));
    assert!(!dir
        .run(&["usage", "summary", "--since", "soon"])
        .status
        .success());
}

/// An instant out of the accepted range (1970 up to year 3000) is an error
/// naming its flag, with exit status 1: never a panic, never an abort.
#[test]
fn instants_out_of_range_are_an_error_naming_the_flag() {
    let dir = WorkDir::new("far-instants");
    for at in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",
        "3000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ] {
        for (command, flag) in [
            (&["usage", "summary", "--since"][..], "--since"),
            (&["usage", "reconcile", "--at"][..], "--at"),
            (
                &["keys", "create", "--name", "far", "--expires-at"][..],
                "--expires-at",
            ),
            (
                &[
                    "keys",
                    "import",
                    "--name",
                    "far",
                    "--key",
                    "legacy-key-0123",
                    "--expires-at",
                ][..],
                "--expires-at",
            ),
        ] {
            let args = [command, &[at]].concat();
            let out = dir.run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(
                err.contains(flag) && err.contains("out of range"),
                "{args:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    for (args, flag) in [
        (&["usage", "summary", "--since", "30000d"][..], "--since"),
        (
            &["usage", "prune", "--older-than", "30000d"][..],
            "--older-than",
        ),
    ] {
        let out = dir.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(flag) && err.contains("out of range"),
            "{args:?}: {err}"
        );
    }
    let keys: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(keys, serde_json::json!([]), "a refused key was stored");
}

#[test]
fn keys_create_and_import_refuse_an_expiry_that_has_passed() {
    let dir = WorkDir::new("born-expired");
    for command in [
        &["keys", "create", "--name", "late"][..],
        &[
            "keys",
            "import",
            "--name",
            "late",
            "--key",
            "legacy-key-born-expired",
        ][..],
    ] {
        for past in ["2020-01-01T00:00:00Z", "2020-01-01T02:00:00+02:00"] {
            let out = dir.run(&[command, &["--expires-at", past, "--json"]].concat());
            assert!(!out.status.success(), "{command:?} {past} was accepted");
            assert!(out.stdout.is_empty(), "{command:?} printed a key");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("expires_at") && err.contains("future"),
                "{command:?}: {err}"
            );
            assert!(!err.contains("legacy-key-born-expired"), "{err}");
        }
    }
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]), "no key is stored");
}

#[test]
fn keys_list_shows_expired_once_the_expiry_passes() {
    let dir = WorkDir::new("expiring");
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let expiring: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "create",
        "--name",
        "expiring",
        "--expires-at",
        &sidecar::domain::clock::format_rfc3339(expires_at),
        "--json",
    ]))
    .unwrap();
    assert_eq!(expiring["status"], "ACTIVE");
    dir.ok(&["keys", "create", "--name", "lasting"]);

    let left = expires_at - time::OffsetDateTime::now_utc();
    std::thread::sleep(left.unsigned_abs() + Duration::from_millis(50));
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["EXPIRED", "ACTIVE"], "{list}");

    let table = dir.ok(&["keys", "list"]);
    let status_of = |name: &str| {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{table}"));
        line.split_whitespace().nth(3).unwrap().to_string()
    };
    assert_eq!(status_of("expiring"), "EXPIRED", "{table}");
    assert_eq!(status_of("lasting"), "ACTIVE", "{table}");

    // A revoked key is revoked, whatever its expiry.
    let revoked: Value = serde_json::from_str(&dir.ok(&["keys", "revoke", "1", "--json"])).unwrap();
    assert_eq!(revoked["key"]["status"], "REVOKED");
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list[0]["status"], "REVOKED");
}

#[test]
fn token_sign_binds_the_body_and_verifies() {
    let dir = WorkDir::new("token");
    std::fs::write(dir.0.join("body.json"), b"{\"text\":\"hi\"}").unwrap();
    let out = tollgate(&dir.0)
        .env("TG_SECRET", "s3cret-for-tests")
        .args([
            "token",
            "sign",
            "--secret-env",
            "TG_SECRET",
            "--body",
            "body.json",
            "--method",
            "POST",
            "--path",
            "/proxy/analyze",
            "--ttl",
            "2m",
            "--kid",
            "k1",
            "--jti",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let header = decode(parts[0]);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], "k1");
    let claims = decode(parts[1]);
    // sha256 of {"text":"hi"}, computed independently (sha256sum).
    assert_eq!(
        claims["body_sha256"],
        "e7b995efa755c5ff3b84d2188b58cb4ae916a59470eb3761df8a814f11763500"
    );
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], "/proxy/analyze");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    // Verified as the filter verifies it.
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert!(Algorithm::Hs256.verify(b"s3cret-for-tests", signing_input.as_bytes(), &tag));

    let missing = tollgate(&dir.0)
        .env_remove("TG_NOPE")
        .args([
            "token",
            "sign",
            "--secret-env",
            "TG_NOPE",
            "--body",
            "body.json",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("TG_NOPE"));
}

#[test]
fn token_sign_takes_each_hmac_algorithm_by_its_jose_name() {
    let dir = WorkDir::new("token-alg");
    std::fs::write(dir.0.join("body.json"), b"").unwrap();
    let sign = |alg: &str| {
        tollgate(&dir.0)
            .env("TG_SECRET", "s3cret-for-tests")
            .args(["token", "sign", "--secret-env", "TG_SECRET"])
            .args(["--body", "body.json", "--alg", alg])
            .output()
            .unwrap()
    };
    for alg in Algorithm::ALL {
        let out = sign(alg.name());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let parts: Vec<&str> = token.trim().split('.').collect();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], alg.name());
        let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        assert!(alg.verify(b"s3cret-for-tests", signing_input.as_bytes(), &tag));
    }
    for bad in ["hs256", "none", "RS256"] {
        let out = sign(bad);
        assert!(!out.status.success(), "--alg {bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("HS256, HS384, HS512"), "{err}");
    }
}

#[test]
fn serve_refuses_to_start_without_an_internal_token() {
    let dir = WorkDir::new("notoken");
    let out = dir.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOLLGATE_INTERNAL_TOKEN"), "{err}");
    let out = tollgate(&dir.0)
        .env("TOLLGATE_INTERNAL_TOKEN", "short")
        .args(["serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP/1.1 GET; returns the whole answer, or None if nobody listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// `tollgate serve` on `port` with `env`, its log piped; returns once it
/// answers `/healthz`, with that answer.
// The child is handed to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_serve(dir: &WorkDir, port: u16, env: &[(&str, &str)]) -> (Child, String) {
    let mut command = tollgate(&dir.0);
    command.envs(env.iter().copied());
    let mut child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(answer) = http_get(port, "/healthz") {
            return (child, answer);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sidecar did not start listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits at most `limit` for `child` to exit; its status and its log.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// A request to the sidecar on `port` over a connection from `source` (any
/// address of 127.0.0.0/8 is this machine), naming `host`; the answer.
fn http_from(source: [u8; 4], port: u16, request_line: &str, host: &str, body: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        let request = format!(
            "{request_line} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    })
}

#[test]
fn serve_slows_console_logins_per_peer_address_and_answers_only_at_its_origins() {
    let dir = WorkDir::new("console-origins");
    let port = free_port();
    let admin = "admin-token-console-0123456789";
    let origins = format!("http://127.0.0.1:{port},http://tollgate.test:{port}");
    let (mut child, _) = spawn_serve(
        &dir,
        port,
        &[
            (
                "TOLLGATE_INTERNAL_TOKEN",
                "internal-token-console-0123456789",
            ),
            ("TOLLGATE_ADMIN_TOKEN", admin),
            ("TOLLGATE_CONSOLE_ORIGIN", &origins),
            ("TOLLGATE_DRAIN_PERIOD", "0s"),
        ],
    );
    let named = format!("tollgate.test:{port}");
    let get = |host: &str| http_from([127, 0, 0, 1], port, "GET /console/login", host, "");
    let login = |source: [u8; 4], token: &str| {
        http_from(
            source,
            port,
            "POST /console/login",
            &named,
            &format!("token={token}"),
        )
    };
    // Everything is asked before the sidecar is stopped, and checked after.
    let page = get(&named);
    let others = [
        get(&format!("localhost:{port}")),
        get(&format!("rebound.test:{port}")),
    ];
    // Five wrong tokens from 127.0.0.2, then it waits, even with the
    // right one; 127.0.0.3 is another client.
    let wrong: Vec<String> = (0..5)
        .map(|_| login([127, 0, 0, 2], "wrong-token-0123456789"))
        .collect();
    let waits = login([127, 0, 0, 2], admin);
    let other = login([127, 0, 0, 3], admin);
    sigterm(&child);
    let (status, stderr) = wait_exit(&mut child, Duration::from_secs(15));

    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for page in others {
        assert!(page.starts_with("HTTP/1.1 403"), "{page}");
        assert!(page.contains("host_not_allowed"), "{page}");
    }
    for answer in wrong {
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    assert!(waits.starts_with("HTTP/1.1 429"), "{waits}");
    assert!(
        waits.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{waits}"
    );
    assert!(other.starts_with("HTTP/1.1 303"), "{other}");
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("console_origins={origins}")),
        "the origins are printed at start: {stderr}"
    );
    assert!(
        stderr.contains("127.0.0.2"),
        "a throttled client is logged: {stderr}"
    );
}

#[test]
fn serve_refuses_a_console_origin_that_is_not_one() {
    let dir = WorkDir::new("bad-origin");
    let mut child = tollgate(&dir.0)
        .env(
            "TOLLGATE_INTERNAL_TOKEN",
            "internal-token-console-0123456789",
        )
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--console-origin", "http://h:1/console"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with a console origin that is not one");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, err) = wait_exit(&mut child, Duration::from_secs(1));
    assert!(!status.success());
    assert!(err.contains("--console-origin: "), "{err}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = WorkDir::new("sigterm");
    let port = free_port();
    let internal = "internal-token-sigterm-0123456789";
    let (mut child, health) = spawn_serve(
        &dir,
        port,
        &[
            ("TOLLGATE_INTERNAL_TOKEN", internal),
            ("TOLLGATE_MASTER_KEY", NEW_MASTER_KEY),
            ("DATABASE_URL", "sqlite://data/side.db"),
            ("TOLLGATE_DRAIN_PERIOD", "0s"),
        ],
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(http_get(port, "/readyz")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    sigterm(&child);
    let (status, stderr) = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        http_get(port, "/healthz").is_none(),
        "still accepting after exit"
    );

    // The start-up log shows the effective config with secrets masked.
    assert!(stderr.contains("internal_token=set (33 chars)"), "{stderr}");
    assert!(stderr.contains("admin_token=not set"), "{stderr}");
    assert!(stderr.contains("sqlite://data/side.db"), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!stderr.contains(internal), "the token leaked into the log");
    assert!(stderr.contains("master_key=set (id "), "{stderr}");
    assert!(
        !stderr.contains(NEW_MASTER_KEY),
        "the master key leaked into the log"
    );
    assert!(dir.0.join("data/side.db").is_file());
}

/// A bare HTTP/1.1 POST with the internal token on a keep-alive connection
/// (so the answer's own `Connection` header shows); the answer's head and
/// body, or None if nobody listens.
fn http_post_internal(port: u16, path: &str, token: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nx-tollgate-internal-token: {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok)?;
            if rest.len() >= length {
                return Some(text);
            }
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
}

/// SIGTERM starts the drain: `/readyz` answers 503 `draining` at once while
/// the key look-up keeps answering (with `Connection: close`), and the
/// process exits 0 only after the drain period.
#[test]
fn serve_drains_before_it_stops() {
    let dir = WorkDir::new("drain");
    let port = free_port();
    let internal = "internal-token-drain-0123456789";
    let drain = Duration::from_secs(2);
    let (mut child, _) = spawn_serve(
        &dir,
        port,
        &[
            ("TOLLGATE_INTERNAL_TOKEN", internal),
            ("TOLLGATE_DRAIN_PERIOD", "2s"),
            ("DATABASE_URL", "sqlite://data/drain.db"),
        ],
    );
    let started = Instant::now();
    while !http_get(port, "/readyz").is_some_and(|a| a.starts_with("HTTP/1.1 200")) {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify = format!(r#"{{"key_hash":"{}"}}"#, "ab".repeat(32));
    let before = http_post_internal(port, "/v1/internal/keys/verify", internal, &verify).unwrap();
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert!(
        !before.to_ascii_lowercase().contains("connection: close"),
        "{before}"
    );

    sigterm(&child);
    let signalled = Instant::now();
    let ready = loop {
        let answer = http_get(port, "/readyz").expect("the listener closed during the drain");
        if !answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "still ready: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains(r#""code":"draining""#), "{ready}");
    let healthy = http_get(port, "/healthz").unwrap();
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    let during = http_post_internal(port, "/v1/internal/keys/verify", internal, &verify).unwrap();
    assert!(during.starts_with("HTTP/1.1 200"), "{during}");
    assert!(during.contains(r#""verdict":"not_found""#), "{during}");
    assert!(
        during.to_ascii_lowercase().contains("connection: close"),
        "{during}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited during the drain"
    );

    let (status, stderr) = wait_exit(&mut child, drain + Duration::from_secs(15));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        took >= drain,
        "exited {took:?} after SIGTERM, before the drain period"
    );
    assert!(stderr.contains("drain_period=2s"), "{stderr}");
    assert!(stderr.contains("draining"), "{stderr}");
    assert!(
        http_get(port, "/healthz").is_none(),
        "still accepting after exit"
    );
}

const OLD_MASTER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW_MASTER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn keys_create_with_a_signing_secret_shows_it_once() {
    let dir = WorkDir::new("signing-secret");
    let master = [("TOLLGATE_MASTER_KEY", OLD_MASTER_KEY)];
    let created: Value = serde_json::from_str(&dir.ok_with(
        &master,
        &[
            "keys",
            "create",
            "--name",
            "own",
            "--signing-secret",
            "--json",
        ],
    ))
    .expect("one JSON object");
    let secret = created["signing_secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("tgs_") && secret.len() == 68,
        "{created}"
    );
    assert_eq!(created["has_signing_secret"], true);
    assert!(created["key"].as_str().unwrap().starts_with("tg_"));

    let text = dir.ok_with(
        &master,
        &["keys", "create", "--name", "own-text", "--signing-secret"],
    );
    let shown = text
        .split_whitespace()
        .find(|w| w.starts_with("tgs_"))
        .unwrap_or_else(|| panic!("no secret in: {text}"));
    assert_eq!(shown.len(), 68, "{text}");
    assert!(text.contains("shown once"), "{text}");
    assert!(text.contains("own signing secret"), "{text}");

    // Without --signing-secret a key has none, master key or not.
    let plain: Value =
        serde_json::from_str(&dir.ok(&["keys", "create", "--name", "plain", "--json"])).unwrap();
    assert!(plain.get("signing_secret").is_none(), "{plain}");
    assert_eq!(plain["has_signing_secret"], false);

    let listed = dir.ok(&["keys", "list", "--json"]);
    assert!(
        !listed.contains(&secret) && !listed.contains(shown),
        "{listed}"
    );
    let list: Value = serde_json::from_str(&listed).unwrap();
    let flags: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["has_signing_secret"])
        .collect();
    assert_eq!(
        flags,
        [&Value::Bool(true), &Value::Bool(true), &Value::Bool(false)]
    );
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("signing_secret").is_none()));
    let table = dir.ok(&["keys", "list"]);
    assert!(!table.contains(&secret), "{table}");
    assert!(table.contains("SECRET") && table.contains("own") && table.contains("shared"));
    // The database holds it only sealed.
    let db = std::fs::read(dir.0.join(".tollgate/tollgate.db")).unwrap();
    let wal = std::fs::read(dir.0.join(".tollgate/tollgate.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(64).any(|w| w == &secret.as_bytes()[4..]));
    }
}

#[test]
fn keys_create_with_a_signing_secret_needs_a_valid_master_key() {
    let dir = WorkDir::new("no-master-key");
    let args = [
        "keys",
        "create",
        "--name",
        "x",
        "--signing-secret",
        "--json",
    ];
    let out = dir.run(&args);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "printed a key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOLLGATE_MASTER_KEY"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");

    let bad = "not-a-master-key-but-a-password";
    for (name, value) in [
        ("TOLLGATE_MASTER_KEY", bad),
        ("TOLLGATE_MASTER_KEY", &OLD_MASTER_KEY[..60]),
    ] {
        let out = dir.run_with(&[(name, value)], &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains("64 hex digits"), "{err}");
        assert!(!err.contains(value), "the value was echoed: {err}");
    }
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list, serde_json::json!([]), "no key is stored");

    // `serve` refuses a malformed master key at start-up.
    let out = dir.run_with(
        &[
            ("TOLLGATE_INTERNAL_TOKEN", "internal-token-0123456789"),
            ("TOLLGATE_MASTER_KEY", bad),
        ],
        &["serve", "--listen", "127.0.0.1:0"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOLLGATE_MASTER_KEY"), "{err}");
    assert!(!err.contains(bad), "{err}");
}

#[test]
fn token_sign_takes_a_keys_own_signing_secret() {
    let dir = WorkDir::new("token-own-secret");
    let created: Value = serde_json::from_str(&dir.ok_with(
        &[("TOLLGATE_MASTER_KEY", OLD_MASTER_KEY)],
        &[
            "keys",
            "create",
            "--name",
            "c",
            "--signing-secret",
            "--json",
        ],
    ))
    .unwrap();
    let secret = created["signing_secret"].as_str().unwrap();
    std::fs::write(dir.0.join("body.json"), b"{\"text\":\"hi\"}").unwrap();
    let token = dir.ok_with(
        &[("CLIENT_SECRET", secret)],
        &[
            "token",
            "sign",
            "--secret-env",
            "CLIENT_SECRET",
            "--body",
            "body.json",
        ],
    );
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3);
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    let tag = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    // The HMAC key is the secret's text, as PyJWT uses it.
    assert!(Algorithm::Hs256.verify(secret.as_bytes(), signing_input.as_bytes(), &tag));
    assert!(!Algorithm::Hs256.verify(b"s3cret-for-tests", signing_input.as_bytes(), &tag));
}

#[test]
fn keys_rewrap_moves_every_secret_to_the_new_master_key() {
    let dir = WorkDir::new("rewrap");
    let old = [("TOLLGATE_MASTER_KEY", OLD_MASTER_KEY)];
    for name in ["a", "b"] {
        dir.ok_with(
            &old,
            &["keys", "create", "--name", name, "--signing-secret"],
        );
    }
    dir.ok(&["keys", "create", "--name", "plain"]);

    // The new key alone cannot open the old secrets: refused, nothing written.
    let out = dir.run_with(
        &[("TOLLGATE_MASTER_KEY", NEW_MASTER_KEY)],
        &["keys", "rewrap"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was rewrapped"), "{err}");
    assert!(err.contains("key 1") && err.contains("key 2"), "{err}");
    assert!(
        !err.contains(OLD_MASTER_KEY) && !err.contains(NEW_MASTER_KEY),
        "{err}"
    );
    let out = dir.run(&["keys", "rewrap"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOLLGATE_MASTER_KEY"));

    let rotating = [
        ("TOLLGATE_MASTER_KEY", NEW_MASTER_KEY),
        ("TOLLGATE_PREVIOUS_MASTER_KEY", OLD_MASTER_KEY),
    ];
    let text = dir.ok_with(&rotating, &["keys", "rewrap"]);
    assert!(text.contains("Rewrapped 2 signing secret(s)"), "{text}");
    assert!(text.contains("0 already were"), "{text}");
    // Done: the new master key alone opens every secret.
    let report: Value = serde_json::from_str(&dir.ok_with(
        &[("TOLLGATE_MASTER_KEY", NEW_MASTER_KEY)],
        &["keys", "rewrap", "--json"],
    ))
    .unwrap();
    assert_eq!(report["rewrapped"], 0, "{report}");
    assert_eq!(report["already_current"], 2, "{report}");
    assert_eq!(report["changed_meanwhile"], 0, "{report}");
    assert_eq!(report["master_key_id"].as_str().unwrap().len(), 16);
    // And the old one alone no longer does.
    assert!(!dir.run_with(&old, &["keys", "rewrap"]).status.success());
}

/// Usage records of key 1 stored straight into the work directory's SQLite
/// file: `old` of them 100 days ago, `new` of them now.
async fn seed_usage(dir: &WorkDir, old: usize, new: usize) {
    use sidecar::store::{NewKey, Store};
    let target = sidecar::store::DatabaseTarget::Sqlite(dir.0.join(".tollgate/tollgate.db"));
    let store = Store::connect(&target).await.unwrap();
    store.migrate().await.unwrap();
    store
        .insert_key(&NewKey {
            name: "seeded".into(),
            prefix: "tg_seeded".into(),
            key_hash: "0".repeat(64),
            created_at: sidecar::domain::clock::now_ms(),
            expires_at: None,
            sealed_signing_secret: None,
            limits: Default::default(),
            team_id: None,
        })
        .await
        .unwrap();
    let now = sidecar::domain::clock::to_unix_ms(sidecar::domain::clock::now_ms());
    let records: Vec<tollgate_wire::UsageRecord> = (0..old + new)
        .map(|i| tollgate_wire::UsageRecord {
            request_id: format!("seed-{i}"),
            api_key_id: 1,
            method: "POST".into(),
            endpoint: "/proxy/analyze".into(),
            status_code: 200,
            outcome: tollgate_wire::Outcome::Allowed,
            request_bytes: 10,
            response_bytes: 4,
            units: 3,
            duration_ms: 1,
            timestamp_ms: if i < old { now - 100 * 86_400_000 } else { now },
            llm: None,
        })
        .collect();
    store.insert_usage(&records).await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_prune_deletes_old_rows_and_keeps_the_summary() {
    let dir = WorkDir::new("prune");
    seed_usage(&dir, 23, 5).await;
    let summary = || dir.ok(&["usage", "summary", "--json"]);
    let before = summary();
    let rows: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        rows["rows"],
        serde_json::json!([{"api_key_id": 1, "outcome": "allowed", "requests": 28,
                            "request_bytes": 280, "response_bytes": 112, "units": 84, "input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "reasoning_tokens": 0,
                            "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0}]),
        "{before}"
    );
    // The table has the same columns.
    let table = dir.ok(&["usage", "summary"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[1..],
        [
            vec![
                "API_KEY_ID",
                "OUTCOME",
                "REQUESTS",
                "REQUEST_BYTES",
                "RESPONSE_BYTES",
                "UNITS",
                "INPUT_TOK",
                "OUTPUT_TOK",
                "CACHED_TOK",
                "REASON_TOK",
                "COST",
                "UNPRICED"
            ],
            vec!["1", "allowed", "28", "280", "112", "84", "0", "0", "0", "0", "-", "0"],
        ],
        "{table}"
    );

    let report: Value = serde_json::from_str(&dir.ok(&[
        "usage",
        "prune",
        "--older-than",
        "90d",
        "--batch-size",
        "4",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["deleted"], 23, "{report}");
    assert!(report["before"].as_str().unwrap().ends_with('Z'));
    assert_eq!(summary(), before, "the rollups are kept");
    let again = dir.ok(&["usage", "prune", "--older-than", "90d"]);
    assert!(again.contains("Deleted 0 usage rows"), "{again}");

    for (args, says) in [
        (&["--older-than", "12h"][..], "at least 1d"),
        (&["--older-than", "ninety"][..], "--older-than"),
        (&["--older-than", "90"][..], "no unit"),
        (
            &["--older-than", "90d", "--batch-size", "0"][..],
            "--batch-size",
        ),
        (&[][..], "--older-than"),
    ] {
        let out = dir.run(&[&["usage", "prune"][..], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(summary(), before);
}

#[test]
fn keys_carry_limits_from_the_command_line() {
    let dir = WorkDir::new("limits");
    let created: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "create",
        "--name",
        "limited",
        "--rate",
        "10/s",
        "--burst",
        "20",
        "--quota",
        "requests=1000/day",
        "--quota",
        "request_bytes=1GiB/month",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        created["limits"],
        serde_json::json!({
            "rate": {"count": 10, "per": "s", "burst": 20},
            "quotas": [
                {"kind": "requests", "limit": 1000, "window": "day"},
                {"kind": "request_bytes", "limit": 1073741824u64, "window": "month"},
            ]
        })
    );
    let id = created["id"].to_string();

    // `keys limits` changes what it names and keeps the rest.
    let changed: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "limits",
        &id,
        "--quota",
        "requests=5/hour",
        "--json",
    ]))
    .unwrap();
    assert_eq!(changed["limits"]["rate"]["burst"], 20);
    assert_eq!(
        changed["limits"]["quotas"][0],
        serde_json::json!({"kind": "requests", "limit": 5, "window": "hour"})
    );
    let text = dir.ok(&["keys", "limits", &id, "--clear", "--rate", "3/min"]);
    assert!(text.contains("rate=3/min burst=1"), "{text}");
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(
        list[0]["limits"],
        serde_json::json!({"rate": {"count": 3, "per": "min", "burst": 1}, "quotas": []})
    );
    assert!(dir.ok(&["keys", "list"]).contains("rate=3/min"));

    // A limit that cannot be read fails, naming it, and changes nothing.
    for args in [
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--quota",
            "requests=10/week",
        ][..],
        &["keys", "limits", &id, "--burst", "0"][..],
        &["keys", "limits", "999", "--rate", "1/s"][..],
    ] {
        let out = dir.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            error.contains("week") || error.contains("burst") || error.contains("999"),
            "{args:?}: {error}"
        );
    }
    let list: Value = serde_json::from_str(&dir.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["limits"]["rate"]["count"], 3);

    // Reconcile: a key with a quota and nothing charged is within it.
    dir.ok(&["keys", "limits", &id, "--quota", "requests=10/day"]);
    let rows: Value = serde_json::from_str(&dir.ok(&["usage", "reconcile", "--json"])).unwrap();
    assert_eq!(rows[0]["quota"], "requests");
    assert_eq!(rows[0]["over_limit"], false);
    assert_eq!(rows[0]["ledger"], 0);
    let table = dir.ok(&["usage", "reconcile", "--window", "day", "--key", &id]);
    assert!(table.contains("0 key quota(s) over the limit"), "{table}");
    let week = dir.run(&["usage", "reconcile", "--window", "week"]);
    assert!(!week.status.success());
    let error = String::from_utf8_lossy(&week.stderr);
    assert!(error.contains("minute, hour, day or month"), "{error}");
}

/// LLM calls of key 1 stored straight into the work directory's SQLite
/// file, besides `seed_usage`'s two plain calls: two of `gpt-4o` and one
/// of `claude-sonnet-4`, a minute apart, the newest a minute ago.
async fn seed_llm_usage(dir: &WorkDir) {
    use tollgate_wire::{Api, LlmUsage, TokenUsage, UsageSource};
    seed_usage(dir, 0, 2).await;
    let target = sidecar::store::DatabaseTarget::Sqlite(dir.0.join(".tollgate/tollgate.db"));
    let store = sidecar::store::Store::connect(&target).await.unwrap();
    let now = sidecar::domain::clock::to_unix_ms(sidecar::domain::clock::now_ms());
    let calls = [
        ("llm-1", "gpt-4o", [100, 20, 40, 5]),
        ("llm-2", "claude-sonnet-4", [300, 60, 0, 0]),
        ("llm-3", "gpt-4o", [50, 10, 10, 2]),
    ];
    let records: Vec<tollgate_wire::UsageRecord> = calls
        .iter()
        .enumerate()
        .map(|(i, (id, model, t))| tollgate_wire::UsageRecord {
            request_id: id.to_string(),
            api_key_id: 1,
            method: "POST".into(),
            endpoint: "/v1/chat/completions".into(),
            status_code: 200,
            outcome: tollgate_wire::Outcome::Allowed,
            request_bytes: 10,
            response_bytes: 4,
            units: 0,
            duration_ms: 1,
            timestamp_ms: now - (3 - i as u64) * 60_000,
            llm: Some(LlmUsage {
                api: Api::OpenAiChat,
                model: model.to_string(),
                streamed: i == 1,
                usage_source: UsageSource::Reported,
                tokens: TokenUsage {
                    input_tokens: t[0],
                    output_tokens: t[1],
                    cached_input_tokens: t[2],
                    reasoning_tokens: t[3],
                },
            }),
        })
        .collect();
    store.insert_usage(&records).await.unwrap();
    store.close().await;
}

/// Token quotas from the command line: k and M, a minute window, a quota
/// scoped to one model; bad ones refused naming what is wrong; and
/// `usage reconcile` counting a scoped quota's tokens from the ledger, with
/// a non-zero exit when they pass its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_carry_token_quotas_and_reconcile_them() {
    let dir = WorkDir::new("token-quotas");
    seed_llm_usage(&dir).await;
    let help = dir.ok(&["keys", "limits", "--help"]);
    assert!(
        help.contains("tokens=1M/month") && help.contains("minute"),
        "{help}"
    );
    let changed: Value = serde_json::from_str(&dir.ok(&[
        "keys",
        "limits",
        "1",
        "--quota",
        "tokens=1M/month",
        "--quota",
        "tokens=100/month@gpt-4o",
        "--quota",
        "input_tokens=2k/minute@claude-sonnet-4",
        "--quota",
        "output_tokens=5k/hour",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        changed["limits"]["quotas"],
        serde_json::json!([
            {"kind": "tokens", "limit": 1_000_000, "window": "month"},
            {"kind": "tokens", "limit": 100, "window": "month", "model": "gpt-4o"},
            {"kind": "input_tokens", "limit": 2000, "window": "minute", "model": "claude-sonnet-4"},
            {"kind": "output_tokens", "limit": 5000, "window": "hour"},
        ])
    );
    let text = dir.ok(&["keys", "list"]);
    assert!(text.contains("tokens=100/month@gpt-4o"), "{text}");
    for (quota, says) in [
        ("tokens=1k/day@", "a model after `@`"),
        ("tokens=5/week", "minute, hour, day or month"),
        ("tokens=2G/day", "not a whole number"),
        ("input_tokens=1/day@gpt 4o", "visible ASCII"),
    ] {
        let out = dir.run(&["keys", "create", "--name", "x", "--quota", quota]);
        assert!(!out.status.success(), "{quota} was taken");
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(error.contains(says), "{quota}: {error}");
    }

    // gpt-4o's calls hold 180 tokens (input and output) this month, past
    // its 100; the unscoped quota counts every call's.
    let out = dir.run(&["usage", "reconcile", "--json"]);
    assert!(
        !out.status.success(),
        "a quota over its limit exits non-zero"
    );
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("1 key quota(s) over the limit"), "{error}");
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(&str, u64, bool)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["quota"].as_str().unwrap(),
                r["ledger"].as_u64().unwrap(),
                r["over_limit"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen[0], ("tokens", 180 + 360, false));
    assert_eq!(seen[1], ("tokens@gpt-4o", 180, true));
    assert_eq!(seen[2].0, "input_tokens@claude-sonnet-4");
    let table = dir.run(&["usage", "reconcile", "--window", "month"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("tokens@gpt-4o") && table.contains("OVER LIMIT"),
        "{table}"
    );
    // The minute window holds none of the calls, made minutes ago.
    let minutes: Value =
        serde_json::from_str(&dir.ok(&["usage", "reconcile", "--window", "minute", "--json"]))
            .unwrap();
    assert_eq!(minutes.as_array().unwrap().len(), 1);
    assert_eq!(minutes[0]["window"], "minute");
    assert_eq!(minutes[0]["ledger"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_summary_by_model_and_usage_log_report_tokens() {
    let dir = WorkDir::new("llm-usage");
    seed_llm_usage(&dir).await;
    let tokens = |input, output, cached, reasoning| {
        serde_json::json!({"input_tokens": input, "output_tokens": output,
                           "cached_input_tokens": cached, "reasoning_tokens": reasoning})
    };
    let with = |mut row: Value, t: Value| {
        row.as_object_mut()
            .unwrap()
            .extend(t.as_object().unwrap().clone());
        row
    };

    let by_model: Value =
        serde_json::from_str(&dir.ok(&["usage", "summary", "--by", "model", "--json"])).unwrap();
    assert_eq!(
        by_model["rows"],
        serde_json::json!([
            with(
                serde_json::json!({"api_key_id": 1, "model": null, "requests": 2,
                "request_bytes": 20, "response_bytes": 8, "units": 6,
                "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 0}),
                tokens(0, 0, 0, 0)
            ),
            with(
                serde_json::json!({"api_key_id": 1, "model": "claude-sonnet-4", "requests": 1,
                "request_bytes": 10, "response_bytes": 4, "units": 0,
                "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 1}),
                tokens(300, 60, 0, 0)
            ),
            with(
                serde_json::json!({"api_key_id": 1, "model": "gpt-4o", "requests": 2,
                "request_bytes": 20, "response_bytes": 8, "units": 0,
                "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 2}),
                tokens(150, 30, 50, 7)
            ),
        ]),
        "{by_model}"
    );
    // By outcome (the default), the same tokens in one row.
    let by_outcome: Value = serde_json::from_str(&dir.ok(&["usage", "summary", "--json"])).unwrap();
    assert_eq!(
        by_outcome["rows"],
        serde_json::json!([with(
            serde_json::json!({"api_key_id": 1, "outcome": "allowed", "requests": 5,
                "request_bytes": 50, "response_bytes": 20, "units": 6,
                "cost_micros": null, "currency": null, "priced_rows": 0, "unpriced_rows": 3}),
            tokens(450, 90, 50, 7)
        )])
    );
    let table = dir.ok(&["usage", "summary", "--by", "model"]);
    assert!(
        table.contains("MODEL") && table.contains("INPUT_TOK"),
        "{table}"
    );
    let gpt: Vec<&str> = table
        .lines()
        .find(|l| l.contains("gpt-4o"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        gpt,
        ["1", "gpt-4o", "2", "20", "8", "0", "150", "30", "50", "7", "unpriced", "2"]
    );
    let bad = dir.run(&["usage", "summary", "--by", "api"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("model"));

    let log: Value = serde_json::from_str(&dir.ok(&[
        "usage", "log", "--key", "1", "--since", "150s", "--limit", "3", "--json",
    ]))
    .unwrap();
    let rows = log.as_array().unwrap();
    // The plain calls (now), then llm-3 and llm-2; llm-1 is older than 150s.
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{log}");
    assert_eq!(ids, ["seed-1", "seed-0", "llm-3"]);
    let log: Value =
        serde_json::from_str(&dir.ok(&["usage", "log", "--key", "1", "--since", "150s", "--json"]))
            .unwrap();
    let rows = log.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{log}");
    assert_eq!(rows[3]["request_id"], "llm-2", "newest first: {log}");
    assert_eq!(
        rows[3],
        with(
            serde_json::json!({"request_id": "llm-2", "api": "openai.chat",
                "model": "claude-sonnet-4", "streamed": true, "usage_source": "reported",
                "status_code": 200, "outcome": "allowed", "request_bytes": 10,
                "response_bytes": 4, "timestamp": rows[3]["timestamp"],
                "cost_micros": null, "currency": null, "unpriced": true}),
            tokens(300, 60, 0, 0)
        )
    );
    assert!(
        rows[3]["timestamp"].as_str().unwrap().ends_with('Z'),
        "{log}"
    );
    // Without --since: the plain calls too (now), all 5.
    let all: Value =
        serde_json::from_str(&dir.ok(&["usage", "log", "--key", "1", "--json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 5);
    assert_eq!(all[4]["request_id"], "llm-1");
    assert_eq!(all[0]["usage_source"], "none");
    assert_eq!(all[0]["model"], Value::Null);
    let text = dir.ok(&["usage", "log", "--key", "1", "--limit", "1"]);
    assert!(
        text.contains("REQUEST_ID") && text.contains("INPUT_TOK"),
        "{text}"
    );

    for (args, says) in [
        (&["--key", "abc"][..], "--key"),
        (&["--key", "0"][..], "--key"),
        (&["--key", "77"][..], "no key has id 77"),
        (&["--key", "1", "--limit", "0"][..], "--limit"),
        (&["--key", "1", "--limit", "10001"][..], "10000"),
        (&["--key", "1", "--since", "soon"][..], "--since"),
    ] {
        let out = dir.run(&[&["usage", "log"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
