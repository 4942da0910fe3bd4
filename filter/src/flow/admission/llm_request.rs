//! The first step of admission on an LLM route (`llm.routes`): what the
//! request asks (its model, whether it streams, its output cap), refused
//! with 400 `invalid_request` when the body is not what its API promises;
//! and for an OpenAI chat stream that does not ask for usage, the body
//! forwarded asks for it (the stream's usage-only chunk is then kept from
//! the client: `llm::rewrite`).

use super::{Admission, Outcome};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};
use crate::llm::call::LlmCall;
use crate::llm::{request, rewrite};

impl<H: StreamHost> Flow<H> {
    pub(super) fn read_llm_request(&mut self, admission: &mut Admission) -> Outcome {
        let Some(api) = self.exchange.llm_api else {
            return Outcome::Done;
        };
        let Ok(size) = usize::try_from(self.exchange.request_bytes) else {
            return Outcome::deny(Denial::PayloadTooLarge);
        };
        let Some(body) = self.host.request_body(0, size) else {
            self.log(LogLevel::Error, "cannot read the request body");
            return Outcome::deny(Denial::AuthUnavailable);
        };
        let asked = match request::parse(api, &self.exchange.path, &body) {
            Ok(asked) => asked,
            Err(invalid) => return Outcome::deny(Denial::InvalidRequest(invalid)),
        };
        let mut usage_added = false;
        let mut forwarded_bytes = self.exchange.request_bytes;
        if asked.needs_include_usage() {
            if let Some(forwarded) = rewrite::with_include_usage(&body) {
                if let Err(e) = self.forward_body(size, &forwarded) {
                    self.log(LogLevel::Error, &format!("cannot rewrite the body: {e}"));
                    return Outcome::deny(Denial::AuthUnavailable);
                }
                usage_added = true;
                forwarded_bytes = forwarded.len() as u64;
            }
        }
        let default_cap = self
            .worker
            .as_ref()
            .map_or(crate::llm::routes::DEFAULT_OUTPUT_CAP, |w| {
                w.config().llm.default_output_cap_of(&self.exchange.path)
            });
        let mut call = LlmCall::new(
            asked,
            &self.exchange.path,
            usage_added,
            self.exchange.request_bytes,
        )
        .with_default_cap(default_cap);
        call.body_rewritten(forwarded_bytes);
        if admission.budgets.priced {
            // A key with a money quota was verified with the price table:
            // without it the call's cost cannot be bounded.
            let Some(book) = crate::prices::load(&self.host) else {
                self.log(
                    LogLevel::Error,
                    "no price table for a money quota; refusing",
                );
                return Outcome::deny(Denial::AuthUnavailable);
            };
            let price = book.price_at(call.model(), self.exchange.started_ms);
            call.priced_at(price.cloned());
        }
        admission.llm = Some(call);
        Outcome::Done
    }

    /// Replaces the body the upstream gets (`size` bytes held) and its
    /// `content-length`.
    fn forward_body(&self, size: usize, body: &[u8]) -> Result<(), crate::host::HostError> {
        self.host.replace_request_body(size, body)?;
        self.host
            .set_request_header("content-length", &body.len().to_string())
    }
}
