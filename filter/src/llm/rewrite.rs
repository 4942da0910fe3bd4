//! The one change the gateway makes to an LLM call: an OpenAI chat stream
//! reports its usage only when the request asks
//! (`stream_options.include_usage: true`), and the gateway meters every
//! call. So when the client did not ask, the forwarded body asks
//! ([`with_include_usage`]) and the usage-only chunk this adds to the
//! stream is taken out of the answer ([`UsageChunkStripper`]): the client
//! gets the stream it asked for, the gateway reads the usage on its way.

mod include_usage;
mod strip;

pub use include_usage::with_include_usage;
pub use strip::{UsageChunkStripper, MAX_HELD_EVENT};
