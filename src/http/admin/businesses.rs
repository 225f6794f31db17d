//! `/api/v1/businesses`: businesses, their numbers and guard policy.

pub use crate::ops::businesses::{BusinessDetail, CreateBusiness};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Body, ErrorBody};
use crate::http::AppState;
use crate::ops;
use crate::store::{Business, BusinessUpdate, normalize_e164};

/// A new guard policy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetPolicy {
    /// `monitor`, `gate` or `flag`.
    pub policy: String,
}

/// A phone number to route to a business.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AddNumber {
    /// The number; normalised to E.164 (`"+1 (415) 555-0100"` → `"+14155550100"`).
    pub number: String,
}

/// A routed number.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NumberAdded {
    /// The business.
    pub business_id: String,
    /// The number as stored (E.164).
    pub number: String,
}

/// Every business, oldest first.
#[utoipa::path(get, path = "/api/v1/businesses", tag = "businesses",
    responses((status = 200, description = "Businesses", body = Vec<Object>)))]
pub(super) async fn list_businesses(
    State(state): State<AppState>,
) -> Result<Json<Vec<Business>>, ApiError> {
    Ok(Json(state.store.list_businesses().await?))
}

/// Creates a business.
#[utoipa::path(post, path = "/api/v1/businesses", tag = "businesses", request_body = CreateBusiness,
    responses((status = 201, description = "Created", body = Object),
        (status = 409, description = "Id taken", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub(super) async fn create_business(
    State(state): State<AppState>,
    Body(new): Body<CreateBusiness>,
) -> Result<(StatusCode, Json<Business>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(ops::businesses::create(&state.store, new).await?),
    ))
}

/// A business with its numbers.
#[utoipa::path(get, path = "/api/v1/businesses/{id}", tag = "businesses",
    params(("id" = String, Path, description = "Business id")),
    responses((status = 200, description = "The business", body = BusinessDetail),
        (status = 404, description = "No such business", body = ErrorBody)))]
pub(super) async fn show_business(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BusinessDetail>, ApiError> {
    Ok(Json(ops::businesses::detail(&state.store, &id).await?))
}

/// Sets a business's guard policy.
#[utoipa::path(put, path = "/api/v1/businesses/{id}/policy", tag = "businesses",
    params(("id" = String, Path, description = "Business id")), request_body = SetPolicy,
    responses((status = 200, description = "The updated business", body = Object),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "Unknown policy", body = ErrorBody)))]
pub(super) async fn set_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SetPolicy>,
) -> Result<Json<Business>, ApiError> {
    Ok(Json(
        ops::businesses::set_policy(&state.store, &id, &body.policy).await?,
    ))
}

/// Routes a phone number to a business.
#[utoipa::path(post, path = "/api/v1/businesses/{id}/numbers", tag = "businesses",
    params(("id" = String, Path, description = "Business id")), request_body = AddNumber,
    responses((status = 201, description = "Routed", body = NumberAdded),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 409, description = "Number already routed", body = ErrorBody),
        (status = 422, description = "Malformed number", body = ErrorBody)))]
pub(super) async fn add_number(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<AddNumber>,
) -> Result<(StatusCode, Json<NumberAdded>), ApiError> {
    let number = normalize_e164(&body.number)?;
    state.store.add_number(&number, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(NumberAdded {
            business_id: id,
            number,
        }),
    ))
}

/// Changes a business: each field given replaces the stored one. Calls in progress keep what
/// they started with; the next call uses the change.
#[utoipa::path(patch, path = "/api/v1/businesses/{id}", tag = "businesses",
    params(("id" = String, Path, description = "Business id")), request_body = BusinessUpdate,
    responses((status = 200, description = "The updated business", body = Object),
        (status = 400, description = "Unknown field or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub(super) async fn update_business(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(update): Body<BusinessUpdate>,
) -> Result<Json<Business>, ApiError> {
    Ok(Json(state.store.update_business(&id, &update).await?))
}

/// Deletes a business with its numbers, guard rules, prompt versions and experiments. Its call
/// records stay.
#[utoipa::path(delete, path = "/api/v1/businesses/{id}", tag = "businesses",
    params(("id" = String, Path, description = "Business id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such business", body = ErrorBody)))]
pub(super) async fn delete_business(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_business(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops routing a number to a business.
#[utoipa::path(delete, path = "/api/v1/businesses/{id}/numbers/{number}", tag = "businesses",
    params(("id" = String, Path, description = "Business id"),
        ("number" = String, Path, description = "The number, E.164 (`%2B14155550100`)")),
    responses((status = 204, description = "No longer routed"),
        (status = 404, description = "Not routed to this business", body = ErrorBody),
        (status = 422, description = "Malformed number", body = ErrorBody)))]
pub(super) async fn remove_number(
    State(state): State<AppState>,
    Path((id, number)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.remove_number(&id, &number).await?;
    Ok(StatusCode::NO_CONTENT)
}
