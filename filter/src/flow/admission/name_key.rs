//! The first step of admission: the request names its key to the
//! upstream in `x-tollgate-key-id` (the client's own value was stripped on
//! arrival).

use tollgate_wire::KEY_ID_HEADER;

use super::{Admission, Outcome};
use crate::error::Denial;
use crate::flow::Flow;
use crate::host::{LogLevel, StreamHost};

impl<H: StreamHost> Flow<H> {
    pub(super) fn name_key(&mut self, admission: &Admission) -> Outcome {
        match self
            .host
            .set_request_header(KEY_ID_HEADER, &admission.key_id.to_string())
        {
            Ok(()) => Outcome::Done,
            Err(e) => {
                self.log(LogLevel::Error, &format!("cannot set {KEY_ID_HEADER}: {e}"));
                Outcome::deny(Denial::AuthUnavailable)
            }
        }
    }
}
