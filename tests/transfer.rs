//! `transfer_call` end to end over loopback on real speech (`jfk.wav`): the simulated model
//! says a handoff line and calls it; the proxy waits for the line to play, redirects the live
//! call through the (simulated) Twilio REST API to `<Dial action>`, and the simulated Twilio
//! rings the target and POSTs the outcome to the action URL. When Prism is installed
//! (`VOXRELAY_PRISM`), every REST request is first validated against Twilio's own OpenAPI
//! description, and one Prism refuses fails the test.
//!
//! | what | test |
//! |---|---|
//! | handoff line played, then `<Dial>` with the caller ID; answered: the call ends | [`a_transfer_waits_for_the_handoff_line_then_dials_the_target_and_ends_when_answered`] |
//! | nobody answers: the caller is back, conversation restored, outcome told | [`a_transfer_nobody_answers_brings_the_caller_back_with_the_conversation_restored`] |
//! | Twilio refuses the redirect: the model is told and the call goes on | [`a_transfer_twilio_refuses_is_told_to_the_model_and_the_call_goes_on`] |
//! | the action callback with a bad signature | [`a_dial_action_with_a_bad_signature_gets_403_and_records_nothing`] |
//! | `voxrelay demo --scenario transfer` | [`the_transfer_demo_brings_the_caller_back_and_takes_a_message`] |

use std::time::Duration;

use serde_json::{Value, json};

use voxrelay::domain::{EndReason, TransferOutcome};
use voxrelay::store::{BusinessUpdate, TransferTarget};
use voxrelay::telemetry::timeline::{CallReport, TimelineEvent};
use voxrelay_sim::caller::{self, CallerReport, DialAnswer};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::prism::Prism;
use voxrelay_sim::upstream::{ScriptedToolCall, SessionLog, SimUpstreamConfig, default_clip};
use voxrelay_sim::world::{SIM_ADMIN_TOKEN, SIM_TWILIO_AUTH_TOKEN, World, WorldOptions};

mod common;
use common::{dental_world_from, metrics};

/// The front desk's number.
const FRONT_DESK: &str = "+15005550199";
/// The simulated caller's number (`World::caller`).
const CALLER: &str = "+14155550100";

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0x7201_0000u32 + n)
}

/// A world whose model says 1.5 s of audio per response (as fast as the socket takes it: the
/// proxy must wait for Twilio to play it), hears the caller ask for the front desk, and on its
/// first connection answers that turn with a handoff line and `transfer_call`. The business
/// `dental` has the front desk as a transfer target. With `prism`, the simulated Twilio REST
/// API validates every request with it.
async fn world(prism: Option<&Prism>) -> World {
    let world = dental_world_from(WorldOptions {
        upstream: SimUpstreamConfig {
            clip: default_clip()
                .expect("clip")
                .first_ms(1500, "Let me put you through to the front desk."),
            realtime_pace: false,
            first_audio_delay_ms: 50,
            transcripts: vec!["I'd like to speak to someone at the front desk, please.".into()],
            replies: vec![
                "Thank you for calling Bright Smile Dental, how can I help?".into(),
                "Of course, let me put you through to the front desk.".into(),
            ],
            tool_calls: vec![ScriptedToolCall {
                response: 1,
                name: "transfer_call".into(),
                arguments: json!({"target": "front desk", "reason": "asked for a person"})
                    .to_string(),
                connection: Some(0),
            }],
            ..SimUpstreamConfig::default()
        },
        twilio_validator: prism.map(|p| p.url.clone()),
        ..WorldOptions::default()
    })
    .await;
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                transfer_targets: Some(vec![TransferTarget {
                    name: "front desk".into(),
                    number: FRONT_DESK.into(),
                }]),
                ..BusinessUpdate::default()
            },
        )
        .await
        .expect("transfer targets stored");
    world
}

/// A call that asks for the front desk (the first second of jfk.wav, after the greeting has
/// played) and whose transfer ends as `dial` says.
async fn call(world: &mut World, n: u32, dial: Option<DialAnswer>) -> (CallerReport, CallReport) {
    let mut caller = world.caller(
        &sid(n),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    caller.lead_silence_ms = 2500;
    caller.tail_silence_ms = 8000;
    caller.dial = dial;
    let report = tokio::time::timeout(Duration::from_secs(40), caller::run(caller))
        .await
        .expect("the call ends")
        .expect("the call runs");
    let proxy = world
        .report_for(&sid(n), Duration::from_secs(10))
        .await
        .expect("the proxy's report");
    (report, proxy)
}

fn at(report: &CallReport, wanted: impl Fn(&TimelineEvent) -> bool) -> Option<Duration> {
    report
        .timeline
        .entries()
        .iter()
        .find(|(_, e)| wanted(e))
        .map(|(at, _)| *at)
}

/// Every client event of one upstream session, parsed, in order.
fn events(session: &SessionLog) -> Vec<Value> {
    session
        .events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect()
}

/// `GET /api/v1/calls/{sid}` as the admin.
async fn call_detail(world: &World, call_sid: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let detail: Value = reqwest::Client::new()
            .get(format!(
                "http://{}/api/v1/calls/{call_sid}",
                world.proxy_addr
            ))
            .bearer_auth(SIM_ADMIN_TOKEN)
            .send()
            .await
            .expect("GET the call")
            .json()
            .await
            .expect("JSON");
        let recorded = detail["transfers"]
            .as_array()
            .is_some_and(|t| !t.is_empty());
        if recorded || tokio::time::Instant::now() >= deadline {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_transfer_waits_for_the_handoff_line_then_dials_the_target_and_ends_when_answered() {
    let prism = Prism::start("the transfer's REST request checked against Twilio's schema");
    let mut world = world(prism.as_ref()).await;
    let (heard, report) = call(
        &mut world,
        1,
        Some(DialAnswer {
            status: "completed".into(),
            ring_ms: 300,
            duration_s: Some(42),
            return_speech: Vec::new(),
            return_lead_ms: 500,
            return_listen_ms: 0,
        }),
    )
    .await;
    assert_eq!(report.end_reason, EndReason::Transferred);
    let requested = at(
        &report,
        |e| matches!(e, TimelineEvent::TransferRequested { target } if target == "front desk"),
    )
    .expect("transfer requested");
    let dialed = at(&report, |e| {
        matches!(
            e,
            TimelineEvent::TransferDialed {
                delivered: true,
                ..
            }
        )
    })
    .expect("transfer dialled");
    assert!(
        dialed.saturating_sub(requested) >= Duration::from_millis(1300),
        "the call was redirected after the 1.5 s handoff line played, not when transfer_call \
         came: {:?}",
        dialed.saturating_sub(requested)
    );
    // The caller heard the greeting and the handoff line in full before Twilio took the call.
    assert!(
        heard.heard.len() >= 2 * 1500 * 8,
        "{} bytes heard",
        heard.heard.len()
    );

    // One redirect, while the stream was live, to <Dial> the front desk with the caller's own
    // number as caller ID and an action URL back to this proxy.
    let redirects = world.twilio.redirects();
    assert_eq!(redirects.len(), 1, "{redirects:?}");
    let redirect = &redirects[0];
    assert!(redirect.authorized && redirect.while_live, "{redirect:?}");
    if prism.is_some() {
        assert!(
            redirect
                .prism_status
                .is_some_and(|s| (200..300).contains(&s)),
            "Prism accepted the redirect: {redirect:?}"
        );
    }
    let transfer = heard.transfer.as_ref().expect("the dial was followed");
    assert_eq!(transfer.number, FRONT_DESK);
    assert_eq!(transfer.caller_id.as_deref(), Some(CALLER));
    assert!(
        transfer
            .action_url
            .starts_with(&format!("http://{}/twilio/dial-status/", world.proxy_addr)),
        "{}",
        transfer.action_url
    );
    assert!(transfer.dial_twiml.contains(r#"timeout="20""#));
    // Answered: the caller's call ends when that one does.
    assert_eq!(transfer.action_status, 200);
    assert!(
        transfer
            .action_twiml
            .ends_with("<Response><Hangup/></Response>"),
        "{}",
        transfer.action_twiml
    );
    assert!(transfer.returned.is_none());

    // transfer_call was answered at once, with no response asked for after it.
    let sessions = world.upstream.sessions();
    let first = events(&sessions[0]);
    let output = first
        .iter()
        .position(|e| e["item"]["type"] == "function_call_output")
        .expect("transfer_call answered");
    let said: Value = serde_json::from_str(first[output]["item"]["output"].as_str().unwrap_or(""))
        .expect("JSON output");
    assert_eq!(said["ok"], true);
    assert!(
        !first[output + 1..]
            .iter()
            .any(|e| e["type"] == "response.create"),
        "no response.create after transfer_call"
    );
    // The session offered transfer_call with the business's targets.
    let offered = first
        .iter()
        .filter(|e| e["type"] == "session.update")
        .flat_map(|e| {
            e["session"]["tools"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|t| t["name"] == "transfer_call")
        .expect("transfer_call offered");
    assert_eq!(
        offered["parameters"]["properties"]["target"]["enum"],
        json!(["front desk"])
    );
    assert_eq!(
        sessions.len(),
        1,
        "no second session for an answered transfer"
    );

    // Recorded: the outcome with its duration, and the end.
    let detail = call_detail(&world, &sid(1)).await;
    assert_eq!(detail["transfers"][0]["target"], "front desk");
    assert_eq!(detail["transfers"][0]["outcome"], "answered");
    assert_eq!(detail["transfers"][0]["duration_s"], 42);
    let row = common::ended_within(&world.store, &sid(1), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(row.end_reason.as_deref(), Some("transferred"));
    assert!(
        metrics(&world)
            .await
            .contains(r#"voxrelay_call_transfers_total{outcome="answered"} 1"#)
    );
    world.stop().await;
}

#[tokio::test]
async fn a_transfer_nobody_answers_brings_the_caller_back_with_the_conversation_restored() {
    let prism = Prism::start("the transfer's REST request checked against Twilio's schema");
    let mut world = world(prism.as_ref()).await;
    let (heard, first) = call(
        &mut world,
        2,
        Some(DialAnswer {
            status: "no-answer".into(),
            ring_ms: 500,
            duration_s: None,
            return_speech: Vec::new(),
            return_lead_ms: 500,
            return_listen_ms: 3000,
        }),
    )
    .await;
    assert_eq!(first.end_reason, EndReason::Transferred);
    let transfer = heard.transfer.as_ref().expect("the dial was followed");
    assert!(
        transfer.action_twiml.contains("<Connect><Stream"),
        "nobody answered: a new stream brings the caller back: {}",
        transfer.action_twiml
    );
    let back = transfer.returned.as_ref().expect("the caller came back");
    assert!(
        back.media_received > 0 && !back.heard.is_empty(),
        "the caller heard the assistant again"
    );

    // The return is a session of the same call: the conversation replayed, the outcome told,
    // and the model asked to speak.
    let returned = world
        .report_for(&sid(2), Duration::from_secs(10))
        .await
        .expect("the return session's report");
    let restored = returned
        .timeline
        .entries()
        .iter()
        .find_map(|(_, e)| match e {
            TimelineEvent::TransferReturned {
                target,
                outcome,
                replayed,
            } => Some((target.clone(), *outcome, *replayed)),
            _ => None,
        })
        .expect("the return is on the timeline");
    assert_eq!(restored.0, "front desk");
    assert_eq!(restored.1, TransferOutcome::NoAnswer);
    assert!(restored.2 >= 3, "greeting, request, handoff: {restored:?}");
    assert!(
        returned.greeting_latency_ms.is_some(),
        "the model spoke first"
    );

    let sessions = world.upstream.sessions();
    assert_eq!(sessions.len(), 2, "one session per stream");
    let second = events(&sessions[1]);
    let full = second
        .iter()
        .find(|e| e["type"] == "session.update")
        .expect("the return's session.update");
    assert!(
        full["session"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("## Interruptions")),
        "the return session starts on the FULL instructions"
    );
    assert_eq!(
        second
            .iter()
            .filter(|e| e["type"] == "session.update")
            .count(),
        1,
        "no upgrade on a session opened with FULL"
    );
    let texts: Vec<(String, String)> = second
        .iter()
        .filter(|e| e["type"] == "conversation.item.create")
        .map(|e| {
            (
                e["item"]["role"].as_str().unwrap_or("").to_string(),
                e["item"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|(role, text)| role == "user" && text.contains("front desk")),
        "the caller's request replayed: {texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|(role, text)| role == "assistant" && text.contains("put you through")),
        "the handoff line replayed: {texts:?}"
    );
    let note = texts
        .iter()
        .position(|(role, text)| {
            role == "system" && text.contains("front desk") && text.contains("nobody answered")
        })
        .expect("the outcome told to the model");
    assert_eq!(note, texts.len() - 1, "the outcome comes after the history");
    let note_at = second
        .iter()
        .position(|e| e["item"]["role"] == "system")
        .expect("note");
    assert!(
        second[note_at..]
            .iter()
            .any(|e| e["type"] == "response.create"),
        "the model is asked to speak after the note"
    );

    let detail = call_detail(&world, &sid(2)).await;
    assert_eq!(detail["transfers"][0]["outcome"], "no-answer");
    assert!(
        metrics(&world)
            .await
            .contains(r#"voxrelay_call_transfers_total{outcome="no-answer"} 1"#)
    );
    world.stop().await;
}

#[tokio::test]
async fn a_transfer_twilio_refuses_is_told_to_the_model_and_the_call_goes_on() {
    let mut world = world(None).await;
    let mut caller = world.caller(
        &sid(3),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    // Not registered as a live call: the simulated Twilio refuses the redirect (21220).
    caller.live_calls = None;
    caller.lead_silence_ms = 2500;
    caller.tail_silence_ms = 6000;
    let heard = tokio::time::timeout(Duration::from_secs(30), caller::run(caller))
        .await
        .expect("the call ends")
        .expect("the call runs");
    let report = world
        .report_for(&sid(3), Duration::from_secs(10))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "the caller hung up");
    assert!(heard.transfer.is_none());
    assert!(
        at(&report, |e| matches!(
            e,
            TimelineEvent::TransferDialed {
                delivered: false,
                ..
            }
        ))
        .is_some()
    );
    let sessions = world.upstream.sessions();
    let first = events(&sessions[0]);
    let told = first
        .iter()
        .position(|e| {
            e["item"]["role"] == "system"
                && e["item"]["content"][0]["text"] == voxrelay::tools::builtin::TRANSFER_FAILED
        })
        .expect("the model was told");
    assert!(
        first[told..].iter().any(|e| e["type"] == "response.create"),
        "and asked to answer"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_dial_action_with_a_bad_signature_gets_403_and_records_nothing() {
    let world = world(None).await;
    let url = format!(
        "http://{}/twilio/dial-status/any?target=front+desk&token=x",
        world.proxy_addr
    );
    let form = [
        ("CallSid", sid(4)),
        ("DialCallStatus", "no-answer".to_string()),
    ];
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let client = reqwest::Client::new();
    let forged = voxrelay::twilio::signature::compute("not-the-token", &url, &params);
    for signature in [None, Some(forged)] {
        let mut request = client.post(&url).form(&form);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let answer = request.send().await.expect("POST");
        assert_eq!(answer.status(), 403);
    }
    // Signed, it is taken (the token is not this call's, so the caller hears the apology).
    let good = voxrelay::twilio::signature::compute(SIM_TWILIO_AUTH_TOKEN, &url, &params);
    let answer = client
        .post(&url)
        .header("X-Twilio-Signature", good)
        .form(&form)
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap_or_default()
            .contains("<Hangup/>")
    );
    // Only the signed callback was recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recorded = world.store.call_transfers(&sid(4)).await.expect("read");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    world.stop().await;
}

#[tokio::test]
async fn the_transfer_demo_brings_the_caller_back_and_takes_a_message() {
    let outcome = voxrelay_sim::demo::run(&voxrelay_sim::demo::DemoOptions {
        scenario: voxrelay_sim::demo::Scenario::Transfer,
        ..voxrelay_sim::demo::DemoOptions::default()
    })
    .await
    .expect("the demo runs");
    voxrelay_sim::demo::check(&outcome).expect("the demo shows what it exists to show");
    let text = voxrelay_sim::demo::render(&outcome);
    for line in [
        "model calls tool transfer_call",
        "call redirected to <Dial>",
        "back from the transfer",
        "end                agent_hangup",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}

#[tokio::test]
async fn transfer_targets_are_set_through_the_admin_api_and_checked() {
    let world = world(None).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/v1/businesses/dental", world.proxy_addr);
    let patch = |body: Value| {
        client
            .patch(&url)
            .bearer_auth(SIM_ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let stored: Value = patch(json!({"transfer_targets": [
        {"name": "front desk", "number": "+1 (500) 555-0199"},
        {"name": "emergency line", "number": "+15005550198"}
    ]}))
    .await
    .expect("PATCH")
    .json()
    .await
    .expect("JSON");
    assert_eq!(
        stored["transfer_targets"],
        json!([
            {"name": "front desk", "number": FRONT_DESK},
            {"name": "emergency line", "number": "+15005550198"}
        ]),
        "numbers stored as E.164"
    );
    for (bad, named) in [
        (json!([{"name": "desk", "number": "call me"}]), "E.164"),
        (
            json!([{"name": "desk", "number": FRONT_DESK}, {"name": "Desk", "number": FRONT_DESK}]),
            "twice",
        ),
        (
            json!([{"name": "<script>", "number": FRONT_DESK}]),
            "letters",
        ),
    ] {
        let answer = patch(json!({ "transfer_targets": bad }))
            .await
            .expect("PATCH");
        assert_eq!(answer.status(), 422);
        let text = answer.text().await.unwrap_or_default();
        assert!(text.contains(named), "{named}: {text}");
    }
    // A viewer cannot change them.
    let answer = client
        .patch(&url)
        .bearer_auth(voxrelay_sim::world::SIM_VIEWER_TOKEN)
        .json(&json!({"transfer_targets": []}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(answer.status(), 403);
    world.stop().await;
}
