//! Configuration: `config/voxrelay.toml` plus environment overrides; secrets only from the
//! environment.
//!
//! Every key `section.key` of the file can be overridden by `VOXRELAY_SECTION_KEY` (upper case),
//! for example `VOXRELAY_DATABASE_URL` or `VOXRELAY_UPSTREAM_MODEL`. The value is read as the
//! type the file gives the key (integer, float, boolean or string). Every key must be present in
//! the file: a missing, unknown or ill-typed key fails at start with the key and the file named.
//!
//! Secrets are never read from the file: `OPENAI_API_KEY`, `TWILIO_AUTH_TOKEN`,
//! `VOXRELAY_SIGNING_KEY` and `VOXRELAY_ADMIN_TOKENS` come from the environment only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::realtime::{Provider, TurnDetection, UpstreamSettings};

/// The defaults file shipped in the repository, built into the binary for `demo` and tests.
pub const DEFAULT_TOML: &str = include_str!("../config/voxrelay.toml");

/// Where the defaults file lives in the repository.
pub const DEFAULT_PATH: &str = "config/voxrelay.toml";

/// A configuration problem, always naming the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key is missing, unknown, ill-typed or out of range.
    #[error("{file}: key `{key}`: {message}")]
    Key {
        /// The file (or the environment variable that set the key).
        file: String,
        /// `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A required secret is missing from the environment.
    #[error("environment variable {name} is not set: {why}")]
    MissingSecret {
        /// The variable.
        name: &'static str,
        /// What it is for.
        why: &'static str,
    },
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Host (and optional port) Twilio reaches.
    pub public_host: String,
    /// `https` or `http`: the scheme of the webhook URL Twilio signs.
    pub public_scheme: String,
    /// SO_SNDBUF of every accepted socket, bytes; 0 (the default; may be left out of a file)
    /// leaves the kernel's own sizing. A small value bounds what a peer that stops reading
    /// can make the kernel hold for it, and lets the relay see the stall sooner.
    #[serde(default)]
    pub socket_send_buffer_bytes: usize,
    /// Open connections at most, WebSockets included; at the cap the oldest idle one is
    /// closed to make room ([`crate::http::server`]). Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a connection may take to send a whole request head, ms, from its opening or
    /// from the end of its last response (so it bounds idle keep-alive connections too).
    /// Default 10000.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long a request body may take to arrive, ms; then the request fails with 408.
    /// Default 10000.
    #[serde(default = "default_request_body_timeout_ms")]
    pub request_body_timeout_ms: u64,
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_request_body_timeout_ms() -> u64 {
    10_000
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `openai` or `azure`.
    pub provider: Provider,
    /// WebSocket URL without `?model=`.
    pub url: String,
    /// Model or deployment.
    pub model: String,
    /// Handshake limit, ms.
    pub connect_timeout_ms: u64,
    /// Input transcription model; empty turns it off.
    pub transcription_model: String,
    /// Send the greeting's `response.create` on the pre-warmed session as soon as it is open,
    /// so the greeting audio is already waiting when the media stream starts. Default true;
    /// may be left out of a file.
    #[serde(default = "default_true")]
    pub early_greeting: bool,
    /// SO_SNDBUF of each upstream socket, bytes; 0 (the default; may be left out of a file)
    /// leaves the kernel's own sizing. A small value bounds what an upstream that stops
    /// reading makes the kernel hold, and shows the stall sooner.
    #[serde(default)]
    pub socket_send_buffer_bytes: usize,
    /// Upstreams to try, in order, when this one cannot be had (`[[upstream.fallback]]`);
    /// may be left out (none).
    #[serde(default)]
    pub fallback: Vec<FallbackUpstream>,
    /// Consecutive failed dials after which an upstream is skipped (its circuit breaker
    /// opens). Default 3; may be left out of a file.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker skips its upstream before one dial probes it again, ms.
    /// Default 30000; may be left out of a file.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
}

/// One `[[upstream.fallback]]`: another Realtime endpoint (for example Azure OpenAI behind
/// OpenAI), tried when the ones before it cannot be had.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackUpstream {
    /// A name for logs and metrics (`azure-eastus`); default: the provider's.
    #[serde(default)]
    pub name: String,
    /// `openai` or `azure`.
    pub provider: Provider,
    /// WebSocket URL without `?model=`.
    pub url: String,
    /// Model or deployment.
    pub model: String,
    /// The environment variable that holds its API key (never the key itself); empty: none.
    #[serde(default)]
    pub api_key_env: String,
    /// Handshake limit, ms; default: `upstream.connect_timeout_ms`.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
}

fn default_breaker_failures() -> u32 {
    3
}

fn default_breaker_cooldown_ms() -> u64 {
    30_000
}

fn default_true() -> bool {
    true
}

/// `[audio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    /// Only `audio/pcmu` (G.711 mu-law passthrough) is supported.
    pub format: String,
    /// Voice when the business has none.
    pub default_voice: String,
    /// Model audio between marks, ms.
    pub mark_interval_ms: u64,
    /// Audio messages allowed to wait in each leg's queue while its socket pushes back.
    pub queue_frames: usize,
    /// Places kept in each leg's queue for control messages (mark, clear, session.update,
    /// truncate, cancel), apart from the audio's. Default 256; may be left out of a file.
    #[serde(default = "default_control_queue")]
    pub control_queue: usize,
    /// How long a socket may take nothing while messages wait for it before the call ends with
    /// `twilio_stalled` or `upstream_stalled`, ms. Default 5000; may be left out of a file.
    #[serde(default = "default_stall_limit_ms")]
    pub stall_limit_ms: u64,
}

fn default_control_queue() -> usize {
    256
}

fn default_stall_limit_ms() -> u64 {
    5000
}

/// `[vad]`: server VAD settings for `session.update`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VadConfig {
    /// 0.0–1.0.
    pub threshold: f32,
    /// ms.
    pub prefix_padding_ms: u32,
    /// ms.
    pub silence_duration_ms: u32,
    /// The server answers each turn by itself.
    pub create_response: bool,
    /// The server cancels its response when the caller speaks.
    pub interrupt_response: bool,
}

/// `[prompt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Directory of the universal and direction layers; empty: built-in copies.
    pub dir: String,
    /// Business characters kept in COMPACT.
    pub compact_business_chars: usize,
}

/// `[guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Sanitizer rules file; empty: the built-in copy of `config/guard_rules.toml`.
    pub rules_file: String,
    /// Whether the sanitizer's learned second stage runs behind the rules. Default `true`.
    #[serde(default = "enabled")]
    pub classifier: bool,
    /// The classifier's model file (from `voxrelay guard train`); empty (the default): the
    /// built-in copy of `config/guard_model.bin`.
    #[serde(default)]
    pub model_file: String,
}

fn enabled() -> bool {
    true
}

/// `[alerts]`: when the instance raises an alert (a structured `alert` log event and the
/// `voxrelay_alert` gauge), judged over the calls that ended in the last `window_minutes`.
/// The section may be left out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Minutes of finished calls each alert looks at, 1 to 60. Default 5.
    pub window_minutes: u64,
    /// Echo events per model turn above which `echo_rate` trips, 0–1. Default 0.05.
    pub echo_rate: f64,
    /// p95 turn latency, ms, above which `p95_turn_latency` trips. Default 500.
    pub p95_turn_latency_ms: f64,
    /// Guard blocks per scored caller transcript above which `guard_block_rate` trips, 0–1.
    /// Default 0.03.
    pub guard_block_rate: f64,
    /// Dropped media frames above which `frame_drops` trips. Default 0.
    pub frame_drops: u64,
    /// Failed calls per call (refused, no stream, no upstream, ended on a fault) above which
    /// `call_failure_rate` trips, 0–1. Default 0.05.
    pub call_failure_rate: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            window_minutes: 5,
            echo_rate: 0.05,
            p95_turn_latency_ms: 500.0,
            guard_block_rate: 0.03,
            frame_drops: 0,
            call_failure_rate: 0.05,
        }
    }
}

/// `[lifecycle]`: who this instance is, and how it stops. The section may be left out: the
/// defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// This instance's id, recorded on every call it takes; at start-up the instance closes the
    /// calls it left open as `crashed`. It must stay the same across restarts and differ
    /// between instances that share a database. `""` (the default) is `HOSTNAME-PORT` (the
    /// host name and the listen port), see [`Config::instance_id`].
    pub instance_id: String,
    /// After SIGTERM or SIGINT, how long live calls may go on, seconds; then each is asked to
    /// say goodbye and ends (`shutdown`). Default 900 (15 min).
    pub drain_deadline_s: u64,
    /// How long a goodbye (drain deadline, longest duration) may take, ms, before the call
    /// ends anyway. Default 10000.
    pub goodbye_limit_ms: u64,
    /// At exit, how long the call records still waiting may take to be written, ms. Default
    /// 10000.
    pub flush_limit_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            instance_id: String::new(),
            drain_deadline_s: 900,
            goodbye_limit_ms: 10_000,
            flush_limit_ms: 10_000,
        }
    }
}

/// `[limits]`: how many calls this instance takes. Over a limit the webhook answers with a busy
/// signal (`<Reject reason="busy"/>`). The section may be left out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Calls at once, from the webhook to the end of the call (a business may set a lower
    /// `max_concurrent_calls` of its own). Default 200.
    pub max_calls: usize,
    /// Calls answered by the webhook whose media stream has not started yet: each holds a
    /// pre-warmed (paid) upstream session. Default 50.
    pub max_pending: usize,
    /// The longest call, seconds, unless the business sets `max_call_duration_s`; then the
    /// model says goodbye and the call ends (`max_duration`). Default 3600.
    pub max_call_duration_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 200,
            max_pending: 50,
            max_call_duration_s: 3600,
        }
    }
}

/// `[reconnect]`: what a call does when its upstream session is lost mid-call (the socket
/// closes or fails, the upstream goes silent or stops reading, or an `error` ends the session):
/// it dials again, restores the session on the new one, and goes on. The section may be left
/// out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Reconnects one call may make; 0 turns mid-call reconnects off (a lost upstream ends
    /// the call). Default 5.
    pub max_per_call: u32,
    /// How long one reconnect may take, from the loss to a restored session, ms; dials are
    /// retried within it (with backoff), then the call ends. Default 4000.
    pub budget_ms: u64,
    /// Caller audio held while the upstream is away, ms (Twilio sends 20 ms frames); older
    /// audio beyond it is dropped and counted. Default 10000.
    pub hold_caller_ms: u64,
    /// The conversation so far is replayed into the new session as text items, newest first,
    /// up to this many tokens (o200k_base). Default 2000.
    pub restore_tokens: usize,
    /// A reconnect still going this long plays the caller the hold clip of the business's
    /// language ("one moment, please", `assets/audio/hold/`), once per reconnect, ms; 0: never.
    /// Default 700.
    pub hold_audio_after_ms: u64,
    /// A session that reports when it expires (`session.expires_at`) is replaced this long
    /// before it, at the first turn boundary (nobody speaking, nothing owed), by a new session
    /// opened ahead and seeded the same way as a reconnect's, so the caller hears no gap, ms;
    /// 0: no rollover (the expiry is met by a reconnect). Default 120000.
    pub rollover_margin_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_per_call: 5,
            budget_ms: 4000,
            hold_caller_ms: 10_000,
            restore_tokens: 2000,
            hold_audio_after_ms: 700,
            rollover_margin_ms: 120_000,
        }
    }
}

/// `[keypad]`: the caller's keypad (DTMF) entries ([`crate::call::keypad`]). The section may be
/// left out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeypadConfig {
    /// A pause this long after the last key ends an entry, ms. Default 2000.
    pub inter_digit_ms: u64,
    /// An entry ends at this many keys (1 to 64). Default 32.
    pub max_digits: usize,
}

impl Default for KeypadConfig {
    fn default() -> Self {
        KeypadConfig {
            inter_digit_ms: 2000,
            max_digits: 32,
        }
    }
}

/// `[tools]`: how the proxy calls a business's tools ([`crate::tools`]). The section may be
/// left out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// A tool whose result is not back this long after the model's call makes the caller hear
    /// the hold clip ("one moment", in the business's language), ms; counted from when the
    /// model's own audio has finished playing. Default 800.
    pub hold_after_ms: u64,
    /// The largest tool answer read, bytes; a larger one is refused (`too_large`) and the
    /// model is told. Default 16384.
    pub max_response_bytes: usize,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            hold_after_ms: 800,
            max_response_bytes: 16 * 1024,
        }
    }
}

/// `[fallback]`: where a call goes when no model can be had (no upstream at the stream's start,
/// no greeting within `greeting_budget_ms`, or a mid-call reconnect that fails within its
/// budget). The call is redirected through Twilio's REST API to TwiML that puts it through to a
/// person (`<Dial>`), or that apologises in the business's language and hangs up. The section
/// may be left out: the defaults below apply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// The E.164 number calls are put through to when their business names none of its own;
    /// "" (default): the apology and a hang-up.
    pub number: String,
    /// Base URL of Twilio's REST API. Default `https://api.twilio.com`; tests point it at a
    /// mock.
    pub twilio_api_url: String,
    /// How long the REST request redirecting the call may take, ms. Default 3000.
    pub rest_timeout_ms: u64,
    /// From the stream's start, how long the caller may wait for the greeting's first audio
    /// before the call falls back, ms (an upstream that opened but sends nothing); 0: no limit.
    /// Default 5000.
    pub greeting_budget_ms: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            number: String::new(),
            twilio_api_url: "https://api.twilio.com".into(),
            rest_timeout_ms: 3000,
            greeting_budget_ms: 5000,
        }
    }
}

/// `[timeouts]`, all in ms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Unclaimed pending call lifetime.
    pub pending_call_ms: u64,
    /// Stream token lifetime.
    pub stream_token_ms: u64,
    /// Limit for the `start` message after the WebSocket opens.
    pub stream_start_ms: u64,
    /// How long a live call's Twilio socket may send nothing before the call ends as a dead
    /// peer ([`EndReason::TwilioSilent`](crate::domain::EndReason::TwilioSilent)). Twilio sends
    /// a media frame every 20 ms for the whole call, silence included (the capture in
    /// `shared/protocol/twilio.md` §6 F7), so a quiet socket is a dead one. Default 5000.
    #[serde(default = "default_twilio_quiet_ms")]
    pub twilio_quiet_ms: u64,
    /// After this long without a message from the upstream, a WebSocket ping is sent (again
    /// every such interval while it stays quiet). Default 5000.
    #[serde(default = "default_upstream_ping_ms")]
    pub upstream_ping_ms: u64,
    /// How long the upstream may send nothing at all (no event, no pong) before the call's
    /// upstream leg counts as dead
    /// ([`EndReason::UpstreamSilent`](crate::domain::EndReason::UpstreamSilent)). Default
    /// 15000: three unanswered pings.
    #[serde(default = "default_upstream_quiet_ms")]
    pub upstream_quiet_ms: u64,
}

fn default_twilio_quiet_ms() -> u64 {
    5_000
}

fn default_upstream_ping_ms() -> u64 {
    5_000
}

fn default_upstream_quiet_ms() -> u64 {
    15_000
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[audio]`.
    pub audio: AudioConfig,
    /// `[vad]`.
    pub vad: VadConfig,
    /// `[prompt]`.
    pub prompt: PromptConfig,
    /// `[guard]`.
    pub guard: GuardConfig,
    /// `[timeouts]`.
    pub timeouts: TimeoutsConfig,
    /// `[alerts]` (optional).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[lifecycle]` (optional).
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// `[limits]` (optional).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[reconnect]` (optional).
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// `[fallback]` (optional).
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// `[keypad]` (optional).
    #[serde(default)]
    pub keypad: KeypadConfig,
    /// `[tools]` (optional).
    #[serde(default)]
    pub tools: ToolsConfig,
}

/// Secrets, from the environment only.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `OPENAI_API_KEY` (or the Azure key).
    pub openai_api_key: Option<String>,
    /// `TWILIO_AUTH_TOKEN`: the key of X-Twilio-Signature.
    pub twilio_auth_token: String,
    /// `VOXRELAY_SIGNING_KEY`: signs stream tokens and outbound webhook parameters.
    pub signing_key: Vec<u8>,
    /// `VOXRELAY_ADMIN_TOKENS`: bearer tokens of the admin API with their roles, from
    /// comma-separated `role:token` pairs. Empty (the variable unset) disables the API: every
    /// request gets 401.
    pub admin_tokens: Vec<(String, Role)>,
    /// Where the tools' signing secrets (and MCP tokens) are read, by the variable each tool
    /// names: the environment, unless a test or the demo gives its own.
    pub tool_secrets: crate::tools::SecretSource,
    /// `TWILIO_ACCOUNT_SID` (optional): the account the REST API is used for.
    pub twilio_account_sid: Option<String>,
    /// `TWILIO_API_KEY` and `TWILIO_API_SECRET` (optional, both or neither): an API key for the
    /// REST API instead of the auth token.
    pub twilio_api_key: Option<(String, String)>,
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads and changes anything.
    Admin,
    /// Only reads (`GET`).
    Viewer,
}

impl Role {
    /// `"admin"` or `"viewer"`, as written in `VOXRELAY_ADMIN_TOKENS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// Environment variable with the admin API tokens.
pub const ADMIN_TOKENS_VAR: &str = "VOXRELAY_ADMIN_TOKENS";

/// Parses `VOXRELAY_ADMIN_TOKENS`: comma-separated `role:token` pairs, role `admin` or `viewer`,
/// token not empty. Errors name the variable and the entry's position, never the token.
fn parse_admin_tokens(raw: &str) -> Result<Vec<(String, Role)>, ConfigError> {
    let bad = |message: String| ConfigError::Key {
        file: format!("environment variable {ADMIN_TOKENS_VAR}"),
        key: ADMIN_TOKENS_VAR.to_string(),
        message,
    };
    let mut tokens = Vec::new();
    for (index, entry) in raw.split(',').map(str::trim).enumerate() {
        let n = index + 1;
        if entry.is_empty() {
            return Err(bad(format!("entry {n} is empty; expected role:token")));
        }
        let Some((role, token)) = entry.split_once(':') else {
            return Err(bad(format!("entry {n} is not role:token")));
        };
        let role = match role.trim() {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => {
                return Err(bad(format!(
                    "entry {n} has an unknown role; expected admin or viewer"
                )));
            }
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(bad(format!("entry {n} has an empty token")));
        }
        tokens.push((token.to_string(), role));
    }
    Ok(tokens)
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "openai_api_key",
                &self.openai_api_key.as_ref().map(|_| "***"),
            )
            .field("twilio_auth_token", &"***")
            .field("signing_key", &"***")
            .field(
                "admin_tokens",
                &self
                    .admin_tokens
                    .iter()
                    .map(|(_, role)| role.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Environment variables that are secrets, never config keys.
const SECRET_VARS: [&str; 7] = [
    "OPENAI_API_KEY",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_KEY",
    "TWILIO_API_SECRET",
    "VOXRELAY_SIGNING_KEY",
    ADMIN_TOKENS_VAR,
];

impl Secrets {
    /// Reads the secrets. `TWILIO_AUTH_TOKEN` and `VOXRELAY_SIGNING_KEY` (at least 16 bytes) are
    /// required; `OPENAI_API_KEY` is required unless `api_key_optional` (a local upstream).
    /// `VOXRELAY_ADMIN_TOKENS` is optional (unset: no admin API tokens); malformed, it is an
    /// error naming the variable.
    pub fn from_env(api_key_optional: bool) -> Result<Secrets, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), api_key_optional)
    }

    /// As [`Secrets::from_env`], reading variables through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        api_key_optional: bool,
    ) -> Result<Secrets, ConfigError> {
        let nonempty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let openai_api_key = nonempty("OPENAI_API_KEY");
        if openai_api_key.is_none() && !api_key_optional {
            return Err(ConfigError::MissingSecret {
                name: "OPENAI_API_KEY",
                why: "the upstream Realtime API needs an API key",
            });
        }
        let twilio_auth_token =
            nonempty("TWILIO_AUTH_TOKEN").ok_or(ConfigError::MissingSecret {
                name: "TWILIO_AUTH_TOKEN",
                why: "webhooks are verified with X-Twilio-Signature, keyed by the auth token",
            })?;
        let signing_key = nonempty("VOXRELAY_SIGNING_KEY").ok_or(ConfigError::MissingSecret {
            name: "VOXRELAY_SIGNING_KEY",
            why: "media stream tokens are signed with it (use at least 16 random bytes)",
        })?;
        if signing_key.len() < 16 {
            return Err(ConfigError::MissingSecret {
                name: "VOXRELAY_SIGNING_KEY",
                why: "it is shorter than 16 bytes; use at least 16 random bytes",
            });
        }
        let admin_tokens = match nonempty(ADMIN_TOKENS_VAR) {
            Some(raw) => parse_admin_tokens(&raw)?,
            None => Vec::new(),
        };
        let twilio_account_sid = nonempty("TWILIO_ACCOUNT_SID").map(|s| s.trim().to_string());
        if let Some(sid) = &twilio_account_sid
            && !crate::twilio::rest::is_sid(sid, "AC")
        {
            return Err(ConfigError::MissingSecret {
                name: "TWILIO_ACCOUNT_SID",
                why: "it is not an Account SID (AC and 32 hex digits)",
            });
        }
        let twilio_api_key = match (nonempty("TWILIO_API_KEY"), nonempty("TWILIO_API_SECRET")) {
            (None, None) => None,
            (Some(key), Some(secret)) => {
                let key = key.trim().to_string();
                if !crate::twilio::rest::is_sid(&key, "SK") {
                    return Err(ConfigError::MissingSecret {
                        name: "TWILIO_API_KEY",
                        why: "it is not an API key SID (SK and 32 hex digits)",
                    });
                }
                if twilio_account_sid.is_none() {
                    return Err(ConfigError::MissingSecret {
                        name: "TWILIO_ACCOUNT_SID",
                        why: "an API key (TWILIO_API_KEY) needs the account it belongs to",
                    });
                }
                Some((key, secret))
            }
            (Some(_), None) => {
                return Err(ConfigError::MissingSecret {
                    name: "TWILIO_API_SECRET",
                    why: "TWILIO_API_KEY is set and needs its secret",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::MissingSecret {
                    name: "TWILIO_API_KEY",
                    why: "TWILIO_API_SECRET is set and needs its key's SID",
                });
            }
        };
        Ok(Secrets {
            openai_api_key,
            twilio_auth_token,
            signing_key: signing_key.into_bytes(),
            admin_tokens,
            tool_secrets: crate::tools::SecretSource::environment(),
            twilio_account_sid,
            twilio_api_key,
        })
    }

    /// The credentials of Twilio's REST API: the API key when one is set, else the auth token
    /// ([`crate::twilio::rest::Credentials`]).
    pub fn twilio_rest(&self) -> crate::twilio::rest::Credentials {
        use crate::twilio::rest::{Auth, Credentials};
        Credentials {
            account_sid: self.twilio_account_sid.clone(),
            auth: match &self.twilio_api_key {
                Some((sid, secret)) => Auth::ApiKey {
                    sid: sid.clone(),
                    secret: secret.clone(),
                },
                None => Auth::AuthToken(self.twilio_auth_token.clone()),
            },
        }
    }
}

impl Config {
    /// Loads `path` and applies `VOXRELAY_*` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file, |name| std::env::var(name).ok())
    }

    /// The repository defaults (built in) with environment overrides.
    pub fn defaults_with_env() -> Result<Config, ConfigError> {
        Self::from_toml(DEFAULT_TOML, DEFAULT_PATH, |name| std::env::var(name).ok())
    }

    /// Parses `text` (named `file` in errors) and applies overrides found through `env`.
    pub fn from_toml(
        text: &str,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: file.to_string(),
                    message: e.to_string(),
                })?;
        for (section_name, section) in table.iter_mut() {
            let Some(section) = section.as_table_mut() else {
                continue;
            };
            for (key, value) in section.iter_mut() {
                let var = format!("VOXRELAY_{}_{}", section_name, key).to_uppercase();
                if SECRET_VARS.contains(&var.as_str()) {
                    continue;
                }
                if let Some(raw) = env(&var) {
                    *value = override_value(value, &raw).map_err(|message| ConfigError::Key {
                        file: format!("environment variable {var}"),
                        key: format!("{section_name}.{key}"),
                        message,
                    })?;
                }
            }
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                // toml appends "in `key`" on later lines; the key is named separately.
                let message = e.inner().to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                let key = match missing_field(&message) {
                    Some(field) if path == "." => field.to_string(),
                    Some(field) => format!("{path}.{field}"),
                    None => path,
                };
                ConfigError::Key {
                    file: file.to_string(),
                    key,
                    message,
                }
            })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Whether callers are transcribed (`upstream.transcription_model` is set), which the
    /// sanitizer and the `gate` policy need.
    pub fn transcribes(&self) -> bool {
        !self.upstream.transcription_model.trim().is_empty()
    }

    /// The public URL of `path` (`/twilio/voice?…`, or `""` for the base), as Twilio reaches
    /// this instance: `{server.public_scheme}://{server.public_host}{path}`. Webhook
    /// signatures are checked over it, and the URLs given to Twilio are built with it.
    pub fn public_url(&self, path: &str) -> String {
        format!(
            "{}://{}{path}",
            self.server.public_scheme, self.server.public_host
        )
    }

    /// This instance's id: `lifecycle.instance_id`, or `HOSTNAME-PORT` when it is empty (the
    /// host name from `/proc/sys/kernel/hostname` or `$HOSTNAME`, `voxrelay` if neither is
    /// there; characters outside `[A-Za-z0-9_.-]` become `-`).
    pub fn instance_id(&self) -> String {
        if !self.lifecycle.instance_id.is_empty() {
            return self.lifecycle.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "voxrelay".to_string());
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(crate::domain::MAX_ID_LEN - 6)
            .collect();
        format!("{host}-{}", self.server.listen.port())
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Key {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        if !self.lifecycle.instance_id.is_empty()
            && let Err(e) = crate::domain::check_id("instance id", &self.lifecycle.instance_id)
        {
            return Err(bad("lifecycle.instance_id", e.to_string()));
        }
        for (key, value) in [
            ("limits.max_calls", self.limits.max_calls as u64),
            ("limits.max_pending", self.limits.max_pending as u64),
            (
                "limits.max_call_duration_s",
                self.limits.max_call_duration_s,
            ),
            (
                "lifecycle.goodbye_limit_ms",
                self.lifecycle.goodbye_limit_ms,
            ),
            ("timeouts.twilio_quiet_ms", self.timeouts.twilio_quiet_ms),
            ("timeouts.upstream_ping_ms", self.timeouts.upstream_ping_ms),
            (
                "timeouts.upstream_quiet_ms",
                self.timeouts.upstream_quiet_ms,
            ),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.request_body_timeout_ms",
                self.server.request_body_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !matches!(self.server.public_scheme.as_str(), "http" | "https") {
            return Err(bad(
                "server.public_scheme",
                format!(
                    "{:?} is not \"http\" or \"https\"",
                    self.server.public_scheme
                ),
            ));
        }
        let host = &self.server.public_host;
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(bad(
                "server.public_host",
                format!("{host:?} is not a host[:port] (no scheme, no path)"),
            ));
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(bad(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        if !(self.upstream.url.starts_with("wss://") || self.upstream.url.starts_with("ws://")) {
            return Err(bad(
                "upstream.url",
                format!("{:?} is not a ws:// or wss:// URL", self.upstream.url),
            ));
        }
        if self.upstream.model.trim().is_empty() {
            return Err(bad("upstream.model", "must not be empty".into()));
        }
        for (i, f) in self.upstream.fallback.iter().enumerate() {
            if !(f.url.starts_with("wss://") || f.url.starts_with("ws://")) {
                return Err(bad(
                    &format!("upstream.fallback[{i}].url"),
                    format!("{:?} is not a ws:// or wss:// URL", f.url),
                ));
            }
            if f.model.trim().is_empty() {
                return Err(bad(
                    &format!("upstream.fallback[{i}].model"),
                    "must not be empty".into(),
                ));
            }
            if f.connect_timeout_ms == Some(0) {
                return Err(bad(
                    &format!("upstream.fallback[{i}].connect_timeout_ms"),
                    "must be greater than 0".into(),
                ));
            }
        }
        if self.upstream.breaker_failures == 0 {
            return Err(bad(
                "upstream.breaker_failures",
                "must be at least 1".into(),
            ));
        }
        if self.audio.format != "audio/pcmu" {
            return Err(bad(
                "audio.format",
                format!(
                    "{:?} is not supported; only \"audio/pcmu\" (G.711 mu-law passthrough)",
                    self.audio.format
                ),
            ));
        }
        if !(20..=5000).contains(&self.audio.mark_interval_ms) {
            return Err(bad(
                "audio.mark_interval_ms",
                "must be between 20 and 5000 ms".into(),
            ));
        }
        if !(1..=60).contains(&self.alerts.window_minutes) {
            return Err(bad(
                "alerts.window_minutes",
                "must be between 1 and 60".into(),
            ));
        }
        for (key, rate) in [
            ("alerts.echo_rate", self.alerts.echo_rate),
            ("alerts.guard_block_rate", self.alerts.guard_block_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(bad(key, format!("{rate} is not a share between 0 and 1")));
            }
        }
        if !self.alerts.p95_turn_latency_ms.is_finite() || self.alerts.p95_turn_latency_ms <= 0.0 {
            return Err(bad(
                "alerts.p95_turn_latency_ms",
                "must be a positive number of ms".into(),
            ));
        }
        if self.audio.queue_frames == 0 {
            return Err(bad("audio.queue_frames", "must be at least 1".into()));
        }
        if self.audio.control_queue < 8 {
            return Err(bad(
                "audio.control_queue",
                "must be at least 8 (a barge-in alone queues a clear, a truncate and a cancel)"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.vad.threshold) {
            return Err(bad("vad.threshold", "must be between 0.0 and 1.0".into()));
        }
        for (key, value) in [
            ("timeouts.pending_call_ms", self.timeouts.pending_call_ms),
            ("timeouts.stream_token_ms", self.timeouts.stream_token_ms),
            ("timeouts.stream_start_ms", self.timeouts.stream_start_ms),
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            ("audio.stall_limit_ms", self.audio.stall_limit_ms),
            ("reconnect.budget_ms", self.reconnect.budget_ms),
            ("reconnect.hold_caller_ms", self.reconnect.hold_caller_ms),
            ("fallback.rest_timeout_ms", self.fallback.rest_timeout_ms),
            ("keypad.inter_digit_ms", self.keypad.inter_digit_ms),
            ("tools.hold_after_ms", self.tools.hold_after_ms),
        ] {
            if value == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if !self.fallback.number.trim().is_empty()
            && crate::store::normalize_e164(&self.fallback.number).is_err()
        {
            return Err(bad(
                "fallback.number",
                "must be an E.164 number (+ and up to 15 digits) or empty".into(),
            ));
        }
        if !(256..=1024 * 1024).contains(&self.tools.max_response_bytes) {
            return Err(bad(
                "tools.max_response_bytes",
                "must be 256 to 1048576".into(),
            ));
        }
        if !(1..=64).contains(&self.keypad.max_digits) {
            return Err(bad("keypad.max_digits", "must be 1 to 64".into()));
        }
        let api = self.fallback.twilio_api_url.trim();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(bad(
                "fallback.twilio_api_url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        Ok(())
    }

    /// The sanitizer rules file, if one is configured.
    pub fn guard_rules_file(&self) -> Option<PathBuf> {
        (!self.guard.rules_file.trim().is_empty()).then(|| PathBuf::from(&self.guard.rules_file))
    }

    /// The classifier's model file, if one is configured.
    pub fn guard_model_file(&self) -> Option<PathBuf> {
        (!self.guard.model_file.trim().is_empty()).then(|| PathBuf::from(&self.guard.model_file))
    }

    /// The prompt directory, if one is configured.
    pub fn prompt_dir(&self) -> Option<PathBuf> {
        (!self.prompt.dir.trim().is_empty()).then(|| PathBuf::from(&self.prompt.dir))
    }

    /// Every upstream in the order calls try them, each named, with its settings: this
    /// section's own (named by its provider, with `api_key`), then each fallback, whose key is
    /// read from the environment variable it names.
    pub fn upstream_targets(&self, api_key: Option<String>) -> Vec<(String, UpstreamSettings)> {
        let mut targets = vec![(
            provider_name(self.upstream.provider).to_string(),
            self.upstream_settings(api_key),
        )];
        for f in &self.upstream.fallback {
            let name = if f.name.trim().is_empty() {
                provider_name(f.provider).to_string()
            } else {
                f.name.trim().to_string()
            };
            let api_key = Some(f.api_key_env.trim())
                .filter(|v| !v.is_empty())
                .and_then(|v| std::env::var(v).ok())
                .filter(|k| !k.is_empty());
            targets.push((
                name,
                UpstreamSettings {
                    url: f.url.clone(),
                    model: f.model.clone(),
                    provider: f.provider,
                    api_key,
                    connect_timeout_ms: f
                        .connect_timeout_ms
                        .unwrap_or(self.upstream.connect_timeout_ms),
                    send_buffer_bytes: self.upstream.socket_send_buffer_bytes,
                },
            ));
        }
        targets
    }

    /// Upstream dialling settings with the given key.
    pub fn upstream_settings(&self, api_key: Option<String>) -> UpstreamSettings {
        UpstreamSettings {
            url: self.upstream.url.clone(),
            model: self.upstream.model.clone(),
            provider: self.upstream.provider,
            api_key,
            connect_timeout_ms: self.upstream.connect_timeout_ms,
            send_buffer_bytes: self.upstream.socket_send_buffer_bytes,
        }
    }

    /// Server VAD settings for `session.update`.
    pub fn turn_detection(&self) -> TurnDetection {
        TurnDetection {
            threshold: self.vad.threshold,
            prefix_padding_ms: self.vad.prefix_padding_ms,
            silence_duration_ms: self.vad.silence_duration_ms,
            create_response: self.vad.create_response,
            interrupt_response: self.vad.interrupt_response,
        }
    }

    /// True when the upstream is on this machine (the simulator): no API key is needed.
    pub fn upstream_is_local(&self) -> bool {
        let rest = self
            .upstream
            .url
            .trim_start_matches("wss://")
            .trim_start_matches("ws://");
        rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn override_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("{raw:?} is not true or false")),
        }),
        _ => toml::Value::String(raw.to_string()),
    })
}

/// The name an upstream goes by when it is given none.
fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::Azure => "azure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_shipped_defaults_load() {
        let c = Config::from_toml(DEFAULT_TOML, DEFAULT_PATH, env(&[])).expect("defaults load");
        assert_eq!(c.audio.format, "audio/pcmu");
        assert_eq!(c.audio.mark_interval_ms, 500);
        assert!(c.vad.interrupt_response);
        assert_eq!(
            c.alerts,
            AlertsConfig::default(),
            "the file says what the code defaults to"
        );
        // The [alerts] section may be left out of a file.
        let start = DEFAULT_TOML.find("[alerts]").expect("an [alerts] section");
        let without = Config::from_toml(&DEFAULT_TOML[..start], "old.toml", env(&[]))
            .expect("loads without [alerts]");
        assert_eq!(without.alerts, AlertsConfig::default());
    }

    #[test]
    fn environment_overrides_every_kind_of_key() {
        let c = Config::from_toml(
            DEFAULT_TOML,
            DEFAULT_PATH,
            env(&[
                ("VOXRELAY_UPSTREAM_MODEL", "gpt-realtime-2"),
                ("VOXRELAY_AUDIO_MARK_INTERVAL_MS", "250"),
                ("VOXRELAY_VAD_THRESHOLD", "0.7"),
                ("VOXRELAY_VAD_CREATE_RESPONSE", "false"),
                ("VOXRELAY_SERVER_LISTEN", "127.0.0.1:9999"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.upstream.model, "gpt-realtime-2");
        assert_eq!(c.audio.mark_interval_ms, 250);
        assert!((c.vad.threshold - 0.7).abs() < 1e-6);
        assert!(!c.vad.create_response);
        assert_eq!(c.server.listen.port(), 9999);
    }

    #[test]
    fn a_bad_environment_value_names_the_variable_and_key() {
        let err = Config::from_toml(
            DEFAULT_TOML,
            DEFAULT_PATH,
            env(&[("VOXRELAY_AUDIO_MARK_INTERVAL_MS", "soon")]),
        )
        .expect_err("rejected")
        .to_string();
        assert!(err.contains("VOXRELAY_AUDIO_MARK_INTERVAL_MS"), "{err}");
        assert!(err.contains("audio.mark_interval_ms"), "{err}");
    }

    #[test]
    fn a_missing_key_names_the_key_and_the_file() {
        let text = DEFAULT_TOML.replace("model = \"gpt-realtime-1.5\"", "");
        let err = Config::from_toml(&text, "my.toml", env(&[]))
            .expect_err("rejected")
            .to_string();
        assert!(err.contains("my.toml"), "{err}");
        assert!(err.contains("upstream.model"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        for (from, to, key) in [
            (
                "listen = \"0.0.0.0:8080\"",
                "listen = \"nowhere\"",
                "server.listen",
            ),
            (
                "format = \"audio/pcmu\"",
                "format = \"audio/pcm\"",
                "audio.format",
            ),
            (
                "url = \"wss://api.openai.com/v1/realtime\"",
                "url = \"https://x\"",
                "upstream.url",
            ),
            (
                "provider = \"openai\"",
                "provider = \"acme\"",
                "upstream.provider",
            ),
            ("threshold = 0.5", "threshold = 3.0", "vad.threshold"),
            ("[vad]", "[vad]\nspeed = 2", "vad"),
            ("echo_rate = 0.05", "echo_rate = 5", "alerts.echo_rate"),
            (
                "window_minutes = 5",
                "window_minutes = 0",
                "alerts.window_minutes",
            ),
            ("max_digits = 32", "max_digits = 0", "keypad.max_digits"),
            (
                "max_response_bytes = 16384",
                "max_response_bytes = 10",
                "tools.max_response_bytes",
            ),
            (
                "inter_digit_ms = 2000",
                "inter_digit_ms = 0",
                "keypad.inter_digit_ms",
            ),
            (
                "number = \"\"",
                "number = \"front desk\"",
                "fallback.number",
            ),
        ] {
            let text = DEFAULT_TOML.replace(from, to);
            assert_ne!(text, DEFAULT_TOML, "{from} not found");
            let err = Config::from_toml(&text, "conf.toml", env(&[]))
                .expect_err(key)
                .to_string();
            assert!(
                err.contains("conf.toml") && err.contains(key),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_required() {
        let ok = Secrets::from_lookup(
            env(&[
                ("TWILIO_AUTH_TOKEN", "s3cr3t-twilio"),
                ("VOXRELAY_SIGNING_KEY", "0123456789abcdef"),
            ]),
            true,
        )
        .expect("ok without an API key for a local upstream");
        assert!(ok.openai_api_key.is_none());
        let printed = format!("{ok:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("0123456789"),
            "secrets are not printed: {printed}"
        );
        let err = Secrets::from_lookup(env(&[("TWILIO_AUTH_TOKEN", "tok")]), false)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        let err = Secrets::from_lookup(
            env(&[
                ("TWILIO_AUTH_TOKEN", "t"),
                ("VOXRELAY_SIGNING_KEY", "short"),
            ]),
            true,
        )
        .expect_err("short key")
        .to_string();
        assert!(err.contains("VOXRELAY_SIGNING_KEY"), "{err}");
    }

    #[test]
    fn twilio_rest_credentials_are_the_api_key_when_given_else_the_auth_token() {
        let base = [
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("VOXRELAY_SIGNING_KEY", "0123456789abcdef"),
        ];
        let account = "AC0123456789abcdef0123456789abcdef";
        let key = "SK0123456789abcdef0123456789abcdef";
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            Secrets::from_lookup(env(&vars), true)
        };
        let plain = with(&[]).expect("ok").twilio_rest();
        assert_eq!(plain, crate::twilio::rest::Credentials::auth_token("tok"));
        let keyed = with(&[
            ("TWILIO_ACCOUNT_SID", account),
            ("TWILIO_API_KEY", key),
            ("TWILIO_API_SECRET", "sec"),
        ])
        .expect("ok")
        .twilio_rest();
        assert_eq!(keyed.basic(account), (key.to_string(), "sec".to_string()));
        assert_eq!(keyed.account("ACother"), account);
        for (extra, named) in [
            (&[("TWILIO_ACCOUNT_SID", "AC123")][..], "TWILIO_ACCOUNT_SID"),
            (&[("TWILIO_API_KEY", key)][..], "TWILIO_API_SECRET"),
            (&[("TWILIO_API_SECRET", "sec")][..], "TWILIO_API_KEY"),
            (
                &[("TWILIO_API_KEY", key), ("TWILIO_API_SECRET", "sec")][..],
                "TWILIO_ACCOUNT_SID",
            ),
            (
                &[
                    ("TWILIO_ACCOUNT_SID", account),
                    ("TWILIO_API_KEY", "key"),
                    ("TWILIO_API_SECRET", "sec"),
                ][..],
                "TWILIO_API_KEY",
            ),
        ] {
            let err = with(extra).expect_err(named).to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    #[test]
    fn admin_tokens_come_from_the_environment_with_their_roles() {
        let base = [
            ("TWILIO_AUTH_TOKEN", "t"),
            ("VOXRELAY_SIGNING_KEY", "0123456789abcdef"),
        ];
        let unset = Secrets::from_lookup(env(&base), true).expect("ok");
        assert!(unset.admin_tokens.is_empty());
        let mut vars = base.to_vec();
        vars.push((
            "VOXRELAY_ADMIN_TOKENS",
            "admin:adm-s3cr3t, viewer:view-s3cr3t",
        ));
        let set = Secrets::from_lookup(env(&vars), true).expect("ok");
        assert_eq!(
            set.admin_tokens,
            vec![
                ("adm-s3cr3t".to_string(), Role::Admin),
                ("view-s3cr3t".to_string(), Role::Viewer)
            ]
        );
        let printed = format!("{set:?}");
        assert!(
            !printed.contains("s3cr3t"),
            "tokens are not printed: {printed}"
        );
        for bad in ["admin", "root:x", "viewer:", "admin:a,,viewer:b"] {
            let mut vars = base.to_vec();
            vars.push(("VOXRELAY_ADMIN_TOKENS", bad));
            let err = Secrets::from_lookup(env(&vars), true)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("VOXRELAY_ADMIN_TOKENS"), "{bad}: {err}");
        }
    }
}
