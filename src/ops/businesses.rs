//! Businesses and their phone numbers, for operators: create one (with the defaults every door
//! shares), list, read one with its numbers, change, delete, set its guard policy, route and
//! unroute numbers. The store holds the field checks and the E.164 normalisation; these are the
//! only functions the CLI and the API call for them.

use serde::{Deserialize, Serialize};

use crate::domain::GuardPolicy;
use crate::ops::{OpsError, business};
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

/// Creates a business. `transcribing`: whether this instance transcribes callers
/// (`upstream.transcription_model` set), which the `gate` policy needs.
///
/// Errors: as [`check_policy`]; the store's own.
pub async fn create(
    store: &Store,
    new: CreateBusiness,
    transcribing: bool,
) -> Result<Business, OpsError> {
    if let Some(policy) = &new.guard_policy {
        check_policy(policy, transcribing)?;
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
/// Errors: the store's own (an invalid field, no such business).
pub async fn update(
    store: &Store,
    id: &str,
    update: &BusinessUpdate,
    transcribing: bool,
) -> Result<Business, OpsError> {
    if let Some(policy) = &update.guard_policy {
        check_policy(policy, transcribing)?;
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
