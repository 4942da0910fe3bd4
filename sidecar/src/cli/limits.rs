//! A key's limits as operators set them on the command line: `--rate`,
//! `--burst`, `--quota` and `--clear` (`keys create`, `keys limits`). The
//! spelling and its rules are `tollgate_wire::limits`.

use tollgate_wire::{LimitError, Limits, Quota};

use crate::domain::clock::now_ms;
use crate::domain::keys::KeyView;
use crate::store::Store;

/// The limit flags `keys create` and `keys limits` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitFlags {
    /// Requests per second or minute: `10/s`, `600/min`.
    #[arg(long)]
    pub rate: Option<String>,
    /// Requests the rate lets through at once (default: one second's worth).
    #[arg(long)]
    pub burst: Option<u64>,
    /// KIND=AMOUNT/WINDOW[@MODEL], repeatable: `requests=1000/day`,
    /// `request_bytes=1GiB/month`, `response_bytes=...`, `units=...`,
    /// `tokens=1M/month` (input + output), `input_tokens=...`,
    /// `output_tokens=...`; `@MODEL` counts only that model's calls
    /// (`tokens=100k/day@gpt-4o`). Windows: minute, hour, day, month (UTC);
    /// counts take k and M, sizes KiB, MiB and GiB.
    #[arg(long = "quota")]
    pub quotas: Vec<String>,
}

impl LimitFlags {
    /// The limits the flags name, from scratch.
    pub fn limits(&self) -> Result<Limits, LimitError> {
        Limits::from_parts(self.rate.as_deref(), self.burst, &self.quotas)
    }

    /// `current` changed by the flags: a rate replaces the rate (keeping
    /// its burst only if it is given again), a burst alone changes the
    /// rate's burst, a quota replaces the quota of its kind and scope (an
    /// unscoped quota leaves the kind's scoped ones as they are).
    pub fn applied_to(&self, current: &Limits) -> Result<Limits, LimitError> {
        let mut limits = current.clone();
        if let Some(rate) = &self.rate {
            limits.rate = Some(tollgate_wire::Rate::parse(rate)?);
        }
        if let Some(burst) = self.burst {
            let rate = limits.rate.ok_or_else(|| {
                Limits::from_parts(None, Some(burst), &[]).expect_err("a burst without a rate")
            })?;
            limits.rate = Some(rate.with_burst(burst)?);
        }
        for text in &self.quotas {
            let quota = Quota::parse(text)?;
            limits
                .quotas
                .retain(|q| !q.is(quota.kind, quota.model.as_deref()));
            limits.quotas.push(quota);
        }
        limits.checked()
    }
}

/// Refuses a money quota in another currency than the prices' (`keys`
/// and `teams` alike).
pub async fn money_in_the_prices_currency(store: &Store, limits: &Limits) -> Result<(), String> {
    match crate::store::prices::money_quota_fault(store, limits).await {
        Ok(None) => Ok(()),
        Ok(Some(message)) => Err(format!("invalid quota: {message}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `tollgate keys limits <id> [flags] [--clear] [--json]`: changes the
/// key's limits (`--clear` first removes them all) and prints the key.
pub async fn run_cli(
    store: &Store,
    id: i64,
    flags: &LimitFlags,
    clear: bool,
    json: bool,
) -> Result<(), String> {
    let key = store
        .key_by_id(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no key has id {id}"))?;
    let base = if clear {
        Limits::default()
    } else {
        key.limits.clone()
    };
    let limits = flags.applied_to(&base).map_err(|e| e.to_string())?;
    money_in_the_prices_currency(store, &limits).await?;
    let now = now_ms();
    let key = store
        .set_limits(id, &limits, now)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no key has id {id}"))?;
    let view = KeyView::at(&key, now);
    if json {
        let text = serde_json::to_string(&view).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!("Key {id} ({}): {}", view.prefix, describe(&view.limits));
    }
    Ok(())
}

/// Limits for people: `rate=10/s burst=20 requests=1000/day`, or `no limits`.
pub fn describe(limits: &Limits) -> String {
    if limits.is_empty() {
        "no limits".into()
    } else {
        limits.to_spec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(rate: Option<&str>, burst: Option<u64>, quotas: &[&str]) -> LimitFlags {
        LimitFlags {
            rate: rate.map(str::to_owned),
            burst,
            quotas: quotas.iter().map(|q| q.to_string()).collect(),
        }
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let current = flags(Some("10/s"), Some(20), &["requests=100/day"])
            .limits()
            .unwrap();
        let burst_only = flags(None, Some(5), &[]).applied_to(&current).unwrap();
        assert_eq!(burst_only.to_spec(), "rate=10/s burst=5 requests=100/day");
        let quota = flags(None, None, &["requests=7/hour", "units=9/day"])
            .applied_to(&current)
            .unwrap();
        assert_eq!(
            quota.to_spec(),
            "rate=10/s burst=20 requests=7/hour units=9/day"
        );
        let rate = flags(Some("2/s"), None, &[]).applied_to(&current).unwrap();
        assert_eq!(rate.to_spec(), "rate=2/s burst=2 requests=100/day");
        let error = flags(None, Some(5), &[])
            .applied_to(&Limits::default())
            .unwrap_err();
        assert_eq!(error.field, "burst");
        assert_eq!(describe(&Limits::default()), "no limits");
    }

    #[test]
    fn a_quota_replaces_only_the_one_of_its_kind_and_scope() {
        let current = flags(None, None, &["tokens=1M/month", "tokens=5k/day@gpt-4o"])
            .limits()
            .unwrap();
        let scoped = flags(None, None, &["tokens=7k/minute@gpt-4o"])
            .applied_to(&current)
            .unwrap();
        assert_eq!(
            scoped.to_spec(),
            "tokens=1000000/month tokens=7000/minute@gpt-4o"
        );
        let other_model = flags(None, None, &["tokens=2k/hour@o3", "tokens=9/day"])
            .applied_to(&scoped)
            .unwrap();
        assert_eq!(
            other_model.to_spec(),
            "tokens=9/day tokens=7000/minute@gpt-4o tokens=2000/hour@o3"
        );
    }
}
