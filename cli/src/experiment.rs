//! `voxrelay experiment …`: prompt experiments (A/B) for operators.

use clap::Subcommand;

use voxrelay::domain::Direction;
use voxrelay::ops;
use voxrelay::prompt::results::ExperimentResults;
use voxrelay::store::Store;

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
pub async fn run(store: &Store, command: ExperimentCommand) -> anyhow::Result<()> {
    let experiment = match command {
        ExperimentCommand::Results { id, json } => {
            let results = ops::experiments::results(store, &id).await?;
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
            let new = ops::experiments::CreateExperiment {
                direction,
                control_version_id: control,
                variant_version_id: variant,
                traffic_percent: percent,
            };
            ops::experiments::create(store, &business, &new).await?
        }
        ExperimentCommand::Start { id } => ops::experiments::start(store, &id).await?,
        ExperimentCommand::Stop { id } => ops::experiments::stop(store, &id).await?,
        ExperimentCommand::Show { id } => ops::experiments::experiment(store, &id).await?,
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
