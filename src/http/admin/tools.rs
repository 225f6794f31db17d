//! `/api/v1/businesses/{id}/tools`: a business's function tools and MCP servers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, Body, ErrorBody};
use crate::domain::ToolKind;
use crate::http::AppState;
use crate::ops;
use crate::store::BusinessTool;

/// A tool to add or replace (its name is in the path).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTool {
    /// `function` (default) or `mcp`.
    pub kind: Option<ToolKind>,
    /// What the tool does, for the model (required for a function).
    #[serde(default)]
    pub description: String,
    /// A function's arguments as an object JSON Schema; default: no arguments.
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Value>,
    /// A function's endpoint (`https://`, or `http://` to a loopback address), or an MCP
    /// server's URL.
    pub endpoint: String,
    /// How long the proxy waits for the endpoint, ms (1 to 30,000; default 3,000).
    pub timeout_ms: Option<i64>,
    /// The environment variable holding the signing secret (a function; required) or the MCP
    /// server's bearer token (optional).
    #[serde(default)]
    pub secret_env: String,
    /// An MCP tool's allowed tools; default: all.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
}

impl SetTool {
    /// The tool named `name` this describes.
    pub fn into_tool(self, name: String) -> BusinessTool {
        BusinessTool {
            name,
            kind: self.kind.unwrap_or(ToolKind::Function),
            description: self.description,
            parameters: self
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            endpoint: self.endpoint,
            timeout_ms: self.timeout_ms.unwrap_or(ops::tools::DEFAULT_TIMEOUT_MS),
            secret_env: self.secret_env,
            allowed_tools: self.allowed_tools,
            updated_at_ms: 0,
        }
    }
}

/// The business's tools, sorted by name (the built-ins are not listed: see the business's
/// `end_call_enabled` and `transfer_enabled`).
#[utoipa::path(get, path = "/api/v1/businesses/{id}/tools", tag = "businesses",
    params(("id" = String, Path, description = "Business id")),
    responses((status = 200, description = "Tools", body = Vec<BusinessTool>),
        (status = 404, description = "No such business", body = ErrorBody)))]
pub(super) async fn list_tools(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<BusinessTool>>, ApiError> {
    Ok(Json(ops::tools::list(&state.store, &id).await?))
}

/// Adds a tool to the business, or replaces its tool with this name. Checked before it is
/// stored; the next call has it.
#[utoipa::path(put, path = "/api/v1/businesses/{id}/tools/{name}", tag = "businesses",
    params(("id" = String, Path, description = "Business id"),
        ("name" = String, Path, description = "Tool name")),
    request_body = SetTool,
    responses((status = 200, description = "The tool as stored", body = BusinessTool),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "A field breaks a rule (the message names it)", body = ErrorBody)))]
pub(super) async fn set_tool(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    Body(body): Body<SetTool>,
) -> Result<Json<BusinessTool>, ApiError> {
    Ok(Json(
        ops::tools::set(&state.store, &id, body.into_tool(name)).await?,
    ))
}

/// Removes a tool from the business.
#[utoipa::path(delete, path = "/api/v1/businesses/{id}/tools/{name}", tag = "businesses",
    params(("id" = String, Path, description = "Business id"),
        ("name" = String, Path, description = "Tool name")),
    responses((status = 204, description = "Removed"),
        (status = 404, description = "No such business or tool", body = ErrorBody)))]
pub(super) async fn remove_tool(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    ops::tools::remove(&state.store, &id, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
