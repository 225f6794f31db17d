//! Changing and removing businesses and their numbers, for the admin API and the CLI.
//!
//! Deleting a business removes everything configured for it (numbers, guard rules, prompt
//! versions, experiments) in one transaction. The record of its calls (`calls`, `call_events`)
//! is history and stays; a call in progress keeps running on the prompts it was built with.

use super::{
    BUSINESS_COLUMNS, Business, BusinessUpdate, Store, StoreError, business_from_row,
    join_sections, normalize_e164, now_ms, require_non_empty, validate_guard_policy,
    validate_sections,
};

/// The tables that hang off a business, in the order they are emptied when it is deleted:
/// experiments before the prompt versions they name, versions before the business.
const BUSINESS_CHILD_TABLES: [&str; 4] = [
    "experiments",
    "prompt_versions",
    "business_guard_rules",
    "phone_numbers",
];

impl Store {
    /// Applies `update` to a business (each `Some` field replaces the stored value) and sets its
    /// `updated_at_ms` to now; returns the business as stored. An empty update returns the
    /// business unchanged. Calls in progress keep what they started with.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty name, language or voice, an unknown guard policy, or
    /// a required section that is empty or spans lines; [`StoreError::NotFound`] if the business
    /// does not exist.
    pub async fn update_business(
        &self,
        id: &str,
        update: &BusinessUpdate,
    ) -> Result<Business, StoreError> {
        let mut business = self
            .business(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("business {id:?}")))?;
        if update.is_empty() {
            return Ok(business);
        }
        let text = |field: &str, value: &Option<String>, current: &mut String| {
            if let Some(value) = value {
                require_non_empty(field, value)?;
                *current = value.trim().to_string();
            }
            Ok::<(), StoreError>(())
        };
        text("business name", &update.name, &mut business.name)?;
        text(
            "business language",
            &update.language,
            &mut business.language,
        )?;
        text("business voice", &update.voice, &mut business.voice)?;
        if let Some(policy) = &update.guard_policy {
            business.guard_policy = validate_guard_policy(policy)?.to_string();
        }
        if let Some(sections) = &update.required_sections {
            business.required_sections = validate_sections(sections)?;
        }
        if let Some(hours) = &update.hours {
            business.hours = hours.trim().to_string();
        }
        for (value, current) in [
            (&update.ai_prompt, &mut business.ai_prompt),
            (&update.outbound_ai_prompt, &mut business.outbound_ai_prompt),
            (
                &update.greeting_instructions,
                &mut business.greeting_instructions,
            ),
        ] {
            if let Some(value) = value {
                current.clone_from(value);
            }
        }
        business.updated_at_ms = now_ms();
        let sql = format!(
            "UPDATE businesses SET name = $2, language = $3, voice = $4, ai_prompt = $5, \
             outbound_ai_prompt = $6, greeting_instructions = $7, guard_policy = $8, hours = $9, \
             required_sections = $10, updated_at_ms = $11 WHERE id = $1 \
             RETURNING {BUSINESS_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&business.id)
            .bind(&business.name)
            .bind(&business.language)
            .bind(&business.voice)
            .bind(&business.ai_prompt)
            .bind(&business.outbound_ai_prompt)
            .bind(&business.greeting_instructions)
            .bind(&business.guard_policy)
            .bind(&business.hours)
            .bind(join_sections(&business.required_sections))
            .bind(business.updated_at_ms)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(business_from_row(&row)?),
            // Deleted between the read and the write.
            None => Err(StoreError::NotFound(format!("business {id:?}"))),
        }
    }

    /// Deletes a business with its numbers, guard rules, prompt versions and experiments, in one
    /// transaction. Its call records and guard events are kept.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the business does not exist; [`StoreError::Query`] if the
    /// database fails (nothing is deleted then).
    pub async fn delete_business(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for table in BUSINESS_CHILD_TABLES {
            let sql = format!("DELETE FROM {table} WHERE business_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM businesses WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("business {id:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stops routing the phone number `e164` (normalised first) to `business_id`; returns the
    /// number as it was stored. Calls to it get the unknown-number answer from then on.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed number; [`StoreError::NotFound`] if the number is
    /// not routed to that business.
    pub async fn remove_number(&self, business_id: &str, e164: &str) -> Result<String, StoreError> {
        let number = normalize_e164(e164)?;
        let result = sqlx::query("DELETE FROM phone_numbers WHERE e164 = $1 AND business_id = $2")
            .bind(&number)
            .bind(business_id)
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "phone number {number} of business {business_id:?}"
            )));
        }
        Ok(number)
    }
}
