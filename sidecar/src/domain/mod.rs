//! The sidecar's rules, as plain functions and types: instants and their
//! accepted range, names, randomness, signing secrets and their sealing,
//! tokens, how secrets are shown, teams.
//!
//! Layer rule: `domain` imports nothing else of the crate; no axum, no sqlx.

pub mod alert;
pub mod clock;
pub mod keys;
pub mod mask;
pub mod names;
pub mod price;
pub mod random;
pub mod sealed;
pub mod signing_secret;
pub mod teams;
pub mod token;
pub mod webhook;
