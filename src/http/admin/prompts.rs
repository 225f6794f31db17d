//! `/api/v1/businesses/{id}/prompts`, `/preview` and `/api/v1/prompts`: prompt versions, through
//! the same use cases as `voxrelay prompt` (`crate::ops::prompts`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Body, ErrorBody};
use crate::domain::Direction;
use crate::http::AppState;
use crate::ops;
use crate::prompt::diff::unified_diff;
use crate::store::{PromptStatus, PromptVersion};

/// Author recorded for a version created without one.
pub(super) const DEFAULT_AUTHOR: &str = "admin-api";

/// A draft to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePrompt {
    /// `inbound` or `outbound`.
    #[schema(value_type = String, example = "inbound")]
    pub direction: Direction,
    /// The business prompt body (may use `{{ business.name }}` and the other variables).
    pub body: String,
    /// Who wrote it; default `"admin-api"`.
    pub author: Option<String>,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// A version as stored, with what validation found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidatedVersion {
    /// The version.
    #[schema(value_type = Object)]
    pub version: PromptVersion,
    /// Validation warnings (they do not reject the body).
    pub warnings: Vec<String>,
    /// FULL, o200k_base tokens.
    pub full_tokens: usize,
    /// COMPACT, o200k_base tokens.
    pub compact_tokens: usize,
    /// Tokens at the start of FULL shared with other businesses.
    pub shared_prefix_tokens: usize,
    /// What the business's tools add to every response's input, o200k_base tokens.
    pub tools_tokens: usize,
}

/// Filter of the version list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DirectionFilter {
    /// `inbound` or `outbound`; both when absent.
    #[param(value_type = Option<String>)]
    pub direction: Option<Direction>,
}

/// Where to promote a version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Promote {
    /// `staging` or `production`.
    #[schema(value_type = String, example = "production")]
    pub to: PromptStatus,
}

/// Which version to bring back.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Rollback {
    /// `inbound` or `outbound`.
    #[schema(value_type = String, example = "inbound")]
    pub direction: Direction,
    /// The archived version id to make production again.
    pub to: String,
}

/// A diff as JSON (asked for with `Accept: application/json`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffBody {
    /// Unified diff, 3 lines of context; empty when the bodies are equal.
    pub diff: String,
}

/// What to preview.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PreviewQuery {
    /// `inbound` (default) or `outbound`.
    #[param(value_type = Option<String>)]
    pub direction: Option<Direction>,
    /// Version id; default the production version, else the business's own prompt.
    pub version: Option<String>,
}

/// The built prompts (rendered with sample call values) and their sizes.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preview {
    /// The FULL prompt.
    pub full: String,
    /// The COMPACT prompt.
    pub compact: String,
    /// FULL, o200k_base tokens.
    pub full_tokens: usize,
    /// COMPACT, o200k_base tokens.
    pub compact_tokens: usize,
    /// Tokens at the start of FULL shared byte for byte with other businesses.
    pub shared_prefix_tokens: usize,
    /// What the business's tools add to every response's input, o200k_base tokens.
    pub tools_tokens: usize,
    /// Validation warnings.
    pub warnings: Vec<String>,
}

pub(super) fn validated(done: ops::prompts::Validated) -> ValidatedVersion {
    let report = done.report;
    ValidatedVersion {
        version: done.version,
        warnings: report.warnings.iter().map(ToString::to_string).collect(),
        full_tokens: report.full_tokens,
        compact_tokens: report.compact_tokens,
        shared_prefix_tokens: report.shared_prefix_tokens,
        tools_tokens: report.tools_tokens,
    }
}

/// Creates a draft prompt version after validating its body.
#[utoipa::path(post, path = "/api/v1/businesses/{id}/prompts", tag = "prompts",
    params(("id" = String, Path, description = "Business id")), request_body = CreatePrompt,
    responses((status = 201, description = "Draft created", body = ValidatedVersion),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "Body rejected; `problems` names each problem", body = ErrorBody)))]
pub(super) async fn create_prompt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(new): Body<CreatePrompt>,
) -> Result<(StatusCode, Json<ValidatedVersion>), ApiError> {
    let done = ops::prompts::create_version(
        &state.store,
        &state.prompts,
        ops::prompts::NewDraft {
            business_id: id,
            direction: new.direction,
            body: new.body,
            author: new.author.unwrap_or_else(|| DEFAULT_AUTHOR.into()),
            note: new.note,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(validated(done))))
}

/// A business's prompt versions, newest first.
#[utoipa::path(get, path = "/api/v1/businesses/{id}/prompts", tag = "prompts",
    params(("id" = String, Path, description = "Business id"), DirectionFilter),
    responses((status = 200, description = "Versions", body = Vec<Object>),
        (status = 404, description = "No such business", body = ErrorBody)))]
pub(super) async fn list_prompts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(filter): Query<DirectionFilter>,
) -> Result<Json<Vec<PromptVersion>>, ApiError> {
    ops::business(&state.store, &id).await?;
    Ok(Json(
        state.store.prompt_versions(&id, filter.direction).await?,
    ))
}

/// Makes an earlier (archived) version production again.
#[utoipa::path(post, path = "/api/v1/businesses/{id}/prompts/rollback", tag = "prompts",
    params(("id" = String, Path, description = "Business id")), request_body = Rollback,
    responses((status = 200, description = "The version, now production", body = Object),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "The version is a draft or in staging", body = ErrorBody),
        (status = 422, description = "The version is another business's or direction's", body = ErrorBody)))]
pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<Rollback>,
) -> Result<Json<PromptVersion>, ApiError> {
    let done =
        ops::prompts::rollback(&state.store, &state.prompts, &id, body.direction, &body.to).await?;
    Ok(Json(done.version))
}

/// The built FULL and COMPACT prompts of a business for a direction and version.
#[utoipa::path(get, path = "/api/v1/businesses/{id}/preview", tag = "prompts",
    params(("id" = String, Path, description = "Business id"), PreviewQuery),
    responses((status = 200, description = "The built prompts", body = Preview),
        (status = 404, description = "No such business or version", body = ErrorBody),
        (status = 422, description = "The body cannot be built", body = ErrorBody)))]
pub(super) async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    let direction = query.direction.unwrap_or(Direction::Inbound);
    let preview = ops::prompts::preview(
        &state.store,
        &state.prompts,
        &id,
        direction,
        query.version.as_deref(),
    )
    .await?;
    let report = preview.report;
    let warnings = report.warnings.iter().map(ToString::to_string).collect();
    let Some(built) = report.prompts else {
        return Err(ApiError::Internal(
            "a previewed prompt was not built".into(),
        ));
    };
    Ok(Json(Preview {
        full: built.full,
        compact: built.compact,
        full_tokens: report.full_tokens,
        compact_tokens: report.compact_tokens,
        shared_prefix_tokens: report.shared_prefix_tokens,
        tools_tokens: report.tools_tokens,
        warnings,
    }))
}

/// One prompt version.
#[utoipa::path(get, path = "/api/v1/prompts/{id}", tag = "prompts",
    params(("id" = String, Path, description = "Version id")),
    responses((status = 200, description = "The version", body = Object),
        (status = 404, description = "No such version", body = ErrorBody)))]
pub(super) async fn show_prompt(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PromptVersion>, ApiError> {
    Ok(Json(ops::prompts::version(&state.store, &id).await?))
}

/// Unified diff from version `a` to version `b`: `text/plain`, or JSON `{diff}` when the
/// request accepts `application/json`.
#[utoipa::path(get, path = "/api/v1/prompts/{a}/diff/{b}", tag = "prompts",
    params(("a" = String, Path, description = "Older version id"),
        ("b" = String, Path, description = "Newer version id")),
    responses((status = 200, description = "Unified diff",
            content((String = "text/plain"), (DiffBody = "application/json"))),
        (status = 404, description = "No such version", body = ErrorBody)))]
pub(super) async fn diff(
    State(state): State<AppState>,
    Path((a, b)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let old = ops::prompts::version(&state.store, &a).await?;
    let new = ops::prompts::version(&state.store, &b).await?;
    let diff = unified_diff(
        &old.body,
        &new.body,
        &format!("{} v{}", old.id, old.version),
        &format!("{} v{}", new.id, new.version),
    );
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    Ok(if wants_json {
        Json(DiffBody { diff }).into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], diff).into_response()
    })
}

/// Promotes a version to staging or production after validating its body again.
#[utoipa::path(post, path = "/api/v1/prompts/{id}/promote", tag = "prompts",
    params(("id" = String, Path, description = "Version id")), request_body = Promote,
    responses((status = 200, description = "Promoted", body = ValidatedVersion),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Not allowed from its status, or lost every race", body = ErrorBody),
        (status = 422, description = "Body rejected, or `to` not staging/production", body = ErrorBody)))]
pub(super) async fn promote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<Promote>,
) -> Result<Json<ValidatedVersion>, ApiError> {
    let done = ops::prompts::promote(&state.store, &state.prompts, &id, body.to).await?;
    Ok(Json(validated(done)))
}
