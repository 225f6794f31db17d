//! A business's own guard rules, for operators: list them, add or replace one, disable one
//! (a configured rule by its id, or one of the business's own). A rule is checked by the
//! sanitizer's own checker ([`Sanitizer::check_override`]) before it is stored, so what the
//! store holds is what a call can compile: the rule file's `{{macros}}` are allowed, a weight
//! above 1 and a pattern that matches empty text are not.

use crate::guard::sanitizer::{RuleOverride, Sanitizer};
use crate::ops::{OpsError, business};
use crate::store::{BusinessRule, Store};

/// The category of a rule added without one.
pub const DEFAULT_CATEGORY: &str = "business";

/// Business `id`'s own rules, enabled or not, sorted by rule id.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn list(store: &Store, id: &str) -> Result<Vec<BusinessRule>, OpsError> {
    business(store, id).await?;
    Ok(store.guard_rules(id).await?)
}

/// Adds rule `rule` to business `id`, or replaces the business's rule with its id; returns it
/// as stored. A rule whose id is a configured rule's replaces that rule for this business.
///
/// Errors: [`OpsError::Invalid`] when the sanitizer would not compile it (naming the rule and
/// why); [`OpsError::NotFound`]; the store's own.
pub async fn set(
    store: &Store,
    sanitizer: &Sanitizer,
    id: &str,
    rule: BusinessRule,
) -> Result<BusinessRule, OpsError> {
    business(store, id).await?;
    sanitizer
        .check_override(&RuleOverride::from(rule.clone()))
        .map_err(|e| OpsError::Invalid(e.to_string()))?;
    store.upsert_guard_rule(id, &rule).await?;
    Ok(rule)
}

/// Disables rule `rule_id` for business `id`: the business's own rule keeps its fields and
/// stops applying; a configured rule's id switches that rule off for the business. Returns the
/// rule as stored.
///
/// Errors: [`OpsError::NotFound`]; the store's own (a malformed id).
pub async fn disable(store: &Store, id: &str, rule_id: &str) -> Result<BusinessRule, OpsError> {
    business(store, id).await?;
    let existing = store
        .guard_rules(id)
        .await?
        .into_iter()
        .find(|r| r.rule_id == rule_id);
    let rule = BusinessRule {
        enabled: false,
        ..existing.unwrap_or_else(|| BusinessRule {
            rule_id: rule_id.to_owned(),
            category: DEFAULT_CATEGORY.to_owned(),
            pattern: String::new(),
            weight: 0.0,
            enabled: false,
        })
    };
    store.upsert_guard_rule(id, &rule).await?;
    Ok(rule)
}
