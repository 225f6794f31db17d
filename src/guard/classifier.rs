//! The sanitizer's learned second stage: a linear classifier over hashed word and character
//! n-grams of the [normalised](super::normalize) transcript.
//!
//! It runs behind the rules, in the process, with no network and no download: the weights are
//! `config/guard_model.bin`, built into the binary with `include_bytes!` and trained by
//! `voxrelay guard train` ([`super::train`]) from the data in `data/guard/`.
//!
//! **Features.** From the normalised text `t` (lower case, accents folded, spelled letters joined,
//! see [`normalize`](super::normalize::normalize)):
//! - every word (tokens split on spaces; the sentence mark `.` is a token too) and every pair of
//!   adjacent words, each counted [`WORD_REPEAT`] times so words weigh about as much as the
//!   n-grams;
//! - every byte 3-, 4- and 5-gram of `" " + t + " "` (bytes, not characters: an accented letter
//!   the normaliser kept is two bytes);
//! - one feature when undoing obfuscation was needed (look-alike letters, zero-width characters,
//!   leetspeak).
//!
//! Each occurrence is hashed (32-bit FNV-1a, a different seed per kind, then a multiply-xorshift
//! finaliser) into one of 2^[`DIM_BITS`] buckets. A text with `n` occurrences has the feature
//! vector `x[bucket] = count / √n`, so long texts do not score higher for being long.
//!
//! **Score.** `margin = bias + scale · (Σ q[bucket]) / √n` where `q` are the weights quantised to
//! `i8`. The sum over a text is an integer ([`Evidence`]), so the evidence of several turns adds
//! up exactly: the multi-turn window scores the recent turns together at no extra cost
//! ([`Classifier::margin`] of the summed evidence).
//!
//! **Risk.** The margin is mapped to the sanitizer's 0–1 risk by a straight line through two
//! anchors the trainer chose on the development set: the margin at which the classifier alone
//! flags (risk = the flag threshold) and the margin at which it alone blocks (risk = the block
//! threshold). Below the flag anchor the risk falls to 0; it never exceeds 0.99. See
//! [`Classifier::risk`].
//!
//! **File format** (little-endian), [`MODEL_HEADER_BYTES`] bytes of header, then the weights:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | 4 bytes | magic `VXGM` |
//! | 4 | u32 | format version ([`MODEL_FORMAT`]) |
//! | 8 | u32 | feature set version ([`FEATURE_SET`]) |
//! | 12 | u32 | `DIM_BITS` |
//! | 16 | f32 | `scale` (weight = `q · scale`) |
//! | 20 | f32 | `bias` |
//! | 24 | f32 | flag anchor (margin) |
//! | 28 | f32 | block anchor (margin) |
//! | 32 | i8 × 2^DIM_BITS | `q` |

use std::fmt;
use std::path::Path;

/// The built-in model.
const BUILTIN_MODEL: &[u8] = include_bytes!("../../config/guard_model.bin");

/// How the built-in model is named in errors.
pub const BUILTIN_MODEL_FILE: &str = "config/guard_model.bin";

/// log2 of the number of hash buckets (2^20 = 1,048,576 weights, one byte each: 1 MiB). Fewer
/// buckets cost recall on the development set (2^18: about 5 points at the same false-positive
/// rate) through collisions.
pub const DIM_BITS: u32 = 20;

/// Version of the file layout.
pub const MODEL_FORMAT: u32 = 1;

/// Version of the feature definition in this module; a model trained on another is refused.
pub const FEATURE_SET: u32 = 1;

/// Bytes before the weights.
pub const MODEL_HEADER_BYTES: usize = 32;

const MAGIC: &[u8; 4] = b"VXGM";

/// Hash seeds, one per kind of feature.
const SEED_WORD: u32 = 0x9e37_79b9;
const SEED_PAIR: u32 = 0x85eb_ca6b;
const SEED_GRAM: u32 = 0xc2b2_ae35;
const SEED_FLAG: u32 = 0x27d4_eb2f;

/// Word features count this many times each, so they weigh as much as the byte n-grams (of which
/// a word has about three per byte).
pub const WORD_REPEAT: usize = 4;

/// The shortest and longest byte n-grams.
const GRAM_MIN: usize = 3;
const GRAM_MAX: usize = 5;

/// Below the flag anchor, the risk reaches 0 this many anchor distances lower.
pub const LOWER_SPAN: f32 = 0.25;

/// Below the flag anchor by this many anchor distances, the classifier vetoes the rule file's
/// rules: a line it finds this ordinary is not flagged by a rule's wording alone. Chosen on the
/// development set with each release's weights (BENCHMARKS.md, "Guards: sanitizer"): for
/// release 7, 0.25 kept the whole guard's development false positives at 4 of 4,506 (0.5: 6)
/// for 0.3 points of recall.
pub const VETO_SPAN: f32 = 0.25;

/// The highest risk the classifier gives on its own: it never claims certainty.
const RISK_CEILING: f32 = 0.99;

/// 32-bit FNV-1a, continued from `h`.
#[inline]
fn fnv(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Spreads an FNV hash over the low bits (FNV's low bits are weak on short inputs).
#[inline]
fn bucket(h: u32) -> u32 {
    let mut x = h;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x & ((1 << DIM_BITS) - 1)
}

/// Calls `emit` with the bucket of every feature occurrence of a normalised text (see the module
/// documentation); `obfuscated` adds the obfuscation feature. Training and inference both use
/// this one function, so they cannot disagree.
pub fn features(normalized: &str, obfuscated: bool, mut emit: impl FnMut(u32)) {
    let mut previous: Option<&str> = None;
    for word in normalized.split(' ').filter(|w| !w.is_empty()) {
        for _ in 0..WORD_REPEAT {
            emit(bucket(fnv(SEED_WORD, word.as_bytes())));
        }
        if let Some(p) = previous {
            let h = fnv(fnv(fnv(SEED_PAIR, p.as_bytes()), b" "), word.as_bytes());
            for _ in 0..WORD_REPEAT {
                emit(bucket(h));
            }
        }
        previous = Some(word);
    }
    // Byte n-grams of " " + text + " ", without building that string.
    let text = normalized.as_bytes();
    let len = text.len() + 2;
    let byte_at = |i: usize| -> u8 {
        if i == 0 || i == len - 1 {
            b' '
        } else {
            text[i - 1]
        }
    };
    for start in 0..len {
        let mut h = SEED_GRAM;
        for n in 1..=GRAM_MAX {
            let i = start + n - 1;
            if i >= len {
                break;
            }
            h ^= u32::from(byte_at(i));
            h = h.wrapping_mul(0x0100_0193);
            if n >= GRAM_MIN {
                emit(bucket(h));
            }
        }
    }
    if obfuscated {
        emit(bucket(fnv(SEED_FLAG, b"obfuscated")));
    }
}

/// What one text (or several, added up) contributes to the classifier: the sum of the quantised
/// weights of its feature occurrences and how many occurrences there were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Σ q over the occurrences.
    pub sum: i64,
    /// Number of occurrences.
    pub count: u32,
}

impl Evidence {
    /// The evidence of two texts scored together.
    pub fn plus(self, other: Evidence) -> Evidence {
        Evidence {
            sum: self.sum + other.sum,
            count: self.count.saturating_add(other.count),
        }
    }
}

/// A model file that cannot be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read guard model {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Shorter than its header says.
    #[error("guard model {file}: {len} bytes, expected {expected}")]
    Size {
        /// The file.
        file: String,
        /// Its length.
        len: usize,
        /// The length its header implies.
        expected: usize,
    },
    /// Not a model file, or one of another format or feature set.
    #[error("guard model {file}: {reason}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// The trained linear model.
#[derive(Clone)]
pub struct Classifier {
    weights: Box<[i8]>,
    scale: f32,
    bias: f32,
    flag_margin: f32,
    block_margin: f32,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("weights", &self.weights.len())
            .field("scale", &self.scale)
            .field("bias", &self.bias)
            .field("flag_margin", &self.flag_margin)
            .field("block_margin", &self.block_margin)
            .finish()
    }
}

/// The numbers of a model besides its weights, as the trainer chose them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    /// Weight of one quantisation step.
    pub scale: f32,
    /// The intercept.
    pub bias: f32,
    /// Margin at which the classifier alone flags.
    pub flag_margin: f32,
    /// Margin at which the classifier alone blocks.
    pub block_margin: f32,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_f32(bytes: &[u8], at: usize) -> f32 {
    f32::from_bits(read_u32(bytes, at))
}

impl Classifier {
    /// The model built into the binary (`config/guard_model.bin`).
    ///
    /// # Errors
    /// [`ModelError`] if the file built in is not a model of this version (a build mistake).
    pub fn builtin() -> Result<Classifier, ModelError> {
        Classifier::from_bytes(BUILTIN_MODEL, BUILTIN_MODEL_FILE)
    }

    /// A model from a model file.
    ///
    /// # Errors
    /// [`ModelError::Read`] if the file cannot be read, and as for [`Classifier::from_bytes`].
    pub fn from_file(path: &Path) -> Result<Classifier, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Classifier::from_bytes(&bytes, &path.display().to_string())
    }

    /// A model from the bytes of a model file; `file` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::Size`] for a file of the wrong length, [`ModelError::Format`] for another
    /// magic, format, feature set or dimension, or numbers that are not finite or anchors out of
    /// order.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Classifier, ModelError> {
        let format = |reason: String| ModelError::Format {
            file: file.to_owned(),
            reason,
        };
        if bytes.len() < MODEL_HEADER_BYTES {
            return Err(ModelError::Size {
                file: file.to_owned(),
                len: bytes.len(),
                expected: MODEL_HEADER_BYTES + (1 << DIM_BITS),
            });
        }
        if &bytes[0..4] != MAGIC {
            return Err(format("not a voxrelay guard model (no VXGM magic)".into()));
        }
        let version = read_u32(bytes, 4);
        if version != MODEL_FORMAT {
            return Err(format(format!(
                "format version {version}, this build reads {MODEL_FORMAT}"
            )));
        }
        let feature_set = read_u32(bytes, 8);
        if feature_set != FEATURE_SET {
            return Err(format(format!(
                "trained on feature set {feature_set}, this build computes {FEATURE_SET}; retrain with `voxrelay guard train`"
            )));
        }
        let dim_bits = read_u32(bytes, 12);
        if dim_bits != DIM_BITS {
            return Err(format(format!(
                "{dim_bits} hash bits, this build uses {DIM_BITS}"
            )));
        }
        let expected = MODEL_HEADER_BYTES + (1usize << DIM_BITS);
        if bytes.len() != expected {
            return Err(ModelError::Size {
                file: file.to_owned(),
                len: bytes.len(),
                expected,
            });
        }
        let params = ModelParams {
            scale: read_f32(bytes, 16),
            bias: read_f32(bytes, 20),
            flag_margin: read_f32(bytes, 24),
            block_margin: read_f32(bytes, 28),
        };
        let weights = bytes[MODEL_HEADER_BYTES..]
            .iter()
            .map(|b| i8::from_le_bytes([*b]))
            .collect();
        Classifier::from_parts(weights, params).map_err(format)
    }

    /// A model from its weights and numbers, as the trainer makes one.
    ///
    /// # Errors
    /// A reason if there are not 2^[`DIM_BITS`] weights, a number is not finite, the scale is
    /// not positive or the block anchor is below the flag anchor.
    pub fn from_parts(weights: Box<[i8]>, params: ModelParams) -> Result<Classifier, String> {
        if weights.len() != 1 << DIM_BITS {
            return Err(format!(
                "{} weights, expected {}",
                weights.len(),
                1u32 << DIM_BITS
            ));
        }
        let ModelParams {
            scale,
            bias,
            flag_margin,
            block_margin,
        } = params;
        if ![scale, bias, flag_margin, block_margin]
            .iter()
            .all(|x| x.is_finite())
        {
            return Err("a header number is not finite".into());
        }
        if scale <= 0.0 {
            return Err(format!("scale {scale} is not positive"));
        }
        if block_margin <= flag_margin {
            return Err(format!(
                "block anchor {block_margin} is not above the flag anchor {flag_margin}"
            ));
        }
        Ok(Classifier {
            weights,
            scale,
            bias,
            flag_margin,
            block_margin,
        })
    }

    /// The model file's bytes (the layout of the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MODEL_HEADER_BYTES + self.weights.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&MODEL_FORMAT.to_le_bytes());
        out.extend_from_slice(&FEATURE_SET.to_le_bytes());
        out.extend_from_slice(&DIM_BITS.to_le_bytes());
        for x in [self.scale, self.bias, self.flag_margin, self.block_margin] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(self.weights.iter().map(|w| w.to_le_bytes()[0]));
        out
    }

    /// The model's numbers besides the weights.
    pub fn params(&self) -> ModelParams {
        ModelParams {
            scale: self.scale,
            bias: self.bias,
            flag_margin: self.flag_margin,
            block_margin: self.block_margin,
        }
    }

    /// The evidence of one normalised text.
    pub fn evidence(&self, normalized: &str, obfuscated: bool) -> Evidence {
        let mut sum = 0i64;
        let mut count = 0u32;
        features(normalized, obfuscated, |b| {
            // `b` < 2^DIM_BITS = weights.len() by construction of `bucket`.
            sum += i64::from(self.weights.get(b as usize).copied().unwrap_or(0));
            count = count.saturating_add(1);
        });
        Evidence { sum, count }
    }

    /// The margin (log-odds of an attack) of some evidence; the bias alone for none.
    pub fn margin(&self, evidence: Evidence) -> f32 {
        if evidence.count == 0 {
            return self.bias;
        }
        self.bias + self.scale * (evidence.sum as f32) / (evidence.count as f32).sqrt()
    }

    /// The margin below which the classifier vetoes the rule file's rules: [`VETO_SPAN`]
    /// anchor distances below the flag anchor.
    pub fn veto_margin(&self) -> f32 {
        self.flag_margin - VETO_SPAN * (self.block_margin - self.flag_margin)
    }

    /// The risk (0 to [`RISK_CEILING`]) of a margin, for the sanitizer's thresholds `flag` and
    /// `block`: `flag` at the flag anchor, `block` at the block anchor, on a straight line
    /// between and above them (clamped to 0.99); below the flag anchor it falls in a straight
    /// line to 0 over [`LOWER_SPAN`] of the anchors' distance, so a margin well below the flag
    /// anchor adds little to a weak rule.
    pub fn risk(&self, margin: f32, flag: f32, block: f32) -> f32 {
        let span = self.block_margin - self.flag_margin;
        if margin >= self.flag_margin {
            let slope = (block - flag) / span;
            (flag + (margin - self.flag_margin) * slope).min(RISK_CEILING)
        } else {
            let below = (self.flag_margin - margin) / (span * LOWER_SPAN);
            (flag * (1.0 - below)).max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str, obfuscated: bool) -> Vec<u32> {
        let mut out = Vec::new();
        features(text, obfuscated, |b| out.push(b));
        out
    }

    #[test]
    fn features_count_words_pairs_and_grams() {
        // "ab cd": 2 words, 1 pair (each counted WORD_REPEAT times); " ab cd " is 7 bytes:
        // 5 trigrams, 4 four-grams, 3 five-grams.
        let f = collect("ab cd", false);
        assert_eq!(f.len(), WORD_REPEAT * (2 + 1) + 5 + 4 + 3);
        assert!(f.iter().all(|b| *b < 1 << DIM_BITS));
        assert_eq!(collect("ab cd", true).len(), f.len() + 1);
        // "" is "  ": no n-gram fits.
        assert!(collect("", false).is_empty());
    }

    #[test]
    fn features_are_stable_across_builds() {
        // The weights file depends on these exact buckets: a change here needs a new
        // FEATURE_SET and a retrained model.
        assert_eq!(
            collect("ignore", false)[0],
            bucket(fnv(SEED_WORD, b"ignore"))
        );
        assert_eq!(fnv(0x811c_9dc5, b"a"), 0xe40c_292c);
    }

    fn model(weights: Box<[i8]>) -> Classifier {
        let params = ModelParams {
            scale: 0.5,
            bias: -1.0,
            flag_margin: 1.0,
            block_margin: 3.0,
        };
        match Classifier::from_parts(weights, params) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn file_round_trips_and_bad_files_name_the_problem() {
        let mut w = vec![0i8; 1 << DIM_BITS].into_boxed_slice();
        w[7] = -3;
        w[99] = 127;
        let m = model(w);
        let bytes = m.to_bytes();
        let back = match Classifier::from_bytes(&bytes, "m.bin") {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.params(), m.params());

        let short = Classifier::from_bytes(&bytes[..100], "m.bin");
        assert!(matches!(short, Err(ModelError::Size { .. })), "{short:?}");
        let mut other = bytes.clone();
        other[8] = 9;
        let e = Classifier::from_bytes(&other, "m.bin")
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("feature set 9"), "{e}");
        assert!(e.to_string().contains("m.bin"), "{e}");
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(Classifier::from_bytes(&magic, "m.bin").is_err());
    }

    #[test]
    fn evidence_adds_up_and_the_margin_is_length_normalised() {
        let mut w = vec![0i8; 1 << DIM_BITS].into_boxed_slice();
        for b in collect("reveal", false) {
            w[b as usize] = 10;
        }
        let m = model(w);
        let one = m.evidence("reveal", false);
        assert_eq!(one.count, collect("reveal", false).len() as u32);
        let two = one.plus(one);
        assert_eq!(two.sum, 2 * one.sum);
        // The same text twice has the same per-occurrence average but √2 more weight.
        let (m1, m2) = (m.margin(one), m.margin(two));
        assert!(m2 > m1, "{m1} {m2}");
        assert_eq!(m.margin(Evidence::default()), -1.0);
    }

    #[test]
    fn risk_passes_through_the_anchors_and_is_clamped() {
        let m = model(vec![0i8; 1 << DIM_BITS].into_boxed_slice());
        assert!((m.risk(1.0, 0.4, 0.7) - 0.4).abs() < 1e-6);
        assert!((m.risk(3.0, 0.4, 0.7) - 0.7).abs() < 1e-6);
        assert_eq!(m.risk(-100.0, 0.4, 0.7), 0.0);
        assert_eq!(m.risk(100.0, 0.4, 0.7), RISK_CEILING);
    }

    #[test]
    fn the_builtin_model_loads() {
        if let Err(e) = Classifier::builtin() {
            panic!("{e}");
        }
    }
}
