//! Which business layer a call or a preview runs: which body, which version, which text. The
//! call path, the admin preview and the CLI preview all ask here, so they cannot disagree.
//!
//! The rules:
//! - an explicit version (a preview's `--version`, the version a stream token names) must be
//!   the business's own and of the direction asked for;
//! - a new call runs the running experiment's arm for its caller, else the production version
//!   of its direction, else the business's own text for that direction;
//! - inbound and outbound texts are never mixed: the outbound layer is `outbound_ai_prompt`
//!   and nothing else (seed 001 keeps the two in separate fields for exactly this). A business
//!   with neither an outbound text nor an outbound production version takes no outbound call
//!   ([`ResolveError::NoPrompt`]); the same holds inbound.

use crate::domain::{Arm, Direction};
use crate::prompt::experiment;
use crate::store::{Business, PromptVersion, Store, StoreError};

/// The business layer chosen for a call or a preview.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The version whose body is the business layer; `None` runs the business's own text.
    pub version: Option<PromptVersion>,
    /// The running experiment and the arm that chose `version`, for a call in one.
    pub experiment: Option<(String, Arm)>,
}

impl Resolved {
    /// The unrendered business layer: the version's body, or the business's own text for
    /// `direction` (never empty: resolving checked it).
    pub fn text<'a>(&'a self, business: &'a Business, direction: Direction) -> &'a str {
        match &self.version {
            Some(v) => &v.body,
            None => own_text(business, direction).unwrap_or_default(),
        }
    }
}

/// Why no business layer can be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The business has no text and no production version for the direction.
    #[error(
        "business {business_id:?} has no {direction} prompt: no {direction} text and no {direction} production version"
    )]
    NoPrompt {
        /// The business.
        business_id: String,
        /// The direction asked for.
        direction: Direction,
    },
    /// The version named does not exist.
    #[error("no prompt version {0:?}")]
    VersionNotFound(String),
    /// The version named is another business's or another direction's.
    #[error("prompt version {version_id:?} is not business {business_id:?}'s {direction} prompt")]
    NotThisPrompt {
        /// The version.
        version_id: String,
        /// The business asked for.
        business_id: String,
        /// The direction asked for.
        direction: Direction,
    },
}

/// The business's own text for `direction` (`ai_prompt` inbound, `outbound_ai_prompt`
/// outbound); `None` when it is blank.
pub fn own_text(business: &Business, direction: Direction) -> Option<&str> {
    let text = match direction {
        Direction::Inbound => &business.ai_prompt,
        Direction::Outbound => &business.outbound_ai_prompt,
    };
    (!text.trim().is_empty()).then_some(text.as_str())
}

/// The version `version_id`, checked to be `business`'s `direction` prompt.
async fn version_of(
    store: &Store,
    business: &Business,
    direction: Direction,
    version_id: &str,
) -> Result<PromptVersion, ResolveError> {
    let version = store
        .prompt_version(version_id)
        .await?
        .ok_or_else(|| ResolveError::VersionNotFound(version_id.to_string()))?;
    if version.business_id != business.id || version.direction != direction {
        return Err(ResolveError::NotThisPrompt {
            version_id: version_id.to_string(),
            business_id: business.id.clone(),
            direction,
        });
    }
    Ok(version)
}

/// The production version of `direction`, else the business's own text.
async fn production_or_own(
    store: &Store,
    business: &Business,
    direction: Direction,
) -> Result<Resolved, ResolveError> {
    if let Some(version) = store.production_version(&business.id, direction).await? {
        return Ok(Resolved {
            version: Some(version),
            experiment: None,
        });
    }
    if own_text(business, direction).is_none() {
        return Err(ResolveError::NoPrompt {
            business_id: business.id.clone(),
            direction,
        });
    }
    Ok(Resolved {
        version: None,
        experiment: None,
    })
}

/// What a preview shows: `version_id` when given (it must be the business's `direction`
/// prompt), else what a call without an experiment would run.
///
/// Errors: [`ResolveError`].
pub async fn for_preview(
    store: &Store,
    business: &Business,
    direction: Direction,
    version_id: Option<&str>,
) -> Result<Resolved, ResolveError> {
    match version_id {
        Some(id) => Ok(Resolved {
            version: Some(version_of(store, business, direction, id).await?),
            experiment: None,
        }),
        None => production_or_own(store, business, direction).await,
    }
}

/// What a new call from (or to) `caller` runs: the running experiment's arm for the caller
/// (consistent hash, [`experiment::assign`]), else the production version, else the business's
/// own text.
///
/// Errors: [`ResolveError`].
pub async fn for_new_call(
    store: &Store,
    business: &Business,
    direction: Direction,
    caller: &str,
) -> Result<Resolved, ResolveError> {
    if let Some(exp) = store.running_experiment(&business.id, direction).await? {
        let arm = experiment::assign(&exp.id, caller, exp.traffic_percent);
        let id = match arm {
            Arm::Control => &exp.control_version_id,
            Arm::Variant => &exp.variant_version_id,
        };
        match version_of(store, business, direction, id).await {
            Ok(version) => {
                return Ok(Resolved {
                    version: Some(version),
                    experiment: Some((exp.id, arm)),
                });
            }
            Err(ResolveError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(business_id = %business.id, experiment_id = %exp.id, error = %e,
                    "the experiment's version is unusable; running production");
            }
        }
    }
    production_or_own(store, business, direction).await
}

/// What a call whose prompt was chosen already (by the instance that took the webhook, as the
/// stream token says) runs: that version, or the business's own text when `version_id` is
/// `None`. A version gone since, or no longer the business's, is chosen afresh as for a new
/// call.
///
/// Errors: [`ResolveError`].
pub async fn chosen(
    store: &Store,
    business: &Business,
    direction: Direction,
    caller: &str,
    version_id: Option<&str>,
    experiment: Option<(String, Arm)>,
) -> Result<Resolved, ResolveError> {
    let Some(id) = version_id else {
        if own_text(business, direction).is_some() {
            return Ok(Resolved {
                version: None,
                experiment: None,
            });
        }
        return for_new_call(store, business, direction, caller).await;
    };
    match version_of(store, business, direction, id).await {
        Ok(version) => Ok(Resolved {
            version: Some(version),
            experiment,
        }),
        Err(ResolveError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(business_id = %business.id, version_id = id, error = %e,
                "the chosen prompt version is gone; choosing again");
            for_new_call(store, business, direction, caller).await
        }
    }
}
