//! tollgate's filter: lets a request reach the protected AI service only
//! when its API key is good, its HMAC-signed token is valid and the body is
//! exactly what the token signed; reports usage in batches.
//!
//! Everything but [`wasm`] is plain Rust that knows nothing of proxy-wasm:
//! the request [`flow`] and the worker's [`root`] are generic over the
//! [`host`] interface, and are tested natively through `fake_host`. `wasm`
//! is the one adapter that calls `proxy_wasm`, compiled for `wasm32` only.
//! docs/ARCHITECTURE.md has the module map.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod body;
pub mod cache;
pub mod config;
pub mod error;
pub mod feed;
pub mod flow;
pub mod flusher;
pub mod headers;
pub mod host;
pub mod limits;
pub mod llm;
pub mod metering;
pub mod metrics;
pub mod prices;
pub mod replay;
pub mod request_id;
pub mod root;
pub mod shared_table;
pub mod sidecar_call;
pub mod token;
pub mod usage;
pub mod verdict;
pub mod worker;

#[cfg(test)]
pub mod fake_host;
#[cfg(test)]
pub mod testkit;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    wasm::register();
}}
