//! Rotating the master key: `tollgate keys rewrap` re-seals every stored
//! signing secret under the current master key (`TOLLGATE_MASTER_KEY`),
//! opening each with the master key it names (the current one or one of
//! `TOLLGATE_PREVIOUS_MASTER_KEY`).
//!
//! It works row by row, each row on its own: first every secret is opened
//! and re-sealed in memory, and if any does not open nothing is written;
//! then each row is replaced only if it still holds the value read (a
//! compare-and-swap). A run stopped half-way leaves every row sealed under
//! either the old or the new master key, both still accepted while both are
//! configured, and running it again finishes the job.

use serde::{Deserialize, Serialize};

use crate::domain::sealed::Keyring;
use crate::store::Store;

/// What a rewrap did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapReport {
    /// The id of the master key every rewrapped secret is now sealed under.
    pub master_key_id: String,
    /// Secrets re-sealed under it.
    pub rewrapped: u64,
    /// Secrets that were sealed under it already.
    pub already_current: u64,
    /// Secrets that changed between reading and writing (left as they were;
    /// run again).
    pub changed_meanwhile: u64,
}

/// Re-seals every stored signing secret under `keyring`'s current master key.
/// The error is a message for the person at the terminal and names the keys
/// (by id) whose secrets do not open; in that case nothing was written.
pub async fn rewrap_signing_secrets(
    store: &Store,
    keyring: &Keyring,
) -> Result<RewrapReport, String> {
    let current = keyring.current().ok_or_else(|| {
        format!(
            "no master key: run with the new master key in {} and the old one(s) in {}",
            crate::domain::sealed::MASTER_KEY_ENV,
            crate::domain::sealed::PREVIOUS_MASTER_KEY_ENV
        )
    })?;
    let rows = store
        .sealed_signing_secrets()
        .await
        .map_err(|e| e.to_string())?;
    let mut resealed = Vec::new();
    let mut failures = Vec::new();
    let mut already_current = 0;
    for row in rows {
        match keyring.reseal(&row.sealed, &row.key_hash) {
            Ok(Some(new)) => resealed.push((row, new)),
            Ok(None) => already_current += 1,
            Err(cause) => failures.push(format!("key {}: {cause}", row.id)),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "nothing was rewrapped: {} signing secret(s) do not open with the configured \
             master keys:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ));
    }
    let mut report = RewrapReport {
        master_key_id: current.id().to_string(),
        rewrapped: 0,
        already_current,
        changed_meanwhile: 0,
    };
    for (row, new) in resealed {
        let replaced = store
            .replace_sealed_signing_secret(row.id, &row.sealed, &new)
            .await
            .map_err(|e| {
                format!(
                    "rewrapped {} secret(s), then key {} failed: {e}; run again to finish",
                    report.rewrapped, row.id
                )
            })?;
        if replaced {
            report.rewrapped += 1;
        } else {
            report.changed_meanwhile += 1;
        }
    }
    Ok(report)
}
