//! Budget alerts: what an alert asks for (whose budget: a key's or a
//! team's; percent thresholds of its quotas, a webhook URL, where its
//! signing secret comes from), the checks on it, which thresholds a quota's
//! use has crossed, and the event body a crossing is told with. The outbox
//! and the delivery are `store::alerts` and `alerts`.

use serde::Serialize;
use tollgate_wire::BudgetOwner;

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Longest name of the environment variable holding a secret.
pub const MAX_SECRET_ENV_LEN: usize = 128;

/// Most thresholds one alert takes.
pub const MAX_THRESHOLDS: usize = 100;

/// An alert's input, as the CLI and the admin API both give it.
#[derive(Debug, Clone)]
pub struct AlertRequest<'a> {
    /// Whose budget it watches: a key's or a team's quotas.
    pub owner: BudgetOwner,
    pub thresholds: &'a [i64],
    pub url: &'a str,
    pub secret_env: Option<&'a str>,
}

/// Why an alert was refused: the input at fault (`thresholds`, `url`,
/// `secret_env`, `key_id`, `team_id`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertError {
    pub field: &'static str,
    pub message: String,
}

impl AlertError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        AlertError {
            field,
            message: message.into(),
        }
    }
}

/// An alert's checked input: thresholds ascending, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAlert {
    pub owner: BudgetOwner,
    pub thresholds: Vec<u8>,
    pub url: String,
    pub secret_env: Option<String>,
}

impl AlertRequest<'_> {
    /// Checks the input; the owner's existence is the store's to check.
    pub fn check(&self) -> Result<CheckedAlert, AlertError> {
        if self.thresholds.is_empty() {
            return Err(AlertError::new(
                "thresholds",
                "at least one threshold is needed (percents from 1 to 100, e.g. 50,80,100)",
            ));
        }
        if self.thresholds.len() > MAX_THRESHOLDS {
            return Err(AlertError::new(
                "thresholds",
                format!("at most {MAX_THRESHOLDS} thresholds"),
            ));
        }
        let mut thresholds = Vec::with_capacity(self.thresholds.len());
        for &t in self.thresholds {
            let t = u8::try_from(t)
                .ok()
                .filter(|t| (1..=100).contains(t))
                .ok_or_else(|| {
                    AlertError::new("thresholds", format!("{t} is not a percent from 1 to 100"))
                })?;
            if thresholds.contains(&t) {
                return Err(AlertError::new("thresholds", format!("{t} is given twice")));
            }
            thresholds.push(t);
        }
        thresholds.sort_unstable();
        Ok(CheckedAlert {
            owner: self.owner,
            thresholds,
            url: check_url(self.url)?,
            secret_env: self.secret_env.map(check_secret_env).transpose()?,
        })
    }
}

/// Whose budget an alert watches, from its input's `key_id` and `team_id`:
/// exactly one of them (the CLI's `--key` and `--team`).
pub fn owner_of(key_id: Option<i64>, team_id: Option<i64>) -> Result<BudgetOwner, AlertError> {
    one_owner(key_id.is_some(), team_id.is_some())?;
    Ok(match team_id {
        Some(team) => BudgetOwner::Team(team),
        None => BudgetOwner::Key(key_id.unwrap_or_default()),
    })
}

/// Refuses an alert input naming no budget or two: `key_id` for none,
/// `team_id` for both.
pub fn one_owner(has_key: bool, has_team: bool) -> Result<(), AlertError> {
    match (has_key, has_team) {
        (true, false) | (false, true) => Ok(()),
        (false, false) => Err(AlertError::new(
            "key_id",
            "whose budget the alert watches is needed: a key's (key_id) or a team's (team_id)",
        )),
        (true, true) => Err(AlertError::new(
            "team_id",
            "an alert watches one budget: a key's (key_id) or a team's (team_id), not both",
        )),
    }
}

/// A webhook URL: `http://` or `https://`, a host, no credentials, ASCII
/// without spaces, at most [`MAX_URL_LEN`] bytes.
fn check_url(url: &str) -> Result<String, AlertError> {
    let refuse = |why: &str| {
        AlertError::new(
            "url",
            format!("{why} (e.g. https://hooks.example.com/tollgate)"),
        )
    };
    if url.len() > MAX_URL_LEN {
        return Err(refuse(&format!(
            "the URL is longer than {MAX_URL_LEN} bytes"
        )));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse("the URL must be ASCII without spaces"));
    }
    // The HTTP crate's URI parser, the one the delivery connects by.
    let uri: hyper::Uri = url.parse().map_err(|_| refuse("the URL cannot be read"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(refuse("the URL must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(refuse("the URL names no host"));
    };
    if authority.host().is_empty() {
        return Err(refuse("the URL names no host"));
    }
    if authority.as_str().contains('@') {
        return Err(refuse("the URL must not carry credentials"));
    }
    Ok(url.to_string())
}

/// An environment variable's name: letters, digits and `_`, not starting
/// with a digit.
fn check_secret_env(name: &str) -> Result<String, AlertError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SECRET_ENV_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(name.to_string())
    } else {
        Err(AlertError::new(
            "secret_env",
            format!(
                "the name of an environment variable: letters, digits and _, at most \
                 {MAX_SECRET_ENV_LEN}, not starting with a digit (e.g. TOLLGATE_WEBHOOK_SECRET)"
            ),
        ))
    }
}

/// Reads `50,80,90,100` (the CLI's `--at`).
pub fn parse_thresholds(text: &str) -> Result<Vec<i64>, AlertError> {
    text.split(',')
        .map(|t| {
            t.trim().parse::<i64>().map_err(|_| {
                AlertError::new(
                    "thresholds",
                    format!("{:?} is not a percent from 1 to 100", t.trim()),
                )
            })
        })
        .collect()
}

/// The thresholds in their stored spelling (`50,80,100`).
pub fn thresholds_text(thresholds: &[u8]) -> String {
    let parts: Vec<String> = thresholds.iter().map(u8::to_string).collect();
    parts.join(",")
}

/// The thresholds of `thresholds` that `used` of `limit` has reached:
/// `used * 100 >= threshold * limit`, exactly. A limit of 0 is reached by
/// any use at all.
pub fn crossed(thresholds: &[u8], used: u128, limit: u64) -> Vec<u8> {
    thresholds
        .iter()
        .copied()
        .filter(|&t| used > 0 && used * 100 >= u128::from(t) * u128::from(limit))
        .collect()
}

/// `used` as a percent of `limit`, to two decimals (for people; the
/// crossing itself is [`crossed`]'s exact test).
pub fn percent(used: u128, limit: u64) -> f64 {
    if limit == 0 {
        return 100.0;
    }
    let hundredths = used.saturating_mul(10_000) / u128::from(limit);
    hundredths as f64 / 100.0
}

/// The associated data a generated secret is sealed with: bound to its
/// alert's owner and URL, so a sealed value copied to another alert does
/// not open. A key's is `alert:<key id>:<url>`, as before teams.
pub fn secret_binding(owner: BudgetOwner, url: &str) -> String {
    match owner {
        BudgetOwner::Key(key_id) => format!("alert:{key_id}:{url}"),
        BudgetOwner::Team(team_id) => format!("alert:team:{team_id}:{url}"),
    }
}

/// The type of a threshold event.
pub const EVENT_TYPE: &str = "budget.threshold";

/// The body of a `budget.threshold` webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub budget: BudgetRef,
    pub used: u128,
    pub limit: u64,
    pub percent: f64,
    pub threshold: u8,
    /// The team whose budget it is; for a key's, the key's team (`null`
    /// when it is in none).
    pub team: Option<TeamRef>,
    /// The key whose budget it is; `null` for a team's.
    pub key: Option<KeyRef>,
    /// RFC 3339, UTC: when the crossing was seen.
    pub timestamp: String,
}

/// Which budget a threshold event is about: a key's (`key_id`, and
/// `team_id` `null`) or a team's (`team_id`, and `key_id` `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetRef {
    pub key_id: Option<i64>,
    pub team_id: Option<i64>,
    /// The quota's name (`tokens@gpt-4o`).
    pub quota: String,
    /// `minute`, `hour`, `day` or `month`.
    pub window: &'static str,
    /// RFC 3339, UTC: the window's start (included) and end (excluded).
    pub window_start: String,
    pub window_end: String,
}

impl BudgetRef {
    /// The `key_id` and `team_id` of `owner`'s budget.
    pub fn ids(owner: BudgetOwner) -> (Option<i64>, Option<i64>) {
        match owner {
            BudgetOwner::Key(id) => (Some(id), None),
            BudgetOwner::Team(id) => (None, Some(id)),
        }
    }
}

/// The key of a threshold event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRef {
    pub id: i64,
    pub name: String,
}

/// The team of a threshold event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeamRef {
    pub id: i64,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(thresholds: &'a [i64], url: &'a str) -> AlertRequest<'a> {
        AlertRequest {
            owner: BudgetOwner::Key(1),
            thresholds,
            url,
            secret_env: None,
        }
    }

    #[test]
    fn thresholds_are_percents_each_once_and_sorted() {
        let ok = request(&[100, 50, 80], "https://h.example/x")
            .check()
            .unwrap();
        assert_eq!(ok.thresholds, [50, 80, 100]);
        for bad in [&[0][..], &[101], &[-5], &[50, 50], &[]] {
            let e = request(bad, "https://h.example/x").check().unwrap_err();
            assert_eq!(e.field, "thresholds", "{bad:?}: {e:?}");
        }
        assert_eq!(parse_thresholds("50, 80,100").unwrap(), [50, 80, 100]);
        assert_eq!(parse_thresholds("50,x").unwrap_err().field, "thresholds");
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com/a?b=c",
        ] {
            assert!(request(&[50], good).check().is_ok(), "{good}");
        }
        for bad in [
            "ftp://h/x",
            "hooks.example.com",
            "https://",
            "http://u:p@h/x",
            "http://h/a b",
            "",
        ] {
            let e = request(&[50], bad).check().unwrap_err();
            assert_eq!(e.field, "url", "{bad}: {e:?}");
        }
    }

    #[test]
    fn secret_env_is_a_variable_name() {
        let with = |name| AlertRequest {
            secret_env: Some(name),
            ..request(&[50], "http://h/x")
        };
        assert!(with("HOOK_SECRET_1").check().is_ok());
        for bad in ["", "1X", "A-B", "A B"] {
            assert_eq!(with(bad).check().unwrap_err().field, "secret_env", "{bad}");
        }
    }

    #[test]
    fn an_alert_watches_one_budget() {
        assert_eq!(owner_of(Some(4), None).unwrap(), BudgetOwner::Key(4));
        assert_eq!(owner_of(None, Some(3)).unwrap(), BudgetOwner::Team(3));
        assert_eq!(owner_of(None, None).unwrap_err().field, "key_id");
        assert_eq!(owner_of(Some(4), Some(3)).unwrap_err().field, "team_id");
        // A key's binding is the one sealed before teams; a team's differs.
        assert_eq!(
            secret_binding(BudgetOwner::Key(3), "http://h/x"),
            "alert:3:http://h/x"
        );
        assert_ne!(
            secret_binding(BudgetOwner::Team(3), "http://h/x"),
            secret_binding(BudgetOwner::Key(3), "http://h/x")
        );
    }

    #[test]
    fn a_threshold_is_crossed_at_exactly_its_share_of_the_limit() {
        assert_eq!(crossed(&[50, 80, 100], 0, 10), Vec::<u8>::new());
        assert_eq!(crossed(&[50, 80, 100], 4, 10), Vec::<u8>::new());
        assert_eq!(crossed(&[50, 80, 100], 5, 10), [50]);
        assert_eq!(crossed(&[50, 80, 100], 9, 10), [50, 80]);
        assert_eq!(crossed(&[50, 80, 100], 12, 10), [50, 80, 100]);
        // 1/3 is 33.33 %: not yet 34.
        assert_eq!(crossed(&[33, 34], 1, 3), [33]);
        assert_eq!(crossed(&[50], 1, 0), [50]);
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(12, 10), 120.0);
    }
}
