//! Calls that end on purpose and calls that are refused, in-process over loopback on real
//! speech: the single-use stream claim (a replayed token), the call limits (50 webhooks at once
//! with a limit of 10), the longest call duration (a goodbye, then `max_duration`), a pending
//! call nobody streams (`no_stream`) and `/readyz`. Each refused or ended call leaves a record.
//! The drain on SIGTERM and crash recovery need the real binary: `cli/tests/lifecycle.rs`.

use std::time::Duration;

use serde_json::Value;

use voxrelay::domain::EndReason;
use voxrelay::store::{BusinessUpdate, CallRecord};
use voxrelay_sim::caller::{self, CallerEvent};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::world::World;

mod common;
use common::{dental_world, dental_world_configured, ended_within, metrics};

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0x1fec_0000u32 + n)
}

/// Waits (at most 5 s) until the call record of `call_sid` has ended, and returns it.
async fn ended(world: &World, call_sid: &str) -> CallRecord {
    ended_within(&world.store, call_sid, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("{call_sid} never ended in the database"))
}

#[tokio::test]
async fn fault_a_replayed_stream_token_is_refused_before_any_upstream_cost() {
    let mut world = dental_world(0).await;
    let speech = jfk_speech(Some(1.0)).expect("speech");
    let call_sid = sid(1);
    let caller = world.caller(&call_sid, "+15005550006", speech.clone());
    let answered = caller::answer(&caller, &reqwest::Client::new())
        .await
        .expect("webhook");
    let (url, token) = answered.stream.expect("a stream");
    let token = token.expect("a token");

    // The real stream, then the same token twice more: once while the call runs, once after.
    let mut first = caller.clone();
    first.tail_silence_ms = 1500;
    let real = tokio::spawn(caller::run_stream(first, url.clone(), Some(token.clone())));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let during = caller::run_stream(caller.clone(), url.clone(), Some(token.clone()))
        .await
        .expect("replay runs");
    let real = real.await.expect("task").expect("real call runs");
    world
        .report_for(&call_sid, Duration::from_secs(5))
        .await
        .expect("the real call's report");
    let after = caller::run_stream(caller.clone(), url.clone(), Some(token))
        .await
        .expect("replay runs");

    assert!(real.media_received > 0, "the real call was answered");
    for (when, replayed) in [("during", &during), ("after", &after)] {
        assert_eq!(replayed.media_received, 0, "{when}: no audio for a replay");
        let closed = replayed.events.iter().find_map(|(_, e)| match e {
            CallerEvent::Closed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        });
        assert_eq!(
            closed,
            Some((Some(1008), "call already streamed".to_string())),
            "{when}"
        );
    }
    // One paid upstream session (the pre-warm) for three streams; one record.
    assert_eq!(world.upstream.sessions().len(), 1);
    let call = ended(&world, &call_sid).await;
    assert_eq!(call.end_reason.as_deref(), Some("stop"));
    assert!(call.stream_sid.is_some());
    world.stop().await;
}

#[tokio::test]
async fn fault_fifty_webhooks_at_once_with_a_limit_of_ten_give_ten_calls_and_forty_busy() {
    let world = dental_world_configured(
        0,
        Some(Box::new(|c| {
            c.limits.max_calls = 10;
            c.limits.max_pending = 50;
        })),
    )
    .await;
    let client = reqwest::Client::new();
    let answers = futures_util::future::join_all((0..50).map(|n| {
        let caller = world.caller(&sid(100 + n), "+15005550006", Vec::new());
        let client = client.clone();
        async move { caller::answer(&caller, &client).await.expect("answered") }
    }))
    .await;
    let streams = answers.iter().filter(|a| a.stream.is_some()).count();
    let busy: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.twiml.contains(r#"<Reject reason="busy"/>"#))
        .collect();
    assert_eq!(streams, 10);
    assert_eq!(busy.len(), 40);
    for (n, _) in &busy {
        let call = ended(&world, &sid(100 + *n as u32)).await;
        assert_eq!(call.end_reason.as_deref(), Some("busy"));
        assert_eq!(call.business_id, "dental");
    }
    let text = metrics(&world).await;
    assert!(
        text.contains(
            r#"voxrelay_calls_total{business_id="dental",direction="inbound",end_reason="busy"} 40"#
        ),
        "{text}"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_business_limit_refuses_its_own_calls_only() {
    let world = dental_world(0).await;
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                max_concurrent_calls: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("limit");
    let client = reqwest::Client::new();
    let first = world.caller(&sid(200), "+15005550006", Vec::new());
    let second = world.caller(&sid(201), "+15005550006", Vec::new());
    assert!(
        caller::answer(&first, &client)
            .await
            .expect("answered")
            .stream
            .is_some()
    );
    let refused = caller::answer(&second, &client).await.expect("answered");
    assert!(refused.twiml.contains("Reject"), "{}", refused.twiml);
    assert_eq!(
        ended(&world, &sid(201)).await.end_reason.as_deref(),
        Some("busy")
    );
    world.stop().await;
}

#[tokio::test]
async fn a_call_at_its_longest_duration_says_goodbye_and_ends_as_max_duration() {
    let mut world = dental_world(0).await;
    world
        .store
        .update_business(
            "dental",
            &BusinessUpdate {
                max_call_duration_s: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("limit");
    let call_sid = sid(300);
    let mut caller = world.caller(
        &call_sid,
        "+15005550006",
        jfk_speech(Some(1.0)).expect("speech"),
    );
    // The caller would stay on for 20 s.
    caller.tail_silence_ms = 20_000;
    let (heard, report) = world.call(caller).await.expect("call runs");
    let report = report.expect("report");
    assert_eq!(report.end_reason, EndReason::MaxDuration);
    let closed_by_proxy = heard
        .events
        .iter()
        .any(|(at, e)| matches!(e, CallerEvent::Closed { .. }) && *at < Duration::from_secs(15));
    assert!(closed_by_proxy, "{:?}", heard.events);
    // The goodbye was asked for, with its instructions.
    let sessions = world.upstream.sessions();
    let goodbye = sessions[0].events.iter().any(|e| {
        serde_json::from_str::<Value>(e).is_ok_and(|v| {
            v["type"] == "response.create"
                && v["response"]["instructions"] == voxrelay::call::state::GOODBYE_INSTRUCTIONS
        })
    });
    assert!(goodbye, "no goodbye response.create");
    assert_eq!(
        ended(&world, &call_sid).await.end_reason.as_deref(),
        Some("max_duration")
    );
    world.stop().await;
}

#[tokio::test]
async fn a_call_nobody_streams_is_recorded_as_no_stream() {
    let world = dental_world_configured(
        0,
        Some(Box::new(|c| {
            c.timeouts.pending_call_ms = 300;
        })),
    )
    .await;
    let caller = world.caller(&sid(400), "+15005550006", Vec::new());
    let answered = caller::answer(&caller, &reqwest::Client::new())
        .await
        .expect("answered");
    assert!(answered.stream.is_some());
    let call = ended(&world, &sid(400)).await;
    assert_eq!(call.end_reason.as_deref(), Some("no_stream"));
    world.stop().await;
}

#[tokio::test]
async fn readyz_is_ready_while_the_instance_takes_calls() {
    let world = dental_world(0).await;
    let r = reqwest::get(format!("http://{}/readyz", world.proxy_addr))
        .await
        .expect("GET /readyz");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    world.stop().await;
}
