//! Twilio wire formats: Media Streams messages, X-Twilio-Signature, TwiML, and the call token.
//!
//! No call logic lives here. Protocol facts: `shared/protocol/twilio.md` and
//! <https://www.twilio.com/docs/voice/media-streams/websocket-messages>.

pub mod media;
pub mod signature;
pub mod token;
pub mod twiml;
