//! The per-call session: one task per call owns all of its state.
//!
//! - [`setup`]: prompts and session configuration built from (business, direction), pre-warm;
//! - [`registry`]: calls between the webhook and their media stream, keyed by CallSid;
//! - [`state`]: the state machine (greeting, upgrade, response tracking, barge-in), free of I/O;
//! - [`guards`]: the call's guard decisions (sanitizer, echo monitor, leak guard) and policy;
//! - [`playback`]: what the caller heard (marks, playback clock, truncation point);
//! - [`session`]: the task that relays audio and carries out the state machine's commands.

use std::fmt;
use std::str::FromStr;

/// Who placed the call.
///
/// Twilio's `Direction` webhook field is `inbound` for calls to our numbers, and `outbound-api`
/// (REST-created) or `outbound-dial` (a `<Dial>` leg) for calls the business places
/// (source: <https://www.twilio.com/docs/voice/api/call-resource>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The customer called the business.
    Inbound,
    /// The business calls the customer.
    Outbound,
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

    /// `"inbound"` or `"outbound"`, as stored in the database and carried in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was neither `inbound` nor `outbound`.
#[derive(Debug, thiserror::Error)]
#[error("unknown direction {0:?}: expected \"inbound\" or \"outbound\"")]
pub struct UnknownDirection(pub String);

impl FromStr for Direction {
    type Err = UnknownDirection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            other => Err(UnknownDirection(other.to_string())),
        }
    }
}

pub mod guards;
pub mod playback;
pub mod registry;
pub mod session;
pub mod setup;
pub mod state;
