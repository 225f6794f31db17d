//! No PII in the logs: a full call through the proxy, with debug logging of every voxrelay
//! module captured, whose caller number, called number, keypad digits, transcript (a card
//! number and a phone number said aloud) and tool arguments (a card number given to a payment
//! tool) must appear nowhere in clear, in the logs nor in the call's stored tool calls and
//! events; plus a call to a number no business owns, whose warning shows the number masked to
//! its last 4 digits.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::SimUpstreamConfig;
use voxrelay_sim::world::{World, WorldOptions};

/// Log lines, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const CALLER: &str = "+14155550123";
const CALLED: &str = "+15005550006";
const UNROUTED: &str = "+15005550987";
/// Typed on the keypad: a test card number of another brand than the one said.
const TYPED: &str = "5454545454545454";
const SAID: &str = "my card is 4111 1111 1111 1111 and call me back on 415 555 0199";
/// Given by the model to a payment tool: the endpoint needs it, the records must not hold it.
const PAID_WITH: &str = "4242424242424242";

#[tokio::test]
async fn a_full_call_logs_no_number_digit_or_transcript_in_clear() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "voxrelay=debug,voxrelay_sim=off,tower_http=debug",
        ))
        .with_writer(logs.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let mut world = World::start(WorldOptions {
        upstream: SimUpstreamConfig {
            transcripts: vec![SAID.into()],
            // Short answers, so they finish (and call the tool) within the call.
            clip: voxrelay_sim::upstream::default_clip()
                .expect("clip")
                .first_ms(800, "One moment."),
            tool_calls: (1..=3)
                .map(|response| voxrelay_sim::upstream::ScriptedToolCall {
                    response,
                    name: "take_payment".into(),
                    arguments: format!(r#"{{"card":"{PAID_WITH}","phone":"+14155550123"}}"#),
                    connection: None,
                })
                .collect(),
            ..SimUpstreamConfig::default()
        },
        ..WorldOptions::default()
    })
    .await
    .expect("world");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "We clean teeth.",
            "Hello.",
            CALLED,
        )
        .await
        .expect("business");
    let endpoint = voxrelay_sim::tool_endpoint::SimToolEndpoint::start(
        voxrelay_sim::world::SIM_TOOL_SECRET,
        [(
            "take_payment".to_string(),
            voxrelay_sim::tool_endpoint::Behaviour::ok(r#"{"paid":true}"#, 0),
        )]
        .into(),
    )
    .await
    .expect("tool endpoint");
    voxrelay::ops::tools::set(
        &world.store,
        "dental",
        voxrelay::store::BusinessTool {
            name: "take_payment".into(),
            kind: voxrelay::domain::ToolKind::Function,
            description: "Take a card payment.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"card": {"type": "string"}, "phone": {"type": "string"}}}),
            endpoint: endpoint.url("take_payment"),
            timeout_ms: 2000,
            secret_env: voxrelay_sim::world::SIM_TOOL_SECRET_ENV.into(),
            allowed_tools: Vec::new(),
            updated_at_ms: 0,
        },
    )
    .await
    .expect("tool");

    let call_sid = format!("CA{:032x}", 0x9111u32);
    let mut caller = world.caller(&call_sid, CALLED, jfk_speech(Some(2.0)).expect("speech"));
    caller.from = CALLER.into();
    caller.lead_silence_ms = 600;
    caller.tail_silence_ms = 3000;
    let stream_sid = format!("MZ{}", call_sid.trim_start_matches("CA"));
    // A card number typed on the keypad, one key per 20 ms frame, then the finish key.
    let typed: Vec<String> = TYPED
        .chars()
        .map(String::from)
        .chain(["#".to_string()])
        .collect();
    for (i, digit) in typed.iter().enumerate() {
        let frame = 20 + i;
        caller.inject.push((
            frame,
            format!(
                r#"{{"event":"dtmf","streamSid":"{stream_sid}","sequenceNumber":"{frame}","dtmf":{{"track":"inbound_track","digit":"{digit}"}}}}"#
            ),
        ));
    }
    let (heard, report) = world.call(caller).await.expect("call runs");
    assert!(heard.streamed, "{}", heard.twiml);
    let report = report.expect("report");
    assert!(report.counters.turns >= 1, "the caller's turn was heard");
    // The entry went to the model, whole, as the caller's text, and was answered; the timeline
    // kept only its length.
    let session = &world.upstream.sessions()[0];
    let types = session.event_types();
    let entry_at = session
        .events
        .iter()
        .position(|e| e.contains("conversation.item.create") && e.contains(TYPED))
        .expect("the keypad entry reached the model");
    assert!(
        types[entry_at + 1..].iter().any(|t| t == "response.create"),
        "and was answered: {types:?}"
    );
    assert!(
        report.timeline.entries().iter().any(|(_, e)| matches!(
            e,
            voxrelay::telemetry::timeline::TimelineEvent::KeypadEntry { keys: 16 }
        )),
        "{:?}",
        report.timeline.entries()
    );
    assert!(
        !format!("{:?}", report.timeline.entries()).contains(TYPED),
        "no digits in the timeline"
    );

    // The tool got the card (the business needs it); what was stored of the call did not.
    assert_eq!(
        endpoint.requests()[0].body["arguments"]["card"],
        PAID_WITH,
        "the payment tool was called with the card"
    );
    let mut stored = String::new();
    for _ in 0..100 {
        let tools = world.store.tool_calls(&call_sid).await.expect("tool calls");
        if !tools.is_empty() {
            // The call's own row keeps its numbers (that is what it records); its tool calls
            // and events keep nothing of what was said, typed or given to a tool.
            stored = format!(
                "{:?} {:?}",
                tools,
                world.store.call_events(&call_sid).await.expect("events"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stored.contains("take_payment"),
        "the tool call was stored: {stored}"
    );
    for secret in [
        PAID_WITH,
        TYPED,
        "4155550123",
        "4111111111111111",
        "4111 1111",
    ] {
        assert!(!stored.contains(secret), "{secret:?} is stored: {stored}");
    }

    // A number no business owns.
    let unrouted = world.caller(&format!("CA{:032x}", 0x9112u32), UNROUTED, Vec::new());
    let answered = voxrelay_sim::caller::answer(&unrouted, &reqwest::Client::new())
        .await
        .expect("answered");
    assert!(answered.stream.is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.stop().await;

    let text = String::from_utf8_lossy(
        &logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(text.contains("call ended"), "the call was logged:\n{text}");
    assert!(
        text.contains("keypad entry to the model") && text.contains("••••••••••••••••"),
        "the keypad entry was logged, masked:\n{text}"
    );
    for secret in [
        "4155550123",
        "5005550006",
        "5005550987",
        "4111 1111",
        "4111111111111111",
        TYPED,
        PAID_WITH,
        "5454",
        "555 0199",
        "my card",
        "digit=",
        "digit: ",
    ] {
        assert!(!text.contains(secret), "{secret:?} is in the logs:\n{text}");
    }
    assert!(
        text.contains("*******0987"),
        "the unknown number's warning shows it masked:\n{text}"
    );
}
