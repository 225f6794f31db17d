//! Businesses for operators: create one (with the defaults every door shares), read one with
//! its numbers, set its guard policy. The rest (change, delete, numbers, rules) are the store's
//! own functions, which hold the validation and the E.164 normalisation; the CLI and the API
//! call them directly.

use serde::{Deserialize, Serialize};

use crate::ops::{OpsError, business};
use crate::store::{
    Business, DEFAULT_GUARD_POLICY, DEFAULT_LANGUAGE, DEFAULT_VOICE, NewBusiness, Store,
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
pub async fn create(store: &Store, new: CreateBusiness) -> Result<Business, OpsError> {
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
pub async fn set_policy(store: &Store, id: &str, policy: &str) -> Result<Business, OpsError> {
    store.set_guard_policy(id, policy).await?;
    business(store, id).await
}
