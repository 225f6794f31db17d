//! Telemetry: tracing setup and the per-call timeline.
//!
//! Logs are structured (`tracing`); a call's timeline is a list of what happened when, measured
//! from the Twilio `start` message, which the demo prints and the tests read.

pub mod alerts;
pub mod metrics;
pub mod outcome;
pub mod repeats;
pub mod stats;
pub mod timeline;
pub mod window;

pub use timeline::{CallReport, Timeline, TimelineEvent};

/// Installs the global tracing subscriber: human-readable lines, or JSON lines when `json` is
/// set. The filter comes from `RUST_LOG` (default `default_filter`). Calling it twice is harmless.
pub fn init(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
