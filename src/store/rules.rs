//! A business's own guard rules (`business_guard_rules`): add, replace or disable rules of the
//! built-in sanitizer.

use super::*;

impl Store {
    /// Adds a sanitizer rule to a business, or replaces the business's rule with the same
    /// `rule_id` (all its fields).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed rule id (1 to 64 of `[A-Za-z0-9_.-]`) or, for an
    /// enabled rule, an empty category or pattern or a weight outside 0..=1;
    /// [`StoreError::NotFound`] if the business does not exist. The pattern itself is checked
    /// by [`crate::ops::rules::set`].
    pub async fn upsert_guard_rule(
        &self,
        business_id: &str,
        rule: &BusinessRule,
    ) -> Result<(), StoreError> {
        validate_rule(rule)?;
        sqlx::query(
            "INSERT INTO business_guard_rules \
             (business_id, rule_id, category, pattern, weight, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (business_id, rule_id) DO UPDATE SET \
             category = excluded.category, pattern = excluded.pattern, \
             weight = excluded.weight, enabled = excluded.enabled",
        )
        .bind(business_id)
        .bind(&rule.rule_id)
        .bind(&rule.category)
        .bind(&rule.pattern)
        .bind(rule.weight)
        .bind(i64::from(rule.enabled))
        .execute(&self.pool)
        .await
        .map_err(|e| unless_business_missing(e, business_id))?;
        Ok(())
    }

    /// A business's own sanitizer rules, enabled or not, sorted by rule id; empty for a business
    /// without any (or an unknown one).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn guard_rules(&self, business_id: &str) -> Result<Vec<BusinessRule>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule_id, category, pattern, weight, enabled FROM business_guard_rules \
             WHERE business_id = $1 ORDER BY rule_id",
        )
        .bind(business_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(rule_from_row).collect::<Result<_, _>>()?)
    }
}

/// Checks a business rule's fields before it is written; messages name the rule. The pattern
/// is not compiled here: it may use the rule file's `{{macros}}`, which only the sanitizer
/// knows, so [`crate::ops::rules::set`] checks it with the sanitizer's own checker first.
pub(super) fn validate_rule(rule: &BusinessRule) -> Result<(), StoreError> {
    validate_id("guard rule id", &rule.rule_id)?;
    let id = &rule.rule_id;
    if !rule.enabled {
        return Ok(());
    }
    if rule.category.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: category must not be empty"
        )));
    }
    if rule.pattern.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: pattern must not be empty"
        )));
    }
    if !rule.weight.is_finite() || !(0.0..=1.0).contains(&rule.weight) {
        return Err(StoreError::Invalid(format!(
            "guard rule {id:?}: weight must be a number from 0 to 1 (got {})",
            rule.weight
        )));
    }
    Ok(())
}

/// Maps a row with the `business_guard_rules` columns, in any order.
pub(super) fn rule_from_row(row: &AnyRow) -> Result<BusinessRule, sqlx::Error> {
    let enabled: i64 = row.try_get("enabled")?;
    Ok(BusinessRule {
        rule_id: row.try_get("rule_id")?,
        category: row.try_get("category")?,
        pattern: row.try_get("pattern")?,
        weight: row.try_get("weight")?,
        enabled: enabled != 0,
    })
}
