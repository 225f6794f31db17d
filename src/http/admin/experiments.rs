//! `/api/v1/businesses/{id}/experiments` and `/api/v1/experiments`: prompt experiments.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Body, ErrorBody};
use crate::domain::{Arm, Direction};
use crate::http::AppState;
use crate::ops;
use crate::prompt::experiment;
use crate::prompt::results::ExperimentResults;
use crate::store::Experiment;

/// An experiment to create (as a draft).
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

/// Which caller to look up.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AssignmentQuery {
    /// The customer's number as Twilio sends it (`From` inbound, `To` outbound).
    pub caller: String,
}

/// The arm a caller gets in an experiment.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// The experiment.
    pub experiment_id: String,
    /// The caller, as asked.
    pub caller: String,
    /// `control` or `variant`.
    pub arm: String,
    /// The prompt version of that arm.
    pub version_id: String,
    /// The caller's bucket, 0–99; below `traffic_percent` gets the variant.
    pub bucket: u8,
}

/// Creates a draft experiment.
#[utoipa::path(post, path = "/api/v1/businesses/{id}/experiments", tag = "experiments",
    params(("id" = String, Path, description = "Business id")), request_body = CreateExperiment,
    responses((status = 201, description = "Created", body = Object),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 422, description = "Invalid percent or versions", body = ErrorBody)))]
pub(super) async fn create_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<CreateExperiment>,
) -> Result<(StatusCode, Json<Experiment>), ApiError> {
    let experiment = state
        .store
        .create_experiment(
            &id,
            body.direction,
            &body.control_version_id,
            &body.variant_version_id,
            body.traffic_percent,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(experiment)))
}

/// How each arm of an experiment did, with the difference in each figure and its 95%
/// confidence interval (see `method` in the answer).
#[utoipa::path(get, path = "/api/v1/experiments/{id}/results", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "Results per arm", body = ExperimentResults),
        (status = 404, description = "No such experiment", body = ErrorBody)))]
pub(super) async fn experiment_results(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentResults>, ApiError> {
    let results = ops::experiments::results(&state.store, &id).await?;
    Ok(Json(results))
}

/// The arm (and prompt version) a caller gets in an experiment: the same consistent hash the
/// webhook uses, so a caller always hears the same variant.
#[utoipa::path(get, path = "/api/v1/experiments/{id}/assignment", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id"), AssignmentQuery),
    responses((status = 200, description = "The caller's arm", body = Assignment),
        (status = 400, description = "No caller given", body = ErrorBody),
        (status = 404, description = "No such experiment", body = ErrorBody)))]
pub(super) async fn experiment_assignment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<AssignmentQuery>,
) -> Result<Json<Assignment>, ApiError> {
    let experiment = ops::experiments::experiment(&state.store, &id).await?;
    let arm = experiment::assign(&experiment.id, &query.caller, experiment.traffic_percent);
    let version_id = match arm {
        Arm::Control => experiment.control_version_id,
        Arm::Variant => experiment.variant_version_id,
    };
    Ok(Json(Assignment {
        bucket: experiment::bucket(&experiment.id, &query.caller),
        experiment_id: experiment.id,
        caller: query.caller,
        arm: arm.as_str().to_string(),
        version_id,
    }))
}

/// One experiment.
#[utoipa::path(get, path = "/api/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "The experiment", body = Object),
        (status = 404, description = "No such experiment", body = ErrorBody)))]
pub(super) async fn show_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    Ok(Json(ops::experiments::experiment(&state.store, &id).await?))
}

/// Starts an experiment (one running per business and direction).
#[utoipa::path(post, path = "/api/v1/experiments/{id}/start", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "Running", body = Object),
        (status = 404, description = "No such experiment", body = ErrorBody),
        (status = 409, description = "Another is running, or it was stopped", body = ErrorBody)))]
pub(super) async fn start_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    Ok(Json(state.store.start_experiment(&id).await?))
}

/// Stops an experiment.
#[utoipa::path(post, path = "/api/v1/experiments/{id}/stop", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses((status = 200, description = "Stopped", body = Object),
        (status = 404, description = "No such experiment", body = ErrorBody)))]
pub(super) async fn stop_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    Ok(Json(state.store.stop_experiment(&id).await?))
}
