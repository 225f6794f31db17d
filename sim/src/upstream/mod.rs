//! Simulated OpenAI Realtime upstream: a WebSocket server that speaks the GA subset of the Realtime
//! API the relay uses, so the relay, its tests and `voxrelay demo` run with no network and no API
//! key.
//!
//! Protocol: `shared/protocol/openai-realtime.md` (client events §2, server events §3, behaviour
//! §4). Only GA event names are used (`response.output_audio.delta`, `conversation.item.added`, …).
//!
//! What it does, per connection (one task each, owning all of that connection's state):
//! - Accepts `ws://HOST:PORT/v1/realtime?model=…` (any model; other paths get HTTP 404), records
//!   the `model` query parameter and whether an `Authorization` header was sent (it is never
//!   checked). A request carrying the retired `OpenAI-Beta` header gets an `error` with code
//!   `beta_api_shape_disabled` and a close with code 4000, as the live service does.
//! - Sends `session.created`, applies `session.update` (rejecting unknown parameters with
//!   `unknown_parameter`, as the live server does, in which case nothing is applied) and answers
//!   `session.updated` with the full effective session.
//! - Runs an energy VAD ([`crate::vad`]) over the caller's `input_audio_buffer.append` audio
//!   and turns it into `speech_started`, `speech_stopped`, `committed`, the user item, an optional
//!   scripted transcription, and (with `create_response`) a response.
//! - Every response speaks the configured [`Clip`]: `response.output_audio.delta` events of
//!   `chunk_ms` of G.711 mu-law each, at real-time pace or as fast as possible, with the clip's
//!   text spread along as `response.output_audio_transcript.delta`, then the `…done` events and
//!   `response.done` with plausible `usage`.
//! - Handles barge-in (`interrupt_response`), `response.cancel`, `conversation.item.truncate`
//!   (checked against the audio actually sent), `conversation.item.create|delete|retrieve`,
//!   `input_audio_buffer.commit|clear`, and answers unknown or malformed events with `error`.
//! - Ends sessions on cue ([`Fault`], on every connection or the first N): a close 1011, a TCP
//!   reset, a freeze, or the time limit (`error` `session_expired`, close 1001), which
//!   `session_lifetime_ms` also sets for every session, with `expires_at` to match; and an
//!   outage (`accepted_handshakes`: handshakes past the first N get HTTP 503); goes mute
//!   ([`Fault::Mute`]: reads on, sends nothing); refuses the first N `response.create`s of a
//!   connection for the rate limit (`refused_responses`).
//!
//! Use: [`SimUpstream::start`] with a [`SimUpstreamConfig`] (port 0 for tests), point the relay at
//! [`SimUpstream::url`], then read what the relay sent from [`SimUpstream::sessions`] and the
//! optional JSONL event log; [`SimUpstreamArgs`] gives the same from the command line.
//!
//! Limits, on purpose: output audio is always the clip's mu-law, whatever `audio.output.format`
//! says, and input audio is always read as mu-law (the relay uses `audio/pcmu` both ways);
//! `semantic_vad` behaves like `server_vad`; `idle_timeout_ms` is accepted and ignored; tools
//! are accepted, and a response calls one only when scripted to (`tool_calls`), whatever the
//! session's tools are. A `function_call_output` must name a `call_id` the connection made.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::isolation::{IsolationCounts, IsolationReport, Patterns};
use crate::vad::{EnergyVad, VadEvent};
use voxrelay::audio::mulaw::{self, BYTES_PER_MS};

pub use crate::vad::VadConfig;

/// The only path the simulator serves, as the live API does.
pub const REALTIME_PATH: &str = "/v1/realtime";

/// The model reported when the client's URL names none.
const DEFAULT_MODEL: &str = "gpt-realtime";

/// The embedded agent reply (8 kHz mono 16-bit WAV; see `assets/audio/SOURCE.md`).
const AGENT_REPLY_WAV: &[u8] = include_bytes!("../../../assets/audio/agent_reply.wav");

/// The exact words of [`AGENT_REPLY_WAV`].
const AGENT_REPLY_TEXT: &str = include_str!("../../../assets/audio/agent_reply.txt");

/// Below this much buffered audio, in ms, `input_audio_buffer.commit` is refused (§2.2).
const MIN_COMMIT_MS: u64 = 100;

/// Client event types of the GA interface (§2), for the `unknown_event` message.
const CLIENT_EVENT_TYPES: &[&str] = &[
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
];

mod args;
mod clip;
mod config;
mod connection;
mod session;

pub use args::SimUpstreamArgs;
pub use clip::{Clip, ClipError, default_clip};
use config::*;
pub use config::{
    ConnectionScript, Dialect, ECHO_GREETING_MS, Fault, ScriptedToolCall, SessionLog,
    SimUpstreamConfig, Truncation,
};
use connection::*;
use session::*;

/// State shared between the server handle, the accept loop and the connections.
struct Shared {
    config: SimUpstreamConfig,
    /// WebSocket handshakes completed (connections that reached `session.created` or the beta
    /// refusal).
    connections: AtomicUsize,
    /// WebSocket handshake requests seen on the Realtime path (refused ones included).
    handshakes: AtomicUsize,
    /// One log per completed handshake, in handshake order; a connection writes only its own.
    sessions: Mutex<Vec<SessionLog>>,
    /// What [`SimUpstreamConfig::check_isolation`] found, over every connection.
    isolation: IsolationCounts,
    /// Its patterns, when it is on.
    isolation_patterns: Option<Patterns>,
}

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, Vec<SessionLog>> {
        // A panic elsewhere must not hide the logs from a test.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated upstream. Dropping it stops it as [`SimUpstream::shutdown`] does, without
/// waiting.
pub struct SimUpstream {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// `true` (or dropped) tells the accept loop and every connection to stop.
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl SimUpstream {
    /// Binds `listen` (port 0 picks a free port) and starts accepting connections on a spawned
    /// task. Fails only if the address cannot be bound.
    pub async fn start(
        listen: SocketAddr,
        config: SimUpstreamConfig,
    ) -> std::io::Result<SimUpstream> {
        let listener = match config.recv_buffer_bytes {
            None => TcpListener::bind(listen).await?,
            Some(bytes) => {
                let socket = if listen.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                // Accepted sockets inherit it, so the window is small from the handshake on.
                socket.set_recv_buffer_size(bytes as u32)?;
                socket.bind(listen)?;
                socket.listen(1024)?
            }
        };
        let local_addr = listener.local_addr()?;
        let isolation_patterns = if config.check_isolation {
            Some(Patterns::new().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            config,
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
            isolation: IsolationCounts::default(),
            isolation_patterns,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
        tracing::info!(%local_addr, "simulated realtime upstream listening");
        Ok(SimUpstream {
            local_addr,
            shared,
            shutdown,
            accept_task,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket URL to give the relay: `ws://127.0.0.1:PORT/v1/realtime` (an unspecified
    /// listen address is replaced by loopback). Append `?model=…` as for the live API.
    pub fn url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("ws://{addr}{REALTIME_PATH}")
    }

    /// WebSocket handshakes completed so far (refused paths are not counted).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// A snapshot of what each connection sent, one [`SessionLog`] per completed handshake, in
    /// connect order.
    pub fn sessions(&self) -> Vec<SessionLog> {
        self.shared.sessions().clone()
    }

    /// What the isolation check found so far ([`SimUpstreamConfig::check_isolation`]; all
    /// zero when it is off).
    pub fn isolation(&self) -> IsolationReport {
        self.shared.isolation.report()
    }

    /// Stops accepting, closes every live connection (close code 1001) and waits, at most about
    /// 2 s, for the connection tasks to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.accept_task.await {
            tracing::warn!(error = %e, "simulated upstream accept loop ended abnormally");
        }
    }
}

impl std::fmt::Debug for SimUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimUpstream")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

/// Resolves when the shutdown flag is set or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors; back off instead of spinning.
                    tracing::warn!(error = %e, "simulated upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// What the handshake callback learned from the HTTP request.
#[derive(Debug, Default)]
struct Handshake {
    model: Option<String>,
    authorization: bool,
    beta_header: bool,
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let delay = shared.config.connect_delay_ms;
    if delay > 0 {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
        }
    }
    let mut handshake = Handshake::default();
    let shared_dialect = shared.config.dialect;
    // The error type is tungstenite's `Callback` signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != REALTIME_PATH {
            let mut refused = ErrorResponse::new(Some(format!(
                "Not found: {} (the Realtime API is served at {REALTIME_PATH})",
                request.uri().path()
            )));
            *refused.status_mut() = StatusCode::NOT_FOUND;
            return Err(refused);
        }
        let seen = shared.handshakes.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.config.accepted_handshakes.is_some_and(|n| seen > n) {
            let mut refused = ErrorResponse::new(Some("simulated outage".to_string()));
            *refused.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Err(refused);
        }
        handshake.model = request.uri().query().and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "model")
                .map(|(_, value)| value.into_owned())
        });
        handshake.authorization = request.headers().contains_key(header::AUTHORIZATION);
        handshake.beta_header =
            request.headers().contains_key("openai-beta") && shared_dialect == Dialect::Ga;
        Ok(response)
    };
    // Small buffers: a load test holds a thousand of these connections in one process.
    let socket_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024);
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(socket_config),
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "simulated upstream handshake failed");
            return;
        }
    };
    let number = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let index = {
        let mut sessions = shared.sessions();
        sessions.push(SessionLog {
            model: handshake.model.clone(),
            authorization: handshake.authorization,
            ..SessionLog::default()
        });
        sessions.len() - 1
    };
    let mut connection = Connection::new(ws, shared.clone(), index, number, handshake.model);
    let result = if handshake.beta_header {
        connection.refuse_beta().await
    } else {
        connection.run(&mut shutdown).await
    };
    if let Err(e) = result {
        tracing::debug!(connection = number, error = %e, "simulated upstream connection ended");
    }
    drop(connection);
    if let Some(log) = shared.sessions().get_mut(index) {
        log.ended_at = Some(std::time::Instant::now());
    }
}
