//! Echo monitor: catches a model that parrots the caller, and a caller line that is the model
//! hearing itself (speakerphone, bad line).
//!
//! Both checks compare transcripts, not audio: the caller side is the input transcription
//! (`conversation.item.input_audio_transcription.completed`), the model side is the output audio
//! transcript (`response.output_audio_transcript.done`).
//!
//! - **Parroting**: the model's transcript is compared with the caller's last transcript. A
//!   word-level similarity at or above [`EchoConfig::threshold`] is an echo; after
//!   [`EchoConfig::consecutive_limit`] echoes in a row the proxy should intervene.
//! - **Acoustic self-echo**: a caller transcript that matches something the model said within
//!   [`EchoConfig::self_echo_window`] is the model's own audio coming back. The caller transcript
//!   is usually a fragment of a model utterance, so the check also measures containment: how well
//!   the caller's words match the best-fitting stretch of a recent model utterance.
//!
//! Similarity is word-level (`1 - levenshtein(words) / max(len)`), which is about 20 times cheaper
//! than character-level distance and more meaningful for transcripts (see
//! `design/DEPENDENCIES.md`, strsim). Words are compared as 64-bit hashes of their normalised
//! form, computed once per utterance, so a check does no string comparison and allocates little.
//!
//! Nothing here does I/O or reads the clock: every call takes `now` from the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Recent model utterances kept for the self-echo check, at most. Older ones leave first.
const MAX_RECENT: usize = 8;

/// Words of one utterance taken into account, at most. A transcript longer than this is compared on
/// its first `MAX_WORDS` words, which bounds the cost of a check (model turns are one or two
/// sentences; a caller line longer than this is not a fragment of an echo).
const MAX_WORDS: usize = 64;

/// Tuning of the echo monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoConfig {
    /// Similarity (0..=1) at or above which two transcripts are "the same words". Default 0.8.
    pub threshold: f64,
    /// Parroted answers in a row after which the proxy intervenes. Default 3.
    pub consecutive_limit: u32,
    /// How long after the model said something a caller transcript matching it counts as the
    /// model hearing itself. Default 8 s.
    pub self_echo_window: Duration,
    /// Transcripts with fewer words never count: "yes", "okay" or "thank you" said back is not
    /// parroting, and a two-word caller line is too little evidence of self-echo. Default 3.
    pub min_words: usize,
}

impl Default for EchoConfig {
    fn default() -> EchoConfig {
        EchoConfig {
            threshold: 0.8,
            consecutive_limit: 3,
            self_echo_window: Duration::from_secs(8),
            min_words: 3,
        }
    }
}

/// What a model transcript turned out to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelCheck {
    /// An answer of its own (or too short to judge).
    Fine,
    /// The model repeated the caller's last line; `consecutive` echoes in a row so far.
    Echo {
        /// Word-level similarity to the caller's last line, 0..=1.
        similarity: f64,
        /// Echoes in a row, this one included.
        consecutive: u32,
    },
    /// The echo that reached [`EchoConfig::consecutive_limit`]: tell the model to answer rather
    /// than repeat. The count starts again from zero.
    Intervene {
        /// Word-level similarity to the caller's last line, 0..=1.
        similarity: f64,
        /// Echoes in a row, this one included.
        consecutive: u32,
    },
}

/// What a caller transcript turned out to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallerCheck {
    /// The caller's own words.
    Fine,
    /// The model's recent words coming back: drop the user item and cancel what it triggered.
    /// `similarity` is the best match (0..=1) against a recent model utterance.
    SelfEcho {
        /// The best match against a recent model utterance, 0..=1.
        similarity: f64,
    },
}

/// Counts over one call, for the echo rate (target: under 2 %; critical above 5 %).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Model transcripts seen.
    pub model_turns: u64,
    /// Model transcripts that parroted the caller (including those that triggered an intervention).
    pub echoes: u64,
    /// Caller transcripts recognised as the model hearing itself.
    pub self_echoes: u64,
    /// Interventions asked for (each after `consecutive_limit` echoes in a row).
    pub interventions: u64,
}

impl EchoStats {
    /// Echoes per model turn, 0..=1; 0 when the model has not spoken yet.
    pub fn echo_rate(&self) -> f64 {
        if self.model_turns == 0 {
            0.0
        } else {
            self.echoes as f64 / self.model_turns as f64
        }
    }
}

/// One call's echo state: the caller's last line, the model's recent lines, and the echo run.
#[derive(Debug)]
pub struct EchoMonitor {
    config: EchoConfig,
    /// Word hashes of the caller's last transcript that was the caller's own (not a self-echo):
    /// what a parroting model would repeat.
    caller_last: Vec<u64>,
    /// What the model said inside the self-echo window, oldest first, as (when, word hashes).
    /// Normalised once when the model says it, so each caller line is checked without re-parsing.
    model_recent: VecDeque<(Instant, Vec<u64>)>,
    /// Parroted answers in a row since the last substantive answer or intervention.
    consecutive: u32,
    stats: EchoStats,
    /// Scratch row for the containment distance, kept to avoid an allocation per comparison.
    row: Vec<usize>,
    /// Scratch words of the caller line being checked (swapped into `caller_last` when it is the
    /// caller's own).
    scratch: Vec<u64>,
}

impl EchoMonitor {
    /// A monitor for one call.
    pub fn new(config: EchoConfig) -> EchoMonitor {
        EchoMonitor {
            config,
            caller_last: Vec::new(),
            model_recent: VecDeque::with_capacity(MAX_RECENT),
            consecutive: 0,
            stats: EchoStats::default(),
            row: Vec::new(),
            scratch: Vec::with_capacity(MAX_WORDS),
        }
    }

    /// The caller's transcript arrived at `now`. [`CallerCheck::SelfEcho`] when it matches what the
    /// model said within the self-echo window, either as a whole or as a fragment. A self-echo is
    /// counted and is not remembered as the caller's last line; any other line becomes the line a
    /// parroting model would repeat (a line shorter than `min_words` is never matched, so the
    /// model's next substantive answer is not an echo).
    pub fn on_caller_transcript(&mut self, text: &str, now: Instant) -> CallerCheck {
        self.forget_old(now);
        word_hashes_into(text, &mut self.scratch);
        if self.scratch.len() >= self.config.min_words.max(1) {
            let mut best = 0.0f64;
            for (_, said) in &self.model_recent {
                best = best.max(containment(&self.scratch, said, &mut self.row));
                if best >= 1.0 {
                    break;
                }
            }
            if best >= self.config.threshold {
                // Not remembered as the caller's line: the echo is not something the caller said.
                self.stats.self_echoes += 1;
                return CallerCheck::SelfEcho { similarity: best };
            }
        }
        std::mem::swap(&mut self.caller_last, &mut self.scratch);
        CallerCheck::Fine
    }

    /// The model's transcript arrived at `now`. [`ModelCheck::Echo`] when it repeats the caller's
    /// last line (similarity at or above the threshold); the echo that makes
    /// `consecutive_limit` in a row is [`ModelCheck::Intervene`] instead, and the run starts again.
    /// A substantive answer that is not an echo ends the run; a model line shorter than
    /// `min_words` ("okay", "sure") neither counts nor ends it. The line is remembered for the
    /// self-echo check.
    pub fn on_model_transcript(&mut self, text: &str, now: Instant) -> ModelCheck {
        self.forget_old(now);
        self.stats.model_turns += 1;
        // Reuse the oldest entry's buffer when the window is full.
        let mut words = if self.model_recent.len() >= MAX_RECENT {
            self.model_recent
                .pop_front()
                .map(|(_, words)| words)
                .unwrap_or_default()
        } else {
            Vec::with_capacity(MAX_WORDS)
        };
        word_hashes_into(text, &mut words);
        let check = self.parroting(&words);
        if !words.is_empty() {
            self.model_recent.push_back((now, words));
        }
        check
    }

    /// Counts so far.
    pub fn stats(&self) -> EchoStats {
        self.stats
    }

    /// The parroting verdict for a model line, updating the run and the counters.
    fn parroting(&mut self, model: &[u64]) -> ModelCheck {
        let min = self.config.min_words.max(1);
        if model.len() < min {
            return ModelCheck::Fine;
        }
        let similarity = if self.caller_last.len() >= min {
            word_similarity(model, &self.caller_last)
        } else {
            0.0
        };
        if similarity < self.config.threshold {
            self.consecutive = 0;
            return ModelCheck::Fine;
        }
        self.stats.echoes += 1;
        self.consecutive += 1;
        let consecutive = self.consecutive;
        if consecutive >= self.config.consecutive_limit.max(1) {
            self.consecutive = 0;
            self.stats.interventions += 1;
            ModelCheck::Intervene {
                similarity,
                consecutive,
            }
        } else {
            ModelCheck::Echo {
                similarity,
                consecutive,
            }
        }
    }

    /// Drops model utterances older than the self-echo window.
    fn forget_old(&mut self, now: Instant) {
        let window = self.config.self_echo_window;
        while let Some((at, _)) = self.model_recent.front() {
            if now.saturating_duration_since(*at) > window {
                self.model_recent.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The words of a transcript: lower-cased, punctuation stripped, split on whitespace.
///
/// Apostrophes vanish inside a word ("don't" is "dont", as speech-to-text engines disagree on
/// them); any other character that is not a letter or digit separates words ("nine-thirty" is
/// "nine", "thirty").
pub fn normalize_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !is_apostrophe(c) && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Word-level similarity of two transcripts, 0..=1: `1 - levenshtein(words) / max(word count)`
/// on the [`normalize_words`] forms. Two texts without words are identical (1.0).
pub fn similarity(a: &str, b: &str) -> f64 {
    let mut wa = Vec::new();
    let mut wb = Vec::new();
    word_hashes_into(a, &mut wa);
    word_hashes_into(b, &mut wb);
    word_similarity(&wa, &wb)
}

/// Fills `out` with the 64-bit hashes of the [`normalize_words`] words of `text` (FNV-1a over
/// the lower-cased characters), at most `MAX_WORDS` of them. Equal words give equal hashes;
/// different words collide with negligible probability. Shared with the leak guard.
pub(crate) fn word_hashes_into(text: &str, out: &mut Vec<u64>) {
    out.clear();
    word_hashes_limited(text, out, MAX_WORDS);
}

/// As [`word_hashes_into`] but appending, with a caller-chosen limit (the leak guard hashes whole
/// prompts).
pub(crate) fn word_hashes_limited(text: &str, out: &mut Vec<u64>, limit: usize) {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let mut in_word = false;
    let mut taken = 0usize;
    for c in text.chars() {
        if c.is_alphanumeric() {
            for lower in c.to_lowercase() {
                let mut buf = [0u8; 4];
                for byte in lower.encode_utf8(&mut buf).bytes() {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(FNV_PRIME);
                }
            }
            in_word = true;
        } else if in_word && !is_apostrophe(c) {
            out.push(hash);
            taken += 1;
            if taken >= limit {
                return;
            }
            hash = FNV_OFFSET;
            in_word = false;
        }
    }
    if in_word && taken < limit {
        out.push(hash);
    }
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{02bc}')
}

/// `1 - levenshtein / max(len)` on word sequences; 1.0 when both are empty.
fn word_similarity(a: &[u64], b: &[u64]) -> f64 {
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    let distance = strsim::generic_levenshtein(&Words(a), &Words(b));
    1.0 - distance as f64 / longest as f64
}

/// A word-hash slice as `strsim::generic_levenshtein` takes it (a sized type whose reference
/// iterates).
struct Words<'a>(&'a [u64]);

impl<'a> IntoIterator for &Words<'a> {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// How well `fragment` appears inside `utterance`, 0..=1: `1 - d / len(fragment)`, where `d` is the
/// smallest word-level edit distance between `fragment` and any contiguous stretch of `utterance`
/// (approximate substring matching: the alignment may start and end anywhere in `utterance`).
/// This generalises the best same-length window: a stretch one word longer or shorter is allowed
/// at the cost of one edit, as a speech-to-text engine drops or adds a word. A fragment longer
/// than the utterance pays one edit per extra word, so the whole-utterance similarity is covered
/// too. `row` is scratch space.
fn containment(fragment: &[u64], utterance: &[u64], row: &mut Vec<usize>) -> f64 {
    let m = fragment.len();
    if m == 0 {
        return 0.0;
    }
    // row[i]: smallest distance between fragment[..i] and a stretch ending at the current word.
    row.clear();
    row.extend(0..=m);
    let mut best = m;
    for &word in utterance {
        let mut diagonal = row[0]; // row[0] stays 0: a stretch may start anywhere.
        for i in 1..=m {
            let above = row[i];
            let substitute = diagonal + usize::from(fragment[i - 1] != word);
            let value = substitute.min(above + 1).min(row[i - 1] + 1);
            diagonal = above;
            row[i] = value;
        }
        best = best.min(row[m]);
        if best == 0 {
            break;
        }
    }
    1.0 - best as f64 / m as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_strips_punctuation_and_case() {
        assert_eq!(
            normalize_words("Don't  worry, we're OPEN nine-thirty!"),
            vec!["dont", "worry", "were", "open", "nine", "thirty"]
        );
        assert!(normalize_words(" ... ").is_empty());
    }

    #[test]
    fn hashes_follow_the_normalised_words() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        word_hashes_into("Hello, World", &mut a);
        word_hashes_into("hello world!", &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn containment_finds_a_noisy_fragment() {
        let mut row = Vec::new();
        let mut f = Vec::new();
        let mut u = Vec::new();
        word_hashes_into("the dentist can see you", &mut f);
        word_hashes_into("good news the dentist can see you on tuesday", &mut u);
        assert_eq!(containment(&f, &u, &mut row), 1.0);
        word_hashes_into("the dentist could see you", &mut f);
        assert!((containment(&f, &u, &mut row) - 0.8).abs() < 1e-9);
        word_hashes_into("my tooth hurts a lot", &mut f);
        assert!(containment(&f, &u, &mut row) < 0.5);
    }
}
