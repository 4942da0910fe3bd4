//! Where the console may be reached: an allow-list of origins
//! (`http://127.0.0.1:9000`), by default the sidecar's listen address (and
//! `localhost` on loopback), else `--console-origin`.
//!
//! Two checks use it. Every console request's `Host` must be on it: a page
//! that reaches the sidecar through DNS rebinding (a name of the attacker's
//! that resolves to 127.0.0.1) sends the attacker's name, so it is refused
//! before any console route runs ([`require_allowed_host`]). And an
//! action's `Origin` must be on it ([`super::guard::check_same_origin`]),
//! rather than merely equal to a `Host` the request chose itself.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::AppState;

/// `http` or `https`: what the browser shows before `://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A host and port as a browser names them: a DNS name in lowercase, an
/// IPv4 address, or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    host: String,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

impl Authority {
    /// Reads `host[:port]`; anything else (a path, user info, an IPv6
    /// address without brackets, port 0) is refused.
    fn parse(text: &str) -> Option<Authority> {
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (ip, after) = rest.split_once(']')?;
                let ip: Ipv6Addr = ip.parse().ok()?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?),
                };
                (format!("[{ip}]"), port)
            }
            None => {
                let (host, port) = match text.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (text, None),
                };
                let name_chars = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
                if host.is_empty() || !host.chars().all(name_chars) {
                    return None;
                }
                let host = match host.parse::<Ipv4Addr>() {
                    Ok(ip) => ip.to_string(),
                    Err(_) => host.to_ascii_lowercase(),
                };
                (host, port)
            }
        };
        let port = match port {
            None => None,
            Some(digits) => match digits.parse::<u16>() {
                Ok(0) | Err(_) => return None,
                Ok(port) => Some(port),
            },
        };
        Some(Authority { host, port })
    }
}

/// One origin the console answers at: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Origin {
    /// Reads `http://host:port`, `https://host`, or a bare `host:port`
    /// (taken as `http`); a trailing `/` is allowed, a path is not.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let refuse = || {
            format!(
                "{text:?} is not an origin such as http://127.0.0.1:9000 or \
                 https://console.example.com"
            )
        };
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("http://") {
            (Scheme::Http, &text["http://".len()..])
        } else if lower.starts_with("https://") {
            (Scheme::Https, &text["https://".len()..])
        } else if lower.contains("://") {
            return Err(refuse());
        } else {
            (Scheme::Http, text)
        };
        Origin::from_parts(scheme, rest.strip_suffix('/').unwrap_or(rest)).ok_or_else(refuse)
    }

    /// Reads a request's `Origin` header: `scheme://host[:port]` exactly.
    fn from_header(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return None,
        };
        Origin::from_parts(scheme, rest)
    }

    fn from_parts(scheme: Scheme, authority: &str) -> Option<Origin> {
        let Authority { host, port } = Authority::parse(authority)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(scheme.default_port()),
        })
    }

    /// The origin of `http://` at `ip` and `port`.
    fn http(ip: IpAddr, port: u16) -> Origin {
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Origin {
            scheme: Scheme::Http,
            host,
            port,
        }
    }

    /// Whether a request's `Host` (`host[:port]`) names this origin.
    fn is_named_by(&self, host: &Authority) -> bool {
        host.host == self.host && host.port.unwrap_or(self.scheme.default_port()) == self.port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The origins the console answers at; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOrigins(Vec<Origin>);

impl ConsoleOrigins {
    /// The default for a sidecar listening on `listen`: that address over
    /// `http`; on loopback also `localhost` (which browsers resolve only to
    /// loopback, so no other site can be reached by that name); on every
    /// interface (`0.0.0.0`, `[::]`) the loopback names only, since which
    /// other names reach the machine is not known here.
    pub fn for_listen(listen: SocketAddr) -> ConsoleOrigins {
        let port = listen.port();
        let ip = listen.ip();
        let mut origins = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => {
                vec![Origin::http(Ipv4Addr::LOCALHOST.into(), port)]
            }
            IpAddr::V6(v6) if v6.is_unspecified() => vec![
                Origin::http(Ipv6Addr::LOCALHOST.into(), port),
                Origin::http(Ipv4Addr::LOCALHOST.into(), port),
            ],
            ip => vec![Origin::http(ip, port)],
        };
        if ip.is_loopback() || ip.is_unspecified() {
            origins.push(Origin {
                scheme: Scheme::Http,
                host: "localhost".into(),
                port,
            });
        }
        ConsoleOrigins(origins)
    }

    /// Reads `--console-origin`: one origin per value, or several
    /// separated by commas; at least one.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<ConsoleOrigins, String> {
        let origins = values
            .iter()
            .flat_map(|value| value.as_ref().split(','))
            .filter(|text| !text.trim().is_empty())
            .map(Origin::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err("no origin given".into());
        }
        Ok(ConsoleOrigins(origins))
    }

    /// Whether a request's `Host` header names one of the origins.
    pub fn allows_host(&self, host: &str) -> bool {
        Authority::parse(host).is_some_and(|host| self.0.iter().any(|o| o.is_named_by(&host)))
    }

    /// Whether a request's `Origin` header is one of the origins.
    pub fn allows_origin(&self, origin: &str) -> bool {
        Origin::from_header(origin).is_some_and(|origin| self.0.contains(&origin))
    }
}

impl Default for ConsoleOrigins {
    /// Those of the default listen address.
    fn default() -> Self {
        ConsoleOrigins::for_listen(crate::http::DEFAULT_LISTEN)
    }
}

impl fmt::Display for ConsoleOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, origin) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            origin.fmt(f)?;
        }
        Ok(())
    }
}

/// Console layer: a request whose `Host` is not one of the console's
/// origins is refused with 403 `host_not_allowed` before any route runs.
pub async fn require_allowed_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| state.console.origins.allows_host(host));
    if !allowed {
        return ApiError::HostNotAllowed.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(values: &[&str]) -> ConsoleOrigins {
        ConsoleOrigins::parse(values).unwrap()
    }

    #[test]
    fn the_default_is_the_listen_address_and_localhost_on_loopback() {
        let shown = |listen: &str| ConsoleOrigins::for_listen(listen.parse().unwrap()).to_string();
        assert_eq!(
            shown("127.0.0.1:9000"),
            "http://127.0.0.1:9000,http://localhost:9000"
        );
        assert_eq!(
            shown("[::1]:9000"),
            "http://[::1]:9000,http://localhost:9000"
        );
        assert_eq!(
            shown("0.0.0.0:9000"),
            "http://127.0.0.1:9000,http://localhost:9000"
        );
        assert_eq!(
            shown("[::]:9000"),
            "http://[::1]:9000,http://127.0.0.1:9000,http://localhost:9000"
        );
        assert_eq!(shown("10.1.2.3:80"), "http://10.1.2.3");
        assert_eq!(
            ConsoleOrigins::default().to_string(),
            shown("127.0.0.1:9000")
        );
    }

    #[test]
    fn origins_are_read_strictly() {
        assert_eq!(
            origins(&[
                "https://Console.Example.com/, 127.0.0.1:9000",
                "http://[::1]:80"
            ])
            .to_string(),
            "https://console.example.com,http://127.0.0.1:9000,http://[::1]"
        );
        for bad in [
            "ftp://h:1",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://h/console",
            "http://user@h:1",
            "http://::1:9000",
            "http://h:1?x",
            "h_1:9000",
        ] {
            assert!(ConsoleOrigins::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(ConsoleOrigins::parse(&[" , "]).is_err());
        assert!(ConsoleOrigins::parse::<&str>(&[]).is_err());
    }

    #[test]
    fn only_the_listed_hosts_and_origins_pass() {
        let allowed = origins(&[
            "http://127.0.0.1:9000",
            "localhost:9000",
            "https://c.example",
        ]);
        for host in [
            "127.0.0.1:9000",
            "LOCALHOST:9000",
            "c.example",
            "c.example:443",
        ] {
            assert!(allowed.allows_host(host), "{host}");
        }
        for host in [
            "attacker.example:9000",
            "127.0.0.1:9001",
            "127.0.0.1",
            "localhost",
            "c.example:80",
            "",
            "127.0.0.1:9000/x",
        ] {
            assert!(!allowed.allows_host(host), "{host}");
        }
        for origin in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "https://c.example",
        ] {
            assert!(allowed.allows_origin(origin), "{origin}");
        }
        for origin in [
            "https://127.0.0.1:9000",
            "http://c.example",
            "http://attacker.example:9000",
            "null",
            "127.0.0.1:9000",
            "HTTP://127.0.0.1:9000x",
        ] {
            assert!(!allowed.allows_origin(origin), "{origin}");
        }
    }
}
