//! The per-call session: one task per call owns all of its state.
//!
//! - [`setup`]: prompts and session configuration built from (business, direction), pre-warm;
//! - [`registry`]: calls between the webhook and their media stream, keyed by CallSid;
//! - [`state`]: the state machine (greeting, upgrade, response tracking, barge-in), free of I/O;
//! - [`guards`]: the call's guard decisions (sanitizer, echo monitor, leak guard) and policy;
//! - [`leg`]: the writing half of one socket: direct writes, a bounded queue under backpressure;
//! - [`playback`]: what the caller heard (marks, playback clock, truncation point);
//! - [`link_delay`]: the Twilio link's one-way delay, from WebSocket pings, for that clock;
//! - [`conversation`]: what was said, as text, to restore it on a new upstream session;
//! - [`reconnect`]: a lost upstream replaced mid-call (dialer, backoff, held caller audio);
//! - [`fallback`]: where a call goes when no model can take it (the business's line, or an
//!   apology);
//! - [`transfer`]: `transfer_call` carried through Twilio (`<Dial action>`) and the caller's
//!   return when nobody answers;
//! - [`keypad`]: the caller's keypad (DTMF) entries, for the model and never the logs;
//! - [`hold_audio`]: the "one moment, please" clip played during a long reconnect;
//! - [`session`]: the task that relays audio and carries out the state machine's commands;
//! - [`records`]: the one ordered writer of call records, retried while the database is away;
//! - [`lifecycle`]: the drain (SIGTERM) and the call limits.

pub mod cache;
pub mod conversation;
pub mod fallback;
pub mod guards;
pub mod hold_audio;
pub mod keypad;
pub mod leg;
pub mod lifecycle;
pub mod link_delay;
pub mod playback;
pub mod reconnect;
pub mod records;
pub mod registry;
pub mod service;
pub mod session;
pub mod setup;
pub mod state;
pub mod tool_calls;
pub mod transfer;
