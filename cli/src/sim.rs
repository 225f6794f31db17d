//! `voxrelay demo`, `voxrelay sim-upstream` and `voxrelay call-sim`: the simulated world from
//! the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use voxrelay_sim::caller::{self, CallerConfig};
use voxrelay_sim::demo::{self, DemoOptions};
use voxrelay_sim::upstream::{SimUpstream, SimUpstreamArgs};
use voxrelay_sim::wav;

/// `voxrelay demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Write every event the simulated upstream receives to this JSONL file.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// Write what the caller heard to this WAV file.
    #[arg(long)]
    heard_wav: Option<PathBuf>,
    /// Guard policy of the demo business: monitor, gate or flag.
    #[arg(long, default_value = "monitor")]
    policy: String,
    /// Make the caller's second line a prompt-injection attempt.
    #[arg(long)]
    attack: bool,
    /// What the call shows: call (greeting, barge-in, answers) or booking (a tool call with
    /// its hold clip, then the agent hangs up).
    #[arg(long, value_enum, default_value = "call")]
    scenario: demo::Scenario,
}

/// `voxrelay call-sim`.
#[derive(Args)]
pub struct CallSimArgs {
    /// The proxy's base URL, where the webhook is POSTed.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    proxy: String,
    /// The public base URL the proxy is configured with (what Twilio signs); default: --proxy.
    #[arg(long)]
    public_url: Option<String>,
    /// Called number (E.164): must belong to a business.
    #[arg(long)]
    to: String,
    /// Caller number (E.164).
    #[arg(long, default_value = "+14155550100")]
    from: String,
    /// WAV with the caller's speech; default: the built-in jfk.wav.
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Silence before the speech, ms.
    #[arg(long, default_value_t = 1200)]
    lead_silence_ms: u64,
    /// Silence after the speech, ms.
    #[arg(long, default_value_t = 5000)]
    tail_silence_ms: u64,
    /// Write what the caller heard to this WAV file.
    #[arg(long)]
    heard_wav: Option<PathBuf>,
    /// Twilio auth token used to sign the webhook.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: String,
}

/// One call through the proxy on real speech; prints the timeline and fails when the call did
/// not show what the demo exists to show.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        event_log: args.event_log,
        heard_wav: args.heard_wav,
        policy: args.policy,
        attack: args.attack,
        scenario: args.scenario,
        ..DemoOptions::default()
    };
    println!("voxrelay demo: placing one simulated call on jfk.wav (about 20 s of real time)...");
    let outcome = demo::run(&options).await?;
    print!("{}", demo::render(&outcome));
    if let Some(path) = &options.heard_wav {
        println!("  heard audio        {}", path.display());
    }
    demo::check(&outcome).map_err(|missing| anyhow::anyhow!("demo incomplete: {missing}"))
}

/// The simulated Realtime API until Ctrl-C.
pub async fn sim_upstream(args: SimUpstreamArgs) -> anyhow::Result<()> {
    let (listen, config) = args.into_config()?;
    let sim = SimUpstream::start(listen, config)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("simulated Realtime upstream on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}

/// Acts as Twilio against a running proxy.
pub async fn call_sim(args: CallSimArgs) -> anyhow::Result<()> {
    let (samples, rate) = match &args.wav {
        Some(path) => wav::read_mono(path)?,
        None => wav::read_mono_from_bytes(demo::JFK_WAV)?,
    };
    let speech = wav::to_mulaw_8k(&samples, rate)?;
    let base = args.proxy.trim_end_matches('/');
    let public = args
        .public_url
        .as_deref()
        .unwrap_or(base)
        .trim_end_matches('/');
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    let report = caller::run(CallerConfig {
        signed_url: format!("{public}/twilio/voice"),
        lead_silence_ms: args.lead_silence_ms,
        tail_silence_ms: args.tail_silence_ms,
        ..CallerConfig::inbound(
            &format!("{base}/twilio/voice"),
            &args.auth_token,
            &call_sid,
            &args.from,
            &args.to,
            speech,
        )
    })
    .await?;
    println!(
        "call {call_sid}: webhook answered {}",
        report.webhook_status
    );
    if !report.streamed {
        println!("no stream; TwiML was:\n{}", report.twiml);
        return Ok(());
    }
    for (at, event) in &report.events {
        println!("{:>9.1} ms  {event:?}", at.as_secs_f64() * 1000.0);
    }
    println!(
        "{} frames sent, {} media received, {} marks echoed, {:.1} s heard",
        report.frames_sent,
        report.media_received,
        report.marks_echoed,
        report.heard.len() as f64 / 8000.0
    );
    if let Some(path) = &args.heard_wav {
        wav::write_mulaw_as_wav(path, &report.heard)?;
        println!("heard audio written to {}", path.display());
    }
    Ok(())
}
