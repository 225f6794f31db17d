//! Prompt experiments for operators: read one, and how each arm did. The results' bootstrap is
//! CPU work, so it runs off the async workers whichever door asked.

use crate::ops::OpsError;
use crate::prompt::results::{self, ExperimentResults};
use crate::store::{Experiment, Store};

/// The experiment `id`.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn experiment(store: &Store, id: &str) -> Result<Experiment, OpsError> {
    store
        .experiment(id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("experiment {id:?}")))
}

/// How each arm of experiment `id` did, from the calls recorded in it: per-arm figures and
/// each difference (variant minus control) with its 95% interval (see
/// [`results::results`]).
///
/// Errors: [`OpsError::NotFound`]; the store's own; [`OpsError::Internal`] if the computation
/// could not run.
pub async fn results(store: &Store, id: &str) -> Result<ExperimentResults, OpsError> {
    let experiment = experiment(store, id).await?;
    let calls = store.experiment_calls(id).await?;
    tokio::task::spawn_blocking(move || results::results(&experiment, &calls))
        .await
        .map_err(|e| OpsError::Internal(format!("computing experiment results: {e}")))
}
