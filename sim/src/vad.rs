//! Energy voice activity detection for the simulated Realtime upstream.
//!
//! A stand-in for the Realtime API's `server_vad` turn detection (see
//! `shared/protocol/openai-realtime.md` §2.1 and §3, "Input audio (server VAD)"): the caller's G.711
//! mu-law audio is cut into 20 ms frames (160 bytes), each frame's RMS level is compared with a
//! threshold in dBFS, and runs of loud and quiet frames become `speech_started` and `speech_stopped`.
//! It is deliberately simple and deterministic, so tests can predict exactly where turns begin and
//! end: a real model's VAD is neither.

use voxrelay::audio::mulaw::{BYTES_PER_MS, FRAME_BYTES, rms_dbfs};

/// Milliseconds of audio in one VAD frame ([`FRAME_BYTES`] of mu-law).
pub const FRAME_MS: u64 = (FRAME_BYTES / BYTES_PER_MS) as u64;

/// Settings of the energy VAD.
///
/// `threshold_dbfs` and `min_speech_ms` belong to the simulator alone. `silence_ms` and
/// `prefix_padding_ms` are the defaults of the session's `server_vad` turn detection
/// (`silence_duration_ms`, `prefix_padding_ms`); a client's `session.update` overrides them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// A 20 ms frame whose RMS level is above this, in dBFS (0 = full-scale square wave), counts
    /// as speech. Default -35.0: speech at a normal phone level is around -20 dBFS, line noise
    /// below -50.
    pub threshold_dbfs: f32,
    /// Consecutive loud audio, in ms, before speech is said to have started (filters clicks).
    /// Default 100.
    pub min_speech_ms: u32,
    /// Consecutive quiet audio, in ms, that ends a turn. Default 500.
    pub silence_ms: u32,
    /// Audio before the detected start of speech, in ms, that belongs to the turn; subtracted from
    /// `audio_start_ms` (floor 0). Default 300.
    pub prefix_padding_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold_dbfs: -35.0,
            min_speech_ms: 100,
            silence_ms: 500,
            prefix_padding_ms: 300,
        }
    }
}

/// What the VAD saw in the audio pushed to it. Positions are milliseconds of audio since the
/// detector was created (for the simulator: since the session started), as the Realtime API
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began. `audio_start_ms` is where the first loud frame of the run began, minus the
    /// prefix padding, floor 0.
    SpeechStarted {
        /// Start of the turn, in ms of session audio.
        audio_start_ms: u64,
    },
    /// The caller has been quiet for the silence duration. `audio_end_ms` is where the quiet run
    /// began, i.e. the end of the last loud frame.
    SpeechStopped {
        /// End of speech, in ms of session audio.
        audio_end_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No speech. `loud_ms` of loud audio in a row so far, the run beginning at `run_start_ms`.
    Quiet { loud_ms: u64, run_start_ms: u64 },
    /// In speech. `quiet_ms` of quiet audio in a row so far, the run beginning at `run_start_ms`.
    Speaking { quiet_ms: u64, run_start_ms: u64 },
}

/// An energy VAD over a stream of mu-law bytes, fed in pieces of any size.
///
/// Frames are 20 ms (160 bytes) counted from the first byte pushed; a partial frame waits for the
/// next push.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    config: VadConfig,
    state: State,
    /// Bytes of the frame in progress (fewer than [`FRAME_BYTES`]).
    pending: Vec<u8>,
    /// Total bytes pushed, including `pending`.
    total_bytes: u64,
}

impl EnergyVad {
    /// A detector in the quiet state, at position 0.
    pub fn new(config: VadConfig) -> Self {
        EnergyVad {
            config,
            state: State::Quiet {
                loud_ms: 0,
                run_start_ms: 0,
            },
            pending: Vec::with_capacity(FRAME_BYTES),
            total_bytes: 0,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> VadConfig {
        self.config
    }

    /// Changes the silence duration and prefix padding (from `session.update`), in ms. Takes
    /// effect from the next frame.
    pub fn set_turn_settings(&mut self, silence_ms: u32, prefix_padding_ms: u32) {
        self.config.silence_ms = silence_ms;
        self.config.prefix_padding_ms = prefix_padding_ms;
    }

    /// Milliseconds of audio pushed so far (bytes / 8).
    pub fn position_ms(&self) -> u64 {
        self.total_bytes / BYTES_PER_MS as u64
    }

    /// True between `SpeechStarted` and `SpeechStopped`.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// Forgets any speech in progress (after `input_audio_buffer.clear` or a manual commit). The
    /// position keeps counting.
    pub fn reset(&mut self) {
        self.state = State::Quiet {
            loud_ms: 0,
            run_start_ms: 0,
        };
    }

    /// Feeds mu-law audio; returns what happened in the complete frames it finished, in order.
    pub fn push(&mut self, mut audio: &[u8]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        while !audio.is_empty() {
            let take = (FRAME_BYTES - self.pending.len()).min(audio.len());
            self.pending.extend_from_slice(&audio[..take]);
            self.total_bytes += take as u64;
            audio = &audio[take..];
            if self.pending.len() == FRAME_BYTES {
                let loud = rms_dbfs(&self.pending) > self.config.threshold_dbfs;
                self.pending.clear();
                if let Some(event) = self.frame(loud) {
                    events.push(event);
                }
            }
        }
        events
    }

    /// Advances the state by one complete frame that ended at the current position.
    fn frame(&mut self, loud: bool) -> Option<VadEvent> {
        let end_ms = self.position_ms();
        let start_ms = end_ms.saturating_sub(FRAME_MS);
        match (self.state, loud) {
            (
                State::Quiet {
                    loud_ms,
                    run_start_ms,
                },
                true,
            ) => {
                let run_start_ms = if loud_ms == 0 { start_ms } else { run_start_ms };
                let loud_ms = loud_ms + FRAME_MS;
                if loud_ms >= u64::from(self.config.min_speech_ms) {
                    self.state = State::Speaking {
                        quiet_ms: 0,
                        run_start_ms: end_ms,
                    };
                    let padding = u64::from(self.config.prefix_padding_ms);
                    Some(VadEvent::SpeechStarted {
                        audio_start_ms: run_start_ms.saturating_sub(padding),
                    })
                } else {
                    self.state = State::Quiet {
                        loud_ms,
                        run_start_ms,
                    };
                    None
                }
            }
            (State::Quiet { .. }, false) => {
                self.state = State::Quiet {
                    loud_ms: 0,
                    run_start_ms: 0,
                };
                None
            }
            (State::Speaking { .. }, true) => {
                self.state = State::Speaking {
                    quiet_ms: 0,
                    run_start_ms: end_ms,
                };
                None
            }
            (
                State::Speaking {
                    quiet_ms,
                    run_start_ms,
                },
                false,
            ) => {
                let run_start_ms = if quiet_ms == 0 {
                    start_ms
                } else {
                    run_start_ms
                };
                let quiet_ms = quiet_ms + FRAME_MS;
                if quiet_ms >= u64::from(self.config.silence_ms) {
                    self.reset();
                    Some(VadEvent::SpeechStopped {
                        audio_end_ms: run_start_ms,
                    })
                } else {
                    self.state = State::Speaking {
                        quiet_ms,
                        run_start_ms,
                    };
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxrelay::audio::mulaw::{SILENCE, encode};

    /// `ms` of a 400 Hz tone at about -12 dBFS, as mu-law.
    fn tone(ms: usize) -> Vec<u8> {
        let samples: Vec<i16> = (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                ((t * 400.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        encode(&samples)
    }

    fn silence(ms: usize) -> Vec<u8> {
        vec![SILENCE; ms * 8]
    }

    #[test]
    fn speech_after_silence_starts_at_the_first_loud_frame_minus_padding() {
        let mut vad = EnergyVad::new(VadConfig::default());
        let mut audio = silence(1000);
        audio.extend(tone(400));
        let events = vad.push(&audio);
        assert_eq!(
            events,
            vec![VadEvent::SpeechStarted {
                audio_start_ms: 700
            }]
        );
        assert!(vad.in_speech());
    }

    #[test]
    fn padding_never_goes_below_zero() {
        let mut vad = EnergyVad::new(VadConfig::default());
        let events = vad.push(&tone(200));
        assert_eq!(events, vec![VadEvent::SpeechStarted { audio_start_ms: 0 }]);
    }

    #[test]
    fn a_click_shorter_than_min_speech_is_not_speech() {
        let mut vad = EnergyVad::new(VadConfig::default());
        let mut audio = tone(60);
        audio.extend(silence(500));
        audio.extend(tone(80));
        audio.extend(silence(500));
        assert!(vad.push(&audio).is_empty());
        assert!(!vad.in_speech());
    }

    #[test]
    fn silence_for_the_silence_duration_stops_speech_where_the_silence_began() {
        let mut vad = EnergyVad::new(VadConfig::default());
        let mut audio = tone(1000);
        audio.extend(silence(300));
        audio.extend(tone(200));
        audio.extend(silence(499));
        let events = vad.push(&audio);
        assert_eq!(events, vec![VadEvent::SpeechStarted { audio_start_ms: 0 }]);
        let events = vad.push(&silence(1));
        assert_eq!(events, vec![VadEvent::SpeechStopped { audio_end_ms: 1500 }]);
        assert!(!vad.in_speech());
        assert_eq!(vad.position_ms(), 2000);
    }

    #[test]
    fn pieces_of_any_size_give_the_same_events_as_one_push() {
        let mut audio = silence(300);
        audio.extend(tone(700));
        audio.extend(silence(800));
        audio.extend(tone(300));
        let mut whole = EnergyVad::new(VadConfig::default());
        let expected = whole.push(&audio);
        assert_eq!(expected.len(), 3);
        let mut pieces = EnergyVad::new(VadConfig::default());
        let got: Vec<VadEvent> = audio.chunks(37).flat_map(|c| pieces.push(c)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn turn_settings_from_the_session_change_silence_and_padding() {
        let mut vad = EnergyVad::new(VadConfig::default());
        vad.set_turn_settings(200, 0);
        let mut audio = silence(400);
        audio.extend(tone(300));
        audio.extend(silence(200));
        assert_eq!(
            vad.push(&audio),
            vec![
                VadEvent::SpeechStarted {
                    audio_start_ms: 400
                },
                VadEvent::SpeechStopped { audio_end_ms: 700 },
            ]
        );
    }
}
