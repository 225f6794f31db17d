//! A call's timeline and its summary report.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::Direction;

/// Something that happened in a call, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TimelineEvent {
    /// Twilio's `start` arrived; the clock starts here.
    StreamStarted {
        /// Whether a pre-warmed upstream session was waiting.
        prewarmed: bool,
    },
    /// Prompt sizes (o200k_base tokens).
    Prompts {
        /// COMPACT instructions, tokens.
        compact_tokens: usize,
        /// FULL instructions, tokens.
        full_tokens: usize,
    },
    /// `response.create` for the greeting.
    GreetingRequested {
        /// The `response.create` went out on the pre-warmed session, before the stream started
        /// (`upstream.early_greeting`).
        early: bool,
    },
    /// The first model audio frame went to Twilio.
    GreetingAudio {
        /// Stream start to first audio frame out, ms.
        latency_ms: f64,
    },
    /// `session.update` with the FULL instructions went upstream.
    Upgraded {
        /// FULL instructions, tokens.
        full_tokens: usize,
    },
    /// Server VAD: the caller started speaking.
    CallerSpeechStarted,
    /// Server VAD: the caller stopped speaking (end of the turn).
    CallerSpeechStopped,
    /// The first audio of the answer to a caller turn went to Twilio.
    TurnAudio {
        /// `speech_stopped` to first audio frame out, ms.
        latency_ms: f64,
    },
    /// The caller began to hear the answer, as Twilio reports it: the acknowledgement of the
    /// first mark past the answer's first audio, less the audio queued between the two
    /// (recorded when the mark comes back, placed at the moment playback began).
    TurnHeard {
        /// `speech_stopped` to the moment the answer began to play, ms.
        latency_ms: f64,
    },
    /// The caller interrupted model audio.
    BargeIn {
        /// `speech_started` received to Twilio `clear` queued, µs.
        reaction_us: u64,
        /// `conversation.item.truncate` position, ms of the item heard; `None` when not sent.
        truncate_ms: Option<u64>,
        /// Audio dropped from Twilio's buffer, ms.
        dropped_ms: u64,
        /// Whether `response.cancel` was sent.
        cancel_sent: bool,
    },
    /// `response.created`.
    ResponseStarted {
        /// `resp_…`.
        response_id: String,
    },
    /// `response.done`.
    ResponseDone {
        /// `resp_…`.
        response_id: String,
        /// `completed`, `cancelled`, …
        status: String,
    },
    /// A response failed for rate or server reasons (`response.done` `failed`, or an `error`
    /// refusing the `response.create`): it is asked for again after `wait_ms`.
    ResponseRetry {
        /// The failure's code (or type), e.g. `rate_limit_exceeded`.
        code: String,
        /// This retry's number, from 1.
        attempt: u32,
        /// The wait before it, ms.
        wait_ms: u64,
    },
    /// A refused response is not asked for again: its retries or their budget are spent.
    ResponseGaveUp {
        /// The last failure's code (or type).
        code: String,
        /// Retries made.
        retries: u32,
    },
    /// The caller typed an entry on the keypad (DTMF), given to the model as text. Only its
    /// length is kept: the digits may be a card number.
    KeypadEntry {
        /// Keys in the entry.
        keys: usize,
    },
    /// The model called a tool.
    ToolCalled {
        /// The tool's name.
        tool: String,
    },
    /// A tool call ended and its output went to the model (then a `response.create`, once no
    /// other call of the run is out).
    ToolResult {
        /// The tool's name.
        tool: String,
        /// How it ended.
        status: crate::domain::ToolStatus,
        /// The model's call to its output sent, ms.
        latency_ms: f64,
        /// Hold audio the caller heard while it ran, ms (0: none).
        held_ms: u64,
        /// The proxy's own time from the model's call to the request handed to the HTTP
        /// client, µs; `None` when no request was made.
        before_request_us: Option<u64>,
        /// The proxy's own time from the endpoint's answer read to the output (and the
        /// `response.create`) queued upstream, µs.
        after_answer_us: u64,
    },
    /// A remote MCP tool failed upstream (`mcp_list_tools.failed`, `response.mcp_call.failed`).
    McpFailed {
        /// Which event reported it.
        mcp_event: crate::domain::McpEvent,
    },
    /// The model called `end_call`: the call ends once its goodbye has played.
    HangupRequested,
    /// The caller spoke before the goodbye had played: the hang-up is off.
    HangupCancelled,
    /// An answering machine took the outbound call: the model is asked for the voicemail,
    /// and the call ends once it has played.
    VoicemailRequested,
    /// The model called `transfer_call`: the call is put through once the handoff line has
    /// played.
    TransferRequested {
        /// The transfer target's name.
        target: String,
    },
    /// The live call was redirected to `<Dial>` the target (`delivered`), or Twilio did not
    /// take the redirect and the call went on with the model.
    TransferDialed {
        /// The transfer target's name.
        target: String,
        /// Whether Twilio took the redirect.
        delivered: bool,
    },
    /// The caller is back from a transfer nobody answered, on a new media stream: the
    /// conversation so far was replayed to the model with the outcome.
    TransferReturned {
        /// The transfer target's name.
        target: String,
        /// How the dial ended.
        outcome: crate::domain::TransferOutcome,
        /// Conversation items replayed (0: the conversation was not held here).
        replayed: usize,
    },
    /// What the caller said (input transcription).
    CallerTranscript {
        /// The text.
        text: String,
    },
    /// What the model said (output transcript).
    ModelTranscript {
        /// The text.
        text: String,
    },
    /// A guard decision (injection, echo, self-echo, leak).
    Guard {
        /// What was detected.
        kind: crate::domain::GuardKind,
        /// What the proxy did.
        action: crate::domain::GuardAction,
        /// Score, 0–1.
        score: Option<f64>,
        /// The sanitizer stage that decided it (injection decisions only).
        stage: Option<crate::domain::Stage>,
        /// Rules that fired.
        rules: Vec<String>,
    },
    /// Gate policy: the caller's turn was scored and its response asked for.
    GateReleased {
        /// `speech_stopped` to `response.create`, ms (mostly the wait for the transcript).
        wait_ms: f64,
    },
    /// An `error` event from upstream.
    UpstreamError {
        /// `error.code`.
        code: String,
        /// Whether it is one of the benign races that never end a call.
        benign: bool,
    },
    /// `session.created` from upstream.
    UpstreamSession {
        /// Seconds from now until the server ends the session (`session.expires_at`), when
        /// it said.
        expires_in_s: Option<i64>,
    },
    /// The call's upstream session came from an upstream after the first in the failover
    /// list (the ones before it failed, or their breakers were open).
    Failover {
        /// The answering upstream's configured name.
        upstream: String,
        /// Its place in the list (1 is the second).
        position: usize,
    },
    /// The upstream session was lost mid-call; a reconnect begins (caller audio is held).
    UpstreamLost {
        /// What lost it, as the end reason the call would have had without a reconnect.
        cause: crate::domain::EndReason,
    },
    /// A new upstream session took over: configured with FULL, the conversation replayed,
    /// the held caller audio on its way.
    Reconnected {
        /// From the loss to the restore sent on the new session, ms.
        gap_ms: f64,
        /// Dials it took (1 when the first succeeded).
        attempts: u32,
        /// Conversation items replayed.
        replayed: usize,
        /// Caller frames held during the gap and sent after the restore.
        held_frames: usize,
        /// Caller frames the lost session had been sent but not committed, sent again (its
        /// input audio buffer went with it).
        resent_frames: usize,
    },
    /// The upstream session was replaced before its expiry, at a turn boundary, by one
    /// opened ahead (no gap for the caller).
    Rollover {
        /// Conversation items replayed into the new session.
        replayed: usize,
        /// Uncommitted caller frames sent again to the new session.
        resent_frames: usize,
    },
    /// The reconnect took long enough that the caller was played the hold clip.
    HoldAudio {
        /// Length of the clip, ms.
        ms: u64,
    },
    /// No new upstream session could be had within the reconnect budget: the call ends.
    ReconnectFailed {
        /// Dials tried.
        attempts: u32,
        /// From the loss to giving up, ms.
        waited_ms: f64,
    },
    /// The call is closing on purpose (drain deadline, longest duration): the model was asked
    /// to say goodbye.
    Closing {
        /// The end reason it will end with.
        reason: crate::domain::EndReason,
    },
    /// No model could take the call: it was redirected to its business's fallback
    /// ([`crate::call::fallback`]) before its stream closed.
    Fallback {
        /// A dial to the business's line, or the apology.
        action: crate::domain::FallbackAction,
        /// Whether Twilio took the redirect.
        delivered: bool,
    },
    /// The call ended.
    Ended {
        /// Why.
        reason: crate::domain::EndReason,
    },
}

impl fmt::Display for TimelineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineEvent::StreamStarted { prewarmed } => write!(
                f,
                "stream start ({})",
                if *prewarmed {
                    "pre-warmed upstream ready"
                } else {
                    "upstream dialled now"
                }
            ),
            TimelineEvent::Prompts {
                compact_tokens,
                full_tokens,
            } => write!(
                f,
                "prompts: COMPACT {compact_tokens} tokens, FULL {full_tokens} tokens"
            ),
            TimelineEvent::GreetingRequested { early: false } => {
                write!(f, "greeting requested (response.create)")
            }
            TimelineEvent::GreetingRequested { early: true } => write!(
                f,
                "greeting already requested on the pre-warmed session (response.create at the webhook)"
            ),
            TimelineEvent::GreetingAudio { latency_ms } => {
                write!(f, "greeting audio out: greeting latency {latency_ms:.1} ms")
            }
            TimelineEvent::Upgraded { full_tokens } => write!(
                f,
                "upgrade: session.update with FULL instructions ({full_tokens} tokens)"
            ),
            TimelineEvent::CallerSpeechStarted => write!(f, "caller starts speaking"),
            TimelineEvent::CallerSpeechStopped => write!(f, "caller stops speaking"),
            TimelineEvent::TurnAudio { latency_ms } => {
                write!(f, "answer audio out: turn latency {latency_ms:.1} ms")
            }
            TimelineEvent::TurnHeard { latency_ms } => {
                write!(
                    f,
                    "caller hears the answer (playback began, from its mark): {latency_ms:.1} ms after their turn"
                )
            }
            TimelineEvent::BargeIn {
                reaction_us,
                truncate_ms,
                dropped_ms,
                cancel_sent,
            } => {
                write!(
                    f,
                    "BARGE-IN: clear sent in {:.3} ms, ",
                    *reaction_us as f64 / 1000.0
                )?;
                match truncate_ms {
                    Some(ms) => write!(f, "truncate at {ms} ms heard")?,
                    None => write!(f, "no truncate (nothing heard)")?,
                }
                write!(
                    f,
                    ", {dropped_ms} ms unplayed dropped{}",
                    if *cancel_sent {
                        ", response.cancel sent"
                    } else {
                        ""
                    }
                )
            }
            TimelineEvent::ResponseStarted { response_id } => {
                write!(f, "response {response_id} started")
            }
            TimelineEvent::ResponseDone {
                response_id,
                status,
            } => write!(f, "response {response_id} done ({status})"),
            TimelineEvent::ResponseRetry {
                code,
                attempt,
                wait_ms,
            } => write!(
                f,
                "response refused ({code}): asking again in {wait_ms} ms (retry {attempt})"
            ),
            TimelineEvent::ResponseGaveUp { code, retries } => write!(
                f,
                "response refused ({code}): given up after {retries} retries"
            ),
            TimelineEvent::KeypadEntry { keys } => {
                write!(
                    f,
                    "caller typed {keys} key(s) on the keypad (digits not kept)"
                )
            }
            TimelineEvent::ToolCalled { tool } => write!(f, "model calls tool {tool}"),
            TimelineEvent::ToolResult {
                tool,
                status,
                latency_ms,
                held_ms,
                before_request_us,
                after_answer_us,
            } => {
                write!(f, "tool {tool}: {status} after {latency_ms:.1} ms")?;
                if *held_ms > 0 {
                    write!(f, ", caller heard {held_ms} ms of hold audio")?;
                }
                if let Some(before) = before_request_us {
                    write!(
                        f,
                        " (proxy time: {:.3} ms to the request, {:.3} ms after the answer)",
                        *before as f64 / 1000.0,
                        *after_answer_us as f64 / 1000.0
                    )?;
                }
                Ok(())
            }
            TimelineEvent::McpFailed { mcp_event } => {
                write!(f, "MCP tool failed upstream ({mcp_event})")
            }
            TimelineEvent::HangupRequested => {
                write!(
                    f,
                    "model ends the call: hang-up once the goodbye has played"
                )
            }
            TimelineEvent::HangupCancelled => {
                write!(f, "caller spoke during the goodbye: hang-up cancelled")
            }
            TimelineEvent::VoicemailRequested => write!(
                f,
                "answering machine (AMD): voicemail requested, hang-up once it has played"
            ),
            TimelineEvent::TransferRequested { target } => write!(
                f,
                "model transfers the call to {target:?} once the handoff line has played"
            ),
            TimelineEvent::TransferDialed {
                target,
                delivered: true,
            } => write!(f, "call redirected to <Dial> {target:?}"),
            TimelineEvent::TransferDialed {
                target,
                delivered: false,
            } => write!(
                f,
                "transfer to {target:?} not taken by Twilio: the call goes on"
            ),
            TimelineEvent::TransferReturned {
                target,
                outcome,
                replayed,
            } => write!(
                f,
                "back from the transfer to {target:?} ({outcome}): {replayed} conversation items restored"
            ),
            TimelineEvent::CallerTranscript { text } => write!(f, "caller said: {text:?}"),
            TimelineEvent::ModelTranscript { text } => write!(f, "model said: {text:?}"),
            TimelineEvent::UpstreamError { code, benign } => write!(
                f,
                "upstream error {code}{}",
                if *benign {
                    " (benign, call goes on)"
                } else {
                    ""
                }
            ),
            TimelineEvent::Guard {
                kind,
                action,
                score,
                stage,
                rules,
            } => {
                write!(f, "GUARD {kind}: {action}")?;
                if let Some(score) = score {
                    write!(f, " (score {score:.2})")?;
                }
                if let Some(stage) = stage {
                    write!(f, " by {stage}")?;
                }
                if !rules.is_empty() {
                    write!(f, " rules {}", rules.join(","))?;
                }
                Ok(())
            }
            TimelineEvent::GateReleased { wait_ms } => write!(
                f,
                "gate: transcript scored, response asked for {wait_ms:.1} ms after the turn ended"
            ),
            TimelineEvent::Closing { reason } => {
                write!(f, "closing ({reason}): the model is asked to say goodbye")
            }
            TimelineEvent::UpstreamSession {
                expires_in_s: Some(s),
            } => write!(f, "upstream session created (expires in {s} s)"),
            TimelineEvent::UpstreamSession { expires_in_s: None } => {
                write!(f, "upstream session created")
            }
            TimelineEvent::Failover { upstream, position } => write!(
                f,
                "failed over: the session is on upstream {upstream} (number {} in the list)",
                position + 1
            ),
            TimelineEvent::UpstreamLost { cause } => {
                write!(
                    f,
                    "upstream lost ({cause}): reconnecting, caller audio held"
                )
            }
            TimelineEvent::Reconnected {
                gap_ms,
                attempts,
                replayed,
                held_frames,
                resent_frames,
            } => write!(
                f,
                "reconnected after {gap_ms:.0} ms ({attempts} dial(s)): {replayed} item(s) \
                 replayed, {held_frames} held and {resent_frames} uncommitted frame(s) sent"
            ),
            TimelineEvent::Rollover {
                replayed,
                resent_frames,
            } => write!(
                f,
                "rolled over to a new session: {replayed} item(s) replayed, {resent_frames} \
                 uncommitted frame(s) sent again"
            ),
            TimelineEvent::HoldAudio { ms } => write!(f, "hold audio played ({ms} ms)"),
            TimelineEvent::ReconnectFailed {
                attempts,
                waited_ms,
            } => write!(
                f,
                "reconnect failed after {waited_ms:.0} ms ({attempts} dial(s))"
            ),
            TimelineEvent::Fallback {
                action,
                delivered: true,
            } => write!(
                f,
                "no model can take the call: sent to the fallback ({action})"
            ),
            TimelineEvent::Fallback {
                action,
                delivered: false,
            } => write!(
                f,
                "no model can take the call: the fallback ({action}) could not be reached"
            ),
            TimelineEvent::Ended { reason } => write!(f, "call ended ({reason})"),
        }
    }
}

/// A call's events with their time since the stream started.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: Instant,
    entries: Vec<(Duration, TimelineEvent)>,
}

impl Timeline {
    /// The caller-side turn latencies recorded ([`TimelineEvent::TurnHeard`]), ms, in order.
    pub fn heard_latencies_ms(&self) -> Vec<f64> {
        self.entries()
            .iter()
            .filter_map(|(_, event)| match event {
                TimelineEvent::TurnHeard { latency_ms } => Some(*latency_ms),
                _ => None,
            })
            .collect()
    }

    /// A timeline whose clock starts at `start` (the Twilio `start` message).
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            entries: Vec::with_capacity(64),
        }
    }

    /// Records `event` at `at`.
    ///
    /// Entries stay in time order: an event timed before ones already recorded (the moment an
    /// answer began to play is known only once its mark comes back) goes in its place.
    pub fn push(&mut self, at: Instant, event: TimelineEvent) {
        let at = at.saturating_duration_since(self.start);
        let place = self
            .entries
            .iter()
            .rposition(|(t, _)| *t <= at)
            .map_or(0, |i| i + 1);
        self.entries.insert(place, (at, event));
    }

    /// The clock's zero.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The entries, for amending the last one.
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<(Duration, TimelineEvent)> {
        &mut self.entries
    }

    /// The entries in the order they were recorded.
    pub fn entries(&self) -> &[(Duration, TimelineEvent)] {
        &self.entries
    }
}

/// Counters of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallCounters {
    /// Twilio media frames relayed upstream.
    pub frames_in: u64,
    /// Model audio deltas relayed to Twilio.
    pub frames_out: u64,
    /// Caller audio frames dropped because the upstream writer queue was full.
    pub dropped_in: u64,
    /// Model audio deltas dropped because the Twilio writer queue was full.
    pub dropped_out: u64,
    /// Model audio deltas of an interrupted response discarded after a barge-in.
    pub discarded_after_barge_in: u64,
    /// Twilio frames that could not be parsed (logged and skipped).
    pub malformed_twilio: u64,
    /// Upstream frames that could not be parsed (logged and skipped).
    pub malformed_upstream: u64,
    /// Marks sent to Twilio.
    pub marks_sent: u64,
    /// Marks echoed that counted (current generation).
    pub marks_acked: u64,
    /// Caller turns (speech_stopped).
    pub turns: u64,
    /// Barge-ins (clear sent).
    pub barge_ins: u64,
    /// Benign upstream errors.
    pub benign_errors: u64,
    /// Other upstream errors.
    pub upstream_errors: u64,
    /// Tokens reported in `response.done` usage.
    pub total_tokens: u64,
    /// Of the input tokens, those served from the prompt cache.
    pub cached_tokens: u64,
    /// Responses asked for again after the upstream refused them for rate or server reasons.
    pub response_retries: u64,
    /// The Twilio link's one-way delay at the end of the call, ms (half the smallest recent
    /// ping round trip, [`crate::call::link_delay`]; 0 when no pong came).
    pub twilio_link_one_way_ms: u64,
    /// The most messages that ever waited in the Twilio leg's queue at once (bounded by
    /// `audio.queue_frames + audio.control_queue`).
    pub peak_waiting_twilio: u64,
    /// The same for the upstream leg.
    pub peak_waiting_upstream: u64,
}

/// Everything known about a call when it ends.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// `CA…`.
    pub call_sid: String,
    /// `MZ…`.
    pub stream_sid: String,
    /// The business served.
    pub business_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Stream start to first model audio out, ms.
    pub greeting_latency_ms: Option<f64>,
    /// Turn latencies, ms.
    pub turn_latencies_ms: Vec<f64>,
    /// Caller-side turn latencies, ms: end of caller speech to the moment the answer began to
    /// play at Twilio (what the caller hears; see [`TimelineEvent::TurnHeard`]).
    pub turn_heard_ms: Vec<f64>,
    /// Why it ended.
    pub end_reason: crate::domain::EndReason,
    /// Counters.
    pub counters: CallCounters,
    /// Guard counters.
    pub guards: crate::call::guards::GuardCounters,
    /// Parroting and self-echo counts (echo rate = echoes / model turns).
    pub echo: crate::guard::echo::EchoStats,
    /// The timeline.
    pub timeline: Timeline,
}
