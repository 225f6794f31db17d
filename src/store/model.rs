//! The rows the store reads and writes, as plain structs.
//!
//! Times are milliseconds since the Unix epoch (UTC) as `i64`, the way they are stored.

use crate::call::Direction;

/// Language given to a business created without one (BCP 47 tag).
pub const DEFAULT_LANGUAGE: &str = "en";

/// Realtime API voice given to a business created without one.
pub const DEFAULT_VOICE: &str = "marin";

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
    /// When the row was created, epoch ms.
    pub created_at_ms: i64,
    /// When the row was last changed, epoch ms.
    pub updated_at_ms: i64,
}

/// A business to create with [`Store::add_business`](super::Store::add_business).
///
/// [`NewBusiness::named`] fills in the defaults (language `"en"`, voice `"marin"`, empty prompts).
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
}

impl NewBusiness {
    /// A business with this name, a generated id, language `"en"`, voice `"marin"` and empty
    /// prompts.
    pub fn named(name: impl Into<String>) -> NewBusiness {
        NewBusiness {
            id: None,
            name: name.into(),
            language: DEFAULT_LANGUAGE.to_string(),
            voice: DEFAULT_VOICE.to_string(),
            ai_prompt: String::new(),
            outbound_ai_prompt: String::new(),
            greeting_instructions: String::new(),
        }
    }
}

/// A call to record when its media stream starts, for
/// [`Store::insert_call`](super::Store::insert_call).
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
    /// When the media stream started, epoch ms; must not be negative.
    pub started_at_ms: i64,
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
}
