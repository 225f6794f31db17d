//! The `voxrelay` command: serve, demo, the simulators, and the operators' commands. One file
//! per command group; each translates its arguments into calls of the library's use cases and
//! prints what they return. Every command that reads the configuration starts from
//! `voxrelay::bootstrap`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use voxrelay::bootstrap;
use voxrelay::config::{self, Config};
use voxrelay_sim::upstream::SimUpstreamArgs;

mod business;
mod call;
mod experiment;
mod guard;
mod prompt;
mod serve;
mod sim;
mod tool;

use business::{BusinessCommand, NumberCommand};
use guard::GuardCommand;
use sim::{CallSimArgs, DemoArgs};

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
        command: prompt::PromptCommand,
    },
    /// Prompt experiments (A/B): create, start, stop, show.
    Experiment {
        #[command(subcommand)]
        command: experiment::ExperimentCommand,
    },
    /// A business's tools: functions the proxy calls, MCP servers passed through.
    Tool {
        #[command(subcommand)]
        command: tool::ToolCommand,
    },
    /// Outbound calls: place one through Twilio's REST API.
    Call {
        #[command(subcommand)]
        command: call::CallCommand,
    },
    /// Guards.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or update the schema.
    Migrate,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        // The simulated world's commands read no configuration file.
        Command::Demo(args) => sim::demo(args).await,
        Command::SimUpstream(args) => sim::sim_upstream(args).await,
        Command::CallSim(args) => sim::call_sim(args).await,
        command => with_config(Config::load(&cli.config)?, command).await,
    }
}

/// The commands that start from the configuration file.
async fn with_config(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve::run(config).await,
        Command::Guard { command } => guard::run(&config, command).await,
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let store = bootstrap::store(&config).await?;
            println!("migrated ({:?})", store.backend());
            Ok(())
        }
        Command::Business { command } => {
            let library = bootstrap::prompts(&config)?;
            let checks = voxrelay::ops::businesses::Checks {
                library: &library,
                transcribing: config.transcribes(),
            };
            business::run(
                &bootstrap::store(&config).await?,
                &bootstrap::sanitizer(&config)?,
                checks,
                command,
            )
            .await
        }
        Command::Number { command } => {
            business::number(&bootstrap::store(&config).await?, command).await
        }
        Command::Tool { command } => tool::run(&bootstrap::store(&config).await?, command).await,
        Command::Call { command } => {
            call::run(&config, &bootstrap::store(&config).await?, command).await
        }
        Command::Experiment { command } => {
            experiment::run(&bootstrap::store(&config).await?, command).await
        }
        Command::Prompt { command } => {
            let store = bootstrap::store(&config).await?;
            prompt::run(&store, &bootstrap::prompts(&config)?, command).await
        }
        Command::Demo(args) => sim::demo(args).await,
        Command::SimUpstream(args) => sim::sim_upstream(args).await,
        Command::CallSim(args) => sim::call_sim(args).await,
    }
}
