//! The fault suite over real networks: a call with the upstream link impaired, and one with the
//! Twilio link impaired, as a real network impairs them (150 ms round trip, 20 ms jitter, and a
//! 200–400 ms stall every 2–4 s: [`Impairment::real_network`]), each beside the same call on
//! plain loopback in the same run. The impairment is a seeded TCP relay in the harness
//! ([`voxrelay_sim::impaired`]; this kernel has no `netem`).
//!
//! Each call greets, the caller talks over the greeting (a barge-in), and the model answers.
//! Asserted: the call greets, barges in and answers on the impaired link, and the truncate point
//! stays within ±40 ms of what the simulated Twilio had played when the `clear` reached it.
//! Printed (`cargo test --release --test network -- --nocapture`, the figures in
//! BENCHMARKS.md): greeting latency, barge-in reaction at the caller, truncate error, turn
//! latency, and the link delay the proxy measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use voxrelay::telemetry::timeline::CallReport;
use voxrelay_sim::caller::{self, CallerEvent, CallerReport};
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::impaired::{ImpairedLink, Impairment};
use voxrelay_sim::upstream::SimUpstreamConfig;
use voxrelay_sim::world::{World, WorldOptions};

/// The truncate point may be this far from what Twilio played, ms.
const TRUNCATE_TOLERANCE_MS: i64 = 40;

/// Which link is impaired.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    None,
    Upstream,
    Twilio,
}

/// What one call showed.
#[derive(Debug)]
struct Figures {
    link: Link,
    greeting_ms: f64,
    /// Caller speech begins → `clear` at the caller.
    barge_in_ms: f64,
    /// Truncate `audio_end_ms` − what had played at the caller when the `clear` came.
    truncate_error_ms: i64,
    /// The proxy's turn latency (`speech_stopped` → the answer's first audio out), ms.
    turn_ms: Option<f64>,
    /// Whether audio came after the barge-in (the model answered).
    answered: bool,
    link_one_way_ms: u64,
    stalls: u64,
}

/// `ws://host:port/path` with the host and port replaced by `addr`, and the address it had.
fn reroute(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let parsed = reqwest::Url::parse(url).expect("upstream URL");
    let target = parsed
        .socket_addrs(|| None)
        .expect("upstream address")
        .into_iter()
        .next()
        .expect("an address");
    let mut rerouted = parsed.clone();
    rerouted.set_port(Some(addr.port())).expect("port");
    (rerouted.to_string(), target)
}

async fn call(link: Link, seed: u64, n: u32) -> Figures {
    let impaired = match link {
        Link::None => None,
        _ => Some(Arc::new(
            ImpairedLink::start(None, Impairment::real_network(seed))
                .await
                .expect("relay"),
        )),
    };
    let through = impaired.clone().filter(|_| link == Link::Upstream);
    let mut world = World::start(WorldOptions {
        upstream: SimUpstreamConfig::default(),
        database_url: None,
        configure: Some(Box::new(move |c| {
            if let Some(relay) = through {
                let (url, target) = reroute(&c.upstream.url, relay.addr());
                relay.set_target(target);
                c.upstream.url = url;
            }
        })),
        twilio_validator: None,
    })
    .await
    .expect("world starts");
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "Bright Smile Dental cleans teeth. Opening hours are eight to six.",
            "Say hello.",
            "+15005550006",
        )
        .await
        .expect("business");
    let call_sid = format!("CA{:032x}", 0x0e70_0000 + n);
    let mut caller = world.caller(
        &call_sid,
        "+15005550006",
        jfk_speech(Some(2.0)).expect("speech"),
    );
    // The greeting plays for a while, then the caller talks over it and listens to the answer.
    caller.lead_silence_ms = 1500;
    caller.tail_silence_ms = 4000;
    if link == Link::Twilio
        && let Some(relay) = &impaired
    {
        relay.set_target(world.proxy_addr);
        caller.stream_url_override = Some(format!("ws://{}/twilio/media", relay.addr()));
    }
    let heard = tokio::time::timeout(Duration::from_secs(30), caller::run(caller))
        .await
        .expect("the call ends")
        .expect("call runs");
    let report = world
        .report_for(&call_sid, Duration::from_secs(10))
        .await
        .expect("report");
    let truncation = world
        .upstream
        .sessions()
        .first()
        .and_then(|s| s.truncations.first().cloned());
    let figures = figures(link, &heard, &report, truncation.map(|t| t.audio_end_ms));
    let stalls = impaired.as_ref().map_or(0, |r| r.stats().stalls);
    if let Some(relay) = impaired {
        relay.shutdown();
    }
    world.stop().await;
    Figures { stalls, ..figures }
}

fn figures(
    link: Link,
    heard: &CallerReport,
    report: &CallReport,
    truncated_ms: Option<u64>,
) -> Figures {
    let at = |want: fn(&CallerEvent) -> bool| {
        heard
            .events
            .iter()
            .find(|(_, e)| want(e))
            .map(|(at, _)| at.as_secs_f64() * 1000.0)
    };
    let greeting_ms = heard.first_audio_ms().expect("the call greeted");
    let speech = at(|e| matches!(e, CallerEvent::SpeechBegins)).expect("speech");
    let (clear_at, heard_ms) = heard
        .events
        .iter()
        .find_map(|(at, e)| match e {
            CallerEvent::Clear { heard_ms, .. } => Some((at.as_secs_f64() * 1000.0, *heard_ms)),
            _ => None,
        })
        .expect("the caller barged in: a clear came");
    let truncated_ms = truncated_ms.expect("a truncate reached the upstream");
    let answered = heard.events.iter().any(|(at, e)| {
        matches!(e, CallerEvent::PlaybackStarts) && at.as_secs_f64() * 1000.0 > clear_at
    });
    let turn_ms = report.turn_latencies_ms.first().copied();
    Figures {
        link,
        greeting_ms,
        barge_in_ms: clear_at - speech,
        truncate_error_ms: truncated_ms as i64 - heard_ms as i64,
        turn_ms,
        answered,
        link_one_way_ms: report.counters.twilio_link_one_way_ms,
        stalls: 0,
    }
}

fn print(f: &Figures) {
    eprintln!(
        "network {:?}: greeting {:.0} ms, barge-in (speech to clear at the caller) {:.0} ms, \
         truncate error {:+} ms, turn latency {} ms, answered {}, Twilio link one-way as measured \
         {} ms, stalls {}",
        f.link,
        f.greeting_ms,
        f.barge_in_ms,
        f.truncate_error_ms,
        f.turn_ms.map_or("-".into(), |t| format!("{t:.0}")),
        f.answered,
        f.link_one_way_ms,
        f.stalls
    );
}

fn assert_holds(f: &Figures) {
    assert!(f.answered, "the model answered after the barge-in: {f:?}");
    assert!(
        f.truncate_error_ms.abs() <= TRUNCATE_TOLERANCE_MS,
        "truncate within ±{TRUNCATE_TOLERANCE_MS} ms of what Twilio played: {f:?}"
    );
}

#[tokio::test]
async fn fault_impaired_upstream_link_still_greets_answers_and_barges_in() {
    let baseline = call(Link::None, 0, 1).await;
    let impaired = call(Link::Upstream, 11, 2).await;
    print(&baseline);
    print(&impaired);
    assert_holds(&baseline);
    assert_holds(&impaired);
}

#[tokio::test]
async fn fault_impaired_twilio_link_still_greets_answers_and_truncates_at_what_was_heard() {
    let baseline = call(Link::None, 0, 3).await;
    let impaired = call(Link::Twilio, 12, 4).await;
    print(&baseline);
    print(&impaired);
    assert_holds(&baseline);
    assert_holds(&impaired);
    assert!(
        (60..=90).contains(&impaired.link_one_way_ms),
        "the proxy measured the link's one-way delay (75 ms): {impaired:?}"
    );
}
