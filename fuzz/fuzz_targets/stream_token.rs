//! The stream token from a media stream's `start` message: verified as the proxy does
//! (`token::verify`), and a token signed for fields taken from the input verified back to the
//! same fields, for every field the webhook can put in one (a caller within
//! `webhook::MAX_PARTY_LEN` bytes without control characters, ids as ids). Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxrelay::domain::{BusinessId, CallSid, Direction, check_id};
use voxrelay::http::webhook::MAX_PARTY_LEN;
use voxrelay::twilio::token::{self, CallToken};

const KEY: &[u8] = b"fuzz-signing-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = token::verify(KEY, &text, 0);
    let mut parts = text.splitn(3, '\u{0}');
    let (Some(business), Some(caller)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(business_id) = BusinessId::parse(business) else {
        return;
    };
    if caller.len() > MAX_PARTY_LEN || caller.chars().any(char::is_control) {
        return;
    }
    let version = parts.next().map(str::to_string);
    if version
        .as_deref()
        .is_some_and(|v| check_id("prompt version", v).is_err())
    {
        return;
    }
    let Ok(call_sid) = CallSid::parse("CA0123456789abcdef0123456789abcdef") else {
        return;
    };
    let claims = CallToken {
        call_sid,
        business_id,
        direction: Direction::Inbound,
        expires_at_ms: i64::MAX,
        caller: caller.to_string(),
        prompt_version_id: version,
        experiment: None,
    };
    let signed = token::sign(KEY, &claims);
    assert_eq!(token::verify(KEY, &signed, 0), Ok(claims));
});
