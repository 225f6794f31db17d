//! Businesses and their phone numbers: add, read, change, delete; route a number to a
//! business, find the business a number reaches, stop routing it.
//!
//! Deleting a business removes everything configured for it (numbers, guard rules, prompt
//! versions, experiments) in one transaction. The record of its calls (`calls`, `call_events`)
//! is history and stays; a call in progress keeps running on the prompts it was built with.

use super::*;

/// The tables that hang off a business, in the order they are emptied when it is deleted:
/// experiments before the prompt versions they name, versions before the business.
const BUSINESS_CHILD_TABLES: [&str; 5] = [
    "business_tools",
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
        update.apply_to(&mut business)?;
        business.updated_at_ms = now_ms();
        let sql = format!(
            "UPDATE businesses SET name = $2, language = $3, voice = $4, ai_prompt = $5, \
             outbound_ai_prompt = $6, greeting_instructions = $7, guard_policy = $8, hours = $9, \
             required_sections = $10, updated_at_ms = $11, max_concurrent_calls = $12, \
             max_call_duration_s = $13, fallback = $14, end_call_enabled = $15, \
             transfer_enabled = $16, transfer_targets = $17, time_zone = $18, \
             calling_hours = $19, outbound_per_minute = $20, voicemail_message = $21 \
             WHERE id = $1 \
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
            .bind(business.max_concurrent_calls)
            .bind(business.max_call_duration_s)
            .bind(&business.fallback)
            .bind(i64::from(business.end_call_enabled))
            .bind(i64::from(business.transfer_enabled))
            .bind(targets_json(&business.transfer_targets)?)
            .bind(&business.time_zone)
            .bind(&business.calling_hours)
            .bind(business.outbound_per_minute)
            .bind(&business.voicemail_message)
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

impl Store {
    /// Creates a business and returns it as stored, with `created_at_ms = updated_at_ms = now`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty name, language or voice, a guard policy other than
    /// `monitor`, `gate` or `flag`, a required section that is empty or spans lines, or a
    /// malformed id (see [`NewBusiness::id`]); [`StoreError::Conflict`] if the id is taken.
    pub async fn add_business(&self, new: &NewBusiness) -> Result<Business, StoreError> {
        let business = new.to_business()?;
        let sql = format!(
            "INSERT INTO businesses ({BUSINESS_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
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
            .bind(business.created_at_ms)
            .bind(business.updated_at_ms)
            .bind(business.max_concurrent_calls)
            .bind(business.max_call_duration_s)
            .bind(&business.fallback)
            .bind(i64::from(business.end_call_enabled))
            .bind(i64::from(business.transfer_enabled))
            .bind(targets_json(&business.transfer_targets)?)
            .bind(&business.time_zone)
            .bind(&business.calling_hours)
            .bind(business.outbound_per_minute)
            .bind(&business.voicemail_message)
            .execute(&self.pool)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(ErrorKind::UniqueViolation) => {
                    StoreError::Conflict(format!("business id {:?} already exists", business.id))
                }
                _ => StoreError::Query(e),
            })?;
        Ok(business)
    }

    /// The business with this id, or `None`.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn business(&self, id: &str) -> Result<Option<Business>, StoreError> {
        let sql = format!("SELECT {BUSINESS_COLUMNS} FROM businesses WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(business_from_row).transpose()?)
    }

    /// Every business, oldest first (by `created_at_ms`, then id).
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn list_businesses(&self) -> Result<Vec<Business>, StoreError> {
        let sql = format!("SELECT {BUSINESS_COLUMNS} FROM businesses ORDER BY created_at_ms, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(business_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Sets a business's guard policy (`"monitor"`, `"gate"` or `"flag"`, see
    /// [`Business::guard_policy`]) and its `updated_at_ms` to now. Calls already in progress keep
    /// the policy they started with.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for any other policy (the message quotes it);
    /// [`StoreError::NotFound`] if the business does not exist.
    pub async fn set_guard_policy(
        &self,
        business_id: &str,
        policy: &str,
    ) -> Result<(), StoreError> {
        let policy = validate_guard_policy(policy)?;
        let result = sqlx::query(
            "UPDATE businesses SET guard_policy = $2, updated_at_ms = $3 WHERE id = $1",
        )
        .bind(business_id)
        .bind(policy)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("business {business_id:?}")));
        }
        Ok(())
    }

    /// Routes the phone number `e164` to a business and returns it as stored. The number is
    /// normalised first (see [`normalize_e164`]), so `"+1 (415) 555-0100"` is stored as
    /// `"+14155550100"`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed number; [`StoreError::NotFound`] if the business
    /// does not exist; [`StoreError::Conflict`] if the number already belongs to a business
    /// (this one or another).
    pub async fn add_number(&self, e164: &str, business_id: &str) -> Result<String, StoreError> {
        let number = normalize_e164(e164)?;
        sqlx::query("INSERT INTO phone_numbers (e164, business_id) VALUES ($1, $2)")
            .bind(&number)
            .bind(business_id)
            .execute(&self.pool)
            .await
            .map_err(|e| match e.as_database_error().map(|d| d.kind()) {
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "phone number {number} is already assigned to a business"
                )),
                Some(ErrorKind::ForeignKeyViolation) => {
                    StoreError::NotFound(format!("business {business_id:?}"))
                }
                _ => StoreError::Query(e),
            })?;
        Ok(number)
    }

    /// The business that owns the phone number `e164` (normalised first), or `None` if the
    /// number is not routed.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed number; [`StoreError::Query`] if the database fails.
    pub async fn business_for_number(&self, e164: &str) -> Result<Option<Business>, StoreError> {
        let number = normalize_e164(e164)?;
        let sql = format!(
            "SELECT {BUSINESS_COLUMNS} FROM businesses \
             WHERE id = (SELECT business_id FROM phone_numbers WHERE e164 = $1)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&number)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(business_from_row).transpose()?)
    }

    /// The E.164 numbers routed to a business, sorted; empty for an unknown business.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn numbers_for_business(&self, business_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT e164 FROM phone_numbers WHERE business_id = $1 ORDER BY e164")
                .bind(business_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>("e164"))
            .collect::<Result<_, _>>()?)
    }
}

/// `"biz_"` followed by the first 12 hex digits of a random (v4) UUID.
pub(super) fn generate_business_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("biz_{}", &hex[..12])
}

/// Checks a caller-chosen business id: 1 to [`crate::domain::MAX_ID_LEN`] of `[A-Za-z0-9_.-]`.
pub(super) fn validate_business_id(id: &str) -> Result<(), StoreError> {
    validate_id("business id", id)
}

/// The policy's stored form, when it is one of [`GuardPolicy`]'s (exact, lower-case match).
pub(super) fn validate_guard_policy(policy: &str) -> Result<&'static str, StoreError> {
    policy
        .parse::<GuardPolicy>()
        .map(GuardPolicy::as_str)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The required section names, trimmed; each must be non-empty and on one line.
pub(super) fn validate_sections(sections: &[String]) -> Result<Vec<String>, StoreError> {
    sections
        .iter()
        .map(|name| {
            let trimmed = name.trim();
            if trimmed.is_empty() || trimmed.contains(['\n', '\r']) {
                Err(StoreError::Invalid(format!(
                    "required section {name:?}: a name must be one non-empty line"
                )))
            } else {
                Ok(trimmed.to_string())
            }
        })
        .collect()
}

/// The required sections as stored: one name a line.
pub(super) fn join_sections(sections: &[String]) -> String {
    sections.join(&SECTION_SEPARATOR.to_string())
}

/// Maps a row with the `businesses` columns, in any order.
pub(super) fn business_from_row(row: &AnyRow) -> Result<Business, sqlx::Error> {
    Ok(Business {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        language: row.try_get("language")?,
        voice: row.try_get("voice")?,
        ai_prompt: row.try_get("ai_prompt")?,
        outbound_ai_prompt: row.try_get("outbound_ai_prompt")?,
        greeting_instructions: row.try_get("greeting_instructions")?,
        guard_policy: row.try_get("guard_policy")?,
        hours: row.try_get("hours")?,
        required_sections: {
            let text: String = row.try_get("required_sections")?;
            text.split(SECTION_SEPARATOR)
                .filter(|name| !name.trim().is_empty())
                .map(str::to_string)
                .collect()
        },
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        max_concurrent_calls: row.try_get("max_concurrent_calls")?,
        max_call_duration_s: row.try_get("max_call_duration_s")?,
        fallback: row.try_get("fallback")?,
        end_call_enabled: row.try_get::<i64, _>("end_call_enabled")? != 0,
        transfer_enabled: row.try_get::<i64, _>("transfer_enabled")? != 0,
        transfer_targets: {
            let text: String = row.try_get("transfer_targets")?;
            // Written by this store as JSON; a hand edit that is not is read as no targets.
            serde_json::from_str(&text).unwrap_or_default()
        },
        time_zone: row.try_get("time_zone")?,
        calling_hours: row.try_get("calling_hours")?,
        outbound_per_minute: row.try_get("outbound_per_minute")?,
        voicemail_message: row.try_get("voicemail_message")?,
    })
}

impl BusinessUpdate {
    /// Applies the update to `business` in memory (each `Some` field replaces the value), with
    /// the same checks the store makes; [`Store::update_business`] stores the result. Leaves
    /// `updated_at_ms` alone.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] as [`Store::update_business`].
    pub fn apply_to(&self, business: &mut Business) -> Result<(), StoreError> {
        let text = |field: &str, value: &Option<String>, current: &mut String| {
            if let Some(value) = value {
                require_non_empty(field, value)?;
                *current = value.trim().to_string();
            }
            Ok::<(), StoreError>(())
        };
        text("business name", &self.name, &mut business.name)?;
        text("business language", &self.language, &mut business.language)?;
        text("business voice", &self.voice, &mut business.voice)?;
        if let Some(policy) = &self.guard_policy {
            business.guard_policy = validate_guard_policy(policy)?.to_string();
        }
        if let Some(sections) = &self.required_sections {
            business.required_sections = validate_sections(sections)?;
        }
        if let Some(hours) = &self.hours {
            business.hours = hours.trim().to_string();
        }
        if let Some(fallback) = &self.fallback {
            business.fallback = validate_fallback(fallback)?;
        }
        if let Some(on) = self.end_call_enabled {
            business.end_call_enabled = on;
        }
        if let Some(on) = self.transfer_enabled {
            business.transfer_enabled = on;
        }
        if let Some(targets) = &self.transfer_targets {
            business.transfer_targets = validate_transfer_targets(targets)?;
        }
        if let Some(zone) = &self.time_zone {
            business.time_zone =
                crate::outbound::validate_time_zone(zone).map_err(StoreError::Invalid)?;
        }
        if let Some(hours) = &self.calling_hours {
            business.calling_hours = crate::outbound::CallingHours::parse(hours)
                .map_err(StoreError::Invalid)?
                .to_string();
        }
        if let Some(rate) = self.outbound_per_minute {
            if !(1..=crate::outbound::MAX_PER_MINUTE).contains(&rate) {
                return Err(StoreError::Invalid(format!(
                    "outbound_per_minute must be 1 to {} (got {rate})",
                    crate::outbound::MAX_PER_MINUTE
                )));
            }
            business.outbound_per_minute = rate;
        }
        if let Some(message) = &self.voicemail_message {
            crate::prompt::template::check_variables(message)
                .map_err(|e| StoreError::Invalid(format!("voicemail_message: {e}")))?;
            business.voicemail_message = message.trim().to_string();
        }
        for (field, value, current) in [
            (
                "max_concurrent_calls",
                self.max_concurrent_calls,
                &mut business.max_concurrent_calls,
            ),
            (
                "max_call_duration_s",
                self.max_call_duration_s,
                &mut business.max_call_duration_s,
            ),
        ] {
            if let Some(value) = value {
                require_non_negative(field, value)?;
                *current = (value > 0).then_some(value);
            }
        }
        for (value, current) in [
            (&self.ai_prompt, &mut business.ai_prompt),
            (&self.outbound_ai_prompt, &mut business.outbound_ai_prompt),
            (
                &self.greeting_instructions,
                &mut business.greeting_instructions,
            ),
        ] {
            if let Some(value) = value {
                current.clone_from(value);
            }
        }
        Ok(())
    }
}

impl NewBusiness {
    /// The business this would store, with the same checks the store makes (the id generated
    /// when absent, `created_at_ms = updated_at_ms = now`); [`Store::add_business`] stores it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] as [`Store::add_business`].
    pub fn to_business(&self) -> Result<Business, StoreError> {
        let id = match &self.id {
            Some(id) => {
                validate_business_id(id)?;
                id.clone()
            }
            None => generate_business_id(),
        };
        require_non_empty("business name", &self.name)?;
        require_non_empty("business language", &self.language)?;
        require_non_empty("business voice", &self.voice)?;
        let guard_policy = validate_guard_policy(&self.guard_policy)?;
        let required_sections = validate_sections(&self.required_sections)?;

        let now = now_ms();
        Ok(Business {
            id,
            name: self.name.trim().to_string(),
            language: self.language.trim().to_string(),
            voice: self.voice.trim().to_string(),
            ai_prompt: self.ai_prompt.clone(),
            outbound_ai_prompt: self.outbound_ai_prompt.clone(),
            greeting_instructions: self.greeting_instructions.clone(),
            guard_policy: guard_policy.to_string(),
            hours: self.hours.trim().to_string(),
            required_sections,
            created_at_ms: now,
            updated_at_ms: now,
            max_concurrent_calls: None,
            max_call_duration_s: None,
            fallback: None,
            end_call_enabled: true,
            transfer_enabled: true,
            transfer_targets: Vec::new(),
            time_zone: crate::outbound::DEFAULT_TIME_ZONE.into(),
            calling_hours: crate::outbound::DEFAULT_CALLING_HOURS.into(),
            outbound_per_minute: crate::outbound::DEFAULT_PER_MINUTE,
            voicemail_message: String::new(),
        })
    }
}

/// The most transfer targets a business has.
pub const MAX_TRANSFER_TARGETS: usize = 20;

/// The longest transfer target name, characters.
pub const MAX_TRANSFER_NAME: usize = 40;

/// A business's transfer targets as stored: names trimmed, checked and unique
/// (case-insensitive), numbers normalised to E.164, at most [`MAX_TRANSFER_TARGETS`].
///
/// # Errors
/// [`StoreError::Invalid`] naming the target and what is wrong with it.
pub fn validate_transfer_targets(
    targets: &[TransferTarget],
) -> Result<Vec<TransferTarget>, StoreError> {
    if targets.len() > MAX_TRANSFER_TARGETS {
        return Err(StoreError::Invalid(format!(
            "transfer_targets has {} targets; at most {MAX_TRANSFER_TARGETS}",
            targets.len()
        )));
    }
    let mut out: Vec<TransferTarget> = Vec::with_capacity(targets.len());
    for target in targets {
        let name = target.name.trim();
        let well_formed = !name.is_empty()
            && name.chars().count() <= MAX_TRANSFER_NAME
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '\''));
        if !well_formed {
            return Err(StoreError::Invalid(format!(
                "transfer target name {name:?} must be 1 to {MAX_TRANSFER_NAME} letters, digits, \
                 spaces, '-', '_' or '\''"
            )));
        }
        if out.iter().any(|t| t.name.eq_ignore_ascii_case(name)) {
            return Err(StoreError::Invalid(format!(
                "transfer target name {name:?} is given twice"
            )));
        }
        let number = normalize_e164(&target.number).map_err(|_| {
            StoreError::Invalid(format!(
                "transfer target {name:?}: number is not an E.164 number (e.g. \"+14155550100\")"
            ))
        })?;
        out.push(TransferTarget {
            name: name.to_string(),
            number,
        });
    }
    Ok(out)
}

/// The JSON text stored in `businesses.transfer_targets`.
fn targets_json(targets: &[TransferTarget]) -> Result<String, StoreError> {
    serde_json::to_string(targets)
        .map_err(|e| StoreError::Invalid(format!("transfer_targets cannot be stored: {e}")))
}

/// A business's `fallback` as stored: `""` clears it (`None`, the instance's default),
/// `"apology"` stays, anything else must be a phone number and is stored normalised to E.164.
///
/// # Errors
/// [`StoreError::Invalid`] naming the value when it is neither.
fn validate_fallback(value: &str) -> Result<Option<String>, StoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value == crate::call::fallback::APOLOGY {
        return Ok(Some(value.to_string()));
    }
    normalize_e164(value).map(Some).map_err(|_| {
        StoreError::Invalid(format!(
            "fallback {value:?} is neither \"apology\" nor an E.164 number (e.g. \"+14155550100\")"
        ))
    })
}
