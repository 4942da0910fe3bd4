//! tollgate's filter as an Envoy dynamic module (x86_64 Linux): the same
//! request flow and root as the proxy-wasm build (`filter::flow`,
//! `filter::root`), on a second host that speaks Envoy's dynamic-module C
//! ABI. README.md says how to load it.
//!
//! The layers, each importing only the ones below it:
//!
//! - [`hooks`]: the functions Envoy calls; each unboxes, guards and forwards.
//! - [`module`]: what each hook does (the roots, the streams' flows, the
//!   usage record queue), written against the traits of [`abi::api`].
//! - [`host`]: the filter's host interface on those traits; [`shared`]: the
//!   process-wide shared data.
//! - [`abi`]: the bindings: the raw declarations ([`abi::raw`]) and the safe
//!   wrappers that implement [`abi::api`].
//!
//! Only `abi` and `hooks` hold `unsafe` code.

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

pub mod abi;
pub mod hooks;
pub mod host;
pub mod module;
pub mod shared;

#[cfg(test)]
mod fake;
