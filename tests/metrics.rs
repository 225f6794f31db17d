//! `GET /metrics` after real calls through the proxy: every figure the observability issue
//! names is exposed with bounded labels, counts match what the calls did, and the exposition
//! passes `promtool check metrics` (when promtool is installed; `.ci/run` installs it).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::world::World;

mod common;
use common::{dental_world, dental_world_configured, tool_missing};

async fn scrape(world: &World, accept: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/metrics", world.proxy_addr))
        .header("accept", accept)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (content_type, response.text().await.expect("body"))
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_after_two_calls_count_them_and_pass_promtool() {
    let mut world = dental_world(300).await;
    for n in 1..=2u32 {
        let mut caller = world.caller(
            &format!("CA{n:032x}"),
            "+15005550006",
            jfk_speech(Some(3.0)).expect("speech"),
        );
        caller.lead_silence_ms = 500;
        caller.tail_silence_ms = 1500;
        let (report, proxy) = world.call(caller).await.expect("call");
        assert!(report.streamed);
        assert!(proxy.is_some(), "the proxy reported the call");
    }
    let (content_type, open) = scrape(&world, "application/openmetrics-text; version=1.0.0").await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.trim_end().ends_with("# EOF"));
    let (content_type, text) = scrape(&world, "*/*").await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let call = r#"{business_id="dental",direction="inbound"}"#;
    assert_eq!(
        sample(
            &text,
            &format!("voxrelay_greeting_latency_seconds_count{call}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("voxrelay_greeting_from_webhook_seconds_count{call}")
        ),
        Some(2.0)
    );
    // The greeting takes most of the simulated model's 300 ms (asked for at the webhook, a few
    // ms before the stream starts): it lands between 0.2 and 0.4 s.
    assert_eq!(
        sample(
            &text,
            r#"voxrelay_greeting_latency_seconds_bucket{le="0.2",business_id="dental",direction="inbound"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"voxrelay_greeting_latency_seconds_bucket{le="0.4",business_id="dental",direction="inbound"}"#
        ),
        Some(2.0),
        "{text}"
    );
    let turns =
        sample(&text, &format!("voxrelay_turn_latency_seconds_count{call}")).expect("turn latency");
    assert!(turns >= 2.0, "{text}");
    let heard = sample(
        &text,
        &format!("voxrelay_turn_heard_latency_seconds_count{call}"),
    )
    .expect("caller-side turn latency");
    assert!(heard >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"voxrelay_calls_total{business_id="dental",direction="inbound",end_reason="stop"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("voxrelay_prompt_upgrades_total{call}")),
        Some(2.0)
    );
    let relayed_in = sample(
        &text,
        r#"voxrelay_frames_relayed_total{leg="twilio_to_upstream"}"#,
    )
    .expect("frames in");
    assert!(relayed_in > 100.0, "{text}");
    let overhead = sample(
        &text,
        r#"voxrelay_relay_overhead_seconds_count{leg="twilio_to_upstream"}"#,
    )
    .expect("relay overhead");
    assert_eq!(overhead, relayed_in, "every relayed caller frame is timed");
    assert!(
        sample(
            &text,
            r#"voxrelay_relay_overhead_seconds_count{leg="upstream_to_twilio"}"#
        )
        .is_some_and(|n| n > 0.0)
    );
    assert_eq!(
        sample(&text, "voxrelay_upstream_connect_seconds_count"),
        Some(2.0)
    );
    assert!(sample(&text, "voxrelay_upstream_first_audio_seconds_count").is_some_and(|n| n >= 2.0));
    assert!(sample(&text, "voxrelay_session_update_seconds_count").is_some_and(|n| n >= 2.0));
    assert_eq!(sample(&text, "voxrelay_live_calls"), Some(0.0));
    assert!(!text.contains("CA0000"), "no CallSid in the labels");

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("promtool runs");
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => tool_missing("promtool", "the promtool check of /metrics", e),
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_slower_than_the_alert_threshold_trips_the_alert_gauge_and_the_stats() {
    use voxrelay_sim::world::SIM_VIEWER_TOKEN;
    // Turns take the simulated model's 300 ms; the threshold is 100 ms.
    let mut world = dental_world_configured(
        300,
        Some(Box::new(|c| c.alerts.p95_turn_latency_ms = 100.0)),
    )
    .await;
    // The sweeper judges the alerts from the start: every one is exposed, at 0.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, before) = scrape(&world, "*/*").await;
    assert_eq!(
        sample(&before, r#"voxrelay_alert{alert="p95_turn_latency"}"#),
        Some(0.0),
        "{before}"
    );

    let mut caller = world.caller(
        &format!("CA{:032x}", 7),
        "+15005550006",
        jfk_speech(Some(3.0)).expect("speech"),
    );
    caller.lead_silence_ms = 500;
    caller.tail_silence_ms = 1500;
    let (_, report) = world.call(caller).await.expect("call");
    assert!(
        report.is_some_and(|r| !r.turn_latencies_ms.is_empty()),
        "the call had an answered turn"
    );
    let (_, after) = scrape(&world, "*/*").await;
    assert_eq!(
        sample(&after, r#"voxrelay_alert{alert="p95_turn_latency"}"#),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, r#"voxrelay_alert{alert="frame_drops"}"#),
        Some(0.0)
    );
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/stats", world.proxy_addr))
        .bearer_auth(SIM_VIEWER_TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    let alert = stats["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alert"] == "p95_turn_latency"))
        .cloned()
        .expect("the alert is listed");
    assert_eq!(alert["active"], true, "{stats}");
    assert_eq!(alert["threshold"], 100.0);
    assert!(
        alert["value"].as_f64().is_some_and(|v| v > 250.0),
        "{alert}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_heard_latency_is_when_twilio_began_playing_the_answer() {
    let mut world = dental_world(300).await;
    let mut caller = world.caller(
        &format!("CA{:032x}", 77),
        "+15005550006",
        jfk_speech(Some(3.0)).expect("speech"),
    );
    caller.lead_silence_ms = 500;
    caller.tail_silence_ms = 2500;
    let (twilio, proxy) = world.call(caller).await.expect("call");
    let proxy = proxy.expect("the proxy reported the call");
    let checks = voxrelay_sim::demo::heard_against_twilio(&proxy.timeline, &twilio);
    assert!(
        !checks.is_empty(),
        "the answer was heard: {:?}",
        proxy.timeline
    );
    for check in &checks {
        let apart = check
            .twilio_apart_ms
            .expect("Twilio began playing an answer");
        assert!(
            apart.abs() <= 20.0,
            "the proxy says the answer began {apart:+.1} ms from when Twilio began playing it"
        );
    }
    // The metric received exactly these values.
    let (_, text) = scrape(&world, "*/*").await;
    let call = r#"{business_id="dental",direction="inbound"}"#;
    let count = sample(
        &text,
        &format!("voxrelay_turn_heard_latency_seconds_count{call}"),
    )
    .expect("count");
    let sum = sample(
        &text,
        &format!("voxrelay_turn_heard_latency_seconds_sum{call}"),
    )
    .expect("sum");
    assert_eq!(count, checks.len() as f64);
    let expected: f64 = checks.iter().map(|c| c.latency_ms / 1000.0).sum();
    assert!(
        (sum - expected).abs() < 1e-6,
        "{sum} s against {expected} s"
    );
    world.stop().await;
}
