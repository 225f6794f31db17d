//! The load generator end to end, small: three calls through a proxy it starts itself, with the
//! simulated upstream in echo mode. Every call streams, every stamped frame comes back, and the
//! report carries the proxy's own figures.
//! The `reconnect` measurement, small: two calls that lose their upstream sessions.

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxrelay-loadtest"))
        .args(args)
        .arg("--json")
        .output()
        .expect("voxrelay-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), report, format!("{stdout}\n{stderr}"))
}

#[test]
fn three_calls_stream_and_every_stamped_frame_returns() {
    let (ok, r, output) = run(&[
        "--calls",
        "3",
        "--duration",
        "3",
        "--ramp",
        "0.5",
        "--barge-in-rate",
        "0.34",
    ]);
    assert!(ok, "{output}");
    assert_eq!(r["calls_streamed"], 3, "{output}");
    assert_eq!(r["calls_failed"], 0, "{output}");
    assert_eq!(r["frames_lost"], 0, "{output}");
    let expected = r["frames_expected"].as_u64().expect("expected");
    assert!(expected > 200, "{output}");
    let frames = r["round_trip_us"]["count"].as_u64().expect("round trips");
    assert!(frames >= expected, "{output}");
    assert!(
        r["round_trip_us"]["p50"]
            .as_f64()
            .is_some_and(|us| us > 0.0),
        "{output}"
    );
    // The greeting was asked for at the webhook: of the simulated model's 300 ms to first
    // audio, the 250 ms before the stream starts are already spent.
    let greeting = r["greeting_ms"]["p50"].as_f64().expect("greeting");
    assert!((40.0..250.0).contains(&greeting), "{output}");
    // One call talked over the model: the proxy cleared Twilio.
    assert_eq!(r["barge_ins_planned"], 1, "{output}");
    assert!(
        r["clears_received"].as_u64().is_some_and(|n| n >= 1),
        "{output}"
    );
    assert!(
        r["barge_in_reaction"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{output}"
    );
    // The proxy's own figures come from its /proc entry and its /metrics.
    assert!(r["proxy_cpu_percent"].as_f64().is_some(), "{output}");
    assert!(
        r["proxy_rss_peak_mib"].as_f64().is_some_and(|m| m > 1.0),
        "{output}"
    );
    let relayed = r["relay_overhead_twilio_to_upstream"]["count"]
        .as_u64()
        .expect("relay overhead");
    assert!(
        relayed >= r["frames_stamped"].as_u64().unwrap_or(u64::MAX),
        "{output}"
    );
}

#[test]
fn the_beta_dialect_is_measured_the_same_way() {
    // voxrelay speaks GA only: behind a beta-speaking upstream it relays none of the beta audio
    // events, so neither greeting nor echo comes back; the report says so and the run fails.
    let (ok, r, output) = run(&[
        "--calls",
        "1",
        "--duration",
        "2",
        "--ramp",
        "0",
        "--upstream-dialect",
        "beta",
    ]);
    assert!(!ok, "{output}");
    assert_eq!(r["upstream_dialect"], "beta", "{output}");
    assert_eq!(r["calls_streamed"], 1, "{output}");
    assert_eq!(r["calls_without_echo"], 1, "{output}");
    assert_eq!(r["greeting_ms"]["count"], 0, "{output}");
    assert!(output.contains("got no echo"), "{output}");
}

#[test]
fn out_of_range_options_are_refused_with_a_message() {
    let (ok, _, output) = run(&["--calls", "0"]);
    assert!(!ok);
    assert!(output.contains("--calls must be 1 to"), "{output}");
    let (ok, _, output) = run(&["--calls", "1", "--barge-in-rate", "2"]);
    assert!(!ok);
    assert!(output.contains("--barge-in-rate"), "{output}");
}

#[test]
fn reconnects_are_measured_against_a_bare_dial_and_lose_no_caller_frame() {
    let (ok, r, output) = run(&[
        "reconnect",
        "--calls",
        "2",
        "--duration",
        "7",
        "--ramp",
        "0.2",
        "--fault-ms",
        "3000",
        "--connect-delay-ms",
        "50",
    ]);
    assert!(ok, "{output}");
    assert_eq!(r["calls_ended_by_caller"], 2, "{output}");
    assert_eq!(r["reconnects_failed"], 0, "{output}");
    // Each call loses its session at 3 s and again at about 6 s.
    let reconnects = r["reconnects"].as_u64().expect("reconnects");
    assert!((2..=4).contains(&reconnects), "{output}");
    assert_eq!(r["gap_ms"]["count"], reconnects, "{output}");
    let gap = r["gap_ms"]["p50"].as_f64().expect("gap");
    assert!(
        gap >= 50.0,
        "a redial costs at least the handshake: {output}"
    );
    assert_eq!(r["floor_ms"]["count"], 2, "{output}");
    assert_eq!(r["caller_frames_dropped"], 0, "{output}");
    let sent = r["caller_frames_sent"].as_u64().expect("sent");
    let received = r["frames_received_by_sessions"].as_u64().expect("received");
    assert!(sent > 500 && received >= sent, "{output}");
}
