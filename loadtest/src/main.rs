//! `voxrelay-loadtest`: how many calls one voxrelay instance carries, and what the proxy itself
//! adds.
//!
//! By default it starts everything on loopback: the simulated Realtime upstream in this process,
//! in echo mode (caller audio comes straight back as model audio once the greeting is done),
//! and the proxy as a child process (`voxrelay-loadtest proxy`, the same server as
//! `voxrelay serve`) on a fresh SQLite database, so the proxy's CPU and memory can be read
//! apart from the load generator's. Then it places `--calls` simulated Twilio calls, started
//! evenly over `--ramp` seconds, each streaming `--duration` seconds of stamped 20 ms frames
//! (see `stamp.rs`), echoing marks as Twilio does, and, for a `--barge-in-rate` share of the
//! calls, talking over the model once. It prints what it measured and exits 0 when every call
//! streamed and no frame was lost.
//!
//! `--floor` runs the same load twice in one invocation: through the proxy, then through the
//! floor relay (`floor.rs`: one task per call doing only the envelope swap, between the same
//! kinds of sockets), and reports the proxy's CPU per call and p99 round trip as ratios to the
//! floor's.
//!
//! `--proxy URL` measures a proxy that is already running instead (give `--auth-token`,
//! `--to`, and `--proxy-pid` for its CPU and memory); the upstream that proxy uses is its own
//! business, e.g. `voxrelay sim-upstream --echo`.
//!
//! `voxrelay-loadtest reconnect` measures mid-call reconnects instead (`reconnect.rs`).
//!
//! Every loop is bounded in count and time and every address is loopback unless `--proxy`
//! names another one.

mod call;
mod floor;
mod proxy;
mod reconnect;
mod stamp;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;

use voxrelay_sim::caller::CallerConfig;
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::upstream::{
    Clip, Dialect, ECHO_GREETING_MS, SimUpstream, SimUpstreamConfig, default_clip,
};

use call::{CallPlan, CallResult};

#[derive(Parser)]
#[command(name = "voxrelay-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy server in this process (what the load test starts as its child).
    #[command(hide = true)]
    Proxy,
    /// Run the floor relay in this process (what `--floor` starts as its child).
    #[command(hide = true)]
    Floor {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// The upstream's WebSocket URL.
        #[arg(long)]
        upstream: String,
    },
    /// Measure mid-call reconnects: every upstream session is closed a few seconds in, and the
    /// gap until the call's new session is restored is compared with a bare dial.
    Reconnect(reconnect::ReconnectArgs),
    /// Measure what a tool call costs the proxy, beside the same request sent directly.
    Tools(tools::ToolsArgs),
}

/// What carries the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// voxrelay itself.
    Proxy,
    /// The floor relay (`floor.rs`).
    Floor,
}

impl Relay {
    fn name(self) -> &'static str {
        match self {
            Relay::Proxy => "voxrelay",
            Relay::Floor => "floor",
        }
    }
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: u32,
    /// Seconds over which the calls start, evenly spread.
    #[arg(long, default_value_t = 5.0)]
    ramp: f64,
    /// Seconds each call streams before it sends `stop`.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Share of calls (0–1) in which the caller talks over the model once, mid-call.
    #[arg(long, default_value_t = 0.1)]
    barge_in_rate: f64,
    /// Event names the simulated upstream speaks: ga, or beta for relays that still use them.
    #[arg(long, value_enum, default_value_t = Dialect::Ga)]
    upstream_dialect: Dialect,
    /// The simulated model's time to first audio after `response.create`, ms.
    #[arg(long, default_value_t = 300)]
    first_audio_ms: u64,
    /// Wait between the webhook's answer and the media stream (Twilio's gap), ms.
    #[arg(long, default_value_t = 250)]
    stream_delay_ms: u64,
    /// Measure this running proxy (base URL, e.g. http://127.0.0.1:8080) instead of starting one.
    #[arg(long)]
    proxy: Option<String>,
    /// With --proxy: its process id, for CPU and memory.
    #[arg(long, requires = "proxy")]
    proxy_pid: Option<u32>,
    /// With --proxy: the Twilio auth token it checks webhooks with.
    #[arg(long, requires = "proxy")]
    auth_token: Option<String>,
    /// With --proxy: the number (E.164) the calls dial; it must belong to a business.
    #[arg(long, requires = "proxy")]
    to: Option<String>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run the load through the proxy and then through the floor relay, and report the ratios.
    #[arg(long, conflicts_with = "proxy")]
    floor: bool,
    /// Spread the calls over this many businesses (1 to 999), each with its own marked prompt,
    /// and have the simulated upstream check that every session carries only its own call's
    /// business (`voxrelay_sim::isolation`); any leak fails the run.
    #[arg(long, conflicts_with_all = ["proxy", "floor"])]
    businesses: Option<u32>,
}

/// Upper bounds, so a typo cannot start a run that never ends.
const MAX_CALLS: u32 = 5000;
const MAX_SECONDS: f64 = 600.0;

/// Percentiles of a set of values.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Spread {
    count: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Spread {
    fn of(h: &Histogram<u64>, scale: f64) -> Spread {
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / scale);
        Spread {
            count: h.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: (!h.is_empty()).then(|| h.max() as f64 / scale),
        }
    }
}

/// Upper bounds of a proxy-side histogram's quantiles, from `/metrics` buckets.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Bound {
    count: u64,
    p50_at_most_us: Option<f64>,
    p99_at_most_us: Option<f64>,
}

impl Bound {
    fn of(b: &proxy::Buckets) -> Bound {
        Bound {
            count: b.count as u64,
            p50_at_most_us: b.quantile_bound(0.5).map(|s| s * 1e6),
            p99_at_most_us: b.quantile_bound(0.99).map(|s| s * 1e6),
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
struct Report {
    /// `voxrelay` or `floor`.
    relay: &'static str,
    calls: u32,
    ramp_s: f64,
    duration_s: f64,
    barge_in_rate: f64,
    upstream_dialect: &'static str,
    cores: usize,
    memory_gib: f64,
    calls_streamed: u32,
    calls_failed: u32,
    calls_without_echo: u32,
    first_error: Option<String>,
    /// Stamped frame → its echo back, through the proxy both ways, µs.
    round_trip_us: Spread,
    /// `start` → first greeting audio, ms (includes the simulated model's first-audio time).
    greeting_ms: Spread,
    first_audio_ms: u64,
    /// The proxy's own relay overhead per leg, µs (bounds from its histogram buckets).
    relay_overhead_twilio_to_upstream: Bound,
    relay_overhead_upstream_to_twilio: Bound,
    /// The proxy's barge-in reaction, µs (bounds from its histogram buckets).
    barge_in_reaction: Bound,
    barge_ins_planned: u32,
    clears_received: u64,
    frames_stamped: u64,
    frames_expected: u64,
    frames_lost: u64,
    frames_dropped_by_proxy: f64,
    proxy_pid: Option<u32>,
    proxy_cpu_percent: Option<f64>,
    proxy_rss_base_mib: Option<f64>,
    proxy_rss_peak_mib: Option<f64>,
    proxy_rss_per_call_kib: Option<f64>,
    /// CPU of this process (load generator and in-process simulated upstream), % of one core.
    load_generator_cpu_percent: Option<f64>,
    wall_s: f64,
    /// With `--businesses`: how many, and what the upstream's isolation check found.
    businesses: Option<u32>,
    isolation: Option<voxrelay_sim::isolation::IsolationReport>,
}

/// The in-process world of the `reconnect` and `tools` runs: the proxy on loopback in front of
/// the simulated `upstream`, its call limits raised for `calls` calls and `tweak` applied, with
/// the business `dental` on +15005550006.
///
/// Errors: the world or the business could not be set up.
async fn dental_world(
    upstream: SimUpstreamConfig,
    calls: u32,
    tweak: impl FnOnce(&mut voxrelay::config::Config) + Send + 'static,
) -> anyhow::Result<voxrelay_sim::world::World> {
    let world = voxrelay_sim::world::World::start(voxrelay_sim::world::WorldOptions {
        upstream,
        database_url: None,
        configure: Some(Box::new(move |c| {
            c.limits.max_calls = calls as usize + 10;
            c.limits.max_pending = calls as usize + 10;
            tweak(c);
        })),
        twilio_validator: None,
    })
    .await
    .context("starting the proxy and the simulated upstream")?;
    world
        .add_business(
            "dental",
            "Bright Smile Dental",
            "Bright Smile Dental cleans teeth.",
            "Say hello.",
            "+15005550006",
        )
        .await
        .context("adding the business")?;
    Ok(world)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Some(Command::Proxy) => runtime.block_on(proxy::serve_here()),
        Some(Command::Floor { listen, upstream }) => {
            runtime.block_on(floor::serve(listen, upstream))
        }
        Some(Command::Reconnect(args)) => runtime.block_on(reconnect::run(args)),
        Some(Command::Tools(args)) => runtime.block_on(tools::run(args)),
        None if cli.run.floor => {
            let proxy = runtime.block_on(run(cli.run.clone(), Relay::Proxy))?;
            let floor = runtime.block_on(run(cli.run.clone(), Relay::Floor))?;
            let ratio = Ratio::of(&proxy, &floor);
            if cli.run.json {
                let both = serde_json::json!({ "proxy": proxy, "floor": floor, "ratio": ratio });
                println!("{}", serde_json::to_string_pretty(&both)?);
            } else {
                print!("{}\n{}\n{}", table(&proxy), table(&floor), ratio.table());
            }
            check(&proxy)?;
            check(&floor)
        }
        None => {
            let report = runtime.block_on(run(cli.run.clone(), Relay::Proxy))?;
            if cli.run.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", table(&report));
            }
            check(&report)
        }
    }
}

/// The proxy's figures as multiples of the floor's, measured in the same invocation.
#[derive(Debug, Serialize)]
struct Ratio {
    /// Proxy CPU per call ÷ floor CPU per call.
    cpu_per_call: Option<f64>,
    /// Proxy p99 round trip ÷ floor p99 round trip.
    round_trip_p99: Option<f64>,
    /// Proxy CPU per call, % of one core.
    proxy_cpu_per_call_percent: Option<f64>,
    /// Floor CPU per call, % of one core.
    floor_cpu_per_call_percent: Option<f64>,
}

impl Ratio {
    fn of(proxy: &Report, floor: &Report) -> Ratio {
        let per_call = |r: &Report| r.proxy_cpu_percent.map(|c| c / f64::from(r.calls));
        let divide = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Ratio {
            cpu_per_call: divide(per_call(proxy), per_call(floor)),
            round_trip_p99: divide(proxy.round_trip_us.p99, floor.round_trip_us.p99),
            proxy_cpu_per_call_percent: per_call(proxy),
            floor_cpu_per_call_percent: per_call(floor),
        }
    }

    fn table(&self) -> String {
        let f =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        format!(
            "voxrelay against the floor, same load, same run\n{:<34}{}x ({}% vs {}% of one core per call)\n{:<34}{}x\n",
            "CPU per call",
            f(self.cpu_per_call, 2),
            f(self.proxy_cpu_per_call_percent, 3),
            f(self.floor_cpu_per_call_percent, 3),
            "p99 round trip",
            f(self.round_trip_p99, 2),
        )
    }
}

/// Fails when a run lost calls or frames.
fn check(report: &Report) -> anyhow::Result<()> {
    if report.calls_failed > 0 || report.calls_without_echo > 0 || report.frames_lost > 0 {
        bail!(
            "{}: {} call(s) failed, {} got no echo, {} frame(s) lost{}",
            report.relay,
            report.calls_failed,
            report.calls_without_echo,
            report.frames_lost,
            report
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(failure) = report.isolation.as_ref().and_then(|i| i.failure()) {
        bail!("{}: {failure}", report.relay);
    }
    Ok(())
}

/// The greeting every call hears: the first 500 ms of the simulated upstream's reply, so the
/// echo (which starts when the greeting is done) covers nearly all of each call.
fn greeting_clip() -> anyhow::Result<Clip> {
    Ok(default_clip()?.first_ms(ECHO_GREETING_MS, "Hello."))
}

/// A free loopback port (bound, read, released).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0))
}

async fn run(args: RunArgs, relay: Relay) -> anyhow::Result<Report> {
    voxrelay::install_crypto_provider();
    if args.calls == 0 || args.calls > MAX_CALLS {
        bail!("--calls must be 1 to {MAX_CALLS}");
    }
    for (name, value) in [("--ramp", args.ramp), ("--duration", args.duration)] {
        if !(0.0..=MAX_SECONDS).contains(&value) {
            bail!("{name} must be 0 to {MAX_SECONDS} seconds");
        }
    }
    if args.duration < 2.0 {
        bail!("--duration must be at least 2 seconds");
    }
    if !(0.0..=1.0).contains(&args.barge_in_rate) {
        bail!("--barge-in-rate must be between 0 and 1");
    }
    if args.businesses.is_some_and(|n| !(1..=999).contains(&n)) {
        bail!("--businesses must be 1 to 999");
    }

    // The proxy: started here, or the one named.
    let dir = tempfile::tempdir()?;
    let mut upstream = None;
    let mut child = None;
    let (base, auth_token, to, pid) = match &args.proxy {
        Some(url) => (
            url.trim_end_matches('/').to_string(),
            args.auth_token
                .clone()
                .context("--proxy needs --auth-token")?,
            args.to.clone().context("--proxy needs --to")?,
            args.proxy_pid,
        ),
        None => {
            let sim = SimUpstream::start(
                ([127, 0, 0, 1], 0).into(),
                SimUpstreamConfig {
                    first_audio_delay_ms: args.first_audio_ms,
                    echo: true,
                    dialect: args.upstream_dialect,
                    keep_logs: false,
                    clip: greeting_clip()?,
                    check_isolation: args.businesses.is_some(),
                    ..SimUpstreamConfig::default()
                },
            )
            .await?;
            let listen = free_port()?;
            let log = dir.path().join("relay.log");
            let process = match relay {
                Relay::Proxy => {
                    let db = format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join("loadtest.db").display()
                    );
                    proxy::seed_database(&db).await?;
                    if let Some(n) = args.businesses {
                        proxy::seed_isolation(&db, n as usize).await?;
                    }
                    proxy::spawn(listen, &db, &sim.url(), args.calls, &log).await?
                }
                Relay::Floor => proxy::spawn_floor(listen, &sim.url(), &log).await?,
            };
            let pid = process.pid;
            upstream = Some(sim);
            child = Some(process);
            (
                format!("http://{listen}"),
                proxy::AUTH_TOKEN.to_string(),
                proxy::NUMBER.to_string(),
                Some(pid),
            )
        }
    };

    let speech = Arc::new(jfk_speech(Some(1.5))?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let duration = Duration::from_secs_f64(args.duration);
    let ramp = Duration::from_secs_f64(args.ramp);
    let barge_every = if args.barge_in_rate > 0.0 {
        (1.0 / args.barge_in_rate).round().max(1.0) as u32
    } else {
        0
    };
    let before = pid.map(proxy::sample).transpose()?;
    let own_before = proxy::sample(std::process::id()).ok();
    let started = Instant::now();

    // RSS is sampled while the calls run, for its peak.
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(
        before.map_or(0, |b| b.rss_bytes),
    ));
    let sampler = pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            for _ in 0..(MAX_SECONDS as u64 * 8) {
                tick.tick().await;
                match proxy::sample(pid) {
                    Ok(s) => {
                        peak.fetch_max(s.rss_bytes, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        })
    });

    let mut tasks = Vec::with_capacity(args.calls as usize);
    let mut barge_ins_planned = 0;
    for i in 0..args.calls {
        let at = if args.calls > 1 {
            ramp.mul_f64(f64::from(i) / f64::from(args.calls - 1))
        } else {
            Duration::ZERO
        };
        let barge_in_at = (barge_every > 0 && i % barge_every == barge_every / 2).then(|| {
            barge_ins_planned += 1;
            duration / 2
        });
        let webhook = format!("{base}/twilio/voice");
        let (from, to) = match args.businesses {
            Some(n) => {
                let business = (i % n) as usize;
                (
                    voxrelay_sim::isolation::caller(business, (i / n) as usize),
                    voxrelay_sim::isolation::number(business),
                )
            }
            None => (format!("+1415{:07}", i), to.clone()),
        };
        let plan = CallPlan {
            index: i as u16,
            caller: CallerConfig {
                lead_silence_ms: 0,
                tail_silence_ms: 0,
                stream_connect_delay_ms: args.stream_delay_ms,
                ..CallerConfig::inbound(
                    &webhook,
                    &auth_token,
                    &format!("CA{:032x}", u128::from(i) + 1),
                    &from,
                    &to,
                    speech.to_vec(),
                )
            },
            duration,
            stream_connect_delay: Duration::from_millis(args.stream_delay_ms),
            barge_in_at,
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            call::run(plan, client).await
        }));
    }
    let limit = ramp + duration + Duration::from_secs(60);
    let mut results: Vec<CallResult> = Vec::with_capacity(tasks.len());
    for task in tasks {
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(e)) => results.push(CallResult {
                error: Some(format!("call task failed: {e}")),
                ..CallResult::default()
            }),
            Err(_) => results.push(CallResult {
                error: Some("call did not finish in time".into()),
                ..CallResult::default()
            }),
        }
    }
    let wall = started.elapsed();
    let after = pid.map(proxy::sample).transpose()?;
    let own_after = proxy::sample(std::process::id()).ok();
    if let Some(sampler) = sampler {
        sampler.abort();
    }

    let exposition = reqwest::get(format!("{base}/metrics"))
        .await
        .context("GET /metrics")?
        .text()
        .await?;
    let overhead = |leg: &str| {
        Bound::of(&proxy::histogram(
            &exposition,
            "voxrelay_relay_overhead_seconds",
            &[&format!("leg=\"{leg}\"")],
        ))
    };

    let mut rtt = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut greeting = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut report = Report {
        relay: relay.name(),
        calls: args.calls,
        ramp_s: args.ramp,
        duration_s: args.duration,
        barge_in_rate: args.barge_in_rate,
        upstream_dialect: match args.upstream_dialect {
            Dialect::Ga => "ga",
            Dialect::Beta => "beta",
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_gib(),
        calls_streamed: 0,
        calls_failed: 0,
        calls_without_echo: 0,
        first_error: None,
        round_trip_us: Spread::default(),
        greeting_ms: Spread::default(),
        first_audio_ms: args.first_audio_ms,
        relay_overhead_twilio_to_upstream: overhead("twilio_to_upstream"),
        relay_overhead_upstream_to_twilio: overhead("upstream_to_twilio"),
        barge_in_reaction: Bound::of(&proxy::histogram(
            &exposition,
            "voxrelay_barge_in_reaction_seconds",
            &[],
        )),
        barge_ins_planned,
        clears_received: 0,
        frames_stamped: 0,
        frames_expected: 0,
        frames_lost: 0,
        frames_dropped_by_proxy: proxy::counter(&exposition, "voxrelay_frames_dropped", &[]),
        proxy_pid: pid,
        proxy_cpu_percent: None,
        proxy_rss_base_mib: None,
        proxy_rss_peak_mib: None,
        proxy_rss_per_call_kib: None,
        load_generator_cpu_percent: own_before
            .zip(own_after)
            .map(|(b, a)| 100.0 * (a.cpu_s - b.cpu_s) / wall.as_secs_f64()),
        wall_s: wall.as_secs_f64(),
        businesses: args.businesses,
        isolation: None,
    };
    for r in &results {
        if r.streamed {
            report.calls_streamed += 1;
        }
        if let Some(e) = &r.error {
            report.calls_failed += 1;
            report.first_error.get_or_insert_with(|| e.clone());
        } else if r.returned == 0 {
            report.calls_without_echo += 1;
        }
        for us in &r.round_trips_us {
            rtt.saturating_record((*us).max(1));
        }
        if let Some(ms) = r.greeting_ms {
            greeting.saturating_record((ms * 1000.0).round().max(1.0) as u64);
        }
        report.clears_received += r.clears;
        report.frames_stamped += r.stamped_sent;
        report.frames_expected += r.expected;
        report.frames_lost += r.expected - r.returned;
    }
    report.round_trip_us = Spread::of(&rtt, 1.0);
    report.greeting_ms = Spread::of(&greeting, 1000.0);
    if let (Some(before), Some(after)) = (before, after) {
        let peak = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(after.rss_bytes);
        report.proxy_cpu_percent = Some(100.0 * (after.cpu_s - before.cpu_s) / wall.as_secs_f64());
        report.proxy_rss_base_mib = Some(before.rss_bytes as f64 / (1024.0 * 1024.0));
        report.proxy_rss_peak_mib = Some(peak as f64 / (1024.0 * 1024.0));
        report.proxy_rss_per_call_kib =
            Some(peak.saturating_sub(before.rss_bytes) as f64 / 1024.0 / f64::from(args.calls));
    }
    drop(child);
    if let Some(sim) = upstream {
        report.isolation = args.businesses.map(|_| sim.isolation());
        sim.shutdown().await;
    }
    Ok(report)
}

fn table(r: &Report) -> String {
    use std::fmt::Write as _;
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let bound = |b: &Bound| {
        format!(
            "p50 <= {} us, p99 <= {} us ({} frames)",
            f(b.p50_at_most_us, 0),
            f(b.p99_at_most_us, 0),
            b.count
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "voxrelay-loadtest through {}: {} calls, ramp {} s, {} s each, barge-in rate {}, upstream {} (echo)",
        r.relay, r.calls, r.ramp_s, r.duration_s, r.barge_in_rate, r.upstream_dialect
    );
    let _ = writeln!(
        out,
        "machine: {} cores, {:.1} GiB; load generator and simulated upstream beside the proxy\n",
        r.cores, r.memory_gib
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "calls streamed",
            format!(
                "{} of {} ({} failed, {} without echo)",
                r.calls_streamed, r.calls, r.calls_failed, r.calls_without_echo
            ),
        ),
        (
            "relay round trip (us)",
            format!(
                "p50 {}  p99 {}  max {}  ({} frames)",
                f(r.round_trip_us.p50, 0),
                f(r.round_trip_us.p99, 0),
                f(r.round_trip_us.max, 0),
                r.round_trip_us.count
            ),
        ),
        (
            "proxy overhead, caller -> model",
            bound(&r.relay_overhead_twilio_to_upstream),
        ),
        (
            "proxy overhead, model -> caller",
            bound(&r.relay_overhead_upstream_to_twilio),
        ),
        (
            "greeting latency (ms)",
            format!(
                "p50 {}  p95 {}  max {}  (model's first audio at {} ms)",
                f(r.greeting_ms.p50, 1),
                f(r.greeting_ms.p95, 1),
                f(r.greeting_ms.max, 1),
                r.first_audio_ms
            ),
        ),
        (
            "barge-in reaction",
            format!(
                "p50 <= {} us, p99 <= {} us ({} barge-ins; {} planned, {} clears seen)",
                f(r.barge_in_reaction.p50_at_most_us, 0),
                f(r.barge_in_reaction.p99_at_most_us, 0),
                r.barge_in_reaction.count,
                r.barge_ins_planned,
                r.clears_received
            ),
        ),
        (
            "lost frames",
            format!(
                "{} of {} expected ({} dropped by the proxy's queues)",
                r.frames_lost, r.frames_expected, r.frames_dropped_by_proxy
            ),
        ),
        (
            "proxy CPU",
            r.proxy_cpu_percent
                .map_or("-".into(), |c| format!("{c:.1}% of one core")),
        ),
        (
            "proxy RSS",
            match (
                r.proxy_rss_base_mib,
                r.proxy_rss_peak_mib,
                r.proxy_rss_per_call_kib,
            ) {
                (Some(base), Some(peak), Some(per)) => {
                    format!("{base:.1} MiB idle, {peak:.1} MiB peak, {per:.0} KiB per call")
                }
                _ => "-".into(),
            },
        ),
        (
            "load generator CPU",
            r.load_generator_cpu_percent.map_or("-".into(), |c| {
                format!("{c:.1}% of one core (this process: the simulated calls, and the simulated upstream unless --proxy)")
            }),
        ),
        ("wall time", format!("{:.1} s", r.wall_s)),
    ];
    let mut rows = rows;
    if let (Some(n), Some(i)) = (r.businesses, &r.isolation) {
        rows.push((
            "isolation",
            format!(
                "{} businesses: {} leak(s), {} unmarked, of {} session instructions checked",
                n, i.leaks, i.unmarked, i.checked
            ),
        ));
    }
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<34}{value}");
    }
    out
}
