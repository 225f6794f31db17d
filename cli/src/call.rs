//! `voxrelay call …`: outbound calls. `call place` places one through Twilio's REST API, with
//! the same guard rails as the admin API's `POST /api/v1/calls` (E.164, the business's calling
//! hours, its calls a minute); the call's variables reach the outbound prompt as `call.NAME`.

use std::collections::BTreeMap;

use clap::Subcommand;

use voxrelay::config::{Config, Secrets};
use voxrelay::ops::calls::{PlaceCall, Placer};
use voxrelay::store::Store;

/// `voxrelay call` subcommands.
#[derive(Subcommand)]
pub enum CallCommand {
    /// Place an outbound call from the business's number; a person hears its outbound prompt,
    /// an answering machine gets its voicemail. Needs TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN
    /// (or TWILIO_API_KEY and TWILIO_API_SECRET) and VOXRELAY_SIGNING_KEY; the call's webhook
    /// goes to `server.public_host`, which must reach a running `voxrelay serve`.
    Place {
        /// Business id.
        #[arg(long)]
        business: String,
        /// The number to call, E.164 (+14155550100).
        #[arg(long)]
        to: String,
        /// The business's number to call from (default: its first).
        #[arg(long)]
        from: Option<String>,
        /// A variable for the prompt and the voicemail, NAME=VALUE (`call.NAME`); repeat for
        /// several.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Place it even outside the business's calling hours.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `voxrelay call` subcommand.
///
/// Errors: the configuration's secrets are missing, or the call is refused (the message names
/// the rule).
pub async fn run(config: &Config, store: &Store, command: CallCommand) -> anyhow::Result<()> {
    match command {
        CallCommand::Place {
            business,
            to,
            from,
            vars,
            force,
        } => {
            let secrets = Secrets::from_env(true)?;
            let rest = voxrelay::call::fallback::Fallbacks::new(config, &secrets.twilio_rest())
                .rest()
                .cloned();
            let placer = Placer::new(rest, config, &secrets.signing_key);
            let placed = placer
                .place(
                    store,
                    PlaceCall {
                        business_id: business,
                        to,
                        from,
                        variables: vars.into_iter().collect::<BTreeMap<_, _>>(),
                        force,
                    },
                    jiff::Timestamp::now(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&placed)?);
            Ok(())
        }
    }
}

/// A `--var` value: `NAME=VALUE` (the use case checks both).
fn parse_var(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| {
            format!("{value:?} is not NAME=VALUE (e.g. appointment_time=\"Tuesday 10:00\")")
        })
}
