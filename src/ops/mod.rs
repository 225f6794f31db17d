//! Operator use cases, shared by the CLI (`voxrelay prompt …`) and the admin API
//! (`/api/v1/…`): both call these functions, so their behaviour cannot drift. Each takes the
//! store and what else it needs, and returns domain values or an [`OpsError`]; the CLI prints
//! them, the API maps them to JSON and status codes.
//!
//! - [`businesses`]: businesses and their numbers (create with the shared defaults, list, read,
//!   change, delete, policy, route and unroute numbers);
//! - [`prompts`]: prompt versions (create, promote, rollback, preview);
//! - [`experiments`]: prompt experiments (create, start, stop, read one, a caller's arm,
//!   results per arm);
//! - [`rules`]: a business's own guard rules (list, set, disable), checked by the sanitizer.
//! - [`tools`]: a business's tools (list, set, remove), checked before they are stored.
//! - [`calls`]: placing an outbound call, within the business's calling hours and rate.

pub mod businesses;
pub mod calls;
pub mod experiments;
pub mod prompts;
pub mod rules;
pub mod tools;

use crate::prompt::resolve::ResolveError;
use crate::store::{Business, Store, StoreError};

/// The business `id`.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn business(store: &Store, id: &str) -> Result<Business, OpsError> {
    store
        .business(id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("business {id:?}")))
}

/// An operator use case could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Something the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A prompt body failed validation, or there is no prompt to use.
    #[error("the prompt is invalid: {}", problems.join("; "))]
    InvalidPrompt {
        /// Each problem's message.
        problems: Vec<String>,
        /// Each warning's message.
        warnings: Vec<String>,
    },
    /// A value the request gives was rejected (a guard rule the sanitizer would not compile).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The store failed or refused (its own not-found, invalid and conflict cases included).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something on our side failed (a computation that could not run).
    #[error("internal error: {0}")]
    Internal(String),
    /// A business rule refuses the request (an outbound call outside the calling hours); the
    /// message names the rule.
    #[error("refused: {0}")]
    Refused(String),
    /// A rate is spent (the business's outbound calls a minute).
    #[error("{0}")]
    RateLimited(String),
    /// Something the request needs is not configured (Twilio REST credentials).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Twilio refused or failed the request.
    #[error("Twilio: {0}")]
    Twilio(String),
}

impl From<ResolveError> for OpsError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Store(e) => OpsError::Store(e),
            ResolveError::VersionNotFound(_) | ResolveError::NotThisPrompt { .. } => {
                OpsError::NotFound(e.to_string())
            }
            ResolveError::NoPrompt { .. } => OpsError::InvalidPrompt {
                problems: vec![e.to_string()],
                warnings: Vec::new(),
            },
        }
    }
}
