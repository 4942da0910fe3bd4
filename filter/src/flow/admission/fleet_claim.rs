//! The fleet-wide `jti` claim (`jwt.replay_scope: "fleet"`): a request that
//! passed every check, its `jti` new to this instance's store, is held
//! while the sidecar claims the `jti` in the database every Envoy shares.
//! First use anywhere passes; a replay is 401 `replayed_token`; no usable
//! answer fails closed (503 `auth_unavailable`), and the instance's own
//! claim is given back, so that a retry of the same token can try again.

use tollgate_wire::{ClaimReply, JTI_CLAIM_PATH};

use super::{Admission, Outcome, Wait};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::metrics::Counter;
use crate::replay::{self, JtiClaim, ReplayScope};
use crate::sidecar_call;

/// Largest claim answer the filter reads.
const MAX_REPLY_BYTES: usize = 1024;

/// The body of the claim call.
fn claim_body(claim: &JtiClaim) -> Vec<u8> {
    serde_json::to_vec(&claim.fleet_request()).unwrap_or_default()
}

impl<H: StreamHost> Flow<H> {
    /// Sends the fleet claim of the `jti` this request claimed in the
    /// instance's store, and waits for it; nothing to do without one, or
    /// when replay protection is the instance's only.
    pub(super) fn claim_fleet_wide(&mut self, admission: &mut Admission) -> Outcome {
        let Some(worker) = self
            .worker
            .clone()
            .filter(|w| w.config().replay.scope == ReplayScope::Fleet)
        else {
            return Outcome::Done;
        };
        let Some(claim) = &admission.claimed else {
            return Outcome::Done;
        };
        let config = &worker.config();
        let sent = sidecar_call::post(
            &self.host,
            config,
            JTI_CLAIM_PATH,
            &claim_body(claim),
            config.callout_timeout_ms,
            Some(&self.exchange.request_id),
        );
        match sent {
            Ok(token) => Outcome::Wait(token, Wait::FleetClaim),
            Err(e) => {
                self.metrics.inc(&self.host, Counter::ReplayFleetFailures);
                self.log(
                    LogLevel::Error,
                    &format!("cannot send the fleet jti claim: {e}; refusing"),
                );
                self.give_back_claim(admission);
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }

    /// The claim call answered (`body_size` bytes of body).
    pub(super) fn fleet_claim_answered(
        &mut self,
        admission: &mut Admission,
        body_size: usize,
    ) -> Outcome {
        let status = self.host.callout_status();
        let body = (body_size > 0 && body_size <= MAX_REPLY_BYTES)
            .then(|| self.host.callout_body(body_size))
            .flatten();
        let reply = (status.as_deref() == Some(b"200".as_slice()))
            .then(|| body.and_then(|b| serde_json::from_slice::<ClaimReply>(&b).ok()))
            .flatten();
        match reply {
            Some(ClaimReply { claimed: true }) => Outcome::Done,
            Some(ClaimReply { claimed: false }) => Outcome::deny(Denial::ReplayedToken),
            None => {
                self.metrics.inc(&self.host, Counter::ReplayFleetFailures);
                let status = status.map(|s| String::from_utf8_lossy(&s).into_owned());
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "the fleet jti claim gave no usable answer (status {}); refusing",
                        status.as_deref().unwrap_or("none")
                    ),
                );
                self.give_back_claim(admission);
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }

    /// Takes this request's claim out of the instance's store again, so
    /// that a retry of the same token can try again.
    fn give_back_claim(&mut self, admission: &mut Admission) {
        if let Some(claim) = admission.claimed.take() {
            replay::release(&self.host, &claim);
        }
    }
}
