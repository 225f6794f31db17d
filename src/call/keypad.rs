//! Keypad input (DTMF): the digits a caller presses, collected into one entry for the model.
//!
//! Twilio sends one `dtmf` message per key pressed (`dtmf.digit`: `0`–`9`, `*`, `#`;
//! <https://www.twilio.com/docs/voice/media-streams/websocket-messages#dtmf-message>, inbound
//! track of a bidirectional stream only). A caller typing a number presses several keys in a
//! row, so the digits are collected until `#` (the usual "finish" key, not part of the entry),
//! [`Keypad::max_digits`], or a pause of `keypad.inter_digit_ms` after the last key. The entry
//! then goes to the model as the caller's text (`conversation.item.create`, then
//! `response.create`).
//!
//! Privacy: an entry is a card number, a PIN or a date of birth as often as a menu choice. Its
//! digits go to the model only: never to logs, call events or the timeline, which see
//! [`mask`]ed text or a count.

use std::time::{Duration, Instant};

/// The keys Twilio reports.
pub const KEYS: &str = "0123456789*#";

/// The key that ends an entry early (not part of it).
pub const FINISH_KEY: char = '#';

/// Digits collected from the caller's keypad.
#[derive(Debug)]
pub struct Keypad {
    digits: String,
    last_at: Option<Instant>,
    inter_digit: Duration,
    max_digits: usize,
}

/// What a key press did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    /// Kept; the entry goes on.
    Collected,
    /// The entry is complete: these digits.
    Entry(String),
    /// Not a key Twilio sends: ignored.
    Ignored,
}

impl Keypad {
    /// A keypad that ends an entry after `inter_digit` without a key, or at `max_digits` keys
    /// (at least 1).
    pub fn new(inter_digit: Duration, max_digits: usize) -> Keypad {
        Keypad {
            digits: String::new(),
            last_at: None,
            inter_digit,
            max_digits: max_digits.max(1),
        }
    }

    /// The most digits an entry holds.
    pub fn max_digits(&self) -> usize {
        self.max_digits
    }

    /// The caller pressed `digit` (Twilio's `dtmf.digit`) at `now`.
    pub fn press(&mut self, digit: &str, now: Instant) -> Press {
        let mut chars = digit.chars();
        let (Some(key), None) = (chars.next(), chars.next()) else {
            return Press::Ignored;
        };
        if !KEYS.contains(key) {
            return Press::Ignored;
        }
        if key == FINISH_KEY {
            self.last_at = None;
            return match std::mem::take(&mut self.digits) {
                digits if digits.is_empty() => Press::Entry(FINISH_KEY.to_string()),
                digits => Press::Entry(digits),
            };
        }
        self.digits.push(key);
        self.last_at = Some(now);
        if self.digits.len() >= self.max_digits {
            self.last_at = None;
            return Press::Entry(std::mem::take(&mut self.digits));
        }
        Press::Collected
    }

    /// When the entry in progress ends by the pause, if one is in progress.
    pub fn due(&self) -> Option<Instant> {
        self.last_at.map(|at| at + self.inter_digit)
    }

    /// The entry, if its pause has passed at `now`.
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        let due = self.due()?;
        if now < due {
            return None;
        }
        self.last_at = None;
        Some(std::mem::take(&mut self.digits)).filter(|d| !d.is_empty())
    }
}

/// The text the model gets for an entry.
pub fn entry_text(digits: &str) -> String {
    format!("[The caller typed on the phone keypad: {digits}]")
}

/// `digits` with every key replaced by `•`, for anything that is written down.
pub fn mask(digits: &str) -> String {
    "•".repeat(digits.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keys_are_collected_until_the_finish_key_the_pause_or_the_limit() {
        let t0 = Instant::now();
        let mut pad = Keypad::new(ms(2000), 4);
        assert_eq!(pad.press("1", t0), Press::Collected);
        assert_eq!(pad.press("2", t0 + ms(300)), Press::Collected);
        assert_eq!(pad.press("#", t0 + ms(600)), Press::Entry("12".into()));
        assert_eq!(pad.due(), None);

        assert_eq!(pad.press("9", t0), Press::Collected);
        assert_eq!(pad.due(), Some(t0 + ms(2000)));
        assert_eq!(pad.flush(t0 + ms(1999)), None, "not yet");
        assert_eq!(pad.flush(t0 + ms(2000)), Some("9".into()));
        assert_eq!(pad.flush(t0 + ms(5000)), None, "once");

        for (i, key) in ["4", "1", "1", "1"].iter().enumerate() {
            let got = pad.press(key, t0 + ms(i as u64 * 100));
            if i < 3 {
                assert_eq!(got, Press::Collected);
            } else {
                assert_eq!(got, Press::Entry("4111".into()), "at the limit");
            }
        }
        // `#` alone is an entry of its own (a menu's "press pound").
        assert_eq!(pad.press("#", t0), Press::Entry("#".into()));
    }

    #[test]
    fn anything_but_one_key_is_ignored_and_masking_hides_every_digit() {
        let t0 = Instant::now();
        let mut pad = Keypad::new(ms(2000), 16);
        for bad in ["", "12", "x", "A", "١"] {
            assert_eq!(pad.press(bad, t0), Press::Ignored, "{bad:?}");
        }
        assert_eq!(pad.due(), None);
        assert_eq!(mask("4111*"), "•••••");
        assert!(entry_text("1234").contains("1234"));
    }
}
