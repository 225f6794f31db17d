//! `voxrelay guard …`: the sanitizer from the command line.

use clap::Subcommand;

use voxrelay::bootstrap;
use voxrelay::config::Config;
use voxrelay::guard::sanitizer::{RuleOverride, scan_lines};

/// `voxrelay guard` subcommands.
#[derive(Subcommand)]
pub enum GuardCommand {
    /// Score caller utterances, one per line on stdin; print one JSON line each:
    /// {"text","score","verdict","rules"}.
    Scan {
        /// Also apply this business's own rules from the database.
        #[arg(long)]
        business: Option<String>,
    },
}

/// Runs one `guard` subcommand.
pub async fn run(config: &Config, command: GuardCommand) -> anyhow::Result<()> {
    match command {
        GuardCommand::Scan { business } => scan(config, business).await,
    }
}

async fn scan(config: &Config, business: Option<String>) -> anyhow::Result<()> {
    let mut sanitizer = bootstrap::sanitizer(config)?;
    if let Some(id) = business {
        let store = bootstrap::store(config).await?;
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
