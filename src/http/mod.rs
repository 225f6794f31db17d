//! HTTP and WebSocket routes (axum): the Twilio voice webhook, the media stream WebSocket, and a
//! health check.
//!
//! Handlers are thin: they extract, call into the domain modules, and map the result. Shared
//! state goes through [`AppState`]; there are no globals.

pub mod admin;
pub mod media;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::call::registry::Registry;
use crate::call::session::SessionOptions;
use crate::call::setup::{CallSetup, PromptSource, open_upstream};
use crate::config::{Config, Secrets};
use crate::domain::Arm;
use crate::domain::Direction;
use crate::guard::sanitizer::{RuleOverride, Sanitizer};
use crate::prompt::cache::{PromptCache, fingerprint};
use crate::prompt::resolve;
use crate::prompt::template::{self, TemplateVars};
use crate::prompt::{BuiltPrompts, PromptLibrary};
use crate::realtime::UpstreamSettings;
use crate::store::{Business, PromptVersion, Store};
use crate::telemetry::CallReport;
use crate::telemetry::alerts::Alerts;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::window::CallStats;

/// Businesses whose compiled sanitizer is kept before the cache starts again.
const SANITIZER_CACHE_MAX: usize = 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// The shared parts behind [`AppState`].
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Secrets from the environment.
    pub secrets: Secrets,
    /// The database.
    pub store: Store,
    /// Universal and direction layers.
    pub prompts: PromptLibrary,
    /// Calls between webhook and media stream.
    pub registry: Registry,
    /// How to dial the upstream.
    pub upstream: UpstreamSettings,
    /// Per-call tuning.
    pub session: SessionOptions,
    /// The sanitizer with the configured rules (businesses may add their own per call).
    pub sanitizer: Arc<Sanitizer>,
    /// Echo counts over every call this instance has finished (the overall echo rate).
    pub echo_totals: EchoTotals,
    /// Where finished calls' reports go (the demo and tests read them); `None` in production.
    pub reports: Option<mpsc::UnboundedSender<CallReport>>,
    /// Built prompts by prompt version (read-only for calls; see [`PromptCache`]).
    pub prompt_cache: PromptCache,
    /// Compiled sanitizers of businesses with their own rules: business id → (fingerprint of
    /// the rules, sanitizer).
    sanitizer_cache: dashmap::DashMap<String, (crate::prompt::cache::Fingerprint, Arc<Sanitizer>)>,
    /// The instance's Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Live calls and windowed figures (`GET /api/v1/stats`, the dashboard, the alerts).
    pub call_stats: CallStats,
    /// Alerts on the windowed figures.
    pub alerts: Alerts,
}

impl AppState {
    /// Assembles the state from its parts.
    pub fn new(
        config: Config,
        secrets: Secrets,
        store: Store,
        prompts: PromptLibrary,
        sanitizer: Sanitizer,
        reports: Option<mpsc::UnboundedSender<CallReport>>,
    ) -> AppState {
        let upstream = config.upstream_settings(secrets.openai_api_key.clone());
        let metrics = Arc::new(Metrics::new());
        let alerts = Alerts::new(config.alerts.clone());
        let session = SessionOptions {
            mark_interval_ms: config.audio.mark_interval_ms,
            leg_limits: crate::call::leg::LegLimits {
                audio: config.audio.queue_frames,
                control: config.audio.control_queue,
                stall: Duration::from_millis(config.audio.stall_limit_ms),
            },
            server_cancels_on_speech: config.vad.interrupt_response,
            metrics: metrics.clone(),
        };
        let registry = Registry::new(Duration::from_millis(config.timeouts.pending_call_ms));
        AppState {
            inner: Arc::new(Shared {
                config,
                secrets,
                store,
                prompts,
                registry,
                upstream,
                session,
                sanitizer: Arc::new(sanitizer),
                echo_totals: EchoTotals::default(),
                reports,
                prompt_cache: PromptCache::default(),
                sanitizer_cache: dashmap::DashMap::new(),
                metrics,
                call_stats: CallStats::default(),
                alerts,
            }),
        }
    }

    /// Judges the alerts over the calls that ended in their window (logs and gauges, see
    /// [`Alerts::evaluate`]). Run after every call and by the server's sweeper.
    pub fn evaluate_alerts(&self) {
        let now = crate::store::now_ms();
        let window = self.call_stats.overall(now, self.alerts.window_minutes());
        self.alerts.evaluate(&window, &self.metrics);
    }

    /// Dials the upstream for a call and sends its first `session.update`, recording the
    /// connect time. Errors: as [`open_upstream`].
    pub async fn dial_upstream(
        &self,
        session: &crate::realtime::events::SessionConfig,
    ) -> Result<crate::realtime::upstream::UpstreamSocket, crate::realtime::UpstreamError> {
        dial(&self.upstream, session, &self.metrics).await
    }

    /// Builds a call's setup: the business layer it runs (as [`resolve::for_new_call`] chooses),
    /// the business's sanitizer (the configured rules plus the business's own from the
    /// database), prompts with a fresh canary, session configuration. Read per call, so a
    /// promote takes effect with the next call and never changes a call in progress.
    ///
    /// Errors: the database failed, the business has no prompt for the direction, a business
    /// rule does not compile, or the business's prompt is unusable — each as a message naming
    /// the business.
    pub async fn call_setup(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
    ) -> Result<CallSetup, SetupError> {
        let resolved = resolve::for_new_call(&self.store, business, direction, caller).await?;
        self.setup_with(business, direction, caller, resolved).await
    }

    /// Builds the setup of a call whose prompt was chosen already (by the instance that took
    /// the webhook, as the stream token says); see [`resolve::chosen`].
    ///
    /// Errors: as [`AppState::call_setup`].
    pub async fn call_setup_chosen(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        version_id: Option<&str>,
        experiment: Option<(String, Arm)>,
    ) -> Result<CallSetup, SetupError> {
        let resolved = resolve::chosen(
            &self.store,
            business,
            direction,
            caller,
            version_id,
            experiment,
        )
        .await?;
        self.setup_with(business, direction, caller, resolved).await
    }

    /// The setup for a resolved business layer: prompts from the cache (or built and cached),
    /// the business's sanitizer, the canary.
    async fn setup_with(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        resolved: resolve::Resolved,
    ) -> Result<CallSetup, SetupError> {
        let sanitizer = self.sanitizer_for(business).await?;
        let prompts = self.prompts_for(business, direction, caller, &resolved)?;
        Ok(CallSetup::with_prompts(
            &self.config,
            business,
            direction,
            sanitizer,
            &prompts,
            PromptSource {
                version_id: resolved.version.map(|v| v.id),
                experiment: resolved.experiment,
                caller: caller.to_string(),
            },
        ))
    }

    /// The configured sanitizer, with the business's own rules when it has any. A business's
    /// sanitizer is compiled once per set of rules and kept (keyed by business id, checked by a
    /// fingerprint of the rules), so a rule change reaches the next call.
    async fn sanitizer_for(&self, business: &Business) -> Result<Arc<Sanitizer>, SetupError> {
        let rules = self.store.guard_rules(&business.id).await?;
        if rules.is_empty() {
            return Ok(self.sanitizer.clone());
        }
        let weights: Vec<String> = rules.iter().map(|r| r.weight.to_string()).collect();
        let mut parts: Vec<&str> = Vec::with_capacity(rules.len() * 5);
        for (rule, weight) in rules.iter().zip(&weights) {
            parts.extend([
                rule.rule_id.as_str(),
                rule.category.as_str(),
                rule.pattern.as_str(),
                weight.as_str(),
                if rule.enabled { "on" } else { "off" },
            ]);
        }
        let inputs = fingerprint(&parts);
        if let Some(entry) = self.sanitizer_cache.get(&business.id)
            && entry.0 == inputs
        {
            return Ok(entry.1.clone());
        }
        let overrides: Vec<RuleOverride> = rules.into_iter().map(RuleOverride::from).collect();
        let compiled =
            Arc::new(
                self.sanitizer
                    .with_overrides(&overrides)
                    .map_err(|e| SetupError::Rules {
                        business_id: business.id.clone(),
                        message: e.to_string(),
                    })?,
            );
        if self.sanitizer_cache.len() >= SANITIZER_CACHE_MAX
            && !self.sanitizer_cache.contains_key(&business.id)
        {
            self.sanitizer_cache.clear();
        }
        self.sanitizer_cache
            .insert(business.id.clone(), (inputs, compiled.clone()));
        Ok(compiled)
    }

    /// FULL and COMPACT (without the canary) for a version, or the business's own text: from the
    /// prompt cache, keyed by version id, unless the body renders per call (`call.*` variables).
    fn prompts_for(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        resolved: &resolve::Resolved,
    ) -> Result<Arc<BuiltPrompts>, SetupError> {
        let version = resolved.version.as_ref();
        let build = || -> Result<BuiltPrompts, SetupError> {
            let text = match version {
                Some(v) => render_version(business, direction, caller, v)?,
                None => resolved.text(business, direction).to_string(),
            };
            Ok(CallSetup::build_prompts(
                &self.prompts,
                business,
                direction,
                &text,
            )?)
        };
        let (key, text) = match version {
            Some(v) if template::uses_call_variables(&v.body) => return Ok(Arc::new(build()?)),
            Some(v) => (v.id.clone(), v.body.as_str()),
            None => (
                format!("business:{}:{direction}", business.id),
                resolved.text(business, direction),
            ),
        };
        let inputs = fingerprint(&[
            &key,
            direction.as_str(),
            &business.id,
            &business.name,
            &business.language,
            &business.hours,
            &business.greeting_instructions,
            text,
        ]);
        let (prompts, _) = self.prompt_cache.get_or_build(&key, inputs, build)?;
        Ok(prompts)
    }
}

/// [`open_upstream`] with its duration recorded as the upstream connect time.
pub(crate) async fn dial(
    settings: &UpstreamSettings,
    session: &crate::realtime::events::SessionConfig,
    metrics: &Metrics,
) -> Result<crate::realtime::upstream::UpstreamSocket, crate::realtime::UpstreamError> {
    let started = std::time::Instant::now();
    let socket = open_upstream(settings, session).await?;
    metrics
        .upstream_connect
        .observe(started.elapsed().as_secs_f64());
    Ok(socket)
}

/// A version's body rendered with the call's values.
fn render_version(
    business: &Business,
    direction: Direction,
    caller: &str,
    version: &PromptVersion,
) -> Result<String, SetupError> {
    let vars = TemplateVars {
        business_name: business.name.clone(),
        business_hours: Some(business.hours.clone()).filter(|h| !h.trim().is_empty()),
        language: business.language.clone(),
        caller: caller.to_string(),
        direction,
    };
    template::render(&version.body, &vars).map_err(|e| SetupError::Template {
        business_id: business.id.clone(),
        version_id: version.id.clone(),
        message: e.to_string(),
    })
}

/// Echo counts summed over finished calls.
#[derive(Debug, Default)]
pub struct EchoTotals {
    model_turns: std::sync::atomic::AtomicU64,
    echoes: std::sync::atomic::AtomicU64,
}

impl EchoTotals {
    /// Adds a finished call's counts; returns the overall echo rate (echoes per model turn, 0–1).
    pub fn add(&self, call: &crate::guard::echo::EchoStats) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        let turns = self.model_turns.fetch_add(call.model_turns, Relaxed) + call.model_turns;
        let echoes = self.echoes.fetch_add(call.echoes, Relaxed) + call.echoes;
        if turns == 0 {
            0.0
        } else {
            echoes as f64 / turns as f64
        }
    }
}

/// A call could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// No business layer can be had (no prompt for the direction, or the database failed).
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// A business's own guard rule does not compile.
    #[error("guard rules of business {business_id}: {message}")]
    Rules {
        /// The business.
        business_id: String,
        /// What is wrong.
        message: String,
    },
    /// A prompt version does not render (validation should have caught it).
    #[error("prompt version {version_id} of business {business_id}: {message}")]
    Template {
        /// The business.
        business_id: String,
        /// The version.
        version_id: String,
        /// What is wrong.
        message: String,
    },
    /// The business's prompt is unusable.
    #[error("prompt: {0}")]
    Prompt(#[from] crate::prompt::PromptError),
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// An error a handler returns; the status code is decided here.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// X-Twilio-Signature missing or wrong.
    #[error("invalid or missing X-Twilio-Signature")]
    BadSignature,
    /// The request lacks something it must have.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadSignature => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Store(e) => {
                tracing::error!(error = %e, "database error in a request");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match &self {
            AppError::Store(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        (status, body).into_response()
    }
}

/// The router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/twilio/voice", post(webhook::voice))
        .route("/twilio/media", get(media::stream))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard))
        .merge(admin::router(state.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /metrics`: the Prometheus exposition, OpenMetrics text when the scraper asks for it
/// (`Accept: application/openmetrics-text`, as Prometheus does), else the text format 0.0.4.
/// Unauthenticated, like most exporters: it holds counts and latencies by business id, never a
/// CallSid, a number or a transcript.
async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode_text(),
        )
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The dashboard page, built into the binary: one self-contained HTML file (no CDN) whose
/// script reads `GET /api/v1/stats` every 2 s with an admin or viewer token.
pub const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard.html");

/// `GET /dashboard`. The page holds no data, so it is served without a token; its content
/// security policy lets it talk to this origin only.
async fn dashboard() -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

/// Serves `state` on `listener` until `shutdown` resolves. Sets TCP_NODELAY on every accepted
/// socket (Nagle would hold small frames about 40 ms), sweeps expired pending calls and
/// re-judges the alerts (every quarter of `timeouts.pending_call_ms`, at least 100 ms).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let sweep_state = state.clone();
    let sweep_every = Duration::from_millis((state.config.timeouts.pending_call_ms / 4).max(100));
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tick.tick().await;
            sweep_state.registry.sweep(std::time::Instant::now());
            // Calls that end re-judge the alerts; this clears them when calls stop ending too.
            sweep_state.evaluate_alerts();
        }
    });
    let send_buffer = state.config.server.socket_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(true);
        if send_buffer > 0
            && let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer)
        {
            tracing::warn!(error = %e, send_buffer, "cannot set SO_SNDBUF");
        }
    });
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    result
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::echo::EchoStats;

    #[test]
    fn the_overall_echo_rate_sums_every_finished_call() {
        let totals = EchoTotals::default();
        let call = |model_turns, echoes| EchoStats {
            model_turns,
            echoes,
            ..EchoStats::default()
        };
        assert_eq!(totals.add(&call(0, 0)), 0.0);
        assert_eq!(totals.add(&call(10, 1)), 0.1);
        assert!((totals.add(&call(30, 1)) - 0.05).abs() < 1e-9);
    }
}
