//! The sender: claims the outbox's due events with a lease, POSTs each to
//! its alert's URL (http, or https checked against the system's roots)
//! signed per Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), and records the outcome: 2xx
//! delivered; otherwise due again after an exponential backoff, until the
//! last attempt leaves the event `failed`.
//!
//! A lease outlives the longest attempt, so two senders never hold one
//! event at once. A sender that dies after the receiver got the event but
//! before it recorded so leaves the lease to run out, and the event is sent
//! again: delivery is at least once, and `webhook-id` (the same on every
//! attempt) lets the receiver drop a repeat.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::unix_now_ms;
use crate::domain::alert::secret_binding;
use crate::domain::sealed::Keyring;
use crate::domain::webhook::{backoff, WebhookSecret};
use crate::store::alerts::{Alert, Attempt, ClaimedEvent};
use crate::store::{Store, StoreError};

/// How events are sent.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Attempts in all before an event is `failed` (`--alert-attempts`).
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each next one.
    pub first_backoff: Duration,
    /// The most one attempt may take, connecting included.
    pub timeout: Duration,
    /// Events claimed per round.
    pub batch: i64,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 6,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            batch: 32,
        }
    }
}

impl DeliveryPolicy {
    /// How long a claim holds an event: well past the longest attempt.
    pub fn lease(&self) -> Duration {
        self.timeout.saturating_mul(2) + Duration::from_secs(20)
    }
}

/// What the sidecar answers to in `User-Agent`.
const USER_AGENT: &str = concat!("tollgate-sidecar/", env!("CARGO_PKG_VERSION"));

/// One round: claims the due events and sends them all at once; says how
/// many were delivered.
pub async fn deliver_once(
    store: &Store,
    keyring: &Keyring,
    policy: &DeliveryPolicy,
) -> Result<usize, StoreError> {
    let lease_ms = i64::try_from(policy.lease().as_millis()).unwrap_or(i64::MAX);
    let claimed = store
        .claim_due_events(unix_now_ms(), lease_ms, policy.batch)
        .await?;
    let mut sends = JoinSet::new();
    for event in claimed {
        let secret = secret_of(&event.alert, keyring);
        let timeout = policy.timeout;
        sends.spawn(async move {
            let sent = match secret {
                Ok(secret) => send(&event, &secret, timeout).await,
                Err(e) => Err(e),
            };
            (event, sent)
        });
    }
    let mut delivered = 0;
    while let Some(joined) = sends.join_next().await {
        let Ok((event, sent)) = joined else { continue };
        let attempt = match sent {
            Ok(()) => Attempt::Delivered,
            Err(error) if event.attempts >= policy.max_attempts => Attempt::Failed { error },
            Err(error) => Attempt::Retry {
                next_attempt_ms: unix_now_ms().saturating_add(
                    i64::try_from(backoff(policy.first_backoff, event.attempts).as_millis())
                        .unwrap_or(i64::MAX),
                ),
                error,
            },
        };
        match &attempt {
            Attempt::Delivered => delivered += 1,
            Attempt::Retry { error, .. } => tracing::warn!(
                event = %event.event_id, alert = event.alert.id, attempt = event.attempts,
                %error, "budget alert not delivered; it will be tried again"
            ),
            Attempt::Failed { error } => tracing::warn!(
                event = %event.event_id, alert = event.alert.id, attempt = event.attempts,
                %error, "budget alert not delivered after its last attempt: failed"
            ),
        }
        if !store
            .finish_attempt(&event, &attempt, unix_now_ms())
            .await?
        {
            tracing::warn!(
                event = %event.event_id,
                "a budget alert's lease ran out before its attempt was recorded"
            );
        }
    }
    Ok(delivered)
}

/// The alert's secret: from the environment variable it names (read now,
/// so a changed secret takes effect at once), or its sealed one opened.
/// The error names where the secret was looked for, never its value.
fn secret_of(alert: &Alert, keyring: &Keyring) -> Result<WebhookSecret, String> {
    if let Some(name) = &alert.secret_env {
        let text = std::env::var(name)
            .map_err(|_| format!("the environment variable {name} is not set"))?;
        return WebhookSecret::parse(&text).map_err(|e| format!("{name}: {e}"));
    }
    let sealed = alert
        .sealed_secret
        .as_ref()
        .ok_or_else(|| "the alert has no secret".to_string())?;
    let opened = keyring
        .open(sealed, &secret_binding(alert.owner, &alert.url))
        .map_err(|e| format!("the alert's secret does not open: {e}"))?;
    WebhookSecret::parse(opened.expose())
}

/// One attempt: POST within `timeout`; `Ok` on a 2xx answer.
async fn send(
    event: &ClaimedEvent,
    secret: &WebhookSecret,
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, post(event, secret))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

async fn post(event: &ClaimedEvent, secret: &WebhookSecret) -> Result<(), String> {
    let uri: hyper::Uri = event
        .alert
        .url
        .parse()
        .map_err(|e| format!("the URL cannot be read: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the URL is neither http:// nor https://".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "the URL names no host".to_string())?;
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let address = format!("{host}:{port}");
    let timestamp = u64::try_from(unix_now_ms() / 1000).unwrap_or(0);
    let body = event.payload.as_bytes();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header("webhook-id", &event.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            secret.sign(&event.event_id, timestamp, body),
        )
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let status = if tls {
        // An IP literal's brackets are the URL's, not the name's.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("{host} is not a name TLS can check"))?;
        let stream = tls_connector()?
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {address} failed: {e}"))?;
        exchange(stream, request).await?
    } else {
        exchange(stream, request).await?
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// Sends one request over `io` (HTTP/1.1) and returns the answer's status.
async fn exchange<S>(
    io: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    Ok(response.status())
}

/// The TLS client of https receivers, made once: the system's root
/// certificates (or those of `SSL_CERT_FILE` / `SSL_CERT_DIR`), checked
/// the usual way (the name, the chain, the dates).
fn tls_connector() -> Result<TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no root certificate was found to check an https receiver by \
                            (the system's, or SSL_CERT_FILE)"
                        .to_string(),
                );
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS cannot be set up: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(TlsConnector::from(Arc::new(config)))
        })
        .clone()
}
