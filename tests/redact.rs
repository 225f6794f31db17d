//! PII redaction of caller and model transcripts before anything is stored.

use std::borrow::Cow;

use voxrelay::guard::redact::{contains_card_number, redact};

/// Asserts that `input` redacts to exactly `expected`.
#[track_caller]
fn assert_redacts(input: &str, expected: &str) {
    assert_eq!(redact(input), expected, "input: {input:?}");
}

/// Asserts that `input` is kept as it is, borrowed.
#[track_caller]
fn assert_kept(input: &str) {
    let out = redact(input);
    assert!(
        matches!(out, Cow::Borrowed(_)),
        "{input:?} was rewritten to {out:?}"
    );
    assert_eq!(out, input);
}

#[test]
fn card_numbers_are_redacted_however_speech_to_text_groups_them() {
    for card in [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "4111 - 1111 - 1111 - 1111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "6011000990139424",
        "4222222222222",
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    ] {
        assert!(contains_card_number(card), "{card}");
        assert_redacts(card, "[CARD]");
        assert_redacts(&format!("the number is {card}."), "the number is [CARD].");
    }
}

#[test]
fn a_card_followed_by_its_expiry_loses_only_the_card() {
    assert_redacts(
        "card 4111 1111 1111 1111 12 27 thanks",
        "card [CARD] 12 27 thanks",
    );
}

#[test]
fn digit_runs_that_fail_luhn_are_not_cards() {
    for text in [
        "4111 1111 1111 1112",
        "my order number is 1234567890123",
        "tracking 9400 1000 0000 0000 0000 00",
        "tracking 9400 1118 9922 3344 5566 77",
        "0000 0000 0000 0000",
        "reference 12345678901234567",
    ] {
        assert!(!contains_card_number(text), "{text}");
        assert_kept(text);
    }
}

#[test]
fn a_luhn_valid_run_glued_to_letters_is_not_a_card() {
    assert!(!contains_card_number("ORD4111111111111111"));
    assert_kept("your confirmation code is ORD4111111111111111");
}

#[test]
fn short_numbers_are_kept() {
    for text in [
        "it costs $19.99, or 1,299 for the year",
        "see you at 10:30 on 2026-05-06",
        "I'm in room 12 on floor 3",
        "order 48213 shipped",
        "the total was 4 111 dollars",
        "call back in 15 minutes",
        "my zip is 94107",
        "we open at 9 and close at 17",
    ] {
        assert_kept(text);
    }
}

#[test]
fn ssns_are_redacted_unless_they_cannot_exist() {
    assert_redacts("ssn 123-45-6789 ok", "ssn [SSN] ok");
    assert_redacts("it's 123 45 6789", "it's [SSN]");
    for impossible in [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
    ] {
        assert_kept(impossible);
    }
    // Mixed separators are not an SSN shape.
    assert_kept("123-45 6789");
}

#[test]
fn e_mail_addresses_are_redacted() {
    assert_redacts("write to a.b@example.com.", "write to [EMAIL].");
    assert_redacts(
        "JOHN.SMITH+billing@mail.example.co.uk or x_y@sub-domain.io",
        "[EMAIL] or [EMAIL]",
    );
    assert_kept("meet me @ noon");
    assert_kept("email me at john");
}

#[test]
fn phone_numbers_are_redacted() {
    for phone in [
        "+14155550100",
        "+442079460958",
        "+44 20 7946 0958",
        "+1 415 555 0100",
        "+1 (415) 555-0100",
        "1-415-555-0100",
        "(415) 555-0100",
        "(415)555-0100",
        "415-555-0100",
        "415.555.0100",
        "415 555 0100",
    ] {
        assert_redacts(phone, "[PHONE]");
        assert_redacts(
            &format!("call me at {phone}, thanks"),
            "call me at [PHONE], thanks",
        );
    }
}

#[test]
fn number_shapes_that_are_not_phones_are_kept() {
    for text in ["+12", "+1 2 3", "version 4.15.555", "415-5550-100"] {
        assert_kept(text);
    }
}

#[test]
fn already_redacted_text_is_unchanged() {
    let once = redact(
        "card 4111111111111111, ssn 123-45-6789, a@b.example, (415) 555-0100, +442079460958",
    )
    .into_owned();
    assert_eq!(once, "card [CARD], ssn [SSN], [EMAIL], [PHONE], [PHONE]");
    assert_kept(&once);
    assert_kept("[CARD] [SSN] [EMAIL] [PHONE]");
}

#[test]
fn several_kinds_in_one_utterance_are_all_redacted() {
    assert_redacts(
        "I'm John, SSN 078-05-1120, card 5500-0000-0000-0004, reach me at 415.555.0100 \
         or j@example.org; order 77123 for $45.50 at 3:15",
        "I'm John, SSN [SSN], card [CARD], reach me at [PHONE] \
         or [EMAIL]; order 77123 for $45.50 at 3:15",
    );
}

#[test]
fn a_spoken_card_and_email_leave_no_card_digit_behind() {
    let text = "my card is 4111 1111 1111 1111 and my email is a.b@example.com";
    let out = redact(text);
    assert_eq!(out, "my card is [CARD] and my email is [EMAIL]");
    assert!(!out.contains("4111"));
    assert!(!out.bytes().any(|b| b.is_ascii_digit()), "{out}");
    assert!(!contains_card_number(&out));
}

#[test]
fn text_without_pii_is_borrowed() {
    assert_kept("");
    assert_kept("Hi, I'd like to book a cleaning for Tuesday afternoon.");
    assert_kept("ignore that, forget it");
}
