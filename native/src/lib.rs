//! tollgate's filter as an Envoy dynamic module (x86_64 Linux): the same
//! request flow and root as the proxy-wasm build (`filter::flow`,
//! `filter::root`), on a second host that speaks Envoy's dynamic-module C
//! ABI. `abi` is the bindings (the crate's only `unsafe`), `host`
//! implements the filter's host interface on them, `module` is what each
//! hook does, and `shared` is the process-wide shared data. README.md says
//! how to load it.

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
pub mod host;
pub mod module;
pub mod shared;
