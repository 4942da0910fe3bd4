//! tollgate sidecar: the key registry and usage ledger behind the tollgate
//! Envoy filter, served over HTTP (axum) and managed with the `tollgate` CLI.
//!
//! Layers, each importing only those before it: [`domain`] (rules, no axum,
//! no sqlx), [`store`] (the database), [`http`] (one module per resource,
//! the router, the API error), [`alerts`] (the budget alerts' checker and
//! webhook sender, beside the HTTP service), then [`config`], [`app`] (serving) and
//! [`cli`] (the `tollgate` commands). The binary (`src/main.rs`) only
//! hands its arguments to the CLI; tests build the router in-process with
//! [`http::router`].

pub mod alerts;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod store;
