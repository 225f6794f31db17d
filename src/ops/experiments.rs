//! Prompt experiments for operators: create a draft, start, stop, read one, which arm a caller
//! gets, and how each arm did. The results' bootstrap is CPU work, so it runs off the async
//! workers whichever door asked.

use serde::{Deserialize, Serialize};

use crate::domain::{Arm, Direction};
use crate::ops::OpsError;
use crate::prompt::experiment as split;
use crate::prompt::results::{self, ExperimentResults};
use crate::store::{Experiment, Store};

/// An experiment to create (as a draft) for a business.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateExperiment {
    /// `inbound` or `outbound`.
    #[schema(value_type = String, example = "inbound")]
    pub direction: Direction,
    /// Version the rest of the calls get.
    pub control_version_id: String,
    /// Version `traffic_percent` of the calls get.
    pub variant_version_id: String,
    /// Share of calls for the variant, 0–100.
    pub traffic_percent: i64,
}

/// The arm a caller gets in an experiment.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// The experiment.
    pub experiment_id: String,
    /// The caller, as asked.
    pub caller: String,
    /// `control` or `variant`.
    #[schema(value_type = String, example = "variant")]
    pub arm: Arm,
    /// The prompt version of that arm.
    pub version_id: String,
    /// The caller's bucket, 0–99; below `traffic_percent` gets the variant.
    pub bucket: u8,
}

/// Creates a draft experiment for business `business`.
///
/// Errors: the store's own (a percent outside 0–100, versions that are not the business's or
/// not of that direction, no such version).
pub async fn create(
    store: &Store,
    business: &str,
    new: &CreateExperiment,
) -> Result<Experiment, OpsError> {
    Ok(store
        .create_experiment(
            business,
            new.direction,
            &new.control_version_id,
            &new.variant_version_id,
            new.traffic_percent,
        )
        .await?)
}

/// Starts experiment `id` (one running per business and direction).
///
/// Errors: the store's own (no such experiment, another running, this one stopped).
pub async fn start(store: &Store, id: &str) -> Result<Experiment, OpsError> {
    Ok(store.start_experiment(id).await?)
}

/// Stops experiment `id`.
///
/// Errors: the store's own (no such experiment).
pub async fn stop(store: &Store, id: &str) -> Result<Experiment, OpsError> {
    Ok(store.stop_experiment(id).await?)
}

/// The arm (and prompt version) `caller` gets in experiment `id`: the same consistent hash the
/// webhook uses, so a caller always hears the same variant.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn assignment(store: &Store, id: &str, caller: &str) -> Result<Assignment, OpsError> {
    let experiment = experiment(store, id).await?;
    let arm = split::assign(&experiment.id, caller, experiment.traffic_percent);
    let version_id = match arm {
        Arm::Control => experiment.control_version_id,
        Arm::Variant => experiment.variant_version_id,
    };
    Ok(Assignment {
        bucket: split::bucket(&experiment.id, caller),
        experiment_id: experiment.id,
        caller: caller.to_owned(),
        arm,
        version_id,
    })
}

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
