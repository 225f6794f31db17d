//! What the caller has heard: the playback clock, marks, and the barge-in arithmetic.
//!
//! Twilio buffers the audio we send and plays it in order in real time; it echoes a `mark` when
//! the audio sent before the mark has played, and on `clear` it drops the buffer and echoes every
//! pending mark at once, so an echoed mark alone does not prove that audio played
//! (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>, `shared/protocol/twilio.md`
//! §4.3). This module keeps:
//! - a position in bytes of mu-law (8 bytes per ms) of everything sent in the call;
//! - a playhead anchored at a known (instant, position): the last acknowledged mark, or the moment
//!   audio started into an idle buffer; from there it advances in real time up to what was sent;
//! - a generation counter in every mark name, bumped by `clear`, so marks returned by a clear are
//!   recognised as stale and never count as played;
//! - the byte range of the current assistant item, so a barge-in can truncate the item at what
//!   the caller actually heard.
//!
//! Pure state: the caller passes `now`, which makes every sequence testable.

use std::collections::VecDeque;
use std::time::Instant;

use crate::audio::mulaw::BYTES_PER_MS;

/// How long after the clock says the audio ended an unacknowledged mark still counts as
/// "Twilio may be playing".
pub const MARK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// The assistant item being played.
#[derive(Debug, Clone, PartialEq)]
struct ItemAudio {
    item_id: String,
    /// Position of the item's first byte in the call's playback stream.
    start: u64,
    /// Bytes of the item sent to Twilio (accepted by its leg); audio dropped on a full queue
    /// is not in it, so a truncation never goes past what was sent.
    received: u64,
}

/// The result of a barge-in: what to tell upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Interruption {
    /// The assistant item that was playing, and how many ms of it the caller heard; `None` when
    /// nothing of it was heard or the figure is outside the audio received (no truncate then).
    pub truncate: Option<(String, u64)>,
    /// Ms of audio that were queued but never played (dropped by the `clear`).
    pub dropped_ms: u64,
}

/// Playback and mark bookkeeping for one call.
#[derive(Debug)]
pub struct Playback {
    /// Bumped by every clear; part of every mark name.
    generation: u32,
    /// Sequence number of the next mark in this generation.
    next_mark: u64,
    /// Bytes sent to Twilio that are still meant to play (reset to the playhead by a clear).
    sent: u64,
    /// The playhead was at `.1` at `.0`; `None` while nothing plays.
    anchor: Option<(Instant, u64)>,
    /// Marks sent in this generation and not yet echoed: (sequence, position).
    pending: VecDeque<(u64, u64)>,
    /// Bytes sent since the last mark.
    since_mark: u64,
    /// Send a mark after this many bytes (4000 = 0.5 s).
    mark_interval: u64,
    item: Option<ItemAudio>,
    /// The Twilio link's one-way delay ([`crate::call::link_delay`]): a mark echo left Twilio
    /// this long before it arrived, audio and a `clear` reach Twilio this long after they are
    /// sent.
    link_delay: std::time::Duration,
}

impl Playback {
    /// `mark_interval_ms`: how much audio goes between marks (about 500 ms; not one per chunk).
    pub fn new(mark_interval_ms: u64) -> Playback {
        Playback {
            generation: 0,
            next_mark: 0,
            sent: 0,
            anchor: None,
            pending: VecDeque::new(),
            since_mark: 0,
            mark_interval: mark_interval_ms.max(20) * BYTES_PER_MS as u64,
            item: None,
            link_delay: std::time::Duration::ZERO,
        }
    }

    /// The Twilio link's one-way delay, as measured ([`crate::call::link_delay::LinkDelay`]);
    /// zero (the default) is loopback.
    pub fn set_link_delay(&mut self, delay: std::time::Duration) {
        self.link_delay = delay;
    }

    /// The playhead position at `now`, in bytes.
    fn played(&self, now: Instant) -> u64 {
        match self.anchor {
            Some((at, pos)) => {
                let elapsed_ms = now.saturating_duration_since(at).as_micros() as u64 / 1000;
                (pos + elapsed_ms * BYTES_PER_MS as u64).min(self.sent)
            }
            None => self.sent,
        }
    }

    /// Records `bytes` of model audio of `item_id` accepted for Twilio at `now` (call it only
    /// for audio its leg accepted). Returns the name of
    /// a mark to send after it when a mark interval has filled up.
    pub fn on_audio_sent(&mut self, item_id: &str, bytes: u64, now: Instant) -> Option<String> {
        if self.played(now) >= self.sent {
            // Twilio's buffer is empty: this audio starts playing when it gets there.
            self.anchor = Some((now + self.link_delay, self.sent));
        }
        match &mut self.item {
            Some(item) if item.item_id == item_id => item.received += bytes,
            _ => {
                self.item = Some(ItemAudio {
                    item_id: item_id.to_string(),
                    start: self.sent,
                    received: bytes,
                })
            }
        }
        self.sent += bytes;
        self.since_mark += bytes;
        if self.since_mark >= self.mark_interval {
            Some(self.new_mark())
        } else {
            None
        }
    }

    /// A mark to send at the end of a response's audio, so the tail is tracked too; `None` when
    /// no audio went out since the last mark.
    pub fn flush_mark(&mut self) -> Option<String> {
        (self.since_mark > 0).then(|| self.new_mark())
    }

    fn new_mark(&mut self) -> String {
        let seq = self.next_mark;
        self.next_mark += 1;
        self.since_mark = 0;
        self.pending.push_back((seq, self.sent));
        format!("vr{}.{}", self.generation, seq)
    }

    /// Bytes of model audio sent so far in the call's playback stream (the position the next
    /// audio starts at).
    pub fn sent_bytes(&self) -> u64 {
        self.sent
    }

    /// Twilio echoed the mark `name` at `now`. Marks of an older generation (returned by a
    /// clear) and names we did not send are ignored. Returns true when the mark counted.
    pub fn on_mark(&mut self, name: &str, now: Instant) -> bool {
        self.on_mark_position(name, now).is_some()
    }

    /// As [`Playback::on_mark`], returning the stream position (bytes) the counted mark
    /// followed: everything before it has played.
    pub fn on_mark_position(&mut self, name: &str, now: Instant) -> Option<u64> {
        let (generation, seq) = parse_mark(name)?;
        if generation != self.generation || seq >= self.next_mark {
            return None;
        }
        let mut position = None;
        while let Some(&(s, pos)) = self.pending.front() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            if s == seq {
                position = Some(pos);
            }
        }
        let pos = position?;
        // The audio before the mark finished playing when Twilio sent the echo.
        let at = now.checked_sub(self.link_delay).unwrap_or(now);
        self.anchor = Some((at, pos.min(self.sent)));
        Some(pos)
    }

    /// True while Twilio may still be playing model audio: the clock says audio remains, or a
    /// mark is still outstanding and the audio was due to finish less than [`MARK_GRACE`] ago
    /// (Twilio may run a little behind the clock; a mark that never comes back must not make
    /// every later caller turn look like a barge-in).
    pub fn is_playing(&self, now: Instant) -> bool {
        if self.played(now) < self.sent {
            return true;
        }
        if self.pending.is_empty() {
            return false;
        }
        match self.anchor {
            Some((at, pos)) => {
                let left_ms = self.sent.saturating_sub(pos) / BYTES_PER_MS as u64;
                now < at + std::time::Duration::from_millis(left_ms) + MARK_GRACE
            }
            None => false,
        }
    }

    /// Whether a mark sent is still waiting for Twilio's echo (audio sent that Twilio has not
    /// yet reported played).
    pub fn marks_outstanding(&self) -> bool {
        !self.pending.is_empty()
    }

    /// When the audio sent so far will have played by the clock (with [`MARK_GRACE`] while a
    /// mark is outstanding); `None` when nothing plays.
    pub fn plays_until(&self) -> Option<Instant> {
        let (at, pos) = self.anchor?;
        let left_ms = self.sent.saturating_sub(pos) / BYTES_PER_MS as u64;
        let grace = if self.pending.is_empty() {
            std::time::Duration::ZERO
        } else {
            MARK_GRACE
        };
        Some(at + std::time::Duration::from_millis(left_ms) + grace)
    }

    /// Ms of the current item the caller has heard at `now` (0 when none).
    pub fn heard_ms(&self, now: Instant) -> u64 {
        match &self.item {
            Some(item) => {
                let heard = self.played(now).saturating_sub(item.start);
                heard / BYTES_PER_MS as u64
            }
            None => 0,
        }
    }

    /// The caller barged in at `now` and a `clear` is being sent: everything unplayed is gone,
    /// pending marks become stale, and the current item is to be truncated at what was heard,
    /// which is what will have played when the `clear` reaches Twilio, one link delay on.
    pub fn on_clear(&mut self, now: Instant) -> Interruption {
        let played = self.played(now + self.link_delay);
        let dropped_ms = (self.sent - played) / BYTES_PER_MS as u64;
        let truncate = self.item.take().and_then(|item| {
            let heard = played.saturating_sub(item.start).min(item.received);
            let heard_ms = heard / BYTES_PER_MS as u64;
            let received_ms = item.received / BYTES_PER_MS as u64;
            (heard_ms > 0 && heard_ms <= received_ms).then_some((item.item_id, heard_ms))
        });
        self.generation += 1;
        self.next_mark = 0;
        self.pending.clear();
        self.since_mark = 0;
        self.sent = played;
        self.anchor = None;
        Interruption {
            truncate,
            dropped_ms,
        }
    }

    /// Forgets which item is playing (its upstream session is gone): the audio still plays and
    /// is still cleared by a barge-in, but no truncate can name it.
    pub fn forget_item(&mut self) {
        self.item = None;
    }

    /// The item whose audio is being sent, if any.
    pub fn current_item(&self) -> Option<&str> {
        self.item.as_ref().map(|i| i.item_id.as_str())
    }
}

/// Reads `vr{generation}.{sequence}`.
fn parse_mark(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("vr")?;
    let (generation, seq) = rest.split_once('.')?;
    Some((generation.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends `total_ms` of audio of `item` at `at` in 100 ms chunks, returning the marks.
    fn send(p: &mut Playback, item: &str, total_ms: u64, at: Instant) -> Vec<String> {
        let mut marks = Vec::new();
        for _ in 0..total_ms / 100 {
            marks.extend(p.on_audio_sent(item, 800, at));
        }
        marks
    }

    #[test]
    fn one_mark_per_half_second_of_audio_not_per_chunk() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        let marks = send(&mut p, "item_1", 2000, t0);
        assert_eq!(marks, vec!["vr0.0", "vr0.1", "vr0.2", "vr0.3"]);
        assert_eq!(p.flush_mark(), None, "nothing left after a full interval");
        p.on_audio_sent("item_1", 160, t0);
        assert_eq!(p.flush_mark().as_deref(), Some("vr0.4"));
    }

    #[test]
    fn the_caller_hears_audio_in_real_time_from_when_it_was_sent() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        send(&mut p, "item_1", 3000, t0);
        assert_eq!(p.heard_ms(t0 + ms(1200)), 1200);
        assert!(p.is_playing(t0 + ms(1200)));
        assert_eq!(
            p.heard_ms(t0 + ms(5000)),
            3000,
            "cannot hear more than was sent"
        );
    }

    #[test]
    fn an_acknowledged_mark_re_anchors_the_clock() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        let marks = send(&mut p, "item_1", 2000, t0);
        // Twilio started late: the first 500 ms finished playing only at t0 + 700 ms.
        assert!(p.on_mark(&marks[0], t0 + ms(700)));
        assert_eq!(p.heard_ms(t0 + ms(900)), 700);
    }

    #[test]
    fn caller_interrupting_truncates_to_heard_audio_and_stales_old_marks() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        let marks = send(&mut p, "item_1", 3000, t0);
        assert!(p.on_mark(&marks[0], t0 + ms(500)));
        let cut = p.on_clear(t0 + ms(1300));
        assert_eq!(cut.truncate, Some(("item_1".to_string(), 1300)));
        assert_eq!(cut.dropped_ms, 1700);
        // Twilio returns the pending marks after the clear: none of them counts.
        for name in &marks[1..] {
            assert!(!p.on_mark(name, t0 + ms(1310)));
        }
        assert!(!p.is_playing(t0 + ms(1310)));
        // New audio after the clear starts from the cut.
        let new_marks = send(&mut p, "item_2", 1000, t0 + ms(2000));
        assert_eq!(new_marks[0], "vr1.0");
        assert_eq!(p.heard_ms(t0 + ms(2400)), 400);
    }

    #[test]
    fn truncation_before_any_audio_played_is_skipped() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        send(&mut p, "item_1", 1000, t0);
        let cut = p.on_clear(t0);
        assert_eq!(cut.truncate, None, "0 ms heard: no truncate");
        assert_eq!(cut.dropped_ms, 1000);
    }

    #[test]
    fn audio_after_a_pause_starts_its_own_clock() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        send(&mut p, "item_1", 1000, t0);
        assert_eq!(p.heard_ms(t0 + ms(1500)), 1000);
        let later = t0 + ms(4000);
        send(&mut p, "item_2", 1000, later);
        assert_eq!(p.heard_ms(later + ms(250)), 250);
    }

    #[test]
    fn marks_with_foreign_names_are_ignored() {
        let t0 = Instant::now();
        let mut p = Playback::new(500);
        send(&mut p, "item_1", 1000, t0);
        for name in [
            "", "hello", "vr", "vr0", "vrx.1", "vr0.x", "vr0.99", "vr7.0",
        ] {
            assert!(!p.on_mark(name, t0), "{name}");
        }
        assert!(p.on_mark("vr0.1", t0 + ms(1000)), "real marks still count");
    }

    #[test]
    fn across_a_slow_link_the_truncate_is_what_will_have_played_when_the_clear_arrives() {
        let t0 = Instant::now();
        let one_way = ms(75);
        let mut p = Playback::new(500);
        p.set_link_delay(one_way);
        let marks = send(&mut p, "item_1", 3000, t0);
        // Audio sent into an idle buffer starts playing when it reaches Twilio.
        assert_eq!(p.heard_ms(t0 + ms(75)), 0);
        assert_eq!(p.heard_ms(t0 + ms(575)), 500);
        // The first mark (after 500 ms) echoes at Twilio at 75 + 500 ms and reaches us 75 ms
        // later: the clock is re-anchored at Twilio's time, not ours.
        assert!(p.on_mark(&marks[0], t0 + ms(650)));
        assert_eq!(p.heard_ms(t0 + ms(650)), 575);
        // A barge-in at 1,000 ms: the clear reaches Twilio at 1,075, when 1,000 ms had played.
        let cut = p.on_clear(t0 + ms(1000));
        assert_eq!(cut.truncate, Some(("item_1".to_string(), 1000)));
        assert_eq!(cut.dropped_ms, 2000);

        // The same with no link delay cuts a whole round trip (150 ms) earlier.
        let mut p = Playback::new(500);
        let marks = send(&mut p, "item_1", 3000, t0);
        assert!(p.on_mark(&marks[0], t0 + ms(650)));
        let cut = p.on_clear(t0 + ms(1000));
        assert_eq!(cut.truncate, Some(("item_1".to_string(), 850)));
    }
}
