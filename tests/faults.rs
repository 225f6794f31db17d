//! The fault suite: what the caller experiences and what is recorded when a peer, the
//! database or the network misbehaves. Each test runs the proxy in-process over loopback on
//! real speech (`jfk.wav`); every test's name starts with `fault_`, and `.ci/run` runs them as
//! one named step (`cargo test --workspace fault_`).
//!
//! | fault | test |
//! |---|---|
//! | Twilio socket closes without `stop` | [`fault_twilio_socket_closes_without_stop`] |
//! | database down at the webhook | [`fault_database_down_at_the_webhook`] (PostgreSQL) |
//! | database down mid-call | [`fault_database_down_mid_call`] (PostgreSQL) |
//! | SIGTERM with 20 live calls | `fault_sigterm_with_twenty_live_calls_…` in `cli/tests/lifecycle.rs` (the real binary) |
//! | SIGKILL, then restart | `fault_sigkill_then_a_restart_…` in `cli/tests/lifecycle.rs` (the real binary) |
//! | 50 webhooks at once with a limit of 10 | `fault_fifty_webhooks_at_once_…` in `tests/lifecycle.rs` |
//! | Twilio leg goes quiet mid-call | [`fault_twilio_leg_goes_quiet_mid_call`] |
//! | upstream socket closed mid-answer | [`fault_upstream_closed_mid_answer_reconnects_with_the_conversation`] |
//! | upstream connection reset mid-answer | [`fault_upstream_reset_mid_answer_reconnects_with_the_conversation`] |
//! | a slow redial (longer than 700 ms) | [`fault_a_slow_reconnect_plays_the_hold_clip_in_the_business_language`] |
//! | upstream session expiry (`session_expired`) | [`fault_session_expiry_reconnects_and_the_call_goes_on`] |
//! | session expiry, seen coming (`expires_at`) | [`fault_session_expiry_is_met_by_a_rollover_at_a_turn_boundary_with_no_gap`], [`fault_a_rollover_adds_no_silence_to_the_next_turn`] |
//! | upstream frozen mid-call | [`fault_upstream_frozen_mid_call`] (reconnects) |
//! | the upstream process frozen mid-call (SIGSTOP) | `fault_upstream_process_frozen_by_sigstop_…` in `cli/tests/frozen_upstream.rs` (fails over to the second upstream) |
//! | every redial refused | [`fault_every_redial_refused_ends_the_call_within_the_budget`] (then the fallback) |
//! | every upstream down | [`fault_every_upstream_down_sends_the_caller_to_the_business_line_or_its_apology`] |
//! | `response.create` refused for the rate limit | [`fault_response_create_refused_for_rate_is_retried_and_the_caller_is_greeted`] |
//! | upstream handshakes, then never sends an event | [`fault_upstream_handshakes_then_never_sends_an_event_falls_back_within_the_greeting_budget`] |
//! | the stream token replayed on a second stream | `fault_a_replayed_stream_token_…` in `tests/lifecycle.rs` |
//! | the first upstream hangs at its handshake | [`fault_a_hanging_first_upstream_fails_over_and_its_breaker_spares_the_next_call`] |
//! | every breaker open at the webhook | [`fault_with_every_breaker_open_the_webhook_answers_with_the_fallback_at_once`] |
//! | a black-hole upstream (connects, never answers) | [`fault_a_black_hole_upstream_costs_one_connect_timeout`] |
//! | 300 idle connections without credentials | [`fault_three_hundred_idle_connections`] |
//! | a connection that sends nothing | [`fault_an_idle_connection_is_closed_at_the_header_read_timeout`] |
//! | the upstream link impaired (150 ms RTT, jitter, stalls) | `fault_impaired_upstream_link_…` in `tests/network.rs` |
//! | the Twilio link impaired (150 ms RTT, jitter, stalls) | `fault_impaired_twilio_link_…` in `tests/network.rs` |
//!
//! The database faults go through a TCP relay in front of PostgreSQL that the test cuts (every
//! connection reset, new ones refused) and restores: the database is down for this instance
//! while the server itself keeps running for the other tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use voxrelay::call::service::SETUP_FAILED_SORRY;
use voxrelay::domain::{EndReason, FallbackAction};
use voxrelay::store::{BusinessUpdate, Store};
use voxrelay::telemetry::timeline::TimelineEvent;
use voxrelay_sim::caller::{self, CallerEvent};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{Clip, Fault, SessionLog, SimUpstreamConfig};
use voxrelay_sim::world::{Configure, World, WorldOptions};

mod common;
use common::{dental_world_from, ended_within, in_postgres_schema, metrics};

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0xfa17_0000u32 + n)
}

/// A world with the business `dental` on +15005550006, the upstream as given, the proxy's
/// configuration changed by `configure`, on `database_url` (else a fresh SQLite file).
async fn world(
    upstream: SimUpstreamConfig,
    database_url: Option<String>,
    configure: Configure,
) -> World {
    dental_world_from(WorldOptions {
        upstream,
        database_url,
        configure: Some(configure),
        twilio_validator: None,
    })
    .await
}

/// A server that takes TCP connections and never answers the WebSocket handshake: its
/// `ws://` URL, the count of connections it took, and the task holding them (abort it).
async fn black_hole() -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let hole = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole_url = format!("ws://{}", hole.local_addr().expect("addr"));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (hole_url, accepted, holder)
}

/// When the upstream's only session ended, waiting at most 3 s.
async fn upstream_ended(world: &World) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(at) = world.upstream.sessions().first().and_then(|s| s.ended_at) {
            return Some(at);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fault_twilio_socket_closes_without_stop() {
    let mut world = world(SimUpstreamConfig::default(), None, Box::new(|_| {})).await;
    let mut caller = world.caller(
        &sid(1),
        "+15005550006",
        jfk_speech(Some(1.5)).expect("speech"),
    );
    caller.close_without_stop = true;
    let heard = caller::run(caller).await.expect("call runs");
    let closed = Instant::now();
    assert!(heard.media_received > 0, "the caller was answered");
    let ended = upstream_ended(&world)
        .await
        .expect("the upstream session ended");
    let took = ended.saturating_duration_since(closed);
    assert!(
        took < Duration::from_secs(1),
        "upstream closed {took:?} after Twilio"
    );
    let report = world
        .report_for(&sid(1), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason.as_str(), "twilio_closed");
    let call = ended_within(&world.store, &sid(1), Duration::from_secs(5))
        .await
        .expect("the call is recorded as ended");
    assert_eq!(call.end_reason.as_deref(), Some("twilio_closed"));
    world.stop().await;
}

#[tokio::test]
async fn fault_twilio_leg_goes_quiet_mid_call() {
    let mut world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(|c| c.timeouts.twilio_quiet_ms = 1000),
    )
    .await;
    let mut caller = world.caller(
        &sid(2),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    caller.go_quiet = true;
    caller.tail_silence_ms = 200;
    let heard = tokio::time::timeout(Duration::from_secs(20), caller::run(caller))
        .await
        .expect("the proxy ends a call whose Twilio leg went quiet")
        .expect("call runs");
    let quiet_at = heard
        .events
        .iter()
        .find(|(_, e)| *e == CallerEvent::Quiet)
        .map(|(at, _)| *at)
        .expect("the caller went quiet");
    let closed_at = heard
        .events
        .iter()
        .find(|(_, e)| matches!(e, CallerEvent::Closed { .. }))
        .map(|(at, _)| *at)
        .expect("the proxy closed the quiet stream");
    let silent_for = closed_at.saturating_sub(quiet_at);
    assert!(
        silent_for >= Duration::from_millis(900) && silent_for < Duration::from_secs(4),
        "closed {silent_for:?} after the caller went quiet (limit 1 s)"
    );
    assert!(upstream_ended(&world).await.is_some(), "upstream closed");
    let report = world
        .report_for(&sid(2), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason.as_str(), "twilio_silent");
    let call = ended_within(&world.store, &sid(2), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("twilio_silent"));
    let text = metrics(&world).await;
    assert!(
        text.contains(r#"end_reason="twilio_silent"} 1"#),
        "counted: {text}"
    );
    world.stop().await;
}

/// The caller's question, as the simulated model transcribes it.
const QUESTION: &str = "What time do you open tomorrow?";
/// The model's answer to it.
const ANSWER: &str = "We open at eight in the morning and close at six in the evening.";

/// Where the simulated upstream writes every client event of the test `name`, when
/// `VOXRELAY_EVENT_LOG_DIR` is set (`.ci/run` sets it and validates the files against the
/// openai SDK's types, so the restore's events are checked as the demo's are).
fn event_log(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("VOXRELAY_EVENT_LOG_DIR")?;
    Some(std::path::Path::new(&dir).join(format!("reconnect_events_{name}.jsonl")))
}

/// A simulated model that greets (2 s), hears the caller's [`QUESTION`] and answers with
/// [`ANSWER`] (2 s of tone each), and suffers `fault` on its first session only.
fn answering_upstream(fault: Option<Fault>) -> SimUpstreamConfig {
    SimUpstreamConfig {
        clip: Clip::new(
            (0..2 * 8000).map(|i| (i % 64) as u8 + 32).collect(),
            "Thanks for calling, how can I help?",
        ),
        transcripts: vec![QUESTION.to_string()],
        replies: vec![
            "Thanks for calling, how can I help?".to_string(),
            ANSWER.to_string(),
        ],
        fault,
        faulty_connections: Some(1),
        ..SimUpstreamConfig::default()
    }
}

/// A caller who waits out the greeting, asks (2.5 s of speech from 2.5 s) and listens for
/// `listen_ms` before hanging up.
fn asking_caller(world: &World, n: u32, listen_ms: u64) -> voxrelay_sim::caller::CallerConfig {
    let mut caller = world.caller(
        &sid(n),
        "+15005550006",
        jfk_speech(Some(2.5)).expect("speech"),
    );
    caller.lead_silence_ms = 2500;
    caller.tail_silence_ms = listen_ms;
    caller
}

/// When (from the stream's start) and to what TwiML the simulated Twilio was told to redirect
/// the call, if it was.
fn redirected(heard: &voxrelay_sim::caller::CallerReport) -> Option<(Duration, String)> {
    heard.events.iter().find_map(|(at, e)| match e {
        CallerEvent::Redirected { twiml } => Some((*at, twiml.clone())),
        _ => None,
    })
}

/// Places a call with 1 s of speech to the dental number and waits at most 10 s for it to end.
async fn one_second_call(world: &World, n: u32) -> voxrelay_sim::caller::CallerReport {
    let caller = world.caller(
        &sid(n),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    tokio::time::timeout(Duration::from_secs(10), caller::run(caller))
        .await
        .expect("the call ends")
        .expect("call runs")
}

/// Sets where the dental business's calls fall back to (and its language, when given).
async fn set_fallback(world: &World, fallback: &str, language: Option<&str>) {
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                fallback: Some(fallback.into()),
                language: language.map(str::to_string),
                ..Default::default()
            },
        )
        .await
        .expect("fallback set");
}

/// The timeline's fallbacks: (action, delivered) in order.
fn fallbacks(report: &voxrelay::telemetry::timeline::CallReport) -> Vec<(FallbackAction, bool)> {
    report
        .timeline
        .entries()
        .iter()
        .filter_map(|(_, e)| match e {
            TimelineEvent::Fallback { action, delivered } => Some((*action, *delivered)),
            _ => None,
        })
        .collect()
}

/// The timeline's reconnects: (cause of the loss, gap ms) in order.
fn reconnects(report: &voxrelay::telemetry::timeline::CallReport) -> Vec<(EndReason, f64)> {
    let mut lost = None;
    let mut found = Vec::new();
    for (_, event) in report.timeline.entries() {
        match event {
            TimelineEvent::UpstreamLost { cause } => lost = Some(*cause),
            TimelineEvent::Reconnected { gap_ms, .. } => {
                if let Some(cause) = lost.take() {
                    found.push((cause, *gap_ms));
                }
            }
            _ => {}
        }
    }
    found
}

/// The text of each `conversation.item.create` message item a session received, as
/// (role, content type, text).
fn replayed_items(session: &SessionLog) -> Vec<(String, String, String)> {
    session
        .events_of_type("conversation.item.create")
        .iter()
        .filter_map(|event| {
            let item = event.get("item")?;
            let part = item.get("content")?.get(0)?;
            Some((
                item.get("role")?.as_str()?.to_string(),
                part.get("type")?.as_str()?.to_string(),
                part.get("text")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Every caller frame reached a session: the frames the sessions were sent add up to the
/// frames the caller sent, plus at most the frames sent again to a new session because the
/// lost one had not committed them (some of which it may have read before it died).
fn no_caller_frame_lost(
    sessions: &[SessionLog],
    heard: &voxrelay_sim::caller::CallerReport,
    report: &voxrelay::telemetry::timeline::CallReport,
) {
    let appended: u64 = sessions.iter().map(|s| s.append_events).sum();
    let resent: u64 = report
        .timeline
        .entries()
        .iter()
        .filter_map(|(_, e)| match e {
            TimelineEvent::Reconnected { resent_frames, .. }
            | TimelineEvent::Rollover { resent_frames, .. } => Some(*resent_frames as u64),
            _ => None,
        })
        .sum();
    let sent = heard.frames_sent as u64;
    assert!(
        appended >= sent && appended <= sent + resent,
        "caller frames: {sent} sent, {appended} reached a session, {resent} resent"
    );
    assert_eq!(report.counters.dropped_in, 0, "no caller frame dropped");
}

/// The instructions of each `session.update` a session received, in order.
fn instructions_sent(session: &SessionLog) -> Vec<String> {
    session
        .events_of_type("session.update")
        .iter()
        .filter_map(|e| {
            e.pointer("/session/instructions")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The first session is lost mid-answer (`fault`, 6.5 s into it: 1 s into the 2 s answer).
/// The caller hears a pause and then the conversation goes on: the new session has the FULL
/// instructions, the conversation so far with the answer cut to what was heard, every caller
/// frame (none lost across the gap), and is asked for the answer again.
async fn killed_mid_answer(fault: Fault, n: u32) {
    let upstream = SimUpstreamConfig {
        event_log: event_log(&format!("killed_{n}")),
        ..answering_upstream(Some(fault))
    };
    let mut world = world(upstream, None, Box::new(|c| c.reconnect.budget_ms = 3000)).await;
    let heard = caller::run(asking_caller(&world, n, 6000))
        .await
        .expect("call runs");
    let report = world
        .report_for(&sid(n), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "{:#?}", report.timeline);
    let found = reconnects(&report);
    assert_eq!(found.len(), 1, "{:#?}", report.timeline);
    let (cause, gap_ms) = found[0];
    assert!(cause.is_upstream_loss(), "{cause}");
    assert!(gap_ms < 1000.0, "reconnected in {gap_ms:.0} ms");

    let sessions = world.upstream.sessions();
    assert_eq!(sessions.len(), 2, "one redial");
    let (first, second) = (&sessions[0], &sessions[1]);
    let full = instructions_sent(first)
        .last()
        .cloned()
        .expect("the first session was upgraded");
    assert!(full.contains("We clean teeth."), "{full}");
    assert_eq!(
        instructions_sent(second).first(),
        Some(&full),
        "the new session starts with the FULL instructions"
    );
    let items = replayed_items(second);
    assert!(
        items.contains(&("user".into(), "input_text".into(), QUESTION.into())),
        "the caller's question is replayed: {items:?}"
    );
    let answer = items
        .iter()
        .filter(|(role, kind, _)| role == "assistant" && kind == "output_text")
        .map(|(_, _, text)| text.clone())
        .next_back()
        .expect("the model's answer is replayed");
    assert!(
        answer.ends_with('…')
            && answer.len() < ANSWER.len()
            && ANSWER.starts_with(answer.trim_end_matches('…')),
        "the answer is cut to what the caller heard: {answer:?}"
    );
    // Restore, then the answer asked for again.
    let types = second.event_types();
    let last_item = types.iter().rposition(|t| t == "conversation.item.create");
    let create = types.iter().position(|t| t == "response.create");
    assert!(
        matches!((last_item, create), (Some(i), Some(c)) if i < c),
        "items before the response is asked for again: {types:?}"
    );
    no_caller_frame_lost(&sessions, &heard, &report);
    // The caller heard the answer again from the new session.
    let lost_at = first.ended_at.expect("the first session ended");
    let started = Instant::now() - heard.events.last().map_or(Duration::ZERO, |(at, _)| *at);
    let resumed = heard
        .received
        .iter()
        .filter(|(at, text)| started + *at > lost_at && text.contains(r#""event":"media""#))
        .count();
    assert!(resumed > 10, "audio after the reconnect: {resumed} frames");
    let call = ended_within(&world.store, &sid(n), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("stop"));
    let text = metrics(&world).await;
    assert!(
        text.contains(r#"voxrelay_upstream_reconnects_total{outcome="restored"} 1"#),
        "counted: {text}"
    );
    world.stop().await;
}

#[tokio::test]
async fn fault_upstream_closed_mid_answer_reconnects_with_the_conversation() {
    killed_mid_answer(Fault::Close(6500), 3).await;
}

#[tokio::test]
async fn fault_upstream_reset_mid_answer_reconnects_with_the_conversation() {
    killed_mid_answer(Fault::Reset(6500), 7).await;
}

#[tokio::test]
async fn fault_a_slow_reconnect_plays_the_hold_clip_in_the_business_language() {
    // Every handshake takes 1.2 s: the redial after the loss outlasts the 700 ms hold threshold.
    let upstream = SimUpstreamConfig {
        connect_delay_ms: 1200,
        ..answering_upstream(Some(Fault::Close(6500)))
    };
    let mut world = world(upstream, None, Box::new(|_| {})).await;
    let heard = caller::run(asking_caller(&world, 11, 6000))
        .await
        .expect("call runs");
    let report = world
        .report_for(&sid(11), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "{:#?}", report.timeline);
    let found = reconnects(&report);
    assert_eq!(found.len(), 1, "{:#?}", report.timeline);
    assert!(found[0].1 >= 1000.0, "a slow redial: {:.0} ms", found[0].1);
    let entries = report.timeline.entries();
    let at = |wanted: fn(&TimelineEvent) -> bool| {
        entries
            .iter()
            .find(|(_, e)| wanted(e))
            .map(|(at, _)| *at)
            .expect("recorded")
    };
    let lost = at(|e| matches!(e, TimelineEvent::UpstreamLost { .. }));
    let hold = at(|e| matches!(e, TimelineEvent::HoldAudio { .. }));
    let held_for = hold.saturating_sub(lost);
    assert!(
        (Duration::from_millis(650)..Duration::from_millis(900)).contains(&held_for),
        "the hold clip starts 700 ms into the reconnect: {held_for:?}"
    );
    // The business speaks English: the caller heard the English clip whole.
    let clip = voxrelay::call::hold_audio::clip_for(Some("en"));
    assert!(
        heard.heard.windows(clip.len()).any(|w| w == clip),
        "the hold clip played in full"
    );
    let sessions = world.upstream.sessions();
    no_caller_frame_lost(&sessions, &heard, &report);
    world.stop().await;
}

#[tokio::test]
async fn fault_session_expiry_reconnects_and_the_call_goes_on() {
    // Every session lives 4 s; an 11-second call needs two new ones.
    let upstream = SimUpstreamConfig {
        session_lifetime_ms: Some(4000),
        ..answering_upstream(None)
    };
    // No rollover ahead of the expiry: the expiry itself is met.
    let mut world = world(
        upstream,
        None,
        Box::new(|c| c.reconnect.rollover_margin_ms = 0),
    )
    .await;
    let heard = caller::run(asking_caller(&world, 8, 6000))
        .await
        .expect("call runs");
    let report = world
        .report_for(&sid(8), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "{:#?}", report.timeline);
    let found = reconnects(&report);
    assert!(found.len() >= 2, "{:#?}", report.timeline);
    assert!(
        found
            .iter()
            .all(|(cause, _)| *cause == EndReason::UpstreamClosed),
        "{found:?}"
    );
    let sessions = world.upstream.sessions();
    no_caller_frame_lost(&sessions, &heard, &report);
    let expiring = report.timeline.entries().iter().any(
        |(_, e)| matches!(e, TimelineEvent::UpstreamSession { expires_in_s: Some(s) } if *s <= 4),
    );
    assert!(expiring, "expires_at was read: {:#?}", report.timeline);
    world.stop().await;
}

#[tokio::test]
async fn fault_session_expiry_is_met_by_a_rollover_at_a_turn_boundary_with_no_gap() {
    // Every session lives 9 s; the proxy opens the next one 5 s before (4 s in, while the
    // caller asks) and moves to it once the answer has played, well before the expiry.
    let upstream = SimUpstreamConfig {
        session_lifetime_ms: Some(9000),
        event_log: event_log("rollover"),
        ..answering_upstream(None)
    };
    let mut world = world(
        upstream,
        None,
        Box::new(|c| c.reconnect.rollover_margin_ms = 5000),
    )
    .await;
    let heard = caller::run(asking_caller(&world, 12, 6000))
        .await
        .expect("call runs");
    let report = world
        .report_for(&sid(12), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "{:#?}", report.timeline);
    let entries = report.timeline.entries();
    let rollovers: Vec<Duration> = entries
        .iter()
        .filter(|(_, e)| matches!(e, TimelineEvent::Rollover { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert!(!rollovers.is_empty(), "{:#?}", report.timeline);
    assert!(
        !entries
            .iter()
            .any(|(_, e)| matches!(e, TimelineEvent::UpstreamLost { .. })),
        "no session was lost: {:#?}",
        report.timeline
    );
    // The first rollover came after the answer had played, before the first session expired.
    let answered = entries
        .iter()
        .filter(|(_, e)| matches!(e, TimelineEvent::TurnAudio { .. }))
        .map(|(at, _)| *at)
        .next()
        .expect("the question was answered");
    assert!(rollovers[0] > answered, "{:#?}", report.timeline);
    assert!(
        rollovers[0] < Duration::from_secs(9),
        "{:#?}",
        report.timeline
    );
    let sessions = world.upstream.sessions();
    assert!(sessions.len() >= 2);
    // The session rolled to has FULL and the conversation.
    let items = replayed_items(&sessions[1]);
    assert!(
        items.contains(&("user".into(), "input_text".into(), QUESTION.into())),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|(role, _, text)| role == "assistant" && text == ANSWER),
        "the answer the caller heard in full is replayed whole: {items:?}"
    );
    no_caller_frame_lost(&sessions, &heard, &report);
    // The figures BENCHMARKS.md quotes (run with --nocapture): when the switch came, and that
    // the answer before it had finished (the switch waits until its audio has played too).
    let last_audio_out = entries
        .iter()
        .filter(|(_, e)| matches!(e, TimelineEvent::ResponseDone { .. }))
        .map(|(at, _)| *at)
        .rfind(|at| *at < rollovers[0]);
    let appended: u64 = sessions.iter().map(|s| s.append_events).sum();
    eprintln!(
        "rollover: at {:.0} ms (first session expiring at 9000 ms), the answer's response.done at {} ms; caller frames {} sent, {appended} reached a session, {} dropped",
        rollovers[0].as_secs_f64() * 1000.0,
        last_audio_out.map_or("-".into(), |at| format!("{:.0}", at.as_secs_f64() * 1000.0)),
        heard.frames_sent,
        report.counters.dropped_in
    );
    world.stop().await;
}

#[tokio::test]
async fn fault_a_rollover_adds_no_silence_to_the_next_turn() {
    // Sessions live 20 s; the next one is opened 14 s before (6 s in) and taken at the first
    // turn boundary after that: once the first answer has played. The caller asks twice, so
    // the second question is answered by the session rolled over to.
    let upstream = SimUpstreamConfig {
        session_lifetime_ms: Some(20_000),
        first_audio_delay_ms: 300,
        transcripts: vec![QUESTION.to_string(), QUESTION.to_string()],
        replies: vec![
            "Thanks for calling, how can I help?".to_string(),
            ANSWER.to_string(),
            ANSWER.to_string(),
        ],
        ..answering_upstream(None)
    };
    let mut world = world(
        upstream,
        None,
        Box::new(|c| c.reconnect.rollover_margin_ms = 14_000),
    )
    .await;
    let question = jfk_speech(Some(2.5)).expect("speech");
    let mut speech = question.clone();
    speech.extend(std::iter::repeat_n(
        voxrelay::audio::mulaw::SILENCE,
        4500 * voxrelay::audio::mulaw::BYTES_PER_MS,
    ));
    speech.extend(&question);
    let mut caller = world.caller(&sid(15), "+15005550006", speech);
    caller.lead_silence_ms = 2500;
    caller.tail_silence_ms = 5000;
    let heard = caller::run(caller).await.expect("call runs");
    let report = world
        .report_for(&sid(15), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop);
    let entries = report.timeline.entries();
    let rollover = entries
        .iter()
        .find(|(_, e)| matches!(e, TimelineEvent::Rollover { .. }))
        .map(|(at, _)| *at)
        .expect("rolled over");
    let turns: Vec<(Duration, f64)> = entries
        .iter()
        .filter_map(|(at, e)| match e {
            TimelineEvent::TurnAudio { latency_ms } => Some((*at, *latency_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 2, "two questions answered: {entries:?}");
    assert!(
        turns[0].0 < rollover && rollover < turns[1].0,
        "the first answered before the rollover, the second after: {entries:?}"
    );
    let heard_turns = &report.turn_heard_ms;
    assert_eq!(heard_turns.len(), 2, "{heard_turns:?}");
    let (before, after) = (turns[0].1, turns[1].1);
    eprintln!(
        "rollover: turn latency {before:.1} ms before the rollover, {after:.1} ms after; as heard \
         at the caller {:.1} ms and {:.1} ms; rolled over at {:.0} ms",
        heard_turns[0],
        heard_turns[1],
        rollover.as_secs_f64() * 1000.0
    );
    // No added silence: the answer from the new session comes as soon as one from the old.
    assert!(
        after <= before + 50.0,
        "turn after the rollover {after:.1} ms, before {before:.1} ms"
    );
    assert!(
        heard_turns[1] <= heard_turns[0] + 50.0,
        "as heard: {heard_turns:?}"
    );
    no_caller_frame_lost(&world.upstream.sessions(), &heard, &report);
    world.stop().await;
}

#[tokio::test]
async fn fault_upstream_frozen_mid_call() {
    // The first session answers, then stops reading and writing 1.5 s in (pings go
    // unanswered); the call's upstream leg is dead after 1 s of that and is replaced.
    let mut world = world(
        answering_upstream(Some(Fault::StopReading(1500))),
        None,
        Box::new(|c| {
            c.timeouts.upstream_ping_ms = 300;
            c.timeouts.upstream_quiet_ms = 1000;
        }),
    )
    .await;
    let heard = caller::run(asking_caller(&world, 9, 5000))
        .await
        .expect("call runs");
    assert!(
        heard.events.iter().any(|(_, e)| *e == CallerEvent::Stop),
        "the caller hung up; the proxy did not"
    );
    let report = world
        .report_for(&sid(9), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop, "{:#?}", report.timeline);
    let found = reconnects(&report);
    assert_eq!(
        found.iter().map(|(cause, _)| *cause).collect::<Vec<_>>(),
        vec![EndReason::UpstreamSilent],
        "{:#?}",
        report.timeline
    );
    // The caller's question, asked after the freeze, was heard by the new session.
    let sessions = world.upstream.sessions();
    assert_eq!(sessions.len(), 2);
    assert!(sessions[1].append_events > 0);
    assert!(
        sessions[1]
            .event_types()
            .iter()
            .any(|t| t == "response.create"),
        "the new session answers"
    );
    world.stop().await;
}

#[tokio::test]
async fn fault_every_redial_refused_ends_the_call_within_the_budget() {
    // The first session closes 3 s in; every later handshake is refused (HTTP 503).
    let upstream = SimUpstreamConfig {
        accepted_handshakes: Some(1),
        ..answering_upstream(Some(Fault::Close(3000)))
    };
    let mut world = world(upstream, None, Box::new(|c| c.reconnect.budget_ms = 1500)).await;
    let heard = caller::run(asking_caller(&world, 10, 8000))
        .await
        .expect("call runs");
    // No model could be had again: the caller goes to the business's fallback (the
    // configured default here, the apology), redirected while the stream is still open.
    let (redirected_at, twiml) = redirected(&heard).expect("the call went to its fallback");
    assert!(
        redirected_at < Duration::from_millis(3000 + 1500 + 1500),
        "within the reconnect budget: {redirected_at:?}"
    );
    assert!(twiml.contains("Hangup"), "{twiml}");
    let report = world
        .report_for(&sid(10), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::UpstreamLost);
    assert_eq!(
        fallbacks(&report),
        vec![(FallbackAction::Apology, true)],
        "{:?}",
        report.timeline.entries()
    );
    let failed = report.timeline.entries().iter().find_map(|(_, e)| match e {
        TimelineEvent::ReconnectFailed {
            attempts,
            waited_ms,
        } => Some((*attempts, *waited_ms)),
        _ => None,
    });
    let (attempts, waited_ms) = failed.expect("the failure is recorded");
    assert!(attempts >= 2, "redialled with backoff: {attempts}");
    assert!(waited_ms <= 1600.0, "{waited_ms}");
    let call = ended_within(&world.store, &sid(10), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("upstream_lost"));
    world.stop().await;
}

#[tokio::test]
async fn fault_every_upstream_down_sends_the_caller_to_the_business_line_or_its_apology() {
    // Every handshake is refused (HTTP 503): no model for the pre-warm, nor for its retry.
    let upstream = SimUpstreamConfig {
        accepted_handshakes: Some(0),
        ..SimUpstreamConfig::default()
    };
    let world = world(upstream, None, Box::new(|_| {})).await;
    set_fallback(&world, "+1 (500) 555-0123", None).await;
    let heard = one_second_call(&world, 40).await;
    let (_, twiml) = redirected(&heard).expect("the call went to the business's line");
    assert!(
        twiml.contains(r#"<Say language="en-US">Sorry, our assistant is unavailable."#),
        "{twiml}"
    );
    assert!(
        twiml.ends_with("<Dial>+15005550123</Dial></Response>"),
        "{twiml}"
    );
    assert_eq!(heard.media_received, 0, "no model spoke");
    let redirects = world.twilio.redirects();
    assert_eq!(redirects.len(), 1, "{redirects:?}");
    let redirect = &redirects[0];
    assert_eq!(redirect.call_sid, sid(40));
    assert_eq!(redirect.account_sid, caller::account_sid());
    assert!(
        redirect.authorized,
        "Basic auth with the account and the token"
    );
    assert!(
        redirect.while_live,
        "redirected before the stream was closed"
    );
    let call = ended_within(&world.store, &sid(40), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(
        call.end_reason.as_deref(),
        Some("upstream_unavailable"),
        "a fallback is still a failed call"
    );

    // The same outage for a Spanish-speaking business that wants no transfer: the apology in
    // its language, then a hang-up.
    set_fallback(&world, "apology", Some("es")).await;
    let heard = one_second_call(&world, 41).await;
    let (_, twiml) = redirected(&heard).expect("the call heard the apology");
    assert!(
        twiml.contains(r#"<Say language="es-ES">Lo sentimos, no podemos atender su llamada"#),
        "{twiml}"
    );
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");
    let call = ended_within(&world.store, &sid(41), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("upstream_unavailable"));
    let text = metrics(&world).await;
    for action in ["dial", "apology"] {
        let line =
            format!("voxrelay_call_fallbacks_total{{action=\"{action}\",delivered=\"true\"}} 1");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    world.stop().await;
}

#[tokio::test]
async fn fault_upstream_handshakes_then_never_sends_an_event_falls_back_within_the_greeting_budget()
{
    // The upstream takes the handshake and reads everything, answers pings, and sends nothing:
    // not even session.created.
    let upstream = answering_upstream(Some(Fault::Mute(0)));
    let budget_ms = 1500;
    let mut world = world(
        upstream,
        None,
        Box::new(move |c| c.fallback.greeting_budget_ms = budget_ms),
    )
    .await;
    let heard = tokio::time::timeout(
        Duration::from_secs(15),
        caller::run(asking_caller(&world, 42, 6000)),
    )
    .await
    .expect("the call ends")
    .expect("call runs");
    let (at, twiml) = redirected(&heard).expect("the call went to its fallback");
    assert!(twiml.contains(SETUP_FAILED_SORRY), "{twiml}");
    assert!(
        at >= Duration::from_millis(budget_ms - 50) && at < Duration::from_millis(budget_ms + 500),
        "within the greeting budget of {budget_ms} ms: {at:?}"
    );
    assert_eq!(
        heard.media_received, 0,
        "the caller heard only the fallback"
    );
    let report = world
        .report_for(&sid(42), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::NoGreeting);
    assert_eq!(fallbacks(&report), vec![(FallbackAction::Apology, true)]);
    let call = ended_within(&world.store, &sid(42), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("no_greeting"));
    world.stop().await;
}

#[tokio::test]
async fn fault_response_create_refused_for_rate_is_retried_and_the_caller_is_greeted() {
    // The first two response.creates of the session fail with rate_limit_exceeded, the
    // requests limit spent for 200 ms each time.
    let upstream = SimUpstreamConfig {
        refused_responses: 2,
        ..answering_upstream(None)
    };
    let mut world = world(upstream, None, Box::new(|_| {})).await;
    let heard = caller::run(asking_caller(&world, 43, 4000))
        .await
        .expect("call runs");
    assert!(
        heard.media_received > 0,
        "the caller was greeted after the retries"
    );
    let first_audio = heard.first_audio_ms().expect("first audio");
    let backoff: u64 = voxrelay::call::state::RESPONSE_RETRY_BACKOFF_MS[..2]
        .iter()
        .sum();
    assert!(
        first_audio >= backoff as f64,
        "the greeting came after the backoff ({backoff} ms): {first_audio} ms"
    );
    assert!(first_audio < 3000.0, "{first_audio} ms");
    let report = world
        .report_for(&sid(43), Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(report.end_reason, EndReason::Stop);
    let retries: Vec<(u32, u64)> = report
        .timeline
        .entries()
        .iter()
        .filter_map(|(_, e)| match e {
            TimelineEvent::ResponseRetry {
                attempt,
                wait_ms,
                code,
            } if code == "rate_limit_exceeded" => Some((*attempt, *wait_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        vec![(1, 250), (2, 500)],
        "{:?}",
        report.timeline.entries()
    );
    assert_eq!(report.counters.response_retries, 2);
    let creates = world.upstream.sessions()[0]
        .event_types()
        .iter()
        .filter(|t| *t == "response.create")
        .count();
    assert!(creates >= 3, "two refused, then the greeting: {creates}");
    let text = metrics(&world).await;
    assert!(
        text.contains("voxrelay_upstream_rate_limit_remaining{name=\"requests\"}"),
        "rate_limits.updated is tracked"
    );
    world.stop().await;
}

#[tokio::test]
async fn fault_with_every_breaker_open_the_webhook_answers_with_the_fallback_at_once() {
    // The only upstream takes TCP connections and never answers; one failure opens its breaker
    // for the default cool-down (30 s).
    let (hole_url, accepted, holder) = black_hole().await;
    let world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(move |c| {
            c.upstream.url = hole_url;
            c.upstream.connect_timeout_ms = 300;
            c.upstream.breaker_failures = 1;
        }),
    )
    .await;
    set_fallback(&world, "+15005550123", None).await;
    // The first call costs one connect timeout, then is redirected to the business's line.
    let heard = one_second_call(&world, 44).await;
    let (_, twiml) = redirected(&heard).expect("redirected to the business's line");
    assert!(twiml.contains("<Dial>+15005550123</Dial>"), "{twiml}");
    // The second finds the breaker open: the webhook answers with the same fallback, no stream,
    // no dial, no dead air.
    let second = world.caller(
        &sid(45),
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    let began = std::time::Instant::now();
    let heard = tokio::time::timeout(Duration::from_secs(10), caller::run(second))
        .await
        .expect("the call ends")
        .expect("call runs");
    let took = began.elapsed();
    assert!(!heard.streamed, "no media stream: {}", heard.twiml);
    assert!(
        heard.twiml.contains("Sorry, our assistant is unavailable.")
            && heard.twiml.contains("<Dial>+15005550123</Dial>"),
        "{}",
        heard.twiml
    );
    assert!(
        took < Duration::from_millis(300),
        "answered at once: {took:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second call dialled nothing"
    );
    let call = ended_within(&world.store, &sid(45), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("upstream_unavailable"));
    let text = metrics(&world).await;
    assert!(
        text.contains(r#"voxrelay_call_fallbacks_total{action="dial",delivered="true"} 2"#),
        "{text}"
    );
    holder.abort();
    world.stop().await;
}

#[tokio::test]
async fn fault_a_black_hole_upstream_costs_one_connect_timeout() {
    // Takes TCP connections and never answers the WebSocket handshake.
    let (hole_url, accepted, holder) = black_hole().await;
    let world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(move |c| {
            c.upstream.url = hole_url;
            c.upstream.connect_timeout_ms = 500;
        }),
    )
    .await;
    let heard = one_second_call(&world, 7).await;
    // The caller is not left in silence: the apology, while the stream is open.
    let (_, twiml) = redirected(&heard).expect("the call went to its fallback");
    assert!(twiml.contains(SETUP_FAILED_SORRY), "{twiml}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the pre-warm timed out; the call did not dial again"
    );
    let call = ended_within(&world.store, &sid(7), Duration::from_secs(5))
        .await
        .expect("recorded");
    assert_eq!(call.end_reason.as_deref(), Some("upstream_unavailable"));
    let text = metrics(&world).await;
    assert!(
        text.contains("voxrelay_upstream_connect_failures_total 1"),
        "{text}"
    );
    holder.abort();
    world.stop().await;
}

#[tokio::test]
async fn fault_a_hanging_first_upstream_fails_over_and_its_breaker_spares_the_next_call() {
    // The first upstream takes TCP connections and never answers the handshake; the second
    // is the simulator. One failure opens the first one's breaker.
    let (hole_url, accepted, holder) = black_hole().await;
    let mut world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(move |c| {
            let sim = std::mem::replace(&mut c.upstream.url, hole_url);
            c.upstream
                .fallback
                .push(voxrelay::config::FallbackUpstream {
                    name: "second".into(),
                    provider: voxrelay::realtime::Provider::Openai,
                    url: sim,
                    model: c.upstream.model.clone(),
                    api_key_env: String::new(),
                    connect_timeout_ms: None,
                });
            c.upstream.connect_timeout_ms = 500;
            c.upstream.breaker_failures = 1;
        }),
    )
    .await;
    let mut first_audio = Vec::new();
    for n in [13, 14] {
        let caller = world.caller(
            &sid(n),
            "+15005550006",
            jfk_speech(Some(1.0)).expect("speech"),
        );
        let heard = caller::run(caller).await.expect("call runs");
        let audio = heard
            .first_audio_ms()
            .expect("the caller was greeted by the second upstream");
        first_audio.push(audio);
        let report = world
            .report_for(&sid(n), Duration::from_secs(5))
            .await
            .expect("report");
        assert_eq!(report.end_reason, EndReason::Stop);
        // Each call's timeline says it runs on the second upstream.
        let failovers: Vec<(String, usize)> = report
            .timeline
            .entries()
            .iter()
            .filter_map(|(_, e)| match e {
                TimelineEvent::Failover { upstream, position } => {
                    Some((upstream.clone(), *position))
                }
                _ => None,
            })
            .collect();
        assert_eq!(failovers, vec![("second".to_string(), 1)], "call {n}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the second call skipped the hanging upstream"
    );
    // The first call waited out one connect timeout (500 ms) before the second upstream; the
    // second call did not.
    let (first, second) = (first_audio[0], first_audio[1]);
    // The figure BENCHMARKS.md quotes (run with --nocapture).
    eprintln!(
        "failover: first call greeted {first:.1} ms after start (connect timeout 500 ms), \
         second call {second:.1} ms (breaker open)"
    );
    assert!(
        second + 300.0 < first && first < 500.0 + second + 150.0,
        "greeted at {first:.0} ms (a connect timeout, then the second upstream), then {second:.0} ms"
    );
    let text = metrics(&world).await;
    assert!(
        text.contains(r#"voxrelay_upstream_failovers_total{upstream="second"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"voxrelay_upstream_breaker_open{upstream="openai"} 1"#),
        "{text}"
    );
    holder.abort();
    world.stop().await;
}

#[tokio::test]
async fn fault_three_hundred_idle_connections() {
    let world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(|c| c.server.max_connections = 100),
    )
    .await;
    // 300 sockets that never send a byte: three times the cap.
    let mut idle = Vec::with_capacity(300);
    for _ in 0..300 {
        idle.push(TcpStream::connect(world.proxy_addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let caller = world.caller(&sid(4), "+15005550006", Vec::new());
    let client = reqwest::Client::new();
    let answered = tokio::time::timeout(Duration::from_secs(5), caller::answer(&caller, &client))
        .await
        .expect("the webhook is answered while idle sockets hold the cap")
        .expect("webhook");
    assert_eq!(answered.status, 200);
    assert!(answered.stream.is_some(), "{}", answered.twiml);
    // The oldest idle sockets were closed to make room.
    let mut closed = 0;
    for socket in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(5), socket.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 200, "{closed} idle sockets closed");
    let text = metrics(&world).await;
    let evicted: f64 = text
        .lines()
        .find(|l| l.starts_with(r#"voxrelay_http_connections_shed_total{why="idle_evicted"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(evicted >= 200.0, "{text}");
    world.stop().await;
}

#[tokio::test]
async fn fault_an_idle_connection_is_closed_at_the_header_read_timeout() {
    let world = world(
        SimUpstreamConfig::default(),
        None,
        Box::new(|c| c.server.header_read_timeout_ms = 300),
    )
    .await;
    let mut socket = TcpStream::connect(world.proxy_addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the silent connection is closed by the proxy, not held: {read:?}"
    );
    world.stop().await;
}

/// A TCP relay to PostgreSQL that can be cut (every relayed connection reset, new ones closed
/// at once) and restored.
struct DatabaseLink {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DatabaseLink {
    async fn to(target: SocketAddr) -> DatabaseLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (d, c) = (down.clone(), cut.clone());
        let task = tokio::spawn(async move {
            let mut links = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        if d.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        links.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                    _ = c.notified() => links.abort_all(),
                    Some(_) = links.join_next(), if !links.is_empty() => {}
                }
            }
        });
        DatabaseLink {
            addr,
            down,
            cut,
            task,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_one();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// `url` (`postgres://user@host:port/db…`) through this link.
    fn url(&self, url: &str) -> String {
        let (scheme, user, _, path) = url_parts(url);
        let at = if user.is_empty() { "" } else { "@" };
        format!("{scheme}://{user}{at}{}{path}", self.addr)
    }
}

/// A `postgres://user@host:port/db…` URL's scheme, user, authority and the rest.
fn url_parts(url: &str) -> (&str, &str, &str, &str) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, rest) = rest.split_once('@').unwrap_or(("", rest));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (scheme, user, authority, path)
}

/// The server address of a PostgreSQL URL (`127.0.0.1:5432` when it names none).
fn database_addr(url: &str) -> SocketAddr {
    let (_, _, authority, _) = url_parts(url);
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:5432")
    };
    let authority = authority.replace("localhost", "127.0.0.1");
    authority.parse().expect("a host:port PostgreSQL URL")
}

impl Drop for DatabaseLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn fault_database_down_mid_call() {
    in_postgres_schema("fault_database_down_mid_call", |url| async move {
        let direct = Store::connect(&url).await.expect("direct store");
        direct.migrate().await.expect("migrate");
        let link = DatabaseLink::to(database_addr(&url)).await;
        let through = link.url(&url);
        let mut world = world(
            SimUpstreamConfig::default(),
            Some(through),
            Box::new(|_| {}),
        )
        .await;
        let mut caller = world.caller(
            &sid(5),
            "+15005550006",
            jfk_speech(Some(2.0)).expect("speech"),
        );
        caller.lead_silence_ms = 1500;
        caller.tail_silence_ms = 1500;
        let call = tokio::spawn(caller::run(caller));
        // Cut once the call is in progress: its row is open, the stream claimed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(row)) = direct.call(&sid(5)).await
                && row.stream_sid.is_some()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the call never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        link.cut();
        let heard = call.await.expect("task").expect("call runs");
        assert!(heard.media_received > 0, "the caller was answered");
        assert!(
            heard.events.iter().any(|(_, e)| *e == CallerEvent::Stop),
            "the call went on to its hang-up"
        );
        assert!(
            !heard
                .events
                .iter()
                .any(|(_, e)| matches!(e, CallerEvent::Closed { code: Some(c), .. } if *c != 1000)),
            "no error close: {:?}",
            heard.events
        );
        let report = world
            .report_for(&sid(5), Duration::from_secs(15))
            .await
            .expect("report");
        assert_eq!(report.end_reason.as_str(), "stop");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = direct.call(&sid(5)).await.expect("read").expect("row");
        assert_eq!(
            row.ended_at_ms, None,
            "nothing could be written while it was down"
        );

        link.restore();
        let row = ended_within(&direct, &sid(5), Duration::from_secs(15))
            .await
            .expect("the end is written once the database is back");
        assert_eq!(row.end_reason.as_deref(), Some("stop"));
        assert!(row.summary.is_some(), "with its summary: {row:?}");
        world.stop().await;
        direct.close().await;
    })
    .await;
}

#[tokio::test]
async fn fault_database_down_at_the_webhook() {
    in_postgres_schema("fault_database_down_at_the_webhook", |url| async move {
        let direct = Store::connect(&url).await.expect("direct store");
        direct.migrate().await.expect("migrate");
        let link = DatabaseLink::to(database_addr(&url)).await;
        let through = link.url(&url);
        let world = world(
            SimUpstreamConfig::default(),
            Some(through),
            Box::new(|_| {}),
        )
        .await;
        link.cut();
        let caller = world.caller(&sid(6), "+15005550006", Vec::new());
        let answered = caller::answer(&caller, &reqwest::Client::new())
            .await
            .expect("webhook");
        assert_eq!(answered.status, 200, "TwiML, not an error page");
        assert!(answered.stream.is_none());
        assert!(
            answered.twiml.contains("cannot take your call")
                && answered.twiml.contains("<Hangup/>"),
            "{}",
            answered.twiml
        );
        assert_eq!(world.upstream.connections(), 0, "no upstream cost");
        let text = metrics(&world).await;
        assert!(
            text.contains(r#"end_reason="setup_failed"} 1"#),
            "counted: {text}"
        );
        link.restore();
        world.stop().await;
        direct.close().await;
    })
    .await;
}
