//! `voxrelay prompt …`: prompt versions for operators (create, list, diff, promote, rollback,
//! preview). Every body is validated on create and on promote.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use voxrelay::domain::Direction;
use voxrelay::ops::{self, OpsError};
use voxrelay::prompt::PromptLibrary;
use voxrelay::prompt::diff::unified_diff;
use voxrelay::prompt::results::{self, ExperimentResults};
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
        "FULL {} tokens, COMPACT {} tokens, prefix shared with other businesses {} tokens",
        report.full_tokens, report.compact_tokens, report.shared_prefix_tokens
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

/// `voxrelay experiment` subcommands.
#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Create a draft experiment splitting a business's calls between two versions.
    Create {
        /// Business id.
        business: String,
        /// inbound or outbound.
        #[arg(long, default_value = "inbound")]
        direction: Direction,
        /// Version the rest of the calls get.
        #[arg(long)]
        control: String,
        /// Version `--percent` of the calls get.
        #[arg(long)]
        variant: String,
        /// Share of calls for the variant, 0–100.
        #[arg(long, default_value_t = 50)]
        percent: i64,
    },
    /// Start an experiment (one running per business and direction).
    Start {
        /// Experiment id.
        id: String,
    },
    /// Stop an experiment.
    Stop {
        /// Experiment id.
        id: String,
    },
    /// Show an experiment.
    Show {
        /// Experiment id.
        id: String,
    },
    /// How each arm did: calls, greeting p50/p95, turns, echo events and guard blocks per
    /// call, and the difference with its 95% confidence interval.
    Results {
        /// Experiment id.
        id: String,
        /// Print the results as JSON (the admin API's shape).
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `experiment` subcommand.
pub async fn run_experiment(store: &Store, command: ExperimentCommand) -> anyhow::Result<()> {
    let experiment = match command {
        ExperimentCommand::Results { id, json } => {
            let experiment = store
                .experiment(&id)
                .await?
                .with_context(|| format!("no experiment {id}"))?;
            let calls = store.experiment_calls(&id).await?;
            let results = results::results(&experiment, &calls);
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", results_table(&results));
            }
            return Ok(());
        }
        ExperimentCommand::Create {
            business,
            direction,
            control,
            variant,
            percent,
        } => {
            store
                .create_experiment(&business, direction, &control, &variant, percent)
                .await?
        }
        ExperimentCommand::Start { id } => store.start_experiment(&id).await?,
        ExperimentCommand::Stop { id } => store.stop_experiment(&id).await?,
        ExperimentCommand::Show { id } => store
            .experiment(&id)
            .await?
            .with_context(|| format!("no experiment {id}"))?,
    };
    println!(
        "{}\t{} {}\tcontrol {}\tvariant {} ({}%)\t{:?}",
        experiment.id,
        experiment.business_id,
        experiment.direction,
        experiment.control_version_id,
        experiment.variant_version_id,
        experiment.traffic_percent,
        experiment.status
    );
    Ok(())
}

/// The results as a table for a terminal.
fn results_table(r: &ExperimentResults) -> String {
    use std::fmt::Write as _;
    let value = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let signed = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:+.2}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  {}% of calls to the variant\n{}\n",
        r.experiment_id, r.status, r.traffic_percent, r.method
    );
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>12}{:>12}  {:<22}significant",
        "figure", "control", "variant", "difference", "95% interval"
    );
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>12}",
        "calls", r.control.calls, r.variant.calls
    );
    let arms = [
        (r.control.greeting_p50_ms, r.variant.greeting_p50_ms),
        (r.control.greeting_p95_ms, r.variant.greeting_p95_ms),
        (r.control.turns_per_call, r.variant.turns_per_call),
        (
            r.control.echo_events_per_call,
            r.variant.echo_events_per_call,
        ),
        (
            r.control.guard_blocks_per_call,
            r.variant.guard_blocks_per_call,
        ),
    ];
    for (d, (control, variant)) in r.differences.iter().zip(arms) {
        let interval = d.interval.map_or_else(
            || "-".to_string(),
            |i| format!("[{:+.2}, {:+.2}]", i.low, i.high),
        );
        let _ = writeln!(
            out,
            "{:<24}{:>12}{:>12}{:>12}  {:<22}{}",
            d.figure,
            value(control),
            value(variant),
            signed(d.difference),
            interval,
            if d.interval.is_none() {
                "-"
            } else if d.significant {
                "yes"
            } else {
                "no"
            }
        );
    }
    out
}
