//! Calls to the sidecar: the headers every internal call carries, in one
//! place for the key verification (per stream) and the usage flush (root).

use tollgate_wire::INTERNAL_TOKEN_HEADER;

use crate::config::Config;
use crate::host::{Callout, Host, HostError};

/// Sends `body` to the sidecar's `path` as a JSON `POST`; `request_id`
/// (when the call is made for a request) travels as `x-request-id` so the
/// sidecar's log lines name the request.
pub fn post(
    host: &impl Host,
    config: &Config,
    path: &str,
    body: &[u8],
    timeout_ms: u64,
    request_id: Option<&str>,
) -> Result<u32, HostError> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", config.sidecar_authority.as_str()),
        ("content-type", "application/json"),
        (INTERNAL_TOKEN_HEADER, config.internal_token.as_str()),
    ];
    if let Some(id) = request_id.filter(|id| !id.is_empty()) {
        headers.push(("x-request-id", id));
    }
    host.dispatch(&Callout {
        cluster: &config.sidecar_cluster,
        headers: &headers,
        body,
        timeout_ms,
    })
}
