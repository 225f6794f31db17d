//! The `voxrelay` command: serve, demo, the simulators, and database administration.

use std::path::PathBuf;
use std::process::ExitCode;

mod prompt_cli;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use voxrelay::config::{self, Config, Secrets};
use voxrelay::guard::sanitizer::{RuleOverride, Sanitizer, scan_lines};
use voxrelay::http::{self, AppState};
use voxrelay::prompt::PromptLibrary;
use voxrelay::store::{BusinessRule, BusinessUpdate, NewBusiness, Store};
use voxrelay_sim::caller::{self, CallerConfig};
use voxrelay_sim::demo::{self, DemoOptions};
use voxrelay_sim::upstream::{SimUpstream, SimUpstreamArgs};
use voxrelay_sim::wav;

#[derive(Parser)]
#[command(
    name = "voxrelay",
    version,
    about = "Inline proxy between Twilio Media Streams and realtime speech models"
)]
struct Cli {
    /// Configuration file (keys can be overridden with VOXRELAY_SECTION_KEY).
    #[arg(long, global = true, env = "VOXRELAY_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve,
    /// One call through the proxy on real speech with the simulated upstream (no network, no key).
    Demo(DemoArgs),
    /// Run the simulated Realtime API upstream.
    SimUpstream(SimUpstreamArgs),
    /// Act as Twilio: sign and POST the webhook, stream a WAV, print the timeline.
    CallSim(CallSimArgs),
    /// Database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Businesses (tenants).
    Business {
        #[command(subcommand)]
        command: BusinessCommand,
    },
    /// Phone numbers.
    Number {
        #[command(subcommand)]
        command: NumberCommand,
    },
    /// Prompt versions: create, list, diff, promote, rollback, preview.
    Prompt {
        #[command(subcommand)]
        command: prompt_cli::PromptCommand,
    },
    /// Prompt experiments (A/B): create, start, stop, show.
    Experiment {
        #[command(subcommand)]
        command: prompt_cli::ExperimentCommand,
    },
    /// Guards.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
}

#[derive(Subcommand)]
enum GuardCommand {
    /// Score caller utterances, one per line on stdin; print one JSON line each:
    /// {"text","score","verdict","rules"}.
    Scan {
        /// Also apply this business's own rules from the database.
        #[arg(long)]
        business: Option<String>,
    },
}

#[derive(Args)]
struct DemoArgs {
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
}

#[derive(Args)]
struct CallSimArgs {
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

#[derive(Subcommand)]
enum DbCommand {
    /// Create or update the schema.
    Migrate,
}

#[derive(Subcommand)]
enum BusinessCommand {
    /// Add a business.
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Id (letters, digits, '_', '-', '.'); generated when omitted.
        #[arg(long)]
        id: Option<String>,
        /// Main language (BCP 47, e.g. en).
        #[arg(long, default_value = "en")]
        language: String,
        /// Realtime voice.
        #[arg(long, default_value = "marin")]
        voice: String,
        /// File with the inbound business prompt.
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        /// File with the outbound business prompt.
        #[arg(long)]
        outbound_prompt_file: Option<PathBuf>,
        /// How to greet callers.
        #[arg(long, default_value = "")]
        greeting: String,
    },
    /// Change a business; only the options given change. Calls in progress keep what they
    /// started with.
    Update {
        /// Business id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Main language (BCP 47).
        #[arg(long)]
        language: Option<String>,
        /// Realtime voice.
        #[arg(long)]
        voice: Option<String>,
        /// Opening hours as free text (`business.hours` in prompt bodies); "" clears them.
        #[arg(long)]
        hours: Option<String>,
        /// How to greet callers.
        #[arg(long)]
        greeting: Option<String>,
        /// A section every prompt version must have (repeat for several); replaces the list.
        #[arg(long = "require-section")]
        require_section: Vec<String>,
        /// Require no sections.
        #[arg(long, conflicts_with = "require_section")]
        no_required_sections: bool,
    },
    /// Delete a business with its numbers, rules, prompt versions and experiments (its call
    /// records stay).
    Delete {
        /// Business id.
        id: String,
    },
    /// List businesses.
    List,
    /// Show one business with its numbers and prompts.
    Show {
        /// Business id.
        id: String,
    },
    /// Set how injection attempts are handled: monitor (default), gate or flag.
    Policy {
        /// Business id.
        id: String,
        /// monitor | gate | flag.
        policy: String,
    },
    /// Add or replace one of the business's own sanitizer rules.
    Rule {
        /// Business id.
        id: String,
        /// Rule id (replaces a built-in rule with the same id).
        #[arg(long)]
        rule_id: String,
        /// Regular expression over normalised (lower-case) transcript text.
        #[arg(long, default_value = "")]
        pattern: String,
        /// Weight, 0–1.
        #[arg(long, default_value_t = 0.8)]
        weight: f64,
        /// Category for reports.
        #[arg(long, default_value = "business")]
        category: String,
        /// Disable the rule with this id instead.
        #[arg(long)]
        disable: bool,
    },
}

#[derive(Subcommand)]
enum NumberCommand {
    /// Route calls to an E.164 number to a business.
    Add {
        /// The number, E.164 (+14155550100).
        number: String,
        /// Business id.
        #[arg(long)]
        business: String,
    },
    /// Stop routing a number to a business.
    Remove {
        /// The number, E.164 (+14155550100).
        number: String,
        /// Business id.
        #[arg(long)]
        business: String,
    },
}

fn main() -> ExitCode {
    voxrelay::install_crypto_provider();
    let cli = Cli::parse();
    voxrelay::telemetry::init(
        cli.json_logs,
        match cli.command {
            Command::Demo(_) => "warn",
            _ => "info,tower_http=warn",
        },
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once (many messages already include their source).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

async fn open_store(path: &std::path::Path) -> anyhow::Result<Store> {
    let config = load_config(path)?;
    let store = Store::connect(&config.database.url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(&cli.config).await,
        Command::Demo(args) => {
            let options = DemoOptions {
                event_log: args.event_log,
                heard_wav: args.heard_wav,
                policy: args.policy,
                attack: args.attack,
                ..DemoOptions::default()
            };
            println!(
                "voxrelay demo: placing one simulated call on jfk.wav (about 20 s of real time)..."
            );
            let outcome = demo::run(&options).await?;
            print!("{}", demo::render(&outcome));
            if let Some(path) = &options.heard_wav {
                println!("  heard audio        {}", path.display());
            }
            demo::check(&outcome).map_err(|missing| anyhow::anyhow!("demo incomplete: {missing}"))
        }
        Command::SimUpstream(args) => {
            let (listen, config) = args.into_config()?;
            let sim = SimUpstream::start(listen, config)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!("simulated Realtime upstream on {}", sim.url());
            tokio::signal::ctrl_c().await?;
            sim.shutdown().await;
            Ok(())
        }
        Command::CallSim(args) => call_sim(args).await,
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let store = open_store(&cli.config).await?;
            println!("migrated ({:?})", store.backend());
            Ok(())
        }
        Command::Business { command } => {
            let store = open_store(&cli.config).await?;
            business(&store, command).await
        }
        Command::Guard {
            command: GuardCommand::Scan { business },
        } => guard_scan(&cli.config, business).await,
        Command::Experiment { command } => {
            let store = open_store(&cli.config).await?;
            prompt_cli::run_experiment(&store, command).await
        }
        Command::Prompt { command } => {
            let config = load_config(&cli.config)?;
            let store = open_store(&cli.config).await?;
            let library = match config.prompt_dir() {
                Some(dir) => PromptLibrary::from_dir(&dir, config.prompt.compact_business_chars)?,
                None => PromptLibrary::embedded(config.prompt.compact_business_chars)?,
            };
            prompt_cli::run(&store, &library, command).await
        }
        Command::Number { command } => {
            let store = open_store(&cli.config).await?;
            match command {
                NumberCommand::Add { number, business } => {
                    store.add_number(&number, &business).await?;
                    println!("{number} -> {business}");
                }
                NumberCommand::Remove { number, business } => {
                    let number = store.remove_number(&business, &number).await?;
                    println!("{number} no longer routed to {business}");
                }
            }
            Ok(())
        }
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let secrets = Secrets::from_env(config.upstream_is_local())?;
    let store = Store::connect(&config.database.url).await?;
    store.migrate().await?;
    let prompts = match config.prompt_dir() {
        Some(dir) => PromptLibrary::from_dir(&dir, config.prompt.compact_business_chars)?,
        None => PromptLibrary::embedded(config.prompt.compact_business_chars)?,
    };
    let sanitizer = match config.guard_rules_file() {
        Some(path) => Sanitizer::from_file(&path)?,
        None => Sanitizer::builtin()?,
    };
    tokio::task::spawn_blocking(voxrelay::prompt::warm_tokenizer).await?;
    let listener = http::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, public_host = %config.server.public_host,
        upstream = %config.upstream.url, model = %config.upstream.model, "voxrelay serving");
    let state = AppState::new(config, secrets, store, prompts, sanitizer, None);
    http::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}

async fn call_sim(args: CallSimArgs) -> anyhow::Result<()> {
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
        webhook_url: format!("{base}/twilio/voice"),
        signed_url: format!("{public}/twilio/voice"),
        auth_token: args.auth_token,
        call_sid: call_sid.clone(),
        from: args.from,
        to: args.to,
        direction: "inbound".into(),
        speech,
        lead_silence_ms: args.lead_silence_ms,
        tail_silence_ms: args.tail_silence_ms,
        stream_connect_delay_ms: 0,
        stream_url_override: None,
        token_override: None,
        inject: Vec::new(),
        stop_reading: None,
        recv_buffer_bytes: None,
        close_without_stop: false,
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

async fn guard_scan(path: &std::path::Path, business: Option<String>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let mut sanitizer = match config.guard_rules_file() {
        Some(file) => Sanitizer::from_file(&file)?,
        None => Sanitizer::builtin()?,
    };
    if let Some(id) = business {
        let store = Store::connect(&config.database.url).await?;
        store.migrate().await?;
        let overrides: Vec<RuleOverride> = store
            .guard_rules(&id)
            .await?
            .into_iter()
            .map(RuleOverride::from)
            .collect();
        sanitizer = sanitizer.with_overrides(&overrides)?;
    }
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    scan_lines(stdin, stdout, &sanitizer)?;
    Ok(())
}

async fn business(store: &Store, command: BusinessCommand) -> anyhow::Result<()> {
    match command {
        BusinessCommand::Add {
            name,
            id,
            language,
            voice,
            prompt_file,
            outbound_prompt_file,
            greeting,
        } => {
            let read = |p: Option<PathBuf>| -> anyhow::Result<String> {
                match p {
                    Some(p) => std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display())),
                    None => Ok(String::new()),
                }
            };
            let mut new = NewBusiness::named(name);
            new.id = id;
            new.language = language;
            new.voice = voice;
            new.ai_prompt = read(prompt_file)?;
            new.outbound_ai_prompt = read(outbound_prompt_file)?;
            new.greeting_instructions = greeting;
            let b = store.add_business(&new).await?;
            println!("{}", b.id);
        }
        BusinessCommand::List => {
            for b in store.list_businesses().await? {
                let numbers = store.numbers_for_business(&b.id).await?;
                println!(
                    "{}\t{}\t{}\t{}",
                    b.id,
                    b.name,
                    b.language,
                    numbers.join(",")
                );
            }
        }
        BusinessCommand::Update {
            id,
            name,
            language,
            voice,
            hours,
            greeting,
            require_section,
            no_required_sections,
        } => {
            let update = BusinessUpdate {
                name,
                language,
                voice,
                hours,
                greeting_instructions: greeting,
                required_sections: if no_required_sections {
                    Some(Vec::new())
                } else {
                    Some(require_section).filter(|s| !s.is_empty())
                },
                ..BusinessUpdate::default()
            };
            let b = store.update_business(&id, &update).await?;
            println!("{}", serde_json::to_string_pretty(&b)?);
        }
        BusinessCommand::Delete { id } => {
            store.delete_business(&id).await?;
            println!("{id}: deleted");
        }
        BusinessCommand::Policy { id, policy } => {
            store.set_guard_policy(&id, &policy).await?;
            println!("{id}: guard policy {policy}");
        }
        BusinessCommand::Rule {
            id,
            rule_id,
            pattern,
            weight,
            category,
            disable,
        } => {
            let rule = BusinessRule {
                rule_id: rule_id.clone(),
                category,
                pattern: if disable && pattern.is_empty() {
                    "(?:disabled)".into()
                } else {
                    pattern
                },
                weight,
                enabled: !disable,
            };
            store.upsert_guard_rule(&id, &rule).await?;
            println!(
                "{id}: rule {rule_id} {}",
                if disable { "disabled" } else { "set" }
            );
        }
        BusinessCommand::Show { id } => match store.business(&id).await? {
            Some(b) => {
                let numbers = store.numbers_for_business(&b.id).await?;
                let mut value = serde_json::to_value(&b)?;
                value["numbers"] = serde_json::json!(numbers);
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            None => anyhow::bail!("no business with id {id:?}"),
        },
    }
    Ok(())
}
