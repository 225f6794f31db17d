//! Realtime API events (GA shapes).
//!
//! Client events are written with serde from borrowed structs, so a media payload is moved from
//! Twilio's JSON envelope into ours without being decoded. Server events are parsed leniently
//! into a flat [`ServerEvent`]: only the fields the proxy acts on are read, the rest is ignored,
//! and an audio delta borrows its base64 text from the frame.
//!
//! Shapes: `shared/protocol/openai-realtime.md` §2 (client) and §3 (server), from the official
//! SDK's `openai/types/realtime/*_event.py`. The GA server rejects unknown fields
//! (`unknown_parameter`), so every field written here exists in the GA schema; CI checks the
//! events of a full call against the SDK types.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Server VAD settings sent in `session.audio.input.turn_detection` (type `server_vad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnDetection {
    /// Activation threshold, 0.0–1.0 (server default 0.5).
    pub threshold: f32,
    /// Audio kept before detected speech, ms (server default 300).
    pub prefix_padding_ms: u32,
    /// Silence that ends a turn, ms (docstring default 500).
    pub silence_duration_ms: u32,
    /// The server starts a response when a turn ends.
    pub create_response: bool,
    /// The server cancels the active response when the caller starts speaking.
    pub interrupt_response: bool,
}

/// What a full `session.update` configures.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The system prompt (the COMPACT or FULL instructions).
    pub instructions: String,
    /// Output voice (`marin`, `cedar`, `alloy`, …). Cannot change after the first audio.
    pub voice: String,
    /// Server VAD settings; `None` means manual turns.
    pub turn_detection: Option<TurnDetection>,
    /// Input transcription model (`gpt-4o-mini-transcribe`, …); `None` turns transcription off.
    pub transcription_model: Option<String>,
    /// ISO-639-1 language hint for transcription (`en`), if known.
    pub language: Option<String>,
    /// `session.tools`: the call's function and MCP tools ([`crate::tools::ToolSet`]); empty
    /// sends no `tools` field.
    pub tools: std::sync::Arc<Vec<serde_json::Value>>,
}

/// An event the proxy sends upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent<'a> {
    /// Full session setup: `audio/pcmu` in and out (G.711 mu-law, so Twilio payloads pass
    /// through), voice, VAD, transcription and instructions.
    SessionUpdate(&'a SessionConfig),
    /// Instructions only: the compact→full upgrade. Leaves every other setting as it is.
    SessionInstructions(&'a str),
    /// `input_audio_buffer.append` with base64 mu-law, unchanged from Twilio.
    Append(&'a str),
    /// `response.create` with no overrides.
    ResponseCreate,
    /// `response.create` whose `response.instructions` replace the session's for that response
    /// only (the safe reply after a blocked injection attempt).
    ResponseWithInstructions(&'a str),
    /// `response.cancel` of the active response.
    ResponseCancel,
    /// `conversation.item.delete`: remove an item (a blocked or self-echo caller turn) from the
    /// model's context.
    DeleteItem(&'a str),
    /// `conversation.item.create` of a system message (`input_text` content).
    SystemMessage(&'a str),
    /// `conversation.item.create` of a caller turn as text (`role: user`, `input_text`
    /// content): the conversation replayed into a new session.
    UserText(&'a str),
    /// `conversation.item.create` of a model turn as text (`role: assistant`, `output_text`
    /// content; assistant audio cannot be injected: `shared/protocol/openai-realtime.md` §2.3).
    AssistantText(&'a str),
    /// `conversation.item.create` of a `function_call_output`: the answer to the model's
    /// function call `call_id` (`shared/protocol/openai-realtime.md` §2.3).
    FunctionOutput {
        /// The `call_id` of the model's `function_call`.
        call_id: &'a str,
        /// The output, a string (JSON text by convention).
        output: &'a str,
    },
    /// `conversation.item.truncate`: cut an assistant audio item at `audio_end_ms` (what the
    /// caller heard), which also drops the unheard transcript from the model's context.
    Truncate {
        /// The assistant item.
        item_id: &'a str,
        /// Milliseconds of the item's audio to keep.
        audio_end_ms: u64,
    },
}

#[derive(Serialize)]
struct Typed<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: T,
    #[serde(skip)]
    _p: std::marker::PhantomData<&'a ()>,
}

#[derive(Serialize)]
struct AppendBody<'a> {
    audio: &'a str,
}

#[derive(Serialize)]
struct TruncateBody<'a> {
    item_id: &'a str,
    content_index: u32,
    audio_end_ms: u64,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct ItemIdBody<'a> {
    item_id: &'a str,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    response: ResponseParams<'a>,
}

#[derive(Serialize)]
struct ResponseParams<'a> {
    instructions: &'a str,
}

#[derive(Serialize)]
struct ItemBody<'a> {
    item: MessageItem<'a>,
}

#[derive(Serialize)]
struct MessageItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [InputText<'a>; 1],
}

#[derive(Serialize)]
struct OutputItemBody<'a> {
    item: FunctionOutputItem<'a>,
}

#[derive(Serialize)]
struct FunctionOutputItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    call_id: &'a str,
    output: &'a str,
}

#[derive(Serialize)]
struct InputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct SessionBody<'a> {
    session: SessionObj<'a>,
}

#[derive(Serialize)]
struct SessionObj<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    instructions: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_modalities: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio: Option<AudioObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [serde_json::Value]>,
}

#[derive(Serialize)]
struct AudioObj<'a> {
    input: AudioInput<'a>,
    output: AudioOutput<'a>,
}

#[derive(Serialize)]
struct Format {
    #[serde(rename = "type")]
    kind: &'static str,
}

const PCMU: Format = Format { kind: "audio/pcmu" };

#[derive(Serialize)]
struct AudioInput<'a> {
    format: Format,
    transcription: Option<Transcription<'a>>,
    turn_detection: Option<VadObj<'a>>,
}

#[derive(Serialize)]
struct Transcription<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
}

#[derive(Serialize)]
struct VadObj<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    settings: &'a TurnDetection,
}

#[derive(Serialize)]
struct AudioOutput<'a> {
    format: Format,
    voice: &'a str,
}

fn typed<T: Serialize>(kind: &'static str, body: T) -> String {
    // Plain structs of strings and numbers: serialisation cannot fail.
    serde_json::to_string(&Typed {
        kind,
        body,
        _p: std::marker::PhantomData,
    })
    .unwrap_or_default()
}

/// `conversation.item.create` of a message with one text part.
fn message_item(role: &'static str, kind: &'static str, text: &str) -> String {
    typed(
        "conversation.item.create",
        ItemBody {
            item: MessageItem {
                kind: "message",
                role,
                content: [InputText { kind, text }],
            },
        },
    )
}

impl ClientEvent<'_> {
    /// The event's JSON text frame.
    pub fn to_json(&self) -> String {
        match self {
            ClientEvent::SessionUpdate(cfg) => typed(
                "session.update",
                SessionBody {
                    session: SessionObj {
                        kind: "realtime",
                        instructions: &cfg.instructions,
                        output_modalities: Some(["audio"]),
                        audio: Some(AudioObj {
                            input: AudioInput {
                                format: PCMU,
                                transcription: cfg.transcription_model.as_deref().map(|model| {
                                    Transcription {
                                        model,
                                        language: cfg.language.as_deref(),
                                    }
                                }),
                                turn_detection: cfg.turn_detection.as_ref().map(|settings| {
                                    VadObj {
                                        kind: "server_vad",
                                        settings,
                                    }
                                }),
                            },
                            output: AudioOutput {
                                format: PCMU,
                                voice: &cfg.voice,
                            },
                        }),
                        tools: (!cfg.tools.is_empty()).then_some(cfg.tools.as_slice()),
                    },
                },
            ),
            ClientEvent::SessionInstructions(instructions) => typed(
                "session.update",
                SessionBody {
                    session: SessionObj {
                        kind: "realtime",
                        instructions,
                        output_modalities: None,
                        audio: None,
                        tools: None,
                    },
                },
            ),
            ClientEvent::Append(audio) => typed("input_audio_buffer.append", AppendBody { audio }),
            ClientEvent::ResponseCreate => typed("response.create", Empty {}),
            ClientEvent::ResponseCancel => typed("response.cancel", Empty {}),
            ClientEvent::ResponseWithInstructions(instructions) => typed(
                "response.create",
                ResponseBody {
                    response: ResponseParams { instructions },
                },
            ),
            ClientEvent::DeleteItem(item_id) => {
                typed("conversation.item.delete", ItemIdBody { item_id })
            }
            ClientEvent::SystemMessage(text) => message_item("system", "input_text", text),
            ClientEvent::UserText(text) => message_item("user", "input_text", text),
            ClientEvent::AssistantText(text) => message_item("assistant", "output_text", text),
            ClientEvent::FunctionOutput { call_id, output } => typed(
                "conversation.item.create",
                OutputItemBody {
                    item: FunctionOutputItem {
                        kind: "function_call_output",
                        call_id,
                        output,
                    },
                },
            ),
            ClientEvent::Truncate {
                item_id,
                audio_end_ms,
            } => typed(
                "conversation.item.truncate",
                TruncateBody {
                    item_id,
                    content_index: 0,
                    audio_end_ms: *audio_end_ms,
                },
            ),
        }
    }
}

/// A server event, reduced to what the proxy acts on.
#[derive(Debug, PartialEq)]
pub enum ServerEvent<'a> {
    /// `session.created`: the session exists; it ends at `session.expires_at`.
    SessionCreated {
        /// When the server ends the session, unix seconds (`session.expires_at`; 60 minutes
        /// after creation on OpenAI, 30 on Azure: `shared/protocol/openai-realtime.md`,
        /// "Additions"). `None` when the server did not say.
        expires_at: Option<i64>,
    },
    /// `rate_limits.updated`, sent at the start of each response with the output tokens
    /// already reserved (`shared/protocol/openai-realtime.md`, "Responses").
    RateLimits {
        /// One entry per limit (`requests`, `tokens`).
        limits: Vec<RateLimit>,
    },
    /// `session.updated` (the server's full effective configuration, not read further).
    SessionUpdated,
    /// `input_audio_buffer.speech_started`: server VAD heard the caller start.
    SpeechStarted {
        /// Ms since the session's first audio, including prefix padding.
        audio_start_ms: Option<u64>,
        /// The user item it will become.
        item_id: Option<String>,
    },
    /// `input_audio_buffer.speech_stopped`.
    SpeechStopped {
        /// Ms since the session's first audio.
        audio_end_ms: Option<u64>,
    },
    /// `input_audio_buffer.committed`: the caller's turn became a user item.
    Committed,
    /// `response.created`.
    ResponseCreated {
        /// `resp_…`.
        response_id: String,
    },
    /// `response.output_audio.delta`: model audio in the session's output format.
    AudioDelta {
        /// `resp_…`, when present.
        response_id: Option<String>,
        /// The assistant item the audio belongs to.
        item_id: String,
        /// Base64 audio, borrowed from the frame when it had no escapes.
        delta: Cow<'a, str>,
    },
    /// `response.output_audio.done`.
    AudioDone {
        /// The assistant item.
        item_id: Option<String>,
    },
    /// `response.output_audio_transcript.delta`: the next words of what the model is saying.
    OutputTranscriptDelta {
        /// The assistant item.
        item_id: Option<String>,
        /// The words, borrowed from the frame when it had no escapes.
        delta: Cow<'a, str>,
    },
    /// `response.output_audio_transcript.done`: what the model said, as text.
    OutputTranscriptDone {
        /// The assistant item.
        item_id: Option<String>,
        /// The transcript.
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.completed`: what the caller said, as text.
    InputTranscriptCompleted {
        /// The user item.
        item_id: Option<String>,
        /// The transcript.
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.failed`.
    InputTranscriptFailed {
        /// The user item.
        item_id: Option<String>,
    },
    /// `response.done`.
    ResponseDone {
        /// `resp_…`.
        response_id: Option<String>,
        /// `completed`, `cancelled`, `failed` or `incomplete`.
        status: Option<String>,
        /// Token usage, if reported.
        usage: Option<Usage>,
        /// Why it failed, when `status` is `failed` (`status_details.error`).
        failure: Option<ResponseFailure>,
        /// The `function_call` items of its output.
        function_calls: Vec<FunctionCall>,
    },
    /// `response.function_call_arguments.done`: the model calls a function tool. The same call
    /// is also in `response.done`'s output ([`ServerEvent::ResponseDone::function_calls`]);
    /// the session acts on the first it sees of a `call_id`.
    FunctionCall(FunctionCall),
    /// An MCP tool's event (the Realtime API calls the server itself).
    Mcp(crate::domain::McpEvent),
    /// `conversation.item.truncated`.
    Truncated {
        /// The truncated item.
        item_id: Option<String>,
        /// Where it was cut, ms.
        audio_end_ms: Option<u64>,
    },
    /// `error`: most are recoverable and the socket stays open.
    Error {
        /// `error.type`, e.g. `invalid_request_error` or `server_error`.
        kind: Option<String>,
        /// `error.code`, e.g. `response_cancel_not_active` (nullable on the wire).
        code: Option<String>,
        /// `error.message`.
        message: String,
    },
    /// Any other event (deltas of transcripts, item bookkeeping, rate limits, …).
    Other {
        /// The `type` field.
        kind: Cow<'a, str>,
    },
}

/// A function call by the model: from `response.function_call_arguments.done`, or a
/// `function_call` item of `response.done.response.output` (`shared/protocol/openai-realtime.md`
/// §3, "Responses").
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct FunctionCall {
    /// `call_…`: what the `function_call_output` answers.
    #[serde(default)]
    pub call_id: String,
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// The arguments, JSON text as the model wrote it.
    #[serde(default)]
    pub arguments: String,
    /// The response it belongs to, when known.
    #[serde(default)]
    pub response_id: Option<String>,
}

/// Why a response failed: `response.done.response.status_details.error` {`type`, `code`}
/// (`shared/protocol/openai-realtime.md`, "response.done").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseFailure {
    /// `error.type`, e.g. `server_error`.
    pub kind: Option<String>,
    /// `error.code`, e.g. `rate_limit_exceeded`.
    pub code: Option<String>,
}

/// Failure types and codes after which the same `response.create` may succeed if sent again
/// later: a rate limit, or a fault on the server's side.
pub const RETRYABLE_FAILURES: [&str; 2] = ["rate_limit_exceeded", "server_error"];

impl ResponseFailure {
    /// Whether sending the `response.create` again later may succeed ([`RETRYABLE_FAILURES`]
    /// in the type or the code).
    pub fn is_retryable(&self) -> bool {
        [&self.kind, &self.code]
            .into_iter()
            .flatten()
            .any(|v| RETRYABLE_FAILURES.contains(&v.as_str()))
    }

    /// The code, else the type, else `unknown`: for the timeline and logs.
    pub fn label(&self) -> &str {
        self.code
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("unknown")
    }
}

/// One entry of `rate_limits.updated.rate_limits`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimit {
    /// Which limit.
    pub name: RateLimitName,
    /// The most the limit allows in its window (requests or tokens).
    #[serde(default)]
    pub limit: u64,
    /// What is left of it in the window.
    #[serde(default)]
    pub remaining: u64,
    /// Seconds until the window resets.
    #[serde(default)]
    pub reset_seconds: f64,
}

/// The limits `rate_limits.updated` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitName {
    /// Requests per window.
    Requests,
    /// Tokens per window.
    Tokens,
    /// A name this proxy does not know.
    #[serde(other)]
    Other,
}

impl RateLimitName {
    /// The name as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitName::Requests => "requests",
            RateLimitName::Tokens => "tokens",
            RateLimitName::Other => "other",
        }
    }
}

/// Token usage from `response.done.response.usage` (tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// All tokens of the response, in and out.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens (instructions + conversation), cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Details of the input tokens (the cached share).
    #[serde(default)]
    pub input_token_details: InputTokenDetails,
}

/// `usage.input_token_details`: `cached_tokens` is the part of `input_tokens` served from the
/// prompt cache (`shared/protocol/openai-realtime.md`, "response.done").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct InputTokenDetails {
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    item_id: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    audio_start_ms: Option<u64>,
    #[serde(default)]
    audio_end_ms: Option<u64>,
    #[serde(default)]
    transcript: Option<String>,
    #[serde(default)]
    response: Option<RawResponse>,
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    session: Option<RawSession>,
    #[serde(default)]
    rate_limits: Option<Vec<RateLimit>>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct RawSession {
    #[serde(default)]
    expires_at: Option<i64>,
}

/// Reads an optional string, borrowing it from the frame when it has no escapes (serde does not
/// borrow through `Option<Cow>` by itself).
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'a>>::deserialize(deserializer)?.map(|t| t.0))
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    status_details: Option<RawStatusDetails>,
    #[serde(default)]
    output: Vec<RawItem>,
}

/// An output item of `response.done`, read only for its function calls.
#[derive(Deserialize)]
struct RawItem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(flatten)]
    call: FunctionCall,
}

#[derive(Deserialize)]
struct RawStatusDetails {
    #[serde(default)]
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A server frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON with a string `type`, or a known field had the wrong type.
    #[error("malformed Realtime event: {0}")]
    Json(#[from] serde_json::Error),
    /// A known event without a field it exists for.
    #[error("Realtime `{kind}` event without `{field}`")]
    Missing {
        /// The event type.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// Parses one server text frame.
///
/// Errors: [`ParseError`] when the frame is not a JSON object with a `type`, or when an audio
/// delta lacks its `delta` or `item_id`. The caller logs and skips such frames.
pub fn parse(text: &str) -> Result<ServerEvent<'_>, ParseError> {
    let raw: Raw<'_> = serde_json::from_str(text)?;
    Ok(match raw.kind.as_ref() {
        "response.output_audio.delta" => ServerEvent::AudioDelta {
            delta: raw.delta.ok_or(ParseError::Missing {
                kind: "response.output_audio.delta",
                field: "delta",
            })?,
            item_id: raw.item_id.ok_or(ParseError::Missing {
                kind: "response.output_audio.delta",
                field: "item_id",
            })?,
            response_id: raw.response_id,
        },
        "input_audio_buffer.speech_started" => ServerEvent::SpeechStarted {
            audio_start_ms: raw.audio_start_ms,
            item_id: raw.item_id,
        },
        "input_audio_buffer.speech_stopped" => ServerEvent::SpeechStopped {
            audio_end_ms: raw.audio_end_ms,
        },
        "input_audio_buffer.committed" => ServerEvent::Committed,
        "response.created" => ServerEvent::ResponseCreated {
            response_id: raw.response.and_then(|r| r.id).unwrap_or_default(),
        },
        "response.done" => {
            let (response_id, status, usage, details, output) = match raw.response {
                Some(r) => (r.id, r.status, r.usage, r.status_details, r.output),
                None => (None, None, None, None, Vec::new()),
            };
            let function_calls = output
                .into_iter()
                .filter(|item| item.kind == "function_call" && !item.call.call_id.is_empty())
                .map(|item| FunctionCall {
                    response_id: response_id.clone(),
                    ..item.call
                })
                .collect();
            let failure = (status.as_deref() == Some("failed")).then(|| {
                let error = details.and_then(|d| d.error);
                ResponseFailure {
                    kind: error.as_ref().and_then(|e| e.kind.clone()),
                    code: error.and_then(|e| e.code),
                }
            });
            ServerEvent::ResponseDone {
                response_id,
                status,
                usage,
                failure,
                function_calls,
            }
        }
        "response.function_call_arguments.done" => ServerEvent::FunctionCall(FunctionCall {
            call_id: raw.call_id.ok_or(ParseError::Missing {
                kind: "response.function_call_arguments.done",
                field: "call_id",
            })?,
            name: raw.name.unwrap_or_default(),
            arguments: raw.arguments.unwrap_or_default(),
            response_id: raw.response_id,
        }),
        "response.output_audio.done" => ServerEvent::AudioDone {
            item_id: raw.item_id,
        },
        "response.output_audio_transcript.delta" => ServerEvent::OutputTranscriptDelta {
            item_id: raw.item_id,
            delta: raw.delta.unwrap_or_default(),
        },
        "response.output_audio_transcript.done" => ServerEvent::OutputTranscriptDone {
            item_id: raw.item_id,
            transcript: raw.transcript.unwrap_or_default(),
        },
        "conversation.item.input_audio_transcription.completed" => {
            ServerEvent::InputTranscriptCompleted {
                item_id: raw.item_id,
                transcript: raw.transcript.unwrap_or_default(),
            }
        }
        "conversation.item.input_audio_transcription.failed" => {
            ServerEvent::InputTranscriptFailed {
                item_id: raw.item_id,
            }
        }
        "conversation.item.truncated" => ServerEvent::Truncated {
            item_id: raw.item_id,
            audio_end_ms: raw.audio_end_ms,
        },
        "session.created" => ServerEvent::SessionCreated {
            expires_at: raw.session.and_then(|s| s.expires_at),
        },
        "rate_limits.updated" => ServerEvent::RateLimits {
            limits: raw.rate_limits.unwrap_or_default(),
        },
        "session.updated" => ServerEvent::SessionUpdated,
        "error" => {
            let (kind, code, message) = match raw.error {
                Some(e) => (e.kind, e.code, e.message.unwrap_or_default()),
                None => (None, None, String::new()),
            };
            ServerEvent::Error {
                kind,
                code,
                message,
            }
        }
        other => match other.parse::<crate::domain::McpEvent>() {
            Ok(event) => ServerEvent::Mcp(event),
            Err(_) => ServerEvent::Other { kind: raw.kind },
        },
    })
}

/// Error codes that are normal races in a live call and must never end it
/// (`shared/protocol/openai-realtime.md` §0 facts 7–8).
pub const BENIGN_ERROR_CODES: [&str; 3] = [
    "response_cancel_not_active",
    "conversation_already_has_active_response",
    "input_audio_buffer_commit_empty",
];

/// Error codes after which the server keeps no session: it closes the socket (1001 after
/// `session_expired`, `shared/protocol/openai-realtime.md` §0 fact 9). An `error` of type
/// `server_error` counts as one too: the proxy does not wait to learn whether the session
/// survived it, it moves the call to a new session with the conversation restored.
pub const SESSION_ENDING_ERROR_CODES: [&str; 1] = ["session_expired"];

/// Whether an `error` with this `error.type` and `error.code` ends the upstream session
/// ([`SESSION_ENDING_ERROR_CODES`], or type `server_error`).
pub fn ends_session(kind: Option<&str>, code: Option<&str>) -> bool {
    kind == Some("server_error") || code.is_some_and(|c| SESSION_ENDING_ERROR_CODES.contains(&c))
}

/// Bytes of audio in a base64 string, without decoding it (3 bytes per 4 characters, less
/// padding).
pub fn base64_decoded_len(b64: &str) -> usize {
    let len = b64.len();
    let padding = b64.bytes().rev().take(2).filter(|&b| b == b'=').count();
    (len / 4) * 3 - padding.min((len / 4) * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            instructions: "Be brief.".into(),
            voice: "marin".into(),
            turn_detection: Some(TurnDetection {
                threshold: 0.5,
                prefix_padding_ms: 300,
                silence_duration_ms: 500,
                create_response: true,
                interrupt_response: true,
            }),
            transcription_model: Some("gpt-4o-mini-transcribe".into()),
            language: Some("en".into()),
            tools: Default::default(),
        }
    }

    #[test]
    fn tools_go_in_the_full_session_update_only_when_there_are_some() {
        let mut cfg = config();
        let v: serde_json::Value =
            serde_json::from_str(&ClientEvent::SessionUpdate(&cfg).to_json()).expect("json");
        assert!(v["session"].get("tools").is_none(), "{v}");
        cfg.tools = std::sync::Arc::new(vec![serde_json::json!({
            "type": "function", "name": "book", "description": "Book.",
            "parameters": {"type": "object", "properties": {}}
        })]);
        let v: serde_json::Value =
            serde_json::from_str(&ClientEvent::SessionUpdate(&cfg).to_json()).expect("json");
        assert_eq!(v["session"]["tools"][0]["name"], "book");
        let v: serde_json::Value =
            serde_json::from_str(&ClientEvent::SessionInstructions("x").to_json()).expect("json");
        assert!(
            v["session"].get("tools").is_none(),
            "the upgrade leaves the tools alone"
        );
    }

    #[test]
    fn mcp_events_are_understood() {
        use crate::domain::McpEvent;
        assert_eq!(
            parse(r#"{"type":"response.mcp_call.failed","item_id":"x"}"#).expect("parse"),
            ServerEvent::Mcp(McpEvent::CallFailed)
        );
        assert_eq!(
            parse(r#"{"type":"mcp_list_tools.completed","item_id":"x"}"#).expect("parse"),
            ServerEvent::Mcp(McpEvent::ListToolsCompleted)
        );
        assert!(McpEvent::CallFailed.is_failure() && !McpEvent::CallCompleted.is_failure());
    }

    #[test]
    fn a_function_output_is_a_function_call_output_item() {
        let text = ClientEvent::FunctionOutput {
            call_id: "call_1",
            output: r#"{"ok":true}"#,
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "conversation.item.create");
        assert_eq!(v["item"]["type"], "function_call_output");
        assert_eq!(v["item"]["call_id"], "call_1");
        assert_eq!(v["item"]["output"], r#"{"ok":true}"#);
    }

    #[test]
    fn function_calls_are_read_from_arguments_done_and_from_response_done() {
        let done = r#"{"type":"response.function_call_arguments.done","event_id":"e","response_id":"resp_1","item_id":"item_2","output_index":1,"call_id":"call_9","name":"book","arguments":"{\"day\":\"Tue\"}"}"#;
        match parse(done).expect("parse") {
            ServerEvent::FunctionCall(call) => {
                assert_eq!(call.call_id, "call_9");
                assert_eq!(call.name, "book");
                assert_eq!(call.arguments, r#"{"day":"Tue"}"#);
                assert_eq!(call.response_id.as_deref(), Some("resp_1"));
            }
            other => panic!("{other:?}"),
        }
        let response = r#"{"type":"response.done","response":{"id":"resp_1","status":"completed","output":[{"type":"message","role":"assistant"},{"type":"function_call","call_id":"call_9","name":"book","arguments":"{}"}]}}"#;
        match parse(response).expect("parse") {
            ServerEvent::ResponseDone { function_calls, .. } => {
                assert_eq!(function_calls.len(), 1);
                assert_eq!(function_calls[0].call_id, "call_9");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(r#"{"type":"response.function_call_arguments.done","name":"x"}"#).is_err());
    }

    #[test]
    fn session_update_uses_the_ga_shape_with_pcmu_both_ways() {
        let cfg = config();
        let v: serde_json::Value =
            serde_json::from_str(&ClientEvent::SessionUpdate(&cfg).to_json()).expect("json");
        assert_eq!(v["type"], "session.update");
        assert_eq!(v["session"]["type"], "realtime");
        assert_eq!(v["session"]["instructions"], "Be brief.");
        assert_eq!(
            v["session"]["audio"]["input"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(
            v["session"]["audio"]["output"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(v["session"]["audio"]["output"]["voice"], "marin");
        let vad = &v["session"]["audio"]["input"]["turn_detection"];
        assert_eq!(vad["type"], "server_vad");
        assert_eq!(vad["silence_duration_ms"], 500);
        assert_eq!(vad["interrupt_response"], true);
        assert!(v["session"].get("temperature").is_none());
        assert!(
            v["session"].get("voice").is_none(),
            "voice lives under audio.output in GA"
        );
    }

    #[test]
    fn the_upgrade_changes_only_the_instructions() {
        let json = ClientEvent::SessionInstructions("FULL").to_json();
        assert_eq!(
            json,
            r#"{"type":"session.update","session":{"type":"realtime","instructions":"FULL"}}"#
        );
    }

    #[test]
    fn append_and_truncate_have_their_required_fields() {
        assert_eq!(
            ClientEvent::Append("f39/").to_json(),
            r#"{"type":"input_audio_buffer.append","audio":"f39/"}"#
        );
        assert_eq!(
            ClientEvent::Truncate {
                item_id: "item_1",
                audio_end_ms: 1234
            }
            .to_json(),
            r#"{"type":"conversation.item.truncate","item_id":"item_1","content_index":0,"audio_end_ms":1234}"#
        );
        assert_eq!(
            ClientEvent::ResponseCreate.to_json(),
            r#"{"type":"response.create"}"#
        );
        assert_eq!(
            ClientEvent::ResponseCancel.to_json(),
            r#"{"type":"response.cancel"}"#
        );
    }

    #[test]
    fn guard_events_have_ga_shapes() {
        assert_eq!(
            ClientEvent::DeleteItem("item_7").to_json(),
            r#"{"type":"conversation.item.delete","item_id":"item_7"}"#
        );
        assert_eq!(
            ClientEvent::SystemMessage("Stay in role.").to_json(),
            r#"{"type":"conversation.item.create","item":{"type":"message","role":"system","content":[{"type":"input_text","text":"Stay in role."}]}}"#
        );
        assert_eq!(
            ClientEvent::UserText("I need a cleaning.").to_json(),
            r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"I need a cleaning."}]}}"#
        );
        assert_eq!(
            ClientEvent::AssistantText("Tuesday at nine?").to_json(),
            r#"{"type":"conversation.item.create","item":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Tuesday at nine?"}]}}"#
        );
        assert_eq!(
            ClientEvent::ResponseWithInstructions("Be safe.").to_json(),
            r#"{"type":"response.create","response":{"instructions":"Be safe."}}"#
        );
    }

    #[test]
    fn an_audio_delta_borrows_its_payload() {
        let text = r#"{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"AAAA"}"#;
        match parse(text) {
            Ok(ServerEvent::AudioDelta {
                delta,
                item_id,
                response_id,
            }) => {
                assert!(matches!(delta, Cow::Borrowed("AAAA")));
                assert_eq!(item_id, "item_1");
                assert_eq!(response_id.as_deref(), Some("resp_1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_and_response_done_are_read() {
        let err = r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"response_cancel_not_active","message":"Cancellation failed: no active response found","param":null,"event_id":null}}"#;
        assert_eq!(
            parse(err).ok(),
            Some(ServerEvent::Error {
                kind: Some("invalid_request_error".into()),
                code: Some("response_cancel_not_active".into()),
                message: "Cancellation failed: no active response found".into()
            })
        );
        let done = r#"{"type":"response.done","response":{"id":"resp_2","status":"cancelled","usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121}}}"#;
        match parse(done) {
            Ok(ServerEvent::ResponseDone {
                response_id,
                status,
                usage,
                failure,
                ..
            }) => {
                assert_eq!(response_id.as_deref(), Some("resp_2"));
                assert_eq!(status.as_deref(), Some("cancelled"));
                assert_eq!(usage.map(|u| u.total_tokens), Some(253));
                assert_eq!(failure, None);
            }
            other => panic!("{other:?}"),
        }
        let failed = r#"{"type":"response.done","response":{"id":"resp_3","status":"failed","status_details":{"type":"failed","error":{"type":"server_error","code":"rate_limit_exceeded","message":"Rate limit reached"}},"output":[]}}"#;
        match parse(failed) {
            Ok(ServerEvent::ResponseDone {
                failure: Some(failure),
                ..
            }) => {
                assert!(failure.is_retryable());
                assert_eq!(failure.label(), "rate_limit_exceeded");
            }
            other => panic!("{other:?}"),
        }
        let refused = ResponseFailure {
            kind: Some("invalid_request_error".into()),
            code: Some("invalid_value".into()),
        };
        assert!(!refused.is_retryable());
        assert_eq!(ResponseFailure::default().label(), "unknown");
    }

    #[test]
    fn session_expiry_and_rate_limits_are_read() {
        let created = r#"{"type":"session.created","event_id":"e1","session":{"type":"realtime","object":"realtime.session","id":"sess_1","model":"gpt-realtime","expires_at":1764700000,"instructions":""}}"#;
        assert_eq!(
            parse(created).ok(),
            Some(ServerEvent::SessionCreated {
                expires_at: Some(1_764_700_000)
            })
        );
        assert_eq!(
            parse(r#"{"type":"session.created"}"#).ok(),
            Some(ServerEvent::SessionCreated { expires_at: None })
        );
        let limits = r#"{"type":"rate_limits.updated","event_id":"e2","rate_limits":[{"name":"requests","limit":1000,"remaining":999,"reset_seconds":0.06},{"name":"tokens","limit":40000,"remaining":38776,"reset_seconds":1.836},{"name":"images","limit":1,"remaining":1,"reset_seconds":1}]}"#;
        match parse(limits) {
            Ok(ServerEvent::RateLimits { limits }) => {
                assert_eq!(limits.len(), 3);
                assert_eq!(limits[0].name, RateLimitName::Requests);
                assert_eq!(limits[1].name, RateLimitName::Tokens);
                assert_eq!(limits[1].remaining, 38_776);
                assert_eq!(limits[1].limit, 40_000);
                assert!((limits[1].reset_seconds - 1.836).abs() < 1e-9);
                assert_eq!(limits[2].name, RateLimitName::Other);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_server_frames_are_errors() {
        for text in ["", "{}", r#"{"type":"response.output_audio.delta"}"#, "[1]"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn decoded_length_is_computed_from_base64_text() {
        assert_eq!(base64_decoded_len(""), 0);
        assert_eq!(base64_decoded_len("AAAA"), 3);
        assert_eq!(base64_decoded_len("AAA="), 2);
        assert_eq!(base64_decoded_len("AA=="), 1);
        let frame = "f".repeat(216 - 1) + "=";
        assert_eq!(base64_decoded_len(&frame), 161);
    }
}
