//! One call's task: relays audio both ways and carries out what [`CallState`] decides.
//!
//! The task owns every piece of the call's state, both sockets' reading halves, and both
//! writing halves as [`Leg`]s. A message is written into its socket by this task as soon as the
//! socket can take it; only under backpressure does it wait in the leg's bounded queue, where
//! audio beyond its share is dropped and counted, control messages (mark, clear,
//! session.update, truncate, cancel) keep room of their own, and a peer that takes nothing for
//! `audio.stall_limit_ms` ends the call ([`EndReason::TwilioStalled`],
//! [`EndReason::UpstreamStalled`]). Reading never waits for writing: a stalled Twilio socket
//! does not stop upstream reads, nor the reverse.
//!
//! Model audio counts as sent (playback position, marks, greeting and turn latency) only once
//! the Twilio leg has accepted it.
//!
//! The hot path does as little as possible: a Twilio media payload is moved into an
//! `input_audio_buffer.append` without decoding, and a model audio delta into a Twilio `media`
//! message the same way.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use tokio::sync::watch;

use axum::extract::ws::{Message as TwMessage, WebSocket};
use tokio_tungstenite::tungstenite::Message as UpMessage;

use crate::audio::mulaw::BYTES_PER_MS;
use crate::call::conversation::{Conversation, Speaker};
use crate::call::fallback::{self, Fallbacks};
use crate::call::guards::{self, CallGuards, GuardOutcome, Reaction};
use crate::call::hold_audio;
use crate::call::keypad::{self, Keypad, Press};
use crate::call::leg::{Leg, LegFault, LegLimits};
use crate::call::link_delay::LinkDelay;
use crate::call::reconnect::{self, DialFuture, Dialer, HeldAudio, Outage, ReconnectOptions};
use crate::call::records::{Record, Records};
use crate::call::setup::CallSetup;
use crate::call::state::{CallSettings, CallState, Command, GOODBYE_INSTRUCTIONS};
use crate::call::tool_calls::{Finished, Started, ToolCalls, ToolCallsOptions};
use crate::call::transfer::{Resume, Transfers};
use crate::domain::{CallSid, EndReason, ReconnectOutcome, RelayLeg, StreamSid};
use crate::realtime::events::{self as rt, ClientEvent, FunctionCall, ServerEvent};
use crate::realtime::failover::Dialed;
use crate::realtime::upstream::{UpstreamError, UpstreamSocket};
use crate::store::{NewCallEvent, NewToolCall, TransferTarget};
use crate::telemetry::metrics::{McpLabels, Metrics, RateLimitLabels, ReconnectLabels, ToolLabels};
use crate::telemetry::repeats::Repeats;
use crate::telemetry::timeline::{CallReport, TimelineEvent};
use crate::tools::Builtin;
use crate::tools::builtin::{END_CALL_OUTPUT, TRANSFER_OUTPUT};
use crate::twilio::media::{self as tw, Inbound, Start};

/// The leg that writes to Twilio.
type TwilioLeg = Leg<SplitSink<WebSocket, TwMessage>, TwMessage>;
/// The leg that writes to the upstream.
type UpstreamLeg = Leg<SplitSink<UpstreamSocket, UpMessage>, UpMessage>;

/// How long a healthy leg may take to write what is still queued, and its close frame, at the
/// end of a call.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// The same for a leg whose peer failed or stalled.
const FAULTED_CLOSE_LIMIT: Duration = Duration::from_millis(100);

/// Per-call tuning from the configuration.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Audio between marks, ms.
    pub mark_interval_ms: u64,
    /// What each leg may hold while its socket pushes back, and how long it may push back.
    pub leg_limits: LegLimits,
    /// The session's VAD has `interrupt_response: true`.
    pub server_cancels_on_speech: bool,
    /// Where the relay overhead and upstream timings are recorded.
    pub metrics: Arc<Metrics>,
    /// How long a goodbye may take before the call ends anyway.
    pub goodbye_limit: Duration,
    /// How long each peer may stay quiet.
    pub liveness: Liveness,
    /// What a lost upstream session is answered with (`[reconnect]`).
    pub reconnect: ReconnectOptions,
    /// From `start`, how long the caller may wait for the greeting's first audio before the
    /// call ends as [`EndReason::NoGreeting`] and falls back (`fallback.greeting_budget_ms`);
    /// `None`: no limit.
    pub greeting_budget: Option<Duration>,
    /// How keypad entries end (`[keypad]`): the pause after the last key, and the most keys.
    pub keypad: (Duration, usize),
    /// How tool calls are made (`[tools]`).
    pub tools: ToolCallsOptions,
}

/// How long each peer may send nothing mid-call (`[timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Twilio silent this long: a dead peer, the call ends
    /// ([`EndReason::TwilioSilent`]).
    pub twilio_quiet: Duration,
    /// Upstream silent this long: a WebSocket ping goes out, and again each such interval.
    pub upstream_ping: Duration,
    /// Upstream silent this long, pongs included: a dead upstream leg
    /// ([`EndReason::UpstreamSilent`]).
    pub upstream_quiet: Duration,
}

/// The sockets and identity of a call whose stream has started.
pub struct SessionStart {
    /// Twilio's `start` message.
    pub start: Start,
    /// When `start` arrived: the zero of the call's clock.
    pub started_at: Instant,
    /// Whether the upstream was pre-warmed by the webhook.
    pub prewarmed: bool,
    /// When the pre-warm sent the greeting's `response.create`, if it did.
    pub greeting_requested: Option<Instant>,
    /// Prompts and session configuration.
    pub setup: CallSetup,
    /// Where guard events are recorded (`call_events`, redacted); `None` records nothing.
    pub records: Option<Records>,
    /// Turns `true` when the call must say goodbye and end (`shutdown`): the drain deadline.
    pub closing: Option<watch::Receiver<bool>>,
    /// The longest the call may last from `started_at`; then it says goodbye and ends
    /// (`max_duration`).
    pub max_duration: Option<Duration>,
    /// Opens a new upstream session when this one is lost mid-call; `None`: a lost upstream
    /// ends the call.
    pub dialer: Option<Dialer>,
    /// Redirects the call to its business's fallback when no model can take it
    /// ([`fallback::falls_back`]), before the Twilio socket is closed; `None`: the call just
    /// ends.
    pub fallbacks: Option<Fallbacks>,
    /// Puts the call through to a person when the model calls `transfer_call`; `None`: every
    /// transfer fails (the model is told, and the call goes on).
    pub transfers: Option<Transfers>,
    /// The caller is back from a transfer nobody answered: the conversation is replayed and
    /// the model told the outcome before it speaks; `None`: a new call, greeted.
    pub resume: Option<Resume>,
}

struct Session {
    call_sid: CallSid,
    stream_sid: StreamSid,
    setup: CallSetup,
    state: CallState,
    guards: CallGuards,
    records: Option<Records>,
    twilio_out: TwilioLeg,
    /// `None` while a lost upstream is being replaced.
    upstream_out: Option<UpstreamLeg>,
    commands: Vec<Command>,
    /// What was said, for a restore.
    conversation: Conversation,
    /// Caller audio waiting for an upstream leg (during a reconnect, and while the new leg
    /// catches up).
    held: HeldAudio,
    /// Caller audio the upstream session has been sent since its last commit
    /// (`input_audio_buffer.committed`), kept only when a reconnect is possible: a lost
    /// session's input buffer goes with it, so these frames are sent again to the next one.
    uncommitted: Option<HeldAudio>,
    /// The reconnect in progress.
    outage: Option<Outage>,
    /// When to open the session that replaces this one before it expires.
    rollover_at: Option<Instant>,
    /// That session, open and configured, waiting for a turn boundary.
    standby: Option<Box<Dialed>>,
    /// Reconnects made so far.
    reconnects: u32,
    dialer: Option<Dialer>,
    reconnect: ReconnectOptions,
    leg_limits: LegLimits,
    metrics: Arc<Metrics>,
    /// When our last `response.create` went out, until its first audio arrives.
    response_requested_at: Option<Instant>,
    /// When the FULL `session.update` went out, until `session.updated`.
    upgrade_sent_at: Option<Instant>,
    /// How many bad frames each peer sent, for warnings that do not flood the log.
    warnings: BadFrames,
    /// When each peer last sent anything, and when the last ping went out.
    heard: Heard,
    /// The Twilio link's delay, from pings sent at the start and on each liveness tick.
    link: LinkDelay,
    /// The keypad entry in progress.
    keypad: Keypad,
    /// The model's tool calls.
    tool_calls: ToolCalls,
    /// Where the model asked to put the caller through (`transfer_call`), until the handoff
    /// line has played.
    transfer: Option<TransferTarget>,
}

impl Liveness {
    /// How often the limits are looked at: a quarter of the shortest, within 20 ms – 1 s.
    fn tick(&self) -> Duration {
        (self.twilio_quiet.min(self.upstream_ping) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// When each peer was last heard from, for the liveness limits.
#[derive(Debug, Clone, Copy)]
struct Heard {
    twilio: Instant,
    upstream: Instant,
    /// When the last ping went out; `None` since the upstream last spoke.
    pinged: Option<Instant>,
}

/// What the liveness clock asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Nothing due.
    Nothing,
    /// Ping the upstream.
    Ping,
    /// A peer has been quiet past its limit: end with this reason.
    Dead(EndReason),
}

impl Heard {
    fn new(now: Instant) -> Heard {
        Heard {
            twilio: now,
            upstream: now,
            pinged: None,
        }
    }

    /// What is due at `now` under `limits`.
    fn check(&self, limits: &Liveness, now: Instant) -> Quiet {
        let twilio_dead = self.twilio + limits.twilio_quiet;
        let upstream_dead = self.upstream + limits.upstream_quiet;
        if now >= twilio_dead {
            return Quiet::Dead(EndReason::TwilioSilent);
        }
        if now >= upstream_dead {
            return Quiet::Dead(EndReason::UpstreamSilent);
        }
        let next_ping = self.pinged.unwrap_or(self.upstream) + limits.upstream_ping;
        if now >= next_ping {
            return Quiet::Ping;
        }
        Quiet::Nothing
    }
}

/// Bad frames per peer.
#[derive(Debug, Default)]
struct BadFrames {
    twilio: Repeats,
    upstream: Repeats,
}

/// Why the loop stopped.
enum Flow {
    Continue,
    End(EndReason),
}

/// What woke the call's task.
enum Wake {
    Twilio(Option<Result<TwMessage, axum::Error>>),
    Upstream(Option<Result<UpMessage, tokio_tungstenite::tungstenite::Error>>),
    /// A leg finished writing what waited, or cannot go on.
    Written(Result<(), EndReason>),
    /// The call must say goodbye and end with this reason.
    Close(EndReason),
    /// A closing call's goodbye has played, or its limit came.
    Closed,
    /// A liveness limit may have come.
    Quiet,
    /// The greeting budget passed with no greeting audio.
    NoGreeting,
    /// A refused response is due to be asked for again.
    Retry,
    /// The pause after the last keypad key has passed.
    KeypadPause,
    /// A redial finished (the socket boxed: it is large, and this is rare).
    Dialed(Result<Box<Dialed>, UpstreamError>),
    /// The backoff before the next redial is over.
    Redial,
    /// A reconnect has gone on long enough for the hold clip.
    Hold,
    /// The session nears its expiry: open the one that replaces it.
    RolloverDue,
    /// The replacing session's dial finished.
    StandbyDialed(Result<Box<Dialed>, UpstreamError>),
    /// Nobody can signal closing any more.
    ClosingGone,
    /// A tool call's result (`None`: its channel closed, which cannot happen while the call
    /// holds its sender).
    ToolResult(Option<(String, crate::tools::invoke::ToolResult)>),
    /// A tool has run long enough after the model's audio for the hold clip.
    ToolHold,
}

/// The end reason of a leg's fault.
fn leg_end(fault: &LegFault, twilio: bool) -> EndReason {
    match (fault, twilio) {
        (LegFault::Socket(_), true) => EndReason::TwilioError,
        (LegFault::Socket(_), false) => EndReason::UpstreamError,
        (LegFault::Stalled(_) | LegFault::NoRoom, true) => EndReason::TwilioStalled,
        (LegFault::Stalled(_) | LegFault::NoRoom, false) => EndReason::UpstreamStalled,
    }
}

/// Writes what both legs can take now, without waiting. `Err` names the first leg that
/// cannot go on.
fn poll_legs(
    twilio: &mut TwilioLeg,
    upstream: Option<&mut UpstreamLeg>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<(), EndReason>> {
    let mut pending = false;
    if twilio.needs_write() {
        match twilio.poll_write(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(fault)) => {
                tracing::warn!(error = %fault, "Twilio leg cannot go on");
                return Poll::Ready(Err(leg_end(&fault, true)));
            }
            Poll::Pending => pending = true,
        }
    }
    if let Some(upstream) = upstream
        && upstream.needs_write()
    {
        match upstream.poll_write(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(fault)) => {
                tracing::warn!(error = %fault, "upstream leg cannot go on");
                return Poll::Ready(Err(leg_end(&fault, false)));
            }
            Poll::Pending => pending = true,
        }
    }
    if pending {
        Poll::Pending
    } else {
        Poll::Ready(Ok(()))
    }
}

/// Runs the call until Twilio stops, either socket closes or fails, or a peer stalls; then
/// closes both and reports.
pub async fn run(
    twilio: WebSocket,
    upstream: Dialed,
    begin: SessionStart,
    options: &SessionOptions,
) -> CallReport {
    let (twilio_sink, mut twilio_stream) = twilio.split();
    let Dialed {
        socket: upstream,
        upstream: upstream_name,
        position: upstream_position,
    } = upstream;
    let (upstream_sink, upstream_stream) = upstream.split();
    let mut upstream_stream = Some(upstream_stream);
    let twilio_out = Leg::new(
        twilio_sink,
        |t| TwMessage::Text(t.into()),
        options.leg_limits,
        options.metrics.relay_leg(RelayLeg::UpstreamToTwilio),
    );
    let upstream_out = Leg::new(
        upstream_sink,
        |t| UpMessage::Text(t.into()),
        options.leg_limits,
        options.metrics.relay_leg(RelayLeg::TwilioToUpstream),
    );
    let mut state = CallState::new(
        CallSettings {
            mark_interval_ms: options.mark_interval_ms,
            server_cancels_on_speech: options.server_cancels_on_speech,
            full_tokens: begin.setup.prompts.full_tokens,
            goodbye_limit: options.goodbye_limit,
        },
        begin.started_at,
    );
    state.record(
        TimelineEvent::StreamStarted {
            prewarmed: begin.prewarmed,
        },
        begin.started_at,
    );
    if let Some(failover) = failover_event(&upstream_name, upstream_position) {
        state.record(failover, begin.started_at);
    }
    state.record(
        TimelineEvent::Prompts {
            compact_tokens: begin.setup.prompts.compact_tokens,
            full_tokens: begin.setup.prompts.full_tokens,
        },
        begin.started_at,
    );
    let begin_greeting_requested = begin.greeting_requested;
    let guards = CallGuards::new(
        begin.setup.policy,
        begin.setup.sanitizer.clone(),
        &begin.setup.canary,
        &begin.setup.confidential,
    );
    let tool_calls = ToolCalls::new(
        begin.setup.tools.clone(),
        options.tools.clone(),
        begin.start.call_sid.as_str(),
        &begin.setup.business_id,
    );
    let mut session = Session {
        call_sid: begin.start.call_sid.clone(),
        stream_sid: begin.start.stream_sid.clone(),
        setup: begin.setup,
        state,
        guards,
        records: begin.records,
        twilio_out,
        upstream_out: Some(upstream_out),
        commands: Vec::with_capacity(8),
        conversation: Conversation::new(),
        held: HeldAudio::new(options.reconnect.hold_frames),
        uncommitted: (begin.dialer.is_some() && options.reconnect.max_per_call > 0)
            .then(|| HeldAudio::new(reconnect::QUIET_RESEND_FRAMES)),
        outage: None,
        rollover_at: None,
        standby: None,
        reconnects: 0,
        dialer: begin.dialer,
        reconnect: options.reconnect,
        leg_limits: options.leg_limits,
        metrics: options.metrics.clone(),
        response_requested_at: None,
        upgrade_sent_at: None,
        warnings: BadFrames::default(),
        heard: Heard::new(Instant::now()),
        link: LinkDelay::default(),
        keypad: Keypad::new(options.keypad.0, options.keypad.1),
        tool_calls,
        transfer: None,
    };
    session.ping_twilio(Instant::now());
    if let Some(resume) = begin.resume {
        session.resume(resume, Instant::now());
    }
    if session.setup.voicemail.is_some() {
        tracing::info!(call_sid = %session.call_sid, "an answering machine took the call: leaving the voicemail");
        session
            .state
            .leave_voicemail(Instant::now(), &mut session.commands);
    } else if let Some(requested) = begin_greeting_requested {
        session.state.greeting_requested_earlier(Instant::now());
        session.response_requested_at = Some(requested);
    } else {
        session.state.greet(Instant::now(), &mut session.commands);
    }
    session.dispatch();

    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut liveness_tick = tokio::time::interval(options.liveness.tick());
    liveness_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = begin.closing;
    let longest = begin
        .max_duration
        .map(|d| tokio::time::Instant::from_std(begin.started_at + d));
    let greeting_due = options
        .greeting_budget
        .map(|d| tokio::time::Instant::from_std(begin.started_at + d));
    let account_sid = begin.start.account_sid;
    let fallbacks = begin.fallbacks;
    let transfers = begin.transfers;
    // A redial in progress, and when the next one may start.
    let mut dialing: Option<DialFuture> = None;
    let mut redial_at: Option<tokio::time::Instant> = None;
    // The dial of a session opened ahead of an expiry.
    let mut standby_dialing: Option<DialFuture> = None;
    let reason = loop {
        // Held caller audio goes to the upstream leg as it has room, ahead of newer frames.
        session.send_held();
        // The direct write: whatever the last event queued goes out now, on this task.
        let written = poll_fn(|cx| {
            Poll::Ready(
                match poll_legs(&mut session.twilio_out, session.upstream_out.as_mut(), cx) {
                    Poll::Ready(Err(reason)) => Err(reason),
                    _ => Ok(()),
                },
            )
        })
        .await;
        let flow = 'wake: {
            if let Err(reason) = written {
                break 'wake Flow::End(reason);
            }
            let waiting = session.twilio_out.needs_write()
                || session.upstream_out.as_ref().is_some_and(Leg::needs_write);
            let stall_deadline = [
                session.twilio_out.stall_deadline(),
                session.upstream_out.as_ref().and_then(Leg::stall_deadline),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
            let close_due = session.state.close_due();
            let hold_due = session
                .outage
                .and_then(|o| o.hold_audio_due(&session.reconnect))
                .map(tokio::time::Instant::from_std);
            let retry_due = session
                .state
                .retry_due()
                .map(tokio::time::Instant::from_std);
            let keypad_due = session.keypad.due().map(tokio::time::Instant::from_std);
            let tool_hold_due = session
                .tool_calls
                .hold_due(session.state.plays_until())
                .map(tokio::time::Instant::from_std);
            let rollover_due = session
                .rollover_at
                .filter(|_| {
                    standby_dialing.is_none()
                        && session.standby.is_none()
                        && session.upstream_out.is_some()
                })
                .map(tokio::time::Instant::from_std);
            let wake = tokio::select! {
                message = twilio_stream.next() => Wake::Twilio(message),
                message = next_upstream(&mut upstream_stream) => Wake::Upstream(message),
                written = poll_fn(|cx| poll_legs(&mut session.twilio_out, session.upstream_out.as_mut(), cx)),
                    if waiting => Wake::Written(written),
                // A leg that takes nothing faults in `poll_legs` once its limit has passed.
                _ = tokio::time::sleep_until(stall_deadline.unwrap_or(far)), if stall_deadline.is_some()
                    => Wake::Written(Ok(())),
                dialed = dial_done(&mut dialing), if dialing.is_some() => Wake::Dialed(dialed.map(Box::new)),
                _ = tokio::time::sleep_until(redial_at.unwrap_or(far)), if redial_at.is_some()
                    => Wake::Redial,
                _ = tokio::time::sleep_until(hold_due.unwrap_or(far)), if hold_due.is_some()
                    => Wake::Hold,
                _ = tokio::time::sleep_until(rollover_due.unwrap_or(far)), if rollover_due.is_some()
                    => Wake::RolloverDue,
                dialed = dial_done(&mut standby_dialing), if standby_dialing.is_some()
                    => Wake::StandbyDialed(dialed.map(Box::new)),
                // The drain deadline: say goodbye and end.
                changed = closing_changed(&mut closing), if closing.is_some() && !session.state.is_closing() => {
                    if changed { Wake::Close(EndReason::Shutdown) } else { Wake::ClosingGone }
                }
                _ = tokio::time::sleep_until(longest.unwrap_or(far)),
                    if longest.is_some() && !session.state.is_closing() => Wake::Close(EndReason::MaxDuration),
                _ = tokio::time::sleep_until(retry_due.unwrap_or(far)), if retry_due.is_some()
                    => Wake::Retry,
                _ = tokio::time::sleep_until(keypad_due.unwrap_or(far)), if keypad_due.is_some()
                    => Wake::KeypadPause,
                result = session.tool_calls.next() => Wake::ToolResult(result),
                _ = tokio::time::sleep_until(tool_hold_due.unwrap_or(far)), if tool_hold_due.is_some()
                    => Wake::ToolHold,
                // No greeting audio in time: an upstream that opened and says nothing.
                _ = tokio::time::sleep_until(greeting_due.unwrap_or(far)),
                    if greeting_due.is_some() && session.state.greeting_latency_ms().is_none()
                    => Wake::NoGreeting,
                _ = tokio::time::sleep_until(close_due.map_or(far, |(at, _)| tokio::time::Instant::from_std(at))),
                    if close_due.is_some() => Wake::Closed,
                // One timer per call, not one per message: the limits are looked at each tick.
                _ = liveness_tick.tick() => Wake::Quiet,
            };
            match wake {
                Wake::Twilio(message) => session.on_twilio_message(message),
                Wake::Upstream(message) => session.on_upstream_message(message),
                Wake::Written(Ok(())) => Flow::Continue,
                Wake::Written(Err(reason)) => Flow::End(reason),
                Wake::Dialed(result) => {
                    dialing = None;
                    match result {
                        Ok(socket) => {
                            upstream_stream = Some(session.restore(*socket));
                            Flow::Continue
                        }
                        Err(e) => match session.next_dial(&e) {
                            Some(wait) => {
                                redial_at = Some(tokio::time::Instant::now() + wait);
                                Flow::Continue
                            }
                            None => Flow::End(EndReason::UpstreamLost),
                        },
                    }
                }
                Wake::Redial => {
                    redial_at = None;
                    dialing = session.dial();
                    Flow::Continue
                }
                Wake::Hold => {
                    session.play_hold_audio();
                    Flow::Continue
                }
                Wake::RolloverDue => {
                    session.rollover_at = None;
                    standby_dialing = session.dial_standby();
                    Flow::Continue
                }
                Wake::StandbyDialed(result) => {
                    standby_dialing = None;
                    match result {
                        Ok(socket) => session.standby = Some(socket),
                        Err(e) => {
                            // Tried again in a second; the expiry itself is met by a reconnect.
                            tracing::warn!(call_sid = %session.call_sid, error = %e,
                                "the session to roll over to could not be opened");
                            session.rollover_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                    Flow::Continue
                }
                Wake::Close(reason) => {
                    tracing::info!(call_sid = %session.call_sid, end_reason = %reason,
                        "the call must end: the model is asked to say goodbye");
                    session
                        .state
                        .close(reason, Instant::now(), &mut session.commands);
                    session.dispatch();
                    Flow::Continue
                }
                Wake::ClosingGone => {
                    closing = None;
                    Flow::Continue
                }
                Wake::Closed => match session.state.close_due() {
                    Some((due, EndReason::Transferred)) if due <= Instant::now() => {
                        session.put_through(&account_sid, transfers.as_ref()).await
                    }
                    Some((due, reason)) if due <= Instant::now() => Flow::End(reason),
                    _ => Flow::Continue,
                },
                Wake::Quiet => session.on_liveness_tick(&options.liveness),
                Wake::NoGreeting => Flow::End(EndReason::NoGreeting),
                Wake::KeypadPause => {
                    let now = Instant::now();
                    if let Some(digits) = session.keypad.flush(now) {
                        session.keypad_entry(&digits, now);
                    }
                    Flow::Continue
                }
                Wake::Retry => {
                    session
                        .state
                        .retry_now(Instant::now(), &mut session.commands);
                    session.dispatch();
                    Flow::Continue
                }
                Wake::ToolResult(Some((call_id, result))) => {
                    let now = Instant::now();
                    if let Some(finished) = session.tool_calls.on_result(&call_id, result, now) {
                        session.tool_done(finished);
                    }
                    Flow::Continue
                }
                Wake::ToolResult(None) => Flow::Continue,
                Wake::ToolHold => {
                    let ms = session.play_hold_clip();
                    session.tool_calls.on_hold_played(ms);
                    tracing::info!(call_sid = %session.call_sid, ms, "a tool is still running: hold audio played");
                    session
                        .state
                        .record(TimelineEvent::HoldAudio { ms }, Instant::now());
                    Flow::Continue
                }
            }
        };
        if let Flow::End(reason) = flow {
            if reason.is_upstream_loss()
                && session.upstream_out.is_some()
                && session.may_reconnect()
            {
                upstream_stream = None;
                session.lose_upstream(reason);
                match session.standby.take() {
                    // A session opened ahead is ready: no dial needed.
                    Some(socket) => upstream_stream = Some(session.restore(*socket)),
                    None => dialing = session.dial(),
                }
                continue;
            }
            break reason;
        }
        if session.standby.is_some()
            && let Some(stream) = session.roll_over()
        {
            upstream_stream = Some(stream);
        }
    };

    if let Some(fallbacks) = &fallbacks
        && fallback::falls_back(reason)
    {
        // While the Twilio socket is open: closing it first would end the call.
        let (action, delivered) = fallbacks
            .fall_back(
                &account_sid,
                &session.call_sid,
                &session.setup,
                reason,
                &options.metrics,
            )
            .await;
        session.state.record(
            TimelineEvent::Fallback { action, delivered },
            Instant::now(),
        );
    }
    session
        .state
        .record(TimelineEvent::Ended { reason }, Instant::now());
    let Session {
        call_sid,
        stream_sid,
        setup,
        state,
        guards,
        twilio_out,
        upstream_out,
        link,
        ..
    } = session;
    let limit = |faulted: bool| {
        if faulted {
            FAULTED_CLOSE_LIMIT
        } else {
            CLOSE_LIMIT
        }
    };
    let twilio_faulted = matches!(
        reason,
        EndReason::TwilioError | EndReason::TwilioStalled | EndReason::TwilioSilent
    );
    let upstream_faulted = matches!(
        reason,
        EndReason::UpstreamError
            | EndReason::UpstreamStalled
            | EndReason::UpstreamSilent
            | EndReason::UpstreamLost
    );
    let link_one_way_ms = link.one_way().as_millis() as u64;
    let peak_twilio = twilio_out.peak_waiting();
    let peak_upstream = upstream_out.as_ref().map_or(0, Leg::peak_waiting);
    let close_upstream = async move {
        if let Some(leg) = upstream_out {
            leg.close(UpMessage::Close(None), limit(upstream_faulted))
                .await;
        }
    };
    tokio::join!(
        close_upstream,
        twilio_out.close(TwMessage::Close(None), limit(twilio_faulted)),
    );
    let (greeting_latency_ms, turn_latencies_ms, mut counters, timeline) = state.into_parts();
    counters.peak_waiting_twilio = peak_twilio as u64;
    counters.peak_waiting_upstream = peak_upstream as u64;
    counters.twilio_link_one_way_ms = link_one_way_ms;
    let turn_heard_ms = timeline.heard_latencies_ms();
    let guard_counters = guards.counters();
    let echo = guards.echo_stats();
    tracing::info!(
        call_sid = %call_sid,
        business_id = %setup.business_id,
        direction = %setup.direction,
        end_reason = %reason,
        greeting_latency_ms = greeting_latency_ms.unwrap_or(-1.0),
        barge_ins = counters.barge_ins,
        turns = counters.turns,
        dropped_out = counters.dropped_out,
        dropped_in = counters.dropped_in,
        peak_waiting_twilio = peak_twilio,
        peak_waiting_upstream = peak_upstream,
        twilio_link_one_way_ms = link_one_way_ms,
        echo_rate = echo.echo_rate(),
        guard_blocked = guard_counters.blocked,
        "call ended"
    );
    CallReport {
        call_sid: call_sid.into(),
        stream_sid: stream_sid.into(),
        business_id: setup.business_id,
        direction: setup.direction,
        greeting_latency_ms,
        turn_latencies_ms,
        turn_heard_ms,
        end_reason: reason,
        counters,
        guards: guard_counters,
        echo,
        timeline,
    }
}

impl Session {
    /// A finished keypad entry: to the model as the caller's text (and to the conversation, for
    /// a restore), then an answer is asked for. Logged and recorded masked.
    fn keypad_entry(&mut self, digits: &str, now: Instant) {
        let text = keypad::entry_text(digits);
        tracing::info!(call_sid = %self.call_sid, entry = %keypad::mask(digits),
            "keypad entry to the model");
        self.conversation.caller_said(&text);
        if let Some(leg) = &mut self.upstream_out {
            leg.control(ClientEvent::UserText(&text).to_json());
        }
        self.state
            .on_keypad_entry(digits.chars().count(), now, &mut self.commands);
        self.dispatch();
    }

    /// Pings the Twilio socket for the link delay, unless a ping is still unanswered.
    fn ping_twilio(&mut self, now: Instant) {
        if let Some(payload) = self.link.ping(now) {
            self.twilio_out.frame(TwMessage::Ping(payload.into()));
        }
    }

    /// The liveness limits, looked at on their tick: ping a quiet upstream, end the call on a
    /// dead peer. The Twilio link is pinged too, for its delay.
    fn on_liveness_tick(&mut self, limits: &Liveness) -> Flow {
        let now = Instant::now();
        self.ping_twilio(now);
        if self.upstream_out.is_none() {
            // No upstream to hear from during a reconnect: its clock starts with the new one.
            self.heard.upstream = now;
            self.heard.pinged = None;
        }
        match self.heard.check(limits, now) {
            Quiet::Nothing => Flow::Continue,
            Quiet::Ping => {
                self.heard.pinged = Some(now);
                if let Some(leg) = &mut self.upstream_out {
                    leg.frame(UpMessage::Ping(Default::default()));
                }
                Flow::Continue
            }
            Quiet::Dead(reason) => {
                tracing::warn!(call_sid = %self.call_sid, end_reason = %reason,
                    "a peer sent nothing for too long: the call ends");
                Flow::End(reason)
            }
        }
    }

    fn on_twilio_message(&mut self, message: Option<Result<TwMessage, axum::Error>>) -> Flow {
        // A pong answers our ping and says nothing of the stream: Twilio sends a media frame
        // every 20 ms while the call lasts, and only that keeps the leg alive.
        if !matches!(message, Some(Ok(TwMessage::Pong(_)))) {
            self.heard.twilio = Instant::now();
        }
        match message {
            Some(Ok(TwMessage::Text(text))) => self.on_twilio(text.as_str()),
            Some(Ok(TwMessage::Binary(_))) => {
                tracing::warn!(call_sid = %self.call_sid, "binary frame from Twilio skipped");
                self.state.on_malformed(true);
                Flow::Continue
            }
            Some(Ok(TwMessage::Close(_))) | None => Flow::End(EndReason::TwilioClosed),
            Some(Ok(TwMessage::Pong(payload))) => {
                if self.link.on_pong(&payload, Instant::now()) {
                    self.state.set_twilio_link_delay(self.link.one_way());
                }
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
            Some(Err(e)) => {
                tracing::warn!(call_sid = %self.call_sid, error = %e, "Twilio socket error");
                Flow::End(EndReason::TwilioError)
            }
        }
    }

    fn on_upstream_message(
        &mut self,
        message: Option<Result<UpMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Flow {
        self.heard.upstream = Instant::now();
        self.heard.pinged = None;
        match message {
            Some(Ok(UpMessage::Text(text))) => self.on_upstream(text.as_str()),
            Some(Ok(UpMessage::Close(frame))) => {
                tracing::warn!(call_sid = %self.call_sid, ?frame, "upstream closed the session");
                Flow::End(EndReason::UpstreamClosed)
            }
            None => Flow::End(EndReason::UpstreamClosed),
            Some(Ok(UpMessage::Binary(_))) => {
                self.state.on_malformed(false);
                Flow::Continue
            }
            Some(Ok(_)) => Flow::Continue,
            Some(Err(e)) => {
                tracing::warn!(call_sid = %self.call_sid, error = %e, "upstream socket error");
                Flow::End(EndReason::UpstreamError)
            }
        }
    }

    fn on_twilio(&mut self, text: &str) -> Flow {
        let received = Instant::now();
        match tw::parse(text) {
            Ok(Inbound::Media { payload, .. }) if tw::is_base64_audio(&payload) => {
                let append = ClientEvent::Append(&payload).to_json();
                match &mut self.upstream_out {
                    // Straight through, unless held audio still waits ahead of it.
                    Some(leg) if self.held.is_empty() => {
                        if let Some(uncommitted) = &mut self.uncommitted {
                            uncommitted.push(append.clone());
                        }
                        let queued = leg.audio(append, received);
                        self.state.on_caller_frame(queued);
                    }
                    _ => {
                        if let Some(outage) = &mut self.outage {
                            outage.held_frames += 1;
                        }
                        let kept_all = self.held.push(append);
                        self.state.on_caller_frame(true);
                        if !kept_all {
                            // The oldest held frame went to make room.
                            self.state.on_held_frame_dropped();
                        }
                    }
                }
            }
            Ok(Inbound::Media { .. }) => {
                self.state.on_malformed(true);
                if let Some(seen) = self.warnings.twilio.count() {
                    tracing::warn!(call_sid = %self.call_sid, seen,
                        "Twilio media payload is not base64 audio; not forwarded");
                }
            }
            Ok(Inbound::Mark { name }) => self.state.on_mark(&name, Instant::now()),
            Ok(Inbound::Stop) => return Flow::End(EndReason::Stop),
            Ok(Inbound::Dtmf { digit }) => {
                let now = Instant::now();
                match self.keypad.press(&digit, now) {
                    Press::Collected => {}
                    Press::Entry(digits) => self.keypad_entry(&digits, now),
                    Press::Ignored => {
                        tracing::warn!(call_sid = %self.call_sid, "a dtmf message with no single key skipped");
                    }
                }
            }
            Ok(Inbound::Connected) | Ok(Inbound::Start(_)) => {}
            Ok(Inbound::Unknown { event }) => {
                tracing::debug!(call_sid = %self.call_sid, event = %event, "unknown Twilio event skipped");
            }
            Err(e) => {
                self.state.on_malformed(true);
                if let Some(seen) = self.warnings.twilio.count() {
                    tracing::warn!(call_sid = %self.call_sid, error = %e, seen,
                        "malformed Twilio frame skipped");
                }
            }
        }
        Flow::Continue
    }

    fn on_upstream(&mut self, text: &str) -> Flow {
        let now = Instant::now();
        let event = match rt::parse(text) {
            Ok(event) => event,
            Err(e) => {
                self.state.on_malformed(false);
                if let Some(seen) = self.warnings.upstream.count() {
                    tracing::warn!(call_sid = %self.call_sid, error = %e, seen,
                        "malformed upstream frame skipped");
                }
                return Flow::Continue;
            }
        };
        match event {
            ServerEvent::AudioDelta {
                response_id,
                item_id,
                delta,
            } => {
                if let Some(requested) = self.response_requested_at.take() {
                    self.metrics
                        .upstream_first_audio
                        .observe(now.saturating_duration_since(requested).as_secs_f64());
                }
                if self.state.should_forward(response_id.as_deref()) {
                    if self
                        .twilio_out
                        .audio(tw::media(&self.stream_sid, &delta), now)
                    {
                        let bytes = rt::base64_decoded_len(&delta) as u64;
                        self.conversation.model_audio(&item_id, bytes);
                        if let Some(name) = self.state.on_audio_queued(&item_id, bytes, now) {
                            self.twilio_out.control(tw::mark(&self.stream_sid, &name));
                        }
                    } else {
                        self.state.on_audio_dropped();
                    }
                }
            }
            ServerEvent::SpeechStarted { .. } => {
                if let Some(uncommitted) = &mut self.uncommitted {
                    // The utterance is kept whole until it is committed.
                    uncommitted.set_cap(self.reconnect.hold_frames);
                }
                if self.state.on_speech_started(now, &mut self.commands) {
                    self.dispatch();
                    let reaction = now.elapsed().as_micros() as u64;
                    self.state.set_last_barge_in_reaction(reaction);
                    tracing::info!(call_sid = %self.call_sid, reaction_us = reaction, "barge-in: Twilio cleared");
                }
            }
            ServerEvent::SpeechStopped { .. } => self.state.on_speech_stopped(now),
            ServerEvent::ResponseCreated { response_id } => {
                self.state.on_response_created(&response_id, now)
            }
            ServerEvent::AudioDone { .. } => {
                self.state.on_audio_done(&mut self.commands);
                self.dispatch();
            }
            ServerEvent::FunctionCall(call) => self.on_function_call(call, now),
            ServerEvent::ResponseDone {
                response_id,
                status,
                usage,
                failure,
                function_calls,
            } => {
                if let Some(failure) = &failure {
                    tracing::warn!(call_sid = %self.call_sid, code = failure.label(),
                        retryable = failure.is_retryable(), "upstream response failed");
                }
                self.state.on_response_done(
                    response_id.as_deref(),
                    status.as_deref(),
                    usage,
                    failure.as_ref(),
                    now,
                    &mut self.commands,
                );
                self.dispatch();
                // Calls only `response.done` carried (the `.done` events came first otherwise).
                for call in function_calls {
                    self.on_function_call(call, now);
                }
            }
            ServerEvent::OutputTranscriptDelta { item_id, delta } => {
                self.conversation.model_words(item_id.as_deref(), &delta);
            }
            ServerEvent::OutputTranscriptDone {
                item_id,
                transcript,
            } => {
                self.conversation
                    .model_said(item_id.as_deref(), &transcript);
                let outcome = self.guards.model_transcript(&transcript, now);
                self.state.on_transcript(false, transcript, now);
                self.guard(outcome, None, now);
            }
            ServerEvent::InputTranscriptCompleted {
                item_id,
                transcript,
            } => {
                let outcome = self.guards.caller_transcript(&transcript, now);
                // What the guards take out of the model's context stays out of a restore.
                if !matches!(
                    outcome.reaction,
                    Reaction::BlockInjection | Reaction::DropSelfEcho
                ) {
                    self.conversation.caller_said(&transcript);
                }
                self.state.on_transcript(true, transcript, now);
                self.guard(outcome, item_id.as_deref(), now);
            }
            ServerEvent::InputTranscriptFailed { item_id } => {
                tracing::warn!(call_sid = %self.call_sid, item_id = item_id.as_deref().unwrap_or(""),
                    "caller transcription failed");
                let outcome = self.guards.caller_transcript_failed();
                self.guard(outcome, item_id.as_deref(), now);
            }
            ServerEvent::Error {
                kind,
                code,
                message,
            } => {
                let benign = self.state.on_error(code.as_deref(), now);
                if rt::ends_session(kind.as_deref(), code.as_deref()) && self.may_reconnect() {
                    tracing::warn!(call_sid = %self.call_sid, code = code.as_deref().unwrap_or(""),
                        kind = kind.as_deref().unwrap_or(""), %message,
                        "upstream error ends the session");
                    return Flow::End(if code.as_deref() == Some("session_expired") {
                        EndReason::UpstreamClosed
                    } else {
                        EndReason::UpstreamError
                    });
                }
                if benign {
                    tracing::info!(call_sid = %self.call_sid, code = code.as_deref().unwrap_or(""), %message, "benign upstream error");
                } else {
                    tracing::warn!(call_sid = %self.call_sid, code = code.as_deref().unwrap_or(""), %message, "upstream error");
                }
                self.dispatch();
            }
            ServerEvent::SessionUpdated => {
                if let Some(sent) = self.upgrade_sent_at.take() {
                    self.metrics
                        .session_update
                        .observe(now.saturating_duration_since(sent).as_secs_f64());
                }
            }
            ServerEvent::SessionCreated { expires_at } => {
                let expires_in_s = expires_at.map(|at| at - crate::store::now_ms() / 1000);
                tracing::debug!(call_sid = %self.call_sid, expires_in_s = expires_in_s.unwrap_or(-1),
                    "upstream session created");
                self.state
                    .record(TimelineEvent::UpstreamSession { expires_in_s }, now);
                if let (Some(secs), Some(margin), true) = (
                    expires_in_s,
                    self.reconnect.rollover_margin,
                    self.may_reconnect(),
                ) {
                    let left = Duration::from_secs(secs.max(0) as u64);
                    self.rollover_at = Some(now + left.saturating_sub(margin));
                }
            }
            ServerEvent::RateLimits { limits } => {
                self.state.on_rate_limits(&limits, now);
                for limit in &limits {
                    self.metrics
                        .upstream_rate_limit_remaining
                        .get_or_create(&RateLimitLabels {
                            name: limit.name.as_str(),
                        })
                        .set(i64::try_from(limit.remaining).unwrap_or(i64::MAX));
                    if limit.limit > 0 && limit.remaining.saturating_mul(10) < limit.limit {
                        tracing::warn!(call_sid = %self.call_sid, limit = limit.name.as_str(),
                            remaining = limit.remaining, of = limit.limit,
                            reset_seconds = limit.reset_seconds,
                            "upstream rate limit below 10% of its window");
                    }
                }
            }
            ServerEvent::Committed => {
                if let Some(uncommitted) = &mut self.uncommitted {
                    uncommitted.clear();
                    uncommitted.set_cap(reconnect::QUIET_RESEND_FRAMES);
                }
            }
            ServerEvent::Mcp(event) => {
                self.metrics
                    .mcp_events
                    .get_or_create(&McpLabels {
                        event: event.as_str(),
                    })
                    .inc();
                if event.is_failure() {
                    tracing::warn!(call_sid = %self.call_sid, event = %event, "an MCP tool failed upstream");
                    self.state
                        .record(TimelineEvent::McpFailed { mcp_event: event }, now);
                }
            }
            ServerEvent::Truncated { .. } | ServerEvent::Other { .. } => {}
        }
        Flow::Continue
    }

    /// Records a guard decision and carries out its reaction.
    fn guard(&mut self, outcome: GuardOutcome, user_item: Option<&str>, now: Instant) {
        if let Some(record) = outcome.record {
            let stage = record.stage.map_or("", |s| s.as_str());
            if record.action.is_routine() {
                // Every caller turn has one; the row is the record, the log stays quiet.
                tracing::debug!(
                    call_sid = %self.call_sid,
                    action = %record.action,
                    score = record.score.unwrap_or(0.0),
                    stage,
                    "guard decision"
                );
            } else {
                tracing::info!(
                    call_sid = %self.call_sid,
                    business_id = %self.setup.business_id,
                    kind = %record.kind,
                    action = %record.action,
                    score = record.score.unwrap_or(0.0),
                    stage,
                    rules = %record.rules.join(","),
                    "guard decision"
                );
                self.state.record(
                    TimelineEvent::Guard {
                        kind: record.kind,
                        action: record.action,
                        score: record.score,
                        stage: record.stage,
                        rules: record.rules.clone(),
                    },
                    now,
                );
            }
            if let Some(records) = &self.records {
                records.write(Record::Event(NewCallEvent {
                    call_sid: self.call_sid.to_string(),
                    business_id: self.setup.business_id.clone(),
                    at_ms: crate::store::now_ms(),
                    kind: record.kind,
                    score: record.score,
                    rules: record.rules,
                    action: record.action,
                    detail: record.detail,
                    verdict: record.verdict,
                    stage: record.stage,
                }));
            }
        }
        self.state
            .apply_reaction(&outcome.reaction, user_item, now, &mut self.commands);
        self.dispatch();
    }

    /// Sends what the state machine decided, in order. Upstream messages have nowhere to go
    /// during a reconnect; the state machine asks for no response then (it owes it to the
    /// restored session instead), and what else it decides (a truncate, a delete) names items
    /// of the lost session.
    fn dispatch(&mut self) {
        for command in std::mem::take(&mut self.commands) {
            let upstream = match command {
                Command::TwilioClear => {
                    self.twilio_out.control(tw::clear(&self.stream_sid));
                    None
                }
                Command::TwilioMark(name) => {
                    self.twilio_out.control(tw::mark(&self.stream_sid, &name));
                    None
                }
                Command::ResponseCreate => {
                    self.response_requested_at = Some(Instant::now());
                    Some(ClientEvent::ResponseCreate.to_json())
                }
                Command::ResponseCancel => Some(ClientEvent::ResponseCancel.to_json()),
                Command::Truncate {
                    item_id,
                    audio_end_ms,
                } => {
                    tracing::info!(call_sid = %self.call_sid, item_id = %item_id, audio_end_ms, "truncate to heard audio");
                    self.conversation.model_cut(&item_id, audio_end_ms);
                    Some(
                        ClientEvent::Truncate {
                            item_id: &item_id,
                            audio_end_ms,
                        }
                        .to_json(),
                    )
                }
                Command::DeleteItem(item_id) => Some(ClientEvent::DeleteItem(&item_id).to_json()),
                Command::SystemMessage(text) => Some(ClientEvent::SystemMessage(text).to_json()),
                Command::SafeResponse => {
                    self.response_requested_at = Some(Instant::now());
                    Some(ClientEvent::ResponseWithInstructions(guards::SAFE_REPLY).to_json())
                }
                Command::GoodbyeResponse => {
                    self.response_requested_at = Some(Instant::now());
                    // An answering machine's goodbye is the voicemail.
                    let instructions = self
                        .setup
                        .voicemail
                        .as_deref()
                        .unwrap_or(GOODBYE_INSTRUCTIONS);
                    Some(ClientEvent::ResponseWithInstructions(instructions).to_json())
                }
                Command::UpgradeInstructions => {
                    tracing::info!(
                        call_sid = %self.call_sid,
                        business_id = %self.setup.business_id,
                        direction = %self.setup.direction,
                        full_tokens = self.setup.prompts.full_tokens,
                        "upgrade: session.update with FULL instructions"
                    );
                    self.upgrade_sent_at = Some(Instant::now());
                    Some(ClientEvent::SessionInstructions(&self.setup.prompts.full).to_json())
                }
            };
            if let (Some(text), Some(leg)) = (upstream, &mut self.upstream_out) {
                leg.control(text);
            }
        }
    }

    /// Whether a lost upstream may be replaced: a dialer, and reconnects left.
    fn may_reconnect(&self) -> bool {
        self.dialer.is_some() && self.reconnects < self.reconnect.max_per_call
    }

    /// The upstream session is lost (`cause`): its leg is closed in the background, caller
    /// audio is held from now on, and the state machine remembers what the session owed.
    fn lose_upstream(&mut self, cause: EndReason) {
        let now = Instant::now();
        tracing::warn!(call_sid = %self.call_sid, %cause, reconnects = self.reconnects,
            "upstream session lost: reconnecting with the conversation restored");
        self.metrics
            .upstream_reconnects
            .get_or_create(&ReconnectLabels {
                outcome: ReconnectOutcome::Lost.as_str(),
            })
            .inc();
        if let Some(leg) = self.upstream_out.take() {
            tokio::spawn(leg.close(UpMessage::Close(None), FAULTED_CLOSE_LIMIT));
        }
        self.conversation.session_ended(self.state.playing(now));
        self.state.on_upstream_lost(cause, now);
        self.response_requested_at = None;
        self.upgrade_sent_at = None;
        // The next session's own expiry schedules the next rollover.
        self.rollover_at = None;
        let mut outage = Outage::new(now);
        if let Some(uncommitted) = &mut self.uncommitted {
            outage.resent_frames = self.held.resend_first(uncommitted);
        }
        self.outage = Some(outage);
    }

    /// Starts a dial of the new session, limited to what is left of the reconnect budget:
    /// FULL instructions with the call's voice, VAD and transcription.
    fn dial(&mut self) -> Option<DialFuture> {
        let outage = self.outage.as_mut()?;
        outage.attempts += 1;
        let left = outage
            .deadline(&self.reconnect)
            .saturating_duration_since(Instant::now());
        self.dial_full(left, "(reconnect budget)")
    }

    /// A dial of a new session with the FULL instructions and the call's voice, VAD and
    /// transcription, failing as a timeout named `what` after `limit`; `None` without a dialer.
    fn dial_full(&self, limit: Duration, what: &'static str) -> Option<DialFuture> {
        let dialer = self.dialer.as_ref()?;
        let mut session = self.setup.session.clone();
        session.instructions = self.setup.prompts.full.clone();
        let dial = dialer(session);
        Some(Box::pin(async move {
            match tokio::time::timeout(limit, dial).await {
                Ok(result) => result,
                Err(_) => Err(UpstreamError::Timeout {
                    url: what.into(),
                    timeout_ms: limit.as_millis() as u64,
                }),
            }
        }))
    }

    /// A redial failed: the wait before the next one, or `None` when the budget is spent
    /// (recorded; the call ends as [`EndReason::UpstreamLost`]).
    fn next_dial(&mut self, error: &UpstreamError) -> Option<Duration> {
        let outage = self.outage?;
        let now = Instant::now();
        let wait = reconnect::backoff(outage.attempts + 1);
        tracing::warn!(call_sid = %self.call_sid, %error, attempts = outage.attempts, "upstream redial failed");
        if now + wait < outage.deadline(&self.reconnect) {
            return Some(wait);
        }
        let waited_ms = now.saturating_duration_since(outage.since).as_secs_f64() * 1000.0;
        tracing::error!(call_sid = %self.call_sid, attempts = outage.attempts, waited_ms,
            "no new upstream session within the reconnect budget: the call ends");
        self.metrics
            .upstream_reconnects
            .get_or_create(&ReconnectLabels {
                outcome: ReconnectOutcome::Failed.as_str(),
            })
            .inc();
        self.state.record(
            TimelineEvent::ReconnectFailed {
                attempts: outage.attempts,
                waited_ms,
            },
            now,
        );
        None
    }

    /// A new session is open (its `session.update` with FULL sent by the dialer): the
    /// conversation is replayed, the held audio follows, then the response the lost session
    /// owed. Returns the new session's reading half.
    fn restore(&mut self, dialed: Dialed) -> SplitStream<UpstreamSocket> {
        let now = Instant::now();
        let (stream, replayed) = self.seed(dialed, now);
        self.reconnects += 1;
        let outage = self.outage.take().unwrap_or(Outage::new(now));
        let gap = now.saturating_duration_since(outage.since);
        self.metrics.upstream_reconnect.observe(gap.as_secs_f64());
        self.metrics
            .upstream_reconnects
            .get_or_create(&ReconnectLabels {
                outcome: ReconnectOutcome::Restored.as_str(),
            })
            .inc();
        let gap_ms = gap.as_secs_f64() * 1000.0;
        tracing::info!(call_sid = %self.call_sid, gap_ms, attempts = outage.attempts,
            replayed, held = self.held.len(), "upstream session restored");
        self.state.record(
            TimelineEvent::Reconnected {
                gap_ms,
                attempts: outage.attempts,
                replayed,
                held_frames: outage.held_frames,
                resent_frames: outage.resent_frames,
            },
            now,
        );
        // The held audio goes before the response is asked for, so the model hears the
        // caller's words first.
        self.send_held();
        self.state.on_upstream_restored(now, &mut self.commands);
        self.dispatch();
        stream
    }

    /// Makes `socket` (its `session.update` with FULL sent by the dialer) the call's upstream
    /// leg, with the conversation so far replayed into it as text items ahead of any audio.
    /// Returns its reading half and the number of items replayed.
    fn seed(&mut self, dialed: Dialed, now: Instant) -> (SplitStream<UpstreamSocket>, usize) {
        if let Some(failover) = failover_event(&dialed.upstream, dialed.position) {
            self.state.record(failover, now);
        }
        let (sink, stream) = dialed.socket.split();
        let leg = Leg::new(
            sink,
            |t| UpMessage::Text(t.into()),
            self.leg_limits,
            self.metrics.relay_leg(RelayLeg::TwilioToUpstream),
        );
        self.upstream_out = Some(leg);
        let replayed = self.replay_conversation();
        self.heard = Heard {
            upstream: now,
            pinged: None,
            ..self.heard
        };
        (stream, replayed)
    }

    /// Writes the conversation so far into the upstream leg as text items (the newest that
    /// fit `reconnect.restore_tokens`), ahead of anything else; returns how many.
    fn replay_conversation(&mut self) -> usize {
        let Some(leg) = &mut self.upstream_out else {
            return 0;
        };
        let replay = self.conversation.replay(self.reconnect.restore_tokens);
        for turn in &replay {
            leg.control(match turn.speaker {
                Speaker::Caller => ClientEvent::UserText(&turn.text).to_json(),
                Speaker::Model => ClientEvent::AssistantText(&turn.text).to_json(),
            });
        }
        replay.len()
    }

    /// The caller is back from a transfer nobody answered: the conversation before it is
    /// replayed into the new session, then a system item with the outcome
    /// ([`crate::call::transfer::return_note`]); the greeting that follows is the model's
    /// answer to it.
    fn resume(&mut self, resume: Resume, now: Instant) {
        let note = resume.note();
        self.state.started_full(now);
        self.conversation = resume.conversation;
        let replayed = self.replay_conversation();
        if let Some(leg) = &mut self.upstream_out {
            leg.control(ClientEvent::SystemMessage(&note).to_json());
        }
        tracing::info!(call_sid = %self.call_sid, target = %resume.target, outcome = %resume.outcome,
            replayed, "caller back from a transfer: conversation restored");
        self.state.record(
            TimelineEvent::TransferReturned {
                target: resume.target,
                outcome: resume.outcome,
                replayed,
            },
            now,
        );
    }

    /// The handoff line has played: the live call is redirected to `<Dial>` the target, while
    /// its stream is open. Taken: the conversation is parked for a return and the call ends
    /// as [`EndReason::Transferred`]. Not taken (no credentials, Twilio refused): the model is
    /// told and the call goes on.
    async fn put_through(&mut self, account_sid: &str, transfers: Option<&Transfers>) -> Flow {
        let now = Instant::now();
        let Some(target) = self.transfer.take() else {
            return Flow::End(EndReason::Transferred);
        };
        let result = match transfers {
            Some(transfers) => transfers
                .put_through(account_sid, &self.call_sid, &self.setup, &target)
                .await
                .map(|()| transfers),
            None => Err(crate::call::transfer::TransferError::NoCredentials),
        };
        self.state.record(
            TimelineEvent::TransferDialed {
                target: target.name.clone(),
                delivered: result.is_ok(),
            },
            Instant::now(),
        );
        match result {
            Ok(transfers) => {
                tracing::info!(call_sid = %self.call_sid, target = %target.name,
                    redirect_ms = now.elapsed().as_secs_f64() * 1000.0,
                    "call put through to a person (<Dial>)");
                self.conversation.session_ended(None);
                transfers.park(&self.call_sid, std::mem::take(&mut self.conversation));
                Flow::End(EndReason::Transferred)
            }
            Err(error) => {
                tracing::error!(call_sid = %self.call_sid, target = %target.name, %error,
                    "the transfer could not be made: the call goes on with the model");
                self.state.transfer_failed(&mut self.commands);
                self.dispatch();
                Flow::Continue
            }
        }
    }

    /// Starts opening the session that will replace the current one before it expires.
    fn dial_standby(&self) -> Option<DialFuture> {
        self.dial_full(self.reconnect.budget, "(rollover)")
    }

    /// At a turn boundary with a session opened ahead: the call moves to it. The old session
    /// is closed normally; the new one gets the conversation and the caller audio the old one
    /// had not committed, so the caller hears no gap and no frame is lost.
    fn roll_over(&mut self) -> Option<SplitStream<UpstreamSocket>> {
        let now = Instant::now();
        if self.upstream_out.is_none() || !self.state.at_turn_boundary(now) {
            return None;
        }
        let socket = self.standby.take()?;
        if let Some(leg) = self.upstream_out.take() {
            tokio::spawn(leg.close(UpMessage::Close(None), CLOSE_LIMIT));
        }
        self.conversation.session_ended(None);
        let (stream, replayed) = self.seed(*socket, now);
        let resent = match &mut self.uncommitted {
            Some(uncommitted) => self.held.resend_first(uncommitted),
            None => 0,
        };
        self.send_held();
        self.state.on_rollover(replayed, resent, now);
        self.metrics
            .upstream_reconnects
            .get_or_create(&ReconnectLabels {
                outcome: ReconnectOutcome::Rollover.as_str(),
            })
            .inc();
        tracing::info!(call_sid = %self.call_sid, replayed, resent,
            "upstream session rolled over before its expiry");
        Some(stream)
    }

    /// The reconnect has taken long enough: the caller hears "one moment, please" in the
    /// business's language, once per reconnect. It is sent as outbound media, counted by the
    /// playback clock and marked like model audio.
    fn play_hold_audio(&mut self) {
        let Some(outage) = &mut self.outage else {
            return;
        };
        outage.hold_played = true;
        let ms = self.play_hold_clip();
        tracing::info!(call_sid = %self.call_sid, ms, "reconnect still going: hold audio played");
        self.state
            .record(TimelineEvent::HoldAudio { ms }, Instant::now());
    }

    /// Sends the hold clip ("one moment, please" in the business's language) to Twilio as
    /// outbound media, counted by the playback clock and marked like model audio, its tail
    /// marked too. Returns its length, ms.
    fn play_hold_clip(&mut self) -> u64 {
        let now = Instant::now();
        let clip = hold_audio::clip_for(self.setup.session.language.as_deref());
        let mut sent = 0u64;
        for (payload, bytes) in hold_audio::chunks(clip) {
            if !self
                .twilio_out
                .audio(tw::media(&self.stream_sid, &payload), now)
            {
                self.state.on_audio_dropped();
                break;
            }
            sent += bytes;
            if let Some(name) = self.state.on_hold_audio_queued(bytes, now) {
                self.twilio_out.control(tw::mark(&self.stream_sid, &name));
            }
        }
        self.state.on_audio_done(&mut self.commands);
        self.dispatch();
        sent / BYTES_PER_MS as u64
    }

    /// The model called a function (`call`, at `now`): a built-in is carried out, a business
    /// tool is called (its result arrives as [`Wake::ToolResult`]), anything else is answered
    /// at once with an error output.
    fn on_function_call(&mut self, call: FunctionCall, now: Instant) {
        let tool = call.name.clone();
        match self.tool_calls.on_call(call, now) {
            Started::Duplicate => {}
            Started::Builtin(Builtin::EndCall, call) => {
                tracing::info!(call_sid = %self.call_sid, "the model ends the call (end_call): hang-up once the goodbye has played");
                self.state
                    .record(TimelineEvent::ToolCalled { tool: tool.clone() }, now);
                self.answer_builtin(&call, END_CALL_OUTPUT, crate::domain::ToolStatus::Handled);
                self.state.hang_up(now);
            }
            Started::Builtin(Builtin::TransferCall, call) => {
                self.state
                    .record(TimelineEvent::ToolCalled { tool: tool.clone() }, now);
                self.transfer_call(&call, now);
            }
            Started::Answered(finished) => {
                self.state.record(TimelineEvent::ToolCalled { tool }, now);
                self.tool_done(finished);
            }
            Started::Running => {
                tracing::info!(call_sid = %self.call_sid, tool = %tool, "tool called");
                self.state.record(TimelineEvent::ToolCalled { tool }, now);
            }
        }
    }

    /// The model called `transfer_call` (`call`, at `now`): a target the business has is
    /// answered at once and put through once the handoff line has played; any other target is
    /// answered with an error output, and the model asked to go on.
    fn transfer_call(&mut self, call: &FunctionCall, now: Instant) {
        let wanted = serde_json::from_str::<serde_json::Value>(&call.arguments)
            .ok()
            .and_then(|v| v.get("target").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_default();
        match self.setup.tools.transfer_target(&wanted).cloned() {
            Some(target) => {
                self.answer_builtin(call, TRANSFER_OUTPUT, crate::domain::ToolStatus::Handled);
                tracing::info!(call_sid = %self.call_sid, target = %target.name,
                    "the model transfers the call (transfer_call): put through once the handoff line has played");
                if self.state.transfer(&target.name, now) {
                    self.transfer = Some(target);
                }
            }
            None => {
                let failure = crate::tools::ToolFailure::new(
                    &call.name,
                    crate::domain::ToolStatus::InvalidArguments,
                    "/target: is not one of the allowed values",
                );
                self.answer_builtin(call, &failure.output(), failure.status);
                tracing::warn!(call_sid = %self.call_sid, "transfer_call without a known target: the model is told");
                self.state.on_tool_outputs(&mut self.commands);
                self.dispatch();
            }
        }
    }

    /// A built-in's answer: `output` to the model for `call`, recorded with `status`.
    fn answer_builtin(
        &mut self,
        call: &FunctionCall,
        output: &str,
        status: crate::domain::ToolStatus,
    ) {
        self.send_function_output(&call.call_id, output);
        self.record_tool_call(
            &call.name,
            status,
            &call.arguments,
            crate::store::now_ms(),
            0.0,
            0,
        );
    }

    /// `function_call_output` of `call_id` to the model; false when no upstream session is
    /// open (a reconnect in progress).
    fn send_function_output(&mut self, call_id: &str, output: &str) -> bool {
        let Some(leg) = &mut self.upstream_out else {
            return false;
        };
        leg.control(ClientEvent::FunctionOutput { call_id, output }.to_json());
        true
    }

    /// A tool call ended: its output goes to the model, then (when no other call of the run is
    /// out) a `response.create`; it is recorded, timed and counted.
    fn tool_done(&mut self, finished: Finished) {
        if !self.send_function_output(&finished.call_id, &finished.output) {
            tracing::warn!(call_sid = %self.call_sid, tool = %finished.tool,
                "tool result during a reconnect: the new session cannot take it; the model is asked again");
        }
        if finished.last {
            self.state.on_tool_outputs(&mut self.commands);
            self.dispatch();
        }
        let now = Instant::now();
        let after_answer_us = now
            .saturating_duration_since(finished.answered_at)
            .as_micros() as u64;
        let held_ms = if finished.last {
            self.tool_calls.take_held_ms()
        } else {
            0
        };
        tracing::info!(call_sid = %self.call_sid, tool = %finished.tool, status = %finished.status,
            latency_ms = finished.latency_ms, held_ms, "tool result to the model");
        self.metrics
            .tool_calls
            .get_or_create(&ToolLabels {
                tool: finished.tool.clone(),
                status: finished.status.as_str(),
            })
            .observe(finished.latency_ms / 1000.0);
        self.state.record(
            TimelineEvent::ToolResult {
                tool: finished.tool.clone(),
                status: finished.status,
                latency_ms: finished.latency_ms,
                held_ms,
                before_request_us: finished.before_request_us,
                after_answer_us,
            },
            now,
        );
        self.record_tool_call(
            &finished.tool,
            finished.status,
            &finished.arguments,
            finished.at_ms,
            finished.latency_ms,
            held_ms,
        );
    }

    /// Writes a tool call's row (arguments redacted by the store).
    fn record_tool_call(
        &self,
        tool: &str,
        status: crate::domain::ToolStatus,
        arguments: &str,
        at_ms: i64,
        latency_ms: f64,
        held_ms: u64,
    ) {
        if let Some(records) = &self.records {
            records.write(Record::ToolCall(NewToolCall {
                call_sid: self.call_sid.to_string(),
                business_id: self.setup.business_id.clone(),
                at_ms,
                tool: tool.to_string(),
                status,
                latency_ms,
                held_ms,
                arguments: arguments.to_string(),
            }));
        }
    }

    /// Moves held caller audio into the upstream leg while it has room.
    fn send_held(&mut self) {
        let Some(leg) = &mut self.upstream_out else {
            return;
        };
        if self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(frame) = self.held.pop() {
            let copy = self.uncommitted.as_ref().map(|_| frame.clone());
            if let Err(frame) = leg.try_audio(frame, now) {
                self.held.put_back(frame);
                break;
            }
            if let (Some(uncommitted), Some(copy)) = (&mut self.uncommitted, copy) {
                uncommitted.push(copy);
            }
        }
    }
}

/// The next message of the upstream's reading half; never, while there is none.
async fn next_upstream(
    stream: &mut Option<SplitStream<UpstreamSocket>>,
) -> Option<Result<UpMessage, tokio_tungstenite::tungstenite::Error>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The timeline's `Failover` for a session from upstream `upstream` at `position` in the list;
/// `None` for the first upstream.
fn failover_event(upstream: &str, position: usize) -> Option<TimelineEvent> {
    (position > 0).then(|| TimelineEvent::Failover {
        upstream: upstream.to_string(),
        position,
    })
}

/// The result of the redial in progress; never, while there is none.
async fn dial_done(dialing: &mut Option<DialFuture>) -> Result<Dialed, UpstreamError> {
    match dialing {
        Some(dial) => dial.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Waits until the closing signal changes; its new value, or `false` when the sender is gone
/// (the call then stops watching).
async fn closing_changed(closing: &mut Option<watch::Receiver<bool>>) -> bool {
    let Some(rx) = closing else {
        return std::future::pending().await;
    };
    loop {
        if *rx.borrow_and_update() {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_peer_is_pinged_then_dead_and_a_word_from_it_resets_its_clock() {
        let limits = Liveness {
            twilio_quiet: Duration::from_millis(1000),
            upstream_ping: Duration::from_millis(300),
            upstream_quiet: Duration::from_millis(900),
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut heard = Heard::new(t0);
        assert_eq!(heard.check(&limits, at(100)), Quiet::Nothing);
        assert_eq!(heard.check(&limits, at(300)), Quiet::Ping);
        heard.pinged = Some(at(300));
        assert_eq!(
            heard.check(&limits, at(500)),
            Quiet::Nothing,
            "one ping per interval"
        );
        assert_eq!(heard.check(&limits, at(600)), Quiet::Ping);
        heard.pinged = Some(at(600));
        assert_eq!(
            heard.check(&limits, at(900)),
            Quiet::Dead(EndReason::UpstreamSilent)
        );
        // A pong (any message) at 850 ms resets the upstream clock; Twilio's runs on.
        heard.upstream = at(850);
        heard.pinged = None;
        assert_eq!(heard.check(&limits, at(900)), Quiet::Nothing);
        assert_eq!(
            heard.check(&limits, at(1000)),
            Quiet::Dead(EndReason::TwilioSilent)
        );
        heard.twilio = at(1000);
        assert_eq!(heard.check(&limits, at(1100)), Quiet::Nothing);
    }

    #[test]
    fn the_liveness_tick_is_a_quarter_of_the_shortest_limit_within_bounds() {
        let limits = |twilio, ping| Liveness {
            twilio_quiet: Duration::from_millis(twilio),
            upstream_ping: Duration::from_millis(ping),
            upstream_quiet: Duration::from_millis(15_000),
        };
        assert_eq!(limits(5000, 5000).tick(), Duration::from_secs(1));
        assert_eq!(limits(1000, 300).tick(), Duration::from_millis(75));
        assert_eq!(limits(40, 40).tick(), Duration::from_millis(20));
    }
}
