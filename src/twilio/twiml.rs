//! TwiML answers to voice webhooks.
//!
//! The layout follows what Twilio's official Python library (`twilio` 9.13.0, `VoiceResponse`)
//! produces: an XML declaration, no whitespace between elements, attribute values in double
//! quotes. [`connect_stream`] output is byte-for-byte the library's for values without `'`
//! (escaped here as `&apos;`). Element and attribute names are case-sensitive camelCase.
//!
//! Sources: <https://www.twilio.com/docs/voice/twiml/stream>,
//! <https://www.twilio.com/docs/voice/twiml/connect>,
//! <https://www.twilio.com/docs/voice/twiml/say>,
//! <https://www.twilio.com/docs/voice/twiml/hangup>; project notes `shared/protocol/twilio.md` §2.

/// The `Content-Type` to send TwiML with
/// (<https://www.twilio.com/docs/voice/twiml#twilios-request-to-your-application>).
pub const CONTENT_TYPE: &str = "text/xml";

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// TwiML that connects the call to a bidirectional Media Stream.
///
/// - `stream_url`: the absolute `wss://` URL of our Media Streams endpoint. `wss` is the only
///   scheme Twilio accepts, and the URL must not carry a query string (pass values as
///   parameters instead).
/// - `parameters`: `(name, value)` pairs sent as `<Parameter>` elements, in order; Twilio hands
///   them back in the WebSocket `start` message as `customParameters`. Each name plus value must
///   be under 500 characters in total (Twilio's limit; not checked here).
///
/// Returns, for example (one line):
/// `<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://h/media">`
/// `<Parameter name="token" value="…" /></Stream></Connect></Response>`; with no parameters the
/// stream is `<Stream url="…" />`. Attribute values are XML-escaped (see [`say_and_hangup`] for
/// the rules). When the server closes the WebSocket, `<Connect>` ends and, with no further verb,
/// so does the call.
///
/// Source: <https://www.twilio.com/docs/voice/twiml/stream> (attributes, `<Parameter>`, limits).
pub fn connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(160 + parameters.len() * 64);
    out.push_str(XML_DECLARATION);
    out.push_str("<Response><Connect><Stream url=\"");
    push_escaped(&mut out, stream_url, true);
    if parameters.is_empty() {
        out.push_str("\" />");
    } else {
        out.push_str("\">");
        for (name, value) in parameters {
            out.push_str("<Parameter name=\"");
            push_escaped(&mut out, name, true);
            out.push_str("\" value=\"");
            push_escaped(&mut out, value, true);
            out.push_str("\" />");
        }
        out.push_str("</Stream>");
    }
    out.push_str("</Connect></Response>");
    out
}

/// TwiML that refuses a call with a busy signal, without answering it (no charge for an
/// inbound call): `<?xml …?><Response><Reject reason="busy"/></Response>`. Used when a call
/// limit is reached. Source: <https://www.twilio.com/docs/voice/twiml/reject> (`reason`:
/// `rejected` or `busy`; the first verb of the document, so Twilio never picks up).
pub fn reject_busy() -> String {
    format!("{XML_DECLARATION}<Response><Reject reason=\"busy\"/></Response>")
}

/// TwiML that reads `text` to the caller and hangs up, for example
/// "Sorry, this number is not in service."
///
/// Returns `<?xml version="1.0" encoding="UTF-8"?><Response><Say>TEXT</Say><Hangup/></Response>`,
/// spoken in Twilio's default voice and language.
///
/// Escaping (here and in [`connect_stream`]): `&` `<` `>` `"` `'` become `&amp;` `&lt;` `&gt;`
/// `&quot;` `&apos;`; in attribute values tab, newline and carriage return become character
/// references so they survive attribute normalisation; other control characters, which XML 1.0
/// cannot represent, are dropped.
///
/// Sources: <https://www.twilio.com/docs/voice/twiml/say>,
/// <https://www.twilio.com/docs/voice/twiml/hangup>.
pub fn say_and_hangup(text: &str) -> String {
    let mut out = String::with_capacity(96 + text.len());
    out.push_str(XML_DECLARATION);
    out.push_str("<Response><Say>");
    push_escaped(&mut out, text, false);
    out.push_str("</Say><Hangup/></Response>");
    out
}

/// TwiML that reads `text` in `language` (a Twilio `<Say>` language such as `en-US`) and
/// hangs up: `<?xml …?><Response><Say language="LANG">TEXT</Say><Hangup/></Response>`.
/// Escaping as in [`say_and_hangup`]. Source: <https://www.twilio.com/docs/voice/twiml/say>
/// (`language`).
pub fn say_in_and_hangup(text: &str, language: &str) -> String {
    let mut out = String::with_capacity(120 + text.len());
    out.push_str(XML_DECLARATION);
    out.push_str("<Response>");
    push_say(&mut out, text, language);
    out.push_str("<Hangup/></Response>");
    out
}

/// TwiML that reads `text` in `language`, then puts the call through to `number` (E.164):
/// `<?xml …?><Response><Say language="LANG">TEXT</Say><Dial>NUMBER</Dial></Response>`. The
/// dialled side sees the caller's own number (Twilio's default caller ID for a `<Dial>` on an
/// inbound call). Sources: <https://www.twilio.com/docs/voice/twiml/dial>,
/// <https://www.twilio.com/docs/voice/twiml/say>.
pub fn say_in_and_dial(text: &str, language: &str, number: &str) -> String {
    let mut out = String::with_capacity(140 + text.len());
    out.push_str(XML_DECLARATION);
    out.push_str("<Response>");
    push_say(&mut out, text, language);
    out.push_str("<Dial>");
    push_escaped(&mut out, number, false);
    out.push_str("</Dial></Response>");
    out
}

/// TwiML that puts the call through to `number` (E.164) and reports how the dial ended to
/// `action`: `<?xml …?><Response><Dial action="ACTION" method="POST" timeout="SECONDS"
/// callerId="CALLER"><Number>NUMBER</Number></Dial></Response>` (`callerId` left out when
/// `caller_id` is `None`: Twilio then shows the call's own caller ID). Twilio POSTs
/// `DialCallStatus` (`completed`, `answered`, `busy`, `no-answer`, `failed`, `canceled`),
/// `DialCallSid` and `DialCallDuration` to `action` when the dial ends, and runs the TwiML it
/// answers. Escaping as in [`say_and_hangup`]. Source:
/// <https://www.twilio.com/docs/voice/twiml/dial> (`action`, `method`, `timeout`,
/// `callerId`, `<Number>`).
pub fn dial_with_action(
    number: &str,
    action: &str,
    timeout_s: u32,
    caller_id: Option<&str>,
) -> String {
    let mut out = String::with_capacity(200 + action.len());
    out.push_str(XML_DECLARATION);
    out.push_str("<Response><Dial action=\"");
    push_escaped(&mut out, action, true);
    out.push_str("\" method=\"POST\" timeout=\"");
    out.push_str(&timeout_s.to_string());
    out.push('"');
    if let Some(caller_id) = caller_id {
        out.push_str(" callerId=\"");
        push_escaped(&mut out, caller_id, true);
        out.push('"');
    }
    out.push_str("><Number>");
    push_escaped(&mut out, number, false);
    out.push_str("</Number></Dial></Response>");
    out
}

/// TwiML that ends the call: `<?xml …?><Response><Hangup/></Response>`. Source:
/// <https://www.twilio.com/docs/voice/twiml/hangup>.
pub fn hangup() -> String {
    format!("{XML_DECLARATION}<Response><Hangup/></Response>")
}

fn push_say(out: &mut String, text: &str, language: &str) {
    out.push_str("<Say language=\"");
    push_escaped(out, language, true);
    out.push_str("\">");
    push_escaped(out, text, false);
    out.push_str("</Say>");
}

/// Appends `text` XML-escaped; `attribute` also protects whitespace that attribute-value
/// normalisation would turn into spaces.
fn push_escaped(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' | '\n' | '\r' => out.push(c),
            // Not allowed anywhere in an XML 1.0 document, not even as a character reference.
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_stream_exact_output() {
        assert_eq!(
            connect_stream(
                "wss://relay.example.com/media",
                &[("token", "abc.def"), ("lang", "en")]
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
             <Stream url=\"wss://relay.example.com/media\">\
             <Parameter name=\"token\" value=\"abc.def\" />\
             <Parameter name=\"lang\" value=\"en\" />\
             </Stream></Connect></Response>"
        );
    }

    #[test]
    fn connect_stream_without_parameters() {
        assert_eq!(
            connect_stream("wss://example.com/media", &[]),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
             <Stream url=\"wss://example.com/media\" /></Connect></Response>"
        );
    }

    #[test]
    fn connect_stream_escapes_attributes() {
        // twilio.md §2 sample value `abc&<"x`, plus `'` and `>`.
        let xml = connect_stream("wss://e.com/m?a=1&b=2", &[("to&ken", "abc&<\"x'>")]);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
             <Stream url=\"wss://e.com/m?a=1&amp;b=2\">\
             <Parameter name=\"to&amp;ken\" value=\"abc&amp;&lt;&quot;x&apos;&gt;\" />\
             </Stream></Connect></Response>"
        );
    }

    #[test]
    fn attribute_whitespace_and_controls() {
        let xml = connect_stream("wss://e.com/m", &[("k", "a\tb\nc\rd\u{0}e\u{1b}f")]);
        assert!(xml.contains("value=\"a&#9;b&#10;c&#13;def\""), "{xml}");
    }

    #[test]
    fn dial_with_action_exact_output_and_escaping() {
        assert_eq!(
            dial_with_action(
                "+15005550006",
                "https://h.example/twilio/dial-status/i1?target=front+desk&token=a.b",
                20,
                Some("+14155550100"),
            ),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Dial \
             action=\"https://h.example/twilio/dial-status/i1?target=front+desk&amp;token=a.b\" \
             method=\"POST\" timeout=\"20\" callerId=\"+14155550100\"><Number>+15005550006</Number>\
             </Dial></Response>"
        );
        assert!(!dial_with_action("+15005550006", "https://h/a", 20, None).contains("callerId"));
        assert_eq!(
            hangup(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>"
        );
    }

    #[test]
    fn say_and_hangup_exact_output_and_escaping() {
        assert_eq!(
            say_and_hangup("Sorry, this number is not in service."),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say>Sorry, this number is not in service.</Say><Hangup/></Response>"
        );
        assert_eq!(
            say_and_hangup("Tom & Jerry's <\"shop\">\nbye"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say>Tom &amp; Jerry&apos;s &lt;&quot;shop&quot;&gt;\nbye</Say><Hangup/></Response>"
        );
    }

    #[test]
    fn the_fallback_documents_say_in_the_language_then_dial_or_hang_up() {
        assert_eq!(
            say_in_and_dial("Un momento & gracias", "es-ES", "+15551234567"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"es-ES\">\
             Un momento &amp; gracias</Say><Dial>+15551234567</Dial></Response>"
        );
        assert_eq!(
            say_in_and_hangup("Au revoir", "fr-FR"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"fr-FR\">\
             Au revoir</Say><Hangup/></Response>"
        );
    }
}
