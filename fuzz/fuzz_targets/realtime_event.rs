//! A Realtime API server event, as the session reads it from the upstream. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = voxrelay::realtime::events::parse(text);
    }
});
