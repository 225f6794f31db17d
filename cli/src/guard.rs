//! `voxrelay guard …`: the sanitizer from the command line: score lines, train the classifier,
//! evaluate on a part of the data.

use std::path::PathBuf;

use clap::Subcommand;

use voxrelay::bootstrap;
use voxrelay::config::Config;
use voxrelay::guard::dataset::Dataset;
use voxrelay::guard::evaluate::evaluate;
use voxrelay::guard::sanitizer::{RuleOverride, ScanMode, scan_lines};
use voxrelay::guard::train::{TrainOptions, train_dir, write_model};

/// `voxrelay guard` subcommands.
#[derive(Subcommand)]
pub enum GuardCommand {
    /// Score caller utterances, one per line on stdin; print one JSON line each:
    /// {"text","score","verdict","stage","rules_score","model_score","rules"}.
    Scan {
        /// Also apply this business's own rules from the database.
        #[arg(long)]
        business: Option<String>,
        /// Read the lines as one caller's successive turns: each is also scored together with
        /// the two before it, as in a call (a blank line starts another call).
        #[arg(long)]
        turns: bool,
    },
    /// Train the classifier on DATA/train, choose its anchors on DATA/dev, and write the model
    /// and its SHA-256 (OUT.sha256). The same data and seed give the same file, bit for bit.
    Train {
        /// The data directory (with train/ and dev/).
        #[arg(long, default_value = "data/guard")]
        data: PathBuf,
        /// The model file to write.
        #[arg(long, default_value = "config/guard_model.bin")]
        out: PathBuf,
        /// Seed of the training shuffle.
        #[arg(long, default_value_t = TrainOptions::default().seed)]
        seed: u64,
        /// Passes over the examples.
        #[arg(long, default_value_t = TrainOptions::default().epochs)]
        epochs: u32,
        /// L2 penalty per update.
        #[arg(long, default_value_t = TrainOptions::default().l2)]
        l2: f64,
        /// AdaGrad base step.
        #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
        learning_rate: f64,
        /// Weight of all attacks relative to all benign examples.
        #[arg(long, default_value_t = TrainOptions::default().attack_balance)]
        attack_balance: f64,
        /// Models fitted with successive seeds and averaged.
        #[arg(long, default_value_t = TrainOptions::default().ensemble)]
        ensemble: u32,
        /// Refits that weigh the highest-scoring benign examples more.
        #[arg(long, default_value_t = TrainOptions::default().hard_negative_rounds)]
        hard_negative_rounds: u32,
        /// Share of benign examples weighed more in each refit.
        #[arg(long, default_value_t = TrainOptions::default().hard_negative_share)]
        hard_negative_share: f64,
        /// How much more they weigh.
        #[arg(long, default_value_t = TrainOptions::default().hard_negative_weight)]
        hard_negative_weight: f64,
        /// Share of benign dev margins (single lines and runs of turns) allowed above the flag
        /// anchor before its gap.
        #[arg(long, default_value_t = TrainOptions::default().flag_fp_budget)]
        flag_fp_budget: f64,
        /// Margin added above that budget for the flag anchor.
        #[arg(long, default_value_t = TrainOptions::default().flag_gap)]
        flag_gap: f32,
        /// Margin added above the highest benign dev margin for the block anchor.
        #[arg(long, default_value_t = TrainOptions::default().block_gap)]
        block_gap: f32,
    },
    /// Score a part of the data (a directory of JSON Lines files) with the configured sanitizer
    /// and print recall and false positives per stage, family, language and for multi-turn
    /// sequences, as Markdown.
    Eval {
        /// The directory to score.
        #[arg(long, default_value = "data/guard/test")]
        data: PathBuf,
        /// Also list the lines that went the wrong way.
        #[arg(long)]
        mistakes: bool,
    },
}

/// Runs one `guard` subcommand.
pub async fn run(config: &Config, command: GuardCommand) -> anyhow::Result<()> {
    match command {
        GuardCommand::Scan { business, turns } => scan(config, business, turns).await,
        GuardCommand::Train {
            data,
            out,
            seed,
            epochs,
            l2,
            learning_rate,
            attack_balance,
            ensemble,
            hard_negative_rounds,
            hard_negative_share,
            hard_negative_weight,
            flag_fp_budget,
            flag_gap,
            block_gap,
        } => {
            let options = TrainOptions {
                seed,
                epochs,
                l2,
                learning_rate,
                attack_balance,
                ensemble,
                hard_negative_rounds,
                hard_negative_share,
                hard_negative_weight,
                flag_fp_budget,
                flag_gap,
                block_gap,
            };
            let (model, summary) = train_dir(&data, &options)?;
            let sum = write_model(&model, &out)?;
            println!(
                "trained on {} attack and {} benign examples; {} non-zero weights",
                summary.attacks, summary.benign, summary.nonzero_weights
            );
            println!(
                "anchors on {} benign dev margins (highest {:.3}): flag at margin {:.3}, block at {:.3}",
                summary.dev_benign,
                summary.dev_benign_max,
                summary.params.flag_margin,
                summary.params.block_margin
            );
            println!("wrote {} (sha256 {sum})", out.display());
            Ok(())
        }
        GuardCommand::Eval { data, mistakes } => {
            let sanitizer = bootstrap::sanitizer(config)?;
            let part = Dataset::read_dir(&data)?;
            let report = evaluate(&sanitizer, &part);
            print!("{}", report.to_markdown());
            if mistakes {
                println!();
                for (label, family, lang, text, score) in &report.mistakes {
                    println!("{label:?}\t{family}\t{lang}\t{score:.3}\t{text}");
                }
            }
            Ok(())
        }
    }
}

async fn scan(config: &Config, business: Option<String>, turns: bool) -> anyhow::Result<()> {
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
    let mode = if turns {
        ScanMode::Turns
    } else {
        ScanMode::Lines
    };
    scan_lines(stdin, stdout, &sanitizer, mode)?;
    Ok(())
}
