//! The call state machine: what to do next, given what Twilio and the model just said.
//!
//! No I/O and no JSON: the session task feeds events in, with the time they arrived, and carries
//! out the [`Command`]s that come back. That keeps the rules testable with plain event sequences:
//! - the greeting is a `response.create` at stream start;
//! - `response.create` is queued while a response is active and sent after its `response.done`;
//! - the first `response.done` upgrades the session to the FULL instructions, exactly once;
//! - on `speech_started` while model audio is queued or playing (barge-in): Twilio `clear`, a
//!   `conversation.item.truncate` at the milliseconds the caller heard (only when above 0 and
//!   within the audio received), `response.cancel` only when a response is active and the server
//!   will not cancel it itself, and the rest of the interrupted response's audio is discarded;
//! - `response_cancel_not_active`, `conversation_already_has_active_response` and
//!   `input_audio_buffer_commit_empty` are benign: logged, counted, and the call goes on.
//!
//! Sources: `shared/protocol/openai-realtime.md` §4.2–4.4, `shared/protocol/twilio.md` §4.3.

use std::time::{Duration, Instant};

use crate::audio::mulaw::BYTES_PER_MS;
use crate::call::guards::{self, Reaction};
use crate::call::playback::Playback;
use crate::domain::EndReason;
use crate::realtime::events::{BENIGN_ERROR_CODES, RateLimit, ResponseFailure, Usage};
use crate::telemetry::timeline::{CallCounters, Timeline, TimelineEvent};

/// Something the session must send.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Twilio `clear`.
    TwilioClear,
    /// Twilio `mark` with this name.
    TwilioMark(String),
    /// Upstream `response.create`.
    ResponseCreate,
    /// Upstream `response.cancel`.
    ResponseCancel,
    /// Upstream `conversation.item.truncate`.
    Truncate {
        /// The assistant item.
        item_id: String,
        /// Ms of it the caller heard.
        audio_end_ms: u64,
    },
    /// Upstream `session.update` with the FULL instructions.
    UpgradeInstructions,
    /// Upstream `conversation.item.delete` of a user item.
    DeleteItem(String),
    /// Upstream `conversation.item.create` of a system message.
    SystemMessage(&'static str),
    /// Upstream `response.create` with the safe per-response instructions
    /// ([`guards::SAFE_REPLY`]).
    SafeResponse,
    /// Upstream `response.create` with the goodbye instructions ([`GOODBYE_INSTRUCTIONS`]).
    GoodbyeResponse,
}

/// What the model is told when a call must end on purpose (drain deadline, longest duration).
pub const GOODBYE_INSTRUCTIONS: &str = "The call has to end now. In the caller's language, say \
     one short, friendly sentence of goodbye (you may invite them to call again). Do not ask \
     anything and do not start a new topic.";

/// Which `response.create` to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseKind {
    /// No overrides.
    Plain,
    /// With the safe per-response instructions, after a blocked injection attempt.
    Safe,
    /// With the goodbye instructions; never replaced by another once asked for.
    Goodbye,
}

/// A call ending on purpose.
#[derive(Debug, Clone, PartialEq)]
struct Closing {
    /// The reason it will end with.
    reason: EndReason,
    /// When it began closing.
    since: Instant,
    /// The goodbye's `response.create` went out.
    goodbye_sent: bool,
    /// The goodbye response's id, once created.
    goodbye_id: Option<String>,
    /// The goodbye response is done (all its audio sent).
    goodbye_done: bool,
    /// The model ended the call itself (`end_call`, `transfer_call`): the end waits for
    /// Twilio to acknowledge the goodbye's (or handoff line's) last mark.
    by_model: bool,
}

impl Closing {
    /// Whether the caller speaking calls it off: the model's hang-up (`end_call`) only; a
    /// transfer, a voicemail or an ending on purpose goes ahead.
    fn cancellable(&self) -> bool {
        self.reason == EndReason::AgentHangup
    }

    /// How long it may take before the call ends anyway: [`VOICEMAIL_LIMIT`] for a voicemail,
    /// else `goodbye_limit`.
    fn limit(&self, goodbye_limit: Duration) -> Duration {
        if self.reason == EndReason::Voicemail {
            VOICEMAIL_LIMIT
        } else {
            goodbye_limit
        }
    }
}

/// How long a voicemail may take to be said and played before the call ends anyway.
pub const VOICEMAIL_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
enum ResponseState {
    /// No response in progress.
    Idle,
    /// We sent `response.create`; `response.created` has not arrived.
    Requested,
    /// A response is in progress (ours or one the server VAD started).
    Active(String),
}

/// Fixed settings of one call's state machine.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Audio between marks, ms.
    pub mark_interval_ms: u64,
    /// The session's VAD has `interrupt_response: true`: the server cancels the response itself
    /// on speech, so the proxy does not send `response.cancel` too.
    pub server_cancels_on_speech: bool,
    /// FULL instructions size, tokens (for the timeline).
    pub full_tokens: usize,
    /// How long a goodbye may take before the call ends anyway.
    pub goodbye_limit: std::time::Duration,
}

/// One call's state.
#[derive(Debug)]
pub struct CallState {
    settings: CallSettings,
    playback: Playback,
    response: ResponseState,
    /// A `response.create` waits for the active response to finish.
    queued: Option<ResponseKind>,
    /// The FULL instructions were sent.
    upgraded: bool,
    /// Audio of this response is discarded: the caller interrupted it.
    muted_response: Option<String>,
    /// When the caller's last turn ended, until its answer's first audio goes out.
    turn_ended_at: Option<Instant>,
    /// Server VAD says the caller is speaking (between speech_started and speech_stopped).
    caller_speaking: bool,
    /// The last turn's end and the playback position its answer's first audio starts at, until
    /// Twilio acknowledges a mark past it (the caller has heard the answer begin).
    heard_pending: Option<(Instant, u64)>,
    greeting_latency_ms: Option<f64>,
    turn_latencies_ms: Vec<f64>,
    counters: CallCounters,
    timeline: Timeline,
    closing: Option<Closing>,
    /// The response to ask for again once a new upstream session is restored: the one in
    /// progress, asked for or queued when the last session was lost.
    after_restore: Option<ResponseKind>,
    /// The upstream session is lost and not yet replaced: responses asked for are owed to the
    /// next one.
    upstream_down: bool,
    /// The kind of the last `response.create` sent, until its `response.done`.
    in_flight: Option<ResponseKind>,
    /// Responses refused for rate or server reasons, and the next try.
    retry: Retry,
    /// Until when the upstream's rate limits are spent (a `rate_limits.updated` limit with
    /// nothing remaining, for its `reset_seconds`).
    rate_limited_until: Option<Instant>,
}

/// Waits between tries of a refused response, ms: the n-th retry waits the n-th (the last
/// for any after), or until the spent rate limit resets if that is later.
pub const RESPONSE_RETRY_BACKOFF_MS: [u64; 4] = [250, 500, 1000, 2000];
/// Tries of one refused response after the first.
pub const RESPONSE_RETRY_MAX: u32 = 4;
/// From a response's first refusal, how long its retries may go on, ms; a caller waits this
/// long at most before the proxy stops asking (and the caller can speak again).
pub const RESPONSE_RETRY_BUDGET_MS: u64 = 5000;

/// The retries of a refused response.
#[derive(Debug, Default)]
struct Retry {
    /// Retries sent since the last response that completed.
    attempts: u32,
    /// The first refusal of this run of retries.
    since: Option<Instant>,
    /// When to ask again, and for what.
    due: Option<(Instant, ResponseKind)>,
}

impl CallState {
    /// A call whose stream started at `started`.
    pub fn new(settings: CallSettings, started: Instant) -> CallState {
        CallState {
            playback: Playback::new(settings.mark_interval_ms),
            settings,
            response: ResponseState::Idle,
            queued: None,
            upgraded: false,
            muted_response: None,
            turn_ended_at: None,
            caller_speaking: false,
            heard_pending: None,
            greeting_latency_ms: None,
            turn_latencies_ms: Vec::new(),
            counters: CallCounters::default(),
            timeline: Timeline::new(started),
            closing: None,
            after_restore: None,
            upstream_down: false,
            in_flight: None,
            retry: Retry::default(),
            rate_limited_until: None,
        }
    }

    /// Asks for a response now, or after the active one. A queued safe reply is never
    /// downgraded to a plain one.
    fn request_response(&mut self, kind: ResponseKind, out: &mut Vec<Command>) {
        if let Some(closing) = &mut self.closing {
            // Once closing, the goodbye is the only response asked for.
            if kind != ResponseKind::Goodbye || closing.goodbye_sent {
                return;
            }
        }
        if self.upstream_down {
            // Owed to the restored session; a goodbye or a safe reply is never downgraded.
            if !matches!(
                self.after_restore,
                Some(ResponseKind::Safe | ResponseKind::Goodbye)
            ) || kind == ResponseKind::Goodbye
            {
                self.after_restore = Some(kind);
            }
            return;
        }
        if self.response == ResponseState::Idle {
            self.response = ResponseState::Requested;
            self.in_flight = Some(kind);
            out.push(match kind {
                ResponseKind::Plain => Command::ResponseCreate,
                ResponseKind::Safe => Command::SafeResponse,
                ResponseKind::Goodbye => Command::GoodbyeResponse,
            });
            if let Some(closing) = &mut self.closing
                && kind == ResponseKind::Goodbye
            {
                closing.goodbye_sent = true;
            }
        } else if !matches!(
            self.queued,
            Some(ResponseKind::Safe | ResponseKind::Goodbye)
        ) || kind == ResponseKind::Goodbye
        {
            self.queued = Some(kind);
        }
    }

    /// The call must end on purpose (`reason`: drain deadline, longest duration): the model is
    /// asked to say goodbye once the response in progress (if any) is done; nothing else is
    /// asked for from now on. The call ends when the goodbye has played, or
    /// [`CallSettings::goodbye_limit`] after this, whichever comes first
    /// ([`CallState::close_due`]). Returns false when the call was already closing.
    pub fn close(&mut self, reason: EndReason, now: Instant, out: &mut Vec<Command>) -> bool {
        if self.closing.is_some() {
            return false;
        }
        self.closing = Some(Closing {
            reason,
            since: now,
            goodbye_sent: false,
            goodbye_id: None,
            goodbye_done: false,
            by_model: false,
        });
        self.timeline.push(now, TimelineEvent::Closing { reason });
        self.request_response(ResponseKind::Goodbye, out);
        true
    }

    /// The model called `end_call` at `now`: the response in progress is its goodbye. The call
    /// ends as [`EndReason::AgentHangup`] once that response is done and Twilio has
    /// acknowledged its last mark (everything sent has played), or at
    /// [`CallSettings::goodbye_limit`]; nothing else is asked for meanwhile. A caller who
    /// starts speaking first calls it off ([`CallState::on_speech_started`]). Returns false
    /// when the call was already closing.
    pub fn hang_up(&mut self, now: Instant) -> bool {
        if !self.model_closes(EndReason::AgentHangup, now) {
            return false;
        }
        self.timeline.push(now, TimelineEvent::HangupRequested);
        true
    }

    /// The model called `transfer_call` to `target` at `now`: the response in progress is its
    /// handoff line. The call ends as [`EndReason::Transferred`] (for the session to redirect
    /// it to `<Dial>`) once that response is done and Twilio has acknowledged its last mark,
    /// or at [`CallSettings::goodbye_limit`]; the caller speaking does not call it off.
    /// Returns false when the call was already closing.
    pub fn transfer(&mut self, target: &str, now: Instant) -> bool {
        if !self.model_closes(EndReason::Transferred, now) {
            return false;
        }
        self.timeline.push(
            now,
            TimelineEvent::TransferRequested {
                target: target.to_string(),
            },
        );
        true
    }

    /// The transfer could not be made (Twilio did not take the redirect): the call is no
    /// longer closing, and the model is told and asked to answer.
    pub fn transfer_failed(&mut self, out: &mut Vec<Command>) {
        self.closing = None;
        out.push(Command::SystemMessage(
            crate::tools::builtin::TRANSFER_FAILED,
        ));
        self.request_response(ResponseKind::Plain, out);
    }

    /// The model closes the call as `reason` ([`CallState::hang_up`], [`CallState::transfer`]):
    /// false when it was already closing.
    fn model_closes(&mut self, reason: EndReason, now: Instant) -> bool {
        if self.closing.is_some() {
            return false;
        }
        let (goodbye_id, goodbye_done) = match &self.response {
            ResponseState::Active(id) => (Some(id.clone()), false),
            // Already done (the call came in `response.done`), or never started.
            ResponseState::Idle | ResponseState::Requested => (None, true),
        };
        self.queued = None;
        self.closing = Some(Closing {
            reason,
            since: now,
            goodbye_sent: true,
            goodbye_id,
            goodbye_done,
            by_model: true,
        });
        true
    }

    /// An answering machine took the call (outbound, Twilio's AMD): the first response is the
    /// voicemail (the session sends it with the voicemail instructions, as the goodbye), and
    /// the call ends as [`EndReason::Voicemail`] once Twilio has acknowledged its last mark, or
    /// at [`VOICEMAIL_LIMIT`]. Nothing else is asked for, and nothing calls it off.
    pub fn leave_voicemail(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(Closing {
            reason: EndReason::Voicemail,
            since: now,
            goodbye_sent: false,
            goodbye_id: None,
            goodbye_done: false,
            by_model: true,
        });
        self.timeline.push(now, TimelineEvent::VoicemailRequested);
        self.request_response(ResponseKind::Goodbye, out);
    }

    /// Whether the call is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// When a closing call ends, and with which reason: once the goodbye has been sent in full
    /// and played by the playback clock, or at the goodbye limit. `None` while not closing.
    pub fn close_due(&self) -> Option<(Instant, EndReason)> {
        let closing = self.closing.as_ref()?;
        let limit = closing.since + closing.limit(self.settings.goodbye_limit);
        let due = if closing.by_model {
            // Twilio's own word that the goodbye played: its last mark came back.
            if closing.goodbye_done && !self.playback.marks_outstanding() {
                closing.since
            } else {
                limit
            }
        } else if closing.goodbye_done {
            self.playback
                .plays_until()
                .map_or(closing.since, |until| until.max(closing.since))
                .min(limit)
        } else {
            limit
        };
        Some((due, closing.reason))
    }

    /// The upstream session was lost at `now`. Whatever it was doing is gone with it: a response
    /// in progress, asked for or queued is remembered and asked for again by
    /// [`CallState::on_upstream_restored`]; the item ids it gave mean nothing to the next
    /// session, so a barge-in on audio still playing clears Twilio but truncates nothing.
    pub fn on_upstream_lost(&mut self, cause: EndReason, now: Instant) {
        let in_flight = match self.response {
            ResponseState::Idle => None,
            ResponseState::Requested | ResponseState::Active(_) => Some(ResponseKind::Plain),
        };
        let mut wanted = self.queued.take().or(in_flight);
        if let Some(closing) = &mut self.closing
            && closing.goodbye_sent
            && !closing.goodbye_done
        {
            // The goodbye did not finish: it is asked for again on the new session.
            closing.goodbye_sent = false;
            closing.goodbye_id = None;
            wanted = Some(ResponseKind::Goodbye);
        }
        self.after_restore = wanted;
        self.upstream_down = true;
        self.response = ResponseState::Idle;
        self.muted_response = None;
        self.playback.forget_item();
        self.timeline
            .push(now, TimelineEvent::UpstreamLost { cause });
    }

    /// A new upstream session was restored (it was configured with the FULL instructions, so
    /// no upgrade is due): the response the lost session owed is asked for.
    pub fn on_upstream_restored(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.upstream_down = false;
        self.mark_upgraded(now);
        if let Some(kind) = self.after_restore.take() {
            self.request_response(kind, out);
        }
    }

    /// The session was opened with the FULL instructions (a caller back from a transfer): no
    /// upgrade is due.
    pub fn started_full(&mut self, now: Instant) {
        self.mark_upgraded(now);
    }

    /// The session has the FULL instructions from `now` on (recorded once). Returns whether
    /// this is news.
    fn mark_upgraded(&mut self, now: Instant) -> bool {
        if self.upgraded {
            return false;
        }
        self.upgraded = true;
        self.timeline.push(
            now,
            TimelineEvent::Upgraded {
                full_tokens: self.settings.full_tokens,
            },
        );
        true
    }

    /// Whether the call is between turns at `now`: nobody speaking, nothing playing, no
    /// response asked for, active, queued or owed, no turn waiting for its answer, not
    /// closing. A session can be swapped here without the caller noticing.
    pub fn at_turn_boundary(&self, now: Instant) -> bool {
        !self.upstream_down
            && self.response == ResponseState::Idle
            && self.queued.is_none()
            && self.after_restore.is_none()
            && !self.caller_speaking
            && self.turn_ended_at.is_none()
            && self.closing.is_none()
            && !self.playback.is_playing(now)
    }

    /// The upstream session was swapped for one opened ahead, at a turn boundary: the old
    /// item ids mean nothing to it. Recorded with what the new session was given.
    pub fn on_rollover(&mut self, replayed: usize, resent_frames: usize, now: Instant) {
        self.playback.forget_item();
        self.mark_upgraded(now);
        self.timeline.push(
            now,
            TimelineEvent::Rollover {
                replayed,
                resent_frames,
            },
        );
    }

    /// The response a restore will ask for, if any.
    pub fn owed_after_restore(&self) -> bool {
        self.after_restore.is_some()
    }

    /// The item playing to the caller and the ms of it heard at `now`, if any.
    pub fn playing(&self, now: Instant) -> Option<(&str, u64)> {
        self.playback
            .current_item()
            .map(|item| (item, self.playback.heard_ms(now)))
    }

    /// The stream started: greet.
    pub fn greet(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.timeline
            .push(now, TimelineEvent::GreetingRequested { early: false });
        self.request_response(ResponseKind::Plain, out);
    }

    /// The stream started, and the greeting's `response.create` went out on the pre-warmed
    /// session before it: the response is requested, nothing is sent.
    pub fn greeting_requested_earlier(&mut self, now: Instant) {
        self.timeline
            .push(now, TimelineEvent::GreetingRequested { early: true });
        if self.response == ResponseState::Idle {
            self.response = ResponseState::Requested;
        }
    }

    /// Whether a model audio delta of `response_id` goes to the caller: false for the rest of
    /// a response the caller interrupted (counted as discarded).
    pub fn should_forward(&mut self, response_id: Option<&str>) -> bool {
        if response_id.is_some() && self.muted_response.as_deref() == response_id {
            self.counters.discarded_after_barge_in += 1;
            return false;
        }
        true
    }

    /// The Twilio leg accepted `bytes` of model audio of `item_id` at `now`: from here on they
    /// count as sent (greeting and turn latency, the playback position, marks). Returns the
    /// name of a mark to send right after it, when a mark interval has filled up.
    pub fn on_audio_queued(&mut self, item_id: &str, bytes: u64, now: Instant) -> Option<String> {
        let start = self.timeline.start();
        if self.greeting_latency_ms.is_none() {
            let ms = now.saturating_duration_since(start).as_secs_f64() * 1000.0;
            self.greeting_latency_ms = Some(ms);
            self.timeline
                .push(now, TimelineEvent::GreetingAudio { latency_ms: ms });
        }
        if let Some(ended) = self.turn_ended_at.take() {
            self.heard_pending = Some((ended, self.playback.sent_bytes()));
            let ms = now.saturating_duration_since(ended).as_secs_f64() * 1000.0;
            self.turn_latencies_ms.push(ms);
            self.timeline
                .push(now, TimelineEvent::TurnAudio { latency_ms: ms });
        }
        self.audio_sent(item_id, bytes, now)
    }

    /// `bytes` of `item_id` went to Twilio at `now`: counted, and on the playback clock.
    /// Returns the name of a mark due after them.
    fn audio_sent(&mut self, item_id: &str, bytes: u64, now: Instant) -> Option<String> {
        self.counters.frames_out += 1;
        let mark = self.playback.on_audio_sent(item_id, bytes, now);
        if mark.is_some() {
            self.counters.marks_sent += 1;
        }
        mark
    }

    /// The Twilio leg accepted `bytes` of hold audio at `now` (played during a reconnect): it
    /// moves the playback clock and marks like model audio, and measures no latency. Returns
    /// the name of a mark to send after it, as [`CallState::on_audio_queued`] does.
    pub fn on_hold_audio_queued(&mut self, bytes: u64, now: Instant) -> Option<String> {
        self.audio_sent(crate::call::hold_audio::HOLD_ITEM, bytes, now)
    }

    /// The Twilio leg refused a model audio delta (its queue is full): it is dropped and
    /// counted, and it counts toward nothing the caller hears.
    pub fn on_audio_dropped(&mut self) {
        self.counters.dropped_out += 1;
    }

    /// A caller frame could not be queued upstream (upstream writer full).
    pub fn on_caller_frame(&mut self, queued: bool) {
        if queued {
            self.counters.frames_in += 1;
        } else {
            self.counters.dropped_in += 1;
        }
    }

    /// A held caller frame (counted as in when it was held) had to go to make room during a
    /// reconnect: it counts as dropped instead.
    pub fn on_held_frame_dropped(&mut self) {
        self.counters.frames_in = self.counters.frames_in.saturating_sub(1);
        self.counters.dropped_in += 1;
    }

    /// The response's audio is complete: mark its tail so playback tracking covers it.
    pub fn on_audio_done(&mut self, out: &mut Vec<Command>) {
        if let Some(name) = self.playback.flush_mark() {
            self.counters.marks_sent += 1;
            out.push(Command::TwilioMark(name));
        }
    }

    /// The Twilio link's one-way delay changed (measured by the session's pings): the playback
    /// clock accounts for it ([`Playback::set_link_delay`]).
    pub fn set_twilio_link_delay(&mut self, delay: Duration) {
        self.playback.set_link_delay(delay);
    }

    /// Twilio echoed a mark at `now`. When it is the first counted mark past the start of the
    /// last turn's answer, the caller-heard turn latency is recorded: the audio between the
    /// answer's first byte and the mark has just finished playing, so the answer began to play
    /// that much audio before `now` (Twilio plays in real time, 8 bytes of mu-law per ms).
    pub fn on_mark(&mut self, name: &str, now: Instant) {
        let Some(position) = self.playback.on_mark_position(name, now) else {
            return;
        };
        self.counters.marks_acked += 1;
        if let Some((ended, first_audio_at)) = self.heard_pending
            && position > first_audio_at
        {
            self.heard_pending = None;
            let before_mark_ms = (position - first_audio_at) / BYTES_PER_MS as u64;
            let began = now
                .checked_sub(std::time::Duration::from_millis(before_mark_ms))
                .unwrap_or(ended)
                .max(ended);
            let ms = began.saturating_duration_since(ended).as_secs_f64() * 1000.0;
            self.timeline
                .push(began, TimelineEvent::TurnHeard { latency_ms: ms });
        }
    }

    /// Server VAD heard the caller start speaking. Returns true when this was a barge-in.
    pub fn on_speech_started(&mut self, now: Instant, out: &mut Vec<Command>) -> bool {
        self.timeline.push(now, TimelineEvent::CallerSpeechStarted);
        self.caller_speaking = true;
        if self.closing.as_ref().is_some_and(Closing::cancellable) {
            // The caller has more to say: the model's hang-up is off, and it is told why.
            self.closing = None;
            self.timeline.push(now, TimelineEvent::HangupCancelled);
            out.push(Command::SystemMessage(
                crate::tools::builtin::HANGUP_CANCELLED,
            ));
        }
        if !self.playback.is_playing(now) {
            return false;
        }
        out.push(Command::TwilioClear);
        // A clear returns the outstanding marks unplayed: a pending "heard" is not measured.
        self.heard_pending = None;
        let cut = self.playback.on_clear(now);
        let truncate_ms = cut.truncate.as_ref().map(|(_, ms)| *ms);
        if let Some((item_id, audio_end_ms)) = cut.truncate
            && item_id != crate::call::hold_audio::HOLD_ITEM
        {
            out.push(Command::Truncate {
                item_id,
                audio_end_ms,
            });
        }
        let mut cancel_sent = false;
        if let ResponseState::Active(id) = &self.response {
            // Whatever the server still sends of this response must not reach the caller.
            self.muted_response = Some(id.clone());
            if !self.settings.server_cancels_on_speech {
                out.push(Command::ResponseCancel);
                cancel_sent = true;
            }
        }
        self.counters.barge_ins += 1;
        self.timeline.push(
            now,
            TimelineEvent::BargeIn {
                reaction_us: 0,
                truncate_ms,
                dropped_ms: cut.dropped_ms,
                cancel_sent,
            },
        );
        true
    }

    /// Sets the measured reaction time of the barge-in just recorded (the session measures it
    /// around sending the commands).
    pub fn set_last_barge_in_reaction(&mut self, reaction_us: u64) {
        if let Some((_, TimelineEvent::BargeIn { reaction_us: r, .. })) =
            self.timeline.entries_mut().last_mut()
        {
            *r = reaction_us;
        }
    }

    /// Server VAD heard the caller stop: the turn is over, the answer's latency starts now.
    pub fn on_speech_stopped(&mut self, now: Instant) {
        self.counters.turns += 1;
        self.caller_speaking = false;
        self.turn_ended_at = Some(now);
        self.timeline.push(now, TimelineEvent::CallerSpeechStopped);
    }

    /// `response.created`.
    pub fn on_response_created(&mut self, response_id: &str, now: Instant) {
        if let Some(closing) = &mut self.closing
            && closing.goodbye_sent
            && closing.goodbye_id.is_none()
        {
            closing.goodbye_id = Some(response_id.to_string());
        }
        self.response = ResponseState::Active(response_id.to_string());
        self.timeline.push(
            now,
            TimelineEvent::ResponseStarted {
                response_id: response_id.to_string(),
            },
        );
    }

    /// `response.done`: the upgrade on the first one, then any queued `response.create`. A
    /// response that `failed` for rate or server reasons ([`ResponseFailure::is_retryable`]) is
    /// asked for again after a backoff ([`RESPONSE_RETRY_BACKOFF_MS`], or until a spent rate
    /// limit resets), at most [`RESPONSE_RETRY_MAX`] times within
    /// [`RESPONSE_RETRY_BUDGET_MS`]; [`CallState::retry_due`] says when.
    pub fn on_response_done(
        &mut self,
        response_id: Option<&str>,
        status: Option<&str>,
        usage: Option<Usage>,
        failure: Option<&ResponseFailure>,
        now: Instant,
        out: &mut Vec<Command>,
    ) {
        self.response = ResponseState::Idle;
        let kind = self.in_flight.take().unwrap_or(ResponseKind::Plain);
        if self.muted_response.as_deref() == response_id {
            self.muted_response = None;
        }
        if let Some(closing) = &mut self.closing
            && closing.goodbye_id.is_some()
            && closing.goodbye_id.as_deref() == response_id
        {
            closing.goodbye_done = true;
        }
        if let Some(usage) = usage {
            self.counters.total_tokens += usage.total_tokens;
            self.counters.cached_tokens += usage.input_token_details.cached_tokens;
        }
        self.timeline.push(
            now,
            TimelineEvent::ResponseDone {
                response_id: response_id.unwrap_or_default().to_string(),
                status: status.unwrap_or("unknown").to_string(),
            },
        );
        match failure {
            Some(failure) if failure.is_retryable() && self.queued.is_none() => {
                self.schedule_retry(kind, failure.label(), now);
            }
            Some(failure) => {
                tracing::warn!(
                    code = failure.label(),
                    "upstream response failed; not retried"
                );
            }
            None if status == Some("completed") => self.retry = Retry::default(),
            None => {}
        }
        if self.mark_upgraded(now) {
            out.push(Command::UpgradeInstructions);
        }
        if let Some(kind) = self.queued.take() {
            self.request_response(kind, out);
        }
    }

    /// A refused response of `kind` (`code` says why): the next try is due after the backoff,
    /// unless the tries or their budget are spent.
    fn schedule_retry(&mut self, kind: ResponseKind, code: &str, now: Instant) {
        let since = *self.retry.since.get_or_insert(now);
        let attempt = self.retry.attempts + 1;
        let step = (self.retry.attempts as usize).min(RESPONSE_RETRY_BACKOFF_MS.len() - 1);
        let mut wait = Duration::from_millis(RESPONSE_RETRY_BACKOFF_MS[step]);
        if let Some(until) = self.rate_limited_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        let within_budget = (now + wait).saturating_duration_since(since)
            <= Duration::from_millis(RESPONSE_RETRY_BUDGET_MS);
        if attempt > RESPONSE_RETRY_MAX || !within_budget {
            self.timeline.push(
                now,
                TimelineEvent::ResponseGaveUp {
                    code: code.to_string(),
                    retries: self.retry.attempts,
                },
            );
            self.retry = Retry::default();
            return;
        }
        self.retry.attempts = attempt;
        self.retry.due = Some((now + wait, kind));
        self.counters.response_retries += 1;
        self.timeline.push(
            now,
            TimelineEvent::ResponseRetry {
                code: code.to_string(),
                attempt,
                wait_ms: wait.as_millis() as u64,
            },
        );
    }

    /// The caller finished a keypad entry of `keys` keys, already given to the model as text:
    /// the model is asked to answer it (after the active response, if one is playing).
    pub fn on_keypad_entry(&mut self, keys: usize, now: Instant, out: &mut Vec<Command>) {
        self.timeline.push(now, TimelineEvent::KeypadEntry { keys });
        self.request_response(ResponseKind::Plain, out);
    }

    /// Every call of a run of tool calls has its output: the model is asked to answer (after
    /// the active response, if one is still going).
    pub fn on_tool_outputs(&mut self, out: &mut Vec<Command>) {
        self.request_response(ResponseKind::Plain, out);
    }

    /// When the audio sent so far will have played, by the playback clock; `None` when
    /// nothing plays.
    pub fn plays_until(&self) -> Option<Instant> {
        self.playback.plays_until()
    }

    /// When a refused response is to be asked for again, if one is.
    pub fn retry_due(&self) -> Option<Instant> {
        self.retry.due.map(|(at, _)| at)
    }

    /// The retry's time has come (`now`): the refused response is asked for again (or after
    /// the active one, or owed to a restored session, as any other).
    pub fn retry_now(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Some((at, kind)) = self.retry.due
            && at <= now
        {
            self.retry.due = None;
            self.request_response(kind, out);
        }
    }

    /// `rate_limits.updated`: a limit with nothing remaining is spent until its reset, and a
    /// retry waits for that.
    pub fn on_rate_limits(&mut self, limits: &[RateLimit], now: Instant) {
        let spent = limits
            .iter()
            .filter(|l| l.limit > 0 && l.remaining == 0)
            .map(|l| now + Duration::from_secs_f64(l.reset_seconds.clamp(0.0, 60.0)))
            .max();
        self.rate_limited_until = spent;
    }

    /// An upstream `error`. Returns true when it is benign.
    pub fn on_error(&mut self, code: Option<&str>, now: Instant) -> bool {
        let code = code.unwrap_or("unknown");
        let benign = BENIGN_ERROR_CODES.contains(&code);
        if code == "rate_limit_exceeded" && self.response == ResponseState::Requested {
            // The response.create was refused outright: no response will come for it.
            self.response = ResponseState::Idle;
            let kind = self.in_flight.take().unwrap_or(ResponseKind::Plain);
            if self.queued.is_none() {
                self.schedule_retry(kind, code, now);
            }
        }
        if code == "conversation_already_has_active_response" {
            // Our response.create lost a race with one the server started: retry after it.
            if let Some(closing) = &mut self.closing
                && closing.goodbye_sent
                && closing.goodbye_id.is_none()
            {
                closing.goodbye_sent = false;
                self.queued = Some(ResponseKind::Goodbye);
            } else if self.queued.is_none() {
                self.queued = Some(ResponseKind::Plain);
            }
            if self.response == ResponseState::Requested {
                self.response = ResponseState::Active(String::new());
            }
        }
        if benign {
            self.counters.benign_errors += 1;
        } else {
            self.counters.upstream_errors += 1;
        }
        self.timeline.push(
            now,
            TimelineEvent::UpstreamError {
                code: code.to_string(),
                benign,
            },
        );
        benign
    }

    /// Carries out a guard's reaction. `user_item` is the caller item the transcript belongs to.
    ///
    /// Commands come out in the order the protocol needs: cancel the answer, clear Twilio
    /// (and truncate what was not heard), delete the user item, add the system item, then the
    /// reply (queued behind the cancelled response until its `response.done`).
    pub fn apply_reaction(
        &mut self,
        reaction: &Reaction,
        user_item: Option<&str>,
        now: Instant,
        out: &mut Vec<Command>,
    ) {
        match reaction {
            Reaction::None => {}
            // The caller already started another turn: that turn's transcript releases the
            // answer (to both), as the server's own VAD would have.
            Reaction::AllowTurn if self.caller_speaking => {}
            Reaction::AllowTurn => {
                if let Some(ended) = self.turn_ended_at {
                    let wait_ms = now.saturating_duration_since(ended).as_secs_f64() * 1000.0;
                    self.timeline
                        .push(now, TimelineEvent::GateReleased { wait_ms });
                }
                self.request_response(ResponseKind::Plain, out)
            }
            Reaction::BlockInjection => {
                self.stop_answer(now, true, out);
                if let Some(item) = user_item {
                    out.push(Command::DeleteItem(item.to_string()));
                }
                out.push(Command::SystemMessage(guards::OVERRIDE_NOTICE));
                self.request_response(ResponseKind::Safe, out);
            }
            Reaction::DropSelfEcho => {
                self.stop_answer(now, false, out);
                if let Some(item) = user_item {
                    out.push(Command::DeleteItem(item.to_string()));
                }
            }
            Reaction::StopLeak => {
                self.stop_answer(now, true, out);
                out.push(Command::SystemMessage(guards::LEAK_CORRECTION));
            }
            Reaction::CorrectEcho => out.push(Command::SystemMessage(guards::ECHO_CORRECTION)),
        }
    }

    /// Cancels the active response (and discards the rest of its audio) and clears Twilio:
    /// always when `always_clear`, otherwise only while audio plays.
    fn stop_answer(&mut self, now: Instant, always_clear: bool, out: &mut Vec<Command>) {
        if let ResponseState::Active(id) = &self.response {
            self.muted_response = Some(id.clone());
            out.push(Command::ResponseCancel);
        }
        if always_clear || self.playback.is_playing(now) {
            out.push(Command::TwilioClear);
            let cut = self.playback.on_clear(now);
            if let Some((item_id, audio_end_ms)) = cut.truncate {
                out.push(Command::Truncate {
                    item_id,
                    audio_end_ms,
                });
            }
        }
    }

    /// Records a caller or model transcript on the timeline.
    pub fn on_transcript(&mut self, caller: bool, text: String, now: Instant) {
        let event = if caller {
            TimelineEvent::CallerTranscript { text }
        } else {
            TimelineEvent::ModelTranscript { text }
        };
        self.timeline.push(now, event);
    }

    /// Records any other timeline event.
    pub fn record(&mut self, event: TimelineEvent, now: Instant) {
        self.timeline.push(now, event);
    }

    /// Counts a frame that could not be parsed.
    pub fn on_malformed(&mut self, from_twilio: bool) {
        if from_twilio {
            self.counters.malformed_twilio += 1;
        } else {
            self.counters.malformed_upstream += 1;
        }
    }

    /// Whether the FULL instructions were sent.
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Stream start to first audio out, ms.
    pub fn greeting_latency_ms(&self) -> Option<f64> {
        self.greeting_latency_ms
    }

    /// Consumes the state: latencies, counters and the timeline.
    pub fn into_parts(self) -> (Option<f64>, Vec<f64>, CallCounters, Timeline) {
        (
            self.greeting_latency_ms,
            self.turn_latencies_ms,
            self.counters,
            self.timeline,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(server_cancels: bool) -> CallSettings {
        CallSettings {
            mark_interval_ms: 500,
            server_cancels_on_speech: server_cancels,
            full_tokens: 1000,
            goodbye_limit: Duration::from_secs(10),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Greeting requested, created, and `audio_ms` of it sent at `t0`.
    fn greeting_playing(server_cancels: bool, audio_ms: u64) -> (CallState, Instant) {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(server_cancels), t0);
        let mut out = Vec::new();
        s.greet(t0, &mut out);
        assert_eq!(out, vec![Command::ResponseCreate]);
        s.on_response_created("resp_1", t0 + ms(5));
        for _ in 0..audio_ms / 100 {
            s.on_audio_queued("item_1", 800, t0 + ms(10));
        }
        (s, t0)
    }

    #[test]
    fn greeting_latency_is_measured_to_the_first_audio_out() {
        let (s, _) = greeting_playing(true, 1000);
        let latency = s.greeting_latency_ms().unwrap_or(f64::NAN);
        assert!((9.0..=11.0).contains(&latency), "{latency}");
    }

    #[test]
    fn a_transfer_waits_for_the_handoff_line_and_the_caller_speaking_does_not_stop_it() {
        // The handoff line (3 s) is the greeting; transfer_call comes while it is sent.
        let (mut s, t0) = greeting_playing(true, 3000);
        assert!(s.transfer("front desk", t0 + ms(20)));
        assert!(!s.hang_up(t0 + ms(21)), "already closing");
        let mut out = Vec::new();
        s.on_response_done(Some("resp_1"), Some("completed"), None, None, t0, &mut out);
        // Marks are outstanding: not due before the goodbye limit.
        let (due, reason) = s.close_due().expect("closing");
        assert_eq!(reason, EndReason::Transferred);
        assert_eq!(due, t0 + ms(20) + Duration::from_secs(10));
        // The caller speaking clears the rest but does not call the transfer off.
        out.clear();
        s.on_speech_started(t0 + ms(1000), &mut out);
        assert!(!out.iter().any(|c| matches!(c, Command::SystemMessage(_))));
        let (due, reason) = s.close_due().expect("still closing");
        assert_eq!(reason, EndReason::Transferred);
        assert!(due <= t0 + ms(1000), "nothing left to play once cleared");
        // Twilio refused the redirect: the model is told and asked to answer.
        out.clear();
        s.transfer_failed(&mut out);
        assert!(s.close_due().is_none());
        assert_eq!(
            out[0],
            Command::SystemMessage(crate::tools::builtin::TRANSFER_FAILED)
        );
        assert!(out.contains(&Command::ResponseCreate), "{out:?}");
    }

    #[test]
    fn caller_interrupting_clears_twilio_and_truncates_to_heard_audio() {
        let (mut s, t0) = greeting_playing(true, 3000);
        let mut out = Vec::new();
        assert!(s.on_speech_started(t0 + ms(1010), &mut out));
        assert_eq!(
            out,
            vec![
                Command::TwilioClear,
                Command::Truncate {
                    item_id: "item_1".into(),
                    audio_end_ms: 1000
                }
            ],
            "the server cancels by itself: no response.cancel"
        );
        // Deltas of the interrupted response still in flight are discarded.
        assert!(!s.should_forward(Some("resp_1")));
    }

    #[test]
    fn cancel_is_sent_only_when_a_response_is_active_and_the_server_will_not_cancel() {
        let (mut s, t0) = greeting_playing(false, 3000);
        let mut out = Vec::new();
        s.on_speech_started(t0 + ms(500), &mut out);
        assert!(out.contains(&Command::ResponseCancel));

        // Response finished generating, but Twilio is still playing it.
        let (mut s, t0) = greeting_playing(false, 3000);
        let mut out = Vec::new();
        s.on_response_done(
            Some("resp_1"),
            Some("completed"),
            None,
            None,
            t0 + ms(100),
            &mut out,
        );
        out.clear();
        assert!(s.on_speech_started(t0 + ms(500), &mut out));
        assert!(out.contains(&Command::TwilioClear));
        assert!(!out.contains(&Command::ResponseCancel), "{out:?}");
    }

    #[test]
    fn speech_with_nothing_playing_is_not_a_barge_in() {
        let (mut s, t0) = greeting_playing(true, 1000);
        let mut out = Vec::new();
        assert!(!s.on_speech_started(t0 + ms(5000), &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn the_first_response_done_upgrades_once() {
        let (mut s, t0) = greeting_playing(true, 1000);
        let mut out = Vec::new();
        s.on_response_done(Some("resp_1"), Some("completed"), None, None, t0, &mut out);
        assert_eq!(out, vec![Command::UpgradeInstructions]);
        out.clear();
        s.on_response_created("resp_2", t0);
        s.on_response_done(Some("resp_2"), Some("completed"), None, None, t0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(s.upgraded());
    }

    #[test]
    fn response_create_waits_for_the_active_response() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        // The server VAD started a response before the greeting was asked for.
        s.on_response_created("resp_vad", t0);
        s.greet(t0, &mut out);
        assert!(out.is_empty(), "queued, not sent: {out:?}");
        s.on_response_done(
            Some("resp_vad"),
            Some("completed"),
            None,
            None,
            t0,
            &mut out,
        );
        assert_eq!(
            out,
            vec![Command::UpgradeInstructions, Command::ResponseCreate]
        );
    }

    #[test]
    fn a_create_rejected_as_concurrent_is_retried_after_response_done() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.greet(t0, &mut out);
        out.clear();
        assert!(s.on_error(Some("conversation_already_has_active_response"), t0));
        s.on_response_done(Some("resp_x"), Some("completed"), None, None, t0, &mut out);
        assert!(out.contains(&Command::ResponseCreate), "{out:?}");
    }

    #[test]
    fn the_gate_does_not_answer_a_turn_while_the_caller_speaks_again() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.on_speech_started(t0, &mut out);
        s.on_speech_stopped(t0 + ms(1000));
        s.on_speech_started(t0 + ms(1200), &mut out);
        s.apply_reaction(
            &Reaction::AllowTurn,
            Some("item_1"),
            t0 + ms(1400),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        s.on_speech_stopped(t0 + ms(2000));
        s.apply_reaction(
            &Reaction::AllowTurn,
            Some("item_2"),
            t0 + ms(2400),
            &mut out,
        );
        assert_eq!(out, vec![Command::ResponseCreate]);
    }

    #[test]
    fn a_blocked_injection_cancels_clears_deletes_warns_and_replies_safely_in_order() {
        let (mut s, t0) = greeting_playing(true, 3000);
        let mut out = Vec::new();
        s.apply_reaction(
            &Reaction::BlockInjection,
            Some("item_u"),
            t0 + ms(500),
            &mut out,
        );
        assert_eq!(out[0], Command::ResponseCancel);
        assert_eq!(out[1], Command::TwilioClear);
        assert!(matches!(out[2], Command::Truncate { .. }));
        assert_eq!(out[3], Command::DeleteItem("item_u".into()));
        assert_eq!(out[4], Command::SystemMessage(guards::OVERRIDE_NOTICE));
        assert_eq!(
            out.len(),
            5,
            "the safe reply waits for the cancelled response"
        );
        out.clear();
        s.on_response_done(
            Some("resp_1"),
            Some("cancelled"),
            None,
            None,
            t0 + ms(520),
            &mut out,
        );
        assert!(out.contains(&Command::SafeResponse), "{out:?}");
        assert!(!out.contains(&Command::ResponseCreate));
    }

    #[test]
    fn benign_errors_are_told_apart() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        assert!(s.on_error(Some("response_cancel_not_active"), t0));
        assert!(s.on_error(Some("input_audio_buffer_commit_empty"), t0));
        assert!(!s.on_error(Some("invalid_value"), t0));
        assert!(!s.on_error(None, t0));
        let (_, _, counters, _) = s.into_parts();
        assert_eq!((counters.benign_errors, counters.upstream_errors), (2, 2));
    }

    #[test]
    fn turn_latency_runs_from_speech_stopped_to_the_answers_first_audio() {
        let (mut s, t0) = greeting_playing(true, 100);
        let mut out = Vec::new();
        s.on_response_done(
            Some("resp_1"),
            Some("completed"),
            None,
            None,
            t0 + ms(50),
            &mut out,
        );
        s.on_speech_stopped(t0 + ms(2000));
        s.on_response_created("resp_2", t0 + ms(2100));
        assert!(s.should_forward(Some("resp_2")));
        s.on_audio_queued("item_2", 800, t0 + ms(2250));
        let (_, turns, _, _) = s.into_parts();
        assert_eq!(turns.len(), 1);
        assert!((249.0..=251.0).contains(&turns[0]), "{turns:?}");
    }

    #[test]
    fn the_caller_hears_the_answer_when_its_playback_began_not_when_the_mark_came_back() {
        let (mut s, t0) = greeting_playing(true, 100);
        let mut out = Vec::new();
        s.on_audio_done(&mut out);
        s.on_response_done(Some("resp_1"), Some("completed"), None, None, t0, &mut out);
        let stopped = t0 + ms(5_000);
        s.on_speech_stopped(stopped);
        // The answer: 300 ms later its first 0.6 s of audio goes out, with a mark after 0.5 s.
        let first = stopped + ms(300);
        let mut marks = Vec::new();
        for n in 0..6 {
            let at = first + ms(100 * n);
            marks.extend(s.on_audio_queued("item_2", 800, at));
        }
        let mark = marks.first().cloned().expect("a mark after 0.5 s of audio");
        // An unknown mark changes nothing. The answer's mark comes back 520 ms after its first
        // audio went out: 500 ms of it played before the mark, so playback began 20 ms after
        // the audio went out (Twilio's buffer and the network), 320 ms after the turn.
        s.on_mark("vr99.0", first + ms(100));
        s.on_mark(&mark, first + ms(520));
        let heard = s.timeline.heard_latencies_ms();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!((heard[0] - 320.0).abs() < 1.0, "{heard:?}");
        let (at, _) = s
            .timeline
            .entries()
            .iter()
            .find(|(_, e)| matches!(e, TimelineEvent::TurnHeard { .. }))
            .expect("recorded");
        assert_eq!(*at, ms(5_320), "placed on the timeline when playback began");
    }

    #[test]
    fn dropped_audio_counts_toward_nothing_the_caller_hears() {
        let (mut s, t0) = greeting_playing(true, 1000);
        // The Twilio queue was full for two more seconds of the answer: dropped, not sent.
        for _ in 0..20 {
            s.on_audio_dropped();
        }
        let mut out = Vec::new();
        // 1 s was sent at t0 + 10 ms; its marks are still out, so Twilio may still be playing.
        assert!(s.on_speech_started(t0 + ms(1200), &mut out));
        assert_eq!(
            out[1],
            Command::Truncate {
                item_id: "item_1".into(),
                audio_end_ms: 1000,
            },
            "truncated at the audio that was sent, not at what the server generated"
        );
        let (_, _, counters, _) = s.into_parts();
        assert_eq!(counters.dropped_out, 20);
        assert_eq!(counters.frames_out, 10);
    }

    #[test]
    fn an_answer_lost_with_the_upstream_is_asked_for_again_once_restored() {
        let (mut s, t0) = greeting_playing(true, 3000);
        let mut out = Vec::new();
        s.on_upstream_lost(EndReason::UpstreamClosed, t0 + ms(500));
        assert!(s.owed_after_restore());
        // While down, a new request is owed, not sent.
        s.on_speech_stopped(t0 + ms(600));
        s.apply_reaction(&Reaction::AllowTurn, Some("item_2"), t0 + ms(700), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A barge-in on audio of the lost session truncates nothing.
        s.on_speech_started(t0 + ms(800), &mut out);
        assert!(
            !out.iter().any(|c| matches!(c, Command::Truncate { .. })),
            "{out:?}"
        );
        out.clear();
        s.on_upstream_restored(t0 + ms(900), &mut out);
        assert_eq!(out, vec![Command::ResponseCreate]);
        assert!(
            s.upgraded(),
            "the restored session has the FULL instructions"
        );
        assert!(!s.owed_after_restore());
    }

    #[test]
    fn nothing_is_asked_for_when_the_upstream_was_idle() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.on_upstream_lost(EndReason::UpstreamError, t0);
        assert!(!s.owed_after_restore());
        s.on_upstream_restored(t0 + ms(100), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_barge_in_over_hold_audio_clears_twilio_and_truncates_nothing() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        for i in 0..10 {
            s.on_hold_audio_queued(800, t0 + ms(i));
        }
        assert_eq!(
            s.greeting_latency_ms(),
            None,
            "hold audio is not the greeting"
        );
        s.on_speech_started(t0 + ms(300), &mut out);
        assert_eq!(out, vec![Command::TwilioClear]);
    }

    #[test]
    fn a_turn_boundary_is_when_nobody_speaks_and_nothing_is_owed() {
        let (mut s, t0) = greeting_playing(true, 1000);
        let mut out = Vec::new();
        assert!(!s.at_turn_boundary(t0 + ms(100)), "the greeting plays");
        s.on_response_done(
            Some("resp_1"),
            Some("completed"),
            None,
            None,
            t0 + ms(20),
            &mut out,
        );
        assert!(
            s.at_turn_boundary(t0 + ms(1500)),
            "played out, nothing owed"
        );
        s.on_speech_started(t0 + ms(1600), &mut out);
        assert!(!s.at_turn_boundary(t0 + ms(1700)), "the caller speaks");
        s.on_speech_stopped(t0 + ms(2000));
        assert!(
            !s.at_turn_boundary(t0 + ms(2100)),
            "the turn waits for its answer"
        );
    }

    fn rate_limited() -> ResponseFailure {
        ResponseFailure {
            kind: Some("invalid_request_error".into()),
            code: Some("rate_limit_exceeded".into()),
        }
    }

    #[test]
    fn a_response_refused_for_rate_is_asked_for_again_with_backoff_within_a_budget() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.greet(t0, &mut out);
        assert_eq!(out, vec![Command::ResponseCreate]);
        out.clear();
        let failure = rate_limited();
        let mut at = t0;
        let mut waits = Vec::new();
        for n in 1..=RESPONSE_RETRY_MAX {
            s.on_response_created(&format!("resp_{n}"), at);
            s.on_response_done(
                Some(&format!("resp_{n}")),
                Some("failed"),
                None,
                Some(&failure),
                at,
                &mut out,
            );
            assert!(
                !out.contains(&Command::ResponseCreate),
                "not before the backoff"
            );
            let due = s.retry_due().expect("a retry is due");
            waits.push(due.duration_since(at).as_millis() as u64);
            s.retry_now(due - ms(1), &mut out);
            assert!(
                out.is_empty() || !out.contains(&Command::ResponseCreate),
                "not early"
            );
            s.retry_now(due, &mut out);
            assert!(out.contains(&Command::ResponseCreate), "asked again at {n}");
            out.clear();
            at = due;
        }
        assert_eq!(waits, RESPONSE_RETRY_BACKOFF_MS.to_vec());
        // One more refusal: the tries are spent.
        s.on_response_created("resp_last", at);
        s.on_response_done(
            Some("resp_last"),
            Some("failed"),
            None,
            Some(&failure),
            at,
            &mut out,
        );
        assert_eq!(s.retry_due(), None, "given up");
        let gave_up = s.timeline.entries().iter().any(|(_, e)| {
            matches!(e, TimelineEvent::ResponseGaveUp { retries, .. } if *retries == RESPONSE_RETRY_MAX)
        });
        assert!(gave_up);
        assert_eq!(s.counters.response_retries, u64::from(RESPONSE_RETRY_MAX));
    }

    #[test]
    fn a_spent_rate_limit_makes_the_retry_wait_for_its_reset_and_other_failures_are_not_retried() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.greet(t0, &mut out);
        s.on_response_created("resp_1", t0);
        s.on_rate_limits(
            &[RateLimit {
                name: crate::realtime::events::RateLimitName::Requests,
                limit: 100,
                remaining: 0,
                reset_seconds: 1.5,
            }],
            t0,
        );
        s.on_response_done(
            Some("resp_1"),
            Some("failed"),
            None,
            Some(&rate_limited()),
            t0,
            &mut out,
        );
        assert_eq!(s.retry_due(), Some(t0 + ms(1500)), "waits for the reset");

        let mut s = CallState::new(settings(true), t0);
        s.greet(t0, &mut out);
        s.on_response_created("resp_1", t0);
        let refused = ResponseFailure {
            kind: Some("invalid_request_error".into()),
            code: Some("invalid_value".into()),
        };
        s.on_response_done(
            Some("resp_1"),
            Some("failed"),
            None,
            Some(&refused),
            t0,
            &mut out,
        );
        assert_eq!(
            s.retry_due(),
            None,
            "a refusal for the request itself is not retried"
        );
    }

    #[test]
    fn a_response_create_refused_by_an_error_event_is_retried_and_does_not_wedge_the_call() {
        let t0 = Instant::now();
        let mut s = CallState::new(settings(true), t0);
        let mut out = Vec::new();
        s.greet(t0, &mut out);
        out.clear();
        assert!(!s.on_error(Some("rate_limit_exceeded"), t0));
        let due = s.retry_due().expect("a retry is due");
        s.retry_now(due, &mut out);
        assert_eq!(out, vec![Command::ResponseCreate]);
    }
}
