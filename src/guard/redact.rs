//! PII redaction: nothing a caller says is stored, logged into events or exported with a payment
//! card number, a US social security number, an e-mail address or a phone number in it.
//!
//! [`redact`] replaces, in this order:
//!
//! 1. payment card numbers → `[CARD]`: 13 to 19 digits, written together or grouped by single
//!    spaces or dashes the way speech-to-text engines write them (`4111 1111 1111 1111`,
//!    `4111-1111-1111-1111`, `4111111111111111`), not starting with `0`, that pass the Luhn
//!    check. Within a longer run of groups (a card read out with its expiry date) the card is
//!    found group by group. Digit runs that fail the check (order numbers, tracking numbers)
//!    are kept. A group glued to a letter (`A4111…`) or following a `+` (an international phone
//!    number) is never part of a card;
//! 2. US social security numbers → `[SSN]`: `ddd-dd-dddd` or `ddd dd dddd`, except numbers that
//!    cannot be issued (area `000`, `666` or `9xx`, group `00`, serial `0000`);
//! 3. e-mail addresses → `[EMAIL]`;
//! 4. phone numbers → `[PHONE]`: E.164 (`+14155550100`, also grouped: `+44 20 7946 0958`) and
//!    North American forms (`(415) 555-0100`, `415-555-0100`, `415.555.0100`, `415 555 0100`,
//!    optionally preceded by `1` or `+1`).
//!
//! Short numbers (prices, times, room and order numbers, dates) are kept: only the shapes above
//! are replaced. The markers contain no digits and no `@`, so redacting twice changes nothing.
//! Patterns are compiled once, on first use.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What replaces a payment card number.
pub const CARD: &str = "[CARD]";
/// What replaces a US social security number.
pub const SSN: &str = "[SSN]";
/// What replaces an e-mail address.
pub const EMAIL: &str = "[EMAIL]";
/// What replaces a phone number.
pub const PHONE: &str = "[PHONE]";

/// Fewest digits in a payment card number (ISO/IEC 7812).
const CARD_MIN_DIGITS: usize = 13;
/// Most digits in a payment card number (ISO/IEC 7812).
const CARD_MAX_DIGITS: usize = 19;
/// Fewest digits in an international (`+`) phone number, country code included.
const E164_MIN_DIGITS: usize = 8;
/// Most digits in an E.164 phone number, country code included.
const E164_MAX_DIGITS: usize = 15;

/// A run of digit groups joined by one space, one dash, or a dash with a space on either side:
/// the candidates for card numbers, split into groups afterwards.
static DIGIT_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9]+(?:(?: ?- ?| )[0-9]+)*").expect("digit run pattern"));

/// `ddd-dd-dddd` or `ddd dd dddd` as whole words.
static SSN_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:([0-9]{3})-([0-9]{2})-([0-9]{4})|([0-9]{3}) ([0-9]{2}) ([0-9]{4}))\b")
        .expect("SSN pattern")
});

/// A practical e-mail address: local part, `@`, dotted domain ending in a 2+ letter label.
static EMAIL_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
        .expect("e-mail pattern")
});

/// Phone numbers. Alternatives, tried leftmost-first:
/// - North American, optionally after `+1` / `1`: `(415) 555-0100`, `415-555-0100`,
///   `415.555.0100`, `415 555 0100`;
/// - `+` and a country code followed by 2 to 5 groups of 1 to 4 digits (grouped E.164);
/// - `+` and 7 to 15 digits written together (compact E.164).
///
/// The digit count of the `+` forms is checked after matching.
static PHONE_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:(?:\+1|\b1)[ .\-]?)?(?:\([0-9]{3}\) ?|\b[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}\b",
        r"|\+[1-9][0-9]{0,2}(?:[ .\-]\(?[0-9]{1,4}\)?){2,5}\b",
        r"|\+[1-9][0-9]{6,14}\b",
    ))
    .expect("phone pattern")
});

/// `text` with card numbers, SSNs, e-mail addresses and phone numbers replaced by `[CARD]`,
/// `[SSN]`, `[EMAIL]` and `[PHONE]` (see the [module documentation](self) for the exact shapes).
///
/// Borrows `text` when there is nothing to replace.
pub fn redact(text: &str) -> Cow<'_, str> {
    let text = replace_spans(Cow::Borrowed(text), card_spans_marked);
    let text = replace_matches(text, &SSN_SHAPE, |caps| is_valid_ssn(caps).then_some(SSN));
    let text = replace_matches(text, &EMAIL_SHAPE, |_| Some(EMAIL));
    replace_matches(text, &PHONE_SHAPE, |caps| {
        is_plausible_phone(&caps[0]).then_some(PHONE)
    })
}

/// Whether `text` contains a Luhn-valid payment card number, as [`redact`] would find it.
pub fn contains_card_number(text: &str) -> bool {
    !card_spans(text).is_empty()
}

/// Whether the decimal digits in `digits` (other characters are skipped) pass the Luhn check.
/// An input without digits does not.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for digit in digits.bytes().rev().filter(u8::is_ascii_digit) {
        let mut value = u32::from(digit - b'0');
        if count % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// Byte ranges of the card numbers in `text`, in order, not overlapping.
///
/// Each run of digit groups is searched for the leftmost, then longest, sequence of whole groups
/// holding 13 to 19 digits, not starting with `0`, that passes the Luhn check; the search goes on
/// after it. A group that
/// touches a letter, digit or `_` outside the run, or follows a `+`, is skipped.
fn card_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    for run in DIGIT_RUN.find_iter(text) {
        let groups: Vec<Range<usize>> = run_groups(run.as_str())
            .map(|group| run.start() + group.start..run.start() + group.end)
            .collect();
        let before = text[..run.start()].chars().next_back();
        let after = text[run.end()..].chars().next();
        let first = usize::from(before.is_some_and(|c| is_word_char(c) || c == '+'));
        let last_excluded = after.is_some_and(is_word_char);
        let end = groups.len() - usize::from(last_excluded);

        let mut start = first;
        while start < end {
            match longest_card_from(text, &groups[start..end]) {
                Some(taken) => {
                    spans.push(groups[start].start..groups[start + taken - 1].end);
                    start += taken;
                }
                None => start += 1,
            }
        }
    }
    spans
}

/// How many of `groups` (from the first) make the longest Luhn-valid card number, if any.
fn longest_card_from(text: &str, groups: &[Range<usize>]) -> Option<usize> {
    // Issuer numbers never start with 0 (and all-zero runs pass the Luhn check).
    if text.as_bytes()[groups.first()?.start] == b'0' {
        return None;
    }
    let mut digits = 0;
    let mut best = None;
    for (index, group) in groups.iter().enumerate() {
        digits += group.len();
        if digits > CARD_MAX_DIGITS {
            break;
        }
        if digits >= CARD_MIN_DIGITS && luhn_valid(&text[groups[0].start..group.end]) {
            best = Some(index + 1);
        }
    }
    best
}

/// The byte ranges of the digit groups in a [`DIGIT_RUN`] match.
fn run_groups(run: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let bytes = run.as_bytes();
    let mut index = 0;
    std::iter::from_fn(move || {
        while index < bytes.len() && !bytes[index].is_ascii_digit() {
            index += 1;
        }
        if index == bytes.len() {
            return None;
        }
        let start = index;
        while index < bytes.len() && bytes[index].is_ascii_digit() {
            index += 1;
        }
        Some(start..index)
    })
}

/// Letters, digits and `_`: what `\b` counts as part of a word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether an [`SSN_SHAPE`] match is a number the SSA could have issued.
fn is_valid_ssn(caps: &Captures<'_>) -> bool {
    let part = |dashed: usize| caps.get(dashed).or_else(|| caps.get(dashed + 3));
    let (Some(area), Some(group), Some(serial)) = (part(1), part(2), part(3)) else {
        return false;
    };
    let area = area.as_str();
    area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group.as_str() != "00"
        && serial.as_str() != "0000"
}

/// Whether a [`PHONE_SHAPE`] match has a believable number of digits: an international (`+`,
/// other than `+1`) number 8 to 15, a North American one 10 or 11.
fn is_plausible_phone(matched: &str) -> bool {
    let digits = matched.bytes().filter(u8::is_ascii_digit).count();
    if matched.starts_with('+') && !is_north_american(matched) {
        (E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits)
    } else {
        digits == 10 || digits == 11
    }
}

/// Whether a `+` number is a grouped North American one (`+1 415 555 0100`), which the first
/// alternative of [`PHONE_SHAPE`] matched.
fn is_north_american(matched: &str) -> bool {
    matched.starts_with("+1") && matched.bytes().filter(u8::is_ascii_digit).count() == 11
}

/// `text` with each match of `pattern` for which `replacement` answers `Some` replaced.
fn replace_matches<'a>(
    text: Cow<'a, str>,
    pattern: &Regex,
    replacement: impl Fn(&Captures<'_>) -> Option<&'static str>,
) -> Cow<'a, str> {
    replace_spans(text, |text| {
        pattern
            .captures_iter(text)
            .filter_map(|caps| {
                let marker = replacement(&caps)?;
                let whole = caps.get(0)?;
                Some((whole.range(), marker))
            })
            .collect()
    })
}

/// [`card_spans`], each with the `[CARD]` marker.
fn card_spans_marked(text: &str) -> Vec<(Range<usize>, &'static str)> {
    card_spans(text)
        .into_iter()
        .map(|span| (span, CARD))
        .collect()
}

/// `text` with the spans `finder` lists replaced by their markers; unchanged (still borrowed, if
/// it was) when there are none.
fn replace_spans<'a>(
    text: Cow<'a, str>,
    finder: impl FnOnce(&str) -> Vec<(Range<usize>, &'static str)>,
) -> Cow<'a, str> {
    let spans = finder(&text);
    if spans.is_empty() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (span, marker) in spans {
        out.push_str(&text[copied..span.start]);
        out.push_str(marker);
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_card_numbers_and_rejects_off_by_one() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5500 0000 0000 0004"));
        assert!(luhn_valid("3782-822463-10005"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn a_card_is_found_inside_a_longer_run_of_groups() {
        let text = "4111 1111 1111 1111 12 27";
        let spans = card_spans(text);
        assert_eq!(spans, vec![0..19]);
    }

    #[test]
    fn a_group_after_a_plus_is_never_a_card() {
        // 13 digits, Luhn-valid, written as an international number.
        assert!(luhn_valid("4222222222222"));
        assert!(card_spans("+4222222222222").is_empty());
    }
}
