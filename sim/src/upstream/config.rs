//! How a simulated upstream behaves ([`SimUpstreamConfig`], its [`Fault`]s and [`Dialect`]s)
//! and what it records of each session ([`SessionLog`], [`Truncation`]).

use super::*;

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
    /// A fault connections suffer, timed from their handshake (for the tests of how a call
    /// ends and how it survives). Default `None`.
    pub fault: Option<Fault>,
    /// How many connections [`SimUpstreamConfig::fault`] hits, counted from the first one
    /// accepted: `Some(1)` kills the first session and lets a redial work. Default `None`
    /// (every connection).
    pub faulty_connections: Option<usize>,
    /// The session lifetime, ms: `session.created` reports `expires_at` this far ahead (in whole
    /// seconds, rounded up) and, at it, the server sends `error` `session_expired` and closes
    /// with 1001, as the live service does at its 60-minute limit. Default `None` (an hour, and
    /// no expiry enforced).
    pub session_lifetime_ms: Option<u64>,
    /// How many WebSocket handshakes succeed; later ones get HTTP 503 (a provider outage that
    /// begins after the first N sessions). Default `None` (all).
    pub accepted_handshakes: Option<usize>,
    /// SO_RCVBUF of accepted sockets, bytes (a small one makes a server that stops reading
    /// push back on the client quickly); `None` leaves the kernel's own sizing.
    pub recv_buffer_bytes: Option<usize>,
    /// How many `response.create`s of each connection are refused for the rate limit, counted
    /// from its first: each gets `response.created`, a `rate_limits.updated` with no requests
    /// remaining (resetting in 0.2 s), and `response.done` with status `failed` and
    /// `status_details.error` code `rate_limit_exceeded`. Default 0.
    pub refused_responses: usize,
    /// Check every `session.update`'s instructions for business isolation
    /// ([`crate::isolation`]), readable from [`super::SimUpstream::isolation`]. Default off.
    pub check_isolation: bool,
    /// Scripted function calls: the response of a connection with index
    /// [`ScriptedToolCall::response`] (0-based, as `replies`) ends, after its audio, with a
    /// `function_call` item, announced by `response.function_call_arguments.delta`/`.done` and
    /// in `response.done`'s output, as the live service does. A cancelled response calls
    /// nothing. Default empty.
    pub tool_calls: Vec<ScriptedToolCall>,
    /// Scripts for later connections of the same call (a caller back from a transfer, on a new
    /// session): `later_scripts[N]` replaces `transcripts` and `replies` on connection N + 1
    /// (0-based, in the order accepted). Connections past the list use `transcripts` and
    /// `replies`. Default empty.
    pub later_scripts: Vec<ConnectionScript>,
}

/// What one connection's caller says and model replies ([`SimUpstreamConfig::transcripts`],
/// [`SimUpstreamConfig::replies`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionScript {
    /// Scripted caller transcripts, by committed turn.
    pub transcripts: Vec<String>,
    /// Scripted model output transcripts, by response.
    pub replies: Vec<String>,
}

/// A function call the simulated model makes at the end of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedToolCall {
    /// Which response of a connection (0-based; the greeting is 0).
    pub response: usize,
    /// The function's name.
    pub name: String,
    /// The arguments, JSON text.
    pub arguments: String,
    /// Which connection (0-based, in the order they were accepted) makes the call; `None`:
    /// every connection.
    pub connection: Option<usize>,
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
    /// The server ends the session as at its time limit: `error` with type
    /// `invalid_request_error` and code `session_expired`, then close 1001.
    Expire(u64),
    /// The server goes mute: it keeps reading (and answering pings) but sends no event from
    /// then on. `Mute(0)` sends not even `session.created`: a session that handshakes and then
    /// says nothing.
    Mute(u64),
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
pub(super) const BETA_NAMES: [(&str, &str); 4] = [
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
            faulty_connections: None,
            session_lifetime_ms: None,
            accepted_handshakes: None,
            recv_buffer_bytes: None,
            refused_responses: 0,
            check_isolation: false,
            tool_calls: Vec::new(),
            later_scripts: Vec::new(),
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
    /// When the connection ended (the relay closed it, the socket failed, or a fault);
    /// `None` while it is open.
    pub ended_at: Option<std::time::Instant>,
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
