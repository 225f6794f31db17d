//! What every entry point builds from the configuration before it does anything: the store
//! (connected and migrated), the prompt library (from `prompt.dir`, or the built-in layers) and
//! the sanitizer (from `guard.rules_file`, or the built-in rules). The server, the CLI's
//! commands, the simulated world and the load generator's proxy all start here, so they cannot
//! start differently.

use crate::config::Config;
use crate::guard::sanitizer::GuardError;
use crate::guard::sanitizer::Sanitizer;
use crate::prompt::{PromptError, PromptLibrary};
use crate::store::{Store, StoreError};

/// The database at `database.url`, connected, with every migration applied.
///
/// Errors: [`StoreError::Connect`] or [`StoreError::Migrate`].
pub async fn store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(&config.database.url).await?;
    store.migrate().await?;
    Ok(store)
}

/// The universal and direction layers: the files of `prompt.dir`, or the built-in copies when
/// it is empty.
///
/// Errors: [`PromptError`] naming the file that cannot be read or used.
pub fn prompts(config: &Config) -> Result<PromptLibrary, PromptError> {
    match config.prompt_dir() {
        Some(dir) => PromptLibrary::from_dir(&dir, config.prompt.compact_business_chars),
        None => PromptLibrary::embedded(config.prompt.compact_business_chars),
    }
}

/// The sanitizer with the configured rules: `guard.rules_file`, or the built-in copy of
/// `config/guard_rules.toml` when it is empty.
///
/// Errors: [`GuardError`] naming the file and the rule that cannot be used.
pub fn sanitizer(config: &Config) -> Result<Sanitizer, GuardError> {
    match config.guard_rules_file() {
        Some(path) => Sanitizer::from_file(&path),
        None => Sanitizer::builtin(),
    }
}

/// The start-up check of the `gate` policy: with caller transcription off
/// (`upstream.transcription_model` empty), a business on `gate` would leave every turn
/// unanswered, so the server does not start; the message names the businesses.
///
/// Errors: the businesses on `gate` when transcription is off, as a message; the database
/// failed.
pub async fn check_gate_policies(config: &Config, store: &Store) -> Result<(), anyhow::Error> {
    if config.transcribes() {
        return Ok(());
    }
    let gated: Vec<String> = store
        .list_businesses()
        .await?
        .into_iter()
        .filter(|b| b.guard_policy == crate::domain::GuardPolicy::Gate.as_str())
        .map(|b| b.id)
        .collect();
    if gated.is_empty() {
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "upstream.transcription_model is empty (caller transcription off), and these businesses \
         use the guard policy \"gate\", which answers a turn only once its transcript is scored: \
         {}. Set a transcription model, or give them the policy monitor or flag \
         (voxrelay business policy ID monitor)",
        gated.join(", ")
    ))
}
