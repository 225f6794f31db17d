//! `voxrelay prompt …`: prompt versions for operators (create, list, diff, promote, rollback,
//! preview), through the same use cases as the admin API (`voxrelay::ops::prompts`). Every body
//! is validated on create, promote and rollback.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use voxrelay::domain::Direction;
use voxrelay::ops::{self, OpsError};
use voxrelay::prompt::PromptLibrary;
use voxrelay::prompt::diff::unified_diff;
use voxrelay::prompt::validate::Report;
use voxrelay::store::{PromptStatus, Store};

/// `voxrelay prompt` subcommands.
#[derive(Subcommand)]
pub enum PromptCommand {
    /// Create a draft version from a file (validated first).
    Create {
        /// Business id.
        business: String,
        /// inbound or outbound.
        #[arg(long, default_value = "inbound")]
        direction: Direction,
        /// File with the business prompt body (may use {{ business.name }} and friends).
        #[arg(long)]
        file: PathBuf,
        /// Who wrote it.
        #[arg(long, default_value = "operator")]
        author: String,
        /// Why.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List a business's versions, newest first.
    List {
        /// Business id.
        business: String,
        /// Only this direction.
        #[arg(long)]
        direction: Option<Direction>,
    },
    /// Unified diff of two versions.
    Diff {
        /// The older version id.
        old: String,
        /// The newer version id.
        new: String,
    },
    /// Promote a version to staging or production (validated again first).
    Promote {
        /// Version id.
        id: String,
        /// staging or production.
        #[arg(long, default_value = "production")]
        to: PromptStatus,
    },
    /// Make an earlier version production again.
    Rollback {
        /// Business id.
        business: String,
        /// inbound or outbound.
        #[arg(long, default_value = "inbound")]
        direction: Direction,
        /// The version id to bring back.
        #[arg(long)]
        to: String,
    },
    /// Show the built FULL and COMPACT prompts with token counts and the shared prefix.
    Preview {
        /// Business id.
        business: String,
        /// inbound or outbound.
        #[arg(long, default_value = "inbound")]
        direction: Direction,
        /// Version id; default: the production version, else the business's own prompt.
        #[arg(long)]
        version: Option<String>,
    },
}

fn print_report(report: &Report) {
    for e in &report.errors {
        println!("error: {e}");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    println!(
        "FULL {} tokens, COMPACT {} tokens, prefix shared with other businesses {} tokens, tools {} tokens",
        report.full_tokens, report.compact_tokens, report.shared_prefix_tokens, report.tools_tokens
    );
}

/// An operator use case's refusal as a CLI error: what was not done, and why (each problem of
/// a rejected body on a line of its own).
fn refused(what: &str, e: OpsError) -> anyhow::Error {
    match e {
        OpsError::InvalidPrompt { problems, warnings } => {
            for w in &warnings {
                println!("warning: {w}");
            }
            for p in &problems {
                println!("error: {p}");
            }
            anyhow::anyhow!("{what}: the prompt has {} problem(s)", problems.len())
        }
        other => anyhow::anyhow!("{what}: {other}"),
    }
}

/// Runs one `prompt` subcommand.
pub async fn run(
    store: &Store,
    library: &PromptLibrary,
    command: PromptCommand,
) -> anyhow::Result<()> {
    match command {
        PromptCommand::Create {
            business,
            direction,
            file,
            author,
            note,
        } => {
            let body = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let done = ops::prompts::create_version(
                store,
                library,
                ops::prompts::NewDraft {
                    business_id: business,
                    direction,
                    body,
                    author,
                    note,
                },
            )
            .await
            .map_err(|e| refused("not created", e))?;
            print_report(&done.report);
            println!(
                "created {} (version {}, draft)",
                done.version.id, done.version.version
            );
        }
        PromptCommand::List {
            business,
            direction,
        } => {
            for v in store.prompt_versions(&business, direction).await? {
                println!(
                    "{}\t{}\tv{}\t{}\tFULL {}\t{}\t{}",
                    v.id,
                    v.direction,
                    v.version,
                    v.status.as_str(),
                    v.full_tokens.map_or("-".to_string(), |t| t.to_string()),
                    v.author,
                    v.note
                );
            }
        }
        PromptCommand::Diff { old, new } => {
            let a = store
                .prompt_version(&old)
                .await?
                .with_context(|| format!("no version {old}"))?;
            let b = store
                .prompt_version(&new)
                .await?
                .with_context(|| format!("no version {new}"))?;
            print!(
                "{}",
                unified_diff(
                    &a.body,
                    &b.body,
                    &format!("{} v{}", a.id, a.version),
                    &format!("{} v{}", b.id, b.version)
                )
            );
        }
        PromptCommand::Promote { id, to } => {
            let done = ops::prompts::promote(store, library, &id, to)
                .await
                .map_err(|e| refused("not promoted", e))?;
            print_report(&done.report);
            println!(
                "{} (v{}) is now {}",
                done.version.id,
                done.version.version,
                done.version.status.as_str()
            );
        }
        PromptCommand::Rollback {
            business,
            direction,
            to,
        } => {
            let done = ops::prompts::rollback(store, library, &business, direction, &to)
                .await
                .map_err(|e| refused("not rolled back", e))?;
            println!(
                "{} (v{}) is production again",
                done.version.id, done.version.version
            );
        }
        PromptCommand::Preview {
            business,
            direction,
            version,
        } => {
            let preview =
                ops::prompts::preview(store, library, &business, direction, version.as_deref())
                    .await
                    .map_err(|e| refused("no preview", e))?;
            print_report(&preview.report);
            if let Some(built) = &preview.report.prompts {
                println!(
                    "\n===== FULL =====\n{}\n\n===== COMPACT =====\n{}",
                    built.full, built.compact
                );
            }
        }
    }
    Ok(())
}
