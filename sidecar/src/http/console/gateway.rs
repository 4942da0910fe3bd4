//! Live gateway figures for the console: the sidecar's own metrics and, when
//! the sidecar is told where Envoy's admin interface is
//! (`TOLLGATE_ENVOY_ADMIN_URL`), the filter's `tollgate_*` stats from
//! Envoy's `/stats/prometheus`, fetched server side (the page talks to the
//! sidecar only).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use super::guard::ConsoleSession;
use crate::domain::clock::{format_rfc3339, now_ms};
use crate::http::AppState;

/// How long one fetch from Envoy's admin may take, connection included.
pub const ENVOY_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of Envoy's answer read (its `tollgate_` stats are a few KiB).
pub const ENVOY_MAX_BYTES: usize = 1024 * 1024;

/// Only the filter's metrics: Envoy exports the `wasmcustom` namespace's
/// stats under their own names in the Prometheus format.
const ENVOY_STATS_PATH: &str = "/stats/prometheus?filter=tollgate_";

/// Every metric of ours starts with this.
const METRIC_PREFIX: &str = "tollgate_";

/// Where Envoy's admin interface listens: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyAdmin {
    /// `host:port`, as connected to and sent in `Host`.
    authority: String,
}

impl EnvoyAdmin {
    /// Reads `http://host:port` (a trailing `/` is allowed). Envoy's admin
    /// interface speaks plain HTTP and belongs on loopback.
    pub fn parse(url: &str) -> Result<EnvoyAdmin, String> {
        let refuse = || {
            format!(
                "the Envoy admin URL {url:?} is not of the form http://host:port \
                 (e.g. http://127.0.0.1:9901)"
            )
        };
        let authority = url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(refuse)?
            .trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(refuse)?;
        if host.is_empty() || host.contains(['/', '@', '?', '#']) || port.parse::<u16>().is_err() {
            return Err(refuse());
        }
        Ok(EnvoyAdmin {
            authority: authority.to_string(),
        })
    }

    /// The URL, for people.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The filter's metrics, as Envoy reports them now.
    pub async fn fetch_metrics(&self) -> Result<Vec<Metric>, String> {
        let text = tokio::time::timeout(ENVOY_FETCH_TIMEOUT, self.get(ENVOY_STATS_PATH))
            .await
            .map_err(|_| format!("no answer within {} s", ENVOY_FETCH_TIMEOUT.as_secs_f32()))??;
        Ok(parse_prometheus(&text))
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("Envoy answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), ENVOY_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
    }
}

/// One sample of a metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metric {
    pub name: String,
    /// The labels as written, without braces (`route="/v1/keys",status="200"`).
    pub labels: String,
    /// The value as written (`12`, `0.25`, `+Inf`).
    pub value: String,
}

/// The prefix Envoy 1.40 puts before the native module's metrics in its
/// Prometheus output (the wasm build's show without one).
const NATIVE_PREFIX: &str = "envoy_dynamicmodulescustom_";

/// The `tollgate_` samples of a Prometheus text exposition, from either
/// build of the filter (the native module's named without Envoy's prefix).
pub fn parse_prometheus(text: &str) -> Vec<Metric> {
    text.lines()
        .map(str::trim)
        .map(|line| line.strip_prefix(NATIVE_PREFIX).unwrap_or(line))
        .filter(|line| line.starts_with(METRIC_PREFIX))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some(Metric {
                name: name.to_string(),
                labels: labels.to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

/// Envoy's side of the live figures.
#[derive(Debug, Clone, Serialize)]
pub struct EnvoyFigures {
    /// Whether the sidecar was told where Envoy's admin is.
    pub configured: bool,
    pub url: Option<String>,
    /// Why the figures could not be fetched, if they could not.
    pub error: Option<String>,
    pub metrics: Vec<Metric>,
}

/// Reply of `GET /console/api/gateway`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayFigures {
    /// RFC 3339: when these were read.
    pub read_at: String,
    pub sidecar: Vec<Metric>,
    pub envoy: EnvoyFigures,
}

/// `GET /console/api/gateway`: the live figures.
pub async fn figures(
    _session: ConsoleSession,
    State(state): State<AppState>,
) -> Json<GatewayFigures> {
    let envoy = match &state.console.envoy_admin {
        None => EnvoyFigures {
            configured: false,
            url: None,
            error: None,
            metrics: Vec::new(),
        },
        Some(admin) => {
            let fetched = admin.fetch_metrics().await;
            EnvoyFigures {
                configured: true,
                url: Some(admin.url()),
                error: fetched.as_ref().err().cloned(),
                metrics: fetched.unwrap_or_default(),
            }
        }
    };
    Json(GatewayFigures {
        read_at: format_rfc3339(now_ms()),
        sidecar: parse_prometheus(&state.metrics.render()),
        envoy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_host_and_port_is_an_envoy_admin_url() {
        let admin = EnvoyAdmin::parse("http://127.0.0.1:9901/").unwrap();
        assert_eq!(admin.url(), "http://127.0.0.1:9901");
        for bad in [
            "127.0.0.1:9901",
            "https://h:1",
            "http://h",
            "http://:1",
            "http://u@h:1",
            "http://h:1/stats",
            "http://h:99999",
        ] {
            let err = EnvoyAdmin::parse(bad).unwrap_err();
            assert!(err.contains("http://host:port"), "{bad}: {err}");
        }
    }

    #[test]
    fn prometheus_samples_of_ours_are_read() {
        let text = "# TYPE tollgate_a counter\nenvoy_dynamicmodulescustom_tollgate_n 1\ntollgate_a 3\nenvoy_b 1\n\
                    tollgate_c{route=\"/v1/keys\",status=\"200\"} 2.5\ntollgate_d{le=\"+Inf\"} +Inf\n";
        assert_eq!(
            parse_prometheus(text),
            vec![
                Metric {
                    name: "tollgate_n".into(),
                    labels: String::new(),
                    value: "1".into()
                },
                Metric {
                    name: "tollgate_a".into(),
                    labels: String::new(),
                    value: "3".into()
                },
                Metric {
                    name: "tollgate_c".into(),
                    labels: "route=\"/v1/keys\",status=\"200\"".into(),
                    value: "2.5".into()
                },
                Metric {
                    name: "tollgate_d".into(),
                    labels: "le=\"+Inf\"".into(),
                    value: "+Inf".into()
                },
            ]
        );
    }
}
