//! The simulated world: a Realtime API upstream and a Twilio caller, so that everything runs with no
//! network access and no API keys (tests, `voxrelay demo`, the load generator).

pub mod caller;
pub mod demo;
pub mod upstream;
pub mod vad;
pub mod world;
