//! Replay protection in this instance: the verified token's `jti` is
//! claimed in the Envoy's shared replay store (`replay.rs`), after the
//! limits step, so that only a request that is let through uses it up.

use super::{Admission, Outcome};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::metrics::Counter;
use crate::replay::{self, Claimed};

impl<H: StreamHost> Flow<H> {
    pub(super) fn claim_locally(&mut self, admission: &mut Admission) -> Outcome {
        let key_id = admission.key_id;
        let Some(claim) = admission.jti.take().map(|c| c.by_key(key_id)) else {
            return Outcome::Done;
        };
        let Some(now_s) = self
            .host
            .now_ms()
            .and_then(|ms| i64::try_from(ms / 1000).ok())
        else {
            return Outcome::deny(Denial::AuthUnavailable);
        };
        let (claimed, retries) = replay::claim(&self.host, &claim, now_s);
        self.metrics
            .add(&self.host, Counter::ReplayCasRetries, u64::from(retries));
        let bucket = &claim.bucket_key;
        let (denial, level, why) = match claimed {
            Claimed::Recorded => {
                admission.claimed = Some(claim);
                return Outcome::Done;
            }
            Claimed::Replayed => return Outcome::deny(Denial::ReplayedToken),
            Claimed::Full => {
                self.metrics.inc(&self.host, Counter::ReplayStoreFull);
                (
                    Denial::ReplayStoreFull,
                    LogLevel::Warn,
                    format!(
                        "replay store bucket {bucket} is full of live entries; \
                         refusing (raise jwt.replay_slots)"
                    ),
                )
            }
            Claimed::ShareExceeded => (
                Denial::TooManyLiveTokens,
                LogLevel::Warn,
                format!("key {key_id} holds its share of replay store bucket {bucket}; refusing"),
            ),
            Claimed::Unreadable => (
                Denial::AuthUnavailable,
                LogLevel::Error,
                format!("replay store bucket {bucket} cannot be read; refusing"),
            ),
            Claimed::Contended => (
                Denial::AuthUnavailable,
                LogLevel::Warn,
                format!("replay store bucket {bucket} stayed contended; refusing"),
            ),
            Claimed::Failed(e) => (
                Denial::AuthUnavailable,
                LogLevel::Error,
                format!("cannot update the replay store: {e}"),
            ),
        };
        self.log(level, &why);
        Outcome::deny(denial)
    }
}
