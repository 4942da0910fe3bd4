//! The two changes the gateway makes to an LLM call.
//!
//! - An OpenAI chat stream reports its usage only when the request asks
//!   (`stream_options.include_usage: true`), and the gateway meters every
//!   call. So when the client did not ask, the forwarded body asks
//!   ([`with_include_usage`]) and the usage-only chunk this adds to the
//!   stream is taken out of the answer ([`UsageChunkStripper`]): the client
//!   gets the stream it asked for, the gateway reads the usage on its way.
//! - A call of a key with a token quota that sets no output cap is
//!   forwarded with the gateway's default cap ([`with_output_cap`]), the
//!   cap its reservation counted on.

mod include_usage;
mod output_cap;
mod strip;
mod top_level;

pub use include_usage::with_include_usage;
pub use output_cap::with_output_cap;
pub use strip::{UsageChunkStripper, MAX_HELD_EVENT};
