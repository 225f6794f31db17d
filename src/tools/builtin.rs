//! The call control every business has unless it switches it off: tools the proxy carries out
//! itself rather than POSTing anywhere.
//!
//! - `end_call` (`businesses.end_call_enabled`): the model says goodbye and calls it. The
//!   proxy answers the call at once (so the model does not wait on it), lets the response's
//!   audio play to its last mark, then ends the call ([`crate::domain::EndReason::AgentHangup`]).
//!   A caller who starts speaking before the goodbye has played cancels the hang-up, and the
//!   conversation goes on.

use serde_json::{Value, json};

/// A built-in tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// End the call once the goodbye has played.
    EndCall,
}

/// What the model is told when it calls `end_call`: the call ends after its goodbye.
pub const END_CALL_OUTPUT: &str = r#"{"ok":true,"message":"The call ends once your goodbye has played. Say nothing more unless the caller speaks."}"#;

/// What the model is told when the caller spoke during the goodbye: the call goes on.
pub const HANGUP_CANCELLED: &str = "The caller spoke before the goodbye finished, so the call \
     did not end. Listen and answer them; call end_call again when they are done.";

impl Builtin {
    /// The name the model calls it by.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::EndCall => "end_call",
        }
    }

    /// Every built-in, for name checks.
    pub const ALL: [Builtin; 1] = [Builtin::EndCall];

    /// Its `session.tools` entry.
    pub fn definition(self) -> Value {
        match self {
            Builtin::EndCall => json!({
                "type": "function",
                "name": "end_call",
                "description": "End the phone call. First say a short goodbye in the same turn; \
                    call this only when the caller has nothing more to ask. The line is closed \
                    after your goodbye has played.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "reason": {
                            "type": "string",
                            "description": "Why the call ends, in a few words."
                        }
                    }
                },
            }),
        }
    }

    /// Whether `name` is a built-in's (reserved: a business tool cannot take it), including
    /// `transfer_call`, which the transfer feature reserves.
    pub fn is_reserved(name: &str) -> bool {
        Builtin::ALL.iter().any(|b| b.name() == name) || name == "transfer_call"
    }
}
