//! Businesses and their phone numbers, for operators: create one (with the defaults every door
//! shares), list, read one with its numbers, change, delete, set its guard policy, route and
//! unroute numbers. The store holds the field checks and the E.164 normalisation; these are the
//! only functions the CLI and the API call for them.

use serde::{Deserialize, Serialize};

use crate::call::setup::CallSetup;
use crate::domain::{Direction, GuardPolicy};
use crate::ops::{OpsError, business};
use crate::prompt::{PromptError, PromptLibrary};
use crate::store::{
    Business, BusinessUpdate, DEFAULT_GUARD_POLICY, DEFAULT_LANGUAGE, DEFAULT_VOICE, NewBusiness,
    Store,
};

/// A business to create; everything but `name` has a default.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateBusiness {
    /// Id (1 to 64 of `[A-Za-z0-9_.-]`); generated when absent.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// BCP 47 language tag; default `"en"`.
    pub language: Option<String>,
    /// Realtime API voice; default `"marin"`.
    pub voice: Option<String>,
    /// Business layer of the inbound prompt.
    #[serde(default)]
    pub ai_prompt: String,
    /// Business layer of the outbound prompt.
    #[serde(default)]
    pub outbound_ai_prompt: String,
    /// How the model opens the call.
    #[serde(default)]
    pub greeting_instructions: String,
    /// `monitor`, `gate` or `flag`; default `monitor`.
    pub guard_policy: Option<String>,
    /// Opening hours as free text (`business.hours` in prompt bodies).
    #[serde(default)]
    pub hours: String,
    /// Sections every prompt version must have (headings or `Name:` labels); default none.
    #[serde(default)]
    pub required_sections: Vec<String>,
}

/// A business with its phone numbers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BusinessDetail {
    /// The business row.
    #[schema(value_type = Object)]
    pub business: Business,
    /// Its E.164 numbers, sorted.
    pub numbers: Vec<String>,
}

/// Creates a business: `language` defaults to [`DEFAULT_LANGUAGE`], `voice` to
/// [`DEFAULT_VOICE`], `guard_policy` to [`DEFAULT_GUARD_POLICY`], the id is generated when absent.
///
/// Errors: the store's own (an invalid field, an id taken).
/// The error for the `gate` policy on an instance that does not transcribe callers: the gate
/// waits for each caller transcript, so every turn would go unanswered.
///
/// Errors: [`OpsError::Invalid`] when `policy` is `gate` and `transcribing` is false.
pub fn check_policy(policy: &str, transcribing: bool) -> Result<(), OpsError> {
    if policy == GuardPolicy::Gate.as_str() && !transcribing {
        return Err(OpsError::Invalid(
            "guard policy \"gate\" answers a turn only once its transcript is scored, and \
             caller transcription is off (upstream.transcription_model is empty): every turn \
             would go unanswered; set a transcription model, or choose monitor or flag"
                .into(),
        ));
    }
    Ok(())
}

/// What a change to a business is checked against besides its own fields: the instance's
/// prompt layers and whether it transcribes callers.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    /// The universal and direction layers a business's own text is built into.
    pub library: &'a PromptLibrary,
    /// Whether this instance transcribes callers (`upstream.transcription_model` set), which
    /// the `gate` policy needs.
    pub transcribing: bool,
}

/// The error for a business whose own text (`ai_prompt`, `outbound_ai_prompt`, used while no
/// prompt version is in production) would build a FULL prompt over the hard cap
/// ([`DEFAULT_HARD_CAP_TOKENS`](crate::prompt::validate::DEFAULT_HARD_CAP_TOKENS), the cap
/// prompt versions are held to), or that cannot be built
/// at all (a layer marker in it). Blank texts are not checked: they are not used.
///
/// Errors: [`OpsError::Invalid`] naming the direction, the size and the cap.
pub fn check_own_prompts(library: &PromptLibrary, business: &Business) -> Result<(), OpsError> {
    for direction in [Direction::Inbound, Direction::Outbound] {
        let Some(text) = crate::prompt::resolve::own_text(business, direction) else {
            continue;
        };
        // The builder a call uses, with the cap it holds the prompt to.
        CallSetup::build_prompts(library, business, direction, text).map_err(|e| match e {
            PromptError::OverHardCap { .. } => OpsError::Invalid(format!(
                "{e}; shorten the business's own text, or put it in a prompt version"
            )),
            e => OpsError::Invalid(e.to_string()),
        })?;
    }
    Ok(())
}

/// Creates a business.
///
/// Errors: as [`check_policy`] and [`check_own_prompts`]; the store's own.
pub async fn create(
    store: &Store,
    checks: Checks<'_>,
    new: CreateBusiness,
) -> Result<Business, OpsError> {
    if let Some(policy) = &new.guard_policy {
        check_policy(policy, checks.transcribing)?;
    }
    let new = NewBusiness {
        id: new.id,
        name: new.name,
        language: new.language.unwrap_or_else(|| DEFAULT_LANGUAGE.into()),
        voice: new.voice.unwrap_or_else(|| DEFAULT_VOICE.into()),
        ai_prompt: new.ai_prompt,
        outbound_ai_prompt: new.outbound_ai_prompt,
        greeting_instructions: new.greeting_instructions,
        guard_policy: new
            .guard_policy
            .unwrap_or_else(|| DEFAULT_GUARD_POLICY.into()),
        hours: new.hours,
        required_sections: new.required_sections,
    };
    check_own_prompts(checks.library, &new.to_business()?)?;
    Ok(store.add_business(&new).await?)
}

/// The business `id` with its numbers.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn detail(store: &Store, id: &str) -> Result<BusinessDetail, OpsError> {
    let business = business(store, id).await?;
    let numbers = store.numbers_for_business(id).await?;
    Ok(BusinessDetail { business, numbers })
}

/// Sets the guard policy of business `id`; returns the business as stored.
///
/// Errors: the store's own (an unknown policy, no such business).
pub async fn set_policy(
    store: &Store,
    id: &str,
    policy: &str,
    transcribing: bool,
) -> Result<Business, OpsError> {
    check_policy(policy, transcribing)?;
    store.set_guard_policy(id, policy).await?;
    business(store, id).await
}

/// Every business, sorted by id.
///
/// Errors: the store's own.
pub async fn list(store: &Store) -> Result<Vec<Business>, OpsError> {
    Ok(store.list_businesses().await?)
}

/// The E.164 numbers routed to business `id`, sorted.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn numbers(store: &Store, id: &str) -> Result<Vec<String>, OpsError> {
    business(store, id).await?;
    Ok(store.numbers_for_business(id).await?)
}

/// Changes business `id`: each field given replaces the stored one. Calls in progress keep what
/// they started with; the next call uses the change. Returns the business as stored.
///
/// Errors: as [`check_policy`] and [`check_own_prompts`] (on the business as it would be);
/// the store's own (an invalid field, no such business).
pub async fn update(
    store: &Store,
    checks: Checks<'_>,
    id: &str,
    update: &BusinessUpdate,
) -> Result<Business, OpsError> {
    if let Some(policy) = &update.guard_policy {
        check_policy(policy, checks.transcribing)?;
    }
    let touches_prompt = update.ai_prompt.is_some()
        || update.outbound_ai_prompt.is_some()
        || update.name.is_some()
        || update.language.is_some()
        || update.greeting_instructions.is_some();
    if touches_prompt {
        let mut after = business(store, id).await?;
        update.apply_to(&mut after)?;
        check_own_prompts(checks.library, &after)?;
    }
    Ok(store.update_business(id, update).await?)
}

/// Deletes business `id` with its numbers, guard rules, prompt versions and experiments; its
/// call records stay.
///
/// Errors: the store's own (no such business).
pub async fn delete(store: &Store, id: &str) -> Result<(), OpsError> {
    Ok(store.delete_business(id).await?)
}

/// Routes `number` (any common spelling of an E.164 number) to business `id`; returns the
/// number as stored (`+14155550100`).
///
/// Errors: the store's own (a malformed number, no such business, a number already routed).
pub async fn add_number(store: &Store, id: &str, number: &str) -> Result<String, OpsError> {
    Ok(store.add_number(number, id).await?)
}

/// Stops routing `number` to business `id`; returns the number as it was stored.
///
/// Errors: the store's own (a malformed number, a number not routed to this business).
pub async fn remove_number(store: &Store, id: &str, number: &str) -> Result<String, OpsError> {
    Ok(store.remove_number(id, number).await?)
}
