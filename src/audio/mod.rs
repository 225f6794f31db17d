//! Audio helpers: G.711 mu-law, WAV input and output, resampling.
//!
//! The relay itself never decodes audio (Twilio's base64 mu-law payloads pass through unchanged);
//! these helpers serve the simulators, the demo and tests.

pub mod mulaw;
pub mod wav;
