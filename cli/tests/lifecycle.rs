//! The real `voxrelay serve` binary stopped as a deploy or a crash stops it, with calls on real
//! speech through it (simulated upstream in this process):
//! - SIGTERM with 20 live calls: `/readyz` turns 503, a new webhook gets 503, the 20 calls go
//!   on to their own end, the process exits 0, and all 20 records are complete;
//! - SIGTERM with the drain deadline reached: the live call says goodbye and ends `shutdown`;
//! - SIGKILL, then a restart: the calls the killed instance left open are closed as `crashed`,
//!   another instance's open call is left alone.

use std::process::Child;
use std::time::Duration;

use voxrelay::store::{CallRecord, NewCall, Store};
use voxrelay_sim::caller::{self, CallerConfig, CallerReport};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{SimUpstream, SimUpstreamConfig};
use voxrelay_sim::world::SIM_TWILIO_AUTH_TOKEN;

mod common;
use common::{exited, signal};

use common::NUMBER;

/// A database with the dental business, a simulated upstream, and a free port.
struct Bench {
    _dir: tempfile::TempDir,
    database_url: String,
    store: Store,
    upstream: SimUpstream,
    port: u16,
}

impl Bench {
    async fn new() -> Bench {
        voxrelay::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("voxrelay.db").display()
        );
        let store = common::dental_store(&database_url).await;
        let upstream = SimUpstream::start(([127, 0, 0, 1], 0).into(), SimUpstreamConfig::default())
            .await
            .expect("upstream");
        let port = common::free_port();
        Bench {
            _dir: dir,
            database_url,
            store,
            upstream,
            port,
        }
    }

    /// Starts `voxrelay serve` as instance `instance`, with extra `VOXRELAY_*` settings, and
    /// waits until it answers `/healthz`.
    async fn serve(&self, instance: &str, extra: &[(&str, &str)]) -> Child {
        common::serve(&common::Instance {
            id: instance,
            port: self.port,
            public_host: format!("127.0.0.1:{}", self.port),
            database_url: &self.database_url,
            upstream_url: self.upstream.url(),
            extra,
        })
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn caller(&self, call_sid: &str, speech: Vec<u8>) -> CallerConfig {
        CallerConfig {
            lead_silence_ms: 500,
            ..CallerConfig::inbound(
                &self.url("/twilio/voice"),
                SIM_TWILIO_AUTH_TOKEN,
                call_sid,
                "+14155550100",
                NUMBER,
                speech,
            )
        }
    }

    /// Waits until `n` upstream sessions exist (the calls are live).
    async fn live(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.upstream.sessions().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "calls never went live"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(&self, call_sid: &str) -> CallRecord {
        self.store
            .call(call_sid)
            .await
            .expect("database")
            .expect("a record")
    }
}

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0x7e57_0000u32 + n)
}

#[tokio::test]
async fn fault_sigterm_with_twenty_live_calls_lets_them_finish_and_loses_no_record() {
    let bench = Bench::new().await;
    let mut child = bench.serve("drain-a", &[]).await;
    let speech = jfk_speech(Some(3.0)).expect("speech");
    let calls: Vec<_> = (0..20)
        .map(|n| {
            let mut caller = bench.caller(&sid(n), speech.clone());
            caller.tail_silence_ms = 3000;
            tokio::spawn(caller::run(caller))
        })
        .collect();
    bench.live(20).await;
    signal(&child, "TERM");

    // Draining: not ready, new webhooks refused with 503 (Twilio's fallback URL applies),
    // healthy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::get(bench.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let health = reqwest::get(bench.url("/healthz")).await.expect("healthz");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let late = caller::answer(&bench.caller(&sid(99), Vec::new()), &reqwest::Client::new())
        .await
        .expect("answered");
    assert_eq!(late.status, 503, "{}", late.twiml);

    let mut reports: Vec<CallerReport> = Vec::new();
    for call in calls {
        reports.push(call.await.expect("task").expect("call runs"));
    }
    assert_eq!(exited(&mut child, Duration::from_secs(30)).await, Some(0));
    for (n, report) in reports.iter().enumerate() {
        assert!(report.media_received > 0, "call {n} was answered");
        let call = bench.call(&sid(n as u32)).await;
        assert_eq!(call.end_reason.as_deref(), Some("stop"), "call {n}");
        assert!(
            call.ended_at_ms.is_some() && call.summary.is_some(),
            "call {n}"
        );
        assert_eq!(call.instance_id.as_deref(), Some("drain-a"));
    }
    assert!(
        bench
            .store
            .call(&sid(99))
            .await
            .expect("database")
            .is_none(),
        "the refused webhook took no call"
    );
}

#[tokio::test]
async fn at_the_drain_deadline_a_live_call_says_goodbye_and_ends_as_shutdown() {
    let bench = Bench::new().await;
    let mut child = bench
        .serve("drain-b", &[("VOXRELAY_LIFECYCLE_DRAIN_DEADLINE_S", "1")])
        .await;
    let mut caller = bench.caller(&sid(200), jfk_speech(Some(1.0)).expect("speech"));
    caller.tail_silence_ms = 30_000;
    let call = tokio::spawn(caller::run(caller));
    bench.live(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "TERM");
    let report = call.await.expect("task").expect("call runs");
    assert_eq!(exited(&mut child, Duration::from_secs(30)).await, Some(0));
    assert!(report.media_received > 0);
    let record = bench.call(&sid(200)).await;
    assert_eq!(record.end_reason.as_deref(), Some("shutdown"));
    let goodbye = bench.upstream.sessions()[0].events.iter().any(|e| {
        serde_json::from_str::<serde_json::Value>(e).is_ok_and(|v| {
            v["type"] == "response.create"
                && v["response"]["instructions"] == voxrelay::call::state::GOODBYE_INSTRUCTIONS
        })
    });
    assert!(goodbye, "the model was asked to say goodbye");
}

#[tokio::test]
async fn fault_sigkill_then_a_restart_closes_its_open_calls_as_crashed_and_no_others() {
    let bench = Bench::new().await;
    // Another instance's call, open: not this instance's to close.
    bench
        .store
        .insert_call(&NewCall {
            call_sid: sid(300),
            stream_sid: Some("MZ1".into()),
            business_id: "dental".into(),
            direction: voxrelay::domain::Direction::Inbound,
            from_number: "+14155550100".into(),
            to_number: NUMBER.into(),
            started_at_ms: voxrelay::store::now_ms(),
            instance_id: "other".into(),
        })
        .await
        .expect("other instance's call");
    let mut child = bench.serve("crash-a", &[]).await;
    let speech = jfk_speech(Some(2.0)).expect("speech");
    let calls: Vec<_> = (0..2)
        .map(|n| {
            let mut caller = bench.caller(&sid(310 + n), speech.clone());
            caller.tail_silence_ms = 30_000;
            tokio::spawn(caller::run(caller))
        })
        .collect();
    bench.live(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "KILL");
    let _ = exited(&mut child, Duration::from_secs(10)).await;
    for call in calls {
        let _ = call.await;
    }
    for n in 0..2 {
        assert!(
            bench.call(&sid(310 + n)).await.ended_at_ms.is_none(),
            "open after the kill"
        );
    }
    let mut child = bench.serve("crash-a", &[]).await;
    for n in 0..2 {
        let call = bench.call(&sid(310 + n)).await;
        assert_eq!(call.end_reason.as_deref(), Some("crashed"));
        assert!(call.ended_at_ms.is_some());
    }
    assert!(
        bench.call(&sid(300)).await.ended_at_ms.is_none(),
        "another instance's call is not closed"
    );
    signal(&child, "TERM");
    assert_eq!(exited(&mut child, Duration::from_secs(30)).await, Some(0));
}
