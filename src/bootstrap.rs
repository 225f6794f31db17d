//! What every entry point builds from the configuration before it does anything: the store
//! (connected and migrated), the prompt library (from `prompt.dir`, or the built-in layers) and
//! the sanitizer (from `guard.rules_file` and `guard.model_file`, or the built-in rules and
//! classifier). The server, the CLI's
//! commands, the simulated world and the load generator's proxy all start here, so they cannot
//! start differently.

use std::sync::Arc;

use crate::config::Config;
use crate::guard::classifier::Classifier;
use crate::guard::sanitizer::{GuardError, Sanitizer};
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

/// The sanitizer with the configured rules (`guard.rules_file`, or the built-in copy of
/// `config/guard_rules.toml` when it is empty) and, unless `guard.classifier` is false, the
/// classifier (`guard.model_file`, or the built-in copy of `config/guard_model.bin`).
///
/// Errors: [`GuardError`] naming the file (and the rule) that cannot be used.
pub fn sanitizer(config: &Config) -> Result<Sanitizer, GuardError> {
    let rules = match config.guard_rules_file() {
        Some(path) => Sanitizer::from_file(&path)?,
        None => Sanitizer::builtin_rules()?,
    };
    if !config.guard.classifier {
        return Ok(rules);
    }
    let classifier = match config.guard_model_file() {
        Some(path) => Classifier::from_file(&path)?,
        None => Classifier::builtin()?,
    };
    Ok(rules.with_classifier(Arc::new(classifier)))
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

/// File descriptors the instance may need besides its connections: the database pool, the
/// log, the listener and some room.
const FD_HEADROOM: u64 = 64;

/// Raises the process's open-file limit (`RLIMIT_NOFILE`) to its hard limit, so the
/// connection cap, not the kernel, decides when connections are refused; logs the limit, and
/// warns when it is below what the configuration can use (`server.max_connections`, an
/// upstream socket per call of `limits.max_calls` and `limits.max_pending`, and
/// [`FD_HEADROOM`]). Returns the soft limit now in force; `None` where it cannot be read.
pub fn raise_open_file_limit(config: &Config) -> Option<u64> {
    let needed = config.server.max_connections as u64
        + config.limits.max_calls as u64
        + config.limits.max_pending as u64
        + FD_HEADROOM;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            if limit < needed {
                tracing::warn!(
                    open_file_limit = limit,
                    needed,
                    "the open-file limit is below what server.max_connections and the call \
                     limits can use; raise the hard limit (ulimit -Hn) or lower them"
                );
            } else {
                tracing::info!(open_file_limit = limit, needed, "open-file limit");
            }
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            None
        }
    }
}
