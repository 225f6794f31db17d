//! E.164 phone numbers as stored in `phone_numbers.e164`.
//!
//! E.164 (ITU-T Recommendation E.164) numbers are written `+` followed by the country code and the
//! subscriber number, at most 15 digits in all, and no country code starts with 0. Twilio sends
//! `From`/`To` in this form (<https://www.twilio.com/docs/glossary/what-e164>).

use super::StoreError;

/// Fewest digits accepted after the `+`.
///
/// The shortest numbers in use (some small countries) have 8 digits including the country code;
/// anything shorter is almost certainly a typing mistake.
const MIN_DIGITS: usize = 8;

/// Most digits E.164 allows after the `+`.
const MAX_DIGITS: usize = 15;

/// Normalises a phone number to E.164: `+` then 8 to 15 ASCII digits, the first of them 1-9.
///
/// Surrounding whitespace, and the spaces, dashes, dots and parentheses a person may type between
/// the digits, are removed: `"+1 (415) 555-0100"` becomes `"+14155550100"`.
///
/// # Errors
/// [`StoreError::Invalid`] naming the input when, after that clean-up, it is not `+` followed by
/// 8 to 15 digits with a non-zero first digit (a missing `+`, letters, too few or too many digits).
pub fn normalize_e164(input: &str) -> Result<String, StoreError> {
    let cleaned: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or_default();
    let well_formed = cleaned.starts_with('+')
        && (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if well_formed {
        Ok(cleaned)
    } else {
        Err(StoreError::Invalid(format!(
            "phone number {input:?} is not E.164: expected '+' then {MIN_DIGITS} to {MAX_DIGITS} \
             digits, the first one 1-9 (e.g. \"+14155550100\")"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_message(input: &str) -> String {
        match normalize_e164(input) {
            Err(StoreError::Invalid(message)) => message,
            other => panic!("{input:?}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_e164_number_is_kept_as_it_is() {
        assert_eq!(
            normalize_e164("+14155550100").ok().as_deref(),
            Some("+14155550100")
        );
        assert_eq!(
            normalize_e164("+4930123456").ok().as_deref(),
            Some("+4930123456")
        );
    }

    #[test]
    fn typed_separators_and_surrounding_whitespace_are_removed() {
        let cases = [
            ("+1 (415) 555-0100", "+14155550100"),
            ("  +44 20 7946 0958\n", "+442079460958"),
            ("+49.30.1234.5678", "+493012345678"),
            ("+(33) 1-23-45-67-89", "+33123456789"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                normalize_e164(input).ok().as_deref(),
                Some(expected),
                "{input:?}"
            );
        }
    }

    #[test]
    fn the_digit_count_limits_are_8_and_15() {
        assert_eq!(
            normalize_e164("+12345678").ok().as_deref(),
            Some("+12345678")
        );
        assert_eq!(
            normalize_e164("+123456789012345").ok().as_deref(),
            Some("+123456789012345")
        );
        invalid_message("+1234567");
        invalid_message("+1234567890123456");
    }

    #[test]
    fn malformed_numbers_are_rejected_with_a_message_naming_them() {
        for input in [
            "",
            "+",
            "14155550100",
            "+04155550100",
            "+1415555010a",
            "+1 415 555 0100 ext 2",
            "++14155550100",
            "1+4155550100",
            "+1_415_555_0100",
            "+١٤١٥٥٥٥٠١٠٠",
            "anonymous",
        ] {
            let message = invalid_message(input);
            assert!(
                message.contains(&format!("{input:?}")),
                "message {message:?} does not name {input:?}"
            );
            assert!(message.contains("E.164"), "{message:?}");
        }
    }
}
