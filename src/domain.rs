//! The call vocabulary: the fixed sets of values a call, its records and its metrics speak of.
//!
//! Each type converts to and from its database and wire form here and nowhere else: `as_str`
//! gives the form stored in the database, carried in stream tokens and used as a metric label
//! value; [`std::str::FromStr`] reads it back and names the accepted values when it cannot.
//! `ALL` lists every value, so metric label sets and validation messages cannot drift from the
//! type.
//!
//! The identifiers a call carries ([`CallSid`], [`StreamSid`], [`BusinessId`]) are validated
//! newtypes: read once at the edge with `parse`, so a 100 KB CallSid or one with a newline never
//! reaches a log line, a token, TwiML or the database.

use std::fmt;
use std::str::FromStr;

/// A value that is not one of a vocabulary type's forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {expected}")]
pub struct UnknownValue {
    /// What was being read, e.g. `"direction"`.
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// The accepted forms, comma-separated.
    pub expected: String,
}

/// Declares a fieldless enum with one stored form per variant: `as_str`, `ALL`, `Display`,
/// `FromStr` (errors: [`UnknownValue`]), serde as that form and an OpenAPI string enum.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $form:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored, wire and metric-label form.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $form, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $form => Ok($name::$variant), )+
                    other => Err(UnknownValue {
                        what: $what,
                        value: other.to_string(),
                        expected: [$($form),+].join(", "),
                    }),
                }
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($form),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// Who placed the call.
    ///
    /// Twilio's `Direction` webhook field is `inbound` for calls to our numbers, and
    /// `outbound-api` (REST-created) or `outbound-dial` (a `<Dial>` leg) for calls the business
    /// places (source: <https://www.twilio.com/docs/voice/api/call-resource>); see
    /// [`Direction::from_twilio`].
    Direction, "direction" {
        /// The customer called the business.
        Inbound = "inbound",
        /// The business calls the customer.
        Outbound = "outbound",
    }
}

impl Direction {
    /// Maps Twilio's `Direction` field; `None` for values we do not serve
    /// (`trunking-*` and anything unknown).
    pub fn from_twilio(value: &str) -> Option<Direction> {
        match value {
            "inbound" => Some(Direction::Inbound),
            "outbound-api" | "outbound-dial" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

vocabulary! {
    /// Why a call's session ended. Stored in `calls.end_reason` and used as the `end_reason`
    /// label of `voxrelay_calls_total`.
    EndReason, "end reason" {
        /// Twilio sent `stop`: the call hung up or the stream was stopped
        /// (`shared/protocol/twilio.md` §4.2).
        Stop = "stop",
        /// The Twilio WebSocket closed without a `stop`.
        TwilioClosed = "twilio_closed",
        /// The Twilio WebSocket failed (a protocol violation, an oversized message, a reset).
        TwilioError = "twilio_error",
        /// Twilio stopped taking our messages for longer than `audio.stall_limit_ms`, or left
        /// no room for a control message; ending beats holding ever more of its audio.
        TwilioStalled = "twilio_stalled",
        /// The Twilio WebSocket sent nothing for `timeouts.twilio_quiet_ms` mid-call: a dead
        /// peer (Twilio sends a media frame every 20 ms while the call lasts).
        TwilioSilent = "twilio_silent",
        /// The upstream closed the session.
        UpstreamClosed = "upstream_closed",
        /// The upstream sent nothing, not even a pong to our pings, for
        /// `timeouts.upstream_quiet_ms`: a dead or frozen upstream.
        UpstreamSilent = "upstream_silent",
        /// The upstream WebSocket failed.
        UpstreamError = "upstream_error",
        /// The upstream stopped taking our messages for longer than `audio.stall_limit_ms`, or
        /// left no room for a control message.
        UpstreamStalled = "upstream_stalled",
        /// The upstream session was lost mid-call and no new one could be had within
        /// `reconnect.budget_ms` (the timeline's `upstream_lost` event says what lost it).
        UpstreamLost = "upstream_lost",
        /// The instance was draining and the drain deadline came: the model said goodbye and
        /// the call ended (`lifecycle.drain_deadline_s`).
        Shutdown = "shutdown",
        /// The call reached its longest duration (the business's `max_call_duration_s`, else
        /// `limits.max_call_duration_s`): the model said goodbye and the call ended.
        MaxDuration = "max_duration",
        /// The instance holding the call was killed; it closed the call when it started again.
        Crashed = "crashed",
        /// Refused at the webhook: a call limit (instance, business, pending pre-warms) was
        /// reached, and the caller heard a busy signal.
        Busy = "busy",
        /// Refused at the webhook: the business has no usable prompt for the direction.
        SetupFailed = "setup_failed",
        /// The media stream started but no upstream session could be opened.
        UpstreamUnavailable = "upstream_unavailable",
        /// The upstream session opened but no greeting audio came within
        /// `fallback.greeting_budget_ms` of the stream's start (an upstream that handshakes and
        /// then sends nothing): the call went to its fallback.
        NoGreeting = "no_greeting",
        /// The webhook answered, but no media stream claimed the call in time
        /// (`timeouts.pending_call_ms`).
        NoStream = "no_stream",
        /// The model ended the call with the built-in `end_call` tool, and its goodbye played
        /// ([`crate::tools::builtin`]).
        AgentHangup = "agent_hangup",
        /// The model put the caller through to one of the business's transfer targets with the
        /// built-in `transfer_call` tool: its handoff line played and Twilio took the call to
        /// `<Dial>` ([`crate::call::transfer`]). When the person does not answer, the caller
        /// comes back on a new stream, whose end is recorded in its place.
        Transferred = "transferred",
        /// An outbound call reached an answering machine (Twilio's AMD): the model left the
        /// business's voicemail message, and the call ended once it had played.
        Voicemail = "voicemail",
        /// An outbound call reached a fax machine (Twilio's AMD): hung up at the webhook.
        Fax = "fax",
    }
}

vocabulary! {
    /// How a transfer's `<Dial>` ended, from Twilio's `DialCallStatus` in the `<Dial action>`
    /// callback (<https://www.twilio.com/docs/voice/twiml/dial#dialcallstatus>): `completed`
    /// and `answered` are [`TransferOutcome::Answered`].
    TransferOutcome, "transfer outcome" {
        /// The person answered (`completed`, or `answered` while the bridge is up).
        Answered = "answered",
        /// The line was busy.
        Busy = "busy",
        /// Nobody answered within the dial timeout.
        NoAnswer = "no-answer",
        /// The number could not be dialled.
        Failed = "failed",
        /// The dial was cancelled (the caller hung up while it rang).
        Canceled = "canceled",
    }
}

impl TransferOutcome {
    /// The outcome of Twilio's `DialCallStatus` value (`completed`, `answered`, `busy`,
    /// `no-answer`, `failed`, `canceled`); `None` for anything else.
    pub fn from_dial_status(status: &str) -> Option<TransferOutcome> {
        match status {
            "completed" | "answered" => Some(TransferOutcome::Answered),
            other => other.parse().ok(),
        }
    }
}

vocabulary! {
    /// How a tool call ended (`tool_calls.status`; the `status` label of
    /// `voxrelay_tool_call_seconds`). Every status but `ok` reaches the model as an error
    /// output it can speak about ([`crate::tools::ToolFailure`]).
    ToolStatus, "tool status" {
        /// The endpoint answered 2xx with a body within the size limit.
        Ok = "ok",
        /// The arguments did not match the tool's JSON Schema (or were not JSON): no request
        /// was made.
        InvalidArguments = "invalid_arguments",
        /// The endpoint did not answer within the tool's `timeout_ms`.
        Timeout = "timeout",
        /// The endpoint answered with a status outside 2xx.
        HttpError = "http_error",
        /// The endpoint's answer was larger than `tools.max_response_bytes`.
        TooLarge = "too_large",
        /// The endpoint could not be reached (refused, reset, DNS, TLS).
        ConnectionError = "connection_error",
        /// The model called a tool the business does not have.
        UnknownTool = "unknown_tool",
        /// The tool's signing secret is not in the environment: no request was made.
        NotConfigured = "not_configured",
        /// A built-in call-control tool (`end_call`) was carried out by the proxy.
        Handled = "handled",
    }
}

vocabulary! {
    /// A call's status as Twilio's status callback reports it (`CallStatus`;
    /// <https://www.twilio.com/docs/voice/api/call-resource#call-status-values>).
    CallStatus, "call status" {
        /// Waiting to be placed.
        Queued = "queued",
        /// Twilio is dialling.
        Initiated = "initiated",
        /// The callee's phone rings.
        Ringing = "ringing",
        /// Answered and in progress.
        InProgress = "in-progress",
        /// Ended after being answered.
        Completed = "completed",
        /// The callee was busy.
        Busy = "busy",
        /// Nobody answered.
        NoAnswer = "no-answer",
        /// Twilio could not place it.
        Failed = "failed",
        /// Cancelled before it was answered.
        Canceled = "canceled",
    }
}

vocabulary! {
    /// A remote MCP tool's server event (`shared/protocol/openai-realtime.md`, "Additions"): the
    /// Realtime API calls the MCP server itself and tells the client what happened; the `event`
    /// label of `voxrelay_mcp_events_total`. All are informational except the two `failed`.
    McpEvent, "MCP event" {
        /// `mcp_list_tools.in_progress`.
        ListToolsInProgress = "mcp_list_tools.in_progress",
        /// `mcp_list_tools.completed`.
        ListToolsCompleted = "mcp_list_tools.completed",
        /// `mcp_list_tools.failed`: the server's tools could not be listed.
        ListToolsFailed = "mcp_list_tools.failed",
        /// `response.mcp_call_arguments.delta`.
        CallArgumentsDelta = "response.mcp_call_arguments.delta",
        /// `response.mcp_call_arguments.done`.
        CallArgumentsDone = "response.mcp_call_arguments.done",
        /// `response.mcp_call.in_progress`.
        CallInProgress = "response.mcp_call.in_progress",
        /// `response.mcp_call.completed`.
        CallCompleted = "response.mcp_call.completed",
        /// `response.mcp_call.failed`: the call to the MCP server failed.
        CallFailed = "response.mcp_call.failed",
    }
}

impl McpEvent {
    /// Whether the event reports a failure (the rest only say how things are going).
    pub fn is_failure(self) -> bool {
        matches!(self, McpEvent::ListToolsFailed | McpEvent::CallFailed)
    }
}

vocabulary! {
    /// What a business tool is: a function the proxy calls over HTTPS, or a remote MCP server
    /// the Realtime API calls itself (`business_tools.kind`).
    ToolKind, "tool kind" {
        /// `{"type":"function"}`: the model's call reaches the proxy, which POSTs it to the
        /// tool's endpoint, signed.
        Function = "function",
        /// `{"type":"mcp"}`: passed through to the Realtime API, which calls the server
        /// (`shared/protocol/openai-realtime.md`, "Additions").
        Mcp = "mcp",
    }
}

vocabulary! {
    /// An alert on what callers experience ([`crate::telemetry::alerts`]); the `alert` label
    /// of `voxrelay_alert`.
    Alert, "alert" {
        /// Echo events per model turn.
        EchoRate = "echo_rate",
        /// p95 turn latency.
        P95TurnLatency = "p95_turn_latency",
        /// Guard blocks per scored caller transcript.
        GuardBlockRate = "guard_block_rate",
        /// Dropped media frames.
        FrameDrops = "frame_drops",
        /// Failed calls ([`EndReason::is_failure`]) per call.
        CallFailureRate = "call_failure_rate",
    }
}

vocabulary! {
    /// Why a connection was closed at the connection cap (`server.max_connections`,
    /// [`crate::http::server`]); the `why` label of `voxrelay_http_connections_shed_total`.
    ConnectionShed, "connection shed" {
        /// An idle connection was closed to make room for a new one.
        IdleEvicted = "idle_evicted",
        /// Every connection was busy: the new one was closed.
        OverCap = "over_cap",
    }
}

vocabulary! {
    /// Where a call goes when no model can take it (the human fallback,
    /// [`crate::call::fallback`]); the `action` label of `voxrelay_call_fallbacks_total`.
    FallbackAction, "fallback action" {
        /// Put through to the business's own line (`<Dial>`).
        Dial = "dial",
        /// A spoken apology in the business's language, then a hang-up.
        Apology = "apology",
    }
}

vocabulary! {
    /// What became of an upstream session that a call replaced mid-call; the `outcome` label of
    /// `voxrelay_upstream_reconnects_total`.
    ReconnectOutcome, "reconnect outcome" {
        /// The session was lost: a reconnect began.
        Lost = "lost",
        /// A new session took over with the conversation restored.
        Restored = "restored",
        /// No new session within the budget: the call ended.
        Failed = "failed",
        /// The session was replaced before its expiry, at a turn boundary.
        Rollover = "rollover",
    }
}

impl EndReason {
    /// Whether the call's upstream session is what was lost (closed, failed, silent, stalled):
    /// the losses a mid-call reconnect answers.
    pub fn is_upstream_loss(self) -> bool {
        matches!(
            self,
            EndReason::UpstreamClosed
                | EndReason::UpstreamError
                | EndReason::UpstreamStalled
                | EndReason::UpstreamSilent
        )
    }

    /// Whether a socket failed or stalled, or the instance died (a call "with errors" in the
    /// windowed figures); a hang-up, a peer closing the session or an ending on purpose
    /// (drain, longest duration) is not a fault.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            EndReason::TwilioError
                | EndReason::TwilioStalled
                | EndReason::TwilioSilent
                | EndReason::UpstreamError
                | EndReason::UpstreamStalled
                | EndReason::UpstreamSilent
                | EndReason::UpstreamLost
                | EndReason::NoGreeting
                | EndReason::Crashed
        )
    }

    /// Whether the call never became a conversation: refused at the webhook, or its stream
    /// never reached a model.
    pub fn is_failed_setup(self) -> bool {
        matches!(
            self,
            EndReason::Busy
                | EndReason::SetupFailed
                | EndReason::UpstreamUnavailable
                | EndReason::NoStream
        )
    }

    /// Whether the call failed: a failed setup or a fault. The share of these is the
    /// `call_failure_rate` alert.
    pub fn is_failure(self) -> bool {
        self.is_fault() || self.is_failed_setup()
    }
}

vocabulary! {
    /// How a business wants caller transcripts that score *block* handled
    /// (`businesses.guard_policy`).
    GuardPolicy, "guard policy" {
        /// Answer at once; interrupt when a transcript scores block (the default: no added
        /// latency).
        Monitor = "monitor",
        /// Answer only after the transcript is scored.
        Gate = "gate",
        /// Log and count only.
        Flag = "flag",
    }
}

vocabulary! {
    /// Which side of a prompt experiment a call is on (`calls.variant`, the stream token).
    Arm, "experiment arm" {
        /// The control version.
        Control = "control",
        /// The variant version.
        Variant = "variant",
    }
}

vocabulary! {
    /// What the proxy does with a caller transcript (`call_events.verdict`), from the
    /// sanitizer's score and thresholds. Ordered: `Allow < Flag < Block`.
    #[derive(PartialOrd, Ord)]
    Verdict, "verdict" {
        /// Below the flag threshold: an ordinary turn.
        Allow = "allow",
        /// At or above the flag threshold: logged and counted only.
        Flag = "flag",
        /// At or above the block threshold: the business's policy (`monitor` or `gate`) acts
        /// on it.
        Block = "block",
    }
}

vocabulary! {
    /// Which stage of the sanitizer decided a verdict (`call_events.stage`, the `stage` of
    /// `voxrelay guard scan`).
    Stage, "guard stage" {
        /// Nothing reached the flag threshold (the verdict is allow).
        None = "none",
        /// The rules' score alone reaches the verdict; the classifier's does not.
        Rules = "rules",
        /// The classifier's risk alone reaches the verdict; the rules' score does not.
        Classifier = "classifier",
        /// Each alone reaches the verdict.
        Both = "both",
        /// Neither alone reaches it; together (`1 − (1 − r)(1 − c)`) they do.
        Combined = "combined",
        /// The caller's recent turns scored together reach a higher verdict than this turn
        /// alone (a multi-turn attempt).
        Context = "context",
    }
}

vocabulary! {
    /// What a guard detected (`call_events.kind`).
    GuardKind, "guard kind" {
        /// A caller transcript that tries to change the agent's instructions or role.
        Injection = "injection",
        /// The model repeated the caller.
        Echo = "echo",
        /// A caller line that was the model hearing itself.
        SelfEcho = "self_echo",
        /// The model said its canary or recited its instructions.
        Leak = "leak",
    }
}

vocabulary! {
    /// What the proxy did about it (`call_events.action`).
    GuardAction, "guard action" {
        /// The turn was stopped and answered safely.
        Blocked = "blocked",
        /// Recorded and counted; the call went on.
        Flagged = "flagged",
        /// The caller item was deleted and what it triggered cancelled.
        Dropped = "dropped",
        /// Recorded; nothing done yet.
        Observed = "observed",
        /// The model was told to stop repeating.
        Intervened = "intervened",
        /// The model's answer was stopped and corrected.
        Stopped = "stopped",
        /// The transcript was scored and allowed (a compact row: verdict, score, stage, no text).
        Allowed = "allowed",
        /// Gate policy: the transcript was scored and allowed, and the held turn's response
        /// released (a compact row, like `allowed`).
        Released = "released",
    }
}

impl GuardAction {
    /// Whether this is the compact row of an ordinary turn (allowed, or released by the gate):
    /// verdict, score and stage, no text.
    pub fn is_routine(self) -> bool {
        matches!(self, GuardAction::Allowed | GuardAction::Released)
    }
}

vocabulary! {
    /// One direction of the relay (the `leg` label of the frame metrics).
    RelayLeg, "relay leg" {
        /// Caller audio, Twilio to the model.
        TwilioToUpstream = "twilio_to_upstream",
        /// Model audio, the model to Twilio.
        UpstreamToTwilio = "upstream_to_twilio",
    }
}

vocabulary! {
    /// A guard decision counted per business (the `kind` label of
    /// `voxrelay_guard_decisions_total`).
    GuardDecision, "guard decision" {
        /// An injection attempt recorded, the call went on.
        InjectionFlagged = "injection_flagged",
        /// An injection attempt stopped and answered safely.
        InjectionBlocked = "injection_blocked",
        /// The model's canary or instructions caught in its output.
        Leak = "leak",
    }
}

vocabulary! {
    /// An echo event counted per business (the `kind` label of `voxrelay_echo_events_total`).
    EchoKind, "echo kind" {
        /// The model repeated the caller.
        Parroting = "parroting",
        /// A caller line that was the model hearing itself.
        SelfEcho = "self_echo",
    }
}

vocabulary! {
    /// Which tokens of `response.done` usage are counted (the `kind` label of
    /// `voxrelay_tokens_total`).
    TokenKind, "token kind" {
        /// Every token, input and output.
        Total = "total",
        /// Input tokens served from the prompt cache.
        Cached = "cached",
    }
}

/// A phone number as logs may show it: every digit but the last 4 replaced by `*`, other
/// characters dropped (`+14155550123` → `*******0123`); text with 4 digits or fewer shows none
/// (`****`). Numbers never reach a log line in clear.
pub fn masked_number(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    if digits.len() <= 4 {
        return "****".to_string();
    }
    let hidden = digits.len() - 4;
    std::iter::repeat_n('*', hidden)
        .chain(digits[hidden..].iter().copied())
        .collect()
}

/// An identifier that is not of the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {shown}: expected 1 to {MAX_ID_LEN} ASCII letters, digits, '_', '-' or '.'")]
pub struct InvalidId {
    /// What was being read, e.g. `"CallSid"`.
    pub what: &'static str,
    /// The text given, quoted, cut to 80 characters (it came from outside and may be huge).
    pub shown: String,
}

/// The longest identifier accepted, bytes. Twilio's SIDs are 34 (`CA` + 32 hex digits).
pub const MAX_ID_LEN: usize = 64;

/// Checks an identifier named `what`: 1 to [`MAX_ID_LEN`] of ASCII letters, digits, `_`, `-`,
/// `.`; so an identifier is safe in a log line, a URL, TwiML and a metric label without
/// escaping. The one rule for every id: the newtypes here and the store's ids (business, rule,
/// version) all check with it.
///
/// Errors: [`InvalidId`], with the value quoted and cut short.
pub fn check_id(what: &'static str, text: &str) -> Result<(), InvalidId> {
    let ok = !text.is_empty()
        && text.len() <= MAX_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        return Ok(());
    }
    let mut shown: String = text.chars().take(80).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    Err(InvalidId {
        what,
        shown: format!("{shown:?}"),
    })
}

/// Declares a validated identifier newtype over `String`: `parse` (errors: [`InvalidId`]),
/// `as_str`, `Deref<Target = str>`, `Display`, comparison with strings, serde as the string
/// (deserializing validates).
macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(String);

        impl $name {
            /// Reads one from outside (a webhook, a frame, a row, a path).
            ///
            /// Errors: [`InvalidId`] unless `text` is 1 to [`MAX_ID_LEN`] ASCII letters,
            /// digits, `_`, `-` or `.`.
            pub fn parse(text: &str) -> Result<$name, InvalidId> {
                check_id($what, text)?;
                Ok($name(text.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier! {
    /// Twilio's id of a call (`CA` + 32 hex digits on Twilio; any identifier of the accepted
    /// form here, so test harnesses may use shorter ones). Read from the voice webhook's
    /// `CallSid` and the media stream's `start.callSid`; the key of a call's record.
    CallSid, "CallSid"
}

identifier! {
    /// Twilio's id of one media stream (`MZ` + 32 hex digits on Twilio), from `start.streamSid`;
    /// every message sent back on the stream carries it.
    StreamSid, "StreamSid"
}

identifier! {
    /// A business's id (a tenant): the key of its row and the label of its metrics.
    BusinessId, "business id"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked_to_their_last_four_digits() {
        assert_eq!(masked_number("+14155550123"), "*******0123");
        assert_eq!(masked_number("+1 (415) 555-0123"), "*******0123");
        assert_eq!(masked_number("1234"), "****");
        assert_eq!(masked_number("anonymous"), "****");
    }

    #[test]
    fn identifiers_accept_twilio_sids_and_refuse_what_could_break_a_log_line() {
        let sid = CallSid::parse("CA45397943c1c7a49f7b7713c230107a39").expect("Twilio's form");
        assert_eq!(sid, "CA45397943c1c7a49f7b7713c230107a39");
        assert_eq!(
            serde_json::to_string(&sid).expect("serializes"),
            r#""CA45397943c1c7a49f7b7713c230107a39""#
        );
        assert!(StreamSid::parse("MZ18ad3ab5a668481ce02b83e7395059f0").is_ok());
        assert!(BusinessId::parse("bright-smile_dental.2").is_ok());
        let huge = "C".repeat(100_000);
        for bad in ["", "CA1\nfake log line", "CA\0", "CA 1", "CA1\"", &huge] {
            let e = CallSid::parse(bad).expect_err(bad);
            assert_eq!(e.what, "CallSid");
            assert!(e.shown.len() < 100, "the error never echoes a huge value");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(CallSid::parse(&"C".repeat(MAX_ID_LEN)).is_ok());
        assert!(CallSid::parse(&"C".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(serde_json::from_str::<CallSid>(r#""CA\nX""#).is_err());
    }

    #[test]
    fn every_value_reads_back_from_its_stored_form() {
        for d in Direction::ALL {
            assert_eq!(d.as_str().parse::<Direction>(), Ok(*d));
        }
        for r in EndReason::ALL {
            assert_eq!(r.as_str().parse::<EndReason>(), Ok(*r));
        }
        for p in GuardPolicy::ALL {
            assert_eq!(p.as_str().parse::<GuardPolicy>(), Ok(*p));
        }
        for a in Arm::ALL {
            assert_eq!(a.as_str().parse::<Arm>(), Ok(*a));
        }
        for k in GuardKind::ALL {
            assert_eq!(k.as_str().parse::<GuardKind>(), Ok(*k));
        }
        for a in GuardAction::ALL {
            assert_eq!(a.as_str().parse::<GuardAction>(), Ok(*a));
        }
    }

    #[test]
    fn an_unknown_form_names_what_was_expected() {
        let err = "strict".parse::<GuardPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown guard policy \"strict\": expected one of monitor, gate, flag"
        );
    }

    #[test]
    fn twilio_directions_map_to_ours() {
        assert_eq!(Direction::from_twilio("inbound"), Some(Direction::Inbound));
        assert_eq!(
            Direction::from_twilio("outbound-api"),
            Some(Direction::Outbound)
        );
        assert_eq!(
            Direction::from_twilio("outbound-dial"),
            Some(Direction::Outbound)
        );
        assert_eq!(Direction::from_twilio("trunking-originating"), None);
    }

    #[test]
    fn serde_uses_the_stored_form() {
        let json = serde_json::to_string(&EndReason::TwilioStalled).unwrap();
        assert_eq!(json, "\"twilio_stalled\"");
        let back: EndReason = serde_json::from_str(&json).unwrap();
        assert_eq!(back, EndReason::TwilioStalled);
        assert!(serde_json::from_str::<Arm>("\"both\"").is_err());
    }
}
