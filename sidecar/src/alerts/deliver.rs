//! The sender: claims the outbox's due events with a lease, POSTs each to
//! its alert's URL signed per Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), and records the outcome: 2xx
//! delivered; otherwise due again after an exponential backoff, until the
//! last attempt leaves the event `failed`.
//!
//! A lease outlives the longest attempt, so two senders never hold one
//! event at once. A sender that dies after the receiver got the event but
//! before it recorded so leaves the lease to run out, and the event is sent
//! again: delivery is at least once, and `webhook-id` (the same on every
//! attempt) lets the receiver drop a repeat.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

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
        .open(sealed, &secret_binding(alert.key_id, &alert.url))
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
    if uri.scheme_str() != Some("http") {
        return Err("this sidecar sends webhooks over plain http only; \
                    put a TLS-terminating proxy in front of an https receiver"
            .into());
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "the URL names no host".to_string())?;
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let stream = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
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
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}
