//! Budget alerts at work, beside the HTTP service and never inside a
//! handler: a checker that turns each threshold an alert's budget (a key's
//! or a team's) has crossed into one outbox row ([`check`]), and a sender
//! that delivers the outbox's rows as signed webhooks ([`deliver`]). `serve`
//! starts both ([`spawn`]); any number of sidecars may run them on one
//! database.

pub mod check;
pub mod deliver;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::domain::clock::{now_ms, to_unix_ms};
use crate::domain::sealed::Keyring;
use crate::store::Store;

pub use check::Checker;
pub use deliver::{deliver_once, DeliveryPolicy};

/// How often the checker and the sender look, by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// What `serve` runs the alerts with.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// How often each task looks (`--alert-interval`).
    pub interval: Duration,
    pub delivery: DeliveryPolicy,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            interval: DEFAULT_INTERVAL,
            delivery: DeliveryPolicy::default(),
        }
    }
}

/// Now, in Unix milliseconds.
pub fn unix_now_ms() -> i64 {
    i64::try_from(to_unix_ms(now_ms())).unwrap_or(i64::MAX)
}

/// Starts the checker and the sender; they run until aborted.
pub fn spawn(store: Store, keyring: Arc<Keyring>, settings: AlertSettings) -> [JoinHandle<()>; 2] {
    let interval = settings.interval;
    let checker_store = store.clone();
    let checker = tokio::spawn(async move {
        let mut checker = Checker::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = checker.check_once(&checker_store, unix_now_ms()).await {
                tracing::warn!(error = %e, "budget alerts: the check failed; trying again");
            }
        }
    });
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = deliver_once(&store, &keyring, &settings.delivery).await {
                tracing::warn!(error = %e, "budget alerts: delivery failed; trying again");
            }
        }
    });
    [checker, sender]
}
