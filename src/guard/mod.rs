//! Inline guards: they act inside the live call, without adding latency to normal turns.
//!
//! - [`sanitizer`]: scores caller transcripts (and injected text such as DTMF) for prompt-injection
//!   attempts: allow, flag or block; its rules (found by [`rule_match`]) and its learned second
//!   stage ([`classifier`]), each turn alone and with the caller's recent turns ([`context`]);
//! - [`dataset`], [`train`], [`evaluate`]: the classifier's labelled data (`data/guard/`), its
//!   trainer and the figures on a part of the data;
//! - [`echo`]: catches a model that parrots the caller, and a caller line that is the model hearing
//!   itself (speakerphone, bad line);
//! - [`leak`]: catches the model saying its per-call canary or reciting its instructions;
//! - [`redact`]: removes card numbers, SSNs, phone numbers and e-mail addresses before anything
//!   is stored.

pub mod classifier;
pub mod context;
pub mod dataset;
pub mod echo;
pub mod evaluate;
pub mod leak;
pub mod normalize;
pub mod redact;
pub mod rule_match;
pub mod sanitizer;
pub mod train;
