//! `/api/v1/businesses`: businesses, their numbers, guard policy and own guard rules.

pub use crate::ops::businesses::{BusinessDetail, CreateBusiness};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Body, ErrorBody};
use crate::http::AppState;
use crate::ops;
use crate::store::{Business, BusinessRule, BusinessUpdate};

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
    Ok(Json(ops::businesses::list(&state.store).await?))
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
        Json(ops::businesses::create(&state.store, state.business_checks(), new).await?),
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
        ops::businesses::set_policy(&state.store, &id, &body.policy, state.config.transcribes())
            .await?,
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
    let number = ops::businesses::add_number(&state.store, &id, &body.number).await?;
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
    Ok(Json(
        ops::businesses::update(&state.store, state.business_checks(), &id, &update).await?,
    ))
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
    ops::businesses::delete(&state.store, &id).await?;
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
    ops::businesses::remove_number(&state.store, &id, &number).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A guard rule to add or replace (its id is in the path).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRule {
    /// Regular expression over the normalised (lower-case) transcript; the rule file's
    /// `{{macros}}` may be used.
    pub pattern: String,
    /// How much a match adds to the risk score, 0 to 1.
    pub weight: f64,
    /// Category for reports; default `business`.
    pub category: Option<String>,
}

/// The business's own guard rules, enabled or not, sorted by rule id.
#[utoipa::path(get, path = "/api/v1/businesses/{id}/guard-rules", tag = "businesses",
    params(("id" = String, Path, description = "Business id")),
    responses((status = 200, description = "Rules", body = Vec<Object>),
        (status = 404, description = "No such business", body = ErrorBody)))]
pub(super) async fn list_rules(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<BusinessRule>>, ApiError> {
    Ok(Json(ops::rules::list(&state.store, &id).await?))
}

/// Adds a guard rule to the business, or replaces its rule with this id (a configured rule's
/// id replaces that rule for this business). Checked by the sanitizer before it is stored.
#[utoipa::path(put, path = "/api/v1/businesses/{id}/guard-rules/{rule_id}", tag = "businesses",
    params(("id" = String, Path, description = "Business id"),
        ("rule_id" = String, Path, description = "Rule id")),
    request_body = SetRule,
    responses((status = 200, description = "The rule as stored", body = Object),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "The sanitizer would not compile it", body = ErrorBody)))]
pub(super) async fn set_rule(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
    Body(body): Body<SetRule>,
) -> Result<Json<BusinessRule>, ApiError> {
    let rule = BusinessRule {
        rule_id,
        category: body
            .category
            .unwrap_or_else(|| ops::rules::DEFAULT_CATEGORY.into()),
        pattern: body.pattern,
        weight: body.weight,
        enabled: true,
    };
    let sanitizer = state.calls.sanitizer();
    Ok(Json(
        ops::rules::set(&state.store, sanitizer, &id, rule).await?,
    ))
}

/// Disables a guard rule for the business: its own rule stops applying, a configured rule's id
/// switches that rule off for it.
#[utoipa::path(delete, path = "/api/v1/businesses/{id}/guard-rules/{rule_id}", tag = "businesses",
    params(("id" = String, Path, description = "Business id"),
        ("rule_id" = String, Path, description = "Rule id")),
    responses((status = 200, description = "The rule as stored, disabled", body = Object),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "Malformed rule id", body = ErrorBody)))]
pub(super) async fn disable_rule(
    State(state): State<AppState>,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<Json<BusinessRule>, ApiError> {
    Ok(Json(
        ops::rules::disable(&state.store, &id, &rule_id).await?,
    ))
}
