//! voxrelay: an inline proxy between Twilio Media Streams and realtime speech models.
//!
//! Twilio streams a call's audio over a Media Streams WebSocket; voxrelay relays it to the OpenAI
//! Realtime API (GA interface; Azure OpenAI speaks the same protocol) and relays the model's audio
//! back. On the way it builds each call's instructions from isolated layers, greets fast with a
//! compact prompt and upgrades to the full one, and handles barge-in.
//!
//! Module map (see `ARCHITECTURE.md` in the repository for the shape and the properties it keeps):
//! - [`config`]: file + environment configuration, secrets only from the environment;
//! - [`http`]: axum routes (Twilio webhook, media WebSocket);
//! - [`twilio`]: Media Streams wire format, X-Twilio-Signature, TwiML, call token;
//! - [`realtime`]: Realtime API wire format and upstream connection;
//! - [`call`]: the per-call session (state machine, playback and mark tracking, response tracking);
//! - [`audio`]: G.711 mu-law, WAV reading, resampling;
//! - [`prompt`]: layers, compact builder, token counts;
//! - [`store`]: sqlx repositories and migrations (SQLite and PostgreSQL);
//! - [`telemetry`]: tracing setup and the per-call timeline;
//! - [`sim`]: simulated realtime upstream and simulated Twilio caller (tests, demo, load test).

pub mod audio;
pub mod call;
pub mod config;
pub mod domain;
pub mod guard;
pub mod http;
pub mod ops;
pub mod prompt;
pub mod realtime;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod twilio;

/// The crate version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the process-wide rustls crypto provider (ring). Must run before the first TLS user:
/// with no provider installed, `reqwest` (built with `rustls-no-provider`) panics and
/// tokio-tungstenite cannot pick one. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
