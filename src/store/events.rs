//! Guard decisions made in calls (`call_events`), stored redacted.

use super::*;
use crate::domain::{Stage, Verdict};

impl Store {
    /// Records a guard decision and returns its generated id (`"evt_"` + 32 hex digits).
    ///
    /// The detail is redacted first (card numbers, SSNs, e-mail addresses and phone numbers, see
    /// [`redact`](crate::guard::redact::redact)): the store never holds it unredacted. The call
    /// does not have to be recorded (no foreign key), so a guard can log before or without it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty CallSid or business id, a negative time,
    /// a score that is not finite, or a rule id that is empty or contains a comma.
    pub async fn insert_event(&self, event: &NewCallEvent) -> Result<String, StoreError> {
        require_non_empty("call_sid", &event.call_sid)?;
        require_non_empty("business_id", &event.business_id)?;
        require_non_negative("at_ms", event.at_ms)?;
        if let Some(score) = event.score
            && !score.is_finite()
        {
            return Err(StoreError::Invalid(format!(
                "event score must be a finite number (got {score})"
            )));
        }
        for rule in &event.rules {
            if rule.trim().is_empty() || rule.contains(RULE_SEPARATOR) {
                return Err(StoreError::Invalid(format!(
                    "event rule id {rule:?} must not be empty or contain {RULE_SEPARATOR:?}"
                )));
            }
        }

        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(
            "INSERT INTO call_events \
             (id, call_sid, business_id, at_ms, kind, score, rules, action, detail, verdict, stage) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(&event.call_sid)
        .bind(&event.business_id)
        .bind(event.at_ms)
        .bind(event.kind.as_str())
        .bind(event.score)
        .bind(event.rules.join(RULE_SEPARATOR))
        .bind(event.action.as_str())
        .bind(redact(&event.detail).as_ref())
        .bind(event.verdict.map(Verdict::as_str))
        .bind(event.stage.map(Stage::as_str))
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// The guard decisions recorded for a call, oldest first (by `at_ms`, then id); empty for an
    /// unknown call.
    ///
    /// # Errors
    /// [`StoreError::Query`] if the database fails.
    pub async fn call_events(&self, call_sid: &str) -> Result<Vec<CallEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, call_sid, business_id, at_ms, kind, score, rules, action, detail, verdict, \
             stage FROM call_events WHERE call_sid = $1 ORDER BY at_ms, id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
    }
}

/// Maps a row with the `call_events` columns, in any order.
pub(super) fn event_from_row(row: &AnyRow) -> Result<CallEvent, sqlx::Error> {
    let rules: String = row.try_get("rules")?;
    Ok(CallEvent {
        id: row.try_get("id")?,
        call_sid: row.try_get("call_sid")?,
        business_id: row.try_get("business_id")?,
        at_ms: row.try_get("at_ms")?,
        kind: parsed(row, "kind")?,
        score: row.try_get("score")?,
        rules: if rules.is_empty() {
            Vec::new()
        } else {
            rules.split(RULE_SEPARATOR).map(str::to_string).collect()
        },
        action: parsed(row, "action")?,
        detail: row.try_get("detail")?,
        verdict: parsed_optional(row, "verdict")?,
        stage: parsed_optional(row, "stage")?,
    })
}

/// Nullable column `column` read as a vocabulary value.
fn parsed_optional<T>(row: &AnyRow, column: &str) -> Result<Option<T>, sqlx::Error>
where
    T: std::str::FromStr<Err = crate::domain::UnknownValue>,
{
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        t.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: Box::new(e),
        })
    })
    .transpose()
}

/// Column `column` read as a vocabulary value; an unknown form is a decode error naming it.
pub(super) fn parsed<T>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr<Err = crate::domain::UnknownValue>,
{
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: Box::new(e),
    })
}
