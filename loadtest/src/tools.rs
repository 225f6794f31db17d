//! `voxrelay-loadtest tools`: what a tool call costs the proxy, beside what the same request
//! costs when sent straight to the endpoint, in one run.
//!
//! The proxy runs in this process on loopback (a `voxrelay_sim::world::World`). `--calls`
//! callers each speak once; the simulated model then calls the business's tool at the end of
//! every response, `--tools-per-call` times in a row (each output is answered with a
//! `response.create`, whose response calls it again), with 100 ms of audio per response sent as
//! fast as the socket takes it. The tool endpoint (`voxrelay_sim::tool_endpoint`, checking
//! every signature) answers after `--endpoint-ms`.
//!
//! Reported, per tool call, µs:
//! - `before_request`: the proxy's own time from reading `response.function_call_arguments.done`
//!   to handing the signed request to its HTTP client (schema check, secret, body, HMAC, task);
//! - `after_answer`: from the endpoint's answer read in full to the `function_call_output` and
//!   the `response.create` queued on the upstream socket;
//! - `tool_latency`: the model's call to its output sent, as the proxy records it;
//! - the baseline, `direct_post`: the same signed POST sent straight to the endpoint from this
//!   process with a pooled client, answer read in full, interleaved with the calls;
//! - `added`: `tool_latency` minus the median `direct_post`: what going through the proxy adds
//!   to the endpoint's own round trip.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

use voxrelay::domain::{ToolKind, ToolStatus};
use voxrelay::telemetry::timeline::TimelineEvent;
use voxrelay_sim::caller;
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::tool_endpoint::{Behaviour, SimToolEndpoint};
use voxrelay_sim::upstream::{ScriptedToolCall, SimUpstreamConfig, default_clip};
use voxrelay_sim::world::{SIM_TOOL_SECRET, SIM_TOOL_SECRET_ENV};

use crate::Spread;

/// Options of a tools run.
#[derive(clap::Args, Clone, Debug)]
pub struct ToolsArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 4)]
    pub calls: u32,
    /// Tool calls each call makes in a row.
    #[arg(long, default_value_t = 50)]
    pub tools_per_call: usize,
    /// How long the endpoint takes to answer, ms.
    #[arg(long, default_value_t = 20)]
    pub endpoint_ms: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a tools run measured (µs).
#[derive(Debug, Serialize)]
pub struct ToolsReport {
    calls: u32,
    tools_per_call: usize,
    endpoint_ms: u64,
    tool_calls_ok: u64,
    tool_calls_failed: u64,
    before_request_us: Spread,
    after_answer_us: Spread,
    proxy_own_us: Spread,
    tool_latency_us: Spread,
    direct_post_us: Spread,
    added_us: Spread,
}

/// Runs the measurement and prints it; fails when a tool call did not succeed.
pub async fn run(args: ToolsArgs) -> anyhow::Result<()> {
    if !(1..=100).contains(&args.calls) || !(1..=500).contains(&args.tools_per_call) {
        bail!("--calls must be 1 to 100 and --tools-per-call 1 to 500");
    }
    let tool = "book_appointment";
    let upstream = SimUpstreamConfig {
        clip: default_clip()
            .context("the clip")?
            .first_ms(100, "Checking."),
        realtime_pace: false,
        keep_logs: false,
        tool_calls: (1..=args.tools_per_call)
            .map(|response| ScriptedToolCall {
                response,
                name: tool.into(),
                arguments: r#"{"day":"Tuesday","time":"10:00"}"#.into(),
                connection: None,
            })
            .collect(),
        ..SimUpstreamConfig::default()
    };
    // No hold clip: it would only add audio to the calls, not time to the tool path.
    let mut world =
        crate::dental_world(upstream, args.calls, |c| c.tools.hold_after_ms = 60_000).await?;
    let endpoint = SimToolEndpoint::start(
        SIM_TOOL_SECRET,
        [(
            tool.to_string(),
            Behaviour::ok(r#"{"booked":true}"#, args.endpoint_ms),
        )]
        .into(),
    )
    .await
    .context("starting the tool endpoint")?;
    voxrelay::ops::tools::set(
        &world.store,
        "dental",
        voxrelay::store::BusinessTool {
            name: tool.into(),
            kind: ToolKind::Function,
            description: "Book an appointment.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"day": {"type": "string"}, "time": {"type": "string"}},
                "required": ["day", "time"]
            }),
            endpoint: endpoint.url(tool),
            timeout_ms: 5000,
            secret_env: SIM_TOOL_SECRET_ENV.into(),
            allowed_tools: Vec::new(),
            updated_at_ms: 0,
        },
    )
    .await
    .context("adding the tool")?;

    // The baseline runs beside the calls: the same signed POST, straight to the endpoint.
    let url = endpoint.url(tool);
    let total = args.calls as usize * args.tools_per_call;
    let baseline = tokio::spawn(async move {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let mut times = Vec::with_capacity(total);
        for i in 0..total {
            let invocation = voxrelay::tools::invoke::Invocation {
                call_id: format!("call_direct{i}"),
                call_sid: "CA0".into(),
                business_id: "dental".into(),
                arguments: serde_json::json!({"day": "Tuesday", "time": "10:00"}),
            };
            let started = Instant::now();
            let (body, signature) = voxrelay::tools::invoke::request_body(
                tool,
                &invocation,
                SIM_TOOL_SECRET.as_bytes(),
                voxrelay::store::now_ms() / 1000,
            );
            let answer = client
                .post(&url)
                .header("content-type", "application/json")
                .header(voxrelay::tools::signature::HEADER, signature)
                .body(body)
                .send()
                .await?;
            let _ = answer.bytes().await?;
            times.push(started.elapsed());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Ok::<_, anyhow::Error>(times)
    });

    let speech = jfk_speech(Some(1.0)).context("reading jfk.wav")?;
    let listen_ms = (args.tools_per_call as u64) * (args.endpoint_ms + 150) + 4000;
    let mut placed = JoinSet::new();
    for n in 0..args.calls {
        let mut caller = world.caller(
            &format!("CA{:032x}", 0x7001_5000u32 + n),
            "+15005550006",
            speech.clone(),
        );
        caller.tail_silence_ms = listen_ms;
        placed.spawn(caller::run(caller));
    }
    while let Some(done) = placed.join_next().await {
        done.context("a call task")?.context("a call")?;
    }
    let mut before = histogram()?;
    let mut after = histogram()?;
    let mut own = histogram()?;
    let mut latency = histogram()?;
    let (mut ok, mut failed) = (0u64, 0u64);
    for _ in 0..args.calls {
        let Some(report) = tokio::time::timeout(Duration::from_secs(10), world.reports.recv())
            .await
            .ok()
            .flatten()
        else {
            bail!("a call's report did not come");
        };
        for (_, event) in report.timeline.entries() {
            if let TimelineEvent::ToolResult {
                status,
                latency_ms,
                before_request_us,
                after_answer_us,
                ..
            } = event
            {
                if *status != ToolStatus::Ok {
                    failed += 1;
                    continue;
                }
                ok += 1;
                let b = before_request_us.unwrap_or(0);
                before.record(b.max(1))?;
                after.record((*after_answer_us).max(1))?;
                own.record((b + after_answer_us).max(1))?;
                latency.record(((latency_ms * 1000.0) as u64).max(1))?;
            }
        }
    }
    let direct_times = baseline.await.context("the baseline task")??;
    let mut direct = histogram()?;
    for t in &direct_times {
        direct.record((t.as_micros() as u64).max(1))?;
    }
    let median_direct = direct.value_at_quantile(0.5);
    let mut added = histogram()?;
    for v in latency.iter_recorded() {
        let value = v.value_iterated_to().saturating_sub(median_direct).max(1);
        added.record_n(value, v.count_at_value())?;
    }
    let report = ToolsReport {
        calls: args.calls,
        tools_per_call: args.tools_per_call,
        endpoint_ms: args.endpoint_ms,
        tool_calls_ok: ok,
        tool_calls_failed: failed,
        before_request_us: Spread::of(&before, 1.0),
        after_answer_us: Spread::of(&after, 1.0),
        proxy_own_us: Spread::of(&own, 1.0),
        tool_latency_us: Spread::of(&latency, 1.0),
        direct_post_us: Spread::of(&direct, 1.0),
        added_us: Spread::of(&added, 1.0),
    };
    endpoint.shutdown();
    world.stop().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if failed > 0 || ok == 0 {
        bail!("{failed} tool call(s) failed, {ok} succeeded");
    }
    Ok(())
}

/// 1 µs to 60 s, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

fn print_table(r: &ToolsReport) {
    println!(
        "voxrelay-loadtest tools: {} calls x {} tool calls, endpoint answers after {} ms ({} ok, {} failed)",
        r.calls, r.tools_per_call, r.endpoint_ms, r.tool_calls_ok, r.tool_calls_failed
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "µs", "p50", "p95", "p99", "max"
    );
    for (name, s) in [
        (
            "proxy: arguments.done -> request sent",
            &r.before_request_us,
        ),
        ("proxy: answer read -> response.create", &r.after_answer_us),
        ("proxy: both together", &r.proxy_own_us),
        ("tool latency through the proxy", &r.tool_latency_us),
        ("baseline: the same POST sent directly", &r.direct_post_us),
        ("added by the proxy (latency - direct p50)", &r.added_us),
    ] {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "{name:<44} {:>10} {:>10} {:>10} {:>10}",
            f(s.p50),
            f(s.p95),
            f(s.p99),
            f(s.max)
        );
    }
}
