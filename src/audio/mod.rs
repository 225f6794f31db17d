//! G.711 mu-law: frame sizes and the codec.
//!
//! The relay itself never decodes audio (Twilio's base64 mu-law payloads pass through
//! unchanged); the constants size its playback clock, and the codec serves the simulators in
//! `voxrelay-sim` (which also hold WAV reading and resampling).

pub mod mulaw;
