//! Prompt versions for operators: create a draft, promote it, roll back to an earlier one,
//! preview what a call would run. Every body is validated before it is stored, promoted or
//! made production again (rollback included), with the same limits and the same token counts
//! whichever door the request came through.

use crate::domain::Direction;
use crate::ops::{OpsError, business};
use crate::prompt::PromptLibrary;
use crate::prompt::resolve::{self, Resolved};
use crate::prompt::validate::{BusinessInfo, Limits, Report, validate};
use crate::store::{Business, NewPromptVersion, PromptStatus, PromptVersion, Store};

/// A version with the validation report of its body.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The version as stored after the operation.
    pub version: PromptVersion,
    /// Its body's validation (token counts, warnings).
    pub report: Report,
}

/// A draft to create.
#[derive(Debug, Clone)]
pub struct NewDraft {
    /// The business.
    pub business_id: String,
    /// The direction it is for.
    pub direction: Direction,
    /// The business layer (a template: `{{ business.name }}` and friends).
    pub body: String,
    /// Who wrote it.
    pub author: String,
    /// Why.
    pub note: String,
}

/// What a preview shows.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Which business layer it is.
    pub resolved: Resolved,
    /// The validation of that layer, with the built FULL and COMPACT in `report.prompts`.
    pub report: Report,
}

/// The prompt version `id`.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn version(store: &Store, id: &str) -> Result<PromptVersion, OpsError> {
    store
        .prompt_version(id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("prompt version {id:?}")))
}

/// Validates `body` as `business`'s `direction` prompt.
pub fn check(
    library: &PromptLibrary,
    business: &Business,
    body: &str,
    direction: Direction,
) -> Report {
    validate(
        library,
        body,
        &BusinessInfo::from(business),
        direction,
        &Limits::for_business(library, business),
    )
}

/// What `business`'s tools add to every response's input, tokens ([`crate::tools::tokens`]).
///
/// Errors: the store's own.
pub async fn tools_tokens(store: &Store, business: &Business) -> Result<usize, OpsError> {
    let stored = store.tools(&business.id).await?;
    let (set, _) = crate::tools::for_business(
        business,
        &stored,
        &crate::tools::SecretSource::fixed(Default::default()),
    );
    Ok(crate::tools::tokens(&set.definitions()))
}

/// [`check`], as an error when the body is rejected.
fn accepted(
    library: &PromptLibrary,
    business: &Business,
    body: &str,
    direction: Direction,
) -> Result<Report, OpsError> {
    let report = check(library, business, body, direction);
    if report.is_ok() {
        Ok(report)
    } else {
        Err(invalid(&report))
    }
}

fn invalid(report: &Report) -> OpsError {
    OpsError::InvalidPrompt {
        problems: report.errors.iter().map(ToString::to_string).collect(),
        warnings: report.warnings.iter().map(ToString::to_string).collect(),
    }
}

/// Token counts as stored: `None` when a count does not fit (it never does in practice).
fn stored_tokens(tokens: usize) -> Option<i64> {
    i64::try_from(tokens).ok()
}

/// Creates a draft version after validating its body; its parent is the direction's current
/// production version.
///
/// Errors: [`OpsError::NotFound`] for an unknown business; [`OpsError::InvalidPrompt`] naming
/// each problem; the store's own.
pub async fn create_version(
    store: &Store,
    library: &PromptLibrary,
    draft: NewDraft,
) -> Result<Validated, OpsError> {
    let business = business(store, &draft.business_id).await?;
    let mut report = accepted(library, &business, &draft.body, draft.direction)?;
    report.tools_tokens = tools_tokens(store, &business).await?;
    let parent = store
        .production_version(&business.id, draft.direction)
        .await?
        .map(|v| v.id);
    let version = store
        .create_prompt_version(&NewPromptVersion {
            business_id: business.id,
            direction: draft.direction,
            body: draft.body,
            parent_version_id: parent,
            compact_tokens: stored_tokens(report.compact_tokens),
            full_tokens: stored_tokens(report.full_tokens),
            author: draft.author,
            note: draft.note,
        })
        .await?;
    Ok(Validated { version, report })
}

/// Promotes version `id` to `to` (staging or production) after validating its body again
/// (the business may have changed since it was written).
///
/// Errors: [`OpsError::NotFound`]; [`OpsError::InvalidPrompt`]; the store's own (a status the
/// version cannot be promoted from is a conflict).
pub async fn promote(
    store: &Store,
    library: &PromptLibrary,
    id: &str,
    to: PromptStatus,
) -> Result<Validated, OpsError> {
    let current = version(store, id).await?;
    let business = business(store, &current.business_id).await?;
    let mut report = accepted(library, &business, &current.body, current.direction)?;
    report.tools_tokens = tools_tokens(store, &business).await?;
    let version = store.promote(id, to).await?;
    Ok(Validated { version, report })
}

/// Makes the earlier version `to` production again for `business_id` and `direction`, after
/// validating its body again: a version that no longer validates (the business's required
/// sections changed, say) is not brought back.
///
/// Errors: [`OpsError::NotFound`] for an unknown business or version;
/// [`OpsError::InvalidPrompt`]; the store's own (another business's or direction's version is
/// invalid, a draft or staging one a conflict).
pub async fn rollback(
    store: &Store,
    library: &PromptLibrary,
    business_id: &str,
    direction: Direction,
    to: &str,
) -> Result<Validated, OpsError> {
    let business = business(store, business_id).await?;
    let target = version(store, to).await?;
    let report = check(library, &business, &target.body, direction);
    if target.business_id == business.id && target.direction == direction && !report.is_ok() {
        return Err(invalid(&report));
    }
    let version = store.rollback(business_id, direction, to).await?;
    Ok(Validated { version, report })
}

/// What a call of `business_id` in `direction` would run, or version `version_id` when given
/// (it must be that business's and direction's), built and validated. Outbound uses the
/// outbound text only: a business with no outbound text and no outbound production version
/// has nothing to preview, and takes no outbound call.
///
/// Errors: [`OpsError::NotFound`] for an unknown business or a version that is not its
/// `direction` prompt; [`OpsError::InvalidPrompt`] when there is no prompt or it cannot be
/// built; the store's own.
pub async fn preview(
    store: &Store,
    library: &PromptLibrary,
    business_id: &str,
    direction: Direction,
    version_id: Option<&str>,
) -> Result<Preview, OpsError> {
    let business = business(store, business_id).await?;
    let resolved = resolve::for_preview(store, &business, direction, version_id).await?;
    let mut report = accepted(
        library,
        &business,
        resolved.text(&business, direction),
        direction,
    )?;
    report.tools_tokens = tools_tokens(store, &business).await?;
    if report.prompts.is_none() {
        return Err(OpsError::InvalidPrompt {
            problems: vec!["the prompt cannot be built".into()],
            warnings: report.warnings.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(Preview { resolved, report })
}
