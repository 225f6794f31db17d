//! One call's task: relays audio both ways and carries out what [`CallState`] decides.
//!
//! The task owns every piece of the call's state. Each socket is written by its own writer task
//! behind a queue ([`Outbox`]): audio beyond `queue_frames` waiting messages is dropped and
//! counted, control messages (mark, clear, session.update, truncate, cancel) are never dropped,
//! and a stalled peer never blocks reading from the other one.
//!
//! The hot path does as little as possible: a Twilio media payload is moved into an
//! `input_audio_buffer.append` without decoding, and a model audio delta into a Twilio `media`
//! message the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use axum::extract::ws::{Message as TwMessage, WebSocket};
use tokio_tungstenite::tungstenite::Message as UpMessage;

use crate::call::guards::{self, CallGuards, GuardOutcome};
use crate::call::setup::CallSetup;
use crate::call::state::{CallSettings, CallState, Command};
use crate::realtime::events::{self as rt, ClientEvent, ServerEvent};
use crate::realtime::upstream::UpstreamSocket;
use crate::store::{NewCallEvent, Store};
use crate::telemetry::metrics::{LEG_TWILIO_TO_UPSTREAM, LEG_UPSTREAM_TO_TWILIO, Metrics};
use crate::telemetry::timeline::{CallReport, TimelineEvent};
use crate::twilio::media::{self as tw, Inbound, Start};

/// A message for a writer task.
enum Outgoing {
    /// Droppable audio, with when its frame was read from the other socket.
    Audio(String, Instant),
    /// Never dropped.
    Control(String),
    /// Close the socket and stop.
    Close,
}

/// The sending side of a writer task's queue.
struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Audio messages waiting in the queue; bounded by `cap`.
    audio_waiting: Arc<AtomicUsize>,
    cap: usize,
}

impl Outbox {
    /// Queues audio read at `received` unless `cap` audio messages already wait. Returns false
    /// when dropped.
    fn audio(&self, text: String, received: Instant) -> bool {
        if self.audio_waiting.load(Ordering::Relaxed) >= self.cap {
            return false;
        }
        self.audio_waiting.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Outgoing::Audio(text, received)).is_err() {
            self.audio_waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a control message (never dropped while the writer runs).
    fn control(&self, text: String) {
        let _ = self.tx.send(Outgoing::Control(text));
    }

    fn close(&self) {
        let _ = self.tx.send(Outgoing::Close);
    }
}

/// Starts a writer task for `sink`; `text` wraps a JSON string in the socket's message type.
/// Each audio frame's time from being read to being flushed to the socket is recorded in
/// `metrics` as the relay overhead of `leg`.
fn spawn_writer<S, M>(
    mut sink: S,
    cap: usize,
    text: fn(String) -> M,
    close: fn() -> M,
    metrics: Arc<Metrics>,
    leg: &'static str,
) -> (Outbox, JoinHandle<()>)
where
    S: Sink<M> + Unpin + Send + 'static,
    M: Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let audio_waiting = Arc::new(AtomicUsize::new(0));
    let waiting = audio_waiting.clone();
    let task = tokio::spawn(async move {
        // When each audio frame fed since the last flush was read.
        let mut unflushed: Vec<Instant> = Vec::with_capacity(16);
        while let Some(out) = rx.recv().await {
            let message = match out {
                Outgoing::Audio(t, received) => {
                    waiting.fetch_sub(1, Ordering::Relaxed);
                    unflushed.push(received);
                    text(t)
                }
                Outgoing::Control(t) => text(t),
                Outgoing::Close => {
                    let _ = sink.send(close()).await;
                    let _ = sink.close().await;
                    return;
                }
            };
            // Batch writes while more is queued; flush when the queue is empty.
            if sink.feed(message).await.is_err() {
                return;
            }
            if rx.is_empty() {
                if sink.flush().await.is_err() {
                    return;
                }
                let flushed = Instant::now();
                for received in unflushed.drain(..) {
                    metrics.relay(leg, flushed.saturating_duration_since(received));
                }
            }
        }
        let _ = sink.close().await;
    });
    (
        Outbox {
            tx,
            audio_waiting,
            cap,
        },
        task,
    )
}

/// Per-call tuning from the configuration.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Audio between marks, ms.
    pub mark_interval_ms: u64,
    /// Audio messages allowed to wait per writer.
    pub queue_frames: usize,
    /// The session's VAD has `interrupt_response: true`.
    pub server_cancels_on_speech: bool,
    /// Where the relay overhead and upstream timings are recorded.
    pub metrics: Arc<Metrics>,
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
    pub store: Option<Store>,
}

struct Session {
    call_sid: String,
    stream_sid: String,
    setup: CallSetup,
    state: CallState,
    guards: CallGuards,
    store: Option<Store>,
    twilio_out: Outbox,
    upstream_out: Outbox,
    commands: Vec<Command>,
    metrics: Arc<Metrics>,
    /// When our last `response.create` went out, until its first audio arrives.
    response_requested_at: Option<Instant>,
    /// When the FULL `session.update` went out, until `session.updated`.
    upgrade_sent_at: Option<Instant>,
}

/// Why the loop stopped.
enum Flow {
    Continue,
    End(&'static str),
}

/// Runs the call until Twilio stops or either socket closes, then closes both and reports.
pub async fn run(
    twilio: WebSocket,
    upstream: UpstreamSocket,
    begin: SessionStart,
    options: &SessionOptions,
) -> CallReport {
    let (twilio_sink, mut twilio_stream): (
        SplitSink<WebSocket, TwMessage>,
        SplitStream<WebSocket>,
    ) = twilio.split();
    let (upstream_sink, mut upstream_stream) = upstream.split();
    let (twilio_out, twilio_writer) = spawn_writer(
        twilio_sink,
        options.queue_frames,
        |t| TwMessage::Text(t.into()),
        || TwMessage::Close(None),
        options.metrics.clone(),
        LEG_UPSTREAM_TO_TWILIO,
    );
    let (upstream_out, upstream_writer) = spawn_writer(
        upstream_sink,
        options.queue_frames,
        |t| UpMessage::Text(t.into()),
        || UpMessage::Close(None),
        options.metrics.clone(),
        LEG_TWILIO_TO_UPSTREAM,
    );
    let mut state = CallState::new(
        CallSettings {
            mark_interval_ms: options.mark_interval_ms,
            server_cancels_on_speech: options.server_cancels_on_speech,
            full_tokens: begin.setup.prompts.full_tokens,
        },
        begin.started_at,
    );
    state.record(
        TimelineEvent::StreamStarted {
            prewarmed: begin.prewarmed,
        },
        begin.started_at,
    );
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
    let mut session = Session {
        call_sid: begin.start.call_sid.clone(),
        stream_sid: begin.start.stream_sid.clone(),
        setup: begin.setup,
        state,
        guards,
        store: begin.store,
        twilio_out,
        upstream_out,
        commands: Vec::with_capacity(8),
        metrics: options.metrics.clone(),
        response_requested_at: None,
        upgrade_sent_at: None,
    };
    if let Some(requested) = begin_greeting_requested {
        session.state.greeting_requested_earlier(Instant::now());
        session.response_requested_at = Some(requested);
    } else {
        session.state.greet(Instant::now(), &mut session.commands);
    }
    session.dispatch();

    let reason = loop {
        let flow = tokio::select! {
            message = twilio_stream.next() => match message {
                Some(Ok(TwMessage::Text(text))) => session.on_twilio(text.as_str()),
                Some(Ok(TwMessage::Binary(_))) => {
                    tracing::warn!(call_sid = %session.call_sid, "binary frame from Twilio skipped");
                    session.state.on_malformed(true);
                    Flow::Continue
                }
                Some(Ok(TwMessage::Close(_))) | None => Flow::End("twilio_closed"),
                Some(Ok(_)) => Flow::Continue,
                Some(Err(e)) => {
                    tracing::warn!(call_sid = %session.call_sid, error = %e, "Twilio socket error");
                    Flow::End("twilio_error")
                }
            },
            message = upstream_stream.next() => match message {
                Some(Ok(UpMessage::Text(text))) => session.on_upstream(text.as_str()),
                Some(Ok(UpMessage::Close(frame))) => {
                    tracing::warn!(call_sid = %session.call_sid, ?frame, "upstream closed the session");
                    Flow::End("upstream_closed")
                }
                None => Flow::End("upstream_closed"),
                Some(Ok(UpMessage::Binary(_))) => {
                    session.state.on_malformed(false);
                    Flow::Continue
                }
                Some(Ok(_)) => Flow::Continue,
                Some(Err(e)) => {
                    tracing::warn!(call_sid = %session.call_sid, error = %e, "upstream socket error");
                    Flow::End("upstream_error")
                }
            },
        };
        if let Flow::End(reason) = flow {
            break reason;
        }
    };

    session.state.record(
        TimelineEvent::Ended {
            reason: reason.to_string(),
        },
        Instant::now(),
    );
    session.upstream_out.close();
    session.twilio_out.close();
    let Session {
        call_sid,
        stream_sid,
        setup,
        state,
        guards,
        ..
    } = session;
    // Give the writers a moment to send their close frames.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = upstream_writer.await;
        let _ = twilio_writer.await;
    })
    .await;
    let (greeting_latency_ms, turn_latencies_ms, counters, timeline) = state.into_parts();
    let turn_heard_ms = timeline.heard_latencies_ms();
    let guard_counters = guards.counters();
    let echo = guards.echo_stats();
    tracing::info!(
        call_sid = %call_sid,
        business_id = %setup.business_id,
        direction = %setup.direction,
        end_reason = reason,
        greeting_latency_ms = greeting_latency_ms.unwrap_or(-1.0),
        barge_ins = counters.barge_ins,
        turns = counters.turns,
        dropped_out = counters.dropped_out,
        dropped_in = counters.dropped_in,
        echo_rate = echo.echo_rate(),
        guard_blocked = guard_counters.blocked,
        "call ended"
    );
    CallReport {
        call_sid,
        stream_sid,
        business_id: setup.business_id,
        direction: setup.direction,
        greeting_latency_ms,
        turn_latencies_ms,
        turn_heard_ms,
        end_reason: reason.to_string(),
        counters,
        guards: guard_counters,
        echo,
        timeline,
    }
}

impl Session {
    fn on_twilio(&mut self, text: &str) -> Flow {
        let received = Instant::now();
        match tw::parse(text) {
            Ok(Inbound::Media { payload, .. }) => {
                let queued = self
                    .upstream_out
                    .audio(ClientEvent::Append(&payload).to_json(), received);
                self.state.on_caller_frame(queued);
            }
            Ok(Inbound::Mark { name }) => self.state.on_mark(&name, Instant::now()),
            Ok(Inbound::Stop) => return Flow::End("stop"),
            Ok(Inbound::Dtmf { digit }) => {
                tracing::info!(call_sid = %self.call_sid, digit = %digit, "DTMF from caller");
            }
            Ok(Inbound::Connected) | Ok(Inbound::Start(_)) => {}
            Ok(Inbound::Unknown { event }) => {
                tracing::debug!(call_sid = %self.call_sid, event = %event, "unknown Twilio event skipped");
            }
            Err(e) => {
                tracing::warn!(call_sid = %self.call_sid, error = %e, "malformed Twilio frame skipped");
                self.state.on_malformed(true);
            }
        }
        Flow::Continue
    }

    fn on_upstream(&mut self, text: &str) -> Flow {
        let now = Instant::now();
        let event = match rt::parse(text) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(call_sid = %self.call_sid, error = %e, "malformed upstream frame skipped");
                self.state.on_malformed(false);
                return Flow::Continue;
            }
        };
        match event {
            ServerEvent::AudioDelta {
                response_id,
                item_id,
                delta,
            } => {
                let bytes = rt::base64_decoded_len(&delta) as u64;
                let decision =
                    self.state
                        .on_audio_delta(response_id.as_deref(), &item_id, bytes, now);
                if let Some(requested) = self.response_requested_at.take() {
                    self.metrics
                        .upstream_first_audio
                        .observe(now.saturating_duration_since(requested).as_secs_f64());
                }
                if decision.forward {
                    let queued = self
                        .twilio_out
                        .audio(tw::media(&self.stream_sid, &delta), now);
                    if !queued {
                        self.state.on_audio_delta_dropped(&item_id, bytes);
                    }
                }
                if let Some(name) = decision.mark {
                    self.twilio_out.control(tw::mark(&self.stream_sid, &name));
                }
            }
            ServerEvent::SpeechStarted { .. } => {
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
            ServerEvent::ResponseDone {
                response_id,
                status,
                usage,
            } => {
                self.state.on_response_done(
                    response_id.as_deref(),
                    status.as_deref(),
                    usage,
                    now,
                    &mut self.commands,
                );
                self.dispatch();
            }
            ServerEvent::OutputTranscriptDone { transcript } => {
                let outcome = self.guards.model_transcript(&transcript, now);
                self.state.on_transcript(false, transcript, now);
                self.guard(outcome, None, now);
            }
            ServerEvent::InputTranscriptCompleted {
                item_id,
                transcript,
            } => {
                let outcome = self.guards.caller_transcript(&transcript, now);
                self.state.on_transcript(true, transcript, now);
                self.guard(outcome, item_id.as_deref(), now);
            }
            ServerEvent::InputTranscriptFailed { item_id } => {
                tracing::warn!(call_sid = %self.call_sid, item_id = item_id.as_deref().unwrap_or(""),
                    "caller transcription failed");
                let outcome = self.guards.caller_transcript_failed();
                self.guard(outcome, item_id.as_deref(), now);
            }
            ServerEvent::Error { code, message } => {
                let benign = self.state.on_error(code.as_deref(), now);
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
            ServerEvent::SessionCreated
            | ServerEvent::Committed
            | ServerEvent::Truncated { .. }
            | ServerEvent::Other { .. } => {}
        }
        Flow::Continue
    }

    /// Records a guard decision and carries out its reaction.
    fn guard(&mut self, outcome: GuardOutcome, user_item: Option<&str>, now: Instant) {
        if let Some(record) = outcome.record {
            tracing::info!(
                call_sid = %self.call_sid,
                business_id = %self.setup.business_id,
                kind = record.kind,
                action = record.action,
                score = record.score.unwrap_or(0.0),
                rules = %record.rules.join(","),
                "guard decision"
            );
            self.state.record(
                TimelineEvent::Guard {
                    kind: record.kind.to_string(),
                    action: record.action.to_string(),
                    score: record.score,
                    rules: record.rules.clone(),
                },
                now,
            );
            if let Some(store) = &self.store {
                let store = store.clone();
                let event = NewCallEvent {
                    call_sid: self.call_sid.clone(),
                    business_id: self.setup.business_id.clone(),
                    at_ms: crate::store::now_ms(),
                    kind: record.kind.to_string(),
                    score: record.score,
                    rules: record.rules,
                    action: record.action.to_string(),
                    detail: record.detail,
                };
                tokio::spawn(async move {
                    if let Err(e) = store.insert_event(&event).await {
                        tracing::error!(call_sid = %event.call_sid, error = %e, "cannot record a guard event");
                    }
                });
            }
        }
        self.state
            .apply_reaction(&outcome.reaction, user_item, now, &mut self.commands);
        self.dispatch();
    }

    /// Sends what the state machine decided, in order.
    fn dispatch(&mut self) {
        for command in self.commands.drain(..) {
            match command {
                Command::TwilioClear => self.twilio_out.control(tw::clear(&self.stream_sid)),
                Command::TwilioMark(name) => {
                    self.twilio_out.control(tw::mark(&self.stream_sid, &name))
                }
                Command::ResponseCreate => {
                    self.response_requested_at = Some(Instant::now());
                    self.upstream_out
                        .control(ClientEvent::ResponseCreate.to_json())
                }
                Command::ResponseCancel => self
                    .upstream_out
                    .control(ClientEvent::ResponseCancel.to_json()),
                Command::Truncate {
                    item_id,
                    audio_end_ms,
                } => {
                    tracing::info!(call_sid = %self.call_sid, item_id = %item_id, audio_end_ms, "truncate to heard audio");
                    self.upstream_out.control(
                        ClientEvent::Truncate {
                            item_id: &item_id,
                            audio_end_ms,
                        }
                        .to_json(),
                    )
                }
                Command::DeleteItem(item_id) => self
                    .upstream_out
                    .control(ClientEvent::DeleteItem(&item_id).to_json()),
                Command::SystemMessage(text) => self
                    .upstream_out
                    .control(ClientEvent::SystemMessage(text).to_json()),
                Command::SafeResponse => {
                    self.response_requested_at = Some(Instant::now());
                    self.upstream_out.control(
                        ClientEvent::ResponseWithInstructions(guards::SAFE_REPLY).to_json(),
                    )
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
                    self.upstream_out.control(
                        ClientEvent::SessionInstructions(&self.setup.prompts.full).to_json(),
                    )
                }
            }
        }
    }
}
