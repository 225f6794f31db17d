//! `voxrelay tool …`: a business's tools (functions the proxy calls, MCP servers passed
//! through). The same checks as the admin API's `/api/v1/businesses/{id}/tools`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use voxrelay::domain::ToolKind;
use voxrelay::ops;
use voxrelay::store::{BusinessTool, Store};

/// `voxrelay tool` subcommands.
#[derive(Subcommand)]
pub enum ToolCommand {
    /// List a business's tools: name, kind, endpoint, timeout, secret variable.
    List {
        /// Business id.
        #[arg(long)]
        business: String,
    },
    /// Add a tool to a business, or replace its tool with this name.
    Set {
        /// The tool's name (A-Z, a-z, 0-9, _ and -; at most 64).
        name: String,
        /// Business id.
        #[arg(long)]
        business: String,
        /// function (default) or mcp.
        #[arg(long, default_value = "function")]
        kind: String,
        /// What the tool does, for the model.
        #[arg(long, default_value = "")]
        description: String,
        /// The endpoint (https://, or http:// to a loopback address), or the MCP server URL.
        #[arg(long)]
        endpoint: String,
        /// The argument schema (JSON Schema of an object), inline.
        #[arg(long, conflicts_with = "parameters_file")]
        parameters: Option<String>,
        /// The argument schema, from a file.
        #[arg(long)]
        parameters_file: Option<PathBuf>,
        /// How long to wait for the endpoint, ms.
        #[arg(long, default_value_t = ops::tools::DEFAULT_TIMEOUT_MS)]
        timeout_ms: i64,
        /// The environment variable that holds the signing secret (MCP: the bearer token).
        #[arg(long, default_value = "")]
        secret_env: String,
        /// An MCP tool the model may use (repeat for several); default all.
        #[arg(long = "allowed-tool")]
        allowed_tools: Vec<String>,
    },
    /// Remove a tool from a business.
    Remove {
        /// The tool's name.
        name: String,
        /// Business id.
        #[arg(long)]
        business: String,
    },
}

/// Runs a `voxrelay tool` subcommand.
pub async fn run(store: &Store, command: ToolCommand) -> anyhow::Result<()> {
    match command {
        ToolCommand::List { business } => {
            for t in ops::tools::list(store, &business).await? {
                println!(
                    "{}\t{}\t{}\t{} ms\t{}",
                    t.name, t.kind, t.endpoint, t.timeout_ms, t.secret_env
                );
            }
        }
        ToolCommand::Set {
            name,
            business,
            kind,
            description,
            endpoint,
            parameters,
            parameters_file,
            timeout_ms,
            secret_env,
            allowed_tools,
        } => {
            let kind: ToolKind = kind.parse()?;
            let text = match (parameters, parameters_file) {
                (Some(text), _) => Some(text),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                (None, None) => None,
            };
            let parameters = match text {
                Some(text) => serde_json::from_str(&text)
                    .context("the parameters are not JSON (a JSON Schema of an object)")?,
                None => serde_json::json!({"type": "object", "properties": {}}),
            };
            let tool = ops::tools::set(
                store,
                &business,
                BusinessTool {
                    name,
                    kind,
                    description,
                    parameters,
                    endpoint,
                    timeout_ms,
                    secret_env,
                    allowed_tools,
                    updated_at_ms: 0,
                },
            )
            .await?;
            println!("{business}: tool {} set", tool.name);
        }
        ToolCommand::Remove { name, business } => {
            ops::tools::remove(store, &business, &name).await?;
            println!("{business}: tool {name} removed");
        }
    }
    Ok(())
}
