//! `/api/v1/businesses/{id}/experiments` and `/api/v1/experiments`: prompt experiments.

pub use crate::ops::experiments::{Assignment, CreateExperiment};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, Body, ErrorBody};
use crate::http::AppState;
use crate::ops;
use crate::prompt::results::ExperimentResults;
use crate::store::Experiment;

/// Which caller to look up.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AssignmentQuery {
    /// The customer's number as Twilio sends it (`From` inbound, `To` outbound).
    pub caller: String,
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
    let experiment = ops::experiments::create(&state.store, &id, &body).await?;
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
    Ok(Json(
        ops::experiments::assignment(&state.store, &id, &query.caller).await?,
    ))
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
    Ok(Json(ops::experiments::start(&state.store, &id).await?))
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
    Ok(Json(ops::experiments::stop(&state.store, &id).await?))
}
