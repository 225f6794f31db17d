//! A Media Streams message from Twilio, as the session reads it: parsed, and a media payload
//! checked as base64 audio before it would be forwarded. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxrelay::twilio::media::{self, Inbound};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Inbound::Media { payload, .. }) = media::parse(text) {
        let _ = media::is_base64_audio(&payload);
    }
    let _ = media::is_base64_audio(text);
});
