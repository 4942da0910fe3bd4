//! LLM APIs behind the gateway, in plain Rust with no host: which paths
//! are which API ([`routes`]), what a request asks ([`request`]), the server-sent events of a streamed answer
//! ([`sse`]), the token usage in an answer, streamed or not ([`usage`]),
//! the estimate when an answer ends without usage ([`estimate`]), the
//! forwarded body's `include_usage` and the stream's usage-only chunk
//! ([`rewrite`]), refusals in each provider's error shape ([`errors`]),
//! and one call let through, read as its answer passes ([`call`]).

pub mod call;
pub mod errors;
pub mod estimate;
pub mod request;
pub mod rewrite;
pub mod routes;
pub mod sse;
pub mod usage;

pub use call::TokenBound;
