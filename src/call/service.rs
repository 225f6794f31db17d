//! The call service: everything a call needs from the instance, and the lifecycle of a call
//! from Twilio's webhook to its record.
//!
//! - [`CallService::prepare`] (the voice webhook): find the business, choose and build the
//!   prompts, sign the stream token, park the call in the registry and pre-warm the upstream.
//! - [`CallService::admit`] (the media stream's `start`): check the token before any upstream
//!   cost is spent, claim the pending call (or rebuild it from the database when another
//!   instance took the webhook) and have its upstream socket ready.
//! - [`CallService::run`]: record the call's start, run its session, and write what it ended as
//!   (metrics, windowed figures, alerts, the call record, the echo totals).
//!
//! The HTTP handlers only translate requests into these calls and their answers into TwiML or a
//! WebSocket close. Sources: `shared/protocol/twilio.md` (webhook, Media Streams),
//! `shared/protocol/openai-realtime.md` (the upstream session).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use tokio::sync::mpsc;

use crate::call::cache::{FingerprintCache, fingerprint};
use crate::call::fallback::Fallbacks;
use crate::call::leg::LegLimits;
use crate::call::lifecycle::{Admission, Lifecycle, Slot};
use crate::call::records::{Record, Records};
use crate::call::registry::{PendingCall, Registry};
use crate::call::session::{self, SessionOptions, SessionStart};
use crate::call::setup::{CallSetup, PromptSource, open_upstream};
use crate::call::transfer::{ActionQuery, Resume, Transfers};
use crate::config::Config;
use crate::domain::{Arm, BusinessId, CallSid, Direction, EndReason, masked_number};
use crate::guard::sanitizer::{RuleOverride, Sanitizer};
use crate::outbound::Answerer;
use crate::prompt::resolve::{self, ResolveError};
use crate::prompt::template::{self, TemplateVars};
use crate::prompt::{BuiltPrompts, PromptLibrary};
use crate::realtime::events::{ClientEvent, SessionConfig};
use crate::realtime::failover::Dialed;
use crate::realtime::{UpstreamError, Upstreams};
use crate::store::{self, Business, CallEnd, NewCall, PromptVersion, Store, StoreError};
use crate::telemetry::CallReport;
use crate::telemetry::alerts::Alerts;
use crate::telemetry::metrics::{BusinessLabels, Metrics, UpstreamLabels};
use crate::telemetry::outcome::CallOutcome;
use crate::telemetry::window::{CallStats, LiveCall};
use crate::tools::ToolSet;
use crate::twilio::media::Start;
use crate::twilio::token::{self, CallToken};

/// The variables an outbound call was placed with, by name (`call.NAME` in templates).
pub type CallVars = std::collections::BTreeMap<String, String>;

/// Businesses whose compiled sanitizer is kept before the cache starts again.
const SANITIZER_CACHE_MAX: usize = 1024;

/// A voice webhook, as far as the call is concerned (its signature already checked).
#[derive(Debug, Clone)]
pub struct IncomingCall {
    /// `CA…`.
    pub call_sid: CallSid,
    /// Twilio's `From`.
    pub from: String,
    /// Twilio's `To`.
    pub to: String,
    /// Twilio's `Direction` field (`inbound`, `outbound-api`, `outbound-dial`, …).
    pub twilio_direction: String,
    /// The webhook URL's query: an outbound call's signed business parameters.
    pub query: Option<String>,
    /// Twilio's `AnsweredBy` (answering machine detection on a call we placed), when given.
    pub answered_by: Option<String>,
}

/// A transfer's `<Dial action>` callback, as far as the call is concerned (its signature
/// already checked).
#[derive(Debug, Clone)]
pub struct DialEnded {
    /// The caller's call (`CallSid`).
    pub call_sid: CallSid,
    /// The action URL's target and call token.
    pub query: ActionQuery,
    /// How the dial ended (`DialCallStatus`).
    pub outcome: crate::domain::TransferOutcome,
    /// `DialCallDuration`, seconds, when given.
    pub duration_s: Option<i64>,
}

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Connect the call's media stream to `url`, with `token` as its `token` parameter.
    Stream {
        /// `wss://PUBLIC_HOST/twilio/media/INSTANCE_ID` (`ws://` for a local `http` setup):
        /// the last segment names the instance that took the webhook and holds the pre-warmed
        /// upstream, for a load balancer to route the stream on. Any instance serves any
        /// stream; one without the pending call rebuilds it from the database.
        url: String,
        /// The signed, expiring stream token.
        token: String,
    },
    /// Take no call; say `Refusal::apology` and hang up (or, for [`Refusal::Busy`], give a
    /// busy signal).
    Refused(Refusal),
    /// Hang up at once, saying nothing (a fax machine answered a call we placed).
    Hangup,
    /// The instance is draining: answer 503, so Twilio tries the number's fallback URL.
    Draining,
    /// No upstream can be had (every breaker is open): answer with the business's fallback
    /// TwiML at once ([`crate::call::fallback::twiml_for`]), no stream.
    Fallback {
        /// The business's line or the apology.
        target: crate::call::fallback::FallbackTarget,
        /// The business's language (ISO 639-1), for the spoken line.
        language: Option<String>,
    },
}

/// Why a webhook's call is not taken. Each is logged with its reason where it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Twilio's direction is one we do not serve (`trunking-*`, unknown).
    UnsupportedDirection,
    /// No business owns the number, or the outbound parameters are not ours.
    UnknownBusiness,
    /// The business cannot take the call: no prompt for the direction, an unusable prompt, or
    /// the database could not be read.
    SetupFailed,
    /// A call limit is reached ([`crate::call::lifecycle::Admission`]): a busy signal, not an
    /// apology.
    Busy,
}

/// Spoken to callers of a number no business owns.
pub const UNKNOWN_NUMBER_SORRY: &str =
    "Sorry, this number is not in service. Please check the number and try again. Goodbye.";

/// Spoken when the call cannot be set up (a business's prompt is unusable).
pub const SETUP_FAILED_SORRY: &str =
    "Sorry, we cannot take your call right now. Please try again later. Goodbye.";

impl Refusal {
    /// What the caller hears before the hang-up.
    pub fn apology(self) -> &'static str {
        match self {
            Refusal::UnknownBusiness => UNKNOWN_NUMBER_SORRY,
            Refusal::UnsupportedDirection | Refusal::SetupFailed | Refusal::Busy => {
                SETUP_FAILED_SORRY
            }
        }
    }
}

/// A media stream that may go on: its setup and its upstream socket.
pub struct Admitted {
    setup: CallSetup,
    upstream: Dialed,
    /// How long before `start` the webhook ran, when this instance took it.
    since_webhook: Option<Duration>,
    /// When the pre-warm sent the greeting's `response.create`, if it did.
    greeting_requested: Option<Instant>,
    /// The call's place under the call limits, given back when the call ends.
    slot: Option<Slot>,
    /// The caller is back from a transfer: the session resumes the conversation.
    resume: Option<Resume>,
}

/// Why a media stream is closed at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// The token is missing, forged, expired or malformed.
    #[error("invalid token")]
    InvalidToken,
    /// The token is another call's.
    #[error("token mismatch")]
    TokenMismatch,
    /// The call could not be rebuilt (its business is gone, or the database failed).
    #[error("unknown business")]
    CannotRebuild,
    /// No upstream could be had.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// Another stream has already claimed this call (a replayed token).
    #[error("already streamed")]
    AlreadyClaimed,
}

impl NotAdmitted {
    /// The WebSocket close reason Twilio is sent.
    pub fn close_reason(self) -> &'static str {
        match self {
            NotAdmitted::InvalidToken => "invalid token",
            NotAdmitted::TokenMismatch => "token mismatch",
            NotAdmitted::CannotRebuild => "unknown business",
            NotAdmitted::UpstreamUnavailable => "upstream unavailable",
            NotAdmitted::AlreadyClaimed => "call already streamed",
        }
    }
}

/// A call could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// No business layer can be had (no prompt for the direction, or the database failed).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
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

impl SetupError {
    /// The database failure underneath, if that is what this is (an answer of 500, so
    /// Twilio's fallback URL applies, rather than an apology).
    fn into_store(self) -> Result<StoreError, SetupError> {
        match self {
            SetupError::Store(e) | SetupError::Resolve(ResolveError::Store(e)) => Ok(e),
            other => Err(other),
        }
    }
}

/// Everything a call needs from the instance.
pub struct CallService {
    /// The configuration (timeouts, session settings, the public host for stream URLs).
    config: Arc<Config>,
    /// Signs and checks stream tokens and outbound parameters (`VOXRELAY_SIGNING_KEY`).
    signing_key: Vec<u8>,
    /// The database: businesses, versions, rules, call records.
    store: Store,
    /// Universal and direction layers.
    prompts: Arc<PromptLibrary>,
    /// Calls between webhook and media stream.
    registry: Registry,
    /// How to dial the upstream.
    upstream: Arc<Upstreams>,
    /// Per-call tuning.
    session: SessionOptions,
    /// The sanitizer with the configured rules (businesses may add their own).
    sanitizer: Arc<Sanitizer>,
    /// Built prompts by prompt version (or own-text key), read-only for calls.
    prompt_cache: FingerprintCache<BuiltPrompts>,
    /// Compiled sanitizers of businesses with their own rules, by business id.
    sanitizer_cache: FingerprintCache<Sanitizer>,
    /// Echo counts over every call this instance has finished (the overall echo rate).
    echo_totals: EchoTotals,
    /// Where finished calls' reports go (the demo and tests read them); `None` in production.
    reports: Option<mpsc::UnboundedSender<CallReport>>,
    /// The instance's Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Live calls and windowed figures (`GET /api/v1/stats`, the dashboard, the alerts).
    pub call_stats: CallStats,
    /// Alerts on the windowed figures.
    pub alerts: Alerts,
    /// Sends calls no model can take to their business's fallback (Twilio's REST API).
    fallbacks: Fallbacks,
    /// Every call record write, in order, retried while the database is away.
    records: Records,
    /// Drain state and the live calls' tasks.
    lifecycle: Lifecycle,
    /// The call limits.
    admission: Admission,
    /// This instance's id (`lifecycle.instance_id`, or `HOSTNAME-PORT`).
    instance_id: String,
    /// Puts calls through to people (`transfer_call`) and keeps their conversations for a
    /// return.
    transfers: Transfers,
}

impl CallService {
    /// Assembles the service. `upstream` is how to dial the model; `reports` receives every
    /// finished call's report when given. Calls no model can take end without a fallback until
    /// [`CallService::with_fallbacks`] gives the service a way to redirect them.
    pub fn new(
        config: Arc<Config>,
        signing_key: Vec<u8>,
        store: Store,
        prompts: Arc<PromptLibrary>,
        sanitizer: Sanitizer,
        upstream: Upstreams,
        reports: Option<mpsc::UnboundedSender<CallReport>>,
    ) -> CallService {
        let metrics = Arc::new(Metrics::new());
        let session = SessionOptions {
            mark_interval_ms: config.audio.mark_interval_ms,
            leg_limits: LegLimits {
                audio: config.audio.queue_frames,
                control: config.audio.control_queue,
                stall: Duration::from_millis(config.audio.stall_limit_ms),
            },
            server_cancels_on_speech: config.vad.interrupt_response,
            metrics: metrics.clone(),
            goodbye_limit: Duration::from_millis(config.lifecycle.goodbye_limit_ms),
            liveness: crate::call::session::Liveness {
                twilio_quiet: Duration::from_millis(config.timeouts.twilio_quiet_ms),
                upstream_ping: Duration::from_millis(config.timeouts.upstream_ping_ms),
                upstream_quiet: Duration::from_millis(config.timeouts.upstream_quiet_ms),
            },
            reconnect: crate::call::reconnect::ReconnectOptions::from(&config.reconnect),
            greeting_budget: Some(Duration::from_millis(config.fallback.greeting_budget_ms))
                .filter(|d| !d.is_zero()),
            keypad: (
                Duration::from_millis(config.keypad.inter_digit_ms),
                config.keypad.max_digits,
            ),
            tools: crate::call::tool_calls::ToolCallsOptions::from_config(&config.tools),
        };
        let instance_id = config.instance_id();
        CallService {
            transfers: Transfers::new(&config, &instance_id, &signing_key),
            registry: Registry::new(Duration::from_millis(config.timeouts.pending_call_ms)),
            alerts: Alerts::new(config.alerts.clone()),
            records: Records::start(store.clone()),
            lifecycle: Lifecycle::new(),
            admission: Admission::new(config.limits.clone()),
            instance_id,
            config,
            signing_key,
            store,
            prompts,
            upstream: Arc::new(upstream),
            session,
            sanitizer: Arc::new(sanitizer),
            prompt_cache: FingerprintCache::default(),
            sanitizer_cache: FingerprintCache::new(SANITIZER_CACHE_MAX),
            echo_totals: EchoTotals::default(),
            reports,
            metrics,
            call_stats: CallStats::default(),
            fallbacks: Fallbacks::disabled(),
        }
    }

    /// The service reading its tools' secrets from `secrets` (by default the environment).
    pub fn with_tool_secrets(mut self, secrets: crate::tools::SecretSource) -> CallService {
        self.session.tools.secrets = secrets;
        self
    }

    /// The service with `fallbacks` redirecting the calls no model can take.
    /// Transfers redirect calls with the same REST client.
    pub fn with_fallbacks(self, fallbacks: Fallbacks) -> CallService {
        let transfers = self.transfers.clone().with_rest(fallbacks.rest().cloned());
        CallService {
            fallbacks,
            transfers,
            ..self
        }
    }

    /// Drops pending calls nobody claimed (each recorded as ended `no_stream`) and re-judges
    /// the alerts (so they clear when calls stop ending too). Run by the server's sweeper.
    pub fn sweep(&self, now: Instant) {
        for expired in self.registry.sweep(now) {
            self.record_unserved(
                expired.call_sid.as_str(),
                &expired.business_id,
                expired.direction,
                EndReason::NoStream,
            );
        }
        self.evaluate_alerts();
    }

    /// The instance's drain state and live calls.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The call record writer.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The call limits and what holds them.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// This instance's id, as recorded on its calls.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Pending calls: answered by the webhook, their stream not started.
    pub fn pending_calls(&self) -> usize {
        self.registry.len()
    }

    /// Crash recovery, at start-up: the calls this instance left open when it was last killed
    /// are closed as `crashed` (calls of other instances sharing the database are not
    /// touched). Returns how many; a database error is logged and gives 0 (the next start
    /// tries again).
    pub async fn recover(&self) -> u64 {
        match self
            .store
            .close_abandoned_calls(
                &self.instance_id,
                store::now_ms(),
                EndReason::Crashed.as_str(),
            )
            .await
        {
            Ok(0) => 0,
            Ok(closed) => {
                tracing::warn!(instance_id = %self.instance_id, closed,
                    "calls left open by this instance's last run closed as crashed");
                closed
            }
            Err(e) => {
                tracing::error!(instance_id = %self.instance_id, error = %e,
                    "cannot close the calls left open by this instance's last run");
                0
            }
        }
    }

    /// Counts a call that ended without a session (refused, no stream, no upstream) in the
    /// metrics and the windowed figures, and writes its end.
    fn record_unserved(
        &self,
        call_sid: &str,
        business_id: &str,
        direction: Direction,
        reason: EndReason,
    ) {
        let outcome = CallOutcome::unserved(call_sid, business_id, direction, reason);
        self.metrics.record_unserved(&outcome);
        self.call_stats.call_ended(&outcome, store::now_ms());
        self.records.write(Record::Finished {
            call_sid: call_sid.to_owned(),
            end: CallEnd {
                ended_at_ms: store::now_ms(),
                greeting_latency_ms: None,
                end_reason: Some(reason.as_str().to_owned()),
                summary: Default::default(),
            },
        });
    }

    /// The record of a call as the webhook (or its stream) first sees it.
    fn new_call(
        &self,
        call_sid: &str,
        business_id: &str,
        direction: Direction,
        from: &str,
        to: &str,
        stream_sid: Option<&str>,
    ) -> NewCall {
        NewCall {
            call_sid: call_sid.to_owned(),
            stream_sid: stream_sid.map(str::to_owned),
            business_id: business_id.to_owned(),
            direction,
            from_number: from.to_owned(),
            to_number: to.to_owned(),
            started_at_ms: store::now_ms(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// Judges the alerts over the calls that ended in their window (logs and gauges, see
    /// [`Alerts::evaluate`]). Run after every call and by the sweeper.
    pub fn evaluate_alerts(&self) {
        let now = store::now_ms();
        let window = self.call_stats.overall(now, self.alerts.window_minutes());
        self.alerts.evaluate(&window, &self.metrics);
    }

    // -----------------------------------------------------------------------------------------
    // The webhook

    /// The voice webhook's call: find its business, set it up, take a place under the call
    /// limits, record it, sign its stream token, park it and pre-warm its upstream; or refuse
    /// it (logged with the reason, counted, and recorded when its business is known). While
    /// the instance drains, every webhook gets [`Prepared::Draining`].
    ///
    /// A database that cannot be read is a refusal with the apology, not an error page: the
    /// caller hears why, and the failure is counted (`setup_failed`).
    pub async fn prepare(&self, call: IncomingCall) -> Prepared {
        if self.lifecycle.is_draining() {
            tracing::info!(call_sid = %call.call_sid, "webhook while draining: 503");
            return Prepared::Draining;
        }
        let Some(direction) = Direction::from_twilio(&call.twilio_direction) else {
            tracing::warn!(call_sid = %call.call_sid, direction = %call.twilio_direction,
                "unsupported call direction");
            return Prepared::Refused(Refusal::UnsupportedDirection);
        };
        match self.prepare_business(call, direction).await {
            Ok(prepared) => prepared,
            Err((call_sid, e)) => {
                tracing::error!(%call_sid, error = %e,
                    "database unavailable at the webhook; answering with the apology");
                // No business is known: counted in the metrics (business_id ""), not in the
                // per-business windows, and not recorded (a record needs its business).
                self.metrics.record_unserved(&CallOutcome::unserved(
                    call_sid.as_str(),
                    "",
                    direction,
                    EndReason::SetupFailed,
                ));
                Prepared::Refused(Refusal::SetupFailed)
            }
        }
    }

    /// [`CallService::prepare`] once the direction is known. Errors: the database failed,
    /// with the call's CallSid.
    async fn prepare_business(
        &self,
        call: IncomingCall,
        direction: Direction,
    ) -> Result<Prepared, (CallSid, StoreError)> {
        let fail = |e| (call.call_sid.clone(), e);
        let Some((business, call_vars)) = self
            .business_of(direction, &call.to, call.query.as_deref())
            .await
            .map_err(fail)?
        else {
            tracing::warn!(call_sid = %call.call_sid, %direction,
                to = %masked_number(&call.to),
                "no business for this call; answering with a sorry");
            return Ok(Prepared::Refused(Refusal::UnknownBusiness));
        };
        let caller = match direction {
            Direction::Inbound => call.from.as_str(),
            Direction::Outbound => call.to.as_str(),
        };
        let record = self.new_call(
            call.call_sid.as_str(),
            &business.id,
            direction,
            &call.from,
            &call.to,
            None,
        );
        let slot = match self.admission.admit(
            &business.id,
            business
                .max_concurrent_calls
                .and_then(|n| usize::try_from(n).ok()),
        ) {
            Ok(slot) => slot,
            Err(over) => {
                let (held, pending) = self.admission.held();
                tracing::warn!(call_sid = %call.call_sid, business_id = %business.id,
                    limit = over.as_str(), held, pending, "over a call limit; busy signal");
                self.records.write(Record::Opened(record));
                self.record_unserved(
                    call.call_sid.as_str(),
                    &business.id,
                    direction,
                    EndReason::Busy,
                );
                return Ok(Prepared::Refused(Refusal::Busy));
            }
        };
        let answerer = match direction {
            Direction::Outbound => Answerer::from_answered_by(call.answered_by.as_deref()),
            Direction::Inbound => Answerer::Person,
        };
        if direction == Direction::Outbound {
            self.record_answered_by(&call.call_sid, call.answered_by.as_deref())
                .await;
        }
        if answerer == Answerer::Fax {
            tracing::info!(call_sid = %call.call_sid, business_id = %business.id,
                "a fax machine answered the outbound call: hanging up");
            drop(slot);
            self.records.write(Record::Opened(record));
            self.record_unserved(
                call.call_sid.as_str(),
                &business.id,
                direction,
                EndReason::Fax,
            );
            return Ok(Prepared::Hangup);
        }
        let setup = match self
            .call_setup(&business, direction, caller, &call_vars)
            .await
            .map(|setup| self.answered_setup(setup, answerer, &business, &call_vars))
        {
            Ok(setup) => setup,
            Err(e) => match e.into_store() {
                Ok(database) => return Err(fail(database)),
                Err(e) => {
                    tracing::error!(call_sid = %call.call_sid, business_id = %business.id,
                        error = %e, "cannot set the call up");
                    self.records.write(Record::Opened(record));
                    self.record_unserved(
                        call.call_sid.as_str(),
                        &business.id,
                        direction,
                        EndReason::SetupFailed,
                    );
                    return Ok(Prepared::Refused(Refusal::SetupFailed));
                }
            },
        };
        self.records.write(Record::Opened(record));
        if self.upstream.none_available(Instant::now()) {
            tracing::warn!(call_sid = %call.call_sid, business_id = %setup.business_id,
                action = %setup.fallback.action(),
                "every upstream's breaker is open: the call goes to the business's fallback");
            self.metrics.upstream_connect_failures.inc();
            crate::call::fallback::count(&self.metrics, setup.fallback.action(), true);
            self.record_unserved(
                call.call_sid.as_str(),
                &setup.business_id,
                direction,
                EndReason::UpstreamUnavailable,
            );
            drop(slot);
            return Ok(Prepared::Fallback {
                target: setup.fallback,
                language: setup.session.language,
            });
        }
        if setup.prompt_version_id.is_some() {
            self.records.write(Record::Prompt {
                call_sid: call.call_sid.to_string(),
                version_id: setup.prompt_version_id.clone(),
                experiment: setup.experiment.clone(),
            });
        }
        tracing::info!(
            call_sid = %call.call_sid,
            business_id = %setup.business_id,
            direction = %direction,
            policy = %setup.policy,
            prompt_version = setup.prompt_version_id.as_deref().unwrap_or("business"),
            variant = setup.variant().map_or("", Arm::as_str),
            compact_tokens = setup.prompts.compact_tokens,
            full_tokens = setup.prompts.full_tokens,
            "prompts built"
        );
        // Ids in the database were checked when written; one that is not of the form now (a
        // hand edit) cannot travel in a token.
        let business_id = match BusinessId::parse(&setup.business_id) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(call_sid = %call.call_sid, error = %e, "the business id cannot travel in a stream token");
                self.record_unserved(
                    call.call_sid.as_str(),
                    &setup.business_id,
                    direction,
                    EndReason::SetupFailed,
                );
                return Ok(Prepared::Refused(Refusal::SetupFailed));
            }
        };
        let expires_at_ms = store::now_ms() + self.config.timeouts.stream_token_ms as i64;
        let stream_token = token::sign(
            &self.signing_key,
            &CallToken {
                call_sid: call.call_sid.clone(),
                business_id,
                direction,
                expires_at_ms,
                caller: setup.caller.clone(),
                prompt_version_id: setup.prompt_version_id.clone(),
                experiment: setup.experiment.clone(),
            },
        );
        let greeting_requested_at = Arc::new(OnceLock::new());
        let prewarm = tokio::spawn(prewarm(
            self.upstream.clone(),
            setup.session.clone(),
            self.metrics.clone(),
            // A voicemail's one response has instructions of its own: the session asks for it.
            self.config.upstream.early_greeting && setup.voicemail.is_none(),
            call.call_sid.clone(),
            greeting_requested_at.clone(),
        ));
        self.registry.insert(
            call.call_sid,
            PendingCall {
                setup,
                from: call.from,
                to: call.to,
                prewarm,
                created: Instant::now(),
                greeting_requested_at,
                slot: Some(slot),
                resume: None,
            },
        );
        Ok(Prepared::Stream {
            url: self.stream_url(),
            token: stream_token,
        })
    }

    /// What places outbound calls ([`crate::ops::calls`]): this instance's Twilio REST client,
    /// public URL and signing key.
    pub fn placer(&self) -> crate::ops::calls::Placer {
        crate::ops::calls::Placer::new(
            self.fallbacks.rest().cloned(),
            &self.config,
            &self.signing_key,
        )
    }

    /// `wss://PUBLIC_HOST/twilio/media/INSTANCE_ID` (`ws://` for a local `http` setup): the
    /// media stream URL of this instance's TwiML.
    fn stream_url(&self) -> String {
        let scheme = if self.config.server.public_scheme == "https" {
            "wss"
        } else {
            "ws"
        };
        format!(
            "{scheme}://{}/twilio/media/{}",
            self.config.server.public_host, self.instance_id
        )
    }

    /// `setup` for what answered: unchanged for a person, the voicemail's for an answering
    /// machine: the business's voicemail message rendered with the call's variables (a message
    /// that does not render falls back to the default one, logged).
    fn answered_setup(
        &self,
        setup: CallSetup,
        answerer: Answerer,
        business: &Business,
        call_vars: &CallVars,
    ) -> CallSetup {
        if answerer != Answerer::Machine {
            return setup;
        }
        let message = if business.voicemail_message.trim().is_empty() {
            String::new()
        } else {
            let vars = TemplateVars {
                business_name: business.name.clone(),
                business_hours: Some(business.hours.clone()).filter(|h| !h.trim().is_empty()),
                language: business.language.clone(),
                caller: setup.caller.clone(),
                direction: Direction::Outbound,
                call_vars: call_vars.clone(),
            };
            template::render(&business.voicemail_message, &vars).unwrap_or_else(|e| {
                tracing::error!(business_id = %business.id, error = %e,
                    "the voicemail message does not render; the default message is left");
                String::new()
            })
        };
        let instructions = crate::outbound::voicemail_instructions(&business.name, &message);
        setup.for_voicemail(instructions)
    }

    /// Records Twilio's `AnsweredBy` on the call we placed, for an instance that rebuilds it;
    /// a failure is logged (this instance has the call pending anyway).
    async fn record_answered_by(&self, call_sid: &CallSid, answered_by: Option<&str>) {
        let Some(answered_by) = answered_by else {
            return;
        };
        if let Err(e) = self
            .store
            .set_answered_by(call_sid.as_str(), answered_by)
            .await
        {
            tracing::warn!(%call_sid, error = %e, "cannot record who answered the placed call");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Transfers

    /// A transfer's `<Dial action>` callback (its signature already checked): records how the
    /// dial ended and answers Twilio's next TwiML. When the person answered: `<Hangup/>`.
    /// Otherwise the caller comes back to the assistant: the call is rebuilt from the action
    /// URL's signed token, parked in the registry with its conversation (when this instance
    /// holds it) and an upstream dialled with the FULL instructions, and the answer is a new
    /// `<Connect><Stream>` ([`crate::call::transfer`]). A token that does not check out, or a
    /// call that cannot be rebuilt, gets the apology and a hang-up.
    pub async fn transfer_ended(&self, ended: DialEnded) -> String {
        let DialEnded {
            call_sid,
            query,
            outcome,
            duration_s,
        } = ended;
        self.records
            .write(Record::Transfer(crate::store::TransferReport {
                call_sid: call_sid.to_string(),
                at_ms: store::now_ms(),
                target: query.target.clone(),
                outcome,
                duration_s,
            }));
        self.metrics.count_transfer(outcome);
        tracing::info!(%call_sid, target = %query.target, %outcome,
            duration_s = duration_s.unwrap_or(-1), "transfer ended");
        if outcome == crate::domain::TransferOutcome::Answered {
            // The caller talked to the person; the parked conversation is not needed.
            let _ = self.transfers.take(call_sid.as_str());
            return crate::twilio::twiml::hangup();
        }
        let claims = match token::verify(&self.signing_key, &query.token, store::now_ms()) {
            Ok(claims) if claims.call_sid == call_sid => claims,
            Ok(_) | Err(_) => {
                tracing::warn!(%call_sid, "transfer callback whose token is not this call's (or expired): the caller cannot be brought back");
                return crate::twilio::twiml::say_and_hangup(SETUP_FAILED_SORRY);
            }
        };
        let Ok(setup) = self.rebuild(&claims, call_sid.as_str()).await else {
            return crate::twilio::twiml::say_and_hangup(SETUP_FAILED_SORRY);
        };
        let conversation = self.transfers.take(call_sid.as_str()).unwrap_or_default();
        let slot = self.admission.adopt(claims.business_id.as_str());
        let mut session = setup.session.clone();
        session.instructions = setup.prompts.full.clone();
        let prewarm = tokio::spawn(prewarm(
            self.upstream.clone(),
            session,
            self.metrics.clone(),
            false,
            call_sid.clone(),
            Arc::new(OnceLock::new()),
        ));
        let stream_token = token::sign(
            &self.signing_key,
            &CallToken {
                expires_at_ms: store::now_ms() + self.config.timeouts.stream_token_ms as i64,
                ..claims.clone()
            },
        );
        let (from, to) = parties(&claims);
        self.registry.insert(
            call_sid,
            PendingCall {
                setup,
                from,
                to,
                prewarm,
                created: Instant::now(),
                greeting_requested_at: Arc::new(OnceLock::new()),
                slot: Some(slot),
                resume: Some(Resume {
                    conversation,
                    target: query.target,
                    outcome,
                }),
            },
        );
        crate::twilio::twiml::connect_stream(
            &self.stream_url(),
            &[("token", stream_token.as_str())],
        )
    }

    /// The call's business; `None` when nobody owns it (or the outbound parameters are not
    /// ours): inbound by the `To` number, outbound by the business id in the webhook URL's
    /// signed query parameters.
    async fn business_of(
        &self,
        direction: Direction,
        to: &str,
        query: Option<&str>,
    ) -> Result<Option<(Business, CallVars)>, StoreError> {
        match direction {
            Direction::Inbound => {
                let Ok(number) = store::normalize_e164(to) else {
                    return Ok(None);
                };
                Ok(self
                    .store
                    .business_for_number(&number)
                    .await?
                    .map(|b| (b, CallVars::new())))
            }
            Direction::Outbound => {
                let pairs: Vec<(String, String)> =
                    form_urlencoded::parse(query.unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                match token::verify_outbound_with(&self.signing_key, &pairs, store::now_ms()) {
                    Ok((business_id, vars)) => {
                        Ok(self.store.business(&business_id).await?.map(|b| (b, vars)))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbound webhook without valid signed business parameters");
                        Ok(None)
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The media stream

    /// A media stream's `start`: its token must be valid and this call's before anything is
    /// spent; then the pending call is claimed (its pre-warmed upstream awaited, or dialled
    /// again if the pre-warm failed), or rebuilt from the database when another instance took
    /// the webhook.
    ///
    /// Errors: [`NotAdmitted`], logged with the reason.
    pub async fn admit(&self, start: &Start) -> Result<Admitted, NotAdmitted> {
        let presented = start
            .custom_parameters
            .get("token")
            .map(String::as_str)
            .unwrap_or("");
        let claims = match token::verify(&self.signing_key, presented, store::now_ms()) {
            Ok(claims) if claims.call_sid == start.call_sid => claims,
            Ok(_) => {
                tracing::warn!(call_sid = %start.call_sid, "stream token belongs to another call; closing");
                return Err(NotAdmitted::TokenMismatch);
            }
            Err(e) => {
                tracing::warn!(call_sid = %start.call_sid, error = %e, "media stream without a valid token; closing");
                return Err(NotAdmitted::InvalidToken);
            }
        };
        let stream_sid = start.stream_sid.as_str();
        let (setup, upstream, since_webhook, greeting_requested, slot, resume) = match self
            .registry
            .claim(&start.call_sid)
        {
            Some(pending) => {
                // Claimed here already (the registry hands a call out once); the database
                // claim keeps a replay on another instance out, and runs beside the pre-warm.
                let claim = self.new_call(
                    start.call_sid.as_str(),
                    &pending.setup.business_id,
                    pending.setup.direction,
                    &pending.from,
                    &pending.to,
                    Some(stream_sid),
                );
                // A caller back from a transfer is the same call: its stream was claimed.
                let resuming = pending.resume.is_some();
                let claiming = async {
                    if resuming {
                        Ok(true)
                    } else {
                        self.store.claim_stream(&claim).await
                    }
                };
                let (claimed, prewarmed) = tokio::join!(claiming, pending.prewarm);
                match claimed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(call_sid = %start.call_sid,
                            "stream token replayed: the call was already streamed elsewhere; closing");
                        if let Ok(Ok(mut dialed)) = prewarmed {
                            let _ = dialed.socket.close(None).await;
                        }
                        return Err(NotAdmitted::AlreadyClaimed);
                    }
                    Err(e) => {
                        tracing::warn!(call_sid = %start.call_sid, error = %e,
                            "cannot record the stream's claim now; the call goes on and the record waits");
                        self.records.write(Record::Claimed(claim));
                    }
                }
                let mut greeting_requested = None;
                let upstream = match prewarmed {
                    Ok(Ok(socket)) => {
                        greeting_requested = pending.greeting_requested_at.get().copied();
                        Ok(socket)
                    }
                    // A pre-warm that timed out already cost the caller the whole connect
                    // timeout: dialling again would double the dead air.
                    Ok(Err(e @ UpstreamError::Timeout { .. })) => Err(e),
                    Ok(Err(e)) => {
                        tracing::warn!(call_sid = %start.call_sid, error = %e, "pre-warm failed; dialling again");
                        self.dial(&pending.setup.session).await
                    }
                    Err(e) => {
                        tracing::warn!(call_sid = %start.call_sid, error = %e, "pre-warm task ended; dialling again");
                        self.dial(&pending.setup.session).await
                    }
                };
                let since = Instant::now().saturating_duration_since(pending.created);
                let mut slot = pending.slot;
                if let Some(slot) = &mut slot {
                    slot.streamed();
                }
                (
                    pending.setup,
                    upstream,
                    Some(since),
                    greeting_requested,
                    slot,
                    pending.resume,
                )
            }
            None => {
                // The token carries the customer's number only; the other side stays unknown.
                let (from, to) = parties(&claims);
                // Claim before any upstream cost: a replayed token stops here.
                let claim = self.new_call(
                    start.call_sid.as_str(),
                    claims.business_id.as_str(),
                    claims.direction,
                    &from,
                    &to,
                    Some(stream_sid),
                );
                match self.store.claim_stream(&claim).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(call_sid = %start.call_sid,
                            "stream token replayed: the call was already streamed; closing");
                        return Err(NotAdmitted::AlreadyClaimed);
                    }
                    Err(e) => {
                        tracing::error!(call_sid = %start.call_sid, error = %e,
                            "cannot claim the call in the database; closing");
                        return Err(NotAdmitted::CannotRebuild);
                    }
                }
                let slot = self.admission.adopt(claims.business_id.as_str());
                let setup = match self.rebuild(&claims, &start.call_sid).await {
                    Ok(setup) => setup,
                    Err(refused) => {
                        self.record_unserved(
                            start.call_sid.as_str(),
                            claims.business_id.as_str(),
                            claims.direction,
                            EndReason::SetupFailed,
                        );
                        return Err(refused);
                    }
                };
                let upstream = self.dial(&setup.session).await;
                (setup, upstream, None, None, Some(slot), None)
            }
        };
        let upstream = match upstream {
            Ok(upstream) => upstream,
            Err(e) => {
                tracing::error!(call_sid = %start.call_sid, error = %e, "upstream unavailable; ending the call");
                self.metrics.upstream_connect_failures.inc();
                // While the stream is open: closing it first would end the call.
                self.fallbacks
                    .fall_back(
                        &start.account_sid,
                        &start.call_sid,
                        &setup,
                        EndReason::UpstreamUnavailable,
                        &self.metrics,
                    )
                    .await;
                self.record_unserved(
                    start.call_sid.as_str(),
                    &setup.business_id,
                    setup.direction,
                    EndReason::UpstreamUnavailable,
                );
                return Err(NotAdmitted::UpstreamUnavailable);
            }
        };
        Ok(Admitted {
            setup,
            upstream,
            since_webhook,
            greeting_requested,
            slot,
            resume,
        })
    }

    /// Another instance took the webhook (or this one restarted): build the call again from the
    /// database, with the business, direction, caller and prompt version the signed token
    /// vouches for, so the call runs what the webhook chose.
    async fn rebuild(&self, claims: &CallToken, call_sid: &str) -> Result<CallSetup, NotAdmitted> {
        let business_id = claims.business_id.as_str();
        let business = match self.store.business(business_id).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::error!(
                    call_sid,
                    business_id,
                    "token names a business that does not exist"
                );
                return Err(NotAdmitted::CannotRebuild);
            }
            Err(e) => {
                tracing::error!(call_sid, business_id, error = %e, "cannot load the business");
                return Err(NotAdmitted::CannotRebuild);
            }
        };
        let resolved = resolve::chosen(
            &self.store,
            &business,
            claims.direction,
            &claims.caller,
            claims.prompt_version_id.as_deref(),
            claims.experiment.clone(),
        )
        .await;
        // A call we placed: its variables and who answered are with the placement.
        let placed = match claims.direction {
            Direction::Outbound => self.store.outbound_call(call_sid).await.unwrap_or_else(|e| {
                tracing::warn!(call_sid, error = %e, "cannot read the placed call; rebuilt without its variables");
                None
            }),
            Direction::Inbound => None,
        };
        let call_vars = placed
            .as_ref()
            .map(|p| p.variables.clone())
            .unwrap_or_default();
        let setup = match resolved {
            Ok(resolved) => {
                self.setup_with(
                    &business,
                    claims.direction,
                    &claims.caller,
                    &call_vars,
                    resolved,
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        let answerer =
            Answerer::from_answered_by(placed.as_ref().and_then(|p| p.answered_by.as_deref()));
        let setup = setup.map(|setup| self.answered_setup(setup, answerer, &business, &call_vars));
        let setup = setup.map_err(|e| {
            tracing::error!(call_sid, business_id, error = %e, "cannot set the call up");
            NotAdmitted::CannotRebuild
        })?;
        tracing::info!(call_sid, business_id, direction = %claims.direction,
            prompt_version = setup.prompt_version_id.as_deref().unwrap_or("business"),
            "call not pending here; rebuilt from the database");
        Ok(setup)
    }

    /// Runs an admitted call to its end on the Twilio socket `twilio`, whose `start` was read
    /// at `started_at`; then writes what it ended as.
    pub async fn run(
        &self,
        twilio: WebSocket,
        start: Start,
        started_at: Instant,
        admitted: Admitted,
    ) {
        let Admitted {
            setup,
            upstream,
            since_webhook,
            greeting_requested,
            slot,
            resume,
        } = admitted;
        // A call rebuilt here has its prompt recorded here; the webhook's instance recorded
        // the others'.
        if since_webhook.is_none() && setup.prompt_version_id.is_some() {
            self.records.write(Record::Prompt {
                call_sid: start.call_sid.to_string(),
                version_id: setup.prompt_version_id.clone(),
                experiment: setup.experiment.clone(),
            });
        }
        let max_duration = Duration::from_secs(
            setup
                .max_call_duration_s
                .unwrap_or(self.config.limits.max_call_duration_s),
        );

        self.metrics.live_calls.inc();
        self.call_stats.call_started(LiveCall {
            call_sid: start.call_sid.to_string(),
            business_id: setup.business_id.clone(),
            direction: setup.direction.as_str().to_string(),
            started_at_ms: store::now_ms(),
        });
        let report = session::run(
            twilio,
            upstream,
            SessionStart {
                start,
                started_at,
                prewarmed: since_webhook.is_some(),
                greeting_requested,
                setup,
                records: Some(self.records.clone()),
                closing: Some(self.lifecycle.closing()),
                max_duration: Some(max_duration),
                dialer: Some(self.dialer()),
                fallbacks: Some(self.fallbacks.clone()),
                transfers: Some(self.transfers.clone()),
                resume,
            },
            &self.session,
        )
        .await;
        drop(slot);

        self.metrics.live_calls.dec();
        let outcome = CallOutcome::of(&report);
        self.metrics.record_call(&report, &outcome, since_webhook);
        self.call_stats.call_ended(&outcome, store::now_ms());
        self.evaluate_alerts();
        let end = CallEnd {
            ended_at_ms: store::now_ms(),
            greeting_latency_ms: report.greeting_latency_ms.map(|ms| ms.round() as i64),
            end_reason: Some(report.end_reason.as_str().to_string()),
            summary: outcome.summary(),
        };
        self.records.write(Record::Finished {
            call_sid: report.call_sid.clone(),
            end,
        });
        let overall = self.echo_totals.add(&report.echo);
        tracing::info!(call_sid = %report.call_sid, echo_rate = report.echo.echo_rate(),
            echo_rate_overall = overall, "echo rate");
        if let Some(reports) = &self.reports {
            // Whoever reads the reports (the demo, the tests) may read the records next.
            self.records.settled(Duration::from_secs(5)).await;
            let _ = reports.send(report);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Setup

    /// The sanitizer with the configured rules, before any business's own: the checker
    /// [`crate::ops::rules::set`] runs a rule through before it is stored.
    pub fn sanitizer(&self) -> &Sanitizer {
        &self.sanitizer
    }

    /// What a call redials a lost upstream with: [`CallService::dial`] on the configured
    /// upstreams, in order, through their breakers.
    pub fn dialer(&self) -> crate::call::reconnect::Dialer {
        let upstreams = self.upstream.clone();
        let metrics = self.metrics.clone();
        Arc::new(move |session: SessionConfig| {
            let upstreams = upstreams.clone();
            let metrics = metrics.clone();
            Box::pin(async move { dial(&upstreams, &session, &metrics).await })
        })
    }

    /// Dials the upstream for a call and sends its first `session.update`, recording the
    /// connect time. Errors: as [`open_upstream`].
    pub async fn dial(&self, session: &SessionConfig) -> Result<Dialed, UpstreamError> {
        dial(&self.upstream, session, &self.metrics).await
    }

    /// Builds a call's setup: the business layer it runs (as [`resolve::for_new_call`]
    /// chooses), the business's sanitizer (the configured rules plus the business's own from
    /// the database), prompts with a fresh canary, session configuration. Read per call, so a
    /// promote takes effect with the next call and never changes a call in progress.
    ///
    /// Errors: the database failed, the business has no prompt for the direction, a business
    /// rule does not compile, or the business's prompt is unusable — each as a message naming
    /// the business.
    /// `call_vars` are the variables an outbound call was placed with (`call.NAME` in the
    /// prompt version's template).
    pub async fn call_setup(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        call_vars: &CallVars,
    ) -> Result<CallSetup, SetupError> {
        let resolved = resolve::for_new_call(&self.store, business, direction, caller).await?;
        self.setup_with(business, direction, caller, call_vars, resolved)
            .await
    }

    /// The setup for a resolved business layer: prompts from the cache (or built and cached),
    /// the business's sanitizer, the canary.
    async fn setup_with(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        call_vars: &CallVars,
        resolved: resolve::Resolved,
    ) -> Result<CallSetup, SetupError> {
        let sanitizer = self.sanitizer_for(business).await?;
        let tools = self.tools_for(business).await?;
        let prompts = self.prompts_for(business, direction, caller, call_vars, &resolved)?;
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
        )
        .with_tools(tools))
    }

    /// The business's tools for a call: its stored tools and the built-ins it has on. A stored
    /// function whose schema does not compile is left out and logged: the call runs without it.
    async fn tools_for(&self, business: &Business) -> Result<Arc<ToolSet>, SetupError> {
        let stored = self.store.tools(&business.id).await?;
        let (tools, skipped) =
            crate::tools::for_business(business, &stored, &self.session.tools.secrets);
        for (tool, error) in &skipped {
            tracing::warn!(business_id = %business.id, tool, %error,
                "a business tool does not compile; calls run without it");
        }
        Ok(Arc::new(tools))
    }

    /// The configured sanitizer, with the business's own rules when it has any: compiled once
    /// per set of rules and kept (keyed by business id, checked by a fingerprint of the rules),
    /// so a rule change reaches the next call. A stored rule that does not compile is left out,
    /// logged and counted (`voxrelay_guard_rules_skipped_total`) each time the set is compiled:
    /// the guard fails open for that rule, not closed for the business.
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
        let (compiled, _) = self
            .sanitizer_cache
            .get_or_build(&business.id, inputs, || {
                let overrides: Vec<RuleOverride> =
                    rules.iter().cloned().map(RuleOverride::from).collect();
                let (compiled, skipped) = self
                    .sanitizer
                    .with_overrides_skipping(&overrides)
                    .map_err(|e| SetupError::Rules {
                        business_id: business.id.clone(),
                        message: e.to_string(),
                    })?;
                for (rule, error) in &skipped {
                    tracing::warn!(
                        business_id = %business.id,
                        rule,
                        %error,
                        "a business guard rule does not compile; calls run without it"
                    );
                }
                if !skipped.is_empty() {
                    self.metrics
                        .guard_rules_skipped
                        .get_or_create(&BusinessLabels {
                            business_id: business.id.clone(),
                        })
                        .inc_by(skipped.len() as u64);
                }
                Ok::<_, SetupError>(compiled)
            })?;
        Ok(compiled)
    }

    /// FULL and COMPACT (without the canary) for a resolved business layer: from the prompt
    /// cache, keyed by version id (or the business's own-text key), unless the body renders
    /// per call (`call.*` variables).
    fn prompts_for(
        &self,
        business: &Business,
        direction: Direction,
        caller: &str,
        call_vars: &CallVars,
        resolved: &resolve::Resolved,
    ) -> Result<Arc<BuiltPrompts>, SetupError> {
        let version = resolved.version.as_ref();
        let build = || -> Result<BuiltPrompts, SetupError> {
            let text = match version {
                Some(v) => render_version(business, direction, caller, call_vars, v)?,
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

/// Dials the upstream while Twilio is still connecting the stream and, with `early_greeting`,
/// asks for the greeting at once, so its audio waits in the socket for the stream.
async fn prewarm(
    upstreams: Arc<Upstreams>,
    session: SessionConfig,
    metrics: Arc<Metrics>,
    early_greeting: bool,
    call_sid: CallSid,
    greeted: Arc<OnceLock<Instant>>,
) -> Result<Dialed, UpstreamError> {
    let started = Instant::now();
    let mut result = dial(&upstreams, &session, &metrics).await;
    if early_greeting && let Ok(Dialed { socket, .. }) = &mut result {
        use futures_util::SinkExt as _;
        let greeting = ClientEvent::ResponseCreate.to_json();
        match socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                greeting.into(),
            ))
            .await
        {
            Ok(()) => {
                let _ = greeted.set(Instant::now());
            }
            Err(e) => {
                result = Err(UpstreamError::Connect {
                    url: "(pre-warmed upstream)".into(),
                    source: Box::new(e),
                });
            }
        }
    }
    match &result {
        Ok(_) => tracing::debug!(%call_sid,
            connect_ms = started.elapsed().as_secs_f64() * 1000.0, "upstream pre-warmed"),
        Err(e) => tracing::warn!(%call_sid, error = %e, "upstream pre-warm failed"),
    }
    result
}

/// [`open_upstream`] on each upstream its breaker lets through, in order, until one answers;
/// the answering dial's duration is recorded as the upstream connect time. A dial that
/// answers on another upstream than the first counts as a failover; a failed one counts
/// toward its upstream's breaker.
///
/// Errors: the last upstream's error, when none answered.
async fn dial(
    upstreams: &Upstreams,
    session: &SessionConfig,
    metrics: &Metrics,
) -> Result<Dialed, UpstreamError> {
    let mut last = None;
    for i in upstreams.plan(Instant::now()) {
        let Some(target) = upstreams.targets().get(i) else {
            continue;
        };
        let labels = UpstreamLabels {
            upstream: target.name.clone(),
        };
        let started = Instant::now();
        match open_upstream(&target.settings, session).await {
            Ok(socket) => {
                metrics
                    .upstream_connect
                    .observe(started.elapsed().as_secs_f64());
                upstreams.succeeded(i);
                metrics.upstream_breaker_open.get_or_create(&labels).set(0);
                if i > 0 {
                    metrics.upstream_failovers.get_or_create(&labels).inc();
                    tracing::warn!(upstream = %target.name, "failed over: a later upstream answered");
                }
                return Ok(Dialed {
                    socket,
                    upstream: target.name.clone(),
                    position: i,
                });
            }
            Err(e) => {
                tracing::warn!(upstream = %target.name, error = %e, "upstream dial failed");
                if upstreams.failed(i, Instant::now()) {
                    metrics.upstream_breaker_open.get_or_create(&labels).set(1);
                    tracing::warn!(upstream = %target.name,
                        "upstream circuit breaker open: calls skip it until its cool-down ends");
                }
                last = Some(e);
            }
        }
    }
    Err(crate::realtime::failover::none_answered(last))
}

/// A version's body rendered with the call's values.
fn render_version(
    business: &Business,
    direction: Direction,
    caller: &str,
    call_vars: &CallVars,
    version: &PromptVersion,
) -> Result<String, SetupError> {
    let vars = TemplateVars {
        business_name: business.name.clone(),
        business_hours: Some(business.hours.clone()).filter(|h| !h.trim().is_empty()),
        language: business.language.clone(),
        caller: caller.to_string(),
        direction,
        call_vars: call_vars.clone(),
    };
    template::render(&version.body, &vars).map_err(|e| SetupError::Template {
        business_id: business.id.clone(),
        version_id: version.id.clone(),
        message: e.to_string(),
    })
}

/// The call's `From` and `To` as far as its token knows them: the customer's number on its
/// side (`From` inbound, `To` outbound), the other side unknown.
fn parties(claims: &CallToken) -> (String, String) {
    match claims.direction {
        Direction::Inbound => (claims.caller.clone(), String::new()),
        Direction::Outbound => (String::new(), claims.caller.clone()),
    }
}

/// Echo counts summed over finished calls.
#[derive(Debug, Default)]
struct EchoTotals {
    model_turns: std::sync::atomic::AtomicU64,
    echoes: std::sync::atomic::AtomicU64,
}

impl EchoTotals {
    /// Adds a finished call's counts; returns the overall echo rate (echoes per model turn,
    /// 0–1).
    fn add(&self, call: &crate::guard::echo::EchoStats) -> f64 {
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

    #[test]
    fn each_refusal_has_its_apology() {
        assert_eq!(Refusal::UnknownBusiness.apology(), UNKNOWN_NUMBER_SORRY);
        assert_eq!(Refusal::SetupFailed.apology(), SETUP_FAILED_SORRY);
        assert_eq!(Refusal::UnsupportedDirection.apology(), SETUP_FAILED_SORRY);
    }
}
