//! voxrelay: an inline proxy between Twilio Media Streams and realtime speech models.
//!
//! Twilio streams a call's audio over a Media Streams WebSocket; voxrelay relays it to the OpenAI
//! Realtime API (GA interface; Azure OpenAI speaks the same protocol) and relays the model's audio
//! back. On the way it builds each call's instructions from isolated layers, greets fast with a
//! compact prompt and upgrades to the full one, and handles barge-in.
//!
//! Module map (the README's "Layout" has one line per file; `ARCHITECTURE.md` in `shared/`
//! the shape and the properties it keeps):
//! - [`config`]: file + environment configuration, secrets only from the environment;
//! - [`bootstrap`]: the store, prompt library and sanitizer every entry point starts from;
//! - [`domain`]: the call vocabulary (direction, end reason, guard policy, kind and action,
//!   experiment arm), with their stored and wire forms;
//! - [`http`]: axum adapters (Twilio webhook, media WebSocket, admin API, metrics, dashboard);
//! - [`call`]: the call service (prepare, admit, run), session, legs, state machine, playback,
//!   guards' reactions, caches and registry;
//! - [`ops`]: operator use cases shared by the CLI and the admin API;
//! - [`twilio`]: Media Streams wire format, X-Twilio-Signature, TwiML, call token;
//! - [`realtime`]: Realtime API wire format and upstream connection;
//! - [`audio`]: G.711 mu-law;
//! - [`prompt`]: layers, compact builder, templates, validation, experiments, the resolver;
//! - [`guard`]: sanitizer, echo monitor, leak guard, PII redaction;
//! - [`store`]: sqlx repositories and migrations (SQLite and PostgreSQL);
//! - [`telemetry`]: tracing, metrics, per-call timeline and outcome, windows, alerts.
//!
//! The simulated upstream and Twilio caller, the demo and WAV handling live in the
//! `voxrelay-sim` crate (`sim/`); the `voxrelay` command in `voxrelay-cli` (`cli/`).

pub mod audio;
pub mod bootstrap;
pub mod call;
pub mod config;
pub mod domain;
pub mod guard;
pub mod http;
pub mod ops;
pub mod outbound;
pub mod prompt;
pub mod realtime;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod twilio;

/// The crate version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the process-wide rustls crypto provider (ring). Must run before the first TLS user:
/// with no provider installed, `reqwest` (built with `rustls-no-provider`) panics and
/// tokio-tungstenite cannot pick one. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
