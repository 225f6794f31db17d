//! Mid-call reconnect: what a call needs to replace a lost upstream session without losing the
//! conversation or the caller's words.
//!
//! A call loses its upstream when the socket closes or fails (1006, 1011, a TCP reset), when
//! it goes silent (no event, no pong) or stops reading, or when an `error` ends the session
//! (`session_expired`, a `server_error`: [`crate::realtime::events::ends_session`]). The call's
//! task then, without stopping its Twilio reads:
//! 1. holds the caller's audio ([`HeldAudio`], bounded by `reconnect.hold_caller_ms`);
//! 2. dials again through its [`Dialer`] (which sends the first `session.update` itself, here
//!    with the FULL instructions, the voice, VAD and transcription), retrying with
//!    [`backoff`] until `reconnect.budget_ms` has passed since the loss;
//! 3. on the new session, replays the conversation as text items
//!    ([`crate::call::conversation`]), then sends the held audio in order, then asks again for
//!    the response that was in progress or asked for when the session was lost.
//!
//! A call that cannot get a new session within the budget ends as
//! [`EndReason::UpstreamLost`](crate::domain::EndReason::UpstreamLost).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ReconnectConfig;
use crate::realtime::events::SessionConfig;
use crate::realtime::failover::Dialed;
use crate::realtime::upstream::UpstreamError;

/// A dial in progress: the new upstream socket, its first `session.update` already sent.
pub type DialFuture = Pin<Box<dyn Future<Output = Result<Dialed, UpstreamError>> + Send>>;

/// Opens a new upstream session configured with the given `session.update` (the caller's
/// choice of upstream, connect timeout and metrics live inside).
pub type Dialer = Arc<dyn Fn(SessionConfig) -> DialFuture + Send + Sync>;

/// Audio Twilio sends per media frame, ms (`shared/protocol/twilio.md` §4.2).
const FRAME_MS: u64 = 20;

/// `[reconnect]` as a call uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectOptions {
    /// Reconnects one call may make; 0: none.
    pub max_per_call: u32,
    /// From the loss to a restored session at most.
    pub budget: Duration,
    /// Caller frames held at most while the upstream is away.
    pub hold_frames: usize,
    /// Tokens of conversation replayed at most.
    pub restore_tokens: usize,
    /// When in a reconnect the hold clip plays; `None`: never.
    pub hold_audio_after: Option<Duration>,
    /// How long before a session's expiry it is rolled over; `None`: never.
    pub rollover_margin: Option<Duration>,
}

impl From<&ReconnectConfig> for ReconnectOptions {
    fn from(c: &ReconnectConfig) -> Self {
        ReconnectOptions {
            max_per_call: c.max_per_call,
            budget: Duration::from_millis(c.budget_ms),
            hold_frames: (c.hold_caller_ms / FRAME_MS).max(1) as usize,
            restore_tokens: c.restore_tokens,
            hold_audio_after: (c.hold_audio_after_ms > 0)
                .then(|| Duration::from_millis(c.hold_audio_after_ms)),
            rollover_margin: (c.rollover_margin_ms > 0)
                .then(|| Duration::from_millis(c.rollover_margin_ms)),
        }
    }
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions::from(&ReconnectConfig::default())
    }
}

/// The wait before dial number `attempt` of one reconnect (1-based): none before the first,
/// then 100 ms doubling to at most 1 s. A lost session is usually a lost socket, not a lost
/// service: the first redial goes at once.
pub fn backoff(attempt: u32) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis((100u64 << (n - 2).min(4)).min(1000)),
    }
}

/// Uncommitted caller frames kept while the caller is not speaking: 500 ms, enough for the
/// server VAD's prefix padding (300 ms by default) and the frames in flight when a session
/// dies. While the caller speaks, the whole utterance is kept (up to the hold limit).
pub const QUIET_RESEND_FRAMES: usize = 25;

/// Caller audio (`input_audio_buffer.append` texts) waiting for an upstream leg, oldest first,
/// bounded: when full, the oldest frame is dropped.
#[derive(Debug)]
pub struct HeldAudio {
    frames: VecDeque<String>,
    cap: usize,
}

impl HeldAudio {
    /// Holds at most `cap` frames (at least 1).
    pub fn new(cap: usize) -> HeldAudio {
        HeldAudio {
            frames: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Holds `frame`. Returns false when the oldest frame had to go to make room.
    pub fn push(&mut self, frame: String) -> bool {
        let kept_all = if self.frames.len() >= self.cap {
            self.frames.pop_front();
            false
        } else {
            true
        };
        self.frames.push_back(frame);
        kept_all
    }

    /// The oldest frame held.
    pub fn pop(&mut self) -> Option<String> {
        self.frames.pop_front()
    }

    /// Puts back a frame [`HeldAudio::pop`] took (the leg had no room), at the front.
    pub fn put_back(&mut self, frame: String) {
        self.frames.push_front(frame);
    }

    /// Puts the frames of `earlier` (sent to a session that was lost before committing them)
    /// in front of what is held, in order, leaving `earlier` empty; where not all fit, the
    /// oldest of `earlier` go. Returns how many were put in front.
    pub fn resend_first(&mut self, earlier: &mut HeldAudio) -> usize {
        let room = self.cap.saturating_sub(self.frames.len());
        let skip = earlier.frames.len().saturating_sub(room);
        let mut moved = 0;
        for frame in earlier.frames.drain(..).skip(skip).rev() {
            self.frames.push_front(frame);
            moved += 1;
        }
        moved
    }

    /// Holds at most `cap` frames (at least 1) from now on; the oldest beyond it go.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        let excess = self.frames.len().saturating_sub(self.cap);
        self.frames.drain(..excess);
    }

    /// Forgets every frame (the session committed them).
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// A reconnect in progress.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// When the session was lost.
    pub since: Instant,
    /// Dials started so far.
    pub attempts: u32,
    /// Caller frames held since the loss.
    pub held_frames: usize,
    /// Frames the lost session had not committed, to be sent again.
    pub resent_frames: usize,
    /// Whether the hold clip has been played in this outage.
    pub hold_played: bool,
}

impl Outage {
    /// An outage that began at `since`.
    pub fn new(since: Instant) -> Outage {
        Outage {
            since,
            attempts: 0,
            held_frames: 0,
            resent_frames: 0,
            hold_played: false,
        }
    }

    /// When the hold clip is due, if it is still to play.
    pub fn hold_audio_due(&self, options: &ReconnectOptions) -> Option<Instant> {
        options
            .hold_audio_after
            .filter(|_| !self.hold_played)
            .map(|after| self.since + after)
    }

    /// When the budget runs out.
    pub fn deadline(&self, options: &ReconnectOptions) -> Instant {
        self.since + options.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_redial_goes_at_once_then_the_wait_doubles_to_a_second() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn held_audio_keeps_the_newest_frames_in_order() {
        let mut held = HeldAudio::new(3);
        assert!(held.push("a".into()));
        assert!(held.push("b".into()));
        assert!(held.push("c".into()));
        assert!(!held.push("d".into()), "the oldest went");
        assert_eq!(held.pop().as_deref(), Some("b"));
        held.put_back("b".into());
        let rest: Vec<String> = std::iter::from_fn(|| held.pop()).collect();
        assert_eq!(rest, ["b", "c", "d"]);
        assert!(held.is_empty());
    }

    #[test]
    fn uncommitted_frames_go_first_and_the_oldest_give_way() {
        let mut held = HeldAudio::new(4);
        held.push("held1".into());
        held.push("held2".into());
        let mut uncommitted = HeldAudio::new(4);
        for frame in ["u1", "u2", "u3"] {
            uncommitted.push(frame.into());
        }
        assert_eq!(held.resend_first(&mut uncommitted), 2);
        assert!(uncommitted.is_empty());
        let all: Vec<String> = std::iter::from_fn(|| held.pop()).collect();
        assert_eq!(all, ["u2", "u3", "held1", "held2"]);
        for frame in ["a", "b", "c", "d"] {
            held.push(frame.into());
        }
        held.set_cap(2);
        let kept: Vec<String> = std::iter::from_fn(|| held.pop()).collect();
        assert_eq!(kept, ["c", "d"]);
    }

    #[test]
    fn the_options_turn_milliseconds_into_frames() {
        let options = ReconnectOptions::from(&ReconnectConfig {
            max_per_call: 2,
            budget_ms: 1500,
            hold_caller_ms: 1000,
            restore_tokens: 300,
            hold_audio_after_ms: 0,
            rollover_margin_ms: 0,
        });
        assert_eq!(options.hold_frames, 50);
        assert_eq!(options.budget, Duration::from_millis(1500));
        assert_eq!(options.hold_audio_after, None, "0 turns hold audio off");
        let on = ReconnectOptions::default();
        assert_eq!(on.hold_audio_after, Some(Duration::from_millis(700)));
        let mut outage = Outage::new(Instant::now());
        assert_eq!(
            outage.hold_audio_due(&on),
            Some(outage.since + Duration::from_millis(700))
        );
        outage.hold_played = true;
        assert_eq!(outage.hold_audio_due(&on), None, "once per reconnect");
    }
}
