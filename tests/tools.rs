//! Calls that act: a business's function tools and the built-in `end_call`, end to end over
//! loopback on real speech (`jfk.wav`), with the simulated model scripted to call them and the
//! simulated tool endpoint (`voxrelay_sim::tool_endpoint`) checking every request's signature.
//!
//! | what | test |
//! |---|---|
//! | a tool round trip, signed, with schema validation | [`a_tool_call_is_validated_signed_posted_and_answered`] |
//! | a tool that times out, and the model told | [`a_tool_that_times_out_is_answered_with_a_timeout_and_the_call_goes_on`] |
//! | a slow tool: the hold clip heard | [`a_slow_tool_makes_the_caller_hear_the_hold_clip`] |
//! | every other way a tool fails | [`every_tool_failure_becomes_an_output_the_model_can_speak_about`] |
//! | `end_call` after the goodbye played | [`end_call_hangs_up_once_the_goodbye_has_played`] |
//! | `end_call` cancelled by the caller | [`end_call_is_cancelled_when_the_caller_speaks_during_the_goodbye`] |
//! | `voxrelay demo --scenario booking` | [`the_booking_demo_books_with_the_hold_clip_and_the_agent_hangs_up`] |

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use voxrelay::domain::{EndReason, ToolKind, ToolStatus};
use voxrelay::store::{BusinessTool, BusinessUpdate};
use voxrelay::telemetry::timeline::{CallReport, TimelineEvent};
use voxrelay_sim::caller::{self, CallerEvent, CallerReport};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::tool_endpoint::{Behaviour, SimToolEndpoint};
use voxrelay_sim::upstream::{Clip, ScriptedToolCall, SessionLog, SimUpstreamConfig, default_clip};
use voxrelay_sim::world::{
    SIM_ADMIN_TOKEN, SIM_TOOL_SECRET, SIM_TOOL_SECRET_ENV, World, WorldOptions,
};

mod common;
use common::{dental_world_from, metrics};

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0x7001_0000u32 + n)
}

/// The model's audio for every response: the first `ms` of the agent clip.
fn clip(ms: u64) -> Clip {
    default_clip()
        .expect("clip")
        .first_ms(ms, "One moment while I check that for you.")
}

/// A scripted call of `name` with `arguments` at the end of response `response`.
fn scripted(response: usize, name: &str, arguments: Value) -> ScriptedToolCall {
    ScriptedToolCall {
        response,
        name: name.into(),
        arguments: arguments.to_string(),
        connection: None,
    }
}

/// The booking tool: a weekday and a time, nothing else.
fn booking(endpoint: &str, timeout_ms: i64) -> BusinessTool {
    BusinessTool {
        name: "book_appointment".into(),
        kind: ToolKind::Function,
        description: "Book a dental appointment.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "day": {"type": "string", "enum": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]},
                "time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"}
            },
            "required": ["day", "time"],
            "additionalProperties": false
        }),
        endpoint: endpoint.into(),
        timeout_ms,
        secret_env: SIM_TOOL_SECRET_ENV.into(),
        allowed_tools: vec![],
        updated_at_ms: 0,
    }
}

/// A tool named `name` at `endpoint` taking anything.
fn any_tool(name: &str, endpoint: &str, secret_env: &str) -> BusinessTool {
    BusinessTool {
        name: name.into(),
        kind: ToolKind::Function,
        description: format!("The {name} tool."),
        parameters: json!({"type": "object", "properties": {}}),
        endpoint: endpoint.into(),
        timeout_ms: 2000,
        secret_env: secret_env.into(),
        allowed_tools: vec![],
        updated_at_ms: 0,
    }
}

/// A world whose model says `clip_ms` of audio per response (as fast as the socket takes it
/// unless `paced`) and makes the `calls`, with the business `dental` on +15005550006, and a
/// tool endpoint answering as `behaviours` say.
async fn world(
    calls: Vec<ScriptedToolCall>,
    clip_ms: u64,
    paced: bool,
    behaviours: HashMap<String, Behaviour>,
) -> (World, SimToolEndpoint) {
    let world = dental_world_from(WorldOptions {
        upstream: SimUpstreamConfig {
            clip: clip(clip_ms),
            realtime_pace: paced,
            first_audio_delay_ms: 50,
            tool_calls: calls,
            ..SimUpstreamConfig::default()
        },
        ..WorldOptions::default()
    })
    .await;
    let endpoint = SimToolEndpoint::start(SIM_TOOL_SECRET, behaviours)
        .await
        .expect("tool endpoint");
    (world, endpoint)
}

async fn add_tool(world: &World, tool: BusinessTool) {
    voxrelay::ops::tools::set(&world.store, "dental", tool)
        .await
        .expect("tool stored");
}

/// One call saying the first second of jfk.wav after 1 s of silence, then `tail_ms` of
/// silence before `stop`.
async fn call(world: &mut World, n: u32, tail_ms: u64) -> (CallerReport, CallReport) {
    call_after(world, n, 1000, tail_ms).await
}

/// [`call`] with `lead_ms` of silence before the speech.
async fn call_after(
    world: &mut World,
    n: u32,
    lead_ms: u64,
    tail_ms: u64,
) -> (CallerReport, CallReport) {
    let mut caller = world.caller(
        &sid(n),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    caller.lead_silence_ms = lead_ms;
    caller.tail_silence_ms = tail_ms;
    let report = tokio::time::timeout(Duration::from_secs(30), caller::run(caller))
        .await
        .expect("the call ends")
        .expect("the call runs");
    let proxy = world
        .report_for(&sid(n), Duration::from_secs(10))
        .await
        .expect("the proxy's report");
    (report, proxy)
}

/// Every client event of the call's upstream sessions, parsed, in order.
fn upstream_events(sessions: &[SessionLog]) -> Vec<Value> {
    sessions
        .iter()
        .flat_map(|s| s.events.iter())
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect()
}

/// The `function_call_output` items sent upstream: (call_id, output), each with whether a
/// `response.create` followed it.
fn outputs(events: &[Value]) -> Vec<(String, Value, bool)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e["type"] == "conversation.item.create" && e["item"]["type"] == "function_call_output"
        })
        .map(|(i, e)| {
            let output: Value = serde_json::from_str(e["item"]["output"].as_str().unwrap_or(""))
                .unwrap_or(Value::Null);
            let answered = events[i + 1..]
                .iter()
                .any(|n| n["type"] == "response.create");
            (
                e["item"]["call_id"].as_str().unwrap_or("").to_string(),
                output,
                answered,
            )
        })
        .collect()
}

/// The timeline's tool results: (tool, status, latency ms, held ms).
fn results(report: &CallReport) -> Vec<(String, ToolStatus, f64, u64)> {
    report
        .timeline
        .entries()
        .iter()
        .filter_map(|(_, e)| match e {
            TimelineEvent::ToolResult {
                tool,
                status,
                latency_ms,
                held_ms,
                ..
            } => Some((tool.clone(), *status, *latency_ms, *held_ms)),
            _ => None,
        })
        .collect()
}

fn at(report: &CallReport, wanted: impl Fn(&TimelineEvent) -> bool) -> Option<Duration> {
    report
        .timeline
        .entries()
        .iter()
        .find(|(_, e)| wanted(e))
        .map(|(at, _)| *at)
}

#[tokio::test]
async fn a_tool_call_is_validated_signed_posted_and_answered() {
    let answer = r#"{"booked":true,"confirmation":"BK-1042"}"#;
    let (mut world, endpoint) = world(
        vec![
            scripted(
                1,
                "book_appointment",
                json!({"day": "Tuesday", "time": "10:00"}),
            ),
            // After the booking's answer, a call the schema refuses: no request is made.
            scripted(
                2,
                "book_appointment",
                json!({"day": "Sunday", "when": "noon"}),
            ),
        ],
        600,
        true,
        [("book_appointment".to_string(), Behaviour::ok(answer, 20))].into(),
    )
    .await;
    add_tool(&world, booking(&endpoint.url("book_appointment"), 3000)).await;
    let (heard, report) = call(&mut world, 1, 5000).await;
    assert!(heard.streamed);

    // The session was configured with the tools: the built-in end_call and the business's.
    let events = upstream_events(&world.upstream.sessions());
    let update = events
        .iter()
        .find(|e| e["type"] == "session.update" && e["session"].get("tools").is_some())
        .expect("a session.update with tools");
    let names: Vec<&str> = update["session"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["end_call", "book_appointment"]);

    // One request reached the endpoint, signed, with the checked arguments.
    let requests = endpoint.requests();
    assert_eq!(
        requests.len(),
        1,
        "the invalid call made no request: {requests:?}"
    );
    let request = &requests[0];
    assert!(
        request.verified,
        "the endpoint verified the signature: {}",
        request.signature
    );
    assert_eq!(request.body["tool"], "book_appointment");
    assert_eq!(request.body["call_sid"], sid(1));
    assert_eq!(request.body["business_id"], "dental");
    assert_eq!(
        request.body["arguments"],
        json!({"day": "Tuesday", "time": "10:00"})
    );
    let call_id = request.body["call_id"]
        .as_str()
        .expect("call_id")
        .to_string();

    // The model got the endpoint's answer as the output of its call, then the schema's
    // refusal of the second call; each followed by a response.create.
    let outputs = outputs(&events);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_eq!(outputs[0].0, call_id);
    assert_eq!(
        outputs[0].1,
        serde_json::from_str::<Value>(answer).expect("json")
    );
    assert_eq!(outputs[1].1["error"], "invalid_arguments");
    let message = outputs[1].1["message"].as_str().expect("message");
    assert!(
        message.contains("/day") && message.contains("unexpected properties when"),
        "{message}"
    );
    assert!(
        !message.contains("Sunday"),
        "the refusal does not repeat the values: {message}"
    );
    assert!(outputs.iter().all(|(_, _, answered)| *answered));

    // Recorded: the timeline, the store (as the admin API shows it) and the metric.
    let results = results(&report);
    assert_eq!(
        results
            .iter()
            .map(|r| (r.0.as_str(), r.1))
            .collect::<Vec<_>>(),
        [
            ("book_appointment", ToolStatus::Ok),
            ("book_appointment", ToolStatus::InvalidArguments)
        ]
    );
    assert_eq!(results[0].3, 0, "a fast tool plays no hold audio");
    assert!(
        results[0].2 >= 20.0,
        "the latency includes the endpoint's 20 ms: {}",
        results[0].2
    );
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = world.store.tool_calls(&sid(1)).await.expect("tool calls");
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].status, ToolStatus::Ok);
    assert_eq!(rows[0].tool, "book_appointment");
    let shown: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/calls/{}",
            world.proxy_addr,
            sid(1)
        ))
        .bearer_auth(SIM_ADMIN_TOKEN)
        .send()
        .await
        .expect("GET call")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["tool_calls"][0]["status"], "ok");
    assert_eq!(shown["tool_calls"][1]["status"], "invalid_arguments");
    let text = metrics(&world).await;
    assert!(
        text.contains(r#"voxrelay_tool_call_seconds_count{tool="book_appointment",status="ok"} 1"#),
        "{}",
        text.lines()
            .filter(|l| l.contains("tool_call"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    world.stop().await;
}

#[tokio::test]
async fn a_tool_that_times_out_is_answered_with_a_timeout_and_the_call_goes_on() {
    let (mut world, endpoint) = world(
        vec![scripted(
            1,
            "book_appointment",
            json!({"day": "Monday", "time": "09:30"}),
        )],
        600,
        true,
        [("book_appointment".to_string(), Behaviour::ok("{}", 3000))].into(),
    )
    .await;
    add_tool(&world, booking(&endpoint.url("book_appointment"), 400)).await;
    let (_, report) = call(&mut world, 2, 4000).await;
    let results = results(&report);
    assert_eq!(results.len(), 1, "{results:?}");
    let (_, status, latency_ms, _) = &results[0];
    assert_eq!(*status, ToolStatus::Timeout);
    assert!(
        (400.0..1500.0).contains(latency_ms),
        "the model was told at the 400 ms timeout, not after the endpoint's 3 s: {latency_ms}"
    );
    let events = upstream_events(&world.upstream.sessions());
    let outputs = outputs(&events);
    assert_eq!(outputs[0].1["error"], "timeout");
    assert!(
        outputs[0].1["message"]
            .as_str()
            .unwrap_or("")
            .contains("did not answer")
    );
    assert!(
        outputs[0].2,
        "a response.create followed the timeout's output"
    );
    // The model answered after being told: a response after the one that called the tool.
    let started = report
        .timeline
        .entries()
        .iter()
        .filter(|(_, e)| matches!(e, TimelineEvent::ResponseStarted { .. }))
        .count();
    assert!(
        started >= 3,
        "greeting, the turn that called the tool, the answer: {started}"
    );
    assert_eq!(report.end_reason, EndReason::Stop);
    world.stop().await;
}

#[tokio::test]
async fn a_slow_tool_makes_the_caller_hear_the_hold_clip() {
    let (mut world, endpoint) = world(
        vec![scripted(
            1,
            "book_appointment",
            json!({"day": "Friday", "time": "15:00"}),
        )],
        600,
        true,
        [(
            "book_appointment".to_string(),
            Behaviour::ok(r#"{"booked":true}"#, 2500),
        )]
        .into(),
    )
    .await;
    add_tool(&world, booking(&endpoint.url("book_appointment"), 5000)).await;
    let (heard, report) = call(&mut world, 3, 6000).await;
    let results = results(&report);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].1, ToolStatus::Ok);
    let clip = voxrelay::call::hold_audio::clip_for(Some("en"));
    assert_eq!(results[0].3, clip.len() as u64 / 8, "the whole clip played");

    // The hold clip came after the model's own audio and 800 ms of silence, not at once.
    let called = at(&report, |e| matches!(e, TimelineEvent::ToolCalled { .. })).expect("called");
    let hold = at(&report, |e| matches!(e, TimelineEvent::HoldAudio { .. })).expect("hold");
    let waited = hold.saturating_sub(called);
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2000),
        "the clip starts 800 ms after the model's audio has played: {waited:?}"
    );
    // The simulated caller heard every byte of it.
    assert!(
        heard.heard.windows(clip.len()).any(|w| w == clip),
        "the caller heard the hold clip"
    );
    world.stop().await;
}

#[tokio::test]
async fn every_tool_failure_becomes_an_output_the_model_can_speak_about() {
    let huge = format!(r#"{{"slots":"{}"}}"#, "x".repeat(40_000));
    let (mut world, endpoint) = world(
        vec![
            scripted(1, "broken", json!({})),
            scripted(2, "huge", json!({})),
            scripted(3, "gone", json!({})),
            scripted(4, "no_such_tool", json!({})),
            scripted(5, "unsigned", json!({})),
        ],
        400,
        true,
        [
            (
                "broken".to_string(),
                Behaviour {
                    delay_ms: 0,
                    status: 500,
                    body: r#"{"error":"database down"}"#.into(),
                },
            ),
            ("huge".to_string(), Behaviour::ok(&huge, 0)),
        ]
        .into(),
    )
    .await;
    // A port nobody listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    add_tool(
        &world,
        any_tool("broken", &endpoint.url("broken"), SIM_TOOL_SECRET_ENV),
    )
    .await;
    add_tool(
        &world,
        any_tool("huge", &endpoint.url("huge"), SIM_TOOL_SECRET_ENV),
    )
    .await;
    add_tool(
        &world,
        any_tool(
            "gone",
            &format!("http://127.0.0.1:{closed}/gone"),
            SIM_TOOL_SECRET_ENV,
        ),
    )
    .await;
    add_tool(
        &world,
        any_tool("unsigned", &endpoint.url("unsigned"), "NO_SUCH_SECRET_VAR"),
    )
    .await;
    let (_, report) = call(&mut world, 4, 8000).await;
    let statuses: Vec<(String, ToolStatus)> =
        results(&report).into_iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        statuses,
        [
            ("broken".to_string(), ToolStatus::HttpError),
            ("huge".to_string(), ToolStatus::TooLarge),
            ("gone".to_string(), ToolStatus::ConnectionError),
            ("no_such_tool".to_string(), ToolStatus::UnknownTool),
            ("unsigned".to_string(), ToolStatus::NotConfigured),
        ]
    );
    let events = upstream_events(&world.upstream.sessions());
    let outputs = outputs(&events);
    assert_eq!(outputs.len(), 5, "{outputs:?}");
    for ((tool, status), (_, output, answered)) in statuses.iter().zip(&outputs) {
        assert_eq!(output["error"], status.as_str(), "{output}");
        let message = output["message"].as_str().unwrap_or("");
        assert!(message.contains(tool.as_str()), "{message}");
        assert!(!message.contains("database down") && !message.contains(SIM_TOOL_SECRET));
        assert!(*answered, "the model was asked to answer after {tool}");
    }
    assert!(
        outputs[0].1["message"]
            .as_str()
            .unwrap_or("")
            .contains("HTTP 500")
    );
    // No request for the unknown tool, nor for the one without its secret.
    let paths: Vec<String> = endpoint.requests().iter().map(|r| r.tool.clone()).collect();
    assert_eq!(paths, ["broken", "huge"]);
    world.stop().await;
}

#[tokio::test]
async fn end_call_hangs_up_once_the_goodbye_has_played() {
    // The goodbye's audio arrives at once, with the call of end_call right behind it: the
    // proxy must wait for Twilio to play it.
    let (mut world, _endpoint) = world(
        vec![scripted(1, "end_call", json!({"reason": "booked"}))],
        1500,
        false,
        HashMap::new(),
    )
    .await;
    // The greeting plays out before the caller speaks.
    let (heard, report) = call_after(&mut world, 5, 2500, 8000).await;
    assert_eq!(report.end_reason, EndReason::AgentHangup);
    let requested =
        at(&report, |e| matches!(e, TimelineEvent::HangupRequested)).expect("requested");
    let ended = at(&report, |e| matches!(e, TimelineEvent::Ended { .. })).expect("ended");
    assert!(
        ended.saturating_sub(requested) >= Duration::from_millis(1300),
        "the call ended after the 1.5 s goodbye played, not when end_call came: {:?}",
        ended.saturating_sub(requested)
    );
    // The caller heard both responses in full (greeting and goodbye), and never sent stop.
    assert!(
        heard.heard.len() >= 2 * 1500 * 8,
        "{} bytes heard",
        heard.heard.len()
    );
    assert!(
        heard
            .events
            .iter()
            .any(|(_, e)| matches!(e, CallerEvent::Closed { .. }))
    );
    assert!(
        !heard
            .events
            .iter()
            .any(|(_, e)| matches!(e, CallerEvent::Stop))
    );
    // end_call was answered, with no response asked for after it.
    let events = upstream_events(&world.upstream.sessions());
    let outputs = outputs(&events);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].1["ok"], true);
    assert!(!outputs[0].2, "no response.create after end_call");
    let row = common::ended_within(&world.store, &sid(5), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(row.end_reason.as_deref(), Some("agent_hangup"));
    world.stop().await;
}

#[tokio::test]
async fn end_call_is_cancelled_when_the_caller_speaks_during_the_goodbye() {
    // The greeting is a goodbye with end_call, 2.5 s long; the caller starts speaking 1 s in.
    let (mut world, _endpoint) = world(
        vec![scripted(0, "end_call", json!({}))],
        2500,
        false,
        HashMap::new(),
    )
    .await;
    let (heard, report) = call(&mut world, 6, 3000).await;
    assert_eq!(
        report.end_reason,
        EndReason::Stop,
        "the caller hung up, not the model"
    );
    assert!(
        heard
            .events
            .iter()
            .any(|(_, e)| matches!(e, CallerEvent::Stop))
    );
    let requested =
        at(&report, |e| matches!(e, TimelineEvent::HangupRequested)).expect("requested");
    let cancelled =
        at(&report, |e| matches!(e, TimelineEvent::HangupCancelled)).expect("cancelled");
    assert!(cancelled > requested);
    let events = upstream_events(&world.upstream.sessions());
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "conversation.item.create"
                && e["item"]["role"] == "system"
                && e["item"]["content"][0]["text"] == voxrelay::tools::builtin::HANGUP_CANCELLED),
        "the model was told the call goes on"
    );
    // The conversation went on: the caller's turn was answered.
    assert!(at(&report, |e| matches!(e, TimelineEvent::TurnAudio { .. })).is_some());

    // Switched off for the business, end_call is not offered.
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                end_call_enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    let before = world.upstream.sessions().len();
    let _ = call(&mut world, 7, 200).await;
    let later = world.upstream.sessions();
    let events = upstream_events(&later[before..]);
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "session.update")
            .all(|e| e["session"].get("tools").is_none()),
        "no tools when end_call is off and the business has none"
    );
    world.stop().await;
}

#[tokio::test]
async fn the_booking_demo_books_with_the_hold_clip_and_the_agent_hangs_up() {
    let outcome = voxrelay_sim::demo::run(&voxrelay_sim::demo::DemoOptions {
        scenario: voxrelay_sim::demo::Scenario::Booking,
        ..Default::default()
    })
    .await
    .expect("the demo runs");
    voxrelay_sim::demo::check(&outcome).expect("the demo shows what it exists to show");
    let text = voxrelay_sim::demo::render(&outcome);
    assert!(text.contains("tool book_appointment: ok"), "{text}");
    assert!(text.contains("hold audio played"), "{text}");
    assert!(text.contains("agent_hangup"), "{text}");
}

#[tokio::test]
async fn tools_are_managed_through_the_admin_api_and_count_in_the_prompt_tokens() {
    let (world, endpoint) = world(Vec::new(), 600, true, HashMap::new()).await;
    let base = format!("http://{}/api/v1/businesses/dental/tools", world.proxy_addr);
    let client = reqwest::Client::new();
    let library = voxrelay::bootstrap::prompts(&world.config).expect("prompts");
    let draft = || voxrelay::ops::prompts::NewDraft {
        business_id: "dental".into(),
        direction: voxrelay::domain::Direction::Inbound,
        body: "We clean teeth at {{ business.name }}.".into(),
        author: "test".into(),
        note: String::new(),
    };
    let only_end_call = voxrelay::ops::prompts::create_version(&world.store, &library, draft())
        .await
        .expect("draft")
        .report
        .tools_tokens;
    assert!(only_end_call > 20, "end_call counts: {only_end_call}");

    let put = |name: &str, body: Value| {
        client
            .put(format!("{base}/{name}"))
            .bearer_auth(SIM_ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let good = json!({
        "description": "Book a dental appointment.",
        "parameters": booking("x", 1).parameters,
        "endpoint": endpoint.url("book_appointment"),
        "timeout_ms": 2500,
        "secret_env": SIM_TOOL_SECRET_ENV,
    });
    let stored: Value = put("book_appointment", good.clone())
        .await
        .expect("PUT")
        .json()
        .await
        .expect("json");
    assert_eq!(stored["timeout_ms"], 2500);
    assert_eq!(stored["kind"], "function");
    let with_booking = voxrelay::ops::prompts::create_version(&world.store, &library, draft())
        .await
        .expect("draft")
        .report
        .tools_tokens;
    assert!(
        with_booking > only_end_call + 30,
        "{only_end_call} -> {with_booking}"
    );

    // Each refusal names the field.
    for (change, field) in [
        (
            json!({"endpoint": "http://tools.example.com/book"}),
            "endpoint",
        ),
        (json!({"parameters": {"type": "array"}}), "parameters"),
        (json!({"secret_env": ""}), "secret_env"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        let answer = put("book_appointment", body).await.expect("PUT");
        assert_eq!(answer.status(), 422, "{field}");
        let text = answer.text().await.expect("text");
        assert!(text.contains(field), "{field}: {text}");
    }
    let reserved = put("end_call", good.clone()).await.expect("PUT");
    assert_eq!(reserved.status(), 422);

    // A viewer reads, and cannot change.
    let listed: Value = client
        .get(&base)
        .bearer_auth(voxrelay_sim::world::SIM_VIEWER_TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["name"], "book_appointment");
    assert!(
        listed.to_string().find(SIM_TOOL_SECRET).is_none(),
        "no secret shown"
    );
    let denied = client
        .delete(format!("{base}/book_appointment"))
        .bearer_auth(voxrelay_sim::world::SIM_VIEWER_TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(denied.status(), 403);
    let removed = client
        .delete(format!("{base}/book_appointment"))
        .bearer_auth(SIM_ADMIN_TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(removed.status(), 204);
    let again = client
        .delete(format!("{base}/book_appointment"))
        .bearer_auth(SIM_ADMIN_TOKEN)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(again.status(), 404);
    world.stop().await;
}
