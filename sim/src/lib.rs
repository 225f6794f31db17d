//! voxrelay's simulated world: a Realtime API upstream and a Twilio caller, so that everything
//! runs with no network access and no API keys (the tests, `voxrelay demo`, the load
//! generator). Kept out of the production library: the proxy ships no test harness.
//!
//! - [`upstream`]: the simulated Realtime API (GA and beta event names, VAD, faults, echo mode);
//! - [`vad`]: its energy VAD;
//! - [`impaired`]: a TCP relay that impairs a link as a real network would (delay, jitter,
//!   stalls);
//! - [`isolation`]: the check that every upstream session carries only its own business;
//! - [`caller`]: the simulated Twilio (webhook, Media Streams, marks);
//! - [`twilio_rest`]: the simulated Twilio REST API (a live call's redirect);
//! - [`prism`]: Stoplight Prism validating requests against Twilio's OpenAPI description;
//! - [`tool_endpoint`]: a business's tool endpoint (signature checked, scripted answers);
//! - [`playback`]: Twilio's playback buffer, for the caller and the load generator;
//! - [`world`]: a proxy, an upstream and a database for a test or the demo;
//! - [`demo`]: the demo call and its timeline;
//! - [`wav`]: WAV reading and writing, resampling to 8 kHz mu-law.

pub mod caller;
pub mod demo;
pub mod impaired;
pub mod isolation;
pub mod playback;
pub mod prism;
pub mod tool_endpoint;
pub mod twilio_rest;
pub mod upstream;
pub mod vad;
pub mod wav;
pub mod world;
