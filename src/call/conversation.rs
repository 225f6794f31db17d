//! What has been said in a call, as text, so that a new upstream session can be given the
//! conversation so far (a mid-call reconnect, a rollover before the session limit).
//!
//! The Realtime API cannot take assistant *audio* as input (`shared/protocol/openai-realtime.md`
//! §2.3), so the restore is text: the caller's transcripts as `user` items and the model's
//! transcripts as `assistant` items. A model turn counts only as far as the caller heard it: a
//! turn cut by a barge-in keeps the share of its words that matches the share of its audio
//! that played (the same cut `conversation.item.truncate` makes to the model's own context),
//! and a turn still playing when the session was lost keeps what had played by the restore.
//!
//! Caller turns the guards removed from the model's context (a blocked injection attempt, the
//! model's own voice heard back) are never recorded, so a restore cannot bring them back.

use std::collections::VecDeque;

use crate::audio::mulaw::BYTES_PER_MS;
use crate::prompt::count_tokens;

/// Turns kept at most; older ones fall off (a restore replays far fewer within its budget).
const KEEP_TURNS: usize = 256;

/// Tokens counted per replayed item on top of its text (the item's framing).
const ITEM_OVERHEAD_TOKENS: usize = 4;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The caller (replayed as a `user` item).
    Caller,
    /// The model (replayed as an `assistant` item).
    Model,
}

/// One turn.
#[derive(Debug, Clone)]
struct Turn {
    speaker: Speaker,
    /// The model's item id in the session it came from; `None` for caller turns and once the
    /// session it belongs to is gone.
    item_id: Option<String>,
    text: String,
    /// Model audio of the turn sent to Twilio, bytes of G.711 mu-law.
    audio_bytes: u64,
    /// How much of it the caller heard, bytes, when a barge-in cut it; `None`: all of it.
    heard_bytes: Option<u64>,
}

/// The call's conversation as text, oldest first.
#[derive(Debug, Default)]
pub struct Conversation {
    turns: VecDeque<Turn>,
}

/// A turn to replay into a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Who said it.
    pub speaker: Speaker,
    /// What was said (a model turn cut to what was heard ends in `…`).
    pub text: String,
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Conversation {
        Conversation::default()
    }

    /// The caller said `text` (a completed transcription the guards let stand).
    pub fn caller_said(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.push(Turn {
            speaker: Speaker::Caller,
            item_id: None,
            text: text.to_string(),
            audio_bytes: 0,
            heard_bytes: None,
        });
    }

    /// `bytes` of the model's audio of `item_id` went to Twilio.
    pub fn model_audio(&mut self, item_id: &str, bytes: u64) {
        self.model_turn(item_id).audio_bytes += bytes;
    }

    /// More words of what the model is saying in `item_id`
    /// (`response.output_audio_transcript.delta`).
    pub fn model_words(&mut self, item_id: Option<&str>, delta: &str) {
        if let Some(item_id) = item_id {
            self.model_turn(item_id).text.push_str(delta);
        }
    }

    /// The whole of what the model said in `item_id`
    /// (`response.output_audio_transcript.done`); replaces the words gathered so far.
    pub fn model_said(&mut self, item_id: Option<&str>, transcript: &str) {
        if let Some(item_id) = item_id {
            self.model_turn(item_id).text = transcript.to_string();
        }
    }

    /// A barge-in cut `item_id` after the caller heard `heard_ms` of it.
    pub fn model_cut(&mut self, item_id: &str, heard_ms: u64) {
        if let Some(turn) = self.find(item_id) {
            turn.heard_bytes = Some(heard_ms * BYTES_PER_MS as u64);
        }
    }

    /// The upstream session is gone: its item ids mean nothing to the next one. `playing` is
    /// the item still playing to the caller and how many ms of it had played: that turn keeps
    /// only what was heard.
    pub fn session_ended(&mut self, playing: Option<(&str, u64)>) {
        if let Some((item_id, heard_ms)) = playing
            && let Some(turn) = self.find(item_id)
            && turn.heard_bytes.is_none()
        {
            turn.heard_bytes = Some(heard_ms * BYTES_PER_MS as u64);
        }
        for turn in &mut self.turns {
            turn.item_id = None;
        }
    }

    /// The turns to replay into a new session, oldest first: the newest turns whose text fits
    /// in `budget_tokens` (o200k_base, with a few tokens per item for its framing). Model turns
    /// are cut to what the caller heard; turns with nothing left are skipped.
    pub fn replay(&self, budget_tokens: usize) -> Vec<Replay> {
        let mut picked = Vec::new();
        let mut used = 0usize;
        for turn in self.turns.iter().rev() {
            let Some(text) = heard_text(turn) else {
                continue;
            };
            let tokens = count_tokens(&text) + ITEM_OVERHEAD_TOKENS;
            if used + tokens > budget_tokens {
                break;
            }
            used += tokens;
            picked.push(Replay {
                speaker: turn.speaker,
                text,
            });
        }
        picked.reverse();
        picked
    }

    /// Turns recorded.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.turns.len()
    }

    fn push(&mut self, turn: Turn) {
        if self.turns.len() == KEEP_TURNS {
            self.turns.pop_front();
        }
        self.turns.push_back(turn);
    }

    fn find(&mut self, item_id: &str) -> Option<&mut Turn> {
        self.turns
            .iter_mut()
            .rev()
            .find(|t| t.item_id.as_deref() == Some(item_id))
    }

    /// The model turn of `item_id`, created at the end when it is new.
    fn model_turn(&mut self, item_id: &str) -> &mut Turn {
        let known = self
            .turns
            .iter()
            .rposition(|t| t.item_id.as_deref() == Some(item_id));
        let at = match known {
            Some(at) => at,
            None => {
                self.push(Turn {
                    speaker: Speaker::Model,
                    item_id: Some(item_id.to_string()),
                    text: String::new(),
                    audio_bytes: 0,
                    heard_bytes: None,
                });
                self.turns.len() - 1
            }
        };
        &mut self.turns[at]
    }
}

/// What of a turn the caller heard, as text; `None` when nothing.
fn heard_text(turn: &Turn) -> Option<String> {
    let text = turn.text.trim();
    if text.is_empty() {
        return None;
    }
    let (Speaker::Model, Some(heard)) = (turn.speaker, turn.heard_bytes) else {
        return Some(text.to_string());
    };
    if turn.audio_bytes == 0 || heard >= turn.audio_bytes {
        return Some(text.to_string());
    }
    // Words are spread evenly enough over speech for a proportional cut, made at a word
    // boundary so no word is half kept.
    let chars = text.chars().count();
    let keep = (chars as u128 * heard as u128 / turn.audio_bytes as u128) as usize;
    let cut: String = text.chars().take(keep).collect();
    let at_word_end = text.chars().nth(keep).is_none_or(char::is_whitespace);
    let cut = match cut.rfind(char::is_whitespace) {
        Some(at) if !at_word_end => &cut[..at],
        _ => cut.as_str(),
    };
    let cut = cut.trim_end_matches(|c: char| c.is_whitespace() || c == ',');
    (!cut.is_empty()).then(|| format!("{cut}…"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(turns: &[Replay]) -> Vec<(Speaker, &str)> {
        turns.iter().map(|t| (t.speaker, t.text.as_str())).collect()
    }

    #[test]
    fn turns_are_replayed_in_order_with_the_model_cut_to_what_was_heard() {
        let mut c = Conversation::new();
        c.model_audio("item_1", 16_000);
        c.model_said(Some("item_1"), "Bright Smile Dental, how can I help?");
        c.caller_said("I would like a cleaning next week.");
        c.model_audio("item_2", 8_000);
        c.model_words(Some("item_2"), "We have Tuesday at nine ");
        c.model_words(Some("item_2"), "or Thursday at four in the afternoon.");
        // The caller barged in after a quarter of the answer's 1 s.
        c.model_cut("item_2", 250);
        assert_eq!(
            said(&c.replay(1000)),
            [
                (Speaker::Model, "Bright Smile Dental, how can I help?"),
                (Speaker::Caller, "I would like a cleaning next week."),
                (Speaker::Model, "We have Tuesday…"),
            ]
        );
    }

    #[test]
    fn a_turn_playing_when_the_session_ended_keeps_what_had_played() {
        let mut c = Conversation::new();
        c.caller_said("What are your hours?");
        c.model_audio("item_7", 16_000);
        c.model_words(
            Some("item_7"),
            "We open at eight and close at six every weekday.",
        );
        c.session_ended(Some(("item_7", 1000)));
        // Words of the next session's item of the same id do not land on the old turn.
        c.model_words(Some("item_7"), "Hello again.");
        let replay = c.replay(1000);
        assert_eq!(replay.len(), 3);
        assert_eq!(replay[1].text, "We open at eight and…");
        assert_eq!(replay[2].text, "Hello again.");
    }

    #[test]
    fn the_budget_keeps_the_newest_turns() {
        let mut c = Conversation::new();
        for n in 0..50 {
            c.caller_said(&format!(
                "Caller line number {n} with a few more words in it."
            ));
        }
        let replay = c.replay(100);
        assert!(!replay.is_empty() && replay.len() < 50);
        assert_eq!(
            replay.last().map(|r| r.text.as_str()),
            Some("Caller line number 49 with a few more words in it.")
        );
        let tokens: usize = replay
            .iter()
            .map(|r| count_tokens(&r.text) + ITEM_OVERHEAD_TOKENS)
            .sum();
        assert!(tokens <= 100, "{tokens} tokens");
        assert!(c.replay(0).is_empty());
    }

    #[test]
    fn nothing_heard_and_empty_turns_are_skipped() {
        let mut c = Conversation::new();
        c.caller_said("   ");
        c.model_audio("item_1", 8_000);
        c.model_said(Some("item_1"), "Sure.");
        c.model_cut("item_1", 0);
        c.model_audio("item_2", 8_000);
        assert!(c.replay(1000).is_empty());
        for n in 0..(KEEP_TURNS + 10) {
            c.caller_said(&format!("line {n}"));
        }
        assert_eq!(c.len(), KEEP_TURNS);
    }
}
