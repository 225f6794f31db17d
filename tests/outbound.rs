//! Outbound calls end to end over loopback: `POST /api/v1/calls` places the call through the
//! simulated Twilio REST API, which (when Prism is installed, `VOXRELAY_PRISM`) has the request
//! validated against Twilio's own OpenAPI description first, then runs the call as Twilio
//! would: status callbacks, answering machine detection over the callee's real greeting
//! (espeak-ng speech, `tests/fixtures/audio/`), the signed voice webhook with `AnsweredBy`, and
//! the media stream.
//!
//! | what | test |
//! |---|---|
//! | placed through Prism; a machine answers: the voicemail with a `call.*` variable, then the hang-up | [`a_placed_call_an_answering_machine_takes_gets_the_voicemail_then_the_hang_up`] |
//! | a person answers: the outbound prompt rendered with the call's variable | [`a_placed_call_a_person_answers_runs_the_outbound_prompt_with_its_variables`] |
//! | calling hours, the rate and E.164 refuse with their rule | [`calling_hours_the_rate_and_the_number_refuse_with_their_rule`] |

use std::time::Duration;

use serde_json::{Value, json};

use voxrelay::domain::EndReason;
use voxrelay::store::BusinessUpdate;
use voxrelay::telemetry::timeline::TimelineEvent;
use voxrelay_sim::caller::CallerEvent;
use voxrelay_sim::demo::{PERSON_HELLO_WAV, VOICEMAIL_GREETING_WAV, mulaw_of};
use voxrelay_sim::prism::Prism;
use voxrelay_sim::twilio_rest::Callee;
use voxrelay_sim::upstream::{SimUpstreamConfig, default_clip};
use voxrelay_sim::world::{SIM_ADMIN_TOKEN, World, WorldOptions};

mod common;
use common::dental_world_from;

/// Who the tests call.
const PATIENT: &str = "+14155550111";
/// The appointment the call is about.
const WHEN: &str = "Tuesday at 10:00";
/// The outbound prompt version: it names the appointment.
const OUTBOUND_PROMPT: &str = "You are calling a patient of {{ business.name }} to confirm \
     their appointment on {{ call.appointment_time }}. Ask whether the time still suits them.";
/// The business's voicemail message.
const VOICEMAIL: &str = "This is {{ business.name }} confirming your appointment on \
     {{ call.appointment_time }}. Please call us back if you need to change it.";

/// A world whose model says 1.5 s per response, with the business `dental` (on +15005550006)
/// set up for outbound calls: a voicemail message, and an outbound prompt version in production
/// that uses `call.appointment_time`. With `prism`, the simulated Twilio REST API validates
/// every request with it.
async fn world(prism: Option<&Prism>, name: &str) -> World {
    let world = dental_world_from(WorldOptions {
        upstream: SimUpstreamConfig {
            event_log: event_log(name),
            clip: default_clip()
                .expect("clip")
                .first_ms(1500, "Hello, this is Bright Smile Dental."),
            first_audio_delay_ms: 50,
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
                voicemail_message: Some(VOICEMAIL.into()),
                // Open around the clock: the hours are tested on their own.
                calling_hours: Some("00:00-24:00".into()),
                ..BusinessUpdate::default()
            },
        )
        .await
        .expect("outbound settings");
    let created = admin(
        &world,
        "POST",
        "/api/v1/businesses/dental/prompts",
        json!({
            "direction": "outbound", "body": OUTBOUND_PROMPT
        }),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let id = created.1["version"]["id"]
        .as_str()
        .or_else(|| created.1["id"].as_str())
        .expect("version id")
        .to_string();
    let promoted = admin(
        &world,
        "POST",
        &format!("/api/v1/prompts/{id}/promote"),
        json!({"to": "production"}),
    )
    .await;
    assert_eq!(promoted.0, 200, "{}", promoted.1);
    world
}

/// Where the simulated upstream writes every client event of the test `name`, when
/// `VOXRELAY_EVENT_LOG_DIR` is set (`.ci/run` sets it and validates the files against the
/// openai SDK's types: the voicemail's session without turn detection and its response).
fn event_log(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("VOXRELAY_EVENT_LOG_DIR")?;
    Some(std::path::Path::new(&dir).join(format!("outbound_events_{name}.jsonl")))
}

/// An admin API request: its status and JSON body.
async fn admin(world: &World, method: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("http://{}{path}", world.proxy_addr);
    let client = reqwest::Client::new();
    let request = match method {
        "POST" => client.post(url).json(&body),
        "PATCH" => client.patch(url).json(&body),
        _ => client.get(url),
    };
    let answer = request
        .bearer_auth(SIM_ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Places a call to `to` with the appointment variable; its status and body.
async fn place(world: &World, to: &str, force: bool) -> (u16, Value) {
    admin(
        world,
        "POST",
        "/api/v1/calls",
        json!({
            "business_id": "dental",
            "to": to,
            "variables": {"appointment_time": WHEN},
            "force": force,
        }),
    )
    .await
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn a_placed_call_an_answering_machine_takes_gets_the_voicemail_then_the_hang_up() {
    let prism = Prism::start("the placed call's REST request checked against Twilio's schema");
    let mut world = world(prism.as_ref(), "voicemail").await;
    world.twilio.answer_as(
        PATIENT,
        Callee::Machine {
            greeting: mulaw_of(VOICEMAIL_GREETING_WAV).expect("greeting"),
            record_ms: 20_000,
        },
    );
    let (status, placed) = place(&world, PATIENT, false).await;
    assert_eq!(status, 201, "{placed}");
    let call_sid = placed["call_sid"].as_str().expect("CallSid").to_string();
    assert_eq!(placed["from"], "+15005550006", "from the business's number");
    assert_eq!(placed["to"], PATIENT);

    let call = world
        .twilio
        .placed_call(&call_sid, Duration::from_secs(40))
        .await
        .expect("the simulated call ends");
    if prism.is_some() {
        assert!(
            call.prism_status.is_some_and(|s| (200..300).contains(&s)),
            "Prism accepted the placed call: {:?}",
            call.prism_status
        );
    }
    let public = format!("http://{}", world.proxy_addr);
    assert_eq!(field(&call.form, "MachineDetection"), ["DetectMessageEnd"]);
    assert_eq!(
        field(&call.form, "StatusCallback"),
        [format!("{public}/twilio/status").as_str()]
    );
    let url = field(&call.form, "Url")[0];
    assert!(
        url.starts_with(&format!("{public}/twilio/voice?business=dental")),
        "{url}"
    );
    assert_eq!(call.answered_by.as_deref(), Some("machine_end_beep"));

    // The proxy left the voicemail, and hung up once it had played.
    let report = world
        .report_for(&call_sid, Duration::from_secs(10))
        .await
        .expect("the proxy's report");
    assert_eq!(report.end_reason, EndReason::Voicemail);
    assert!(
        report
            .timeline
            .entries()
            .iter()
            .any(|(_, e)| matches!(e, TimelineEvent::VoicemailRequested))
    );
    let heard = call.report.expect("the stream ran");
    assert!(
        heard.heard.len() >= 1500 * 8,
        "the machine recorded the whole message: {} bytes",
        heard.heard.len()
    );
    assert!(
        heard
            .events
            .iter()
            .any(|(_, e)| matches!(e, CallerEvent::Closed { .. })),
        "the proxy ended the call"
    );
    assert!(
        !heard
            .events
            .iter()
            .any(|(_, e)| matches!(e, CallerEvent::Stop)),
        "before the machine stopped recording"
    );

    // Upstream: no turn detection, one response with the voicemail instructions naming the
    // appointment, and no other response.
    let sessions = world.upstream.sessions();
    let events: Vec<Value> = sessions[0]
        .events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let update = events
        .iter()
        .find(|e| e["type"] == "session.update")
        .expect("session.update");
    assert!(
        update["session"]["audio"]["input"]["turn_detection"].is_null(),
        "no VAD on a voicemail: {update}"
    );
    let responses: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.create")
        .collect();
    assert_eq!(responses.len(), 1, "{responses:?}");
    let instructions = responses[0]["response"]["instructions"]
        .as_str()
        .unwrap_or("");
    assert!(
        instructions.contains("answering machine")
            && instructions.contains(&format!("appointment on {WHEN}"))
            && instructions.contains("Bright Smile Dental"),
        "{instructions}"
    );

    // Recorded: Twilio's status callbacks (checked signatures) and the end.
    let codes: Vec<(String, u16)> = call.statuses.clone();
    assert_eq!(
        codes.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["completed"],
        "Twilio's default: one callback at the end"
    );
    assert!(codes.iter().all(|(_, code)| *code == 204), "{codes:?}");
    let detail = admin(
        &world,
        "GET",
        &format!("/api/v1/calls/{call_sid}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        detail.1["statuses"][0]["status"], "completed",
        "{}",
        detail.1
    );
    assert!(
        detail.1["statuses"][0]["duration_s"]
            .as_i64()
            .is_some_and(|d| d >= 8)
    );
    let row = common::ended_within(&world.store, &call_sid, Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(row.end_reason.as_deref(), Some("voicemail"));
    assert_eq!(row.direction, voxrelay::domain::Direction::Outbound);
    let placed_row = world
        .store
        .outbound_call(&call_sid)
        .await
        .expect("read")
        .expect("the placement is recorded");
    assert_eq!(placed_row.answered_by.as_deref(), Some("machine_end_beep"));
    assert_eq!(placed_row.variables["appointment_time"], WHEN);
    world.stop().await;
}

#[tokio::test]
async fn a_placed_call_a_person_answers_runs_the_outbound_prompt_with_its_variables() {
    let prism = Prism::start("the placed call's REST request checked against Twilio's schema");
    let mut world = world(prism.as_ref(), "person").await;
    world.twilio.answer_as(
        PATIENT,
        Callee::Person {
            greeting: mulaw_of(PERSON_HELLO_WAV).expect("hello"),
            listen_ms: 4000,
        },
    );
    let (status, placed) = place(&world, PATIENT, false).await;
    assert_eq!(status, 201, "{placed}");
    let call_sid = placed["call_sid"].as_str().expect("CallSid").to_string();
    let call = world
        .twilio
        .placed_call(&call_sid, Duration::from_secs(30))
        .await
        .expect("the simulated call ends");
    assert_eq!(call.answered_by.as_deref(), Some("human"));
    if prism.is_some() {
        assert!(call.prism_status.is_some_and(|s| (200..300).contains(&s)));
    }
    let report = world
        .report_for(&call_sid, Duration::from_secs(10))
        .await
        .expect("the proxy's report");
    assert_eq!(report.direction, voxrelay::domain::Direction::Outbound);
    assert_eq!(report.end_reason, EndReason::Stop, "the person hung up");
    assert!(report.greeting_latency_ms.is_some(), "the model spoke");
    let heard = call.report.expect("the stream ran");
    assert!(!heard.heard.is_empty(), "the person heard the model");
    // The conversation runs the outbound prompt, rendered with the call's variable, and VAD.
    let sessions = world.upstream.sessions();
    let updates: Vec<Value> = sessions[0]
        .events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|e| e["type"] == "session.update")
        .collect();
    assert!(
        updates.iter().any(|u| u["session"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains(&format!("appointment on {WHEN}")))),
        "the outbound prompt with call.appointment_time: {updates:?}"
    );
    assert!(updates[0]["session"]["audio"]["input"]["turn_detection"].is_object());
    world.stop().await;
}

#[tokio::test]
async fn calling_hours_the_rate_and_the_number_refuse_with_their_rule() {
    let world = world(None, "refusals").await;
    // Calling hours that are closed now: a one-minute window twelve hours away, in Tokyo.
    let zone = jiff::tz::TimeZone::get("Asia/Tokyo").expect("zone");
    let later = zone.to_datetime(jiff::Timestamp::now()).time();
    let (h, m) = ((later.hour() + 12) % 24, later.minute() % 59);
    let hours = format!("{h:02}:{m:02}-{h:02}:{:02}", m + 1);
    let (status, body) = admin(
        &world,
        "PATCH",
        "/api/v1/businesses/dental",
        json!({"time_zone": "Asia/Tokyo", "calling_hours": hours, "outbound_per_minute": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = place(&world, PATIENT, false).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains("calling hours") && error.contains("Asia/Tokyo") && error.contains(&hours),
        "{error}"
    );
    // An admin may force it; it counts under the rate.
    let (status, body) = place(&world, PATIENT, true).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["forced"], true);
    let (status, body) = place(&world, PATIENT, true).await;
    assert_eq!(status, 201, "{body}");
    // The third call within the minute is over the rate of 2.
    let (status, body) = place(&world, PATIENT, true).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("rate limit") && e.contains("2 calls a minute")),
        "{body}"
    );
    // Not E.164: refused before anything else.
    let (status, body) = place(&world, "call my mum", true).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("E.164")));
    // Bad settings are refused naming them.
    for (patch, named) in [
        (json!({"time_zone": "Mars/Olympus"}), "time_zone"),
        (json!({"calling_hours": "whenever"}), "calling_hours"),
        (json!({"outbound_per_minute": 0}), "outbound_per_minute"),
        (
            json!({"voicemail_message": "Hi {{ call.Name }}"}),
            "voicemail_message",
        ),
    ] {
        let (status, body) = admin(&world, "PATCH", "/api/v1/businesses/dental", patch).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(named)),
            "{named}: {body}"
        );
    }
    // Only two calls reached Twilio.
    assert_eq!(world.twilio.placed().len(), 2);
    world.stop().await;
}
