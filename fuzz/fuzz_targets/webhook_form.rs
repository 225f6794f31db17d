//! The voice webhook's request, as the handler reads it: the first line is the URL's query
//! (an outbound call's signed parameters), the rest the form body. The form is parsed, its
//! signature checked, the call read from it (and a status report, as `/twilio/status` reads
//! it), and the outbound parameters verified; the first line is also tried as a tool's
//! `Voxrelay-Signature` header over the body. Nothing may panic; a signature computed over the
//! fields must validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxrelay::http::webhook::read_call;
use voxrelay::twilio::{signature, token};

const AUTH_TOKEN: &str = "fuzz-auth-token";
const KEY: &[u8] = b"fuzz-signing-key-0123456789abcdef";
const URL: &str = "https://voice.example.com/twilio/voice";

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(0);
    let (query, body) = data.split_at(split);
    let query = String::from_utf8_lossy(query);
    let params = signature::parse_form(body);
    let signed = signature::compute(AUTH_TOKEN, URL, &params);
    assert!(signature::validate(AUTH_TOKEN, URL, &params, &signed));
    let _ = signature::validate(AUTH_TOKEN, URL, &params, &String::from_utf8_lossy(body));
    let _ = read_call(&params, Some(&query));
    let _ = voxrelay::http::status::read_status(&params, 0);
    let _ = voxrelay::http::dial_status::read_dial(&params, &query);
    let _ = voxrelay::tools::signature::verify(KEY, &query, body, 0, 300);
    let tool_signature = voxrelay::tools::signature::sign(KEY, 7, body);
    assert!(voxrelay::tools::signature::verify(KEY, &tool_signature, body, 7, 0).is_ok());
    let pairs = signature::parse_form(query.as_bytes());
    let _ = token::verify_outbound(KEY, &pairs, 0);
});
