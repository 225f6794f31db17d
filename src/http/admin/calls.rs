//! `/api/v1/calls` and `/api/v1/stats`: call records, placing outbound calls, and the
//! instance's live figures.

pub use crate::ops::calls::{PlaceCall, PlacedCall};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Body, ErrorBody};
use crate::http::AppState;
use crate::store::{CallEvent, CallRecord, CallStatusReport, ToolCallRecord, TransferReport};
use crate::telemetry::alerts::AlertStatus;
use crate::telemetry::window::{
    BusinessFigures, LiveCall, RecentCall, WINDOWS_MINUTES, WindowFigures,
};

/// Filter of the call list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CallsQuery {
    /// Only this business's calls.
    pub business_id: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// Calls listed when the request gives no `limit`.
pub(super) const DEFAULT_CALLS_LIMIT: i64 = 50;

/// A call with the prompt it ran and its guard events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallDetail {
    /// The call record.
    #[schema(value_type = Object)]
    pub call: CallRecord,
    /// The prompt version the call ran, if recorded.
    pub prompt_version_id: Option<String>,
    /// The experiment arm (`control`, `variant`), if any.
    pub variant: Option<String>,
    /// Guard decisions, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<CallEvent>,
    /// Tool calls (name, status, latency, hold audio heard, redacted arguments), oldest first.
    pub tool_calls: Vec<ToolCallRecord>,
    /// What Twilio's status callbacks reported (status, duration, answered by), oldest first.
    pub statuses: Vec<CallStatusReport>,
    /// Transfers to a person (`transfer_call`) and how each dial ended, oldest first.
    pub transfers: Vec<TransferReport>,
}

/// What the dashboard shows: this instance's live calls, and per business the latency
/// percentiles and rates of the calls that ended in the last 5, 60 and 1,440 minutes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// The instance these figures are of (`lifecycle.instance_id`): each instance keeps the
    /// figures of the calls it served. The figures of every instance together are in
    /// Prometheus (`/metrics` of each, summed by the Grafana board `config/grafana`).
    pub instance_id: String,
    /// When the figures were taken, epoch ms.
    pub generated_at_ms: i64,
    /// Calls whose media stream is open, oldest first.
    pub live_calls: Vec<LiveCall>,
    /// Per business (by id), one entry per window.
    pub businesses: Vec<BusinessFigures>,
    /// Every business together, one entry per window.
    pub overall: Vec<WindowFigures>,
    /// The slowest of the last 200 finished calls, slowest first.
    pub slowest_calls: Vec<RecentCall>,
    /// Every alert with its current figure and threshold.
    pub alerts: Vec<AlertStatus>,
}

/// Live calls, latency percentiles and rates per business over the last 5, 60 and 1,440
/// minutes, the slowest recent calls and the alerts (this instance's calls).
#[utoipa::path(get, path = "/api/v1/stats", tag = "calls",
    responses((status = 200, description = "The dashboard's figures", body = Stats)))]
pub(super) async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let now = crate::store::now_ms();
    let stats = &state.calls.call_stats;
    let alert_window = stats.overall(now, state.calls.alerts.window_minutes());
    Json(Stats {
        instance_id: state.calls.instance_id().to_string(),
        generated_at_ms: now,
        live_calls: stats.live_calls(),
        businesses: stats.businesses(now),
        overall: WINDOWS_MINUTES
            .iter()
            .map(|&minutes| stats.overall(now, minutes))
            .collect(),
        slowest_calls: stats.slowest_calls(),
        alerts: state.calls.alerts.current(&alert_window),
    })
}

/// The most recent calls, newest first.
#[utoipa::path(get, path = "/api/v1/calls", tag = "calls", params(CallsQuery),
    responses((status = 200, description = "Calls, newest first", body = Vec<Object>)))]
pub(super) async fn list_calls(
    State(state): State<AppState>,
    Query(query): Query<CallsQuery>,
) -> Result<Json<Vec<CallRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_CALLS_LIMIT);
    Ok(Json(
        state
            .store
            .list_calls(query.business_id.as_deref(), limit)
            .await?,
    ))
}

/// A call with the prompt version and arm it ran and its guard events.
#[utoipa::path(get, path = "/api/v1/calls/{call_sid}", tag = "calls",
    params(("call_sid" = String, Path, description = "Twilio CallSid")),
    responses((status = 200, description = "The call", body = CallDetail),
        (status = 404, description = "No such call", body = ErrorBody)))]
pub(super) async fn show_call(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
) -> Result<Json<CallDetail>, ApiError> {
    let call = state
        .store
        .call(&call_sid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("call {call_sid:?}")))?;
    let (prompt_version_id, variant) = state
        .store
        .call_prompt(&call_sid)
        .await?
        .unwrap_or_default();
    let events = state.store.call_events(&call_sid).await?;
    let tool_calls = state.store.tool_calls(&call_sid).await?;
    let statuses = state.store.call_statuses(&call_sid).await?;
    let transfers = state.store.call_transfers(&call_sid).await?;
    Ok(Json(CallDetail {
        call,
        prompt_version_id,
        variant,
        events,
        tool_calls,
        statuses,
        transfers,
    }))
}

/// Places an outbound call through Twilio's REST API from the business's number, with
/// answering machine detection: a person gets the business's outbound prompt (with the call's
/// `variables` as `call.NAME`), an answering machine the voicemail. Refused, naming the rule,
/// for a number that is not E.164 (422), outside the business's calling hours unless `force`
/// (422), over its calls a minute (429), without Twilio credentials (503), or when Twilio
/// refuses it (502).
#[utoipa::path(post, path = "/api/v1/calls", tag = "calls", request_body = PlaceCall,
    responses((status = 201, description = "Placed", body = PlacedCall),
        (status = 404, description = "No such business", body = ErrorBody),
        (status = 422, description = "Not E.164, a bad variable, or outside the calling hours", body = ErrorBody),
        (status = 429, description = "The business's calls a minute are spent", body = ErrorBody),
        (status = 502, description = "Twilio refused the call", body = ErrorBody),
        (status = 503, description = "No Twilio REST credentials", body = ErrorBody)))]
pub(super) async fn place_call(
    State(state): State<AppState>,
    Body(request): Body<PlaceCall>,
) -> Result<(StatusCode, Json<PlacedCall>), ApiError> {
    let placed = state
        .calls
        .placer()
        .place(&state.store, request, jiff::Timestamp::now())
        .await?;
    Ok((StatusCode::CREATED, Json(placed)))
}
