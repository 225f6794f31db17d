//! `voxrelay business …` and `voxrelay number …`: businesses (tenants) and the numbers that
//! reach them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use voxrelay::guard::sanitizer::Sanitizer;
use voxrelay::ops;
use voxrelay::store::{BusinessRule, BusinessUpdate, Store};

/// `voxrelay business` subcommands.
#[derive(Subcommand)]
pub enum BusinessCommand {
    /// Add a business.
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Id (letters, digits, '_', '-', '.'); generated when omitted.
        #[arg(long)]
        id: Option<String>,
        /// Main language (BCP 47); default en.
        #[arg(long)]
        language: Option<String>,
        /// Realtime voice; default marin.
        #[arg(long)]
        voice: Option<String>,
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
        /// Where calls go when no model can take them: an E.164 number to put the caller
        /// through to, "apology" (a spoken apology and a hang-up), or "" for the instance's
        /// `fallback.number`.
        #[arg(long)]
        fallback: Option<String>,
        /// Whether the model may end calls itself (the built-in end_call tool): true or false.
        #[arg(long)]
        end_call: Option<bool>,
        /// Whether the model may transfer calls (the built-in transfer_call tool): true or
        /// false.
        #[arg(long)]
        transfer: Option<bool>,
        /// Someone transfer_call may put callers through to, as NAME=E164 (for example
        /// "front desk=+14155550123"); repeat for several. Replaces the list.
        #[arg(long = "transfer-target", value_parser = parse_transfer_target)]
        transfer_target: Vec<voxrelay::store::TransferTarget>,
        /// Remove every transfer target.
        #[arg(long, conflicts_with = "transfer_target")]
        no_transfer_targets: bool,
        /// The business's time zone, IANA (America/New_York); its calling hours are in it.
        #[arg(long)]
        time_zone: Option<String>,
        /// When it may place calls: "08:00-21:00", or "Mon-Fri 09:00-18:00, Sat 10:00-13:00".
        #[arg(long)]
        calling_hours: Option<String>,
        /// Outbound calls it may place a minute (1 to 600).
        #[arg(long)]
        outbound_per_minute: Option<i64>,
        /// What the model says on an answering machine (may use call.NAME); "" for the default.
        #[arg(long)]
        voicemail_message: Option<String>,
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
    /// List the business's own sanitizer rules: id, on/off, category, weight, pattern.
    Rules {
        /// Business id.
        id: String,
    },
    /// Add or replace one of the business's own sanitizer rules (checked by the sanitizer; the
    /// rule file's `{{macros}}` may be used), or disable one with `--disable`.
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
        #[arg(long, default_value = ops::rules::DEFAULT_CATEGORY)]
        category: String,
        /// Disable the rule with this id instead.
        #[arg(long)]
        disable: bool,
    },
}

/// `voxrelay number` subcommands.
#[derive(Subcommand)]
pub enum NumberCommand {
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

/// Runs one `number` subcommand.
pub async fn number(store: &Store, command: NumberCommand) -> anyhow::Result<()> {
    match command {
        NumberCommand::Add { number, business } => {
            let number = ops::businesses::add_number(store, &business, &number).await?;
            println!("{number} -> {business}");
        }
        NumberCommand::Remove { number, business } => {
            let number = ops::businesses::remove_number(store, &business, &number).await?;
            println!("{number} no longer routed to {business}");
        }
    }
    Ok(())
}

/// Runs one `business` subcommand.
pub async fn run(
    store: &Store,
    sanitizer: &Sanitizer,
    checks: ops::businesses::Checks<'_>,
    command: BusinessCommand,
) -> anyhow::Result<()> {
    let transcribing = checks.transcribing;
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
            let b = ops::businesses::create(
                store,
                checks,
                ops::businesses::CreateBusiness {
                    id,
                    name,
                    language,
                    voice,
                    ai_prompt: read(prompt_file)?,
                    outbound_ai_prompt: read(outbound_prompt_file)?,
                    greeting_instructions: greeting,
                    guard_policy: None,
                    hours: String::new(),
                    required_sections: Vec::new(),
                },
            )
            .await?;
            println!("{}", b.id);
        }
        BusinessCommand::List => {
            for b in ops::businesses::list(store).await? {
                let numbers = ops::businesses::numbers(store, &b.id).await?;
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
            fallback,
            end_call,
            transfer,
            transfer_target,
            no_transfer_targets,
            time_zone,
            calling_hours,
            outbound_per_minute,
            voicemail_message,
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
                fallback,
                end_call_enabled: end_call,
                transfer_enabled: transfer,
                transfer_targets: if no_transfer_targets {
                    Some(Vec::new())
                } else {
                    Some(transfer_target).filter(|t| !t.is_empty())
                },
                time_zone,
                calling_hours,
                outbound_per_minute,
                voicemail_message,
                ..BusinessUpdate::default()
            };
            let b = ops::businesses::update(store, checks, &id, &update).await?;
            println!("{}", serde_json::to_string_pretty(&b)?);
        }
        BusinessCommand::Delete { id } => {
            ops::businesses::delete(store, &id).await?;
            println!("{id}: deleted");
        }
        BusinessCommand::Policy { id, policy } => {
            let b = ops::businesses::set_policy(store, &id, &policy, transcribing).await?;
            println!("{id}: guard policy {}", b.guard_policy);
        }
        BusinessCommand::Rule {
            id,
            rule_id,
            pattern,
            weight,
            category,
            disable,
        } => {
            let rule = if disable {
                ops::rules::disable(store, &id, &rule_id).await?
            } else {
                let rule = BusinessRule {
                    rule_id,
                    category,
                    pattern,
                    weight,
                    enabled: true,
                };
                ops::rules::set(store, sanitizer, &id, rule).await?
            };
            println!(
                "{id}: rule {} {}",
                rule.rule_id,
                if disable { "disabled" } else { "set" }
            );
        }
        BusinessCommand::Rules { id } => {
            for r in ops::rules::list(store, &id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    r.rule_id,
                    if r.enabled { "on" } else { "off" },
                    r.category,
                    r.weight,
                    r.pattern
                );
            }
        }
        BusinessCommand::Show { id } => {
            let detail = ops::businesses::detail(store, &id).await?;
            let mut value = serde_json::to_value(&detail.business)?;
            value["numbers"] = serde_json::json!(detail.numbers);
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

/// A `--transfer-target` value: `NAME=NUMBER` (the store checks both).
fn parse_transfer_target(value: &str) -> Result<voxrelay::store::TransferTarget, String> {
    let (name, number) = value.rsplit_once('=').ok_or_else(|| {
        format!("{value:?} is not NAME=NUMBER (e.g. \"front desk=+14155550123\")")
    })?;
    Ok(voxrelay::store::TransferTarget {
        name: name.trim().to_string(),
        number: number.trim().to_string(),
    })
}
