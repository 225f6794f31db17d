//! Twilio's playback buffer as the proxy can observe it, for the simulated caller
//! ([`crate::caller`]) and the load generator alike: model audio plays at 8 bytes per ms from
//! when it arrives (or from when the audio before it finishes); a mark is echoed once the audio
//! sent before it has played; a `clear` drops what has not played and returns every pending
//! mark at once. Source: `shared/protocol/twilio.md` (marks, clear).
//!
//! Positions are byte offsets into everything received (G.711 mu-law, 8000 Hz, so 8 bytes per
//! ms). The audio itself is kept only when asked ([`Playback::keeping_audio`]), so a load run of
//! hundreds of calls holds positions, not recordings.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use voxrelay::audio::mulaw::BYTES_PER_MS;

/// A pause in the model's audio longer than this starts a new stretch (a new answer).
pub const STRETCH_GAP: Duration = Duration::from_millis(300);

/// What a `clear` did to the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// Audio of the current stretch that had played, ms.
    pub heard_ms: u64,
    /// Audio dropped unplayed, ms.
    pub dropped_ms: u64,
    /// The pending marks, returned at once (Twilio's behaviour on `clear`), in order.
    pub marks: Vec<String>,
}

/// The caller's earpiece.
#[derive(Debug, Default)]
pub struct Playback {
    /// Bytes received and not cleared.
    end: u64,
    /// The received audio when kept; cut back by `clear`.
    audio: Option<Vec<u8>>,
    /// When playback was last (re)started and the position it started from.
    anchor: Option<(Instant, u64)>,
    /// Where the current stretch of playback began.
    segment_start: u64,
    /// Marks by the position they wait for.
    pending_marks: VecDeque<(u64, String)>,
}

impl Playback {
    /// A buffer that keeps positions only.
    pub fn new() -> Playback {
        Playback::default()
    }

    /// A buffer that also keeps the audio, so [`Playback::into_heard`] can return what played.
    pub fn keeping_audio() -> Playback {
        Playback {
            audio: Some(Vec::new()),
            ..Playback::default()
        }
    }

    /// Bytes played by `now` (never more than received).
    pub fn played(&self, now: Instant) -> u64 {
        match self.anchor {
            Some((at, pos)) => {
                let ms = now.saturating_duration_since(at).as_micros() as u64 / 1000;
                (pos + ms * BYTES_PER_MS as u64).min(self.end)
            }
            None => self.end,
        }
    }

    /// Buffers `bytes` of model audio arriving at `now`; true when they begin a new stretch of
    /// playback (the buffer had run dry for longer than [`STRETCH_GAP`], or had never played).
    pub fn push(&mut self, bytes: &[u8], now: Instant) -> bool {
        let end = self.end;
        let mut new_stretch = false;
        if self.played(now) >= end {
            // The buffer ran dry. A new stretch of audio begins unless it only ran dry for a
            // moment (paced chunks arrive just as the previous one finishes).
            let ran_dry_at = self.anchor.map(|(at, pos)| {
                at + Duration::from_millis(end.saturating_sub(pos) / BYTES_PER_MS as u64)
            });
            new_stretch = match ran_dry_at {
                Some(at) => now.saturating_duration_since(at) > STRETCH_GAP,
                None => true,
            };
            if new_stretch {
                self.segment_start = end;
            }
            self.anchor = Some((now, end));
        }
        self.end += bytes.len() as u64;
        if let Some(audio) = &mut self.audio {
            audio.extend_from_slice(bytes);
        }
        new_stretch
    }

    /// Queues mark `name` behind the audio received so far.
    pub fn mark(&mut self, name: String) {
        self.pending_marks.push_back((self.end, name));
    }

    /// Whether any mark waits.
    pub fn has_marks(&self) -> bool {
        !self.pending_marks.is_empty()
    }

    /// When the first pending mark is due.
    pub fn next_mark_due(&self) -> Option<Instant> {
        let (pos, _) = self.pending_marks.front()?;
        match self.anchor {
            Some((at, anchor_pos)) => {
                let ms = pos.saturating_sub(anchor_pos) / BYTES_PER_MS as u64;
                Some(at + Duration::from_millis(ms))
            }
            None => Some(Instant::now()),
        }
    }

    /// Takes the marks whose audio has played by `now`, in order.
    pub fn due_marks(&mut self, now: Instant) -> Vec<String> {
        let played = self.played(now);
        let mut due = Vec::new();
        while self
            .pending_marks
            .front()
            .is_some_and(|(pos, _)| *pos <= played)
        {
            if let Some((_, name)) = self.pending_marks.pop_front() {
                due.push(name);
            }
        }
        due
    }

    /// A `clear` at `now`: drops the unplayed audio and returns every pending mark.
    pub fn clear(&mut self, now: Instant) -> Cleared {
        let played = self.played(now);
        let cleared = Cleared {
            heard_ms: played.saturating_sub(self.segment_start) / BYTES_PER_MS as u64,
            dropped_ms: (self.end - played) / BYTES_PER_MS as u64,
            marks: self.pending_marks.drain(..).map(|(_, n)| n).collect(),
        };
        self.end = played;
        if let Some(audio) = &mut self.audio {
            audio.truncate(played as usize);
        }
        self.anchor = None;
        cleared
    }

    /// The audio that had played by `now`; empty unless made with [`Playback::keeping_audio`].
    pub fn into_heard(self, now: Instant) -> Vec<u8> {
        let played = self.played(now) as usize;
        let mut audio = self.audio.unwrap_or_default();
        audio.truncate(played);
        audio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_plays_in_real_time_and_marks_wait_for_it() {
        let t0 = Instant::now();
        let mut p = Playback::keeping_audio();
        assert!(p.push(&[1; 800], t0), "the first audio starts a stretch");
        p.mark("m1".into());
        assert_eq!(p.played(t0 + Duration::from_millis(50)), 400);
        assert!(p.due_marks(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(p.next_mark_due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(p.due_marks(t0 + Duration::from_millis(100)), ["m1"]);
        // Audio just as the buffer runs dry continues the stretch; after a long gap it does not.
        assert!(!p.push(&[2; 80], t0 + Duration::from_millis(110)));
        assert!(p.push(&[3; 80], t0 + Duration::from_millis(1000)));
        assert_eq!(p.into_heard(t0 + Duration::from_secs(5)).len(), 960);
    }

    #[test]
    fn a_clear_drops_what_has_not_played_and_returns_every_mark() {
        let t0 = Instant::now();
        let mut p = Playback::keeping_audio();
        p.push(&[1; 1600], t0);
        p.mark("a".into());
        p.push(&[1; 1600], t0);
        p.mark("b".into());
        let cleared = p.clear(t0 + Duration::from_millis(50));
        assert_eq!(
            cleared,
            Cleared {
                heard_ms: 50,
                dropped_ms: 350,
                marks: vec!["a".into(), "b".into()],
            }
        );
        assert!(!p.has_marks());
        assert_eq!(p.into_heard(t0 + Duration::from_secs(5)).len(), 400);
    }

    #[test]
    fn positions_without_audio_behave_the_same() {
        let t0 = Instant::now();
        let mut p = Playback::new();
        p.push(&[1; 800], t0);
        p.mark("m".into());
        assert_eq!(p.played(t0 + Duration::from_millis(25)), 200);
        assert_eq!(p.due_marks(t0 + Duration::from_millis(100)), ["m"]);
        assert!(p.into_heard(t0).is_empty());
    }
}
