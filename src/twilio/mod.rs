//! Twilio wire formats: Media Streams messages, X-Twilio-Signature, TwiML, the call token, and
//! the REST API client.
//!
//! No call logic lives here. Protocol facts: `shared/protocol/twilio.md` and
//! <https://www.twilio.com/docs/voice/media-streams/websocket-messages>.

pub mod media;
pub mod rest;
pub mod signature;
pub mod token;
pub mod twiml;
