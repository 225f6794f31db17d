//! HTTP and WebSocket routes (axum): the Twilio voice webhook, the media stream WebSocket, and a
//! health check.
//!
//! Handlers are thin: they extract, call into the domain modules, and map the result. Shared
//! state goes through [`AppState`]; there are no globals.

pub mod admin;
pub mod dial_status;
pub mod media;
pub mod server;
pub mod status;
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

use crate::call::service::CallService;
use crate::config::{Config, Secrets};
use crate::guard::sanitizer::Sanitizer;
use crate::prompt::PromptLibrary;
use crate::store::Store;
use crate::telemetry::CallReport;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// The services behind [`AppState`].
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Secrets from the environment (the Twilio auth token for webhook signatures, the admin
    /// tokens).
    pub secrets: Secrets,
    /// The database, for the admin API.
    pub store: Store,
    /// Universal and direction layers, for prompt validation and previews.
    pub prompts: Arc<PromptLibrary>,
    /// Calls: webhook, media stream, session, records, and the instance's call metrics.
    pub calls: CallService,
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
        let config = Arc::new(config);
        let prompts = Arc::new(prompts);
        let calls = CallService::new(
            config.clone(),
            secrets.signing_key.clone(),
            store.clone(),
            prompts.clone(),
            sanitizer,
            crate::realtime::Upstreams::new(
                config.upstream_targets(secrets.openai_api_key.clone()),
                config.upstream.breaker_failures,
                std::time::Duration::from_millis(config.upstream.breaker_cooldown_ms),
            ),
            reports,
        )
        .with_fallbacks(crate::call::fallback::Fallbacks::new(
            &config,
            &secrets.twilio_rest(),
        ))
        .with_tool_secrets(secrets.tool_secrets.clone());
        AppState {
            inner: Arc::new(Shared {
                config,
                secrets,
                store,
                prompts,
                calls,
            }),
        }
    }
}

impl Shared {
    /// What business changes are checked against on this instance.
    pub fn business_checks(&self) -> crate::ops::businesses::Checks<'_> {
        crate::ops::businesses::Checks {
            library: &self.prompts,
            transcribing: self.config.transcribes(),
        }
    }
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
        .route("/twilio/status", post(status::status))
        .route(
            "/twilio/dial-status/{instance}",
            post(dial_status::dial_status),
        )
        .route("/twilio/media", get(media::stream))
        // The segment names the instance that took the webhook; it is for the load balancer.
        .route("/twilio/media/{instance}", get(media::stream))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(dashboard))
        .merge(admin::router(state.clone()))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(state.config.server.request_body_timeout_ms),
        ))
        // Handlers log their own failures (with what failed); a 503 while draining is not one.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
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
            state.calls.metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            state.calls.metrics.encode_text(),
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

/// Serves `state` on `listener` until `shutdown` resolves and the drain that follows is over.
///
/// At start, the calls this instance left open in its last run are closed as `crashed`
/// ([`CallService::recover`](crate::call::service::CallService::recover)). Connections are
/// bounded in number and time as [`server`] says. While serving it
/// sets TCP_NODELAY on every accepted socket (Nagle would hold small frames about 40 ms),
/// sweeps expired pending calls and re-judges the alerts (every quarter of
/// `timeouts.pending_call_ms`, at least 100 ms).
///
/// When `shutdown` resolves (the binary wires SIGTERM and SIGINT to it) the instance drains
/// ([`crate::call::lifecycle`]): the server keeps running, so `/readyz` can answer 503,
/// webhooks 503, and media streams of calls answered before the drain still connect; once no
/// call is live or pending, or at `lifecycle.drain_deadline_s` (each live call then says
/// goodbye and ends as `shutdown`, for at most `lifecycle.goodbye_limit_ms`), the server
/// stops. Then the sweeper is stopped and awaited, and the call records still waiting are
/// written (at most `lifecycle.flush_limit_ms`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.calls.recover().await;
    let sweep_state = state.clone();
    let sweep_every = Duration::from_millis((state.config.timeouts.pending_call_ms / 4).max(100));
    let (stop_sweeper, mut sweeper_stopped) = tokio::sync::watch::channel(false);
    // Aborted if this future is dropped mid-way (its task aborted), so the state it holds goes.
    let sweeper = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                _ = tick.tick() => sweep_state.calls.sweep(std::time::Instant::now()),
                _ = sweeper_stopped.changed() => break,
            }
        }
    }));
    let server = &state.config.server;
    let send_buffer = server.socket_send_buffer_bytes;
    let tap = move |tcp: &tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
        if send_buffer > 0
            && let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(send_buffer)
        {
            tracing::warn!(error = %e, send_buffer, "cannot set SO_SNDBUF");
        }
    };
    let limits = server::ServerLimits {
        max_connections: server.max_connections,
        header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
    };
    let drain_state = state.clone();
    server::run(
        listener,
        router(state.clone()),
        limits,
        state.calls.metrics.clone(),
        tap,
        async move {
            shutdown.await;
            drain(&drain_state).await;
        },
    )
    .await;
    let _ = stop_sweeper.send(true);
    if let Err(e) = sweeper.await {
        tracing::warn!(error = %e, "the sweeper ended badly");
    }
    let flush_limit = Duration::from_millis(state.config.lifecycle.flush_limit_ms);
    state.calls.records().flush(flush_limit).await;
    tracing::info!(records_written = state.calls.records().written(), "stopped");
    Ok(())
}

/// The drain: no new calls; wait for live and pending calls to end, at most the drain
/// deadline; then ask the rest to say goodbye and wait for them, at most the goodbye limit
/// and a margin for their last writes.
async fn drain(state: &AppState) {
    let lifecycle = state.calls.lifecycle();
    lifecycle.begin_drain();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.config.lifecycle.drain_deadline_s);
    let calls = lifecycle.calls().clone();
    calls.close();
    loop {
        if lifecycle.live_calls() == 0 && state.calls.pending_calls() == 0 {
            tracing::info!("drain: no call left");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        // Polled: the tracker's wait resolves at once while only pending calls are left.
        let next = (tokio::time::Instant::now() + DRAIN_POLL).min(deadline);
        tokio::time::sleep_until(next).await;
    }
    tracing::warn!(
        live_calls = lifecycle.live_calls(),
        "drain deadline: the live calls are asked to say goodbye"
    );
    lifecycle.close_calls();
    let limit = Duration::from_millis(state.config.lifecycle.goodbye_limit_ms) + CLOSE_MARGIN;
    if tokio::time::timeout(limit, calls.wait()).await.is_err() {
        tracing::error!(
            live_calls = lifecycle.live_calls(),
            "calls still running after their goodbye limit; stopping anyway"
        );
    }
}

/// How often the drain looks at what is left.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// What a call may take after its goodbye limit to close its sockets and write its end.
const CLOSE_MARGIN: Duration = Duration::from_secs(3);

/// `GET /readyz`: 200 while the instance takes new calls, 503 once it drains (a load
/// balancer's health check sends new calls elsewhere). `/healthz` stays 200 while the process
/// works.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if state.calls.lifecycle().is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        "ready".into_response()
    }
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
