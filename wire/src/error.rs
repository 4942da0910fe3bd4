//! The JSON error body every tollgate component answers with.

use serde::{Deserialize, Serialize};

/// The JSON error every tollgate component answers with.
///
/// `{"error": {"code": "...", "message": "..."}, "request_id": "..."}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (see the error table in docs/CONTRACT.md).
    pub code: String,
    /// Text for a person.
    pub message: String,
    /// The input field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
