//! The upstream frozen mid-call as a host freezes a process: `voxrelay sim-upstream` runs as a
//! child process and gets SIGSTOP in the middle of a call. Its sockets stay open (the kernel
//! still holds them, and even completes new TCP handshakes into the listen backlog) but nothing
//! answers: no event, no pong, no WebSocket handshake.
//!
//! The proxy (in this process, `voxrelay_sim::world::World`) has the frozen upstream first in
//! its list and the in-process simulated upstream second. The call's liveness pings go
//! unanswered, the session counts as lost (`upstream_silent`), and the redial's handshake to the
//! frozen process times out, so its breaker opens and the second upstream takes over with the
//! conversation restored. The caller hears a pause, then the call goes on.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use voxrelay::domain::EndReason;
use voxrelay::telemetry::timeline::TimelineEvent;
use voxrelay_sim::caller::{self, CallerEvent};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::SimUpstreamConfig;
use voxrelay_sim::world::{World, WorldOptions};

mod common;
use common::{NUMBER, free_port, signal};

/// Kills the child (waking it first) however the test ends.
struct Frozen(Child);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `voxrelay sim-upstream` on a free port and waits until it takes connections.
async fn upstream_process() -> (Frozen, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_voxrelay"))
        .args([
            "sim-upstream",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--first-audio-ms",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("voxrelay sim-upstream starts");
    let child = Frozen(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sim-upstream did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("ws://127.0.0.1:{port}/v1/realtime"))
}

#[tokio::test]
async fn fault_upstream_process_frozen_by_sigstop_mid_call_fails_over_and_the_call_goes_on() {
    voxrelay::install_crypto_provider();
    let (frozen, frozen_url) = upstream_process().await;
    let mut world = World::start(WorldOptions {
        upstream: SimUpstreamConfig::default(),
        database_url: None,
        configure: Some(Box::new(move |c| {
            let second = std::mem::replace(&mut c.upstream.url, frozen_url);
            c.upstream
                .fallback
                .push(voxrelay::config::FallbackUpstream {
                    name: "second".into(),
                    provider: voxrelay::realtime::Provider::Openai,
                    url: second,
                    model: c.upstream.model.clone(),
                    api_key_env: String::new(),
                    connect_timeout_ms: None,
                });
            c.upstream.connect_timeout_ms = 500;
            c.upstream.breaker_failures = 1;
            c.timeouts.upstream_ping_ms = 300;
            c.timeouts.upstream_quiet_ms = 1000;
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
            NUMBER,
        )
        .await
        .expect("business");
    let call_sid = format!("CA{:032x}", 0x5157_0000u32);
    let mut caller = world.caller(&call_sid, NUMBER, jfk_speech(Some(2.5)).expect("speech"));
    // The greeting plays; the process is frozen 1.5 s in; the caller asks at 3.5 s, after the
    // call has moved to the second upstream, and listens.
    caller.lead_silence_ms = 3500;
    caller.tail_silence_ms = 5000;
    let call = tokio::spawn(caller::run(caller));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&frozen.0, "STOP");
    let heard = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .expect("task")
        .expect("call runs");
    assert!(
        heard.events.iter().any(|(_, e)| *e == CallerEvent::Stop),
        "the caller hung up; the proxy did not: {:?}",
        heard.events
    );
    let report = world
        .report_for(&call_sid, Duration::from_secs(5))
        .await
        .expect("report");
    assert_eq!(
        report.end_reason,
        EndReason::Stop,
        "{:?}",
        report.timeline.entries()
    );
    let entries = report.timeline.entries();
    let lost = entries
        .iter()
        .find_map(|(at, e)| match e {
            TimelineEvent::UpstreamLost { cause } => Some((*at, *cause)),
            _ => None,
        })
        .expect("the frozen session was noticed");
    assert_eq!(
        lost.1,
        EndReason::UpstreamSilent,
        "the liveness pings found it"
    );
    assert!(
        entries.iter().any(|(_, e)| matches!(
            e,
            TimelineEvent::Failover { upstream, position: 1 } if upstream == "second"
        )),
        "the new session came from the second upstream: {entries:?}"
    );
    let gap_ms = entries
        .iter()
        .find_map(|(_, e)| match e {
            TimelineEvent::Reconnected { gap_ms, .. } => Some(*gap_ms),
            _ => None,
        })
        .expect("reconnected");
    // One connect timeout on the frozen process (500 ms), then the second upstream.
    assert!((400.0..1500.0).contains(&gap_ms), "gap {gap_ms} ms");
    eprintln!(
        "frozen upstream: noticed {:.0} ms into the call (frozen at about 1500 ms), restored on the second upstream after a {gap_ms:.0} ms gap",
        lost.0.as_secs_f64() * 1000.0
    );
    // The question, asked after the freeze, reached the second upstream and was answered.
    let sessions = world.upstream.sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s.append_events > 0 && s.event_types().iter().any(|t| t == "response.create")),
        "the second upstream heard the caller and answered"
    );
    let answered_after = heard.events.iter().any(|(at, e)| {
        matches!(e, CallerEvent::PlaybackStarts) && *at > Duration::from_millis(3500)
    });
    assert!(
        answered_after,
        "the caller heard the answer: {:?}",
        heard.events
    );
    drop(frozen);
    world.stop().await;
}
