//! The relay legs under backpressure, over real loopback sockets: a simulated Twilio that stops
//! reading (with small socket buffers, so the stall reaches the proxy within a second), a
//! simulated upstream that sends a long answer faster than real time, and the ways a call ends.

use std::time::Duration;

use serde_json::Value;

use voxrelay::domain::EndReason;
use voxrelay::telemetry::timeline::{CallReport, TimelineEvent};
use voxrelay_sim::caller::{CallerConfig, CallerEvent, CallerReport};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{Clip, Fault, SimUpstreamConfig};
use voxrelay_sim::world::{World, WorldOptions};

/// Audio waiting in the Twilio leg before audio is dropped, frames.
const QUEUE_FRAMES: usize = 10;
/// Places kept for control messages.
const CONTROL_QUEUE: usize = 64;
/// Socket buffers on both sides of the Twilio connection, bytes.
const SOCKET_BUFFER: usize = 4096;

/// A world whose Twilio leg holds little, with the given stall limit, whose model answers with
/// `answer_s` seconds of audio per response, sent at once or at real-time pace.
async fn tight_world(stall_limit_ms: u64, answer_s: usize, realtime_pace: bool) -> World {
    // A tone-like, non-silent clip (its content does not matter to the relay).
    let clip = Clip::new(
        (0..answer_s * 8000).map(|i| (i % 64) as u8 + 32).collect(),
        "Thanks for calling, how can I help?",
    );
    world_with(
        SimUpstreamConfig {
            clip,
            realtime_pace,
            chunk_ms: 100,
            ..SimUpstreamConfig::default()
        },
        stall_limit_ms,
    )
    .await
}

/// A world with this simulated upstream, small leg queues and socket buffers, and the given
/// stall limit. A lost upstream is not replaced (`reconnect.max_per_call = 0`): these tests are
/// about how a leg's end is told apart; `tests/faults.rs` has the reconnects.
async fn world_with(upstream: SimUpstreamConfig, stall_limit_ms: u64) -> World {
    let world = World::start(WorldOptions {
        upstream,
        database_url: None,
        configure: Some(Box::new(move |c| {
            c.audio.queue_frames = QUEUE_FRAMES;
            c.audio.control_queue = CONTROL_QUEUE;
            c.audio.stall_limit_ms = stall_limit_ms;
            c.server.socket_send_buffer_bytes = SOCKET_BUFFER;
            c.upstream.socket_send_buffer_bytes = SOCKET_BUFFER;
            c.reconnect.max_per_call = 0;
        })),
        twilio_validator: None,
    })
    .await
    .expect("world starts");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "Bright Smile Dental cleans teeth.",
            "Say hello.",
            "+15005550006",
        )
        .await
        .expect("business");
    world
}

/// The end reason stored in the call record of `call_sid`.
async fn recorded_end(world: &World, call_sid: &str) -> Option<String> {
    world
        .store
        .call(call_sid)
        .await
        .expect("store")
        .expect("call recorded")
        .end_reason
}

fn caller(world: &World, n: u32) -> CallerConfig {
    let mut c = world.caller(
        &format!("CA{n:032x}"),
        "+15005550006",
        jfk_speech(Some(2.0)).expect("speech"),
    );
    c.recv_buffer_bytes = Some(SOCKET_BUFFER);
    c
}

/// The proxy's messages as Twilio received them, up to the first `clear`: (event, mark name).
fn received_until_clear(report: &CallerReport) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (_, text) in &report.received {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let event = value["event"].as_str().unwrap_or("").to_string();
        let mark = value["mark"]["name"].as_str().map(str::to_string);
        let clear = event == "clear";
        out.push((event, mark));
        if clear {
            break;
        }
    }
    out
}

fn barge_in_truncate(proxy: &CallReport) -> Option<u64> {
    proxy.timeline.entries().iter().find_map(|(_, e)| match e {
        TimelineEvent::BargeIn { truncate_ms, .. } => Some(truncate_ms.unwrap_or(0)),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_twilio_queue_drops_audio_that_then_counts_toward_nothing_and_barge_in_still_works()
{
    // 30 s of greeting arrive at once; Twilio reads nothing for the first 2.5 s, then plays
    // what reached it; the caller talks over it at 3.5 s and hangs up before their turn ends
    // (so no second answer adds to the counts).
    let mut world = tight_world(10_000, 30, false).await;
    let mut c = caller(&world, 1);
    c.stop_reading = Some((0, 2_500));
    c.lead_silence_ms = 3_500;
    c.tail_silence_ms = 200;
    let (twilio, proxy) = world.call(c).await.expect("call runs");
    let proxy = proxy.expect("proxy reported the call");

    // The drop is counted, and it is most of the 30 s answer.
    assert!(proxy.counters.dropped_out >= 200, "{:?}", proxy.counters);
    let seen = received_until_clear(&twilio);
    assert_eq!(
        seen.last().map(|(e, _)| e.as_str()),
        Some("clear"),
        "the clear went out after the queued audio: {seen:?}"
    );
    // What the leg accepted reached Twilio in order before the clear: every media frame is
    // 100 ms, and each mark follows the audio it covers. No mark covers dropped audio: a mark
    // goes out after each 500 ms of audio that was sent (the k-th, 0-based, after at least
    // (k + 1) × 500 ms of it), plus one for the tail when the answer's audio is done, so there
    // are never more marks than the audio Twilio got fills.
    let mut audio_ms = 0u64;
    let mut marks_at: Vec<u64> = Vec::new();
    for (event, _) in &seen {
        match event.as_str() {
            "media" => audio_ms += 100,
            "mark" => marks_at.push(audio_ms),
            _ => {}
        }
    }
    let marks = marks_at.len() as u64;
    for (k, at) in marks_at
        .iter()
        .enumerate()
        .take(marks_at.len().saturating_sub(1))
    {
        assert!(
            *at >= (k as u64 + 1) * 500,
            "mark {k} after {at} ms of audio covers audio that was never sent: {marks_at:?}"
        );
    }
    assert!(
        marks <= audio_ms / 500 + 1,
        "{marks} marks for {audio_ms} ms of audio: {marks_at:?}"
    );
    assert!(marks >= 1, "marks went out: {seen:?}");
    // Every one of the answer's 300 deltas either reached Twilio or was dropped and counted.
    assert_eq!(
        audio_ms,
        (300 - proxy.counters.dropped_out) * 100,
        "{:?}",
        proxy.counters
    );
    // The truncate position is what Twilio played of the audio that was queued: never more
    // than that audio, and within 40 ms of what the simulated Twilio says it played.
    let truncate = barge_in_truncate(&proxy).expect("a barge-in");
    assert!(
        truncate <= audio_ms,
        "truncate {truncate} > queued {audio_ms}"
    );
    let heard = twilio
        .clears()
        .first()
        .map(|(_, heard)| *heard)
        .expect("Twilio saw the clear");
    assert!(
        truncate.abs_diff(heard) <= 40,
        "truncate {truncate} ms, Twilio played {heard} ms"
    );
    assert!(
        proxy.counters.peak_waiting_twilio <= (QUEUE_FRAMES + CONTROL_QUEUE) as u64,
        "{:?}",
        proxy.counters
    );
    assert_eq!(proxy.end_reason, EndReason::Stop);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_that_stops_reading_past_the_stall_limit_ends_the_call_with_a_record() {
    // The model talks at real-time pace for a minute; Twilio stops reading at 0.5 s for 20 s.
    let mut world = tight_world(1_500, 60, true).await;
    let mut c = caller(&world, 2);
    c.stop_reading = Some((500, 20_000));
    c.lead_silence_ms = 12_000;
    c.tail_silence_ms = 0;
    let started = std::time::Instant::now();
    let (twilio, proxy) = world.call(c).await.expect("call runs");
    let proxy = proxy.expect("proxy reported the call");

    assert_eq!(proxy.end_reason, EndReason::TwilioStalled);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the proxy ended the call instead of waiting for Twilio"
    );
    // Memory stays bounded: the queue never held more than its caps.
    assert!(
        proxy.counters.peak_waiting_twilio <= (QUEUE_FRAMES + CONTROL_QUEUE) as u64,
        "{:?}",
        proxy.counters
    );
    assert!(
        proxy.counters.peak_waiting_twilio >= QUEUE_FRAMES as u64,
        "the queue filled: {:?}",
        proxy.counters
    );
    // The upstream leg kept being read while Twilio stalled: its deltas kept arriving (and,
    // with nowhere to go, were dropped and counted), and Twilio's own frames kept going up.
    assert!(proxy.counters.dropped_out > 0, "{:?}", proxy.counters);
    assert!(
        proxy.counters.frames_in >= 100,
        "caller audio was relayed during the stall: {:?}",
        proxy.counters
    );
    assert!(
        twilio
            .events
            .iter()
            .all(|(_, e)| !matches!(e, CallerEvent::Stop)),
        "Twilio never hung up: the proxy ended it"
    );
    assert_eq!(
        recorded_end(&world, &proxy.call_sid).await.as_deref(),
        Some("twilio_stalled")
    );
    world.stop().await;
}

#[tokio::test]
async fn an_oversized_twilio_message_ends_the_call_as_a_twilio_error() {
    let mut world = tight_world(5_000, 2, true).await;
    let mut c = caller(&world, 3);
    c.recv_buffer_bytes = None;
    // Far above the 64 KiB the proxy accepts from Twilio.
    c.inject = vec![(
        10,
        format!(
            "{{\"event\":\"media\",\"pad\":\"{}\"}}",
            "x".repeat(100_000)
        ),
    )];
    c.lead_silence_ms = 1_000;
    c.tail_silence_ms = 1_000;
    let (_, proxy) = world.call(c).await.expect("call runs");
    let proxy = proxy.expect("proxy reported the call");
    assert_eq!(proxy.end_reason, EndReason::TwilioError);
    assert_eq!(
        recorded_end(&world, &proxy.call_sid).await.as_deref(),
        Some("twilio_error")
    );
    world.stop().await;
}

/// Places a 4-second call on `world` and returns how the proxy says it ended, checking that
/// the call record says the same.
async fn ending_of(
    world: &mut World,
    n: u32,
    configure: impl FnOnce(&mut CallerConfig),
) -> EndReason {
    let mut c = caller(world, n);
    c.recv_buffer_bytes = None;
    c.lead_silence_ms = 1_000;
    c.tail_silence_ms = 3_000;
    configure(&mut c);
    let (_, proxy) = world.call(c).await.expect("call runs");
    let proxy = proxy.expect("proxy reported the call");
    assert_eq!(
        recorded_end(world, &proxy.call_sid).await.as_deref(),
        Some(proxy.end_reason.as_str())
    );
    proxy.end_reason
}

#[tokio::test]
async fn a_twilio_socket_closed_without_stop_ends_as_twilio_closed() {
    let mut world = tight_world(5_000, 2, true).await;
    let reason = ending_of(&mut world, 4, |c| c.close_without_stop = true).await;
    assert_eq!(reason, EndReason::TwilioClosed);
    world.stop().await;
}

/// How a call ends when every upstream connection suffers `fault`.
async fn ending_with_upstream(fault: Fault, n: u32) -> EndReason {
    let mut world = world_with(
        SimUpstreamConfig {
            fault: Some(fault),
            ..SimUpstreamConfig::default()
        },
        5_000,
    )
    .await;
    let reason = ending_of(&mut world, n, |_| {}).await;
    world.stop().await;
    reason
}

#[tokio::test]
async fn an_upstream_that_closes_the_session_ends_the_call_as_upstream_closed() {
    assert_eq!(
        ending_with_upstream(Fault::Close(1_500), 5).await,
        EndReason::UpstreamClosed
    );
}

#[tokio::test]
async fn an_upstream_connection_that_drops_ends_the_call_as_upstream_error() {
    assert_eq!(
        ending_with_upstream(Fault::Reset(1_500), 6).await,
        EndReason::UpstreamError
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_reading_past_the_stall_limit_ends_the_call_as_upstream_stalled() {
    let mut world = world_with(
        SimUpstreamConfig {
            fault: Some(Fault::StopReading(500)),
            recv_buffer_bytes: Some(SOCKET_BUFFER),
            ..SimUpstreamConfig::default()
        },
        1_000,
    )
    .await;
    let started = std::time::Instant::now();
    let reason = ending_of(&mut world, 7, |c| {
        c.lead_silence_ms = 1_000;
        c.tail_silence_ms = 40_000;
    })
    .await;
    assert_eq!(reason, EndReason::UpstreamStalled);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the proxy ended the call, not the caller"
    );
    world.stop().await;
}
