//! tollgate's proxy-wasm filter: lets a request reach the protected AI
//! service only when its API key is good, its HMAC-signed token is valid and
//! the body is exactly what the token signed; reports usage in batches.
//!
//! Everything but [`plugin`] is plain Rust that knows nothing of the host and
//! is tested natively; `plugin` is the only module that calls `proxy_wasm`
//! and is compiled for `wasm32` only.

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
pub mod gate;
pub mod metrics;
pub mod replay;
pub mod request_id;
pub mod token;
pub mod usage;

#[cfg(target_arch = "wasm32")]
pub mod plugin;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    plugin::register();
}}
