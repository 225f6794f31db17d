//! `GET /twilio/media`: the Media Streams WebSocket.
//!
//! Waits for `start`, verifies the signed token from `start.customParameters.token` before any
//! upstream cost is spent (a bad or missing token closes the socket, and no upstream connection is
//! made), claims the pending call by CallSid — or, when another instance took the webhook, rebuilds
//! it from the database — and hands both sockets to the call's session task.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;

use crate::call::session::{self, SessionStart};
use crate::call::setup::CallSetup;
use crate::domain::Direction;
use crate::http::AppState;
use crate::realtime::upstream::UpstreamSocket;
use crate::store::{self, CallEnd, NewCall};
use crate::telemetry::window::LiveCall;
use crate::twilio::media::{self as tw, Inbound, Start};
use crate::twilio::token;

/// Read buffer of the Twilio WebSocket, bytes: Media Streams messages are under 1 KiB (a 20 ms
/// media frame is about 400 bytes of JSON), so 8 KiB instead of tungstenite's 128 KiB default,
/// which would cost every call 120 KiB of memory for nothing.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Writes are buffered up to this before they go out (the writer flushes when its queue is
/// empty anyway).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Largest message or frame accepted from the Twilio side, bytes: far above any Media Streams
/// message, far below what would let a client make the proxy hold megabytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The WebSocket upgrade handler.
pub async fn stream(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| handle(state, socket))
}

async fn close_with(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Reads until `start`. Frames before it other than `connected` are skipped.
async fn wait_for_start(socket: &mut WebSocket, limit: Duration) -> Option<Start> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => return None,
            Err(_) => {
                tracing::warn!("media stream sent no start in time; closing");
                return None;
            }
        };
        let Message::Text(text) = message else {
            continue;
        };
        match tw::parse(text.as_str()) {
            Ok(Inbound::Start(start)) => return Some(start),
            Ok(Inbound::Stop) => return None,
            Ok(_) => continue,
            Err(e) => tracing::warn!(error = %e, "malformed frame before start skipped"),
        }
    }
}

async fn handle(state: AppState, mut socket: WebSocket) {
    let Some(start) = wait_for_start(
        &mut socket,
        Duration::from_millis(state.config.timeouts.stream_start_ms),
    )
    .await
    else {
        close_with(socket, close_code::POLICY, "no start").await;
        return;
    };
    let started_at = Instant::now();

    let presented = start
        .custom_parameters
        .get("token")
        .map(String::as_str)
        .unwrap_or("");
    let claims = match token::verify(&state.secrets.signing_key, presented, store::now_ms()) {
        Ok(claims) if claims.call_sid == start.call_sid => claims,
        Ok(_) => {
            tracing::warn!(call_sid = %start.call_sid, "stream token belongs to another call; closing");
            close_with(socket, close_code::POLICY, "token mismatch").await;
            return;
        }
        Err(e) => {
            tracing::warn!(call_sid = %start.call_sid, error = %e, "media stream without a valid token; closing");
            close_with(socket, close_code::POLICY, "invalid token").await;
            return;
        }
    };

    // Whether the pre-warm already asked for the greeting (see `upstream.early_greeting`).
    let mut greeting_requested: Option<Instant> = None;
    let prepared = match state.registry.claim(&start.call_sid) {
        Some(pending) => {
            let upstream = match pending.prewarm.await {
                Ok(Ok(socket)) => {
                    greeting_requested = pending.greeting_requested_at.get().copied();
                    Ok(socket)
                }
                Ok(Err(e)) => {
                    tracing::warn!(call_sid = %start.call_sid, error = %e, "pre-warm failed; dialling again");
                    state.dial_upstream(&pending.setup.session).await
                }
                Err(e) => {
                    tracing::warn!(call_sid = %start.call_sid, error = %e, "pre-warm task ended; dialling again");
                    state.dial_upstream(&pending.setup.session).await
                }
            };
            let since_webhook = started_at.saturating_duration_since(pending.created);
            Some((
                pending.setup,
                upstream,
                Some(since_webhook),
                pending.from,
                pending.to,
            ))
        }
        None => rebuild(&state, &claims, &start.call_sid)
            .await
            .map(|(setup, upstream)| {
                // The token carries the customer's number only; the other side stays unknown.
                let (from, to) = match claims.direction {
                    Direction::Inbound => (claims.caller.clone(), String::new()),
                    Direction::Outbound => (String::new(), claims.caller.clone()),
                };
                (setup, upstream, None, from, to)
            }),
    };
    let Some((setup, upstream, since_webhook, from, to)) = prepared else {
        close_with(socket, close_code::ERROR, "unknown business").await;
        return;
    };
    let upstream: UpstreamSocket = match upstream {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(call_sid = %start.call_sid, error = %e, "upstream unavailable; ending the call");
            close_with(socket, close_code::AGAIN, "upstream unavailable").await;
            return;
        }
    };
    let record = NewCall {
        call_sid: start.call_sid.clone(),
        stream_sid: Some(start.stream_sid.clone()),
        business_id: setup.business_id.clone(),
        direction: setup.direction,
        from_number: from,
        to_number: to,
        started_at_ms: store::now_ms(),
    };
    // Record the start beside the call, not before it: the greeting must not wait for the disk.
    let store = state.store.clone();
    let prompt_version = setup.prompt_version_id.clone();
    let experiment = setup.experiment.clone();
    let recorded = tokio::spawn(async move {
        if let Err(e) = store.insert_call(&record).await {
            tracing::error!(call_sid = %record.call_sid, error = %e, "cannot record the call start");
            return;
        }
        let experiment = experiment.as_ref().map(|(id, arm)| (id.as_str(), *arm));
        if prompt_version.is_some()
            && let Err(e) = store
                .set_call_prompt(&record.call_sid, prompt_version.as_deref(), experiment)
                .await
        {
            tracing::error!(call_sid = %record.call_sid, error = %e, "cannot record the call's prompt version");
        }
    });

    state.metrics.live_calls.inc();
    state.call_stats.call_started(LiveCall {
        call_sid: start.call_sid.clone(),
        business_id: setup.business_id.clone(),
        direction: setup.direction.as_str().to_string(),
        started_at_ms: store::now_ms(),
    });
    let report = session::run(
        socket,
        upstream,
        SessionStart {
            start,
            started_at,
            prewarmed: since_webhook.is_some(),
            greeting_requested,
            setup,
            store: Some(state.store.clone()),
        },
        &state.session,
    )
    .await;

    state.metrics.live_calls.dec();
    state.metrics.record_call(&report, since_webhook);
    let ended_at_ms = store::now_ms();
    state.call_stats.call_ended(&report, ended_at_ms);
    state.evaluate_alerts();
    let _ = recorded.await;
    let end = CallEnd {
        ended_at_ms: store::now_ms(),
        greeting_latency_ms: report.greeting_latency_ms.map(|ms| ms.round() as i64),
        end_reason: Some(report.end_reason.as_str().to_string()),
        summary: report.summary(),
    };
    if let Err(e) = state.store.finish_call(&report.call_sid, &end).await {
        tracing::error!(call_sid = %report.call_sid, error = %e, "cannot record the call end");
    }
    let overall = state.echo_totals.add(&report.echo);
    tracing::info!(call_sid = %report.call_sid, echo_rate = report.echo.echo_rate(),
        echo_rate_overall = overall, "echo rate");
    if let Some(reports) = &state.reports {
        let _ = reports.send(report);
    }
}

/// Another instance took the webhook (or this one restarted): build the call again from the
/// database, with the business, direction, caller and prompt version the signed token vouches
/// for, so the call runs what the webhook chose.
async fn rebuild(
    state: &AppState,
    claims: &token::CallToken,
    call_sid: &str,
) -> Option<(
    CallSetup,
    Result<UpstreamSocket, crate::realtime::UpstreamError>,
)> {
    let business_id = claims.business_id.as_str();
    let business = match state.store.business(business_id).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            tracing::error!(
                call_sid,
                business_id,
                "token names a business that does not exist"
            );
            return None;
        }
        Err(e) => {
            tracing::error!(call_sid, business_id, error = %e, "cannot load the business");
            return None;
        }
    };
    let experiment = claims.experiment.clone();
    let setup = match state
        .call_setup_chosen(
            &business,
            claims.direction,
            &claims.caller,
            claims.prompt_version_id.as_deref(),
            experiment,
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(call_sid, business_id, error = %e, "cannot set the call up");
            return None;
        }
    };
    tracing::info!(call_sid, business_id, direction = %claims.direction,
        prompt_version = setup.prompt_version_id.as_deref().unwrap_or("business"),
        "call not pending here; rebuilt from the database");
    let upstream = state.dial_upstream(&setup.session).await;
    Some((setup, upstream))
}
