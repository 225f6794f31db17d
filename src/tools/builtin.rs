//! The call control every business has unless it switches it off: tools the proxy carries out
//! itself rather than POSTing anywhere.
//!
//! - `end_call` (`businesses.end_call_enabled`): the model says goodbye and calls it. The
//!   proxy answers the call at once (so the model does not wait on it), lets the response's
//!   audio play to its last mark, then ends the call ([`crate::domain::EndReason::AgentHangup`]).
//!   A caller who starts speaking before the goodbye has played cancels the hang-up, and the
//!   conversation goes on.
//! - `transfer_call` (`businesses.transfer_enabled`, offered only when the business has
//!   transfer targets): the model says a short handoff line and calls it with a target's name
//!   (the schema's `enum` is the business's target names). The proxy answers at once, lets the
//!   handoff line play to its last mark (the caller speaking does not stop a transfer), then
//!   redirects the live call to `<Dial>` ([`crate::call::transfer`]).

use serde_json::{Value, json};

/// A built-in tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// End the call once the goodbye has played.
    EndCall,
    /// Put the caller through to a named transfer target once the handoff line has played.
    TransferCall,
}

/// What the model is told when it calls `end_call`: the call ends after its goodbye.
pub const END_CALL_OUTPUT: &str = r#"{"ok":true,"message":"The call ends once your goodbye has played. Say nothing more unless the caller speaks."}"#;

/// What the model is told when it calls `transfer_call` with a target the business has: the
/// call is put through after its handoff line.
pub const TRANSFER_OUTPUT: &str = r#"{"ok":true,"message":"The caller is put through once your handoff line has played. Say nothing more."}"#;

/// What the model is told when the transfer could not be started (Twilio refused the redirect,
/// or no REST credentials): the call goes on with it.
pub const TRANSFER_FAILED: &str = "The transfer could not be made: the phone system did not \
     take it. Tell the caller you could not put them through right now, and offer to take a \
     message or help them yourself.";

/// What the model is told when the caller spoke during the goodbye: the call goes on.
pub const HANGUP_CANCELLED: &str = "The caller spoke before the goodbye finished, so the call \
     did not end. Listen and answer them; call end_call again when they are done.";

impl Builtin {
    /// The name the model calls it by.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::EndCall => "end_call",
            Builtin::TransferCall => "transfer_call",
        }
    }

    /// Every built-in, for name checks.
    pub const ALL: [Builtin; 2] = [Builtin::EndCall, Builtin::TransferCall];

    /// Its `session.tools` entry; `targets` are the transfer targets' names (the `enum` of
    /// `transfer_call`'s `target`).
    pub fn definition(self, targets: &[&str]) -> Value {
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
            Builtin::TransferCall => json!({
                "type": "function",
                "name": "transfer_call",
                "description": "Put the caller through to a person. First tell the caller, in \
                    one short sentence, who you are putting them through to; then call this \
                    in the same turn. Use it when the caller asks for a person or needs \
                    someone you cannot replace (an emergency, a complaint).",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "target": {
                            "type": "string",
                            "enum": targets,
                            "description": "Who to put the caller through to."
                        },
                        "reason": {
                            "type": "string",
                            "description": "Why, in a few words."
                        }
                    },
                    "required": ["target"]
                },
            }),
        }
    }

    /// Whether `name` is a built-in's (reserved: a business tool cannot take it).
    pub fn is_reserved(name: &str) -> bool {
        Builtin::ALL.iter().any(|b| b.name() == name)
    }
}
