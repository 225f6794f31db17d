//! Two `voxrelay serve` instances ("a" and "b") on one PostgreSQL database behind HAProxy
//! (Debian's `haproxy`, running `config/haproxy.cfg` as the README shows it), calls on real
//! speech through HAProxy:
//! - webhooks are spread over both instances, and each call's media stream reaches the
//!   instance that took its webhook (the stream URL names it; HAProxy routes on it), so the
//!   pre-warmed upstream is used: one upstream session per call;
//! - a drain of "a" with live calls on both: HAProxy sees `/readyz` turn 503 and sends new
//!   calls to "b"; a's calls finish on a; no call record is lost.
//!
//! Needs `haproxy` on PATH (`.ci/run` installs it; without `VOXRELAY_REQUIRE_TOOLS=1` the test
//! says it was skipped) and `VOXRELAY_TEST_POSTGRES_URL` (skipped, saying so, without it).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use voxrelay::store::{CallRecord, Store};
use voxrelay_sim::caller::{self, CallerConfig};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{SimUpstream, SimUpstreamConfig};
use voxrelay_sim::world::SIM_TWILIO_AUTH_TOKEN;

mod common;
use common::{Instance, exited, free_port, serve, signal};

use common::NUMBER;

fn sid(n: u32) -> String {
    format!("CA{:032x}", 0x2a2b_0000u32 + n)
}

/// Says why the test cannot run; fails instead when `VOXRELAY_REQUIRE_TOOLS=1`.
fn skip(why: &str) {
    use std::io::Write as _;
    if std::env::var("VOXRELAY_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{why} (VOXRELAY_REQUIRE_TOOLS=1)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped two instances behind HAProxy: {why}"
    );
}

/// HAProxy running `config/haproxy.cfg` in the foreground; killed when dropped.
struct Haproxy(Child);

impl Haproxy {
    fn start(bind: &str, a: &str, b: &str) -> Haproxy {
        let child = Command::new("haproxy")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["-db", "-f", "config/haproxy.cfg"])
            .env("HAPROXY_BIND", bind)
            .env("VOXRELAY_A", a)
            .env("VOXRELAY_B", b)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy starts");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The instance a stream URL names (`…/twilio/media/<id>`).
fn instance_of(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

async fn record(store: &Store, call_sid: &str) -> CallRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(call)) = store.call(call_sid).await
            && call.ended_at_ms.is_some()
        {
            return call;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{call_sid} never ended in the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_instances_behind_haproxy_route_streams_home_and_drain_one_without_losing_a_call() {
    if Command::new("haproxy").arg("-v").output().is_err() {
        skip("haproxy is not installed (not on PATH); .ci/run installs it");
        return;
    }
    let Ok(base_url) = std::env::var("VOXRELAY_TEST_POSTGRES_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped postgres::two_instances_behind_haproxy: VOXRELAY_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    voxrelay::install_crypto_provider();
    let schema = format!("vr_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url).await.expect("postgres");
    admin
        .execute(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("schema");
    let separator = if base_url.contains('?') { '&' } else { '?' };
    let database_url = format!("{base_url}{separator}options=-c%20search_path%3D{schema}");

    let store = common::dental_store(&database_url).await;
    let upstream = SimUpstream::start(([127, 0, 0, 1], 0).into(), SimUpstreamConfig::default())
        .await
        .expect("upstream");

    let (port_a, port_b, port_lb) = (free_port(), free_port(), free_port());
    let lb = format!("127.0.0.1:{port_lb}");
    let instance = |id, port| Instance {
        id,
        port,
        public_host: lb.clone(),
        database_url: &database_url,
        upstream_url: upstream.url(),
        extra: &[],
    };
    let mut a = serve(&instance("a", port_a)).await;
    let mut b = serve(&instance("b", port_b)).await;
    let _haproxy = Haproxy::start(
        &lb,
        &format!("127.0.0.1:{port_a}"),
        &format!("127.0.0.1:{port_b}"),
    );
    // Both servers up in `calls` (rise 2 × 250 ms).
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !client
        .get(format!("http://{lb}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "HAProxy never ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let caller_for = |n: u32, speech: Vec<u8>| CallerConfig {
        lead_silence_ms: 300,
        tail_silence_ms: 300,
        ..CallerConfig::inbound(
            &format!("http://{lb}/twilio/voice"),
            SIM_TWILIO_AUTH_TOKEN,
            &sid(n),
            "+14155550100",
            NUMBER,
            speech,
        )
    };

    // 1. Six calls, one after another, through HAProxy.
    let speech = jfk_speech(Some(1.0)).expect("speech");
    let mut took = BTreeSet::new();
    for n in 0..6 {
        let caller = caller_for(n, speech.clone());
        let answered = caller::answer(&caller, &client).await.expect("webhook");
        let (url, token) = answered.stream.clone().expect("a stream");
        let named = instance_of(&url);
        let heard = caller::run_stream(caller, url, token)
            .await
            .expect("stream");
        assert!(heard.media_received > 0, "call {n} answered");
        let call = record(&store, &sid(n)).await;
        assert_eq!(call.end_reason.as_deref(), Some("stop"), "call {n}");
        assert_eq!(
            call.instance_id.as_deref(),
            Some(named.as_str()),
            "call {n}: the stream reached the instance its URL names"
        );
        took.insert(named);
    }
    assert_eq!(
        took,
        BTreeSet::from(["a".to_string(), "b".to_string()]),
        "both instances took webhooks"
    );
    assert_eq!(
        upstream.sessions().len(),
        6,
        "each call used its pre-warmed upstream: one session per call"
    );

    // 2. Live calls on both, then a drain of "a".
    let long = jfk_speech(Some(3.0)).expect("speech");
    let mut live = Vec::new();
    let mut on_a = Vec::new();
    for n in 10..14 {
        let mut caller = caller_for(n, long.clone());
        caller.tail_silence_ms = 3000;
        let answered = caller::answer(&caller, &client).await.expect("webhook");
        let (url, token) = answered.stream.clone().expect("a stream");
        if instance_of(&url) == "a" {
            on_a.push(n);
        }
        live.push(tokio::spawn(caller::run_stream(caller, url, token)));
    }
    assert!(
        !on_a.is_empty() && on_a.len() < 4,
        "live calls on both: {on_a:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.sessions().len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls never went live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&a, "TERM");
    // HAProxy takes "a" out after one failed /readyz check (250 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    for n in 20..24 {
        let caller = caller_for(n, speech.clone());
        let answered = caller::answer(&caller, &client).await.expect("webhook");
        assert_eq!(answered.status, 200, "{}", answered.twiml);
        let (url, token) = answered.stream.clone().expect("a stream");
        assert_eq!(
            instance_of(&url),
            "b",
            "new call {n} goes to the ready instance"
        );
        let heard = caller::run_stream(caller, url, token)
            .await
            .expect("stream");
        assert!(heard.media_received > 0);
    }
    for call in live {
        let heard = call.await.expect("task").expect("call runs");
        assert!(heard.media_received > 0, "a live call went on to its end");
    }
    assert_eq!(exited(&mut a, Duration::from_secs(30)).await, Some(0));
    for n in (0..6).chain(10..14).chain(20..24) {
        let call = record(&store, &sid(n)).await;
        assert_eq!(call.end_reason.as_deref(), Some("stop"), "call {n}");
        assert!(call.summary.is_some(), "call {n} has its summary");
    }
    for n in on_a {
        assert_eq!(
            record(&store, &sid(n)).await.instance_id.as_deref(),
            Some("a"),
            "call {n} finished on the draining instance"
        );
    }
    signal(&b, "TERM");
    assert_eq!(exited(&mut b, Duration::from_secs(30)).await, Some(0));
    store.close().await;
    let _ = admin
        .execute(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .await;
}
