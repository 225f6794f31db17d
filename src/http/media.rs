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

use crate::call::service::NotAdmitted;
use crate::http::AppState;
use crate::twilio::media::{self as tw, Inbound, Start};

/// Read buffer of the Twilio WebSocket, bytes: Media Streams messages are under 1 KiB (a 20 ms
/// media frame is about 400 bytes of JSON), so 8 KiB instead of tungstenite's 128 KiB default,
/// which would cost every call 120 KiB of memory for nothing.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Writes are buffered up to this before they go out (the leg flushes after every write
/// anyway).
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
    match state.calls.admit(&start).await {
        Ok(admitted) => {
            // Tracked, so a drain waits for the call (axum's graceful shutdown does not wait
            // for upgraded WebSockets).
            let calls = state.calls.lifecycle().calls().clone();
            calls
                .track_future(state.calls.run(socket, start, started_at, admitted))
                .await
        }
        Err(refused) => {
            let code = match refused {
                NotAdmitted::InvalidToken
                | NotAdmitted::TokenMismatch
                | NotAdmitted::AlreadyClaimed => close_code::POLICY,
                NotAdmitted::CannotRebuild => close_code::ERROR,
                NotAdmitted::UpstreamUnavailable => close_code::AGAIN,
            };
            close_with(socket, code, refused.close_reason()).await;
        }
    }
}
