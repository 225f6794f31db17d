//! End-to-end calls over real loopback sockets: the simulated Twilio places calls through the
//! proxy to the simulated Realtime upstream, on real speech (the repository's `jfk.wav`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use voxrelay::domain::{BusinessId, CallSid};
use voxrelay::twilio::token::{self, CallToken};
use voxrelay_sim::caller::{self, CallerConfig, CallerEvent};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::SimUpstreamConfig;
use voxrelay_sim::world::{SIM_SIGNING_KEY, World, WorldOptions};

const DENTAL: &str = "Bright Smile Dental cleans teeth. Opening hours are eight to six.";
const BAKERY: &str = "Corner Bakery sells sourdough bread. Orders close at noon.";

fn jfk(seconds: f32) -> Vec<u8> {
    jfk_speech(Some(seconds)).expect("jfk.wav reads")
}

async fn world_with(upstream: SimUpstreamConfig, interrupt_response: bool) -> World {
    let world = World::start(WorldOptions {
        upstream,
        database_url: None,
        configure: Some(Box::new(move |c| {
            c.vad.interrupt_response = interrupt_response
        })),
        twilio_validator: None,
    })
    .await
    .expect("world starts");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            DENTAL,
            "Say hello.",
            "+15005550006",
        )
        .await
        .expect("dental");
    world
        .add_business("bakery", "Corner Bakery", BAKERY, "Say hi.", "+15005550007")
        .await
        .expect("bakery");
    world
}

/// A short call: 800 ms of greeting, then the caller speaks over it.
fn short_call(world: &World, call_sid: &str, to: &str) -> CallerConfig {
    let mut c = world.caller(call_sid, to, jfk(2.0));
    c.lead_silence_ms = 800;
    c.tail_silence_ms = 700;
    c
}

fn sid(n: u32) -> String {
    format!("CA{n:032x}")
}

#[tokio::test]
async fn a_full_call_greets_and_upgrades_to_the_full_prompt_once() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let caller = short_call(&world, &sid(1), "+15005550006");
    let (heard, proxy) = world.call(caller).await.expect("call runs");
    let proxy = proxy.expect("proxy reported the call");

    assert!(
        heard.first_audio_ms().is_some(),
        "the caller heard the greeting"
    );
    assert!(proxy.greeting_latency_ms.is_some());
    assert_eq!(proxy.end_reason, voxrelay::domain::EndReason::Stop);

    let sessions = world.upstream.sessions();
    assert_eq!(sessions.len(), 1, "one upstream session for one call");
    let updates = sessions[0].events_of_type("session.update");
    let instructions: Vec<&str> = updates
        .iter()
        .filter_map(|u| u["session"]["instructions"].as_str())
        .collect();
    assert_eq!(
        instructions.len(),
        2,
        "COMPACT at pre-warm, then FULL: {updates:?}"
    );
    let (compact, full) = (instructions[0], instructions[1]);
    assert!(compact.contains("⟦BUSINESS:dental⟧"));
    assert!(full.contains("⟦BUSINESS:dental⟧") && full.contains("⟦/BUSINESS:dental⟧"));
    assert!(full.contains("## Interruptions") && !compact.contains("## Interruptions"));
    assert!(full.contains(DENTAL));
    assert_eq!(
        updates[0]["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    let creates = sessions[0].events_of_type("response.create");
    assert!(!creates.is_empty(), "the greeting was asked for");

    let record = world
        .store
        .call(&sid(1))
        .await
        .expect("store")
        .expect("call recorded");
    assert_eq!(record.business_id, "dental");
    assert_eq!(record.end_reason.as_deref(), Some("stop"));
    assert!(record.greeting_latency_ms.is_some());
    world.stop().await;
}

#[tokio::test]
async fn caller_interrupting_clears_twilio_and_truncates_to_what_was_heard() {
    // The model generates faster than real time: the greeting's response is done before the
    // caller speaks, so no cancel may be sent even with interrupt_response off.
    let upstream = SimUpstreamConfig {
        realtime_pace: false,
        ..SimUpstreamConfig::default()
    };
    let mut world = world_with(upstream, false).await;
    let caller = short_call(&world, &sid(2), "+15005550006");
    let (heard, proxy) = world.call(caller).await.expect("call runs");
    let proxy = proxy.expect("report");

    let clears = heard.clears();
    assert!(!clears.is_empty(), "Twilio got a clear");
    let session = &world.upstream.sessions()[0];
    let truncation = session
        .truncations
        .first()
        .expect("a truncate reached upstream");
    let heard_ms = clears[0].1 as i64;
    let truncated_ms = truncation.audio_end_ms as i64;
    assert!(
        (truncated_ms - heard_ms).abs() <= 40,
        "truncate at {truncated_ms} ms, caller heard {heard_ms} ms"
    );
    assert!(
        heard_ms > 300,
        "the greeting played a while first: {heard_ms}"
    );
    assert!(
        session.events_of_type("response.cancel").is_empty(),
        "no response was active: no cancel"
    );
    assert!(proxy.counters.barge_ins >= 1);
    world.stop().await;
}

#[tokio::test]
async fn an_active_response_is_cancelled_when_the_server_will_not_cancel_it() {
    let mut world = world_with(SimUpstreamConfig::default(), false).await;
    let caller = short_call(&world, &sid(3), "+15005550006");
    let (heard, _proxy) = world.call(caller).await.expect("call runs");
    assert!(!heard.clears().is_empty());
    let session = &world.upstream.sessions()[0];
    assert!(
        !session.events_of_type("response.cancel").is_empty(),
        "the greeting was still being generated: cancel it"
    );
    world.stop().await;
}

#[tokio::test]
async fn marks_returned_by_a_clear_do_not_count_as_played() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let caller = short_call(&world, &sid(4), "+15005550006");
    let (heard, proxy) = world.call(caller).await.expect("call runs");
    let proxy = proxy.expect("report");
    let returned: usize = heard
        .events
        .iter()
        .map(|(_, e)| match e {
            CallerEvent::Clear { marks_returned, .. } => *marks_returned,
            _ => 0,
        })
        .sum();
    assert!(heard.marks_echoed > 0);
    assert_eq!(
        proxy.counters.marks_acked as usize,
        heard.marks_echoed - returned,
        "only marks echoed after their audio played count ({returned} came back with a clear)"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_signature_gets_403_and_nothing_else() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let mut caller = short_call(&world, &sid(5), "+15005550006");
    caller.auth_token = "not-the-token".into();
    let (report, proxy) = world.call(caller).await.expect("request runs");
    assert_eq!(report.webhook_status, 403);
    assert!(!report.streamed && proxy.is_none());

    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/twilio/voice", world.proxy_addr))
        .form(&[("CallSid", sid(6)), ("To", "+15005550006".to_string())])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 403);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        world.upstream.connections(),
        0,
        "no upstream cost was spent"
    );
    world.stop().await;
}

#[tokio::test]
async fn an_unknown_number_gets_a_spoken_sorry_not_an_error() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let caller = short_call(&world, &sid(7), "+15005559999");
    let (report, _) = world.call(caller).await.expect("request runs");
    assert_eq!(report.webhook_status, 200);
    assert!(!report.streamed);
    assert!(report.twiml.contains("<Say>") && report.twiml.contains("<Hangup/>"));
    assert!(report.twiml.contains("not in service"), "{}", report.twiml);
    assert_eq!(world.upstream.connections(), 0);
    world.stop().await;
}

/// Opens the media WebSocket directly and sends `start` with `custom` parameters; returns the
/// close code the proxy answered with.
async fn stream_with(world: &World, call_sid: &str, custom: Value) -> Option<u16> {
    let url = format!("ws://{}/twilio/media", world.proxy_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connects");
    let start = json!({"event":"start","sequenceNumber":"1","streamSid":"MZ1",
        "start":{"streamSid":"MZ1","callSid":call_sid,"accountSid":"AC1","tracks":["inbound"],
                 "customParameters":custom,
                 "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}});
    ws.send(Message::Text(
        json!({"event":"connected","protocol":"Call","version":"1.0.0"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    ws.send(Message::Text(start.to_string().into()))
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_media_stream_without_a_valid_token_is_closed_before_any_upstream_cost() {
    let world = world_with(SimUpstreamConfig::default(), true).await;
    let call = sid(8);
    // No token, a forged one, an expired one, and one for another call.
    let expired = token::sign(
        SIM_SIGNING_KEY.as_bytes(),
        &CallToken {
            call_sid: CallSid::parse(&call).expect("CallSid"),
            business_id: BusinessId::parse("dental").expect("business id"),
            direction: voxrelay::domain::Direction::Inbound,
            expires_at_ms: 1,
            caller: String::new(),
            prompt_version_id: None,
            experiment: None,
        },
    );
    let other_call = token::sign(
        SIM_SIGNING_KEY.as_bytes(),
        &CallToken {
            call_sid: CallSid::parse(&sid(99)).expect("CallSid"),
            business_id: BusinessId::parse("dental").expect("business id"),
            direction: voxrelay::domain::Direction::Inbound,
            expires_at_ms: i64::MAX,
            caller: String::new(),
            prompt_version_id: None,
            experiment: None,
        },
    );
    let forged = token::sign(
        b"some-other-key-0123456789",
        &CallToken {
            call_sid: CallSid::parse(&call).expect("CallSid"),
            business_id: BusinessId::parse("dental").expect("business id"),
            direction: voxrelay::domain::Direction::Inbound,
            expires_at_ms: i64::MAX,
            caller: String::new(),
            prompt_version_id: None,
            experiment: None,
        },
    );
    for custom in [
        json!({}),
        json!({"token": "garbage"}),
        json!({"token": forged}),
        json!({"token": expired}),
        json!({"token": other_call}),
    ] {
        let code = stream_with(&world, &call, custom.clone()).await;
        assert_eq!(code, Some(1008), "policy close for {custom}");
    }
    assert_eq!(
        world.upstream.connections(),
        0,
        "the upstream saw no connection"
    );
    world.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_twilio_frames_are_skipped_and_the_call_goes_on() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let mut caller = short_call(&world, &sid(9), "+15005550006");
    caller.inject = vec![
        (5, "this is not json".into()),
        (6, r#"{"event":"media"}"#.into()),
        (7, r#"{"event":"media","media":{"payload":42}}"#.into()),
        (8, r#"{"event":"a_future_event","x":{"y":1}}"#.into()),
        (9, r#"{"no_event":true}"#.into()),
    ];
    let (heard, proxy) = world.call(caller).await.expect("call runs");
    let proxy = proxy.expect("report");
    assert_eq!(proxy.counters.malformed_twilio, 4, "{:?}", proxy.counters);
    assert_eq!(proxy.end_reason, voxrelay::domain::EndReason::Stop);
    assert!(heard.first_audio_ms().is_some());
    assert_eq!(
        proxy.counters.frames_in as usize, heard.frames_sent,
        "every real media frame was relayed"
    );
    world.stop().await;
}

#[tokio::test]
async fn two_concurrent_calls_each_see_only_their_own_business_upstream() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let dental = short_call(&world, &sid(10), "+15005550006");
    let bakery = short_call(&world, &sid(11), "+15005550007");
    let (a, b) = tokio::join!(caller::run(dental), caller::run(bakery));
    assert!(a.expect("dental call").streamed && b.expect("bakery call").streamed);
    let first = world.report_for(&sid(10), Duration::from_secs(10)).await;
    let sessions = world.upstream.sessions();
    assert!(first.is_some());
    assert_eq!(sessions.len(), 2);
    let mut seen = Vec::new();
    for session in &sessions {
        let text: String = session
            .events_of_type("session.update")
            .iter()
            .filter_map(|u| u["session"]["instructions"].as_str().map(str::to_string))
            .collect();
        let dental = text.contains("Bright Smile") || text.contains("BUSINESS:dental");
        let bakery = text.contains("Corner Bakery") || text.contains("BUSINESS:bakery");
        assert!(dental != bakery, "one business per session, never both");
        seen.push(if dental { "dental" } else { "bakery" });
    }
    seen.sort();
    assert_eq!(seen, vec!["bakery", "dental"]);
    world.stop().await;
}

#[tokio::test]
async fn an_outbound_call_resolves_its_business_from_signed_parameters() {
    let mut world = world_with(SimUpstreamConfig::default(), true).await;
    let query = token::sign_outbound(SIM_SIGNING_KEY.as_bytes(), "bakery", i64::MAX);
    let mut caller = short_call(&world, &sid(12), "+14155550123");
    caller.direction = "outbound-api".into();
    caller.webhook_url = format!("{}?{query}", caller.webhook_url);
    caller.signed_url = caller.webhook_url.clone();
    // The bakery has an inbound text only: it takes no outbound call (the inbound text is
    // never used for one), and Twilio hears the apology.
    let (refused, _) = world.call(caller.clone()).await.expect("request runs");
    assert!(
        !refused.streamed && refused.twiml.contains("<Hangup/>"),
        "{}",
        refused.twiml
    );
    assert_eq!(world.upstream.connections(), 0, "no upstream cost");

    world
        .store
        .update_business(
            "bakery",
            &voxrelay::store::BusinessUpdate {
                outbound_ai_prompt: Some("Corner Bakery calls to confirm bread orders.".into()),
                ..Default::default()
            },
        )
        .await
        .expect("outbound text");
    caller.call_sid = sid(15);
    let (heard, proxy) = world.call(caller.clone()).await.expect("call runs");
    assert!(heard.streamed, "{}", heard.twiml);
    assert_eq!(proxy.expect("report").business_id, "bakery");
    let full = world.upstream.sessions()[0].events_of_type("session.update");
    let instructions = full[0]["session"]["instructions"].as_str().unwrap_or("");
    assert!(
        instructions.contains("You are calling"),
        "outbound direction layer"
    );
    assert!(
        instructions.contains("confirm bread orders"),
        "{instructions}"
    );
    assert!(
        !instructions.contains("sells sourdough"),
        "the inbound text never reaches an outbound call"
    );

    // The same parameters signed with another key are not trusted.
    let forged = token::sign_outbound(b"another-key-0123456789abcdef", "bakery", i64::MAX);
    caller.call_sid = sid(13);
    caller.webhook_url = format!("http://{}/twilio/voice?{forged}", world.proxy_addr);
    caller.signed_url = caller.webhook_url.clone();
    let (report, _) = world.call(caller).await.expect("request runs");
    assert!(!report.streamed && report.twiml.contains("<Hangup/>"));
    world.stop().await;
}

#[tokio::test]
async fn a_stream_reaching_an_instance_without_the_pending_call_is_rebuilt_from_the_database() {
    let mut first = world_with(SimUpstreamConfig::default(), true).await;
    let second = World::start(WorldOptions {
        database_url: Some(first.config.database.url.clone()),
        ..WorldOptions::default()
    })
    .await
    .expect("second instance");
    let mut caller = short_call(&first, &sid(14), "+15005550006");
    caller.stream_url_override = Some(format!("ws://{}/twilio/media", second.proxy_addr));
    let (heard, _) = first.call(caller).await.expect("call runs");
    assert!(
        heard.first_audio_ms().is_some(),
        "the second instance served the call"
    );
    let sessions = second.upstream.sessions();
    assert_eq!(sessions.len(), 1);
    let update = &sessions[0].events_of_type("session.update")[0];
    assert!(
        update["session"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("⟦BUSINESS:dental⟧"))
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_webhook_with_an_unsafe_call_sid_or_party_is_refused_before_any_cost() {
    let world = world_with(SimUpstreamConfig::default(), true).await;
    let client = reqwest::Client::new();
    let huge = format!("CA{}", "0".repeat(100_000));
    let cases: [(&str, String, &str); 4] = [
        ("CallSid", huge, "CallSid"),
        ("CallSid", "CA1\nINFO forged log line".into(), "CallSid"),
        ("From", "+15550100\0".into(), "From"),
        ("To", "+1".repeat(200), "To"),
    ];
    for (field, value, named) in cases {
        let mut caller = world.caller(&sid(70), "+15005550006", Vec::new());
        match field {
            "CallSid" => caller.call_sid = value.clone(),
            "From" => caller.from = value.clone(),
            _ => caller.to = value.clone(),
        }
        let answered = caller::answer(&caller, &client).await.expect("answered");
        assert_eq!(answered.status, 400, "{field}: {}", answered.twiml);
        assert!(answered.twiml.contains(named), "{}", answered.twiml);
        assert!(
            answered.twiml.len() < 300,
            "the answer does not echo the value"
        );
        assert!(answered.stream.is_none());
    }
    assert!(
        world.upstream.sessions().is_empty(),
        "no upstream was dialled"
    );
    world.stop().await;
}

#[tokio::test]
async fn concurrent_calls_to_several_businesses_each_carry_only_their_own_business() {
    let upstream = SimUpstreamConfig {
        check_isolation: true,
        ..SimUpstreamConfig::default()
    };
    let world = World::start(WorldOptions {
        upstream,
        database_url: None,
        configure: None,
        twilio_validator: None,
    })
    .await
    .expect("world starts");
    let businesses = 3;
    voxrelay_sim::isolation::seed(&world.store, businesses, DENTAL)
        .await
        .expect("isolation businesses");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2 * businesses {
        let business = i % businesses;
        let mut caller = world.caller(
            &sid(900 + i as u32),
            &voxrelay_sim::isolation::number(business),
            jfk(1.0),
        );
        caller.from = voxrelay_sim::isolation::caller(business, i / businesses);
        caller.lead_silence_ms = 1500;
        calls.spawn(caller::run(caller));
    }
    while let Some(call) = calls.join_next().await {
        let heard = call.expect("task").expect("call runs");
        assert!(heard.media_received > 0, "greeted");
    }
    let isolation = world.upstream.isolation();
    assert_eq!(isolation.leaks, 0, "{isolation:?}");
    assert_eq!(isolation.unmarked, 0, "{isolation:?}");
    // COMPACT at the pre-warm and FULL at the upgrade, for every call.
    assert!(
        isolation.checked >= 2 * 2 * businesses as u64,
        "{isolation:?}"
    );
    world.stop().await;
}
