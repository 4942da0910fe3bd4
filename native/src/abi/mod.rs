//! The bindings: the one place that calls Envoy's dynamic-module C ABI.
//! [`raw`] declares what the module uses of it (and says which ABI version
//! and Envoy release the declarations were checked against); [`api`] is
//! what the rest of the crate asks of Envoy, as small traits; [`stream`],
//! [`config`] and `context.rs` implement them on the raw callbacks, and
//! [`buffers`] moves bytes across. Each `unsafe` block has its
//! `// SAFETY:` comment. Nothing here decides anything, and nothing here
//! knows the filter but its log levels.

pub mod api;
pub mod buffers;
pub mod config;
mod context;
pub mod raw;
pub mod stream;

pub use api::{EnvoyConfig, EnvoyContext, EnvoyScheduler, EnvoyStream};
pub use buffers::{log, Answer};
pub use config::{ConfigPtr, Scheduler};
pub use stream::StreamPtr;
