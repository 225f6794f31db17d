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
//!
//! Use: [`SimUpstream::start`] with a [`SimUpstreamConfig`] (port 0 for tests), point the relay at
//! [`SimUpstream::url`], then read what the relay sent from [`SimUpstream::sessions`] and the
//! optional JSONL event log; [`SimUpstreamArgs`] gives the same from the command line.
//!
//! Limits, on purpose: output audio is always the clip's mu-law, whatever `audio.output.format`
//! says, and input audio is always read as mu-law (the relay uses `audio/pcmu` both ways);
//! `semantic_vad` behaves like `server_vad`; `idle_timeout_ms` and tools are accepted and ignored.

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

use crate::vad::{EnergyVad, VadEvent};
use voxrelay::audio::mulaw::{self, BYTES_PER_MS};

pub use crate::vad::VadConfig;

/// The only path the simulator serves, as the live API does.
pub const REALTIME_PATH: &str = "/v1/realtime";

/// The model reported when the client's URL names none.
const DEFAULT_MODEL: &str = "gpt-realtime";

/// The embedded agent reply (8 kHz mono 16-bit WAV; see `assets/audio/SOURCE.md`).
const AGENT_REPLY_WAV: &[u8] = include_bytes!("../../assets/audio/agent_reply.wav");

/// The exact words of [`AGENT_REPLY_WAV`].
const AGENT_REPLY_TEXT: &str = include_str!("../../assets/audio/agent_reply.txt");

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

// ---------------------------------------------------------------------------------------------
// The clip
// ---------------------------------------------------------------------------------------------

/// What every simulated response says: G.711 mu-law audio and its exact transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct Clip {
    /// 8 kHz G.711 mu-law, one byte per sample (8 bytes per ms). Shared by every connection.
    pub mulaw: Arc<Vec<u8>>,
    /// The words spoken, sent as `response.output_audio_transcript.delta` pieces and in `…done`.
    pub transcript: String,
}

impl Clip {
    /// The first `ms` of this clip (all of it when shorter), saying `transcript`.
    pub fn first_ms(&self, ms: u64, transcript: impl Into<String>) -> Clip {
        let bytes = (ms as usize).saturating_mul(voxrelay::audio::mulaw::BYTES_PER_MS);
        Clip::new(
            self.mulaw[..bytes.min(self.mulaw.len())].to_vec(),
            transcript,
        )
    }

    /// A clip from mu-law bytes (8 kHz) and the words they say.
    pub fn new(mulaw: Vec<u8>, transcript: impl Into<String>) -> Clip {
        Clip {
            mulaw: Arc::new(mulaw),
            transcript: transcript.into(),
        }
    }

    /// Reads a WAV (8000 Hz, mono, 16-bit integer PCM; anything else is [`ClipError::Format`]) and
    /// encodes it to mu-law.
    pub fn from_wav_reader<R: Read>(
        reader: R,
        transcript: impl Into<String>,
    ) -> Result<Clip, ClipError> {
        let mut wav = hound::WavReader::new(reader)?;
        let spec = wav.spec();
        if spec.sample_rate != 8000
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(ClipError::Format {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
                bits_per_sample: spec.bits_per_sample,
            });
        }
        let samples = wav.samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
        Ok(Clip::new(mulaw::encode(&samples), transcript))
    }

    /// Reads a WAV file (8000 Hz, mono, 16-bit integer PCM) and encodes it to mu-law.
    pub fn from_wav_file(path: &Path, transcript: impl Into<String>) -> Result<Clip, ClipError> {
        let file = File::open(path).map_err(|e| ClipError::File {
            path: path.to_owned(),
            source: e,
        })?;
        Clip::from_wav_reader(std::io::BufReader::new(file), transcript)
    }

    /// Length of the audio in ms (bytes / 8, rounded down).
    pub fn duration_ms(&self) -> u64 {
        (self.mulaw.len() / BYTES_PER_MS) as u64
    }
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("mulaw_bytes", &self.mulaw.len())
            .field("duration_ms", &self.duration_ms())
            .field("transcript", &self.transcript)
            .finish()
    }
}

/// Why a clip could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    File {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a readable WAV.
    #[error("cannot read WAV: {0}")]
    Wav(#[from] hound::Error),
    /// A WAV in a format the simulator does not resample.
    #[error(
        "the clip must be 8000 Hz mono 16-bit integer PCM, \
         found {sample_rate} Hz, {channels} channel(s), {bits_per_sample} bits"
    )]
    Format {
        /// Sample rate found, in Hz.
        sample_rate: u32,
        /// Channels found.
        channels: u16,
        /// Bits per sample found.
        bits_per_sample: u16,
    },
}

/// The agent reply built into the binary (`assets/audio/agent_reply.wav`, 5.63 s: "Thanks for
/// calling Bright Smile Dental, this is the virtual assistant. How can I help you today?"),
/// decoded from the embedded WAV, so no file path is needed at run time.
pub fn default_clip() -> Result<Clip, ClipError> {
    Clip::from_wav_reader(Cursor::new(AGENT_REPLY_WAV), AGENT_REPLY_TEXT.trim())
}

// ---------------------------------------------------------------------------------------------
// Configuration and records
// ---------------------------------------------------------------------------------------------

/// How the simulated upstream behaves. Shared by every connection of one [`SimUpstream`].
#[derive(Debug, Clone)]
pub struct SimUpstreamConfig {
    /// Delay, in ms, between accepting the TCP connection and completing the WebSocket handshake
    /// (simulated connect latency). Default 0.
    pub connect_delay_ms: u64,
    /// Delay, in ms, from `response.created` to the first `response.output_audio.delta`
    /// (simulated time to first audio). Default 0; a realistic value is about 300.
    pub first_audio_delay_ms: u64,
    /// `true` (default): one delta every `chunk_ms`, at the pace of the audio. `false`: all deltas
    /// as fast as the socket takes them (the live service generates faster than real time).
    pub realtime_pace: bool,
    /// Audio per `response.output_audio.delta`, in ms (8 bytes of mu-law per ms). Default 100
    /// (800 bytes); 0 is treated as 1. The last delta of a clip may be shorter.
    pub chunk_ms: u32,
    /// What every response says. Default: [`default_clip`].
    pub clip: Clip,
    /// Scripted caller transcripts: after the Nth committed caller turn (0-based, counted per
    /// connection), `conversation.item.input_audio_transcription.completed` carries
    /// `transcripts[N]`; once the list runs out, no transcription event is sent. Default empty.
    pub transcripts: Vec<String>,
    /// Scripted model replies: the Nth response of a connection (0-based) has `replies[N]` as its
    /// output transcript; its audio is still the clip. `{caller}` is replaced by the caller's
    /// last scripted transcript (a parroting model) and `{instructions}` by the instructions in
    /// effect for that response (a model reciting its prompt). Once the list runs out, responses
    /// say the clip's own transcript. Default empty.
    pub replies: Vec<String>,
    /// Delay, in ms, from a caller turn's commit to its scripted transcription event (the live
    /// service transcribes asynchronously; a gate policy waits for it). Default 0.
    pub transcription_delay_ms: u64,
    /// If set, every client text frame received (on any connection) is appended to this file, one
    /// per line (JSONL), exactly as received, and written through at once. Default `None`.
    pub event_log: Option<PathBuf>,
    /// The energy VAD. Its `silence_ms` and `prefix_padding_ms` are the session's `server_vad`
    /// defaults; `session.update` overrides them per connection.
    pub vad: VadConfig,
    /// Echo mode, for load tests: once a connection's first response is done, every
    /// `input_audio_buffer.append` is answered at once by a `response.output_audio.delta`
    /// carrying the same audio (base64 text unchanged), as part of one assistant item per
    /// connection. A round trip through a relay then measures the relay. Default false.
    pub echo: bool,
    /// Which event names the server speaks. Default [`Dialect::Ga`].
    pub dialect: Dialect,
    /// Keep every client event in [`SimUpstream::sessions`]. Default true; a load test turns it
    /// off so memory and the shared lock do not grow with traffic.
    pub keep_logs: bool,
    /// A fault every connection suffers, timed from its handshake (for the tests of how a call
    /// ends). Default `None`.
    pub fault: Option<Fault>,
    /// SO_RCVBUF of accepted sockets, bytes (a small one makes a server that stops reading
    /// push back on the client quickly); `None` leaves the kernel's own sizing.
    pub recv_buffer_bytes: Option<usize>,
}

/// Something that goes wrong with a connection, this many ms after its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server closes the WebSocket (close code 1011, internal error).
    Close(u64),
    /// The TCP connection drops with no WebSocket close.
    Reset(u64),
    /// The server stops reading and writing, holding the connection open.
    StopReading(u64),
}

/// Length of the greeting in echo mode without `--clip`, ms.
pub const ECHO_GREETING_MS: u64 = 500;

/// The Realtime API's event names the simulated server uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// The GA interface (`response.output_audio.delta`, ...). Clients sending the retired
    /// `OpenAI-Beta: realtime=v1` header are refused, as the live service does.
    #[default]
    Ga,
    /// The beta names (`response.audio.delta`, `response.audio_transcript.delta`, ...), for
    /// measuring relays that still expect them; the beta header is accepted.
    Beta,
}

/// GA server event names and their beta equivalents.
const BETA_NAMES: [(&str, &str); 4] = [
    ("response.output_audio.delta", "response.audio.delta"),
    ("response.output_audio.done", "response.audio.done"),
    (
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
    ),
    (
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
    ),
];

impl Default for SimUpstreamConfig {
    fn default() -> Self {
        let clip = default_clip().unwrap_or_else(|e| {
            // The WAV is embedded and tested; this would be a broken build, not a run-time state.
            tracing::error!(error = %e, "embedded agent reply unreadable; using 1 s of silence");
            Clip::new(vec![mulaw::SILENCE; 8000], "")
        });
        SimUpstreamConfig {
            connect_delay_ms: 0,
            first_audio_delay_ms: 0,
            realtime_pace: true,
            chunk_ms: 100,
            clip,
            transcripts: Vec::new(),
            replies: Vec::new(),
            transcription_delay_ms: 0,
            event_log: None,
            vad: VadConfig::default(),
            echo: false,
            dialect: Dialect::Ga,
            keep_logs: true,
            fault: None,
            recv_buffer_bytes: None,
        }
    }
}

/// What one connection sent, for tests to inspect (see [`SimUpstream::sessions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionLog {
    /// The `model` query parameter of the WebSocket URL, if any.
    pub model: Option<String>,
    /// Whether the handshake carried an `Authorization` header (its value is not kept).
    pub authorization: bool,
    /// Every client text frame received, as sent, in order, except `input_audio_buffer.append`
    /// (which is only counted below). Malformed frames are included.
    pub events: Vec<String>,
    /// Bytes of audio (after base64 decoding) received in `input_audio_buffer.append` events.
    pub appended_bytes: u64,
    /// Number of `input_audio_buffer.append` events received (including undecodable ones).
    pub append_events: u64,
    /// Every accepted `conversation.item.truncate`, in order.
    pub truncations: Vec<Truncation>,
}

impl SessionLog {
    /// The `type` of each recorded event (an empty string where a frame had none).
    pub fn event_types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The recorded events of one `type`, parsed.
    pub fn events_of_type(&self, event_type: &str) -> Vec<Value> {
        self.events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter(|v| v.get("type").and_then(Value::as_str) == Some(event_type))
            .collect()
    }
}

/// An accepted `conversation.item.truncate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The assistant item truncated.
    pub item_id: String,
    /// The content part (always 0 for audio).
    pub content_index: u64,
    /// Audio kept, in ms from the start of the item.
    pub audio_end_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// State shared between the server handle, the accept loop and the connections.
struct Shared {
    config: SimUpstreamConfig,
    /// WebSocket handshakes completed (connections that reached `session.created` or the beta
    /// refusal).
    connections: AtomicUsize,
    /// One log per completed handshake, in handshake order; a connection writes only its own.
    sessions: Mutex<Vec<SessionLog>>,
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
        let shared = Arc::new(Shared {
            config,
            connections: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
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
    let mut connection = Connection::new(ws, shared, index, number, handshake.model);
    let result = if handshake.beta_header {
        connection.refuse_beta().await
    } else {
        connection.run(&mut shutdown).await
    };
    if let Err(e) = result {
        tracing::debug!(connection = number, error = %e, "simulated upstream connection ended");
    }
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

/// The socket and the server event counter, kept apart from the session state so both can be
/// borrowed at once.
struct Outbox {
    ws: WebSocketStream<TcpStream>,
    /// Connection number, part of every `event_id`.
    connection: usize,
    next_event: u64,
    /// Rename GA event types to their beta names before sending.
    beta: bool,
}

impl Outbox {
    /// Sends one server event, adding a unique `event_id`.
    async fn send(&mut self, mut event: Value) -> Result<(), WsError> {
        self.next_event += 1;
        if let Value::Object(fields) = &mut event {
            if self.beta
                && let Some(Value::String(kind)) = fields.get_mut("type")
                && let Some((_, beta)) = BETA_NAMES.iter().find(|(ga, _)| ga == kind)
            {
                *kind = (*beta).to_string();
            }
            fields.insert(
                "event_id".into(),
                Value::String(format!(
                    "event_sim{:03}{:07}",
                    self.connection, self.next_event
                )),
            );
        }
        self.ws.send(Message::text(event.to_string())).await
    }

    /// Sends an `error` event of type `invalid_request_error`.
    async fn error(
        &mut self,
        client_event_id: Option<&str>,
        code: &str,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Result<(), WsError> {
        self.send(json!({
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message.into(),
                "param": param,
                "event_id": client_event_id,
            }
        }))
        .await
    }
}

/// Who an item belongs to, for truncation and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
    Other,
}

/// An item in the simulated conversation.
#[derive(Debug, Clone)]
struct ItemRecord {
    role: Role,
    /// Assistant audio sent for this item so far, in bytes of mu-law.
    audio_bytes: usize,
    /// The item as last announced (no audio bytes).
    item: Value,
}

/// The response being spoken.
#[derive(Debug)]
struct ActiveResponse {
    id: String,
    item_id: String,
    /// When the next step (the next delta, or the end) is due.
    next_at: Instant,
    /// When the first delta was (or will be) sent; real-time pacing counts from here.
    first_audio_at: Instant,
    /// Deltas sent.
    chunks_sent: u64,
    /// Bytes of the clip sent.
    sent_bytes: usize,
    /// Transcript pieces (words with their trailing space) already sent.
    words_sent: usize,
    /// Instructions in effect for this response (the session's, or the override).
    instructions: String,
    /// What this response says (the clip's transcript, or a scripted reply).
    transcript: String,
    metadata: Value,
    /// False for out-of-band responses (`conversation: "none"`), whose item is not added to the
    /// conversation.
    in_conversation: bool,
}

/// Turn-detection settings in effect, read from the session object.
#[derive(Debug, Clone, Copy)]
struct TurnSettings {
    enabled: bool,
    silence_ms: u32,
    prefix_padding_ms: u32,
    create_response: bool,
    interrupt_response: bool,
}

/// Running totals behind the `usage` of each `response.done`.
#[derive(Debug, Default)]
struct UsageHistory {
    /// Committed caller audio, in ms (1 input token per 100 ms).
    caller_audio_ms: u64,
    /// Text tokens of earlier items (created text items, earlier assistant transcripts).
    text_tokens: u64,
    /// Audio tokens of earlier assistant output (1 per 50 ms).
    assistant_audio_tokens: u64,
    /// Instructions and input tokens of the previous response, for `cached_tokens`.
    previous: Option<(String, u64)>,
}

/// The fields of an `input_audio_buffer.append` the simulator reads, borrowed.
#[derive(serde::Deserialize)]
struct AppendEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    audio: Option<&'a str>,
    #[serde(borrow, default)]
    event_id: Option<&'a str>,
}

struct Connection {
    out: Outbox,
    shared: Arc<Shared>,
    /// Index of this connection's [`SessionLog`].
    index: usize,
    event_log: Option<File>,
    /// The effective GA session object, as sent in `session.updated`.
    session: Value,
    vad: EnergyVad,
    /// Caller audio in the input buffer since the last commit or clear, in bytes.
    buffer_bytes: u64,
    /// The item id announced by `speech_started`, used by the commit that ends the turn.
    speech_item_id: Option<String>,
    /// `audio_start_ms` of the turn in progress.
    speech_start_ms: u64,
    items: HashMap<String, ItemRecord>,
    /// Item ids in conversation order (for `previous_item_id`).
    order: Vec<String>,
    next_item: u64,
    next_response: u64,
    /// Caller turns committed (indexes the scripted transcripts).
    committed_turns: usize,
    /// Responses started on this connection (indexes the scripted replies).
    responses_started: usize,
    /// The caller's last scripted transcript (for `{caller}` in replies).
    last_caller_transcript: String,
    /// Scripted transcription events waiting for their delay: (due, event).
    pending_transcriptions: std::collections::VecDeque<(Instant, Value)>,
    usage: UsageHistory,
    response: Option<ActiveResponse>,
    /// Echo mode: the first response is done, caller audio is now echoed.
    echoing: bool,
    /// Echo mode: the assistant item the echoed audio belongs to.
    echo_item: Option<String>,
}

impl Connection {
    fn new(
        ws: WebSocketStream<TcpStream>,
        shared: Arc<Shared>,
        index: usize,
        number: usize,
        model: Option<String>,
    ) -> Connection {
        let event_log = shared.config.event_log.as_ref().and_then(|path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open the event log");
                })
                .ok()
        });
        let vad_config = shared.config.vad;
        let session = initial_session(number, model.as_deref(), &vad_config);
        Connection {
            out: Outbox {
                ws,
                connection: number,
                next_event: 0,
                beta: shared.config.dialect == Dialect::Beta,
            },
            shared,
            index,
            event_log,
            session,
            vad: EnergyVad::new(vad_config),
            buffer_bytes: 0,
            speech_item_id: None,
            speech_start_ms: 0,
            items: HashMap::new(),
            order: Vec::new(),
            next_item: 0,
            next_response: 0,
            committed_turns: 0,
            responses_started: 0,
            last_caller_transcript: String::new(),
            pending_transcriptions: std::collections::VecDeque::new(),
            usage: UsageHistory::default(),
            response: None,
            echoing: false,
            echo_item: None,
        }
    }

    fn config(&self) -> &SimUpstreamConfig {
        &self.shared.config
    }

    /// Runs the connection until the client closes it, the socket fails, or shutdown.
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), WsError> {
        let session = self.session.clone();
        self.out
            .send(json!({"type": "session.created", "session": session}))
            .await?;
        let fault = self.config().fault.map(|f| match f {
            Fault::Close(ms) | Fault::Reset(ms) | Fault::StopReading(ms) => {
                (f, Instant::now() + Duration::from_millis(ms))
            }
        });
        loop {
            let due = self.response.as_ref().map(|r| r.next_at);
            let transcription_due = self.pending_transcriptions.front().map(|(at, _)| *at);
            tokio::select! {
                _ = tokio::time::sleep_until(fault.map_or_else(Instant::now, |(_, at)| at)), if fault.is_some() => {
                    match fault.map(|(f, _)| f) {
                        Some(Fault::Close(_)) => {
                            let frame = CloseFrame {
                                code: CloseCode::Error,
                                reason: "simulated upstream fault".into(),
                            };
                            let _ = self.out.ws.send(Message::Close(Some(frame))).await;
                            return Ok(());
                        }
                        // Dropping the socket ends the TCP connection without a close frame.
                        Some(Fault::Reset(_)) => return Ok(()),
                        _ => {
                            stopped(shutdown).await;
                            return Ok(());
                        }
                    }
                }
                _ = tokio::time::sleep_until(transcription_due.unwrap_or_else(Instant::now)), if transcription_due.is_some() => {
                    if let Some((_, event)) = self.pending_transcriptions.pop_front() {
                        self.out.send(event).await?;
                    }
                }
                _ = stopped(shutdown) => {
                    let frame = CloseFrame {
                        code: CloseCode::Away,
                        reason: "simulated upstream shutting down".into(),
                    };
                    let _ = self.out.ws.send(Message::Close(Some(frame))).await;
                    return Ok(());
                }
                frame = self.out.ws.next() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await?,
                    // Binary frames are not part of the protocol; pings are answered by the
                    // library; a close is answered on the next read, which then ends the stream.
                    Some(Ok(_)) => {}
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.advance_response().await?;
                }
            }
        }
    }

    /// Answers a client that sent the retired `OpenAI-Beta` header as the live service does.
    async fn refuse_beta(&mut self) -> Result<(), WsError> {
        self.out
            .error(
                None,
                "beta_api_shape_disabled",
                "The beta Realtime API shape is no longer available. Remove the \
                 'OpenAI-Beta: realtime=v1' header and use the GA interface.",
                None,
            )
            .await?;
        let frame = CloseFrame {
            code: CloseCode::from(4000),
            reason: "beta_api_shape_disabled".into(),
        };
        self.out.ws.send(Message::Close(Some(frame))).await?;
        // Let the close handshake finish, briefly.
        let drain = async { while let Some(Ok(_)) = self.out.ws.next().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }

    fn log(&self) -> MutexGuard<'_, Vec<SessionLog>> {
        self.shared.sessions()
    }

    fn write_event_log(&mut self, text: &str) {
        let Some(file) = self.event_log.as_mut() else {
            return;
        };
        // One line per event: a frame sent pretty-printed is written compact.
        let mut line = if text.contains('\n') {
            serde_json::from_str::<Value>(text)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| text.replace('\n', " "))
        } else {
            text.to_owned()
        };
        line.push('\n');
        // A single write per line, so concurrent connections never interleave within a line.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the event log; no longer logging");
            self.event_log = None;
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), WsError> {
        self.write_event_log(text);
        // Caller audio is most of the traffic: read it without building a JSON tree.
        if text.contains(r#""type":"input_audio_buffer.append""#)
            && let Ok(append) = serde_json::from_str::<AppendEvent<'_>>(text)
            && append.kind == "input_audio_buffer.append"
        {
            return self.on_append(append.audio, append.event_id).await;
        }
        let event: Value = match serde_json::from_str(text) {
            Ok(event) => event,
            Err(e) => {
                if self.config().keep_logs {
                    self.log()[self.index].events.push(text.to_owned());
                }
                return self
                    .out
                    .error(
                        None,
                        "invalid_json",
                        format!("The event is not valid JSON: {e}"),
                        None,
                    )
                    .await;
            }
        };
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
        if event_type != "input_audio_buffer.append" && self.config().keep_logs {
            self.log()[self.index].events.push(text.to_owned());
        }
        let client_id = event
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = client_id.as_deref();
        match event_type {
            "session.update" => self.on_session_update(&event, id).await,
            "input_audio_buffer.append" => {
                self.on_append(event.get("audio").and_then(Value::as_str), id)
                    .await
            }
            "input_audio_buffer.commit" => self.on_commit(id).await,
            "input_audio_buffer.clear" => self.on_clear().await,
            "response.create" => self.on_response_create(&event, id).await,
            "response.cancel" => self.on_response_cancel(id).await,
            "conversation.item.create" => self.on_item_create(&event, id).await,
            "conversation.item.delete" => self.on_item_delete(&event, id).await,
            "conversation.item.retrieve" => self.on_item_retrieve(&event, id).await,
            "conversation.item.truncate" => self.on_truncate(&event, id).await,
            "" if !event.is_object() => {
                self.out
                    .error(id, "invalid_json", "An event must be a JSON object.", None)
                    .await
            }
            "" => self.missing(id, "type").await,
            other => {
                let supported = CLIENT_EVENT_TYPES
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.out
                    .error(
                        id,
                        "unknown_event",
                        format!("Invalid value: '{other}'. Supported values are: {supported}."),
                        Some("type"),
                    )
                    .await
            }
        }
    }

    // --- session -------------------------------------------------------------------------------

    async fn on_session_update(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(patch) = event.get("session").filter(|s| s.is_object()) else {
            return self.missing(id, "session").await;
        };
        if let Err(problem) = check_session_patch(patch, &self.session) {
            return self
                .out
                .error(id, problem.code, problem.message, Some(&problem.param))
                .await;
        }
        merge(&mut self.session, patch);
        normalise_turn_detection(&mut self.session, &self.shared.config.vad);
        let turn = self.turn_settings();
        self.vad
            .set_turn_settings(turn.silence_ms, turn.prefix_padding_ms);
        if !turn.enabled {
            self.vad.reset();
            self.speech_item_id = None;
        }
        let session = self.session.clone();
        self.out
            .send(json!({"type": "session.updated", "session": session}))
            .await
    }

    fn turn_settings(&self) -> TurnSettings {
        let defaults = self.shared.config.vad;
        let td = &self.session["audio"]["input"]["turn_detection"];
        let number = |key: &str, default: u32| {
            td.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v.min(u64::from(u32::MAX)) as u32)
        };
        let flag = |key: &str| td.get(key).and_then(Value::as_bool).unwrap_or(true);
        TurnSettings {
            enabled: td.is_object(),
            silence_ms: number("silence_duration_ms", defaults.silence_ms),
            prefix_padding_ms: number("prefix_padding_ms", defaults.prefix_padding_ms),
            create_response: flag("create_response"),
            interrupt_response: flag("interrupt_response"),
        }
    }

    // --- input audio ---------------------------------------------------------------------------

    async fn on_append(
        &mut self,
        audio_text: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), WsError> {
        let decoded = audio_text.map(|audio| BASE64.decode(audio));
        if self.config().keep_logs {
            let mut log = self.log();
            let entry = &mut log[self.index];
            entry.append_events += 1;
            if let Some(Ok(audio)) = &decoded {
                entry.appended_bytes += audio.len() as u64;
            }
        }
        let audio = match decoded {
            Some(Ok(audio)) => audio,
            Some(Err(e)) => {
                return self
                    .out
                    .error(
                        id,
                        "invalid_value",
                        format!("Invalid 'audio'. Expected base64-encoded audio bytes: {e}"),
                        Some("audio"),
                    )
                    .await;
            }
            None => {
                return self.missing(id, "audio").await;
            }
        };
        self.buffer_bytes += audio.len() as u64;
        if self.echoing
            && let Some(text) = audio_text
        {
            self.echo(text, audio.len()).await?;
        }
        let events = self.vad.push(&audio);
        let turn = self.turn_settings();
        if !turn.enabled {
            // Manual turns: the audio still counts towards the session's position, but no speech
            // is tracked, so turning VAD back on starts from quiet.
            self.vad.reset();
            return Ok(());
        }
        for vad_event in events {
            match vad_event {
                VadEvent::SpeechStarted { audio_start_ms } => {
                    self.on_speech_started(audio_start_ms, turn).await?;
                }
                VadEvent::SpeechStopped { audio_end_ms } => {
                    self.on_speech_stopped(audio_end_ms, turn).await?;
                }
            }
        }
        Ok(())
    }

    /// Echo mode: sends the appended audio (its base64 text, unchanged) back at once as model
    /// audio.
    async fn echo(&mut self, audio: &str, bytes: usize) -> Result<(), WsError> {
        let item_id = match &self.echo_item {
            Some(id) => id.clone(),
            None => {
                let id = self.new_item_id();
                let item = json!({"id": id, "object": "realtime.item", "type": "message",
                    "status": "in_progress", "role": "assistant", "content": []});
                self.add_item(id.clone(), Role::Assistant, item);
                self.echo_item = Some(id.clone());
                id
            }
        };
        if let Some(record) = self.items.get_mut(&item_id) {
            record.audio_bytes += bytes;
        }
        // Written directly rather than through a JSON value: this runs once per caller frame.
        // The ids and the base64 alphabet need no escaping.
        let kind = if self.out.beta {
            "response.audio.delta"
        } else {
            "response.output_audio.delta"
        };
        self.out.next_event += 1;
        let text = format!(
            r#"{{"type":"{kind}","event_id":"event_sim{:03}{:07}","response_id":"resp_echo","item_id":"{item_id}","output_index":0,"content_index":0,"delta":"{audio}"}}"#,
            self.out.connection, self.out.next_event
        );
        self.out.ws.send(Message::text(text)).await
    }

    async fn on_speech_started(
        &mut self,
        audio_start_ms: u64,
        turn: TurnSettings,
    ) -> Result<(), WsError> {
        let item_id = self.new_item_id();
        self.speech_item_id = Some(item_id.clone());
        self.speech_start_ms = audio_start_ms;
        self.out
            .send(json!({
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": item_id,
            }))
            .await?;
        if self.response.is_some() && turn.interrupt_response {
            self.finish_response(Finish::Cancelled("turn_detected"))
                .await?;
        }
        Ok(())
    }

    async fn on_speech_stopped(
        &mut self,
        audio_end_ms: u64,
        turn: TurnSettings,
    ) -> Result<(), WsError> {
        let item_id = match self.speech_item_id.take() {
            Some(id) => id,
            None => self.new_item_id(),
        };
        self.out
            .send(json!({
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": item_id,
            }))
            .await?;
        let turn_ms = audio_end_ms.saturating_sub(self.speech_start_ms);
        let transcription = self.commit(item_id, turn_ms).await?;
        // With interrupt_response off, a response may still be speaking; the live service then
        // does not start another one either.
        if turn.create_response && self.response.is_none() {
            self.start_response(None).await?;
        }
        // Transcription is asynchronous on the live service and usually lands after the
        // response it triggered has started.
        self.send_transcription(transcription).await
    }

    async fn on_commit(&mut self, id: Option<&str>) -> Result<(), WsError> {
        let buffered_ms = self.buffer_bytes as f64 / BYTES_PER_MS as f64;
        if buffered_ms < MIN_COMMIT_MS as f64 {
            return self
                .out
                .error(
                    id,
                    "input_audio_buffer_commit_empty",
                    format!(
                        "Error committing input audio buffer: buffer too small. Expected at \
                         least {MIN_COMMIT_MS}ms of audio, but buffer only has \
                         {buffered_ms:.2}ms of audio."
                    ),
                    None,
                )
                .await;
        }
        let item_id = match self.speech_item_id.take() {
            Some(id) => id,
            None => self.new_item_id(),
        };
        self.vad.reset();
        let transcription = self.commit(item_id, buffered_ms as u64).await?;
        self.send_transcription(transcription).await
    }

    async fn on_clear(&mut self) -> Result<(), WsError> {
        self.buffer_bytes = 0;
        self.speech_item_id = None;
        self.vad.reset();
        self.out
            .send(json!({"type": "input_audio_buffer.cleared"}))
            .await
    }

    /// Sends a scripted transcription returned by [`Connection::commit`], if any.
    async fn send_transcription(&mut self, transcription: Option<Value>) -> Result<(), WsError> {
        let Some(event) = transcription else {
            return Ok(());
        };
        let delay = self.config().transcription_delay_ms;
        if delay == 0 {
            return self.out.send(event).await;
        }
        self.pending_transcriptions
            .push_back((Instant::now() + Duration::from_millis(delay), event));
        Ok(())
    }

    /// Turns the input buffer into a user item: `committed`, `conversation.item.added` and
    /// `.done`. Returns the scripted transcription event for the caller to send when due.
    async fn commit(&mut self, item_id: String, audio_ms: u64) -> Result<Option<Value>, WsError> {
        self.buffer_bytes = 0;
        self.usage.caller_audio_ms += audio_ms;
        let previous = self.order.last().cloned();
        self.out
            .send(json!({
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }))
            .await?;
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": null}],
        });
        self.add_item(item_id.clone(), Role::User, item.clone());
        self.out
            .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
            .await?;
        self.out
            .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
            .await?;
        let turn = self.committed_turns;
        self.committed_turns += 1;
        if let Some(transcript) = self.config().transcripts.get(turn).cloned() {
            if let Some(part) = self
                .items
                .get_mut(&item_id)
                .and_then(|record| record.item.pointer_mut("/content/0"))
                .and_then(Value::as_object_mut)
            {
                part.insert("transcript".into(), Value::String(transcript.clone()));
            }
            self.last_caller_transcript = transcript.clone();
            return Ok(Some(json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": audio_ms as f64 / 1000.0},
            })));
        }
        Ok(None)
    }

    // --- conversation items ------------------------------------------------------------------

    fn new_item_id(&mut self) -> String {
        self.next_item += 1;
        format!("item_{}", self.next_item)
    }

    fn add_item(&mut self, id: String, role: Role, item: Value) {
        self.order.push(id.clone());
        self.items.insert(
            id,
            ItemRecord {
                role,
                audio_bytes: 0,
                item,
            },
        );
    }

    async fn on_item_create(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(Value::Object(fields)) = event.get("item") else {
            return self.missing(id, "item").await;
        };
        let previous = match event.get("previous_item_id").and_then(Value::as_str) {
            Some("root") => None,
            Some(previous) if !self.items.contains_key(previous) => {
                return self
                    .out
                    .error(
                        id,
                        "item_not_found",
                        format!("Item with item_id '{previous}' not found."),
                        Some("previous_item_id"),
                    )
                    .await;
            }
            Some(previous) => Some(previous.to_owned()),
            None => self.order.last().cloned(),
        };
        let item_id = match fields.get("id").and_then(Value::as_str) {
            Some(given) if self.items.contains_key(given) => {
                return self
                    .out
                    .error(
                        id,
                        "invalid_value",
                        format!("Item with id '{given}' already exists."),
                        Some("item.id"),
                    )
                    .await;
            }
            Some(given) => given.to_owned(),
            None => self.new_item_id(),
        };
        let mut item = fields.clone();
        item.insert("id".into(), Value::String(item_id.clone()));
        item.insert("object".into(), Value::String("realtime.item".into()));
        item.entry("status")
            .or_insert_with(|| Value::String("completed".into()));
        let item = Value::Object(item);
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => Role::Other,
        };
        self.usage.text_tokens += text_tokens(&item_text(&item));
        self.add_item(item_id, role, item.clone());
        self.out
            .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
            .await?;
        self.out
            .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
            .await
    }

    async fn on_item_delete(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
            return self.missing(id, "item_id").await;
        };
        if self.items.remove(item_id).is_none() {
            return self.item_not_found(id, item_id).await;
        }
        self.order.retain(|i| i != item_id);
        self.out
            .send(json!({"type": "conversation.item.deleted", "item_id": item_id}))
            .await
    }

    async fn on_item_retrieve(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let Some(item_id) = event.get("item_id").and_then(Value::as_str) else {
            return self.missing(id, "item_id").await;
        };
        match self.items.get(item_id).map(|r| r.item.clone()) {
            Some(item) => {
                self.out
                    .send(json!({"type": "conversation.item.retrieved", "item": item}))
                    .await
            }
            None => self.item_not_found(id, item_id).await,
        }
    }

    async fn missing(&mut self, id: Option<&str>, param: &str) -> Result<(), WsError> {
        self.out
            .error(
                id,
                "missing_required_parameter",
                format!("Missing required parameter: '{param}'."),
                Some(param),
            )
            .await
    }

    async fn item_not_found(&mut self, id: Option<&str>, item_id: &str) -> Result<(), WsError> {
        self.out
            .error(
                id,
                "item_not_found",
                format!("Item with item_id '{item_id}' not found."),
                Some("item_id"),
            )
            .await
    }

    async fn on_truncate(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        let item_id = event.get("item_id").and_then(Value::as_str);
        let content_index = event.get("content_index").and_then(Value::as_u64);
        let audio_end_ms = event.get("audio_end_ms").and_then(Value::as_u64);
        let (Some(item_id), Some(content_index), Some(audio_end_ms)) =
            (item_id, content_index, audio_end_ms)
        else {
            let missing = if item_id.is_none() {
                "item_id"
            } else if content_index.is_none() {
                "content_index"
            } else {
                "audio_end_ms"
            };
            return self
                .out
                .error(
                    id,
                    "missing_required_parameter",
                    format!(
                        "Missing required parameter: '{missing}' (a non-negative integer for \
                         content_index and audio_end_ms)."
                    ),
                    Some(missing),
                )
                .await;
        };
        let Some(record) = self.items.get(item_id) else {
            return self.item_not_found(id, item_id).await;
        };
        if record.role != Role::Assistant || record.audio_bytes == 0 {
            return self
                .out
                .error(
                    id,
                    "unsupported_content_type",
                    "Only model output audio messages can be truncated",
                    Some("item_id"),
                )
                .await;
        }
        if content_index != 0 {
            return self
                .out
                .error(
                    id,
                    "invalid_value",
                    format!(
                        "Invalid 'content_index': {content_index}. The item has one content part."
                    ),
                    Some("content_index"),
                )
                .await;
        }
        let sent_ms = (record.audio_bytes / BYTES_PER_MS) as u64;
        if audio_end_ms > sent_ms {
            return self
                .out
                .error(
                    id,
                    "invalid_value",
                    format!(
                        "Audio content of {sent_ms}ms is already shorter than {audio_end_ms}ms"
                    ),
                    Some("audio_end_ms"),
                )
                .await;
        }
        // The live server drops the transcript of a truncated item (the content part may not
        // exist yet while the item is still being generated).
        if let Some(part) = self
            .items
            .get_mut(item_id)
            .and_then(|record| record.item.get_mut("content"))
            .and_then(|content| content.get_mut(0))
            .and_then(Value::as_object_mut)
        {
            part.insert("transcript".into(), Value::Null);
        }
        self.log()[self.index].truncations.push(Truncation {
            item_id: item_id.to_owned(),
            content_index,
            audio_end_ms,
        });
        self.out
            .send(json!({
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }))
            .await
    }

    // --- responses -----------------------------------------------------------------------------

    async fn on_response_create(&mut self, event: &Value, id: Option<&str>) -> Result<(), WsError> {
        if let Some(active) = &self.response {
            let message = format!(
                "Conversation already has an active response in progress: {}. Wait until the \
                 response is finished before creating a new one.",
                active.id
            );
            return self
                .out
                .error(
                    id,
                    "conversation_already_has_active_response",
                    message,
                    None,
                )
                .await;
        }
        self.start_response(event.get("response")).await
    }

    async fn on_response_cancel(&mut self, id: Option<&str>) -> Result<(), WsError> {
        if self.response.is_none() {
            return self
                .out
                .error(
                    id,
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    None,
                )
                .await;
        }
        self.finish_response(Finish::Cancelled("client_cancelled"))
            .await
    }

    /// `response.created` and the announcements of its item and content part; the audio follows
    /// from [`Connection::advance_response`].
    async fn start_response(&mut self, params: Option<&Value>) -> Result<(), WsError> {
        self.next_response += 1;
        let response_id = format!("resp_{}", self.next_response);
        let item_id = self.new_item_id();
        let params = params.filter(|p| p.is_object());
        let instructions = params
            .and_then(|p| p.get("instructions"))
            .and_then(Value::as_str)
            .or_else(|| self.session["instructions"].as_str())
            .unwrap_or("")
            .to_owned();
        let metadata = params
            .and_then(|p| p.get("metadata"))
            .cloned()
            .unwrap_or(Value::Null);
        let in_conversation = params
            .and_then(|p| p.get("conversation"))
            .and_then(Value::as_str)
            != Some("none");
        let transcript = match self.config().replies.get(self.responses_started) {
            Some(reply) => reply
                .replace("{caller}", &self.last_caller_transcript)
                .replace("{instructions}", &instructions),
            None => self.config().clip.transcript.clone(),
        };
        self.responses_started += 1;
        let now = Instant::now();
        let first_audio_at = now + Duration::from_millis(self.config().first_audio_delay_ms);
        let active = ActiveResponse {
            id: response_id.clone(),
            item_id: item_id.clone(),
            next_at: first_audio_at,
            first_audio_at,
            chunks_sent: 0,
            sent_bytes: 0,
            words_sent: 0,
            instructions,
            transcript,
            metadata,
            in_conversation,
        };
        let response =
            self.response_object(&active, "in_progress", Value::Null, vec![], Value::Null);
        self.out
            .send(json!({"type": "response.created", "response": response}))
            .await?;
        self.out
            .send(json!({
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40000, "remaining": 36000, "reset_seconds": 6.0},
                ],
            }))
            .await?;
        let item = json!({
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        });
        self.out
            .send(json!({
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }))
            .await?;
        if in_conversation {
            let previous = self.order.last().cloned();
            self.add_item(item_id.clone(), Role::Assistant, item.clone());
            self.out
                .send(json!({"type": "conversation.item.added", "previous_item_id": previous, "item": item}))
                .await?;
        }
        self.out
            .send(json!({
                "type": "response.content_part.added",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            }))
            .await?;
        self.response = Some(active);
        Ok(())
    }

    /// Sends the next audio delta (with the transcript due by then), or finishes the response
    /// when the clip is done.
    async fn advance_response(&mut self) -> Result<(), WsError> {
        let clip = self.shared.config.clip.clone();
        let chunk_ms = u64::from(self.shared.config.chunk_ms.max(1));
        let realtime = self.shared.config.realtime_pace;
        let chunk_bytes = chunk_ms as usize * BYTES_PER_MS;
        let total_chunks = clip.mulaw.len().div_ceil(chunk_bytes).max(1);
        let Some(active) = self.response.as_mut() else {
            return Ok(());
        };
        let full_transcript = active.transcript.clone();
        let words: Vec<&str> = full_transcript.split_inclusive(' ').collect();
        if active.sent_bytes < clip.mulaw.len() {
            let start = active.sent_bytes;
            let end = (start + chunk_bytes).min(clip.mulaw.len());
            active.sent_bytes = end;
            active.chunks_sent += 1;
            let words_due = (words.len() * active.chunks_sent as usize).div_ceil(total_chunks);
            let words_due = words_due.min(words.len());
            let text: String = words[active.words_sent..words_due].concat();
            active.words_sent = words_due;
            active.next_at = if realtime {
                active.first_audio_at + Duration::from_millis(chunk_ms * active.chunks_sent)
            } else {
                Instant::now()
            };
            let finished = end == clip.mulaw.len();
            let (response_id, item_id) = (active.id.clone(), active.item_id.clone());
            if let Some(record) = self.items.get_mut(&item_id) {
                record.audio_bytes = end;
            }
            self.out
                .send(json!({
                    "type": "response.output_audio.delta",
                    "response_id": response_id,
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": BASE64.encode(&clip.mulaw[start..end]),
                }))
                .await?;
            if !text.is_empty() {
                self.out
                    .send(json!({
                        "type": "response.output_audio_transcript.delta",
                        "response_id": response_id,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": text,
                    }))
                    .await?;
            }
            if !finished {
                return Ok(());
            }
        }
        self.finish_response(Finish::Completed).await
    }

    /// Ends the active response: the `…done` events of its audio, transcript, part and item, then
    /// `response.done` with the status, and the usage.
    async fn finish_response(&mut self, finish: Finish) -> Result<(), WsError> {
        let Some(active) = self.response.take() else {
            return Ok(());
        };
        let words: Vec<&str> = active.transcript.split_inclusive(' ').collect();
        let (status, item_status, status_details) = match finish {
            Finish::Completed => ("completed", "completed", Value::Null),
            Finish::Cancelled(reason) => (
                "cancelled",
                "incomplete",
                json!({"type": "cancelled", "reason": reason}),
            ),
        };
        if matches!(finish, Finish::Completed) && active.words_sent < words.len() {
            // A clip with no audio: the whole transcript at once.
            self.out
                .send(json!({
                    "type": "response.output_audio_transcript.delta",
                    "response_id": active.id,
                    "item_id": active.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": words[active.words_sent..].concat(),
                }))
                .await?;
        }
        let spoken_words = match finish {
            Finish::Completed => words.len(),
            Finish::Cancelled(_) => active.words_sent,
        };
        let transcript = words[..spoken_words].concat();
        let transcript = match finish {
            Finish::Completed => active.transcript.clone(),
            Finish::Cancelled(_) => transcript.trim_end().to_owned(),
        };
        let common = |kind: &str| {
            json!({
                "type": kind,
                "response_id": active.id,
                "item_id": active.item_id,
                "output_index": 0,
                "content_index": 0,
            })
        };
        self.out.send(common("response.output_audio.done")).await?;
        let mut event = common("response.output_audio_transcript.done");
        event["transcript"] = Value::String(transcript.clone());
        self.out.send(event).await?;
        let mut event = common("response.content_part.done");
        event["part"] = json!({"type": "audio", "transcript": transcript});
        self.out.send(event).await?;
        let item = json!({
            "id": active.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": item_status,
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": transcript}],
        });
        self.out
            .send(json!({
                "type": "response.output_item.done",
                "response_id": active.id,
                "output_index": 0,
                "item": item,
            }))
            .await?;
        if active.in_conversation {
            let position = self.order.iter().position(|i| *i == active.item_id);
            let previous = position
                .and_then(|p| p.checked_sub(1))
                .and_then(|p| self.order.get(p).cloned());
            if let Some(record) = self.items.get_mut(&active.item_id) {
                record.item = item.clone();
            }
            self.out
                .send(json!({"type": "conversation.item.done", "previous_item_id": previous, "item": item}))
                .await?;
        }
        let usage = self.usage_for(&active, &transcript);
        let response = self.response_object(&active, status, status_details, vec![item], usage);
        self.echoing = self.config().echo;
        self.out
            .send(json!({"type": "response.done", "response": response}))
            .await
    }

    /// Plausible token counts: input text ≈ instructions chars / 4 plus earlier text, input audio
    /// = caller ms / 100 plus earlier assistant audio, output audio = audio ms sent / 50, output
    /// text ≈ transcript chars / 4, cached = the previous response's input (in 64-token steps)
    /// when the instructions did not change.
    fn usage_for(&mut self, active: &ActiveResponse, transcript: &str) -> Value {
        let input_text = text_tokens(&active.instructions) + self.usage.text_tokens;
        let input_audio = self.usage.caller_audio_ms / 100 + self.usage.assistant_audio_tokens;
        let input = input_text + input_audio;
        let cached = match &self.usage.previous {
            Some((instructions, previous)) if *instructions == active.instructions => {
                (*previous).min(input) / 64 * 64
            }
            _ => 0,
        };
        let output_audio = (active.sent_bytes / BYTES_PER_MS) as u64 / 50;
        let output_text = text_tokens(transcript);
        let output = output_audio + output_text;
        if active.in_conversation {
            self.usage.text_tokens += output_text;
            self.usage.assistant_audio_tokens += output_audio;
        }
        self.usage.previous = Some((active.instructions.clone(), input));
        json!({
            "total_tokens": input + output,
            "input_tokens": input,
            "output_tokens": output,
            "input_token_details": {
                "text_tokens": input_text,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {"text_tokens": cached.min(input_text), "audio_tokens": cached.saturating_sub(input_text), "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        })
    }

    fn response_object(
        &self,
        active: &ActiveResponse,
        status: &str,
        status_details: Value,
        output: Vec<Value>,
        usage: Value,
    ) -> Value {
        let audio_output = &self.session["audio"]["output"];
        json!({
            "object": "realtime.response",
            "id": active.id,
            "status": status,
            "status_details": status_details,
            "output": output,
            "conversation_id": if active.in_conversation { Value::String(format!("conv_sim{:03}", self.out.connection)) } else { Value::Null },
            "output_modalities": ["audio"],
            "max_output_tokens": self.session["max_output_tokens"].clone(),
            "audio": {"output": {"format": audio_output["format"].clone(), "voice": audio_output["voice"].clone()}},
            "usage": usage,
            "metadata": active.metadata,
        })
    }
}

/// How a response ends.
#[derive(Debug, Clone, Copy)]
enum Finish {
    Completed,
    /// Cancelled, with the `status_details.reason` (`turn_detected` or `client_cancelled`).
    Cancelled(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Session object helpers
// ---------------------------------------------------------------------------------------------

/// The GA session object of `session.created`: the service defaults, with the simulator's VAD
/// defaults for silence and padding.
fn initial_session(number: usize, model: Option<&str>, vad: &VadConfig) -> Value {
    let expires_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    json!({
        "type": "realtime",
        "object": "realtime.session",
        "id": format!("sess_sim{number:03}"),
        "model": model.unwrap_or(DEFAULT_MODEL),
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": null,
        "truncation": "auto",
        "prompt": null,
        "include": null,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": null,
                "noise_reduction": null,
                "turn_detection": default_turn_detection(vad),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,
            },
        },
    })
}

fn default_turn_detection(vad: &VadConfig) -> Value {
    json!({
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": vad.prefix_padding_ms,
        "silence_duration_ms": vad.silence_ms,
        "idle_timeout_ms": null,
        "create_response": true,
        "interrupt_response": true,
    })
}

/// Fills the defaults of a turn detection switched on (or switched type) by an update, so the
/// effective session shows every setting.
fn normalise_turn_detection(session: &mut Value, vad: &VadConfig) {
    let Some(Value::Object(fields)) = session.pointer_mut("/audio/input/turn_detection") else {
        return;
    };
    let defaults = match fields.get("type").and_then(Value::as_str) {
        Some("semantic_vad") => json!({
            "eagerness": "auto", "create_response": true, "interrupt_response": true,
        }),
        _ => {
            let mut defaults = default_turn_detection(vad);
            if let Value::Object(d) = &mut defaults {
                d.remove("type");
            }
            defaults
        }
    };
    if let Value::Object(defaults) = defaults {
        for (key, value) in defaults {
            fields.entry(key).or_insert(value);
        }
    }
    fields
        .entry("type")
        .or_insert_with(|| Value::String("server_vad".into()));
}

/// Merges a `session.update` patch into the effective session: objects merge key by key, except
/// that an object whose `type` differs replaces the old one whole (a new audio format or turn
/// detection type carries none of the old one's fields); anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(old), Value::Object(new)) if same_type(old, new) => {
            for (key, value) in new {
                match old.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        old.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn same_type(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    match (old.get("type"), new.get("type")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// A `session.update` the live server would refuse, with the error to send.
#[derive(Debug)]
struct Problem {
    code: &'static str,
    message: String,
    param: String,
}

impl Problem {
    fn unknown(param: String) -> Problem {
        Problem {
            code: "unknown_parameter",
            message: format!("Unknown parameter: '{param}'."),
            param,
        }
    }

    fn invalid(param: &str, message: String) -> Problem {
        Problem {
            code: "invalid_value",
            message,
            param: param.to_owned(),
        }
    }
}

const SESSION_KEYS: &[&str] = &[
    "type",
    "model",
    "instructions",
    "output_modalities",
    "audio",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "truncation",
    "tracing",
    "prompt",
    "include",
    "reasoning",
    "parallel_tool_calls",
];
const AUDIO_KEYS: &[&str] = &["input", "output"];
const INPUT_KEYS: &[&str] = &[
    "format",
    "noise_reduction",
    "transcription",
    "turn_detection",
];
const OUTPUT_KEYS: &[&str] = &["format", "voice", "speed"];
const FORMAT_KEYS: &[&str] = &["type", "rate"];
const SERVER_VAD_KEYS: &[&str] = &[
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "idle_timeout_ms",
    "create_response",
    "interrupt_response",
];
const SEMANTIC_VAD_KEYS: &[&str] = &["type", "eagerness", "create_response", "interrupt_response"];

/// Checks a `session.update` patch the way the GA server does (§2.1, §4.4): `session.type` is
/// required and must be `realtime`, unknown parameters are refused (then nothing is applied),
/// audio formats and turn-detection types must be known, and the model cannot change.
fn check_session_patch(patch: &Value, current: &Value) -> Result<(), Problem> {
    match patch.get("type").and_then(Value::as_str) {
        None => {
            return Err(Problem {
                code: "missing_required_parameter",
                message: "Missing required parameter: 'session.type'.".into(),
                param: "session.type".into(),
            });
        }
        Some("realtime") => {}
        Some(other) => {
            return Err(Problem::invalid(
                "session.type",
                format!(
                    "Invalid value: '{other}'. The simulated upstream supports only 'realtime'."
                ),
            ));
        }
    }
    check_keys(patch, "session", SESSION_KEYS)?;
    if let Some(model) = patch.get("model").and_then(Value::as_str)
        && current.get("model").and_then(Value::as_str) != Some(model)
    {
        return Err(Problem::invalid(
            "session.model",
            "The model of a session cannot be changed after it has started.".into(),
        ));
    }
    let Some(audio) = patch.get("audio") else {
        return Ok(());
    };
    check_keys(audio, "session.audio", AUDIO_KEYS)?;
    if let Some(input) = audio.get("input") {
        check_keys(input, "session.audio.input", INPUT_KEYS)?;
        check_format(input, "session.audio.input.format")?;
        if let Some(td) = input.get("turn_detection").filter(|td| !td.is_null()) {
            let param = "session.audio.input.turn_detection";
            match td.get("type").and_then(Value::as_str) {
                Some("server_vad") | None => check_keys(td, param, SERVER_VAD_KEYS)?,
                Some("semantic_vad") => check_keys(td, param, SEMANTIC_VAD_KEYS)?,
                Some(other) => {
                    return Err(Problem::invalid(
                        "session.audio.input.turn_detection.type",
                        format!(
                            "Invalid value: '{other}'. Supported values are: 'server_vad' and \
                             'semantic_vad'."
                        ),
                    ));
                }
            }
        }
    }
    if let Some(output) = audio.get("output") {
        check_keys(output, "session.audio.output", OUTPUT_KEYS)?;
        check_format(output, "session.audio.output.format")?;
    }
    Ok(())
}

/// Every key of `value` (when it is an object) must be in `allowed`.
fn check_keys(value: &Value, prefix: &str, allowed: &[&str]) -> Result<(), Problem> {
    let Value::Object(fields) = value else {
        return Err(Problem::invalid(
            prefix,
            format!("Invalid type for '{prefix}': expected an object."),
        ));
    };
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(Problem::unknown(format!("{prefix}.{unknown}"))),
        None => Ok(()),
    }
}

fn check_format(direction: &Value, param: &str) -> Result<(), Problem> {
    let Some(format) = direction.get("format") else {
        return Ok(());
    };
    check_keys(format, param, FORMAT_KEYS)?;
    match format.get("type").and_then(Value::as_str) {
        Some("audio/pcmu" | "audio/pcma") => Ok(()),
        Some("audio/pcm") => match format.get("rate").and_then(Value::as_u64) {
            None | Some(24000) => Ok(()),
            Some(rate) => Err(Problem::invalid(
                &format!("{param}.rate"),
                format!("Invalid value: {rate}. audio/pcm supports only 24000 Hz."),
            )),
        },
        other => Err(Problem::invalid(
            &format!("{param}.type"),
            format!(
                "Invalid value: {}. Supported values are: 'audio/pcm', 'audio/pcmu' and \
                 'audio/pcma'.",
                other.map_or("none".to_owned(), |t| format!("'{t}'"))
            ),
        )),
    }
}

/// About one token per four characters.
fn text_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The text of an item's content parts (input_text, output_text, text) and of a function
/// output, for usage.
fn item_text(item: &Value) -> String {
    let mut text = String::new();
    if let Some(parts) = item.get("content").and_then(Value::as_array) {
        for part in parts {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    if let Some(output) = item.get("output").and_then(Value::as_str) {
        text.push_str(output);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// Command-line options of a stand-alone simulated upstream (`voxrelay sim-upstream`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimUpstreamArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Delay from response.created to the first audio delta, in ms (the live service takes a few
    /// hundred).
    #[arg(long = "first-audio-ms", value_name = "MS", default_value_t = 300)]
    pub first_audio_ms: u64,
    /// Delay before completing each WebSocket handshake, in ms.
    #[arg(long = "connect-delay-ms", value_name = "MS", default_value_t = 0)]
    pub connect_delay_ms: u64,
    /// Send each response's audio as fast as possible instead of at real-time pace.
    #[arg(long)]
    pub fast: bool,
    /// Audio per response.output_audio.delta, in ms.
    #[arg(long = "chunk-ms", value_name = "MS", default_value_t = 100)]
    pub chunk_ms: u32,
    /// Append every client event received to this file, one JSON object per line.
    #[arg(long = "event-log", value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// Scripted caller transcript for the next committed caller turn (repeat for later turns).
    #[arg(long = "transcript", value_name = "TEXT")]
    pub transcripts: Vec<String>,
    /// WAV (8000 Hz mono 16-bit) every response speaks instead of the built-in agent reply.
    #[arg(long, value_name = "PATH")]
    pub clip: Option<PathBuf>,
    /// Words of --clip (default: the file beside it with the extension .txt, if any).
    #[arg(long = "clip-text", value_name = "TEXT", requires = "clip")]
    pub clip_text: Option<String>,
    /// Frame level above which caller audio counts as speech, in dBFS.
    #[arg(
        long = "vad-threshold-dbfs",
        value_name = "DBFS",
        default_value_t = -35.0,
        allow_negative_numbers = true
    )]
    pub vad_threshold_dbfs: f32,
    /// Echo mode (load tests): after the first response, send every appended caller frame
    /// straight back as model audio.
    #[arg(long)]
    pub echo: bool,
    /// Event names to speak: ga (default) or beta.
    #[arg(long, value_enum, default_value_t = Dialect::Ga)]
    pub dialect: Dialect,
}

impl SimUpstreamArgs {
    /// The listen address and the configuration these options describe. Fails if `--clip` cannot
    /// be read or `--chunk-ms` is 0.
    pub fn into_config(self) -> anyhow::Result<(SocketAddr, SimUpstreamConfig)> {
        anyhow::ensure!(self.chunk_ms > 0, "--chunk-ms must be at least 1");
        let clip = match &self.clip {
            // Echo mode greets briefly: the echo starts when the greeting is done.
            None if self.echo => default_clip()
                .context("loading the built-in agent reply")?
                .first_ms(ECHO_GREETING_MS, "Hello."),
            None => default_clip().context("loading the built-in agent reply")?,
            Some(path) => {
                let text = match self.clip_text {
                    Some(text) => text,
                    None => std::fs::read_to_string(path.with_extension("txt"))
                        .map(|t| t.trim().to_owned())
                        .unwrap_or_default(),
                };
                Clip::from_wav_file(path, text)
                    .with_context(|| format!("loading --clip {}", path.display()))?
            }
        };
        let config = SimUpstreamConfig {
            connect_delay_ms: self.connect_delay_ms,
            first_audio_delay_ms: self.first_audio_ms,
            realtime_pace: !self.fast,
            chunk_ms: self.chunk_ms,
            clip,
            transcripts: self.transcripts,
            replies: Vec::new(),
            transcription_delay_ms: 0,
            event_log: self.event_log,
            vad: VadConfig {
                threshold_dbfs: self.vad_threshold_dbfs,
                ..VadConfig::default()
            },
            echo: self.echo,
            dialect: self.dialect,
            keep_logs: !self.echo,
            fault: None,
            recv_buffer_bytes: None,
        };
        Ok((self.listen, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_clip_is_about_five_seconds_of_the_agent_reply() {
        let clip = match default_clip() {
            Ok(clip) => clip,
            Err(e) => panic!("embedded clip unreadable: {e}"),
        };
        assert!((5000..6500).contains(&clip.duration_ms()), "{clip:?}");
        assert!(
            clip.transcript
                .starts_with("Thanks for calling Bright Smile Dental")
        );
        assert!(!clip.transcript.ends_with('\n'));
        // Speech, not silence.
        assert!(mulaw::rms_dbfs(&clip.mulaw) > -30.0);
    }

    #[test]
    fn a_format_change_replaces_the_old_format_and_a_vad_change_merges() {
        let mut session = initial_session(1, None, &VadConfig::default());
        let patch = json!({
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                },
                "output": {"format": {"type": "audio/pcmu"}},
            },
        });
        assert!(check_session_patch(&patch, &session).is_ok());
        merge(&mut session, &patch);
        assert_eq!(session["instructions"], "Be brief.");
        assert_eq!(
            session["audio"]["input"]["format"],
            json!({"type": "audio/pcmu"})
        );
        assert_eq!(session["audio"]["output"]["voice"], "marin");
        let td = &session["audio"]["input"]["turn_detection"];
        assert_eq!(td["silence_duration_ms"], 800);
        assert_eq!(td["prefix_padding_ms"], 300);
        assert_eq!(td["interrupt_response"], true);
    }

    #[test]
    fn beta_shaped_and_unknown_session_fields_are_refused() {
        let session = initial_session(1, None, &VadConfig::default());
        for (patch, param) in [
            (
                json!({"type": "realtime", "temperature": 0.8}),
                "session.temperature",
            ),
            (
                json!({"type": "realtime", "input_audio_format": "g711_ulaw"}),
                "session.input_audio_format",
            ),
            (
                json!({"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_ms": 1}}}}),
                "session.audio.input.turn_detection.silence_ms",
            ),
            (json!({"instructions": "x"}), "session.type"),
        ] {
            match check_session_patch(&patch, &session) {
                Err(problem) => assert_eq!(problem.param, param),
                Ok(()) => panic!("accepted {patch}"),
            }
        }
    }

    #[test]
    fn turning_vad_back_on_fills_in_its_defaults() {
        let vad = VadConfig::default();
        let mut session = initial_session(1, None, &vad);
        merge(
            &mut session,
            &json!({"audio": {"input": {"turn_detection": null}}}),
        );
        assert!(session["audio"]["input"]["turn_detection"].is_null());
        merge(
            &mut session,
            &json!({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": false}}}}),
        );
        normalise_turn_detection(&mut session, &vad);
        let td = &session["audio"]["input"]["turn_detection"];
        assert_eq!(td["create_response"], false);
        assert_eq!(td["silence_duration_ms"], 500);
        assert_eq!(td["interrupt_response"], true);
    }
}
