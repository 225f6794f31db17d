//! Media Streams messages: what Twilio sends over the bidirectional stream WebSocket, and what we
//! send back.
//!
//! Source: <https://www.twilio.com/docs/voice/media-streams/websocket-messages> (summarised with
//! captures in `shared/protocol/twilio.md` §4). Facts this parser relies on:
//! - every message is one JSON text frame with an `event` field: `connected`, `start`, `media`,
//!   `dtmf`, `mark`, `stop`;
//! - counters (`sequenceNumber`, `chunk`, `timestamp`) are JSON strings;
//! - `start.customParameters` may be missing (older captures) and its values are opaque strings;
//! - unknown fields and new events may appear, so both are ignored rather than rejected.
//!
//! Parsing borrows from the frame: a media payload is never copied or decoded here.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::domain::{CallSid, InvalidId, StreamSid};

/// One message from Twilio, parsed just far enough to act on it.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// `connected`: the first message on the socket; carries nothing we need.
    Connected,
    /// `start`: stream metadata, sent once.
    Start(Start),
    /// `media`: one chunk of caller audio (base64 mu-law, 160 bytes = 20 ms on real calls).
    Media {
        /// The base64 payload, exactly as Twilio sent it.
        payload: Cow<'a, str>,
        /// Milliseconds since the stream started, when Twilio sent it (a string on the wire).
        timestamp_ms: Option<u64>,
    },
    /// `mark`: Twilio echoes a mark we sent once the audio before it has played, or at once
    /// after a `clear`.
    Mark {
        /// The name we gave the mark.
        name: Cow<'a, str>,
    },
    /// `dtmf`: the caller pressed a key (bidirectional streams, inbound only).
    Dtmf {
        /// `0`-`9`, `*`, `#`.
        digit: Cow<'a, str>,
    },
    /// `stop`: the stream stopped or the call ended.
    Stop,
    /// A well-formed message with an event name we do not handle.
    Unknown {
        /// The `event` field.
        event: Cow<'a, str>,
    },
}

/// The `start` message's fields that the proxy uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Start {
    /// `MZ…` id of this stream; every message we send back must carry it.
    pub stream_sid: StreamSid,
    /// `CA…` id of the call.
    pub call_sid: CallSid,
    /// `AC…` id of the Twilio account.
    pub account_sid: String,
    /// `<Parameter>` values from the TwiML, as strings (empty when Twilio sent none).
    pub custom_parameters: HashMap<String, String>,
    /// `mediaFormat.encoding`, `audio/x-mulaw` on every stream today.
    pub encoding: Option<String>,
    /// `mediaFormat.sampleRate` in Hz (8000).
    pub sample_rate_hz: Option<u32>,
}

/// Why a text frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a field had the wrong JSON type.
    #[error("malformed Twilio frame: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON, but a field the event needs is missing.
    #[error("Twilio `{event}` frame without `{field}`")]
    Missing {
        /// The event name.
        event: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field is present but not of its form (a CallSid with a newline, a 100 KB StreamSid).
    #[error("Twilio `{event}` frame with an invalid field: {source}")]
    Invalid {
        /// The event name.
        event: &'static str,
        /// What was wrong.
        #[source]
        source: InvalidId,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    media: Option<MediaBody<'a>>,
    #[serde(default)]
    start: Option<StartBody>,
    #[serde(borrow, default)]
    mark: Option<MarkBody<'a>>,
    #[serde(borrow, default)]
    dtmf: Option<DtmfBody<'a>>,
    #[serde(default, rename = "streamSid")]
    stream_sid: Option<String>,
}

#[derive(Deserialize)]
struct MediaBody<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MarkBody<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DtmfBody<'a> {
    #[serde(borrow)]
    digit: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    #[serde(default)]
    stream_sid: Option<String>,
    #[serde(default)]
    call_sid: Option<String>,
    #[serde(default)]
    account_sid: Option<String>,
    #[serde(default)]
    custom_parameters: Option<HashMap<String, serde_json::Value>>,
    #[serde(default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    sample_rate: Option<u32>,
}

/// Whether a `media.payload` can be audio as Twilio sends it: standard base64 (`A-Z a-z 0-9 +
/// /`, `=` padding at the end only), a whole number of 4-character groups, not empty. Checked
/// without decoding (the payload is forwarded as it is); what fails is not forwarded upstream,
/// where it would only earn an `error` per frame.
pub fn is_base64_audio(payload: &str) -> bool {
    let bytes = payload.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return false;
    }
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    body.iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Parses one text frame from Twilio.
///
/// Errors: [`ParseError::Json`] for text that is not a JSON object with a string `event`;
/// [`ParseError::Missing`] when a known event lacks the field it exists for (a `media` without
/// `media.payload`, a `start` without a `callSid`, a `mark` without a name). The caller logs and
/// skips such frames; the call goes on.
pub fn parse(text: &str) -> Result<Inbound<'_>, ParseError> {
    let envelope: Envelope<'_> = serde_json::from_str(text)?;
    Ok(match envelope.event.as_ref() {
        "media" => {
            let media = envelope.media.ok_or(ParseError::Missing {
                event: "media",
                field: "media",
            })?;
            Inbound::Media {
                timestamp_ms: media.timestamp.and_then(|t| t.parse().ok()),
                payload: media.payload,
            }
        }
        "mark" => Inbound::Mark {
            name: envelope
                .mark
                .ok_or(ParseError::Missing {
                    event: "mark",
                    field: "mark.name",
                })?
                .name,
        },
        "start" => {
            let body = envelope.start.ok_or(ParseError::Missing {
                event: "start",
                field: "start",
            })?;
            let invalid = |source| ParseError::Invalid {
                event: "start",
                source,
            };
            let call_sid = body.call_sid.ok_or(ParseError::Missing {
                event: "start",
                field: "start.callSid",
            })?;
            let call_sid = CallSid::parse(&call_sid).map_err(invalid)?;
            let stream_sid =
                body.stream_sid
                    .or(envelope.stream_sid)
                    .ok_or(ParseError::Missing {
                        event: "start",
                        field: "start.streamSid",
                    })?;
            let stream_sid = StreamSid::parse(&stream_sid).map_err(invalid)?;
            let custom_parameters = body
                .custom_parameters
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let value = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, value)
                })
                .collect();
            let (encoding, sample_rate_hz) = match body.media_format {
                Some(f) => (f.encoding, f.sample_rate),
                None => (None, None),
            };
            Inbound::Start(Start {
                stream_sid,
                call_sid,
                account_sid: body.account_sid.unwrap_or_default(),
                custom_parameters,
                encoding,
                sample_rate_hz,
            })
        }
        "dtmf" => Inbound::Dtmf {
            digit: envelope
                .dtmf
                .ok_or(ParseError::Missing {
                    event: "dtmf",
                    field: "dtmf.digit",
                })?
                .digit,
        },
        "connected" => Inbound::Connected,
        "stop" => Inbound::Stop,
        _ => Inbound::Unknown {
            event: envelope.event,
        },
    })
}

#[derive(Serialize)]
struct OutMedia<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    media: OutPayload<'a>,
}

#[derive(Serialize)]
struct OutPayload<'a> {
    payload: &'a str,
}

#[derive(Serialize)]
struct OutMark<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
    mark: OutMarkName<'a>,
}

#[derive(Serialize)]
struct OutMarkName<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct OutClear<'a> {
    event: &'static str,
    #[serde(rename = "streamSid")]
    stream_sid: &'a str,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs of strings cannot fail; an empty frame would be dropped by
    // Twilio as malformed, which is the safest fallback if it ever did.
    serde_json::to_string(value).unwrap_or_default()
}

/// `{"event":"media","streamSid":…,"media":{"payload":…}}`: audio for the caller (base64 mu-law,
/// any length; Twilio buffers it and plays it in order).
pub fn media(stream_sid: &str, payload_base64: &str) -> String {
    to_json(&OutMedia {
        event: "media",
        stream_sid,
        media: OutPayload {
            payload: payload_base64,
        },
    })
}

/// `{"event":"mark","streamSid":…,"mark":{"name":…}}`: Twilio echoes it when the audio sent
/// before it has played.
pub fn mark(stream_sid: &str, name: &str) -> String {
    to_json(&OutMark {
        event: "mark",
        stream_sid,
        mark: OutMarkName { name },
    })
}

/// `{"event":"clear","streamSid":…}`: drop all buffered audio; Twilio then echoes every pending
/// mark at once.
pub fn clear(stream_sid: &str) -> String {
    to_json(&OutClear {
        event: "clear",
        stream_sid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_base64_payloads_count_as_audio() {
        use base64::Engine as _;
        let good = base64::engine::general_purpose::STANDARD.encode([0xffu8; 160]);
        assert!(is_base64_audio(&good));
        assert!(is_base64_audio("AAE="));
        assert!(is_base64_audio("AA=="));
        for bad in ["", "AAE", "AA=A", "not base64!", "AA\n=", "===="] {
            assert!(!is_base64_audio(bad), "{bad:?}");
        }
    }

    const CAPTURE: &str = include_str!("../../tests/fixtures/twilio/media_stream_capture.jsonl");

    #[test]
    fn every_frame_of_a_real_capture_parses() {
        let parsed: Vec<_> = CAPTURE
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse(l).map(|m| format!("{m:?}")))
            .collect::<Result<_, _>>()
            .expect("capture parses");
        assert_eq!(parsed.len(), 5);
        let start = CAPTURE.lines().nth(1).map(parse);
        match start {
            Some(Ok(Inbound::Start(s))) => {
                assert_eq!(s.call_sid, "CA45397943c1c7a49f7b7713c230107a39");
                assert_eq!(s.stream_sid, "MZ5174584e1127285e2b015e720b3d9e68");
                assert_eq!(s.sample_rate_hz, Some(8000));
            }
            other => panic!("expected start, got {other:?}"),
        }
        match CAPTURE.lines().nth(2).map(parse) {
            Some(Ok(Inbound::Media {
                payload,
                timestamp_ms,
            })) => {
                assert_eq!(timestamp_ms, Some(155));
                assert_eq!(payload.len(), 216, "160 bytes of mu-law in base64");
                assert!(matches!(payload, Cow::Borrowed(_)), "payload is not copied");
            }
            other => panic!("expected media, got {other:?}"),
        }
    }

    #[test]
    fn start_without_custom_parameters_is_accepted() {
        let text = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;
        match parse(text) {
            Ok(Inbound::Start(s)) => assert!(s.custom_parameters.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn custom_parameters_and_unknown_fields_are_read_leniently() {
        let text = r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","customParameters":{"token":"abc","n":3},"future":true},"extra":1}"#;
        match parse(text) {
            Ok(Inbound::Start(s)) => {
                assert_eq!(
                    s.custom_parameters.get("token").map(String::as_str),
                    Some("abc")
                );
                assert_eq!(s.custom_parameters.get("n").map(String::as_str), Some("3"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for text in [
            "",
            "not json",
            "[]",
            r#"{"event":5}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":7}}"#,
            r#"{"event":"mark"}"#,
            r#"{"event":"start","start":{"streamSid":"MZ1"}}"#,
        ] {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn unknown_events_are_reported_as_unknown() {
        match parse(r#"{"event":"transcript","x":1}"#) {
            Ok(Inbound::Unknown { event }) => assert_eq!(event, "transcript"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outgoing_messages_have_twilio_shapes() {
        assert_eq!(
            media("MZ1", "AAAA"),
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}"#
        );
        assert_eq!(
            mark("MZ1", "m\"1"),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m\"1"}}"#
        );
        assert_eq!(clear("MZ1"), r#"{"event":"clear","streamSid":"MZ1"}"#);
    }
}
