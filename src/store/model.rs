//! The rows the store reads and writes, as plain structs.
//!
//! Times are milliseconds since the Unix epoch (UTC) as `i64`, the way they are stored.

use crate::domain::{Direction, GuardAction, GuardKind, Stage, Verdict};

/// Language given to a business created without one (BCP 47 tag).
pub const DEFAULT_LANGUAGE: &str = "en";

/// Realtime API voice given to a business created without one.
pub const DEFAULT_VOICE: &str = "marin";

/// Guard policy given to a business created without one: score caller transcripts while the
/// model answers, and correct the model when one scores block.
pub const DEFAULT_GUARD_POLICY: &str = crate::domain::GuardPolicy::Monitor.as_str();

/// A business (tenant): who answers the calls to its numbers, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Business {
    /// Stable id, e.g. `"biz_3f2a9c41d0e7"` when generated.
    pub id: String,
    /// Display name, never empty.
    pub name: String,
    /// Language the model speaks, a BCP 47 tag such as `"en"`.
    pub language: String,
    /// Realtime API voice name, e.g. `"marin"`.
    pub voice: String,
    /// The business layer of the prompt for inbound calls (may be empty).
    pub ai_prompt: String,
    /// The business layer of the prompt for outbound calls (may be empty).
    pub outbound_ai_prompt: String,
    /// How the model should open the call (may be empty).
    pub greeting_instructions: String,
    /// What the inline guards do when a caller transcript scores block: `"monitor"` (the model
    /// answers as the audio arrives; a blocked turn is cancelled and corrected), `"gate"` (the
    /// model answers only after the transcript is scored) or `"flag"` (log and count only).
    pub guard_policy: String,
    /// Opening hours as free text, e.g. `"Mon-Fri 8am-6pm"`: the `business.hours` template
    /// variable. Empty when not set.
    pub hours: String,
    /// Sections every prompt version of this business must have (see
    /// [`validate`](crate::prompt::validate) for what counts as a section); empty: none.
    pub required_sections: Vec<String>,
    /// When the row was created, epoch ms.
    pub created_at_ms: i64,
    /// When the row was last changed, epoch ms.
    pub updated_at_ms: i64,
    /// Calls the business takes at once; `None`: only the instance's `limits.max_calls`.
    pub max_concurrent_calls: Option<i64>,
    /// The business's longest call, seconds; `None`: `limits.max_call_duration_s`.
    pub max_call_duration_s: Option<i64>,
    /// Where its calls go when no model can take them ([`crate::call::fallback`]): an E.164
    /// number to put the caller through to, `"apology"` (a spoken apology and a hang-up), or
    /// `None`: the instance's `fallback.number`.
    pub fallback: Option<String>,
    /// The model may end the call with the built-in `end_call` tool (on by default).
    pub end_call_enabled: bool,
    /// The model may transfer the call with the built-in `transfer_call` tool (on by default;
    /// offered only when [`Business::transfer_targets`] has someone to transfer to).
    pub transfer_enabled: bool,
    /// The people the model may put a caller through to (`transfer_call`), by name; stored as
    /// a JSON array in `businesses.transfer_targets`. Empty: no transfers.
    pub transfer_targets: Vec<TransferTarget>,
    /// The business's time zone, an IANA name (`America/New_York`); its calling hours are in
    /// it. Default `UTC`.
    pub time_zone: String,
    /// When it may place calls, in its time zone: `08:00-21:00` (every day, the default) or
    /// day ranges such as `Mon-Fri 09:00-18:00, Sat 10:00-13:00`
    /// ([`crate::outbound::CallingHours`]).
    pub calling_hours: String,
    /// Outbound calls it may place a minute (1 to 600; default 10).
    pub outbound_per_minute: i64,
    /// What the model says on an answering machine, a template that may use `call.NAME`
    /// variables; empty: a message built from the business's name and the call's reason.
    pub voicemail_message: String,
}

/// Someone a business's calls may be transferred to: a name the model chooses by ("front
/// desk", "emergency line") and the E.164 number Twilio dials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTarget {
    /// 1 to 40 characters: letters, digits, spaces, `-`, `_`, `'`; unique per business
    /// (case-insensitive). The model is given the names as an enum.
    pub name: String,
    /// The number dialled, normalised to E.164 when stored.
    pub number: String,
}

/// What a transfer's `<Dial action>` callback reported (`call_transfers`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TransferReport {
    /// Twilio CallSid of the caller's call.
    pub call_sid: String,
    /// When the callback arrived, epoch ms.
    pub at_ms: i64,
    /// The transfer target's name.
    pub target: String,
    /// How the dial ended.
    pub outcome: crate::domain::TransferOutcome,
    /// `DialCallDuration`, seconds (when the person answered).
    pub duration_s: Option<i64>,
}

/// A business to create with [`Store::add_business`](super::Store::add_business).
///
/// [`NewBusiness::named`] fills in the defaults (language `"en"`, voice `"marin"`, empty prompts,
/// guard policy `"monitor"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBusiness {
    /// Id to use; `None` generates `"biz_"` + 12 hex digits. A given id must be 1 to 64 ASCII
    /// letters, digits, `_`, `-` or `.`.
    pub id: Option<String>,
    /// Display name; must not be empty or only whitespace.
    pub name: String,
    /// Language the model speaks, a BCP 47 tag such as `"en"`; must not be empty.
    pub language: String,
    /// Realtime API voice name; must not be empty.
    pub voice: String,
    /// The business layer of the prompt for inbound calls.
    pub ai_prompt: String,
    /// The business layer of the prompt for outbound calls.
    pub outbound_ai_prompt: String,
    /// How the model should open the call.
    pub greeting_instructions: String,
    /// Guard policy: `"monitor"`, `"gate"` or `"flag"` (see [`Business::guard_policy`]).
    pub guard_policy: String,
    /// Opening hours as free text (may be empty).
    pub hours: String,
    /// Sections every prompt version must have; each name non-empty and on one line.
    pub required_sections: Vec<String>,
}

impl NewBusiness {
    /// A business with this name, a generated id, language `"en"`, voice `"marin"`, empty
    /// prompts and guard policy `"monitor"`.
    pub fn named(name: impl Into<String>) -> NewBusiness {
        NewBusiness {
            id: None,
            name: name.into(),
            language: DEFAULT_LANGUAGE.to_string(),
            voice: DEFAULT_VOICE.to_string(),
            ai_prompt: String::new(),
            outbound_ai_prompt: String::new(),
            greeting_instructions: String::new(),
            guard_policy: DEFAULT_GUARD_POLICY.to_string(),
            hours: String::new(),
            required_sections: Vec::new(),
        }
    }
}

/// Changes to a business for [`Store::update_business`](super::Store::update_business): each
/// `Some` field replaces the stored value, each `None` keeps it. The id cannot change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessUpdate {
    /// Display name; must not be empty.
    pub name: Option<String>,
    /// BCP 47 language tag; must not be empty.
    pub language: Option<String>,
    /// Realtime API voice; must not be empty.
    pub voice: Option<String>,
    /// Business layer of the inbound prompt (used while no prompt version is in production).
    pub ai_prompt: Option<String>,
    /// Business layer of the outbound prompt.
    pub outbound_ai_prompt: Option<String>,
    /// How the model opens the call.
    pub greeting_instructions: Option<String>,
    /// `monitor`, `gate` or `flag`.
    pub guard_policy: Option<String>,
    /// Opening hours as free text (`business.hours`); `""` clears them.
    pub hours: Option<String>,
    /// Sections every prompt version must have; `[]` requires none.
    pub required_sections: Option<Vec<String>>,
    /// Calls the business takes at once, at least 1; `0` removes the business's own limit.
    pub max_concurrent_calls: Option<i64>,
    /// The business's longest call, seconds, at least 1; `0` removes it (the instance's
    /// `limits.max_call_duration_s` applies).
    pub max_call_duration_s: Option<i64>,
    /// Where calls go when no model can take them: an E.164 number, `"apology"`, or `""` for
    /// the instance's `fallback.number`.
    pub fallback: Option<String>,
    /// Whether the model may end calls with the built-in `end_call` tool.
    pub end_call_enabled: Option<bool>,
    /// Whether the model may transfer calls with the built-in `transfer_call` tool.
    pub transfer_enabled: Option<bool>,
    /// The people calls may be transferred to (replaces the list; `[]` removes them all).
    pub transfer_targets: Option<Vec<TransferTarget>>,
    /// The business's time zone, an IANA name (`America/New_York`).
    pub time_zone: Option<String>,
    /// When it may place calls: `08:00-21:00`, or `Mon-Fri 09:00-18:00, Sat 10:00-13:00`.
    pub calling_hours: Option<String>,
    /// Outbound calls it may place a minute, 1 to 600.
    pub outbound_per_minute: Option<i64>,
    /// What the model says on an answering machine (a template; `""`: the default message).
    pub voicemail_message: Option<String>,
}

impl BusinessUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == BusinessUpdate::default()
    }
}

/// A call to record: by the webhook ([`Store::open_call`](super::Store::open_call)), by its
/// media stream's claim ([`Store::claim_stream`](super::Store::claim_stream)) or directly
/// ([`Store::insert_call`](super::Store::insert_call)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// Twilio CallSid (`CA` + 32 hex digits); must not be empty.
    pub call_sid: String,
    /// Twilio StreamSid (`MZ` + 32 hex digits), if known yet.
    pub stream_sid: Option<String>,
    /// The business the call belongs to; must not be empty.
    pub business_id: String,
    /// Who placed the call.
    pub direction: Direction,
    /// Caller, as Twilio sent it (usually E.164; may be e.g. `"anonymous"`).
    pub from_number: String,
    /// Called number, as Twilio sent it.
    pub to_number: String,
    /// When the call reached us (the webhook, or the media stream when the webhook was not
    /// seen), epoch ms; must not be negative.
    pub started_at_ms: i64,
    /// The instance holding the call (`lifecycle.instance_id`); empty: none recorded.
    pub instance_id: String,
}

/// How a call ended, for [`Store::finish_call`](super::Store::finish_call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// When the call ended, epoch ms; must not be negative.
    pub ended_at_ms: i64,
    /// Greeting latency in ms (stream start to the first model audio frame sent to Twilio);
    /// `None` if the model never spoke. Must not be negative.
    pub greeting_latency_ms: Option<i64>,
    /// Why the call ended, e.g. `"twilio_stop"` or `"upstream_error"`.
    pub end_reason: Option<String>,
    /// What the caller experienced, counted over the whole call.
    pub summary: CallSummary,
}

/// A call's summary, written with its end: what the caller experienced, and what it cost.
/// Latencies are whole milliseconds, counts are per call; none may be negative.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CallSummary {
    /// Caller turns (`input_audio_buffer.speech_stopped`).
    pub turns: i64,
    /// Median turn latency (end of caller speech to the answer's first audio sent to Twilio),
    /// ms; `None` when no turn was answered.
    pub turn_p50_ms: Option<i64>,
    /// Slowest turn latency, ms; `None` when no turn was answered.
    pub turn_max_ms: Option<i64>,
    /// Barge-ins (the caller interrupted the model; Twilio `clear` sent).
    pub barge_ins: i64,
    /// Audio frames dropped because a leg's queue was full, both directions.
    pub frames_dropped: i64,
    /// Upstream `error` events that are not benign (see
    /// [`crate::telemetry::outcome::CallOutcome`]).
    pub upstream_errors: i64,
    /// Tokens reported in `response.done` usage, summed.
    pub total_tokens: i64,
    /// Echo events: model answers that parroted the caller, and caller lines that were the
    /// model hearing itself.
    pub echo_events: i64,
    /// Caller transcripts the sanitizer scored block.
    pub guard_blocks: i64,
}

/// A stored call, as read by [`Store::call`](super::Store::call).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallRecord {
    /// Twilio CallSid.
    pub call_sid: String,
    /// Twilio StreamSid, if it was known when the call was recorded.
    pub stream_sid: Option<String>,
    /// The business the call belongs to.
    pub business_id: String,
    /// Who placed the call.
    pub direction: Direction,
    /// Caller, as Twilio sent it.
    pub from_number: String,
    /// Called number, as Twilio sent it.
    pub to_number: String,
    /// When the media stream started, epoch ms.
    pub started_at_ms: i64,
    /// When the call ended, epoch ms; `None` while it is live (or if it was never finished).
    pub ended_at_ms: Option<i64>,
    /// Greeting latency in ms; `None` until finished, or if the model never spoke.
    pub greeting_latency_ms: Option<i64>,
    /// Why the call ended; `None` until finished.
    pub end_reason: Option<String>,
    /// The call's summary; `None` until finished (and for calls recorded before summaries).
    pub summary: Option<CallSummary>,
    /// The prompt version the call ran; `None` when it ran the business's own prompt text.
    pub prompt_version_id: Option<String>,
    /// The running experiment that picked that version, if any.
    pub experiment_id: Option<String>,
    /// The experiment arm, `"control"` or `"variant"`, if any.
    pub variant: Option<String>,
    /// The instance that held the call, if recorded.
    pub instance_id: Option<String>,
}

/// A finished call of an experiment, as [`Store::experiment_calls`](super::Store::experiment_calls)
/// reads it for the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentCall {
    /// Twilio CallSid.
    pub call_sid: String,
    /// `"control"` or `"variant"`.
    pub variant: String,
    /// Greeting latency, ms; `None` if the model never spoke.
    pub greeting_latency_ms: Option<i64>,
    /// Caller turns.
    pub turns: i64,
    /// Echo events.
    pub echo_events: i64,
    /// Guard blocks.
    pub guard_blocks: i64,
}

/// A guard decision to record with [`Store::insert_event`](super::Store::insert_event).
#[derive(Debug, Clone, PartialEq)]
pub struct NewCallEvent {
    /// Twilio CallSid of the call the decision was made in; must not be empty.
    pub call_sid: String,
    /// The business the call belongs to; must not be empty.
    pub business_id: String,
    /// When the decision was made, epoch ms; must not be negative.
    pub at_ms: i64,
    /// What was detected (stored as [`GuardKind::as_str`]).
    pub kind: GuardKind,
    /// The guard's score (a sanitizer risk or a similarity, usually 0 to 1), if it has one; must
    /// be finite.
    pub score: Option<f64>,
    /// Ids of the rules that fired, in order; each must be non-empty and free of commas.
    pub rules: Vec<String>,
    /// What the proxy did (stored as [`GuardAction::as_str`]).
    pub action: GuardAction,
    /// The transcript or a description. Redacted (card numbers, SSNs, e-mail addresses and phone
    /// numbers replaced) before it is written. Empty for an allowed turn or a gate release
    /// (those rows carry the verdict, score and stage only).
    pub detail: String,
    /// The sanitizer's verdict, for an injection decision; `None` for the other kinds.
    pub verdict: Option<Verdict>,
    /// The sanitizer stage that decided the verdict, for an injection decision.
    pub stage: Option<Stage>,
}

/// A stored guard decision, as read by [`Store::call_events`](super::Store::call_events).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallEvent {
    /// Generated id: `"evt_"` + 32 hex digits.
    pub id: String,
    /// Twilio CallSid.
    pub call_sid: String,
    /// The business the call belongs to.
    pub business_id: String,
    /// When the decision was made, epoch ms.
    pub at_ms: i64,
    /// What was detected.
    pub kind: GuardKind,
    /// The guard's score, if it had one.
    pub score: Option<f64>,
    /// Ids of the rules that fired, in the order given.
    pub rules: Vec<String>,
    /// What the proxy did.
    pub action: GuardAction,
    /// The redacted transcript or description; empty for an allowed turn or a gate release.
    pub detail: String,
    /// The sanitizer's verdict, for an injection decision (`None` for other kinds and for rows
    /// written before schema version 11).
    pub verdict: Option<Verdict>,
    /// The sanitizer stage that decided it, likewise.
    pub stage: Option<Stage>,
}

/// A sanitizer rule a business adds, or overrides by id, on top of the configured rule set.
/// Written with [`Store::upsert_guard_rule`](super::Store::upsert_guard_rule).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BusinessRule {
    /// Rule id, unique per business (a configured rule with the same id is overridden): 1 to 64
    /// ASCII letters, digits, `_`, `-` or `.`.
    pub rule_id: String,
    /// Attack category, e.g. `"instruction_override"`; must not be empty.
    pub category: String,
    /// Regular expression (`regex` crate syntax, the rule file's `{{macros}}` allowed) matched
    /// against the normalised transcript; checked by the sanitizer before it is stored.
    pub pattern: String,
    /// How much a match adds to the risk score, 0 to 1.
    pub weight: f64,
    /// Whether the rule is applied; a disabled rule with a configured rule's id switches that
    /// rule off for the business.
    pub enabled: bool,
}

impl From<BusinessRule> for crate::guard::sanitizer::RuleOverride {
    /// A stored business rule as the sanitizer applies it (weight narrowed to `f32`).
    fn from(rule: BusinessRule) -> Self {
        crate::guard::sanitizer::RuleOverride {
            id: rule.rule_id,
            category: rule.category,
            pattern: rule.pattern,
            weight: rule.weight as f32,
            enabled: rule.enabled,
        }
    }
}

/// A tool of a business (`business_tools`), as stored and as the admin API shows it. Checked
/// by [`crate::ops::tools::set`] before it is written; the secret itself is never stored, only
/// the name of the environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BusinessTool {
    /// The name the model calls it by (`^[A-Za-z0-9_-]{1,64}$`, the Realtime API's rule for
    /// function names); for an MCP tool, its `server_label`. Unique per business; `end_call`
    /// and `transfer_call` are the built-ins' and cannot be taken.
    pub name: String,
    /// `function` (called by the proxy) or `mcp` (passed through).
    pub kind: crate::domain::ToolKind,
    /// What the tool does, for the model (may be empty for an MCP tool).
    pub description: String,
    /// The JSON Schema of a function's arguments (an object schema); `{}`-like for MCP.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// A function's endpoint (`https://`, or `http://` to a loopback address), or an MCP
    /// server's URL.
    pub endpoint: String,
    /// How long the proxy waits for a function's endpoint, ms (1 to 30,000).
    pub timeout_ms: i64,
    /// The environment variable holding the signing secret (a function; required) or the
    /// bearer token (MCP; optional, empty for none).
    pub secret_env: String,
    /// An MCP tool's `allowed_tools`; empty: all of the server's tools.
    pub allowed_tools: Vec<String>,
    /// When it was last written, epoch ms.
    pub updated_at_ms: i64,
}

/// A tool call to record with [`Store::insert_tool_call`](super::Store::insert_tool_call).
#[derive(Debug, Clone, PartialEq)]
pub struct NewToolCall {
    /// Twilio CallSid of the call that made it.
    pub call_sid: String,
    /// The call's business.
    pub business_id: String,
    /// When the model's call arrived, epoch ms.
    pub at_ms: i64,
    /// The tool's name.
    pub tool: String,
    /// How it ended.
    pub status: crate::domain::ToolStatus,
    /// From the model's call to its output, ms.
    pub latency_ms: f64,
    /// Hold audio the caller heard meanwhile, ms.
    pub held_ms: u64,
    /// The arguments as JSON text; redacted before they are written.
    pub arguments: String,
}

/// A stored tool call, as [`Store::tool_calls`](super::Store::tool_calls) reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ToolCallRecord {
    /// Generated id: `"tool_"` + 32 hex digits.
    pub id: String,
    /// Twilio CallSid.
    pub call_sid: String,
    /// The call's business.
    pub business_id: String,
    /// When the model's call arrived, epoch ms.
    pub at_ms: i64,
    /// The tool's name.
    pub tool: String,
    /// How it ended.
    pub status: crate::domain::ToolStatus,
    /// From the model's call to its output, ms.
    pub latency_ms: f64,
    /// Hold audio the caller heard meanwhile, ms.
    pub held_ms: i64,
    /// The redacted arguments (JSON text).
    pub arguments: String,
}

/// What one of Twilio's status callbacks reported of a call (`call_statuses`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CallStatusReport {
    /// Twilio CallSid.
    pub call_sid: String,
    /// When the callback arrived, epoch ms.
    pub at_ms: i64,
    /// `CallStatus`.
    pub status: crate::domain::CallStatus,
    /// `CallDuration`, seconds (on `completed`).
    pub duration_s: Option<i64>,
    /// `AnsweredBy` (answering machine detection: `human`, `machine_start`, …), when given.
    pub answered_by: Option<String>,
}

/// A call the business placed (`outbound_calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    /// Twilio CallSid (`pending:…` while Twilio is being asked).
    pub call_sid: String,
    /// The business that placed it.
    pub business_id: String,
    /// When it was placed, epoch ms.
    pub placed_at_ms: i64,
    /// The number called, E.164.
    pub to_number: String,
    /// The call's variables (`call.NAME`).
    pub variables: std::collections::BTreeMap<String, String>,
    /// Placed outside the calling hours by an admin's choice.
    pub forced: bool,
    /// Twilio's `AnsweredBy` from the webhook (answering machine detection), once known.
    pub answered_by: Option<String>,
}
