//! `voxrelay-loadtest reconnect`: how long a call's upstream is down when its session is lost
//! mid-call, measured against the floor in the same run.
//!
//! The proxy runs in this process on loopback (a `voxrelay_sim::world::World`) in front of the
//! simulated upstream, which takes `--connect-delay-ms` to complete each WebSocket handshake
//! and closes every session (1011) `--fault-ms` after its handshake, so every call loses its
//! session again and again. `--calls` callers, started evenly over `--ramp` seconds, each
//! stream 2.5 s of real speech (jfk.wav) in `--duration` seconds of call. From the proxy's call
//! reports come the reconnect gaps (the session lost → the new session restored: dialled,
//! configured with FULL, the conversation replayed, the held caller audio sent), and from the
//! simulated upstream the caller frames each session received (none may be lost).
//!
//! The floor: the same simulated upstream dialled directly, `--calls` times, from connect to
//! `session.created`: what no reconnect can beat.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

use voxrelay::telemetry::timeline::TimelineEvent;
use voxrelay_sim::caller;
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{Fault, SimUpstreamConfig};

use crate::Spread;

/// Options of a reconnect run.
#[derive(clap::Args, Clone, Debug)]
pub struct ReconnectArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 20)]
    pub calls: u32,
    /// Seconds over which the calls start, evenly spread.
    #[arg(long, default_value_t = 2.0)]
    pub ramp: f64,
    /// Seconds each call lasts before the caller sends `stop`.
    #[arg(long, default_value_t = 12.0)]
    pub duration: f64,
    /// The simulated upstream's handshake time, ms.
    #[arg(long, default_value_t = 120)]
    pub connect_delay_ms: u64,
    /// Every upstream session is closed this long after its handshake, ms.
    #[arg(long, default_value_t = 3000)]
    pub fault_ms: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Spread the calls over this many marked businesses (1 to 999) and have the simulated
    /// upstream check that every session, restored ones included, carries only its own call's
    /// business (`voxrelay_sim::isolation`); any leak fails the run.
    #[arg(long)]
    pub businesses: Option<u32>,
}

/// What a reconnect run measured.
#[derive(Debug, Serialize)]
pub struct ReconnectReport {
    calls: u32,
    duration_s: f64,
    connect_delay_ms: u64,
    fault_ms: u64,
    calls_ended_by_caller: u32,
    reconnects: u64,
    reconnects_failed: u64,
    /// Session lost → new session restored, ms.
    gap_ms: Spread,
    /// The floor: connect → `session.created` on the same upstream, ms.
    floor_ms: Spread,
    caller_frames_sent: u64,
    frames_received_by_sessions: u64,
    frames_resent: u64,
    caller_frames_dropped: u64,
    /// With `--businesses`: how many, and what the upstream's isolation check found.
    businesses: Option<u32>,
    isolation: Option<voxrelay_sim::isolation::IsolationReport>,
}

const MAX_CALLS: u32 = 1000;
const MAX_SECONDS: f64 = 300.0;

/// Runs the reconnect measurement and prints it; fails when a call did not survive its
/// reconnects or lost caller frames.
pub async fn run(args: ReconnectArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.calls > MAX_CALLS {
        bail!("--calls must be 1 to {MAX_CALLS}");
    }
    if !(3.0..=MAX_SECONDS).contains(&args.duration) || !(0.0..=MAX_SECONDS).contains(&args.ramp) {
        bail!("--duration must be 3 to {MAX_SECONDS} s and --ramp 0 to {MAX_SECONDS} s");
    }
    if args.businesses.is_some_and(|n| !(1..=999).contains(&n)) {
        bail!("--businesses must be 1 to 999");
    }
    let upstream = SimUpstreamConfig {
        connect_delay_ms: args.connect_delay_ms,
        fault: Some(Fault::Close(args.fault_ms)),
        transcripts: vec!["What time do you open tomorrow?".into()],
        keep_logs: true,
        check_isolation: args.businesses.is_some(),
        ..SimUpstreamConfig::default()
    };
    let calls = args.calls;
    let mut world =
        crate::dental_world(upstream, calls, |c| c.reconnect.max_per_call = 1000).await?;
    if let Some(n) = args.businesses {
        voxrelay_sim::isolation::seed(
            &world.store,
            n as usize,
            "Bright Smile Dental cleans teeth.",
        )
        .await
        .context("adding the isolation businesses")?;
    }

    let speech = jfk_speech(Some(2.5)).context("reading jfk.wav")?;
    let speech_ms = speech.len() as u64 / 8;
    let mut placed = JoinSet::new();
    let started = Instant::now();
    for n in 0..calls {
        let to = match args.businesses {
            Some(b) => voxrelay_sim::isolation::number((n % b) as usize),
            None => "+15005550006".to_string(),
        };
        let mut caller = world.caller(
            &format!("CA{:032x}", 0x5ec0_0000u32 + n),
            &to,
            speech.clone(),
        );
        if let Some(b) = args.businesses {
            caller.from = voxrelay_sim::isolation::caller((n % b) as usize, (n / b) as usize);
        }
        caller.lead_silence_ms = 1500;
        caller.tail_silence_ms = ((args.duration * 1000.0) as u64).saturating_sub(1500 + speech_ms);
        let at = started + Duration::from_secs_f64(args.ramp * f64::from(n) / f64::from(calls));
        placed.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            caller::run(caller).await
        });
    }
    let mut frames_sent = 0u64;
    let mut by_caller = 0u32;
    while let Some(result) = placed.join_next().await {
        let heard = result
            .context("a caller task failed")?
            .context("a call failed")?;
        frames_sent += heard.frames_sent as u64;
        if heard
            .events
            .iter()
            .any(|(_, e)| *e == caller::CallerEvent::Stop)
        {
            by_caller += 1;
        }
    }

    let mut gaps = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let (mut reconnects, mut failed, mut resent, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..calls {
        let Some(report) = tokio::time::timeout(Duration::from_secs(10), world.reports.recv())
            .await
            .ok()
            .flatten()
        else {
            bail!("a call's report did not come");
        };
        dropped += report.counters.dropped_in;
        for (_, event) in report.timeline.entries() {
            match event {
                TimelineEvent::Reconnected {
                    gap_ms,
                    resent_frames,
                    ..
                } => {
                    reconnects += 1;
                    resent += *resent_frames as u64;
                    gaps.saturating_record(((gap_ms * 1000.0) as u64).max(1));
                }
                TimelineEvent::ReconnectFailed { .. } => failed += 1,
                _ => {}
            }
        }
    }
    let received: u64 = world
        .upstream
        .sessions()
        .iter()
        .map(|s| s.append_events)
        .sum();

    let isolation = args.businesses.map(|_| world.upstream.isolation());
    let floor = floor(&world.upstream.url(), calls).await?;
    world.stop().await;
    let report = ReconnectReport {
        calls,
        duration_s: args.duration,
        connect_delay_ms: args.connect_delay_ms,
        fault_ms: args.fault_ms,
        calls_ended_by_caller: by_caller,
        reconnects,
        reconnects_failed: failed,
        gap_ms: Spread::of(&gaps, 1000.0),
        floor_ms: Spread::of(&floor, 1000.0),
        caller_frames_sent: frames_sent,
        frames_received_by_sessions: received,
        frames_resent: resent,
        caller_frames_dropped: dropped,
        businesses: args.businesses,
        isolation,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if by_caller < calls || failed > 0 || reconnects == 0 {
        bail!(
            "{} of {calls} calls lasted until the caller hung up; {failed} reconnect(s) failed",
            by_caller
        );
    }
    if let Some(failure) = report.isolation.as_ref().and_then(|i| i.failure()) {
        bail!("{failure}");
    }
    if dropped > 0 || received < frames_sent || received > frames_sent + resent {
        bail!(
            "caller frames: {frames_sent} sent, {received} reached a session ({resent} resent), {dropped} dropped"
        );
    }
    Ok(())
}

/// Connect → `session.created` on `url`, `n` times one after another, µs.
async fn floor(url: &str, n: u32) -> anyhow::Result<Histogram<u64>> {
    let mut spread = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    for _ in 0..n {
        let began = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?model=gpt-realtime"))
            .await
            .context("dialling the simulated upstream")?;
        let first = ws.next().await;
        if !matches!(first, Some(Ok(_))) {
            bail!("the simulated upstream sent no session.created");
        }
        spread.saturating_record(began.elapsed().as_micros() as u64);
        let _ = ws.close(None).await;
    }
    Ok(spread)
}

fn table(r: &ReconnectReport) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let isolation = match (r.businesses, &r.isolation) {
        (Some(n), Some(i)) => format!(
            "{:<44}{n} businesses: {} leak(s), {} unmarked, of {} session instructions checked\n",
            "isolation", i.leaks, i.unmarked, i.checked
        ),
        _ => String::new(),
    };
    let table = format!(
        "reconnect: {} calls of {:.0} s, every upstream session closed {} ms after its handshake, handshake {} ms\n\
         {:<44}{}\n{:<44}{}\n{:<44}{}\n\
         {:<44}p50 {} / p99 {} / max {} ms\n\
         {:<44}p50 {} / p99 {} / max {} ms\n\
         {:<44}{} sent, {} reached a session ({} resent), {} dropped\n",
        r.calls,
        r.duration_s,
        r.fault_ms,
        r.connect_delay_ms,
        "calls that lasted until the caller hung up",
        r.calls_ended_by_caller,
        "reconnects",
        r.reconnects,
        "reconnects failed",
        r.reconnects_failed,
        "gap (lost → restored)",
        f(r.gap_ms.p50),
        f(r.gap_ms.p99),
        f(r.gap_ms.max),
        "floor (dial → session.created)",
        f(r.floor_ms.p50),
        f(r.floor_ms.p99),
        f(r.floor_ms.max),
        "caller frames",
        r.caller_frames_sent,
        r.frames_received_by_sessions,
        r.frames_resent,
        r.caller_frames_dropped,
    );
    table + &isolation
}
